"""Firmware boxes as a device runs them, for bench_latency: one process per box, each
the linux port's boot (`pb_linux.main.boot`: board.json and config.json from a state
folder, LinuxNet, the port object) and then the superloop itself, `App.run`, with its
real `Link` and the port's `idle(ms, conn)`: woken by the link's socket (the port's own
clock), or, with `wake=False`, a lent sleep that just sleeps (the loop before it woke on the
socket). Stand-ins: the hardware (no key pressed, doors shut, outputs nowhere) and, unless
`durable`, the flash: the ESP32's `Storage` class on the state folder, where the linux
port's `DurableStorage` would fsync every write (an SD card's guarantee, not the ESP32's
LittleFS: its fsync tail would stand in for a flash it does not model).

The one thing added to the box: `remote.receive` is timed (perf_counter, CLOCK_MONOTONIC,
comparable across processes), so the bench can split an activation into its parts.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from host_tools import paths

BOARD = paths.BOARDS / "rpi4-4x4.json"    # the linux port's board: 4 compartments
COMPARTMENTS = 4


class _NoHardware:
    """pb_linux.hw.Hardware's interface with nothing attached."""

    def scan(self):
        return 0

    def door(self, comp):
        return False

    def tamper(self):
        return None

    def solenoid(self, comp, on):
        pass

    def indicate(self, led, hz):
        pass

    def failsafe_tripped(self):
        return 0

    def all_off(self):
        pass


def provision(state: Path, box_id: str, key: bytes, password: str, host: str, port: int,
              ca: Path) -> Path:
    """A state folder as `parcelbox linux provision` leaves it."""
    from host_tools import boards
    from host_tools.sim.simbox import provision as _provision

    return _provision(state, boards.device_board(BOARD), {
        "box_id": box_id, "box_key": key.hex(), "wifi": {"ssid": "os"},
        "broker": {"host": host, "port": port, "tls": True, "ca": "ca.pem"},
        "mqtt_password": password}, {"ca.pem": ca})


def box_main(pipe, state: str, wake: bool, durable: bool = False) -> None:
    """One box: boot, then App.run one pass at a time, answering the pipe between passes
    (its socket is the only thing the port waits on). In: ("report",), ("stop",).
    Out: ("connected",) once the link is up, ("report", {"applied": [...]}), ("stopped",)."""
    from pb_linux import main as lmain

    if not durable:
        from parcelbox.storage import Storage
        lmain.DurableStorage = Storage   # this process's boot only (a spawned interpreter)
    kw = {}
    if not wake:
        kw["sleep"] = lambda ms: time.sleep(ms / 1000)
    app, _ = lmain.boot(state, hw_factory=lambda board: _NoHardware(), out=lambda line: None,
                        notify=lambda s: False, reset_cause=lambda: lmain.PWRON_RESET,
                        rand=os.urandom, **kw)
    if app is None:
        pipe.send(("failed",))
        return
    applied = []
    receive = app.remote.receive
    topic_cmd = app.remote.topic_cmd

    def timed(topic, payload, now):
        t0 = time.perf_counter()
        receive(topic, payload, now)
        if topic == topic_cmd:
            applied.append((t0, time.perf_counter()))
    app.remote.receive = timed   # the link calls self.remote.receive: this one
    up = False
    while True:
        app.run(1)
        if not up and app.link.state == "connected":
            up = True
            pipe.send(("connected",))
        if pipe.poll():
            msg = pipe.recv()
            if msg[0] == "report":
                pipe.send(("report", {"applied": applied, "errors": app.errors}))
            elif msg[0] == "stop":
                app.link.close(clean=False)
                pipe.send(("stopped",))
                return


class AppBoxes:
    """The parent's side: one process per box, as bench.netlib.BoxWorker answers."""

    def __init__(self, states: dict, wake: bool, durable: bool = False):
        ctx = multiprocessing.get_context("spawn")
        self.boxes = {}
        for box_id, state in states.items():
            pipe, child = ctx.Pipe()
            proc = ctx.Process(target=box_main, args=(child, str(state), wake, durable),
                               daemon=True)
            proc.start()
            child.close()
            self.boxes[box_id] = (proc, pipe)

    def _expect(self, pipe, kind: str, timeout: float):
        if not pipe.poll(timeout):
            raise TimeoutError("box: no %r within %g s" % (kind, timeout))
        msg = pipe.recv()
        if msg[0] != kind:
            raise RuntimeError("box said %r, expected %r" % (msg[0], kind))
        return msg[1] if len(msg) > 1 else None

    def expect(self, kind: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        for proc, pipe in self.boxes.values():
            self._expect(pipe, kind, max(0.1, end - time.monotonic()))

    def report(self, timeout: float = 30) -> dict:
        out = {}
        for box_id, (proc, pipe) in self.boxes.items():
            pipe.send(("report",))
            out[box_id] = self._expect(pipe, "report", timeout)
        return {"boxes": out}

    def stop(self) -> None:
        for proc, pipe in self.boxes.values():
            try:
                if proc.is_alive():
                    pipe.send(("stop",))
                    self._expect(pipe, "stopped", 10)
            except (OSError, EOFError, TimeoutError, RuntimeError):
                pass
        for proc, pipe in self.boxes.values():
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            pipe.close()
