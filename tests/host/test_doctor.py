# parcelbox doctor (host_tools/tech/doctor.py) through the real mpremote against the virtual board:
# healthy after a deploy, a broken configuration named by its field (never its value), a
# damaged file and a crash report found, exit 2 when no board answers, the heap margin (ok,
# warn below 8 KB, fail when the firmware does not fit). The configuration's
# secrets cross neither the terminal nor the serial line (the board redacts them itself).
import io
import json
import socket
import subprocess
import sys

import pytest
from rich.console import Console

import techlib
from host_tools.tech import build
from host_tools.tech import deploy
from host_tools.tech import heapneed
from host_tools.vboard.board import VirtualBoard

pytestmark = pytest.mark.vm
SECRETS = (techlib.OFFLINE["box_key"], techlib.OFFLINE["mqtt_password"], techlib.OFFLINE["wifi"]["password"])


@pytest.fixture(scope="module")
def sim_build(tmp_path_factory):
    return build.build("sim", tmp_path_factory.mktemp("b") / "sim")


@pytest.fixture
def board(vboard, sim_build):
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, sim_build.out, Console(file=io.StringIO()))
    vboard.wait_output("boot box box-1", timeout=30)
    return vboard


def doctor(url):
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "doctor", "--port", url],
                       capture_output=True, text=True, cwd=techlib.ROOT, timeout=60,
                       env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    return p.returncode, p.stdout + p.stderr


def test_doctor_json_is_the_checks_and_the_verdict(board):
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "doctor", "--json"], capture_output=True,
                       text=True, cwd=techlib.ROOT, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "PARCELBOX_PORT": board.url})
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["port"] == board.url and out["healthy"] is True and out["restarted"] is True
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["firmware"]["status"] == "ok" and "every hash matches" in checks["firmware"]["detail"]
    assert checks["wifi"]["status"] == "n/a"
    no_secret(p.stdout, p.stderr)


def no_secret(*texts):
    for t in texts:
        for s in SECRETS:
            assert s not in t


def test_a_deployed_and_provisioned_board_is_healthy(board, sim_build):
    mark = len(board.output)
    rc, out = doctor(board.url)
    assert rc == 0, out
    need = heapneed.need("mpy", 256, sim_build.manifest["heap_need"])
    for line in ("MicroPython", "mpy v6.3", "heap", "free of 250.1 KB, no PSRAM", "flash", "free of 1536.0 KB",
                 "heap margin", "%s to spare: the firmware as .mpy files with 256 codes (the firmware's default "
                 "max_codes) needs %s, the board has 250.1 KB" % (heapneed.kb(256128 - need), heapneed.kb(need)),
                 "parcelbox 0.1.0 (sim) in app_a, 29 files, every hash matches",
                 "box box-1, board esp32-devkitc-4x3, broker 127.0.0.1:1 TLS off, wifi home",
                 "last crash", "none recorded", "verdict: healthy",
                 "not available: this board has no Wi-Fi"):
        assert line in out, line
    assert "the application was stopped to read the board, then the board was reset" in out
    board.wait_output("boot box box-1", timeout=30, start=mark)   # back in service
    no_secret(out, board.output)


def test_a_broken_configuration_is_named_by_its_field_without_its_value(board):
    c = json.loads((board.flash / "config.json").read_text())
    c["box_key"] = c["box_key"][:-2] + "zz"                   # one typo in the key
    (board.flash / "config.json").write_text(json.dumps(c))
    rc, out = doctor(board.url)
    assert rc == 1, out
    assert "box_key must be 64 hex digits" in out and "verdict: 1 problem" in out
    assert c["box_key"] not in out and c["box_key"] not in board.output
    no_secret(out, board.output)
    (board.flash / "config.json").unlink()
    rc, out = doctor(board.url)
    assert rc == 1 and "config.json is missing" in out and "parcelbox provision --port" in out


def test_a_damaged_file_and_a_saved_crash_are_reported(board):
    f = board.flash / "app_a" / "parcelbox" / "box.mpy"
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    (board.flash / "crash.last").write_text("Traceback (most recent call last):\n  File \"x\"\n"
                                            "MemoryError: memory allocation failed\n")
    rc, out = doctor(board.url)
    assert rc == 1, out
    assert "differ from the manifest: parcelbox/box.mpy" in out and "deploy again" in out
    assert "crash.last" in out and "MemoryError: memory allocation failed" in out
    assert "verdict: 2 problems" in out


def test_a_crash_loop_is_a_failure(board):
    # as parcelbox.crash leaves them after the fourth crash in a row (the application runs,
    # so nothing rewrites them before the doctor reads them)
    (board.flash / "crash.txt").write_text("Traceback (most recent call last):\n"
                                           "OSError: [Errno 28] ENOSPC\n")
    (board.flash / "crash.n").write_text("4")
    rc, out = doctor(board.url)
    assert rc == 1, out
    assert "a crash loop: 4 crashes in a row" in out and "OSError: [Errno 28] ENOSPC" in out


def test_no_board_on_the_port_exits_2():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                                    # nobody listens there
    rc, out = doctor("socket://127.0.0.1:%d" % port)
    assert rc == 2 and "cannot reach the board" in out


def test_a_bare_board_is_told_to_deploy_and_provision(vboard):
    rc, out = doctor(vboard.url)
    assert rc == 1, out
    assert "no complete app slot (app.ptr missing)" in out and "parcelbox build, then parcelbox deploy" in out
    assert "board.json is missing" in out and "parcelbox provision --port ... --box ID" in out
    assert "the application was stopped" not in out            # nothing ran: no reset


def test_a_firmware_that_no_longer_imports_is_reported_not_taken_for_a_lost_board(board):
    # parcelbox/__init__.mpy damaged in place (its size kept: boot.py still takes the slot),
    # then a reset: main.py's import fails and the board sits at its REPL
    f = board.flash / "app_a" / "parcelbox" / "__init__.mpy"
    f.write_bytes(b"\0" * f.stat().st_size)
    mark = len(board.output)
    board.reset()
    board.wait_output("Traceback", timeout=30, start=mark)
    rc, out = doctor(board.url)
    assert rc == 1, out
    assert "differ from the manifest: parcelbox/__init__.mpy" in out and "deploy again" in out


@pytest.mark.parametrize("junk", [b"[1, 2]", b"\xff\xfe{", b'{"files": []}'])
def test_a_corrupt_manifest_in_the_fallback_slot_is_read_without_a_traceback(board, junk):
    (board.flash / "app_b").mkdir(exist_ok=True)
    (board.flash / "app_b" / "manifest.json").write_bytes(junk)
    rc, out = doctor(board.url)
    assert rc == 0 and "Traceback" not in out, out
    assert "parcelbox 0.1.0 (sim) in app_a, 29 files, every hash matches" in out


def test_a_crash_report_that_is_not_utf8_is_shown_not_taken_for_a_lost_board(board):
    (board.flash / "crash.last").write_bytes(b"Traceback (most recent call last):\nOSError: \xff\xfe\n")
    rc, out = doctor(board.url)
    assert rc == 1, out
    assert "crash.last" in out and "OSError: " in out


def test_a_board_json_that_is_not_utf8_is_named_not_taken_for_a_lost_board(board):
    (board.flash / "board.json").write_bytes(b'{"name": "\xff"}')
    rc, out = doctor(board.url)
    assert rc == 1, out
    assert "board.json is not valid JSON" in out


def test_a_safe_mode_file_left_on_the_flash_is_a_failure(board):
    # a technician's safe_mode file keeps the application off at every boot
    (board.flash / "safe_mode").write_text("")
    rc, out = doctor(board.url)
    assert rc == 1, out
    assert "the application never starts" in out and "mpremote fs rm :safe_mode" in out


def test_a_board_that_does_not_run_its_application_is_not_healthy(vboard, sim_build):
    # deployed and provisioned, but left at its REPL (--no-reset, a safe-mode boot): out of service
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, sim_build.out, Console(file=io.StringIO()), reset=False)
    rc, out = doctor(vboard.url)
    assert rc == 1, out
    assert "every hash matches" in out and "not running" in out and "reset the board" in out


def doctor_at(flash, heap):
    """doctor on a board of `heap` with the flash of a deployed, provisioned board (the sim
    firmware runs in less than the .mpy figure); its heap margin row and its exit code."""
    with VirtualBoard(flash, heap=heap) as vb:
        vb.wait_output("boot box box-1", timeout=30)
        rc, out = doctor(vb.url)
    row = next(ln for ln in out.splitlines() if "heap margin" in ln and "│" in ln)
    return rc, out, row


def test_the_heap_margin_warns_below_8_kb_and_fails_when_the_firmware_does_not_fit(board, sim_build):
    table = sim_build.manifest["heap_need"]
    need = heapneed.need("mpy", 256, table)
    board.stop()
    heap = techlib.heap_for(need + 3 * 1024)            # a few KB to spare
    got = techlib.gc_heap(heap)
    assert 0 <= got - need < 8 * 1024, (heap, got, need)
    rc, out, row = doctor_at(board.flash, heap)
    assert rc == 1 and "│ warn" in row and "%s to spare" % heapneed.kb(got - need) in row, out
    assert "little room for the network and a large command" in out
    heap = techlib.heap_for(need - 16 * 1024)           # short of it
    got = techlib.gc_heap(heap)
    rc, out, row = doctor_at(board.flash, heap)
    assert rc == 1 and "│ FAIL" in row and "short by %s" % heapneed.kb(need - got) in row, out
    flat = " ".join(out.split())
    assert "heap margin: what fits: " in flat and "a frozen image" in flat and "a board with PSRAM" in flat
