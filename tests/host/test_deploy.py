# parcelbox deploy (host_tools/tech/deploy.py) with the real mpremote against the virtual board
# (the `vboard` fixture: the real MicroPython VM behind a socket:// serial port): a first
# deploy sends everything, an incremental one only the files whose hash differs, and a deploy
# interrupted at any point (the process killed, or the link cut before any chosen command)
# leaves a board that boots the previous version, never a half-updated application. A build
# whose measured heap need the board's heap does not meet is refused before anything is
# written, saying what would fit.
import io
import os
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console

import techlib
from host_tools.tech import deploy
from host_tools.tech import heapneed
from host_tools.tech.conn import BoardConn, BoardConnectionError
from host_tools.testing.wait import wait_for
from host_tools.vboard.board import VirtualBoard

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    return techlib.make_builds(tmp_path_factory.mktemp("builds"))


def quiet():
    return Console(file=io.StringIO(), width=120)


def config_files(flash):
    return {n: techlib.sha(flash / n) for n in ("config.json", "board.json")}


def test_a_first_deploy_sends_every_file_verifies_them_and_boots_the_new_slot(vboard, builds):
    techlib.provision_offline(vboard.flash)
    before = config_files(vboard.flash)
    v1 = builds["v1"]
    rep = deploy.deploy(vboard.url, v1.out, quiet())
    files = techlib.app_files(v1)
    assert (rep.slot, rep.previous, rep.copied, rep.unchanged) == ("app_a", None, [], [])
    assert len(rep.sent) == len(files) == 29 and rep.bytes_sent == sum(f["size"] for f in files)
    assert rep.boot_files == ["boot.py", "main.py"] and rep.booted == "0.1.0 from /app_a"
    # the default virtual board has the heap the .mpy firmware needs, measured before the copy
    assert rep.fit["heap"] == 256128 and rep.fit["codes"] == 256 and rep.fit["margin"] > 0
    assert (vboard.flash / "app.ptr").read_text() == "app_a\n"
    assert techlib.slot_intact(vboard.flash, "app_a")["firmware"] == "0.1.0"
    assert config_files(vboard.flash) == before            # deploy never touches the configuration
    vboard.wait_output("boot box box-1", timeout=30)        # the application runs from the slot
    assert not (vboard.flash / "safe_once").exists()


def test_an_incremental_deploy_sends_only_the_changed_files(vboard, builds, tmp_path):
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet())
    mark = len(vboard.output)
    # the command, as a technician runs it, while v1's application runs on the board
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "deploy", "--port", vboard.url,
                        "--build", str(builds["v2"].out)], capture_output=True, text=True,
                       cwd=techlib.ROOT, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "the application was running: resetting once into safe mode" in out
    assert "to slot app_b (previous: app_a, kept as the fallback)" in out
    sizes = {f["path"][4:]: f["size"] for f in techlib.app_files(builds["v2"])}
    assert ("sent over the wire: 2 files, %d bytes: parcelbox/__init__.mpy, parcelbox/ticks.mpy"
            % (sizes["parcelbox/__init__.mpy"] + sizes["parcelbox/ticks.mpy"])) in out
    assert "copied on the board from app_a: 27 files; already in place: 0; removed: 0" in out
    assert "reset: the board booted firmware 0.1.1-test from /app_b" in out
    assert "safe mode: application skipped" in vboard.output[mark:]
    assert not (vboard.flash / "safe_once").exists()
    assert techlib.slot_intact(vboard.flash, "app_b")["firmware"] == "0.1.1-test"
    assert techlib.slot_intact(vboard.flash, "app_a")["firmware"] == "0.1.0"   # the fallback
    # v1 again goes to app_a, where it still is: nothing travels, nothing is copied
    rep = deploy.deploy(vboard.url, builds["v1"].out, quiet())
    assert (rep.slot, rep.sent, rep.copied) == ("app_a", [], [])
    assert len(rep.unchanged) == 29 and rep.booted == "0.1.0 from /app_a"


def test_an_identical_redeploy_writes_nothing_and_says_so(vboard, builds):
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet())
    vboard.wait_output("boot box box-1", timeout=30)
    before = board_state(vboard.flash)      # slots, pointer, boot files, configuration
    mark = len(vboard.output)
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "deploy", "--port", vboard.url,
                        "--build", str(builds["v1"].out)], capture_output=True, text=True,
                       cwd=techlib.ROOT, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout == ("already deployed: the board runs parcelbox 0.1.0 (sim) from slot app_a, every "
                        "file's sha256 as built; nothing written (the application was reset back into "
                        "service)\n")
    assert board_state(vboard.flash) == before
    vboard.wait_output("boot box box-1", timeout=30, start=mark)     # running again, not in safe mode
    assert "safe mode" not in vboard.output[mark:]


def test_build_and_deploy_find_the_same_build_folder_from_anywhere_and_deploy_speaks_json(
        vboard, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from host_tools import paths
    from host_tools.cli.main import main
    techlib.provision_offline(vboard.flash)
    monkeypatch.setattr(paths, "work_dir", lambda: tmp_path / "checkout")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    r = CliRunner().invoke(main, ["build", "--target", "sim"], catch_exceptions=False)
    assert r.exit_code == 0 and str(tmp_path / "checkout" / "build" / "sim") in r.output, r.output
    monkeypatch.chdir(tmp_path)
    # no --build: the virtual board takes build/sim, where build put it
    r = CliRunner().invoke(main, ["deploy", "--port", vboard.url, "--json"],
                                           catch_exceptions=False)
    assert r.exit_code == 0, r.output + r.stderr
    out = json.loads(r.stdout)
    assert (out["firmware"], out["target"], out["identical"], out["slot"]) == ("0.1.0", "sim", False, "app_a")
    assert out["build"] == str(tmp_path / "checkout" / "build" / "sim")
    assert len(out["sent"]) == 29 and out["booted"] == "0.1.0 from /app_a" and out["heap"]["margin"] > 0
    r = CliRunner().invoke(main, ["deploy", "--port", vboard.url, "--json"],
                                           catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(r.stdout)["identical"] is True, r.output


def test_a_deploy_killed_mid_transfer_leaves_the_previous_version_booting(vboard, builds):
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet())
    v3 = {f["path"][4:]: f["sha256"] for f in techlib.app_files(builds["v3"])}
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli.main", "deploy", "--port", vboard.url,
                          "--build", str(builds["v3"].out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=techlib.ROOT)

    def arrived():
        slot = vboard.flash / "app_b"
        return [r for r, h in v3.items() if (slot / r).is_file() and techlib.sha(slot / r) == h]

    try:
        end = time.monotonic() + 90
        while len(arrived()) < 5 and time.monotonic() < end and p.poll() is None:
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)          # the laptop's battery dies mid-transfer
    finally:
        p.wait(10)
    n = len(arrived())
    assert 5 <= n < len(v3), n
    assert not (vboard.flash / "app_b" / "manifest.json").exists()
    assert techlib.booting_slot(vboard.flash) == "app_a"
    mark = len(vboard.output)
    vboard.reset()
    vboard.wait_output("boot box box-1", timeout=30, start=mark)
    assert " firmware 0.1.0 from /app_a" in vboard.output[mark:]
    techlib.slot_intact(vboard.flash, "app_a")


def test_a_damaged_active_slot_is_the_one_overwritten_not_the_fallback_that_runs(vboard, builds):
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet(), reset=False)
    deploy.deploy(vboard.url, builds["v2"].out, quiet(), reset=False)      # app_b, pointer on it
    f = vboard.flash / "app_b" / "parcelbox" / "box.mpy"
    f.write_bytes(f.read_bytes()[:100])                                   # a torn file
    assert techlib.booting_slot(vboard.flash) == "app_a"                   # boot.py falls back
    rep = deploy.deploy(vboard.url, builds["v3"].out, quiet())
    assert (rep.previous, rep.slot) == ("app_a", "app_b")                  # app_a keeps running meanwhile
    assert rep.booted == "0.1.2-test from /app_b"
    assert techlib.slot_intact(vboard.flash, "app_a")["firmware"] == "0.1.0"


def test_no_reset_switches_the_slot_and_leaves_the_board_at_its_repl(vboard, builds):
    techlib.provision_offline(vboard.flash)
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "deploy", "--port", vboard.url, "--build",
                        str(builds["v1"].out), "--no-reset"], capture_output=True, text=True,
                       cwd=techlib.ROOT, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "not reset (--no-reset): the new slot runs from the next reset" in p.stdout
    assert (vboard.flash / "app.ptr").read_text() == "app_a\n" and "firmware 0.1.0" not in vboard.output
    mark = len(vboard.output)
    vboard.reset()
    vboard.wait_output(" firmware 0.1.0 from /app_a", timeout=30, start=mark)


class Cut(BaseException):
    """The USB cable pulled: the link is gone before the command reaches the board."""


def cut_before(pred):
    class CutConn(BoardConn):
        def _connect(self, wait=0.0):
            super()._connect(wait)
            real = self.t.exec

            def exec_(code, *a, **kw):
                if pred(code if isinstance(code, str) else code.decode()):
                    self.t.serial.close()
                    raise Cut()
                return real(code, *a, **kw)
            self.t.exec = exec_
    return CutConn


def nth(n, what):
    seen = []

    def pred(code):
        if what(code):
            seen.append(1)
        return len(seen) >= n
    return pred


def _cut_run(monkeypatch, vboard, build, pred):
    monkeypatch.setattr(deploy, "BoardConn", cut_before(pred))
    with pytest.raises(Cut):
        deploy.deploy(vboard.url, build.out, quiet())
    monkeypatch.undo()


CUTS = [
    ("in the middle of the 5th file", nth(5, lambda c: c.startswith("f=open("))),
    ("in the middle of a file's chunks", nth(9, lambda c: c.startswith("w("))),
    ("before the verification pass", nth(1, lambda c: c.startswith("o = {}"))),
    ("before the new slot's manifest is renamed in", nth(1, lambda c: "manifest.json.tmp', '/app_" in c)),
    ("before main.py is replaced", nth(1, lambda c: "'/main.py.tmp', '/main.py'" in c)),
    ("before the pointer switch", nth(1, lambda c: "'/app.ptr.tmp', '/app.ptr'" in c)),
]


def test_a_deploy_cut_at_any_step_boots_the_old_slot_until_the_switch_and_the_new_after(
        vboard, builds, monkeypatch):
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet())
    for what, pred in CUTS:            # cut after cut, each on what the previous one left
        _cut_run(monkeypatch, vboard, builds["v3"], pred)
        assert techlib.booting_slot(vboard.flash) == "app_a", what
        assert techlib.slot_intact(vboard.flash, "app_a")["firmware"] == "0.1.0", what
    mark = len(vboard.output)
    vboard.reset()
    vboard.wait_output("boot box box-1", timeout=30, start=mark)
    assert " firmware 0.1.0 from /app_a" in vboard.output[mark:]
    # cut right after the switch: the new slot is complete and verified, and it boots
    _cut_run(monkeypatch, vboard, builds["v3"], lambda c: c.startswith("print(json.dumps(open('/app.ptr')"))
    assert techlib.booting_slot(vboard.flash) == "app_b"
    assert techlib.slot_intact(vboard.flash, "app_b")["firmware"] == "0.1.2-test"
    mark = len(vboard.output)
    vboard.reset()
    vboard.wait_output("boot box box-1", timeout=30, start=mark)
    assert " firmware 0.1.2-test from /app_b" in vboard.output[mark:]


@pytest.mark.slow
def test_a_deploy_cut_before_every_single_command_never_boots_a_half_updated_slot(
        vboard, builds, monkeypatch):
    import shutil
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet(), reset=False)
    k = 0
    while True:
        # every cut starts from the same board: v1 active, no trace of an earlier attempt
        shutil.rmtree(vboard.flash / "app_b", ignore_errors=True)
        for p in vboard.flash.glob("*.tmp"):
            p.unlink()
        shutil.copy(builds["v1"].out / "main.py", vboard.flash / "main.py")
        (vboard.flash / "app.ptr").write_text("app_a\n")
        sent = []

        def pred(code, k=k, sent=sent):
            if len(sent) >= k:
                return True
            sent.append(code)
            return False
        monkeypatch.setattr(deploy, "BoardConn", cut_before(pred))
        try:
            deploy.deploy(vboard.url, builds["v3"].out, quiet(), reset=False)
            done = True
        except Cut:
            done = False
        monkeypatch.undo()
        slot = techlib.booting_slot(vboard.flash)
        m = techlib.slot_intact(vboard.flash, slot)
        assert (slot, m["firmware"]) in (("app_a", "0.1.0"), ("app_b", "0.1.2-test")), k
        switched = any("'/app.ptr.tmp', '/app.ptr'" in c for c in sent)
        assert (slot == "app_b") == switched, k             # the new slot only once switched
        if done:
            break
        k += 1
    print("a deploy of %d commands, cut before each" % k)


def test_an_error_on_the_board_is_a_board_error_with_its_last_line(vboard):
    # mpremote hands the board's traceback over as text: a full flash in the middle of a copy
    from host_tools.tech.conn import BoardConnectionError
    with BoardConn(vboard.url) as conn:
        with pytest.raises(BoardConnectionError, match=r"^the board failed: OSError: .*28"):
            conn.exec("raise OSError(28)")


def test_a_build_for_the_other_kind_of_board_is_refused_before_the_board_changes(vboard, tmp_path):
    # the default --build is build/esp32: on the virtual board (and build/sim on an ESP32)
    # the reset would boot a port that cannot run there, and deploy would call it a success
    from host_tools.tech import build
    from host_tools.tech.conn import BoardConnectionError
    techlib.provision_offline(vboard.flash)
    before = sorted(p.relative_to(vboard.flash).as_posix() for p in vboard.flash.rglob("*"))
    esp = build.build("esp32", tmp_path / "esp32")
    with pytest.raises(BoardConnectionError, match="build for esp32.*virtual board.*--target sim"):
        deploy.deploy(vboard.url, esp.out, quiet())
    assert sorted(p.relative_to(vboard.flash).as_posix() for p in vboard.flash.rglob("*")) == before
    assert "sim" in deploy.wrong_board("sim", virtual=False) and deploy.wrong_board("esp32", False) is None
    assert deploy.wrong_board("sim", virtual=True) is None


def test_a_deploy_that_fails_on_the_board_puts_the_running_box_back_into_service(vboard, builds):
    # a file that cannot be written in the idle slot (here a folder in its place; in the field
    # a full flash): the deploy fails after it stopped the application into safe mode
    from host_tools.tech.conn import BoardConnectionError
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet())
    vboard.wait_output("boot box box-1", timeout=30)
    (vboard.flash / "app_b" / "parcelbox" / "box.mpy").mkdir(parents=True)
    mark = len(vboard.output)
    with pytest.raises(BoardConnectionError):
        deploy.deploy(vboard.url, builds["v2"].out, quiet())
    assert (vboard.flash / "app.ptr").read_text() == "app_a\n"
    vboard.wait_output("boot box box-1", timeout=30, start=vboard.output.index("safe mode", mark))


@pytest.mark.parametrize("junk", [b"\xff\xfe{", b"[1, 2]", b'{"files": [{"path": "app/x.mpy"}]}'])
def test_a_corrupt_manifest_in_the_idle_slot_does_not_stop_a_deploy(vboard, builds, junk):
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet(), reset=False)
    (vboard.flash / "app_b").mkdir(exist_ok=True)
    (vboard.flash / "app_b" / "manifest.json").write_bytes(junk)
    rep = deploy.deploy(vboard.url, builds["v2"].out, quiet(), reset=False)
    assert (rep.previous, rep.slot) == ("app_a", "app_b")
    assert techlib.slot_intact(vboard.flash, "app_b")["firmware"] == "0.1.1-test"


def test_a_pointer_that_is_not_utf8_does_not_stop_a_deploy(vboard, builds):
    # boot.py takes such a pointer as none; deploy must be able to repair that board
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet(), reset=False)
    (vboard.flash / "app.ptr").write_bytes(b"app_a\xff\n")
    rep = deploy.deploy(vboard.url, builds["v2"].out, quiet(), reset=False)
    assert (rep.previous, rep.slot) == ("app_a", "app_b")
    assert (vboard.flash / "app.ptr").read_text() == "app_b\n"


def test_a_deploy_never_stages_into_the_slot_that_boots_even_when_that_slot_is_damaged(
        vboard, builds, monkeypatch):
    # app_a boots (its sizes match) though one byte of it is wrong, and no slot is intact:
    # the deploy must fill app_b, so that a cut leaves the board booting app_a as before
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, builds["v1"].out, quiet(), reset=False)
    f = vboard.flash / "app_a" / "parcelbox" / "box.mpy"
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    _cut_run(monkeypatch, vboard, builds["v2"], nth(1, lambda c: c.startswith("o = {}")))
    assert techlib.booting_slot(vboard.flash) == "app_a"


# ---- a build that does not fit the board's heap ----------------------------------------------

def board_state(flash):
    """Everything deploy could switch or write: the slots, the pointer, the boot files, the
    safe-mode flag, the configuration."""
    return {p.relative_to(flash).as_posix(): techlib.sha(p) for p in sorted(flash.rglob("*"))
            if p.is_file() and (p.parts[len(flash.parts)] in techlib.SLOTS or p.name in (
                "app.ptr", "boot.py", "main.py", "safe_once", "config.json", "board.json"))}


def run_deploy(url, build_dir):
    return subprocess.run([sys.executable, "-m", "host_tools.cli.main", "deploy", "--port", url, "--build",
                           str(build_dir)], capture_output=True, text=True, cwd=techlib.ROOT, timeout=120)


def test_a_build_too_big_for_the_heap_is_refused_before_anything_is_switched(tmp_path, builds):
    # v1 deployed from a board with room; then the same flash in a board a few codes short of
    # v2's need, v1 running on it: deploy refuses v2 before it writes anything, safe_once included
    flash = tmp_path / "flash"
    techlib.provision_offline(flash)
    with VirtualBoard(flash) as vb:
        deploy.deploy(vb.url, builds["v1"].out, quiet(), reset=False)
    table = builds["v2"].manifest["heap_need"]
    need = heapneed.need("mpy", 256, table)
    heap = techlib.heap_for(need - 40 * table["mpy"]["per_code_bytes"])
    got = techlib.gc_heap(heap)
    fits = heapneed.codes_that_fit("mpy", got, table)
    assert 1 <= fits < 256, (heap, got, need)          # a board this test means: a few codes short
    with VirtualBoard(flash, heap=heap) as vb:
        vb.wait_output("boot box box-1", timeout=30)    # v1 runs (the sim port needs less)
        before = board_state(flash)
        mark = len(vb.output)
        p = run_deploy(vb.url, builds["v2"].out)
        assert p.returncode == 1, p.stdout + p.stderr
        out = " ".join(p.stderr.split())                # the one Error: path: stderr
        assert "Traceback" not in p.stdout + p.stderr
        assert ("Error: parcelbox 0.1.1-test does not fit this board: as .mpy files with 256 codes (the "
                "firmware's default max_codes) it needs %s of heap, the board has %s (no PSRAM). Nothing on "
                "the board was changed. What fits:" % (heapneed.kb(need), heapneed.kb(got))) in out
        assert "at most %d codes as .mpy files: parcelbox provision ... --max-codes %d" % (fits, fits) in out
        for line in heapneed.what_fits("mpy", got, False, 256, table):
            assert line in out, line
        assert "a frozen image" in out and "a board with PSRAM" in out
        assert "resetting once into safe mode" not in out
        assert board_state(flash) == before             # no slot file, no pointer, no safe_once
        assert (flash / "app.ptr").read_text() == "app_a\n" and not (flash / "safe_once").exists()
        vb.wait_output("boot box box-1", timeout=30, start=mark)   # stopped to be read: back in service
        assert "safe mode" not in vb.output[mark:]


def test_a_board_whose_heap_a_failed_start_filled_is_refused_naming_only_what_fits(tmp_path, builds):
    # 96K: v1 fails to start (MemoryError while importing), its modules fill the heap; deploy
    # empties it with a soft reset (no file written) and refuses: not one code fits as .mpy
    flash = tmp_path / "flash"
    techlib.provision_offline(flash)
    with VirtualBoard(flash) as vb:
        deploy.deploy(vb.url, builds["v1"].out, quiet(), reset=False)
    with VirtualBoard(flash, heap="96K") as vb:
        vb.wait_output("MemoryError", timeout=30)
        before = board_state(flash)
        with pytest.raises(BoardConnectionError) as e:
            deploy.deploy(vb.url, builds["v2"].out, quiet())
        assert board_state(flash) == before
    table = builds["v2"].manifest["heap_need"]
    text = str(e.value)
    assert "the board has %s (no PSRAM)" % heapneed.kb(96000) in text
    fits = heapneed.what_fits("mpy", 96000, False, 256, table)
    assert text.split("What fits:\n")[1].splitlines()[:len(fits)] == ["  - " + f for f in fits]
    assert not text.split("What fits:\n")[1].startswith("  - at most") and "a board with PSRAM" in text


def test_the_board_s_own_max_codes_is_the_one_judged(vboard, builds):
    techlib.provision_offline(vboard.flash, dict(techlib.OFFLINE, settings={"max_codes": 16384}))
    before = board_state(vboard.flash)
    with pytest.raises(BoardConnectionError) as e:
        deploy.deploy(vboard.url, builds["v1"].out, quiet())
    table = builds["v1"].manifest["heap_need"]
    fits = heapneed.codes_that_fit("mpy", 256128, table)
    assert ("with 16384 codes (settings.max_codes in config.json) it needs %s"
            % heapneed.kb(heapneed.need("mpy", 16384, table))) in str(e.value)
    assert "at most %d codes" % fits in str(e.value)
    assert board_state(vboard.flash) == before


def test_the_refusal_text_names_the_frozen_image_a_board_already_runs():
    table = {"measured": "2026-12-07, bench_memory", "mpy": {"base_bytes": 212000, "per_code_bytes": 24},
             "frozen": {"base_bytes": 114000, "per_code_bytes": 24}, "psram_heap_bytes": 2097152}
    mem = {"heap": 111936, "psram": False, "fw": ["0.1.0", ".frozen/parcelbox/__init__.py"], "frozen": True,
           "max_codes": None}
    f = deploy.fit({"heap_need": table, "max_codes_default": 256, "max_codes_most": 16384}, mem)
    assert (f["need"], f["margin"]) == (218144, 111936 - 218144)
    assert f["codes_from"] == "the firmware's default max_codes"
    assert deploy.refusal(f, mem, "0.2.0") == (
        "parcelbox 0.2.0 does not fit this board: as .mpy files with 256 codes (the firmware's default "
        "max_codes) it needs 213.0 KB of heap, the board has 109.3 KB (no PSRAM). Nothing on the board "
        "was changed. What fits:\n"
        "  - a board with PSRAM (about 2048 KB of heap): the ESP32-DevKitC-VE (ESP32-WROVER-E, "
        "boards/esp32-wrover-devkitc-4x3.json) or the ESP32-S3-DevKitC-1-N8R8 "
        "(boards/esp32s3-n8r8-devkitc-4x4.json), flashed with MicroPython's SPIRAM image; "
        "docs/boards.md sections 5 and 6\n"
        "This board runs parcelbox 0.1.0 frozen into its image: update it by flashing a new image "
        "(docs/tooling.md section 2), not with deploy.\n"
        "(figures: heap_need.json, measured 2026-12-07, bench_memory)")
    assert deploy.refusal(deploy.fit({"heap_need": table}, dict(mem, heap=220000)), mem, "0.2.0") is None


def test_run_builds_deploys_and_monitors_and_a_second_run_deploys_nothing(vboard, tmp_path):
    import select
    techlib.provision_offline(vboard.flash)

    def run():
        p = subprocess.Popen([sys.executable, "-m", "host_tools.cli.main", "run", "--out", str(tmp_path / "b")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=techlib.ROOT,
                             env={**os.environ, "PARCELBOX_PORT": vboard.url})
        seen = []

        def more():
            if select.select([p.stdout], [], [], 0)[0]:
                seen.append(os.read(p.stdout.fileno(), 65536).decode("utf-8", "replace"))
        try:
            wait_for(lambda: "connected to %s" % vboard.url in "".join(seen), step=more, timeout=120,
                     what="run to reach its monitor", diag=lambda: "".join(seen)[-3000:])
        finally:
            p.send_signal(signal.SIGINT)
            rest, _ = p.communicate(timeout=30)
        return p.returncode, "".join(seen) + rest.decode("utf-8", "replace")

    rc, out = run()
    assert rc == 0 and "Traceback" not in out, out
    assert "parcelbox 0.1.0 for sim: " in out                          # built (target from the board)
    assert "deployed parcelbox 0.1.0 (sim) to slot app_a" in out
    assert "reset: the board booted firmware 0.1.0 from /app_a" in out and "monitor ended" in out
    rc, out = run()
    assert rc == 0 and "already deployed: the board runs parcelbox 0.1.0 (sim) from slot app_a" in out, out
