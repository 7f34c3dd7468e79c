"""A board on a serial port, through the real mpremote's transport (deploy, provision, doctor).

`BoardConn(port)` opens the port with mpremote's `SerialTransport` (pyserial's
`serial_for_url`, so `/dev/ttyUSB0` and the virtual board's `socket://127.0.0.1:PORT` alike),
enters the raw REPL (Ctrl-C stops a running application first) and runs short MicroPython
scripts on the board that answer one JSON line. Board-side scripts never print a secret.
"""

from __future__ import annotations

import json
import time

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from host_tools.boards import BoardError

SLOTS = ("app_a", "app_b")
POINTER = "app.ptr"
SAFE_ONCE = "safe_once"   # main.py skips the application once and removes it (docs/tooling.md 3)
APP_MODULES = ("pb_esp32.main", "pb_sim.main")


class BoardConnectionError(BoardError):
    """The board cannot be reached, or did not do what it was asked."""


# Before the helpers: the heap free once collected, and whether the application ran.
_FREE = "import gc, sys\ngc.collect()\nprint(gc.mem_free(), int(any(m in sys.modules for m in %r)))"
HEAP_LOW = 16 * 1024

# Helpers defined on the board once per connection: sha256 of a file, a walk of a folder.
_HELPERS = """\
import os, json, gc, hashlib, binascii
def _pbh(p):
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(m[:n])
    return binascii.hexlify(h.digest()).decode()
def _pbwalk(d, pre, out):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _pbwalk(p, pre + e[0] + '/', out)
        else:
            out[pre + e[0]] = _pbh(p)
def _pbx(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
"""


class BoardConn:
    def __init__(self, port: str, baud: int = 115200, timeout: float = 10.0):
        self.port, self.baud, self.timeout = port, baud, timeout
        self.t: SerialTransport | None = None
        self._connect()

    def _connect(self, wait: float = 0.0) -> None:
        end = time.monotonic() + wait
        while True:
            try:
                self.t = SerialTransport(self.port, baudrate=self.baud)
                break
            except (TransportError, serial.SerialException, OSError, ValueError) as e:
                if time.monotonic() >= end:
                    raise BoardConnectionError("cannot open %s: %s" % (self.port, _first_line(e))) from None
                time.sleep(0.3)
        try:
            self.t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout)
            self._helpers()
        except BoardConnectionError:
            self.close()
            raise
        except (TransportError, serial.SerialException, OSError) as e:
            self.close()
            raise BoardConnectionError("%s does not answer as a MicroPython board (raw REPL): %s"
                             % (self.port, _first_line(e))) from None

    # A firmware too big for the heap fails its start and leaves its modules loaded at the
    # REPL: a heap that full cannot compile the helpers, nor the tools' scripts. A soft reset
    # empties it (in the raw REPL it runs boot.py, not main.py); never when the application
    # ran, whose watchdog would outlive it (deploy and doctor reset that one into safe mode).
    def _helpers(self) -> None:
        try:
            out = self.t.exec(_FREE % (APP_MODULES,)).split()
            free, ran = int(out[-2]), int(out[-1])
        except TransportExecError as e:
            if "MemoryError" not in str(e.error_output):
                raise
            free, ran = 0, 0
        except (IndexError, ValueError):   # an answer not ours: leave the board as it is
            free, ran = HEAP_LOW, 1
        if free < HEAP_LOW and not ran:
            self.t.enter_raw_repl(soft_reset=True, timeout_overall=self.timeout)
        try:
            self.t.exec(_HELPERS)
        except TransportExecError as e:
            if "MemoryError" not in str(e.error_output):
                raise
            raise BoardConnectionError("%s: the board's heap is full (MemoryError) and its application ran: "
                             "reset the board, then try again" % self.port) from None

    def close(self) -> None:
        if self.t is not None:
            try:
                self.t.close()
            except (serial.SerialException, OSError):
                pass
            self.t = None

    def __enter__(self) -> "BoardConn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exec(self, code: str) -> bytes:
        try:
            return self.t.exec(code)
        except TransportExecError as e:
            raise BoardConnectionError("the board failed: %s" % _last_line(e.error_output)) from None
        except (TransportError, serial.SerialException, OSError) as e:
            raise BoardConnectionError("lost %s: %s" % (self.port, _first_line(e))) from None

    def json(self, code: str):
        """Run `code`, which prints one JSON line last; its value."""
        out = self.exec(code).decode("utf-8", "replace").strip().splitlines()
        try:
            return json.loads(out[-1])
        except (IndexError, ValueError):
            raise BoardConnectionError("the board's answer is not JSON: %r" % (out[-1:] or "")) from None

    def app_running(self) -> bool:
        """Was the application running (its modules loaded) when Ctrl-C stopped it?"""
        return bool(self.json("import sys\nprint(json.dumps([m for m in %r if m in sys.modules]))"
                              % (APP_MODULES,)))

    def write_file(self, path: str, data: bytes, progress=None, chunk: int = 2048) -> None:
        try:
            self.t.fs_writefile(path, data, chunk_size=chunk, progress_callback=progress)
        except (TransportError, OSError) as e:
            raise BoardConnectionError("writing %s failed: %s" % (path, _first_line(e))) from None

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write path.tmp, then rename it over path (LittleFS: atomic)."""
        self.write_file(path + ".tmp", data)
        self.exec("os.rename(%r, %r)" % (path + ".tmp", path))

    def hash(self, path: str) -> str | None:
        return self.json("print(json.dumps(_pbh(%r) if _pbx(%r) else None))" % (path, path))

    def reset(self, until: str | tuple[str, ...] | None = None, timeout: float = 20.0,
              keep: list | None = None) -> list[str]:
        """A hard reset (as `mpremote reset`), then the board's output lines until one holds
        `until` (or the timeout); the connection is closed, or with `keep` (a list) left open
        and appended to it as (serial, bytes read past that line): for a monitor."""
        ser = self.t.serial
        try:
            self.t.exec_raw_no_follow("import time, machine\ntime.sleep_ms(100)\nmachine.reset()")
        except (TransportError, serial.SerialException, OSError):
            pass   # the board went while we spoke: it is resetting
        self.t = None
        return read_boot(self.port, until, timeout, self.baud, ser, keep) if until else _close(ser)

    def reconnect(self, wait: float = 20.0) -> None:
        self.close()
        self._connect(wait)


def _close(ser) -> list[str]:
    try:
        ser.close()
    except (serial.SerialException, OSError):
        pass
    return []


def read_boot(port: str, until: str | tuple[str, ...], timeout: float = 20.0, baud: int = 115200, ser=None,
              keep: list | None = None) -> list[str]:
    """After a reset: the board's output lines until one contains `until` (or the timeout).
    Reads on `ser` (the port still open from before the reset), reopening it if it vanished
    (a board with native USB leaves the bus while it resets)."""
    end = time.monotonic() + timeout
    lines: list[str] = []
    buf = b""
    while time.monotonic() < end:
        if ser is None:
            try:
                ser = serial.serial_for_url(port, baudrate=baud, timeout=0.1)
            except (serial.SerialException, OSError, ValueError):
                time.sleep(0.3)
                continue
        try:
            chunk = ser.read(max(1, ser.in_waiting))
        except (serial.SerialException, OSError):
            _close(ser)
            ser = None
            continue
        buf += chunk
        *done, buf = buf.split(b"\n")
        for i, ln in enumerate(done):
            lines.append(ln.decode("utf-8", "replace").rstrip("\r"))
            if any(u in lines[-1] for u in ((until,) if isinstance(until, str) else until)):
                if keep is not None:
                    keep.append((ser, b"\n".join(done[i + 1:] + [buf])))
                else:
                    _close(ser)
                return lines
    if ser is not None:
        _close(ser)
    return lines


def _first_line(e: BaseException) -> str:
    text = " ".join(str(a) for a in getattr(e, "args", ()) if isinstance(a, str)) or str(e) or type(e).__name__
    return text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__


def _last_line(b: bytes | str) -> str:
    # mpremote's TransportExecError carries the board's traceback already decoded (a str)
    lines = (b.decode("utf-8", "replace") if isinstance(b, bytes) else b).strip().splitlines()
    return lines[-1][:200] if lines else "no error text"
