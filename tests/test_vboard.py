"""The virtual board (host_tools/vboard.py, docs/vboard.md) driven by the real mpremote as
a subprocess, as a technician's laptop drives an ESP32 over USB."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host_tools.vboard import VirtualBoard

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
