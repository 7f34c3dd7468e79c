"""What the network benchmarks share: a private mosquitto, firmware boxes on their own
MQTT link in a worker process, and percentiles.

The broker is host_tools/testing/broker.py's (the test fixtures' own: TLS, one user per box, the
docs/protocol.md section 9 ACL, client id = username), started without pytest. Boxes are
the firmware core (Box + Remote) with the firmware's own MQTT client (parcelbox.link)
over firmware/linux/pb_linux/net.py, many per process in one non-blocking loop, as a device runs
one. Each box has its own flash folder, connection, username and password.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import time
from pathlib import Path

from host_tools.testing import broker as brokerlib
from pb_linux.net import HostConn, HostNet

SCAN_MS = 10       # the firmware superloop's longest sleep (parcelbox.app.SCAN_MS)
SWEEP_MS = 250     # an idle box's link is stepped at least this often (keepalive, PUBACKs)
_HORIZON_MS = 50   # parcelbox.link._POLL_MS: "data may come at any time", not a real deadline


class BenchBroker(brokerlib.Broker):
    """The fixtures' mosquitto, logging notices and errors only: at `log_type all` it
    writes several lines per packet, which on 2 shared cores is CPU the boxes and
    the backend need. Everything else (TLS, users, ACL, persistence) is unchanged."""

    def __init__(self, **kw):
        super().__init__("mosquitto", **kw)

    def _write_files(self):
        super()._write_files()
        text = self.conf_path.read_text()
        text = text.replace("log_type all\n", "log_type error\nlog_type warning\nlog_type notice\n")
        text = text.replace("connection_messages true\n", "connection_messages false\n")
        self.conf_path.write_text(text)


def start_broker(workdir: Path | None = None, users: dict | None = None,
                 backends: tuple = ()) -> BenchBroker:
    """A running private mosquitto with `users` (box id: password) and backend users.
    Users are written before the start, so a thousand of them cost no reloads.
    Raises brokerlib.BrokerUnavailable without a mosquitto binary."""
    if brokerlib.find_mosquitto() is None:
        raise brokerlib.BrokerUnavailable("the network benchmarks need mosquitto "
                                          "(apt-get install mosquitto)")
    raise_nofile()
    b = BenchBroker(workdir=workdir)
    for name, pw in (users or {}).items():
        b.add_user(name, pw)
    for name in backends:
        b.add_user(name, backend=True)
    return b.start()


def raise_nofile(want: int = 8192) -> int:
    """Soft RLIMIT_NOFILE up to `want` (capped by the hard limit); mosquitto inherits it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= new:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# ---------------------------------------------------------------- boxes in a worker

class _Conn(HostConn):
    """A HostConn whose socket the worker's poll() can watch, counting the MQTT bytes
    (TLS plaintext) it moves."""

    sent = received = 0

    def fileno(self) -> int:
        return self._raw.fileno()

    def send(self, data) -> int:
        n = super().send(data)
        self.sent += n
        return n

    def recv_into(self, buf):
        n = super().recv_into(buf)
        if n:
            self.received += n
        return n

    def recv(self, n):
        data = super().recv(n)
        if data:
            self.received += len(data)
        return data


class _Net(HostNet):
    def __init__(self, on_open):
        super().__init__()
        self._on_open = on_open

    def open(self, host, port, tls, ca, cert=None, key=None):
        self.opened += 1
        c = _Conn(host, port, tls, ca, cert, key)
        self._on_open(c)
        return c


def _ticks() -> int:
    return (time.monotonic_ns() // 1000000) & 0x3FFFFFFF


class Node:
    """One box: core, remote, link, and a person at its keypad who types the codes given,
    opens the door when the solenoid pulls and shuts it once the box saw it open."""

    def __init__(self, spec: dict, box_id: str, key: bytes, password: str, flash: Path,
                 settings: dict, net):
        from parcelbox import link as L
        from parcelbox.box import Box
        from parcelbox.remote import Remote, stored_settings
        from parcelbox.storage import Storage

        self.id = box_id
        flash.mkdir(parents=True, exist_ok=True)
        storage = Storage(str(flash))
        now = _ticks()
        self.emitted = []        # (seq, kind, comp, code_id, wall time) of every event
        self._kinds = []
        self.box = Box(storage, key, stored_settings(storage, settings), now, self._on_event)
        self.remote = Remote(self.box, box_id, key)
        self.applied = []        # (perf_counter when a command's receive began, ended)
        self.msgs = {}           # "in cmd", "out evt", ...: [messages, payload bytes]
        self._wrap_receive()
        self._wrap_poll()
        self.link = L.Link(self.remote, {"box_id": box_id, "host": spec["host"],
                                         "port": spec["port"], "tls": True, "ca": spec["ca"],
                                         "password": password, "keepalive": 60},
                           net, os.urandom)
        self.conn = None         # the link's current connection, and its fd
        self.fd = None
        self.jobs = []           # codes to type, in order
        self.typed = []          # (code index, wall time of the final key)
        self.refusals = 0
        self.unlocks = 0
        self.door_open = False
        self._phase = "idle"     # idle, wait_unlock, opening, closing

    def _wrap_receive(self):
        receive = self.remote.receive
        topic_cmd = self.remote.topic_cmd
        applied = self.applied

        def timed(topic, payload, now):
            t0 = time.perf_counter()    # CLOCK_MONOTONIC: comparable across processes
            receive(topic, payload, now)
            if topic == topic_cmd:
                applied.append((t0, time.perf_counter()))
            self._count("in " + topic.rsplit("/", 1)[1], payload)
        self.remote.receive = timed

    def _wrap_poll(self):
        poll = self.remote.poll

        def counted(now):
            m = poll(now)
            if m is not None:
                self._count("out " + m[0].rsplit("/", 1)[1], m[1])
            return m
        self.remote.poll = counted

    def _count(self, kind, payload):
        c = self.msgs.get(kind)
        if c is None:
            c = self.msgs[kind] = [0, 0]
        c[0] += 1
        c[1] += len(payload)
    def _on_event(self, seq, kind, comp, code_id, arg, t):
        self.emitted.append((seq, kind, comp, code_id, time.time()))
        self._kinds.append(kind)

    def step(self, now: int) -> int:
        """One pass of the superloop for this box; returns the tick it wants to run again."""
        from parcelbox import events, ticks
        from parcelbox import lock as _lock

        box = self.box
        box.door(1, self.door_open, now)
        box.tick(now)
        # The person pulls the door once the latch is free: while the solenoid pulls or
        # after (the compartment's state, not a sample of a 50 ms pulse that a busy
        # loop could miss between two passes).
        if self._phase == "wait_unlock" and box.doors[0].state in (_lock.PULSING, _lock.RELEASED):
            self.door_open = True
            self._phase = "opening"
        kinds, self._kinds = self._kinds, []
        for k in kinds:
            if k == events.OPENED and self._phase == "opening":
                self.unlocks += 1           # an unlock that opened the door
                self.door_open = False      # in, parcel taken or left, door shut
                self._phase = "closing"
            elif k in (events.DEPOSIT, events.PICKUP) and self._phase == "closing":
                self._phase = "idle"
            elif k == events.REFUSED and self._phase == "wait_unlock":
                self.refusals += 1          # still busy: the person tries again
                self._phase = "idle"
                self.jobs.insert(0, self._last)
            elif k == events.NOT_OPENED:    # missed the window (a starved loop): again
                self.refusals += 1
                self.door_open = False
                self._phase = "idle"
                self.jobs.insert(0, self._last)
        if self._phase == "idle" and self.jobs and box.doors[0].at_rest(now):
            self._last = code = self.jobs.pop(0)
            self._phase = "wait_unlock"
            for ch in code:
                box.key(ord(ch), now)
            self.typed.append(time.time())
            box.door(1, self.door_open, now)
        self.link.step(now)
        # the person's next look, the core's timers, the link's (its 50 ms horizon only
        # means "data may come": poll() tells us that)
        best = ticks.add(now, SWEEP_MS)
        d = box.next_deadline(now)
        if d is not None and ticks.diff(d, best) < 0:
            best = d
        d = self.link.next_deadline(now)
        if ticks.diff(d, now) != _HORIZON_MS and ticks.diff(d, best) < 0:
            best = d
        if (self._phase != "idle" or self.jobs) and ticks.diff(best, ticks.add(now, SCAN_MS)) > 0:
            best = ticks.add(now, SCAN_MS)   # door and solenoid are sampled every scan
        return best

    @property
    def busy(self) -> bool:
        return bool(self.jobs) or self._phase != "idle"


def worker_main(pipe, spec: dict) -> None:
    """A process running spec["boxes"] [(box_id, key hex, password), ...] until told to stop.

    spec: host, port, ca, flash (folder), settings, mode ("event": a box wakes when its
    socket has data, as a loop blocking in select() does; "superloop": each box sleeps
    as parcelbox.app does, at most SCAN_MS, and reads its socket when it wakes).
    Messages in: ("jobs", {box: [code, ...]}), ("idle",), ("report",), ("stop",).
    Out: ("connected", n) once all are, ("idle", bool), ("report", {...})."""
    from parcelbox import link as L
    from parcelbox import ticks

    raise_nofile()
    poller = select.poll()
    by_fd = {}
    nodes = {}
    opening = []

    def on_open(conn):
        opening.append(conn)

    net = _Net(on_open)
    flash = Path(spec["flash"])
    for box_id, key_hex, password in spec["boxes"]:
        n = Node(spec, box_id, bytes.fromhex(key_hex), password, flash / box_id,
                 spec["settings"], net)
        nodes[box_id] = n
    poller.register(pipe.fileno(), select.POLLIN)
    superloop = spec.get("mode") == "superloop"
    due = {box_id: _ticks() for box_id in nodes}
    said_connected = False
    global _LONGEST
    while True:
        t_pass = time.perf_counter()
        now = _ticks()
        for box_id, n in nodes.items():
            if not ticks.reached(now, due[box_id]):
                continue
            wake = n.step(now)
            while opening:                       # the link opened a socket: watch it
                c = opening.pop()
                if n.fd is not None and by_fd.get(n.fd) is n:   # the old one is closed
                    del by_fd[n.fd]
                    try:
                        poller.unregister(n.fd)
                    except (KeyError, ValueError):
                        pass
                n.conn = c
                if not superloop:    # a superloop reads only when its sleep ends
                    n.fd = c.fileno()
                    by_fd[n.fd] = n
                    poller.register(n.fd, select.POLLIN)
            if n.link.state != L.CONNECTED:
                wake = ticks.add(now, 5)         # connecting: TCP and TLS advance by steps
            if superloop and ticks.diff(wake, ticks.add(now, SCAN_MS)) > 0:
                wake = ticks.add(now, SCAN_MS)
            due[box_id] = wake
        _LONGEST = max(_LONGEST, time.perf_counter() - t_pass)
        if not said_connected and all(n.link.state == L.CONNECTED for n in nodes.values()):
            said_connected = True
            pipe.send(("connected", len(nodes)))
        now = _ticks()
        soonest = min(ticks.diff(d, now) for d in due.values())
        timeout = max(0, soonest)
        for fd, ev in poller.poll(timeout):
            if ev & select.POLLNVAL:             # a socket the link has closed
                by_fd.pop(fd, None)
                poller.unregister(fd)
                continue
            if fd == pipe.fileno():
                msg = pipe.recv()
                if msg[0] == "stop":
                    for n in nodes.values():
                        n.link.close(clean=False)
                    pipe.send(("stopped",))
                    return
                if msg[0] == "jobs":
                    for box_id, codes in msg[1].items():
                        nodes[box_id].jobs.extend(codes)
                        due[box_id] = _ticks()
                elif msg[0] == "report":
                    pipe.send(("report", _report(nodes)))
                elif msg[0] == "idle":
                    pipe.send(("idle", all(not n.busy and n.box.outbox.pending() == 0
                                           for n in nodes.values())))
                continue
            n = by_fd.get(fd)
            if n is not None:
                due[n.id] = _ticks()             # data: step it now


_LONGEST = 0.0   # the longest pass over the worker's boxes, seconds


def _report(nodes: dict) -> dict:
    return {"cpu_s": time.process_time(), "longest_pass_s": _LONGEST, "boxes": {box_id: {"emitted": n.emitted, "applied": n.applied, "typed": n.typed,
                     "unlocks": n.unlocks, "refusals": n.refusals, "busy": n.busy,
                     "pending": n.box.outbox.pending(), "connects": n.link.connects,
                     "msgs": n.msgs, "bytes_out": n.conn.sent if n.conn else 0,
                     "bytes_in": n.conn.received if n.conn else 0,
                     "codes": [n.box.codes.fields(s) for s in range(n.box.codes.count())]}
            for box_id, n in nodes.items()}}


class BoxWorker:
    """Parent side of one worker process."""

    def __init__(self, spec: dict):
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, spec), daemon=True)
        self.proc.start()
        child.close()

    def expect(self, kind: str, timeout: float):
        try:
            if not self.pipe.poll(timeout):
                raise TimeoutError("box worker: no %r within %g s" % (kind, timeout))
            msg = self.pipe.recv()
        except EOFError:
            raise RuntimeError("the box worker died (exit code %s)" % self.proc.exitcode) from None
        if msg[0] != kind:
            raise RuntimeError("box worker said %r, expected %r" % (msg[0], kind))
        return msg[1] if len(msg) > 1 else None

    def jobs(self, codes: dict) -> None:
        self.pipe.send(("jobs", codes))

    def idle(self, timeout: float = 60) -> bool:
        """Whether every person is done and every outbox empty (every event acked)."""
        self.pipe.send(("idle",))
        return self.expect("idle", timeout)

    def report(self, timeout: float = 60) -> dict:
        self.pipe.send(("report",))
        return self.expect("report", timeout)

    def stop(self) -> None:
        try:
            if self.proc.is_alive():
                self.pipe.send(("stop",))
                self.expect("stopped", 20)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.pipe.close()
