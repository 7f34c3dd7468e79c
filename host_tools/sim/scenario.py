"""Scenarios: scripted sessions with a simulated box (docs/scenarios.md).

`parse(text)` turns a scenario file into steps, or raises `ScenarioError` naming the
line (nothing runs then); `Runner` drives a `SimBox` with a backend (Ledger, Backend,
Consumer) against a broker and writes a JSON-lines trace of what the box did, stopping
at the first unmet expectation.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO
from host_tools import paths

KEYS = set("0123456789*#ABCD")
ROLES = ("recipient", "driver", "owner", "tech")
EVENT_NAMES = ("boot", "opened", "closed", "deposit", "pickup", "wrong_code", "throttled",
               "forced", "left_open", "not_opened", "refused", "service", "store_corrupt",
               "overflow", "expired", "result", "rejected", "crash", "tamper")
LEDS = ("off", "green", "red", "amber", "blue")   # host_tools.sim.world.LED_NAMES
_DUR = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,31}$")
DEFAULT_WITHIN = 5000      # ms of box time an expectation may take to come true
NO_WINDOW = 1000           # ms an `expect no ...` watches
PACE = 4                   # while waiting on the network, box time runs at most 4x real time
MAX_DURATION = 365 * 86400000   # ms: a wait or a clock jump of at most a year


class ScenarioError(ValueError):
    """A scenario file that cannot run: the message names the file and line."""


class ExpectationFailed(AssertionError):
    pass


@dataclass
class Step:
    line: int
    text: str
    verb: str
    args: dict = field(default_factory=dict)


def duration(s: str) -> int:
    """'1.5s' -> 1500 (ms); units ms, s, m, h, d; at most a year."""
    m = _DUR.match(s)
    if not m:
        raise ValueError("not a duration: %r (use e.g. 500ms, 2s, 90m, 3h, 1d)" % _short(s))
    ms = float(m[1]) * _UNIT[m[2]]
    if not ms <= MAX_DURATION:    # also inf, from a number of 400 digits
        raise ValueError("%s is more than a year of box time" % _short(s))
    return int(round(ms))


def _int(s: str, what: str, lo: int = 0, hi: int = 0xFFFF) -> int:
    if not (s.isascii() and s.isdigit() and len(s) <= 10) or not lo <= int(s) <= hi:
        raise ValueError("%s must be a number %d to %d, not %r" % (what, lo, hi, _short(s)))
    return int(s)


def _short(s: str, n: int = 24) -> str:
    """A word of the file as a message quotes it: 400 digits are not worth repeating."""
    return s if len(s) <= n else s[:n] + "..."


def _opts(words: list[str], allowed: dict[str, Callable[[str], object]]) -> dict:
    """`comp 1 uses 1 valid 3d` -> {"comp": 1, ...}; flags (no value) map to True."""
    out: dict = {}
    i = 0
    while i < len(words):
        w = words[i]
        if w not in allowed:
            raise ValueError("unknown option %r (expected one of: %s)" % (w, ", ".join(allowed)))
        conv = allowed[w]
        if conv is bool:
            out[w] = True
            i += 1
            continue
        if i + 1 >= len(words):
            raise ValueError("option %r needs a value" % w)
        out[w] = conv(words[i + 1])
        i += 2
    return out


def _uses(s: str):
    return 0xFFFF if s == "unlimited" else _int(s, "uses", 1, 0xFFFE)


def _parse_line(w: list[str]) -> tuple[str, dict]:
    v, rest = w[0], w[1:]

    def need(n, usage):
        if len(rest) != n:
            raise ValueError("usage: %s" % usage)

    if v in ("at", "wait"):
        need(1, v + " DURATION")
        return v, {"ms": duration(rest[0])}
    if v == "press":
        keys = "".join(rest)
        if not keys or set(keys) - KEYS:
            raise ValueError("press takes keys 0-9 * # A-D, e.g. `press 4 8 2 9 1 5`")
        return v, {"keys": keys}
    if v == "type":
        if len(rest) not in (1, 2) or (len(rest) == 2 and rest[1] != "wrong"):
            raise ValueError("usage: type CODE-NAME [wrong]")
        return v, {"name": rest[0], "wrong": len(rest) == 2}
    if v == "door":
        need(2, "door N open|close")
        if rest[1] not in ("open", "close"):
            raise ValueError("door N open|close, not %r" % rest[1])
        return v, {"comp": _int(rest[0], "compartment", 1, 32), "open": rest[1] == "open"}
    if v == "tamper":
        need(1, "tamper open|close")
        if rest[0] not in ("open", "close"):
            raise ValueError("tamper open|close, not %r" % rest[0])
        return v, {"open": rest[0] == "open"}
    if v == "network":
        need(1, "network down|up")
        if rest[0] not in ("down", "up"):
            raise ValueError("network down|up, not %r" % rest[0])
        return v, {"up": rest[0] == "up"}
    if v == "broker":
        need(1, "broker restart|stop|start")
        if rest[0] not in ("restart", "stop", "start"):
            raise ValueError("broker restart|stop|start, not %r" % rest[0])
        return v, {"action": rest[0]}
    if v == "power":
        need(1, "power cut|on")
        if rest[0] not in ("cut", "on"):
            raise ValueError("power cut|on, not %r" % rest[0])
        return v, {"on": rest[0] == "on"}
    if v == "clock":
        need(1, "clock +DURATION")
        if not rest[0].startswith("+"):
            raise ValueError("the clock only jumps forward: clock +DURATION")
        return v, {"ms": duration(rest[0][1:])}
    if v == "backend":
        return _parse_backend(rest)
    if v == "expect":
        return _parse_expect(rest)
    raise ValueError("unknown command %r (see docs/scenarios.md)" % v)


def _parse_backend(w: list[str]) -> tuple[str, dict]:
    if not w:
        raise ValueError("usage: backend issue|revoke|sync|unlock|clear-throttle|set-time ...")
    op, rest = w[0], w[1:]
    tail = {"nowait": bool}
    if op == "issue":
        if len(rest) < 2:
            raise ValueError("usage: backend issue NAME ROLE [comp N] [uses N|unlimited] "
                             "[valid DURATION] [from DURATION] [nowait]")
        name, role = rest[0], rest[1]
        if not _NAME.match(name):
            raise ValueError("a code name is letters, digits, - and _: %r" % name)
        if role not in ROLES:
            raise ValueError("role must be one of %s, not %r" % (", ".join(ROLES), role))
        o = _opts(rest[2:], {"comp": lambda s: _int(s, "comp", 0, 32), "uses": _uses,
                             "valid": duration, "from": duration, **tail})
        return "backend", {"op": "issue", "name": name, "role": role, **o}
    if op == "revoke":
        if not rest:
            raise ValueError("usage: backend revoke NAME [nowait]")
        return "backend", {"op": op, "name": rest[0], **_opts(rest[1:], tail)}
    if op == "unlock":
        if not rest:
            raise ValueError("usage: backend unlock N [nowait]")
        return "backend", {"op": op, "comp": _int(rest[0], "compartment", 1, 32), **_opts(rest[1:], tail)}
    if op in ("sync", "clear-throttle", "set-time"):
        return "backend", {"op": op, **_opts(rest, tail)}
    raise ValueError("unknown backend command %r (issue, revoke, sync, unlock, clear-throttle, set-time)" % op)


def _parse_expect(w: list[str]) -> tuple[str, dict]:
    usage = ("usage: expect [no] event|stored NAME [comp N] [within D] | expect led COLOUR | "
             "expect [no] unlock [N] | expect buzzer | expect online|offline | expect ledger complete")
    if not w:
        raise ValueError(usage)
    neg = w[0] == "no"
    if neg:
        w = w[1:]
    if not w:
        raise ValueError(usage)
    what, rest = w[0], w[1:]
    within = {"within": duration}
    if what in ("event", "stored"):
        if not rest or rest[0] not in EVENT_NAMES:
            raise ValueError("expect %s needs an event name (%s)" % (what, ", ".join(EVENT_NAMES)))
        o = _opts(rest[1:], {"comp": lambda s: _int(s, "comp", 0, 32),
                             "arg": lambda s: _int(s, "arg", 0, 0xFFFFFFFF), **within})
        return "expect", {"what": what, "no": neg, "name": rest[0], **o}
    if what == "led":
        if neg or not rest or rest[0] not in LEDS:
            raise ValueError("expect led COLOUR (%s)" % ", ".join(LEDS))
        return "expect", {"what": what, "no": False, "colour": rest[0], **_opts(rest[1:], within)}
    if what == "unlock":
        comp = None
        if rest and rest[0].isdigit():
            comp, rest = _int(rest[0], "compartment", 1, 32), rest[1:]
        return "expect", {"what": what, "no": neg, "comp": comp, **_opts(rest, within)}
    if what in ("buzzer", "online", "offline"):
        if neg:
            raise ValueError(usage)
        return "expect", {"what": what, "no": False, **_opts(rest, within)}
    if what == "ledger":
        if neg or rest[:1] != ["complete"]:
            raise ValueError("usage: expect ledger complete [within D]")
        return "expect", {"what": what, "no": False, **_opts(rest[1:], within)}
    raise ValueError(usage)


def parse(text: str, source: str = "<scenario>", names: set[str] | None = None) -> list[Step]:
    """Every step of a scenario, or ScenarioError naming the first bad line. names: codes
    issued before this text (an interactive session's earlier lines)."""
    steps = []
    names = set(names or ())
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("press") else \
            _strip_comment_after_keys(raw)
        if not line:
            continue
        try:
            verb, args = _parse_line(line.split())
            if verb == "type" or (verb == "backend" and args["op"] == "revoke"):
                if args["name"] not in names:
                    raise ValueError("code %r is not issued above this line" % args["name"])
            if verb == "backend" and args["op"] == "issue":
                names.add(args["name"])
        except ValueError as e:
            raise ScenarioError("%s:%d: %s: %s" % (source, n, _short(line, 60), e)) from None
        steps.append(Step(n, line, verb, args))
    return steps


def _strip_comment_after_keys(raw: str) -> str:
    # `press 1 2 #` presses '#': in a press line a comment starts with ' # ' followed by text
    # that is not a key, i.e. "# " then a word
    m = re.search(r"\s#\s+[^\s0-9*#A-D]", raw)
    return (raw[:m.start()] if m else raw).strip()


def load(path: str | Path) -> list[Step]:
    """The steps of a scenario file; ScenarioError for a file that is not one (OSError if it
    cannot be read)."""
    p = Path(path)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ScenarioError("%s:%d: not UTF-8 text (byte %d)" % (p, line, e.start)) from None
    return parse(text, str(p))


# ---- the runner ----------------------------------------------------------------------


class Runner:
    """Runs steps on one simulated box registered in a fresh ledger, or on a box an operator
    registered (attach).

    broker: an object with host, port, ca_path (None: no TLS), add_user(name, password,
    backend=...), sdk_config(user) and restart()/stop()/start() (host_tools.testing.broker.Broker);
    `shared_subscriptions = False` if it has none (the consumer then subscribes plainly).
    attach: the box's provisioning record (box_id, box_key, mqtt_password, compartments):
    no box is registered; `ledger` (the operator's registry, optional) is where its codes
    are issued and its events read; the operator's consumer stores them unless `consume`.
    """

    def __init__(self, broker, workdir: str | Path, *, board: dict | None = None,
                 vm: bool = False, heap: str | None = None, box_id: str = "box-1",
                 trace: TextIO | None = None, echo: Callable[[dict], None] | None = None,
                 timeout: float = 20.0, port: str = "sim", attach: dict | None = None,
                 ledger: str | Path | None = None, consume: bool = False):
        from host_tools.backend.sdk import Backend, Consumer, Ledger, mqtt_password
        from host_tools.sim.simbox import DEFAULT_HEAP, SimBox, provision

        self.broker, self.box_id, self.timeout = broker, box_id, timeout
        self.trace_file, self.echo = trace, echo
        self.records: list[dict] = []
        self.work = Path(workdir)
        self.work.mkdir(parents=True, exist_ok=True)
        if port not in ("sim", "linux"):
            raise ScenarioError("port must be 'sim' or 'linux', not %r" % (port,))
        if attach is not None:
            rec, box_id = attach, attach["box_id"]
            self.box_id = box_id
            board = board or board_for(rec["compartments"])
            if len(board["compartments"]) != rec["compartments"]:
                raise ScenarioError("box %s has %d compartment%s, the board %d" % (
                    box_id, rec["compartments"], "s" if rec["compartments"] != 1 else "",
                    len(board["compartments"])))
        board = board or (linux_board() if port == "linux" else default_board())
        self.compartments = len(board["compartments"])
        self.consumer = self.backend = self.ledger = None
        from host_tools.backend.sdk import LedgerError
        if attach is None:
            ledger = self.work / "ledger.db"
            self.ledger = Ledger(ledger)
            try:
                rec = Backend(self.ledger).register(box_id, compartments=len(board["compartments"]))
            except LedgerError as e:
                self.ledger.close()
                if "already registered" not in str(e):
                    raise
                raise LedgerError("%s in %s (an earlier run's folder): use an empty folder or "
                                  "another box id" % (e, self.work)) from None
            consume = True
        elif ledger is not None:
            self.ledger = Ledger(ledger, create=False)
        broker.add_user(box_id, mqtt_password(bytes.fromhex(rec["box_key"])))
        broker.add_user("scenario-consumer", backend=True)
        broker.add_user("scenario-backend", backend=True)
        tls = broker.ca_path is not None
        files = {"ca.pem": broker.ca_path} if tls else {}
        bcfg = {"host": broker.host, "port": broker.port, "tls": tls}
        if tls:
            bcfg["ca"] = "ca.pem"
        flash = provision(self.work / "flash", board, {
            "box_id": box_id, "box_key": rec["box_key"], "wifi": {"ssid": "sim", "password": "x"},
            "broker": bcfg, "mqtt_password": rec["mqtt_password"]}, files)
        if consume and self.ledger is not None:
            make = Consumer if getattr(broker, "shared_subscriptions", True) else _plain_consumer(box_id)
            self.consumer = make(str(ledger), broker.sdk_config("scenario-consumer"))
            self.consumer.start()
            self.consumer.subscribed.wait(10)
        if self.ledger is not None:
            self.backend = Backend(self.ledger, broker.sdk_config("scenario-backend"))
        if port == "linux":   # the linux port on the virtual circuit (host_tools/sim/linuxbox.py)
            from host_tools.sim.linuxbox import LinuxBox
            self.box = LinuxBox(flash, clock="virtual", epoch=int(time.time()), bounce_ms=3,
                                power=False, timeout=60)
        else:
            self.box = SimBox(flash, vm=vm, heap=heap or DEFAULT_HEAP, clock="virtual",
                              epoch=int(time.time()), bounce_ms=3, power=False, timeout=60)
        self.t0 = 0
        self.codes: dict[str, object] = {}
        self._seen = {"feedback": 0, "pulses": 0, "events": 0, "stored": set(), "commands": {}}
        self._cursor = {"event": 0, "unlock": 0, "feedback": 0, "stored": set()}
        self._open_pulses: set[int] = set()
        self.box.boot()
        self._emit("power", on=True)

    # ---- trace

    def _emit(self, kind: str, **fields) -> dict:
        r = {"t": self.box.now, "kind": kind, **fields}
        self.records.append(r)
        if self.trace_file is not None:
            self.trace_file.write(json.dumps(r, sort_keys=True) + "\n")
            self.trace_file.flush()
        if self.echo is not None:
            self.echo(r)
        return r

    def collect(self) -> None:
        """Trace what the box did since the last look."""
        box = self.box
        fb = box.feedback
        for t, led, hz in fb[self._seen["feedback"]:]:
            self._emit("feedback", led=led, hz=hz, at=t)
        self._seen["feedback"] = len(fb)
        pulses = box.pulses
        for i, p in enumerate(pulses):
            if i >= self._seen["pulses"]:
                self._emit("unlock", comp=p.comp, at=p.start)
                self._open_pulses.add(i)
            if i in self._open_pulses and p.end is not None:
                self._emit("relock", comp=p.comp, at=p.end, ms=p.end - p.start, failsafe=p.cut)
                self._open_pulses.discard(i)
        self._seen["pulses"] = len(pulses)
        evs = box.events()
        for seq, name, comp, cid, arg in evs[self._seen["events"]:]:
            self._emit("event", seq=seq, name=name, comp=comp, id=cid, arg=arg)
        self._seen["events"] = len(evs)
        for e in self.ledger.events(self.box_id) if self.ledger is not None else ():
            if e.seq not in self._seen["stored"]:
                self._seen["stored"].add(e.seq)
                self._emit("stored", seq=e.seq, name=e.type, comp=e.comp, id=e.id, arg=e.arg)
        for seq, (op, name) in list(self._seen["commands"].items()) if self.ledger else ():
            status, rej = self.ledger.command_outcome(self.box_id, seq)
            if status is not None or rej is not None:
                self._emit("applied", seq=seq, op=op, code=name, status=status, rejected=rej)
                del self._seen["commands"][seq]

    def _run(self, ms: int, step: int = 20) -> None:
        end = self.box.now + ms
        step = max(step, ms // 100)     # a long wait in coarser slices (still traced in order)
        while self.box.now < end:
            self.box.run(min(step, end - self.box.now))
            self.collect()

    def _wait(self, cond: Callable[[], bool], ms: int, step: int = 20, paced: bool = True) -> bool:
        """Run the box until cond(), at most ms of box time and self.timeout real seconds;
        with a broker in the loop, box time is paced (a little real time per step)."""
        end = self.box.now + ms
        deadline = time.monotonic() + self.timeout
        while True:
            self.collect()
            if cond():
                return True
            if self.box.now >= end or time.monotonic() > deadline:
                return False
            self.box.run(step)
            if paced:
                time.sleep(step / 1000 / PACE)

    # ---- steps

    def run(self, steps: list[Step]) -> None:
        """Run every step; ExpectationFailed at the first unmet expectation."""
        self.run_steps(steps)
        self._emit("end", ok=True)

    def check(self, steps: list[Step], source: str | None = None) -> None:
        """What parse cannot know: the compartments this box has. ScenarioError naming the
        line; nothing has run then."""
        n = self.compartments
        for s in steps:
            if self.backend is None and (s.verb == "backend" or s.verb == "expect"
                                         and s.args.get("what") in ("stored", "ledger")):
                where = "%s:%d" % (source, s.line) if source else "line %d" % s.line
                raise ScenarioError("%s: %s: this box was attached from its provisioning file, "
                                    "without a registry: issue codes with `parcelbox codes issue`"
                                    % (where, s.text))
            comp = s.args.get("comp")
            if s.verb in ("door", "backend", "expect") and comp is not None and not (
                    (1 if s.verb == "door" or s.args.get("op") == "unlock" else 0) <= comp <= n):
                where = "%s:%d" % (source, s.line) if source else "line %d" % s.line
                raise ScenarioError("%s: %s: the box has compartment%s 1%s" % (
                    where, s.text, "s" if n > 1 else "", " to %d" % n if n > 1 else " only"))

    def run_steps(self, steps: list[Step]) -> None:
        """Run steps without ending the trace (an interactive session's lines)."""
        self.check(steps)
        for s in steps:
            self._emit("step", line=s.line, text=s.text)
            getattr(self, "_do_" + s.verb)(s)
            self.collect()

    def _do_at(self, s: Step) -> None:
        left = self.t0 + s.args["ms"] - self.box.now
        if left > 0:
            self._run(left)

    def _do_wait(self, s: Step) -> None:
        self._run(s.args["ms"])

    def _mark_input(self) -> None:
        self._cursor["feedback"] = len(self.box.feedback)

    def _keys(self, keys: str) -> None:
        self._mark_input()
        for k in keys:
            self.box.press(k)
            self._emit("key", key=k, down=True)
            self._run(80)
            self.box.release(k)
            self._emit("key", key=k, down=False)
            self._run(80)

    def _do_press(self, s: Step) -> None:
        self._keys(s.args["keys"])

    def _do_type(self, s: Step) -> None:
        code = self.codes[s.args["name"]].code
        if s.args["wrong"]:
            code = code[:-1] + str((int(code[-1]) + 1) % 10)
        self._emit("type", code=s.args["name"], wrong=s.args["wrong"])   # never the code
        self._keys(code)

    def _do_door(self, s: Step) -> None:
        self._mark_input()
        self.box.set_door(s.args["comp"], s.args["open"])
        self._emit("door", comp=s.args["comp"], open=s.args["open"])

    def _do_tamper(self, s: Step) -> None:
        self.box.set_tamper(s.args["open"])
        self._emit("tamper", open=s.args["open"])

    def _do_network(self, s: Step) -> None:
        self.box.set_network(s.args["up"])
        self._emit("network", up=s.args["up"])

    def _do_broker(self, s: Step) -> None:
        act = s.args["action"]
        opens = self.box.calls["open"]
        getattr(self.broker, act)()
        self._emit("broker", action=act)
        if act == "stop":   # the broker closed the box's connection: let the box see it
            self._wait(lambda: not self.box.online, 30000)
        elif self.box.running and self.box.net_up:   # back: the box's next connection
            self._wait(lambda: self.box.calls["open"] > opens and self.box.online, 60000)

    def _do_power(self, s: Step) -> None:
        if s.args["on"]:
            if not self.box.running:
                self.box.boot()
        else:
            self.box.cut_power()
        self._emit("power", on=s.args["on"])

    def _do_clock(self, s: Step) -> None:
        # the wall clock jumps (as SNTP after a long time off would have it); ticks do not
        self.box.epoch0 += s.args["ms"] // 1000
        self._emit("clock", jump_ms=s.args["ms"], epoch=self.box.epoch0 + self.box.now // 1000)

    def _box_epoch(self) -> int:
        return self.box.epoch0 + self.box.now // 1000

    def _do_backend(self, s: Step) -> None:
        a, be, bid = s.args, self.backend, self.box_id
        name = a.get("name")
        if a["op"] == "issue":
            now = self._box_epoch()
            nb = now + a["from"] // 1000 if "from" in a else 0
            na = now + a["valid"] // 1000 if "valid" in a else 0
            issued = be.issue(bid, a["role"], comp=a.get("comp", 0), uses=a.get("uses", 1),
                              not_before=nb, not_after=na)
            self.codes[name] = issued
            seqs = [issued.cmd_seq]
            self._emit("command", op="issue", code=name, code_id=issued.code_id, seq=issued.cmd_seq,
                       role=a["role"], comp=a.get("comp", 0), sent=issued.sent)
        elif a["op"] == "revoke":
            seqs = [be.revoke(bid, self.codes[name].code_id)]
            self._emit("command", op="revoke", code=name, seq=seqs[0])
        elif a["op"] == "sync":
            seqs = be.sync(bid)
            self._emit("command", op="sync", seqs=seqs)
        elif a["op"] == "unlock":
            seqs = [be.unlock(bid, a["comp"])]
            self._emit("command", op="unlock", comp=a["comp"], seq=seqs[0])
        elif a["op"] == "set-time":
            seqs = [be.set_time(bid, self._box_epoch())]
            self._emit("command", op="set-time", seq=seqs[0], epoch=self._box_epoch())
        else:
            seqs = [be.clear_throttle(bid)]
            self._emit("command", op="clear-throttle", seq=seqs[0])
        for q in seqs:
            self._seen["commands"][q] = (a["op"], name)
        if a.get("nowait") or not self.box.running or not self.box.net_up:
            return
        if not self._wait(lambda: all(q not in self._seen["commands"] for q in seqs), 30000):
            raise ExpectationFailed("line %d: the box did not answer %s within 30 s" % (s.line, s.text))

    # ---- expectations

    def _do_expect(self, s: Step) -> None:
        a = s.args
        within = a.get("within", NO_WINDOW if a["no"] else DEFAULT_WITHIN)
        what = a["what"]
        local = what != "stored"   # the box alone: no need to give the network real time
        if what in ("event", "stored", "unlock"):
            find = getattr(self, "_find_" + what)
            if a["no"]:
                self._run(within)
                hit = find(a, consume=False)
                ok = hit is None
            else:
                ok = self._wait(lambda: find(a, consume=False) is not None, within, paced=not local)
                if ok:
                    find(a, consume=True)
        elif what == "led":
            ok = self._wait(lambda: any(led == a["colour"] for _, led, _ in
                                        self.box.feedback[self._cursor["feedback"]:]), within, paced=False)
        elif what == "buzzer":
            ok = self._wait(lambda: any(hz > 0 for _, _, hz in
                                        self.box.feedback[self._cursor["feedback"]:]), within, paced=False)
        elif what == "online":
            ok = self.wait_online(max(within, 60000))
        elif what == "offline":
            ok = self._wait(lambda: not self.box.online, within)
        else:   # ledger complete: every event the box created is stored, once
            def complete():
                made = {e[0] for e in self.box.events()}
                return bool(made) and made <= self._seen["stored"]
            ok = self._wait(complete, max(within, 30000))
        self._emit("expect", line=s.line, text=s.text, ok=ok)
        if not ok:
            self._emit("end", ok=False, line=s.line)
            raise ExpectationFailed("line %d: %s: not met" % (s.line, s.text))

    def wait_online(self, ms: int = 60000) -> bool:
        """Until the box is connected, and a little more: its SUBSCRIBE follows the CONNACK,
        and a command published before it would not reach a new session."""
        if not self._wait(lambda: self.box.online, ms):
            return False
        t = self.box.now + 200
        self._wait(lambda: self.box.now >= t, 1000)
        return self.box.online

    def _match(self, a: dict, name: str, comp: int, arg: int) -> bool:
        return name == a["name"] and a.get("comp", comp) == comp and a.get("arg", arg) == arg

    def _find_event(self, a: dict, consume: bool):
        evs = self.box.events()
        for i in range(self._cursor["event"], len(evs)):
            seq, name, comp, _, arg = evs[i]
            if self._match(a, name, comp, arg):
                if consume:
                    self._cursor["event"] = i + 1
                return i
        return None

    def _find_stored(self, a: dict, consume: bool):
        for e in sorted(self.ledger.events(self.box_id), key=lambda e: e.seq):
            if e.seq not in self._cursor["stored"] and self._match(a, e.type, e.comp, e.arg):
                if consume:
                    self._cursor["stored"].add(e.seq)
                return e.seq
        return None

    def _find_unlock(self, a: dict, consume: bool):
        pulses = self.box.pulses
        for i in range(self._cursor["unlock"], len(pulses)):
            if a["comp"] is None or pulses[i].comp == a["comp"]:
                if consume:
                    self._cursor["unlock"] = i + 1
                return i
        return None

    def close(self) -> None:
        for f in (self.box.close, self.consumer and self.consumer.stop,
                  self.backend and self.backend.close, self.ledger and self.ledger.close):
            try:
                if f:
                    f()
            except Exception:
                pass


def _plain_consumer(box_id: str):
    from host_tools.backend.embedded import plain_consumer
    return plain_consumer(box_id)


def board_for(compartments: int) -> dict:
    """The reference board with this many compartments (the default board first)."""
    b = default_board()
    if len(b["compartments"]) == compartments:
        return b
    for f in sorted(paths.BOARDS.glob("esp32*.json")):
        try:
            b = board_from_file(f)
        except ScenarioError:
            continue
        if len(b["compartments"]) == compartments:
            return b
    raise ScenarioError("no reference board has %d compartments: give one with --board"
                        % compartments)


def default_board() -> dict:
    """The four-compartment ESP32-S3 reference board, as the device reads it."""
    from host_tools import boards
    return board_from_file(paths.BOARDS / "esp32s3-devkitc-4x4.json")


def linux_board() -> dict:
    """The four-compartment Raspberry Pi board of the linux port, as the device reads it."""
    return board_from_file(paths.BOARDS / "rpi4-4x4.json")


def board_from_file(path: str | Path) -> dict:
    from host_tools import boards
    r = boards.check_file(path)
    if not r.ok:
        raise ScenarioError("%s: %s" % (path, "; ".join(r.errors)))
    return r.board


def run_file(path: str | Path, broker, *, workdir: str | Path | None = None, trace: TextIO | None = None,
             **kw) -> list[dict]:
    """Parse and run one scenario file; returns the trace records (ExpectationFailed or
    ScenarioError on failure)."""
    steps = load(path)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pb-scenario-"))
    r = Runner(broker, work, trace=trace, **kw)
    try:
        r.run(steps)
    finally:
        r.close()
    return r.records
