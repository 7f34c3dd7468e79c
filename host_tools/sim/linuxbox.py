"""The linux port (firmware/linux/pb_linux) on the host, on a virtual board circuit.

`LinuxBox` is a `SimBox` (host_tools/sim/simbox.py: the thread, the world's clock, power cuts,
the connections to a real broker, the scenario runner's interface) whose firmware is
the linux port under CPython: `pb_linux.main` with its real Hardware (Matrix_Keypad on
`digitalio` pins, doors and tamper as digitalio inputs, solenoids, LED and buzzer as
outputs), its real Port and boot, its real `DurableStorage` on the flash folder. What
cannot exist here is lent, modelling the hardware: Blinka's `board` and `digitalio`
are the virtual circuit's (host_tools/virtual/keycircuit.py: keys with pull-ups and bounce,
door and tamper switches to GND), the clock and sleep are the world's, systemd is
this host (READY=1, WATCHDOG=1 against the unit file's WatchdogSec; a stop runs the
unit's ExecStopPost all-off, and it restarts the service), and connections go through
the SimBox's bridge to real sockets so `online` and `network down` work as for the sim.
"""

from __future__ import annotations

import re
import sys
import traceback
from pathlib import Path

from host_tools.virtual import keycircuit
from host_tools.sim.simbox import FIRMWARE_DIR, SOFT_RESET, WDT_RESET, PowerCut, Reboot, SimBox, _Conn, _errno

LINUX_DIR = FIRMWARE_DIR / "linux"
UNIT = LINUX_DIR / "parcelbox.service"
ACTIVE_BUZZER_HZ = 2300     # what an active buzzer sounds at (its own oscillator)
_RGB_TO_LED = {0: 0, 2: 1, 1: 2, 3: 3, 4: 4}    # pb_linux.hw._RGB inverted: mask -> LED_*


def unit_watchdog_ms(unit: Path = UNIT) -> int:
    """WatchdogSec of the shipped unit file, in ms."""
    m = re.search(r"^WatchdogSec=(\d+)\s*$", unit.read_text(), re.M)
    if not m:
        raise ValueError(f"{unit}: no WatchdogSec=")
    return int(m.group(1)) * 1000


def _use_circuit_digitalio() -> None:
    # adafruit_matrixkeypad binds digitalio's Direction/Pull when imported
    sys.modules["digitalio"] = keycircuit
    m = sys.modules.get("adafruit_matrixkeypad")
    if m is not None and getattr(m, "Direction", None) is not keycircuit.Direction:
        del sys.modules["adafruit_matrixkeypad"]


class _VTimer:
    """A failsafe timer on the world's clock (pb_linux.hw's timer(ms, fn) interface)."""

    def __init__(self, box: "LinuxBox", ms: int, fn):
        self.due, self.fn, self.live = box.now + ms, fn, True
        box._timers.append(self)

    def cancel(self) -> None:
        self.live = False


class _Conn2:
    """A connection as the linux port sees it (HostConn's interface), through the box."""

    def __init__(self, box: "LinuxBox", cid: int):
        self.box, self.cid = box, cid

    def _c(self) -> _Conn:
        return self.box._conn(self.cid)

    def ready(self) -> bool:
        c = self._c()
        if c.err:
            raise OSError(c.err, "connection failed")
        try:
            return c.ready()
        except OSError as e:
            c.err = _errno(e)
            raise

    def send(self, data) -> int:
        return self.box._host["send_raw"](self.cid, bytes(data))

    def recv(self, n: int):
        return self.box._host["recv_raw"](self.cid, n)

    def recv_into(self, buf):
        data = self.recv(len(buf))
        if data is None:
            return None
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.box._host["close"](self.cid)


class _Net:
    """The network of docs/runtime.md section 4 for the linux port in the world."""

    def __init__(self, box: "LinuxBox"):
        self.box = box

    def step(self, now: int) -> None:
        pass

    def up(self) -> bool:
        return self.box.net_up

    def time(self):
        return self.box._epoch(self.box.now) or None

    def open(self, host, port, tls, ca, cert=None, key=None):
        r = self.box._host["open"](host, port, tls, ca, cert, key)
        if r < 0:
            raise OSError(-r, "cannot connect")
        return _Conn2(self.box, r)


class LinuxBox(SimBox):
    """One box running the linux port. Same interface as SimBox (vm is always False)."""

    def __init__(self, flash, *, board: dict | None = None, bounce_ms: int = 5, seed: int = 0,
                 power: bool = True, **kw):
        kw.pop("vm", None)
        kw.pop("heap", None)
        super().__init__(flash, vm=False, board=board, bounce_ms=bounce_ms, seed=seed, power=False, **kw)
        b = self.circuit.board
        if b is None:
            raise ValueError("LinuxBox needs a board (board.json in the flash folder)")
        kp = b["keypad"]
        if not all(isinstance(p, str) for p in kp["rows"] + kp["cols"]):
            raise ValueError("LinuxBox needs a linux board: pins named as Blinka's board module "
                             "names them (D17, ...)")
        self.board_json = b
        # the circuit on the world's clock; external pull-ups where the board has them
        ext = list(kp["cols"]) if kp.get("pull") == "external" else []
        if b.get("door_pull") == "external":
            ext += [c["door"] for c in b["compartments"]]
        if b.get("tamper") is not None and b.get("tamper_pull") == "external":
            ext.append(b["tamper"])
        self.keys = keycircuit.Circuit(kp["rows"], kp["cols"], kp["layout"], lambda: self.now,
                                       bounce_ms, seed, pullups=ext, float_level=0)
        for c in b["compartments"]:
            self.keys.add_switch(c["door"], closed=True)        # shut: the reed is closed
        if b.get("tamper") is not None:
            self.keys.add_switch(b["tamper"], closed=True)
        names = [p for p in self.keys.ids]
        names += [c["solenoid"] for c in b["compartments"]] + list(b["led"]) + [b["buzzer"]]
        self.pins = keycircuit.board_module(self.keys, [str(n) for n in names])
        self.watchdog_ms = unit_watchdog_ms()
        self.ready = 0                   # READY=1 notifications
        self.feeds = 0                   # WATCHDOG=1 notifications
        self.exits: list[str] = []       # how each run ended, as $SERVICE_RESULT says it
        self._timers: list[_VTimer] = []
        self._wd_armed = False
        for name in ("idle", "notify", "send_raw", "recv_raw"):
            self._host[name] = self._guard(name, getattr(self, "_h_" + name))
        if power:
            self.boot()

    # ---- the firmware's thread: the linux port under CPython ---------------------

    def _run_firmware(self) -> None:
        _use_circuit_digitalio()
        from adafruit_matrixkeypad import Matrix_Keypad
        from pb_linux import main as lmain
        from pb_linux.hw import Hardware

        def hw_factory(board):
            return Hardware(board, keycircuit, self.pins, Matrix_Keypad,
                            timer=lambda ms, fn: _VTimer(self, ms, fn))

        self._wd_armed = False
        self._timers = []

        def reset():
            self.exits.append("exit-code")
            raise Reboot(SOFT_RESET)     # the process exits; systemd starts it again

        try:
            why = lmain.main(str(self.flash), self.max_loops, hw_factory=hw_factory, net=_Net(self),
                             clock=lambda: self._ticks(self.now), sleep=self._host["idle"],
                             reset_cause=lambda: self._cause, out=self._host["log"],
                             notify=self._host["notify"], rand=self._rand, reset=reset,
                             blink_rounds=1)
        except (Reboot, PowerCut):
            raise
        except Exception as e:  # noqa: BLE001 - the firmware's own uncaught error
            self._crashes.append("".join(traceback.format_exception(e)))
            self.halted = "the firmware raised %s" % type(e).__name__
            self.exits.append("exit-code")
            return
        self.exits.append("success")
        self.halted = "boot failed: %s" % why if why else "the firmware returned"

    def _rand(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    # The unit's ExecStopPost on a stop (every output pin off), or a power cut: every pin
    # floats and the world's solenoids and LED are off.
    def _chip_reset(self) -> None:
        k = self.keys
        for i in range(len(k.ids)):
            k.mode[i] = 0
            k.pull[i] = 0
        self._timers = []
        self._wd_armed = False
        super()._chip_reset()

    # ---- host calls of the linux port ---------------------------------------------

    def _outputs(self, t: int) -> None:
        b = self.board_json
        on = b["solenoid_active"]
        sol = 0
        for i, c in enumerate(b["compartments"]):
            if self.keys.driven(c["solenoid"]) == on:
                sol |= 1 << i
        self.circuit.solenoids.drive(sol, t)
        leds = b["led"]
        mask = 0
        for i, p in enumerate(leds):
            if self.keys.driven(p) == b["led_active"]:
                mask |= 1 << i
        led = (1 if mask else 0) if len(leds) == 1 else _RGB_TO_LED.get(mask, mask)
        hz = ACTIVE_BUZZER_HZ if self.keys.driven(b["buzzer"]) == 1 else 0
        self.circuit.indicate(led, hz, t)

    # time.sleep(ms): outputs seen, failsafe timers fired at their time, systemd's watchdog
    def _h_idle(self, ms: int) -> None:
        self.loops += 1
        t = self.now
        self._outputs(t)
        self._watchdog(t)
        end = t + max(int(ms), 0)
        while True:
            due = [x for x in self._timers if x.live]
            nxt = min((x.due for x in due), default=None)
            stop = end if nxt is None or nxt > end else nxt
            if stop > self.now:
                self._pass(stop - self.now)
            for x in due:
                if x.due <= self.now and x.live:
                    x.live = False
                    x.fn()
            self._timers = [x for x in self._timers if x.live]
            self._outputs(self.now)
            self._watchdog(self.now)
            if self.now >= end:
                return

    def _watchdog(self, t: int) -> None:
        if self._wd_armed and t - self._fed_at > self.watchdog_ms:
            self.exits.append("watchdog")
            raise Reboot(WDT_RESET)

    def _h_notify(self, state: str) -> bool:
        if state == "READY=1":
            self.ready += 1
            self._wd_armed = True
            self._fed_at = self.now
        elif state == "WATCHDOG=1":
            self.feeds += 1
            self._fed_at = self.now
        return True

    def _h_send_raw(self, cid: int, data: bytes) -> int:
        return self._conn(cid).send(data)

    def _h_recv_raw(self, cid: int, n: int):
        conn = self._conn(cid)
        data = conn.recv(n)
        if data and conn.connack is None and len(data) >= 4 and data[:2] == b"\x20\x02":
            conn.connack = data[3]
        return data

    def _h_log(self, line: str) -> None:     # the port formats its own "PB ..." lines
        self.lines.append(line)
        if self.echo:
            print(line)

    # ---- the caller's side: the box's hardware, on the virtual circuit --------------

    def press(self, key) -> None:
        with self._cv:
            self.keys.press(key)

    def release(self, key) -> None:
        with self._cv:
            self.keys.release(key)

    def set_door(self, comp: int, is_open: bool) -> None:
        with self._cv:
            self.keys.set_switch(self.board_json["compartments"][comp - 1]["door"], not is_open)

    def set_tamper(self, is_open: bool) -> None:
        with self._cv:
            t = self.board_json.get("tamper")
            if t is None:
                from host_tools.sim.simbox import SimError
                raise SimError("this board has no tamper switch")
            self.keys.set_switch(t, not is_open)
