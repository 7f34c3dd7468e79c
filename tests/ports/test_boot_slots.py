# The board's boot files (firmware/esp32/boot.py, main.py) in the real MicroPython VM over a
# flash folder: boot.py puts the slot app.ptr names on sys.path, or the other complete one
# (deploy writes a slot's manifest.json last), and main.py starts that slot's port, or says
# why not. Slots here hold stand-in packages that print what ran.
import json
from pathlib import Path

import pytest

from host_tools.vm.runner import VM

ROOT = Path(__file__).resolve().parents[2]
BOOT = (ROOT / "firmware" / "esp32" / "boot.py").read_text()
MAIN = (ROOT / "firmware" / "esp32" / "main.py").read_text()
pytestmark = pytest.mark.vm


def slot(flash, name, complete=True, version="1.0"):
    d = flash / name
    (d / "parcelbox").mkdir(parents=True)
    (d / "pb_sim").mkdir()
    (d / "parcelbox" / "__init__.py").write_text("VERSION = %r\n" % version)
    (d / "pb_sim" / "__init__.py").write_text("")
    (d / "pb_sim" / "main.py").write_text("def main(root):\n    print('APP', %r, root)\n" % name)
    if complete:
        files = [{"path": "app/" + p.relative_to(d).as_posix(), "size": p.stat().st_size}
                 for p in sorted(d.rglob("*.py"))]
        (d / "manifest.json").write_text(json.dumps({"firmware": version, "files": files}))


def boot(flash, main=False):
    code = ("import os, sys\nos.chdir('/flash')\ng = {'__name__': '__main__'}\n"
            "exec(open('boot.py').read(), g)\nprint('SLOT', g['SLOT'])\n")
    if main:
        code += "exec(open('main.py').read(), g)\n"
    (flash / "boot.py").write_text(BOOT)
    (flash / "main.py").write_text(MAIN)
    r = VM(heap="128K", paths=[], flash_dir=flash).run_code(code)
    assert r.ok, r.stderr
    return r.stdout.splitlines()


def test_the_pointer_s_slot_is_used_when_it_is_complete(tmp_path):
    slot(tmp_path, "app_a")
    slot(tmp_path, "app_b")
    (tmp_path / "app.ptr").write_text("app_b\n")
    assert boot(tmp_path)[0] == "SLOT /flash/app_b"


def test_an_incomplete_slot_falls_back_to_the_other(tmp_path):
    # a deploy into app_b was cut before its manifest.json: app_b is not a slot to boot
    slot(tmp_path, "app_a")
    slot(tmp_path, "app_b", complete=False)
    (tmp_path / "app.ptr").write_text("app_b")
    assert boot(tmp_path)[0] == "SLOT /flash/app_a"


@pytest.mark.parametrize("ptr", [None, "", "app_c", "../../etc", "\xff\xfe garbage"])
def test_a_missing_or_corrupt_pointer_boots_the_first_complete_slot(tmp_path, ptr):
    slot(tmp_path, "app_a", complete=False)
    slot(tmp_path, "app_b")
    if ptr is not None:
        (tmp_path / "app.ptr").write_text(ptr)
    assert boot(tmp_path)[0] == "SLOT /flash/app_b"


def test_main_starts_the_chosen_slot_s_port_and_logs_its_version(tmp_path):
    slot(tmp_path, "app_a", version="0.9")
    slot(tmp_path, "app_b", version="1.0")
    (tmp_path / "app.ptr").write_text("app_a")
    out = boot(tmp_path, main=True)
    assert out[1].startswith("PB I ") and out[1].endswith(" firmware 0.9 from /flash/app_a")
    assert out[2] == "APP app_a /flash"


def test_no_complete_slot_leaves_the_repl_free_and_says_so(tmp_path):
    slot(tmp_path, "app_a", complete=False)
    out = boot(tmp_path, main=True)
    assert out[0] == "SLOT None"
    assert out[1].endswith("no application on this board: run parcelbox deploy; the REPL is free")


def test_safe_once_skips_the_application_for_one_boot_only(tmp_path):
    slot(tmp_path, "app_a")
    (tmp_path / "safe_once").write_text("deploy\n")
    out = boot(tmp_path, main=True)
    assert out[2].endswith("safe mode: application skipped, the REPL is free") and len(out) == 3
    assert not (tmp_path / "safe_once").exists()
    assert boot(tmp_path, main=True)[2] == "APP app_a /flash"


def test_the_safe_mode_file_keeps_the_application_off(tmp_path):
    slot(tmp_path, "app_a")
    (tmp_path / "safe_mode").write_text("")
    for _ in range(2):
        assert boot(tmp_path, main=True)[2].endswith("safe mode: application skipped, the REPL is free")


def test_a_slot_with_a_missing_or_cut_file_falls_back_to_the_other(tmp_path):
    slot(tmp_path, "app_a")
    slot(tmp_path, "app_b")
    (tmp_path / "app.ptr").write_text("app_b")
    main = tmp_path / "app_b" / "pb_sim" / "main.py"
    main.write_text(main.read_text()[:-3])                 # cut short: a torn copy
    assert boot(tmp_path)[0] == "SLOT /flash/app_a"
    main.unlink()
    assert boot(tmp_path)[0] == "SLOT /flash/app_a"


def test_a_manifest_that_is_not_json_makes_a_slot_incomplete(tmp_path):
    slot(tmp_path, "app_a")
    slot(tmp_path, "app_b")
    (tmp_path / "app.ptr").write_text("app_a")
    (tmp_path / "app_a" / "manifest.json").write_text('{"files": [')
    assert boot(tmp_path)[0] == "SLOT /flash/app_b"


def test_a_pointer_with_bytes_that_are_not_utf8_boots_the_first_complete_slot(tmp_path):
    # a torn or corrupted app.ptr: MicroPython's text read raises UnicodeError on it
    slot(tmp_path, "app_a")
    slot(tmp_path, "app_b")
    (tmp_path / "app.ptr").write_bytes(b"app_b\xff\n")
    assert boot(tmp_path)[0] == "SLOT /flash/app_a"


def _damage(flash, name):
    """A module of the slot raises at import, as a .mpy with an erased header does
    (ValueError: incompatible .mpy file); same size, so boot.py still takes the slot."""
    f = flash / name / "pb_sim" / "main.py"
    bad = "raise ValueError('incompatible .mpy file')\n"
    old = f.read_text()
    f.write_text(bad + "#" * (len(old) - len(bad) - 1) + "\n")
    assert len(f.read_text()) == len(old)


def test_a_slot_whose_code_does_not_load_falls_back_to_the_other_complete_slot(tmp_path):
    slot(tmp_path, "app_a", version="0.9")
    slot(tmp_path, "app_b", version="1.0")
    (tmp_path / "app.ptr").write_text("app_b")
    _damage(tmp_path, "app_b")
    out = boot(tmp_path, main=True)
    assert out[0] == "SLOT /flash/app_b"
    assert any(x.startswith("PB E ") and "/flash/app_b does not load (ValueError): starting "
               "/flash/app_a" in x for x in out)
    assert out[-2].endswith(" firmware 0.9 from /flash/app_a") and out[-1] == "APP app_a /flash"


def test_a_damaged_slot_with_no_complete_other_one_still_fails_loudly(tmp_path):
    slot(tmp_path, "app_a")
    slot(tmp_path, "app_b", complete=False)
    (tmp_path / "app.ptr").write_text("app_a")
    _damage(tmp_path, "app_a")
    code = ("import os\nos.chdir('/flash')\ng = {'__name__': '__main__'}\n"
            "exec(open('boot.py').read(), g)\nexec(open('main.py').read(), g)\n")
    (tmp_path / "boot.py").write_text(BOOT)
    (tmp_path / "main.py").write_text(MAIN)
    r = VM(heap="128K", paths=[], flash_dir=tmp_path).run_code(code)
    assert not r.ok and "incompatible .mpy file" in r.stderr and "APP" not in r.stdout
