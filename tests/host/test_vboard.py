"""The virtual board (host_tools/vboard/board.py, docs/vboard.md) driven by the real mpremote as
a subprocess, as a technician's laptop drives an ESP32 over USB."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host_tools.vboard.board import VirtualBoard

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def mp(vb, *args, timeout=60, check=True):
    r = subprocess.run([MPREMOTE, "connect", vb.url, *args], capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("mpremote %s failed (%d):\n%s\n%s" % (args, r.returncode, r.stdout, r.stderr))
    return r


def test_exec_prints_what_the_code_printed(vboard):
    r = mp(vboard, "exec", "print('hello', 6 * 7)")
    assert r.stdout == "hello 42\n"


def test_eval_returns_the_value(vboard):
    assert mp(vboard, "eval", "[1 + 1, 'x' * 3]").stdout.strip() == "[2, 'xxx']"


def test_an_exception_gives_its_traceback_and_a_failing_exit(vboard):
    r = mp(vboard, "exec", "x = 1\ndef f():\n    raise ValueError('bad value')\nf()", check=False)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "Traceback (most recent call last):",
        '  File "<stdin>", line 4, in <module>',
        '  File "<stdin>", line 3, in f',
        "ValueError: bad value",
    ]
    # the board is fine afterwards
    assert mp(vboard, "exec", "print('still here')").stdout == "still here\n"


def test_state_persists_across_the_lines_of_one_exec_and_across_execs_of_one_session(vboard):
    r = mp(vboard, "exec", "a = [1]", "exec", "a.append(2)", "exec", "print(a)")
    assert r.stdout == "[1, 2]\n"
    # a new mpremote soft-resets the board: a fresh session
    r = mp(vboard, "exec", "print('a' in globals())")
    assert r.stdout == "False\n"


def test_the_board_looks_like_an_esp32(vboard):
    code = ("import os, sys, gc, machine, hashlib, binascii\n"
            "print(os.uname().sysname, os.uname().machine)\n"
            "print(sys.platform, sys.implementation.name, sys.implementation._machine)\n"
            "print(len(machine.unique_id()), machine.reset_cause() == machine.PWRON_RESET)\n"
            "print(gc.mem_free() > 100000)\n"
            "print(binascii.hexlify(hashlib.sha256(b'abc').digest()).decode()[:16])\n"
            "s = os.statvfs('/'); print(s[0] * s[2])")
    out = mp(vboard, "exec", code).stdout.splitlines()
    assert out == ["esp32 Generic ESP32 module with ESP32",
                   "esp32 micropython Generic ESP32 module with ESP32",
                   "6 True", "True", "ba7816bf8f01cfea", str(1536 * 1024)]


def test_a_text_file_copied_both_ways_is_byte_identical(vboard, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_bytes(b"first line\nsecond line, \xc3\xa9t\xc3\xa9\n\tend\r\n")
    mp(vboard, "fs", "cp", str(src), ":notes.txt")
    assert (vboard.flash / "notes.txt").read_bytes() == src.read_bytes()
    back = tmp_path / "back.txt"
    mp(vboard, "fs", "cp", ":notes.txt", str(back))
    assert back.read_bytes() == src.read_bytes()
    assert mp(vboard, "fs", "cat", ":notes.txt").stdout.replace("\r\n", "\n").startswith("first line\n")


def test_a_40k_binary_file_copied_both_ways_is_byte_identical(vboard, tmp_path):
    data = bytes((i * 7919 + (i >> 8)) & 0xFF for i in range(40 * 1024))
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    mp(vboard, "fs", "mkdir", ":lib")
    mp(vboard, "fs", "cp", str(src), ":/lib/blob.bin", timeout=120)
    assert (vboard.flash / "lib" / "blob.bin").read_bytes() == data
    back = tmp_path / "back.bin"
    mp(vboard, "fs", "cp", ":/lib/blob.bin", str(back), timeout=120)
    assert back.read_bytes() == data
    # the board's own sha256 of it (what deploy compares) is the host's
    import hashlib
    r = mp(vboard, "fs", "sha256sum", ":/lib/blob.bin")
    assert hashlib.sha256(data).hexdigest() in r.stdout


def test_ls_mkdir_rm_rmdir_rename_on_the_flash(vboard, tmp_path):
    (vboard.flash / "boot.py").write_text("# boot\n")
    mp(vboard, "fs", "mkdir", ":lib")
    assert (vboard.flash / "lib").is_dir()
    mp(vboard, "fs", "touch", ":lib/x.mpy")
    ls = mp(vboard, "fs", "ls", ":").stdout
    assert "boot.py" in ls and "lib/" in ls
    assert "x.mpy" in mp(vboard, "fs", "ls", ":/lib").stdout
    mp(vboard, "exec", "import os; os.rename('/lib/x.mpy', '/lib/y.mpy'); print(os.listdir('/lib'))")
    assert [p.name for p in (vboard.flash / "lib").iterdir()] == ["y.mpy"]
    mp(vboard, "fs", "rm", ":lib/y.mpy")
    mp(vboard, "fs", "rmdir", ":lib")
    mp(vboard, "fs", "rm", ":boot.py")
    assert list(vboard.flash.iterdir()) == []
    r = mp(vboard, "fs", "rm", ":nothing.py", check=False)
    assert r.returncode != 0 and "No such file" in r.stderr + r.stdout


def test_raw_paste_is_used_by_mpremote(vboard):
    mp(vboard, "exec", "print(1)")
    # the board answered Ctrl-E 'A' Ctrl-A with "R\x01" and its window, and acknowledged
    # the end of the data with \x04 before running it
    assert "R\x01\x00\x01" in vboard.output


def test_without_raw_paste_mpremote_falls_back_to_the_plain_raw_repl(tmp_path):
    with VirtualBoard(tmp_path / "flash", raw_paste=False) as vb:
        big = "x = 0\n" + "x += 1\n" * 300 + "print(x)"
        assert mp(vb, "exec", big).stdout == "300\n"
        assert "R\x01" not in vb.output


# ---- sessions, resets, interrupts --------------------------------------------------------

BOOT_PY = "print('boot.py ran')\n"
COUNTER_MAIN = ("import time\nprint('main.py ran')\nn = 0\nwhile True:\n"
                "    n += 1\n    time.sleep_ms(20)\n")


def test_soft_reset_gives_a_fresh_session_and_runs_boot_but_not_main_from_the_raw_repl(vboard):
    vboard.wait_output(">>> ")     # booted (from an empty flash)
    (vboard.flash / "boot.py").write_text(BOOT_PY)
    (vboard.flash / "main.py").write_text("print('main.py ran')\n")
    start = len(vboard.output)
    r = mp(vboard, "exec", "x = 1", "soft-reset", "exec", "print('x' in globals())")
    assert r.stdout == "False\n"
    out = vboard.output[start:]
    assert out.count("MPY: soft reboot\r\n") == 2 and out.count("boot.py ran") == 2
    assert "main.py ran" not in out


def test_ctrl_d_at_the_friendly_prompt_soft_reboots_through_main(vboard):
    import socket
    vboard.wait_output(">>> ")
    (vboard.flash / "main.py").write_text("print('main.py ran')\n")
    host, port = vboard.url[len("socket://"):].split(":")
    with socket.create_connection((host, int(port))) as s:
        start = len(vboard.output)
        s.sendall(b"\r\x04")
        out = vboard.wait_output("Type \"help()\"", 10, start=start)[start:]
    assert "MPY: soft reboot\r\nmain.py ran\r\nMicroPython v" in out


def test_reset_boots_main_py_from_the_flash_and_its_output_is_seen(vboard):
    vboard.wait_output(">>> ")
    (vboard.flash / "boot.py").write_text(BOOT_PY)
    (vboard.flash / "main.py").write_text(COUNTER_MAIN)
    start = len(vboard.output)
    mp(vboard, "reset")
    out = vboard.wait_output("main.py ran", 20, start=start)[start:]
    assert "rst:0xc (SW_CPU_RESET)" in out and out.index("boot.py ran") < out.index("main.py ran")
    # mpremote's Ctrl-C stops the endless main.py where it sleeps: a real KeyboardInterrupt
    r = mp(vboard, "exec", "import machine; print(machine.reset_cause() == machine.SOFT_RESET)")
    assert r.stdout == "True\n"
    out = vboard.output[start:]
    assert 'File "main.py", line 6, in <module>\r\nKeyboardInterrupt: \r\n' in out


def test_the_reset_button_reboots_a_board_stuck_in_a_loop(vboard):
    (vboard.flash / "main.py").write_text("print('spinning')\nwhile True:\n    pass\n")
    vboard.reset()
    vboard.wait_output("spinning", 20)
    start = len(vboard.output)
    vboard.reset()
    out = vboard.wait_output("spinning", 20, start=start)[start:]
    assert "rst:0x1 (POWERON_RESET)" in out


def test_ctrl_c_interrupts_an_endless_main_py_that_never_yields(vboard):
    (vboard.flash / "main.py").write_text("print('spinning')\nx = 0\nwhile True:\n    x += 1\n")
    vboard.reset()
    vboard.wait_output("spinning", 20)
    r = mp(vboard, "exec", "print('free')")
    assert r.stdout == "free\n"
    assert "KeyboardInterrupt: " in vboard.output


def test_a_killed_mpremote_mid_copy_leaves_the_board_serving_and_the_flash_as_written(vboard, tmp_path):
    data = bytes(range(256)) * 160        # 40 KB
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    p = subprocess.Popen([MPREMOTE, "connect", vboard.url, "fs", "cp", str(src), ":big.bin"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dest = vboard.flash / "big.bin"
    end = time.monotonic() + 30
    while not (dest.exists() and dest.stat().st_size >= 4096):
        assert time.monotonic() < end and p.poll() is None, "the copy did not start"
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    written = dest.read_bytes()
    assert 4096 <= len(written) < len(data) and data.startswith(written)
    assert mp(vboard, "exec", "print('serving')").stdout == "serving\n"
    mp(vboard, "fs", "cp", str(src), ":big.bin")
    assert dest.read_bytes() == data


def test_garbage_a_second_connection_and_errors_do_not_kill_the_board(vboard):
    import socket
    host, port = vboard.url[len("socket://"):].split(":")
    first = socket.create_connection((host, int(port)))
    first.sendall(bytes(range(256)) * 4 + b"\x05A\x01\xff\xfe" + b"\x01\x04\x02\x05")
    time.sleep(0.2)
    # mpremote connects while the first client is still attached: it takes the UART over
    r = mp(vboard, "exec", "x = bytearray(4 * 1024 * 1024)", check=False)
    assert r.returncode == 1 and "MemoryError" in r.stdout
    r = mp(vboard, "exec", "import sys\nsys.print_exception(OSError(5))\nraise KeyError('k')",
           check=False)
    assert "KeyError: k" in r.stdout
    assert mp(vboard, "exec", "print('alive')").stdout == "alive\n"
    first.close()


# ---- the sim port's firmware on the virtual board ------------------------------------------

def _stage_sim_firmware(stage):
    """The flash a technician would copy: the firmware and the sim port compiled by mpy-cross
    (as deploy does) under /lib, a main.py that boots pb_sim, and board.json and config.json
    as tests/ports/test_sim.py provisions them (offline: the broker's port refuses)."""
    import json

    from fakeboards import ESP32_4X3
    from host_tools.vm.runner import FIRMWARE_DIR, compile_mpy
    compile_mpy(FIRMWARE_DIR / "parcelbox", stage / "lib" / "parcelbox")
    compile_mpy(FIRMWARE_DIR / "sim" / "pb_sim", stage / "lib" / "pb_sim")
    (stage / "main.py").write_text("from pb_sim import main\nmain.main('/')\n")
    (stage / "board.json").write_text(json.dumps(ESP32_4X3))
    (stage / "config.json").write_text(json.dumps({
        "box_id": "box-1", "box_key": bytes(range(32)).hex(),
        "wifi": {"ssid": "home", "password": "wifi-secret-1"},
        "broker": {"host": "127.0.0.1", "port": 1, "tls": False}, "mqtt_password": "mqtt-secret-2"}))
    return [stage / n for n in ("lib", "main.py", "board.json", "config.json")]


def test_the_sim_firmware_copied_with_mpremote_boots_on_reset_with_its_world(vboard, tmp_path):
    from host_tools.vboard import keys
    assert keys.handle(vboard, "482915#").startswith("error: no firmware is running")
    files = _stage_sim_firmware(tmp_path / "stage")
    mp(vboard, "fs", "cp", "-r", *map(str, files), ":", timeout=180)
    assert (vboard.flash / "lib" / "parcelbox" / "app.mpy").read_bytes() == \
        (tmp_path / "stage" / "lib" / "parcelbox" / "app.mpy").read_bytes()
    start = len(vboard.output)
    mp(vboard, "reset")
    vboard.wait_output(" boot box box-1 ", 30, start=start)
    out = vboard.output[start:]
    assert "rst:0xc (SW_CPU_RESET)" in out
    assert re.search(r"\r\nPB I \d+ boot box box-1 board esp32-devkitc-4x3 ", out)
    box = vboard.wait_sim()
    box.until(lambda: any(" event 1 boot " in ln for ln in box.lines), "the boot event")
    # the box's world: a wrong code typed at its keypad shows red, and the log says so
    box.type("111111")
    box.until(lambda: box.led == "red", "red for a wrong code", ms=5000)
    box.until(lambda: [e[1] for e in box.events()] == ["boot", "wrong_code"], "the event")
    assert box.pulses == [] and [c for _, c in box.boots] == [5]     # machine.reset()
    vboard.wait_output(" wrong_code ", 10, start=start)
    # the same world from the command line: `parcelbox vboard` reads these lines on stdin
    assert keys.handle(vboard, "door 9 open") == "error: door 9 open: the box has compartment 1 only"
    assert keys.handle(vboard, "fly away").startswith("error: fly away: not a command")
    assert keys.handle(vboard, "door 1 open") == "door 1 open"
    box.until(lambda: "forced" in [e[1] for e in box.events()], "a door forced open")
    assert keys.handle(vboard, "door 1 close") == "door 1 closed"
    assert keys.handle(vboard, "press 2 2 2 2 2 2").startswith("typed 6 keys")
    box.until(lambda: [e[1] for e in box.events()].count("wrong_code") == 2, "a second wrong code")
    assert keys.handle(vboard, "status").startswith("LED ")
    out = vboard.output
    for secret in ("wifi-secret-1", "mqtt-secret-2", bytes(range(32)).hex()):
        assert secret not in out
    # mpremote's Ctrl-C stops the firmware where it is (a host call) and gives the REPL
    r = mp(vboard, "exec", "print('at the REPL')")
    assert r.stdout == "at the REPL\n"
    assert "KeyboardInterrupt: \r\n" in vboard.output[start:]


# ---- the command line ----------------------------------------------------------------------

PARCELBOX = str(Path(sys.executable).with_name("parcelbox"))


def test_parcelbox_vboard_serves_mpremote_until_ctrl_c(tmp_path):
    flash = tmp_path / "flash"
    p = subprocess.Popen([PARCELBOX, "vboard", "--flash", str(flash)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        m = re.match(r"virtual board (socket://127\.0\.0\.1:\d+) \(flash (.*)\); Ctrl-C to stop$", line)
        assert m, line
        assert Path(m.group(2)) == flash.resolve()

        class Url:
            url = m.group(1)
        mp(Url, "exec", "open('hello.txt', 'w').write('from the board')")
        assert (flash / "hello.txt").read_text() == "from the board"
        # its keypad from the command line: no firmware runs yet, and it says so
        p.stdin.write("482915#\n")
        p.stdin.flush()
        lines = []
        while len(lines) < 5 and not lines[-1:] == ["error: no firmware is running on the board "
                                                     "yet (deploy, provision, reset)\n"]:
            lines.append(p.stdout.readline())
        assert lines[-1].startswith("error: no firmware"), lines
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out.strip().endswith("stopped")


def test_parcelbox_vboard_serves_a_small_heap_and_names_a_psram_board_as_micropython_does(tmp_path):
    # deploy and doctor read these: gc's heap, and SPIRAM in the machine and build names
    p = subprocess.Popen([PARCELBOX, "vboard", "--flash", str(tmp_path / "flash"), "--heap", "96K",
                          "--psram"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        m = re.match(r"virtual board (socket://127\.0\.0\.1:\d+) ", p.stdout.readline())

        class Url:
            url = m.group(1)
        out = mp(Url, "exec", "import gc, os, sys\ngc.collect()\nprint(gc.mem_free() + gc.mem_alloc())\n"
                 "print(os.uname().machine)\nprint(sys.implementation._build)").stdout.splitlines()
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=30)
    assert out == ["96000", "Generic ESP32 module with SPIRAM with ESP32", "ESP32_GENERIC-SPIRAM"]
    with VirtualBoard(tmp_path / "flash2") as vb:      # without --psram: the plain ESP32's names
        assert mp(vb, "exec", "import sys\nprint(sys.implementation._build)").stdout == "ESP32_GENERIC\n"
        assert "; Generic ESP32 module with ESP32\r\n" in vb.output


def test_parcelbox_vboard_refuses_a_bad_heap_and_a_port_in_use_with_a_clear_error(tmp_path):
    r = subprocess.run([PARCELBOX, "vboard", "--flash", str(tmp_path / "f"), "--heap", "lots"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "heap size 'lots' is not a number" in r.stderr
    assert not (tmp_path / "f").exists()
    with VirtualBoard(tmp_path / "flash") as vb:
        r = subprocess.run([PARCELBOX, "vboard", "--flash", str(tmp_path / "g"),
                            "--port", str(vb.port)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "cannot listen on 127.0.0.1:%d" % vb.port in r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "g").exists()


# ---- the friendly REPL, as a terminal (mpremote repl, picocom) types at it ------------------

class Terminal:
    def __init__(self, vb):
        import socket
        host, port = vb.url[len("socket://"):].split(":")
        self.vb, self.s = vb, socket.create_connection((host, int(port)))

    def type(self, text, expect, timeout=10):
        start = len(self.vb.output)
        self.s.sendall(text.encode() if isinstance(text, str) else text)
        return self.vb.wait_output(expect, timeout, start=start)[start:]


def test_the_friendly_repl_echoes_evaluates_continues_blocks_and_pastes(vboard):
    vboard.wait_output(">>> ")
    t = Terminal(vboard)
    try:
        assert t.type("6 * 7\r", "\r\n>>> ") == "6 * 7\r\n42\r\n>>> "
        out = t.type("for i in range(2):\rprint('i', i)\r\r", "i 1\r\n>>> ")
        assert out == "for i in range(2):\r\n...     print('i', i)\r\n...     \r\ni 0\r\ni 1\r\n>>> "
        assert t.type("undefined_name\r", ">>> ").endswith(
            "NameError: name 'undefined_name' isn't defined\r\n>>> ")
        assert t.type("12\x7f3\r", ">>> ") == "12\x08 \x083\r\n13\r\n>>> "
        assert t.type("abc\x03", ">>> ") == "abc\r\n>>> "       # Ctrl-C drops the line
        out = t.type("\x05", "=== ")
        assert out == "\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== "
        out = t.type("x = 5\r\nif x:\r\n    print('pasted', x)\r\n\x04", ">>> ")
        assert out.endswith("\r\npasted 5\r\n>>> ")
        assert t.type("\x02", ">>> ").startswith("\r\nMicroPython v")     # Ctrl-B: banner
        assert t.type("\x01", "\r\n>") == "\r\nraw REPL; CTRL-B to exit\r\n>"
        assert t.type("\x02", ">>> ").startswith("\r\nMicroPython v")
    finally:
        t.s.close()


def test_the_firmwares_watchdog_resets_a_board_left_at_the_repl(vboard, tmp_path):
    # as on an ESP32: machine.WDT cannot be stopped, so interrupting a watchdog-guarded
    # firmware leaves the technician its timeout (8 s in the sim port) before a reset
    import shutil
    for f in _stage_sim_firmware(tmp_path / "stage"):
        (shutil.copytree if f.is_dir() else shutil.copy)(f, vboard.flash / f.name)
    vboard.reset()
    vboard.wait_output(" heap used ", 30)
    start = len(vboard.output)
    assert mp(vboard, "exec", "print('interrupted')").stdout == "interrupted\n"
    t0 = time.monotonic()
    out = vboard.wait_output("rst:0x7 (TG0WDT_SYS_RESET)", 20, start=start)
    assert 4 < time.monotonic() - t0 < 12
    vboard.wait_output(" boot box box-1 ", 30, start=start)
    assert [c for _, c in vboard.wait_sim().boots] == [3]


class PtyTerminal:
    """A program run in a terminal of its own (a pty pair): what it prints, and keys typed at it."""

    def __init__(self, args):
        import os
        self.master, slave = os.openpty()
        self.p = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        self.out = b""

    def read(self):
        import os
        import select
        while select.select([self.master], [], [], 0)[0]:
            try:
                data = os.read(self.master, 4096)
            except OSError:      # the program ended and its side of the pty closed
                return
            if not data:
                return
            self.out += data

    def type(self, keys: bytes):
        import os
        os.write(self.master, keys)

    def close(self):
        import os
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)
        os.close(self.master)


def test_mpremote_repl_runs_on_the_boards_pty_where_socket_url_cannot(vboard):
    from host_tools.testing.wait import wait_for
    # over socket:// mpremote's console waits on the port's fd, which pyserial's socket has not
    r = subprocess.run([MPREMOTE, "connect", vboard.url, "repl"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert vboard.pty is not None and vboard.pty.startswith("/dev/pts/")
    term = PtyTerminal([MPREMOTE, "connect", vboard.pty, "repl"])
    try:
        wait_for(lambda: b"Use Ctrl-] or Ctrl-x to exit this shell" in term.out, step=term.read,
                 what="mpremote's banner", diag=lambda: repr(term.out))
        term.type(b"\r")
        wait_for(lambda: b">>> " in term.out, step=term.read, what="the prompt", diag=lambda: repr(term.out))
        term.type(b"print(6 * 7)\r")
        wait_for(lambda: b"42\r\n>>> " in term.out, step=term.read, what="the answer", diag=lambda: repr(term.out))
        # the monitor started meanwhile waits: mpremote holds the port exclusively
        mon = subprocess.Popen([sys.executable, "-m", "host_tools.cli.main", "monitor", "--port", vboard.pty],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            import os
            import select
            seen = []

            def more():
                if select.select([mon.stdout], [], [], 0)[0]:
                    seen.append(os.read(mon.stdout.fileno(), 4096).decode("utf-8", "replace"))
            wait_for(lambda: "in use by another program" in "".join(seen), what="the monitor's note",
                     step=more, diag=lambda: "".join(seen))
            term.type(b"print('still mine')\r")
            wait_for(lambda: b"still mine\r\n>>> " in term.out, step=term.read, what="the REPL to stay mpremote's")
            term.type(b"\x1d")                               # Ctrl-]: mpremote ends
            wait_for(lambda: term.p.poll() is not None, step=term.read, what="mpremote to end")
            assert term.p.returncode == 0
            wait_for(lambda: "connected to %s" % vboard.pty in "".join(seen), what="the monitor to take the port",
                     step=more, diag=lambda: "".join(seen))
        finally:
            mon.send_signal(signal.SIGINT)
            mon.wait(30)
    finally:
        term.close()
