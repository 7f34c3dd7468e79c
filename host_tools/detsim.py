# Deterministic simulation (docs/detsim.md): one seeded world drives the firmware core
# (Box + Remote on a MemStorage) and the backend's ledger (Ledger.record_event on an
# in-memory SQLite) through randomised days with power cuts, a lossy reordering network,
# broker outages and clock jumps, checking invariants after every step. No wall clock,
# no threads, no broker: random.Random(seed) decides everything, so a seed replays.
#
#   python -m host_tools.detsim --seeds 200 [--start 0] [--days 2] [--verbose]
import argparse
import sqlite3
import sys
import time
from collections import deque
from pathlib import Path
import random

_ROOT = Path(__file__).resolve().parent.parent
for _p in (_ROOT / "firmware", _ROOT / "tests" / "vmlib"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from memflash import MemStorage, PowerCut  # noqa: E402
from parcelbox import events, lock as L, ticks  # noqa: E402
from parcelbox.box import Box  # noqa: E402
from parcelbox.codestore import (ROLE_DRIVER, ROLE_OWNER, ROLE_RECIPIENT,  # noqa: E402
                                 ROLE_REMOTE)
from parcelbox.remote import Remote  # noqa: E402

from host_tools import protocol as HP  # noqa: E402
from host_tools.crypto import code_digest  # noqa: E402
from host_tools.sdk import ledger as LG  # noqa: E402

BOX_ID = "sim-1"
T0 = 1_795_600_000
DAY_MS = 86_400_000
TRACE = 40  # steps kept for a failure's trace


class InvariantError(AssertionError):
    pass


def memory_ledger(box_id, key, comps):
    """A Ledger on an in-memory SQLite (same schema and record_event), box registered."""
    led = LG.Ledger.__new__(LG.Ledger)
    led.path = ":memory:"
    led.db = sqlite3.connect(":memory:", isolation_level=None)
    led.db.executescript(LG.SCHEMA)
    led.db.execute("INSERT INTO boxes (id, box_key, compartments, code_len, created) "
                   "VALUES (?,?,?,?,?)", (box_id, key, comps, 6, 0))
    return led


class World:
    def __init__(self, seed, days=2, faults=True, box_factory=Box):
        self.seed = seed
        self.rng = random.Random(seed)
        self.days = days
        self.faults = faults
        self.box_factory = box_factory
        r = self.rng
        self.key = bytes(r.randrange(256) for _ in range(32))
        self.comps = r.randint(1, 3)
        self.settings = {"compartments": self.comps, "outbox_capacity": 256,
                         "free_tries": r.choice((1, 2, 5)), "lockout_base_ms": 30000}
        self.ledger = memory_ledger(BOX_ID, self.key, self.comps)
        self.keys = HP.WireKeys.of(self.key)
        self.storage = MemStorage()
        self.clock = 0          # world ms since start (never wraps)
        self.wall_off = 0       # clock jumps applied to the box's time source (s)
        self.trace = deque(maxlen=TRACE)
        self.steps = self.checks = self.cuts = self.boots = 0
        # backend model
        self.cmd_seq = 0
        self.commands = {}      # seq: (op, fields)
        self.op_of = {}         # command payload: op
        self.unanswered = {}    # seq: [message, last sent]: resent until a result comes
        self.reset_ok = False   # this step may lower the throttle (clear, accepted code)
        self.codes = {}         # id: dict(digits, role, comp, uses, nb, na)
        self.next_code = 1
        self.acked_add = set()  # code ids whose add result OK arrived
        self.acked_revoke = set()  # code ids whose revoke result OK arrived
        self.unlocks = {}       # unlock command seq: comp
        self.granted_remote = set()
        self.used = {}          # code id: uses spent (grants whose door the world opened)
        self.grant_of = [None] * self.comps  # per door: ("code", id) of its running grant
        self.created = {}       # seq: (kind, comp, code_id, arg, t), from on_event
        self.dropped = set()    # seqs the outbox reported as dropped (overflow)
        self.dups = 0
        # network: lists of (deliver_at_ms, payload tuple); the world picks the order
        self.down, self.up = [], []
        self.outage_until = 0
        self.healing = False
        self.phys = [False] * self.comps  # door physically open
        self.on_since = [None] * self.comps
        self.boot()

    # ---- plumbing ----------------------------------------------------------

    @property
    def now(self):
        return self.clock & ticks._MASK

    def wall_source(self):
        return T0 + self.clock // 1000 + self.wall_off

    def log(self, msg):
        self.trace.append("%9d ms  %s" % (self.clock, msg))

    def fail(self, msg):
        raise InvariantError("seed %d: %s\nreplay: python -m host_tools.detsim --seeds 1 "
                             "--start %d --days %s\nlast steps:\n  %s"
                             % (self.seed, msg, self.seed, self.days,
                                "\n  ".join(self.trace)))

    def _on_event(self, seq, kind, comp, code_id, arg, t):
        self.created[seq] = (kind, comp, code_id, arg, t)
        if kind in (events.REFUSED, events.SERVICE):
            self.reset_ok = True
        if kind == events.OVERFLOW:
            for s in range(code_id, code_id + arg):
                self.dropped.add(s)

    def boot(self):
        self.boots += 1
        self.box = self.box_factory(self.storage, self.key, self.settings, self.now,
                                    on_event=self._on_event)
        self.box.set_time(self.wall_source(), self.now)
        self.remote = Remote(self.box, BOX_ID, self.key)
        self.connected = False
        self.on_since = [None] * self.comps
        self.grant_of = [None] * self.comps
        for c in range(1, self.comps + 1):
            self.box.door(c, self.phys[c - 1], self.now)
        self.advance(self.box.cfg["door_debounce_ms"] + 10)

    def reboot(self):
        self.cuts += 1
        self.storage = self.storage.reboot()
        self.clock += self.rng.randint(100, 20000)
        self.log("power back: reboot")
        while self.faults and self.rng.random() < 0.2:  # the power fails again while booting
            n = self.rng.randint(0, 200)
            self.storage.cut_after(n)
            try:
                self.boot()
            except PowerCut:
                self.cuts += 1
                self.storage = self.storage.reboot()
                self.clock += self.rng.randint(100, 5000)
                self.log("power failed again during the boot after %d bytes" % n)
                continue
            self.storage.budget = -1
            return
        self.boot()

    # ---- the network -------------------------------------------------------

    def net_up(self):
        return self.clock >= self.outage_until

    def _enqueue(self, q, msg):
        if self.healing:
            q.append((self.clock, msg))
            return
        r = self.rng
        if r.random() < 0.08:
            self.log("net: lost %s" % (msg[0].rsplit("/", 1)[-1],))
            return
        n = 2 if r.random() < 0.08 else 1
        for _ in range(n):
            q.append((self.clock + r.choice((0, 0, 50, 500, 5000, 60000)), msg))

    def send_cmd(self, op, exp=None, **fields):
        self.cmd_seq += 1
        s = self.cmd_seq
        self.commands[s] = (op, fields)
        msg = HP.command(self.keys, BOX_ID, s, op, exp, **fields)
        self.op_of[msg[1]] = op
        self.unanswered[s] = [msg, self.clock]
        self._enqueue(self.down, msg)
        self.log("backend sends #%d %s %s" % (s, op, fields.get("id", fields.get("comp", ""))))
        return s

    def pump(self):
        """Deliver due messages in a shuffled order, both ways, while the broker is up."""
        if not self.net_up():
            return
        if not self.connected:
            self.remote.connected(self.now)
            self.connected = True
            self.log("box connects")
        while True:
            m = self.remote.poll(self.now)
            if m is None:
                break
            self._enqueue(self.up, (m[0], m[1]))
        for s, m in self.unanswered.items():  # the backend resends what got no answer
            if self.clock - m[1] > 60000:
                m[1] = self.clock
                self._enqueue(self.down, m[0])
        for q, deliver in ((self.down, self._to_box), (self.up, self._to_backend)):
            due = [x for x in q if x[0] <= self.clock]
            if not due:
                continue
            q[:] = [x for x in q if x[0] > self.clock]
            if not self.healing:
                self.rng.shuffle(due)
            for _, msg in due:
                deliver(msg)

    def _to_box(self, msg):
        t, p = msg
        before = self._doors()
        if self.op_of.get(p) == "clear_throttle":
            self.reset_ok = True
        self.remote.receive(t, p, self.now)
        self.after_input(before, remote=True)

    def _to_backend(self, msg):
        t, p = msg
        if not t.endswith("/evt"):
            return
        ev, _ = HP.parse_event(self.ledger.keys(BOX_ID), BOX_ID, p)
        if not self.ledger.record_event(ev, "detsim"):
            self.dups += 1
        else:
            self.log("ledger stores #%d %s" % (ev.seq, ev.type))
        self._enqueue(self.down, HP.ack(self.keys, BOX_ID, [ev.seq]))
        if ev.type in ("result", "rejected"):
            self.unanswered.pop(ev.id, None)
        if ev.type == "result" and ev.arg & 0xFF == HP.STATUS.index("ok"):
            op, f = self.commands[ev.id]
            if op == "add":
                self.acked_add.add(f["code"][0])
            elif op == "revoke":
                self.acked_revoke.add(f["id"])

    # ---- time --------------------------------------------------------------

    def advance(self, ms):
        end = self.clock + ms
        big = 2000 if ms <= 20000 else max(2000, ms // 40)
        while self.clock < end:
            quiet = all(d.state not in (L.PULSING, L.WAITING) and d.door_open == self.phys[i]
                        for i, d in enumerate(self.box.doors))
            self.clock = min(end, self.clock + (big if quiet else 50))
            before = self._doors()
            for c in range(1, self.comps + 1):
                self.box.door(c, self.phys[c - 1], self.now)
            self.box.tick(self.now)
            self.after_input(before)
            if not self.healing or self.net_up():
                self.pump()

    # ---- invariants --------------------------------------------------------

    def _doors(self):
        return [(d.state, d.code_id, d.door_open) for d in self.box.doors]

    def after_input(self, before, typed=None, remote=False, wait=0, occupied=0):
        """Every door that left LOCKED in this input is justified (invariant 1);
        solenoids within max_on_ms (5); uses within bounds (2)."""
        self.checks += 1
        box = self.box
        for i, d in enumerate(box.doors):
            st0, cid0, open0 = before[i]
            if st0 == L.LOCKED and d.state in (L.PULSING, L.WAITING, L.RELEASED):
                role = box.opener_role[i]
                if role == ROLE_REMOTE:
                    if not remote or self.unlocks.get(d.code_id) != i + 1:
                        self.fail("door %d unlocked for remote seq %d never sent for it"
                                  % (i + 1, d.code_id))
                    if d.code_id in self.granted_remote:
                        self.fail("remote unlock #%d applied twice" % d.code_id)
                    self.granted_remote.add(d.code_id)
                else:
                    self._check_code_grant(i, d.code_id, role, typed, wait, occupied)
                    self.grant_of[i] = d.code_id
                    self.reset_ok = True
                self.log("door %d unlocked (code %d, role %d)" % (i + 1, d.code_id, role))
            # the world opening a door of a running grant spends a use (once per grant)
            if not open0 and d.door_open and st0 != L.LOCKED and self.grant_of[i] is not None:
                g = self.grant_of[i]
                for j in range(self.comps):
                    if self.grant_of[j] == g:
                        self.grant_of[j] = None
                self.used[g] = self.used.get(g, 0) + 1
                c = self.codes.get(g)
                if c is not None and self.used[g] > c["uses"]:
                    self.fail("code %d opened %d times, uses %d" % (g, self.used[g], c["uses"]))
            if d.state == L.LOCKED:
                self.grant_of[i] = None
            on = box.solenoid(i + 1, self.now)
            if on:
                if self.on_since[i] is None:
                    self.on_since[i] = self.clock
                if d.state != L.PULSING:
                    self.fail("solenoid %d on in state %d" % (i + 1, d.state))
                if self.clock - self.on_since[i] > box.cfg["max_on_ms"]:
                    self.fail("solenoid %d on for %d ms > max_on_ms"
                              % (i + 1, self.clock - self.on_since[i]))
            else:
                self.on_since[i] = None

    def _check_code_grant(self, i, cid, role, typed, wait, occupied):
        c = self.codes.get(cid)
        if typed is None or c is None or typed != cid:
            self.fail("door %d unlocked for code %d, which was not just typed" % (i + 1, cid))
        if wait > 0:
            self.fail("code %d accepted during a lockout (%d ms left)" % (cid, wait))
        if cid in self.acked_revoke:
            self.fail("code %d accepted after its revoke was acknowledged" % cid)
        wall = self.box.wall(self.now)
        if (c["nb"] and wall < c["nb"]) or (c["na"] and wall > c["na"]):
            self.fail("code %d accepted outside its window (%d not in %d..%d)"
                      % (cid, wall, c["nb"], c["na"]))
        if self.used.get(cid, 0) >= c["uses"]:
            self.fail("code %d accepted with no use left" % cid)
        full = (occupied >> i) & 1
        if role != c["role"] or (role == ROLE_DRIVER and full) or (
                role == ROLE_RECIPIENT and not full):
            self.fail("code %d (role %d) opened door %d, occupied=%d" % (cid, role, i + 1, full))
        if c["comp"] and c["comp"] != i + 1:
            self.fail("code %d for compartment %d opened %d" % (cid, c["comp"], i + 1))

    def _check_codes(self):
        """Acknowledged code changes stay (invariant 3, the code part)."""
        codes = self.box.codes
        wall = self.box.wall(self.now)
        for cid in self.acked_revoke:
            if codes.slot_of(cid) >= 0:
                self.fail("code %d present after its revoke was acknowledged" % cid)
        for cid in self.acked_add:
            c = self.codes[cid]
            if cid in self.acked_revoke or (c["na"] and wall > c["na"]):
                continue
            if codes.slot_of(cid) < 0 and self.used.get(cid, 0) < c["uses"]:
                # a revoke sent but not yet acknowledged may have removed it
                if not any(op == "revoke" and f["id"] == cid
                           for op, f in self.commands.values()):
                    self.fail("acknowledged code %d lost" % cid)

    # ---- actions -----------------------------------------------------------

    def act_issue(self):
        r = self.rng
        cid = self.next_code
        self.next_code += 1
        role = r.choice((ROLE_DRIVER, ROLE_DRIVER, ROLE_RECIPIENT, ROLE_RECIPIENT, ROLE_OWNER))
        comp = r.randint(1, self.comps) if role != ROLE_OWNER else r.randint(0, self.comps)
        if role == ROLE_DRIVER and self.comps > 1 and r.random() < 0.3:
            comp = 0
        w = self.wall_source()
        nb = r.choice((0, 0, w - 3600, w + r.randint(60, 7200)))
        na = r.choice((0, w + r.randint(600, DAY_MS // 1000), w + r.randint(60, 900)))
        digits = "%06d" % r.randrange(10 ** 6)
        while any(c["digits"] == digits for c in self.codes.values()):
            digits = "%06d" % r.randrange(10 ** 6)
        if na and nb and na <= nb:
            na = nb + r.randint(600, 7200)
        uses = r.randint(1, 3)
        self.codes[cid] = dict(digits=digits, role=role, comp=comp, uses=uses, nb=nb, na=na)
        arr = HP.code_array(cid, code_digest(self.key, digits), role, comp, uses, nb, na)
        self.send_cmd("add", code=arr)

    def act_revoke(self):
        if self.codes:
            self.send_cmd("revoke", id=self.rng.choice(sorted(self.codes)))

    def act_unlock(self):
        comp = self.rng.randint(1, self.comps)
        s = self.send_cmd("unlock", exp=self.wall_source() + 300, comp=comp)
        self.unlocks[s] = comp

    def act_clear(self):
        self.send_cmd("clear_throttle")

    def act_type(self):
        r = self.rng
        if self.codes and r.random() < 0.88:
            ids = sorted(self.codes)
            cid = r.choice(ids[-4:] if r.random() < 0.7 else ids)  # mostly a recent code
            digits = self.codes[cid]["digits"]
        else:
            cid, digits = None, "%06d" % r.randrange(10 ** 6)
            for k, c in self.codes.items():
                if c["digits"] == digits:
                    cid = k
        box = self.box
        if cid is not None:
            self.reset_ok = True  # a right code refunds and resets the count when saved
        self.log("keypad: %s (code %s)" % (digits, cid))
        for ch in digits:
            wait = box.throttle.check(self.now)
            occupied = box.occupied
            before = self._doors()
            box.key(ord(ch), self.now)
            self.after_input(before, typed=cid, wait=wait, occupied=occupied)
            self.clock += r.randint(150, 600)

    def act_door(self):
        r = self.rng
        ready = [i for i, d in enumerate(self.box.doors)
                 if d.state in (L.PULSING, L.RELEASED) or self.phys[i]]
        # mostly someone stands at an unlocked door (or one left open), else any door
        c = r.choice(ready) if ready and r.random() < 0.8 else r.randrange(self.comps)
        d = self.box.doors[c]
        if not self.phys[c] and d.state in (L.LOCKED,) and self.rng.random() < 0.9:
            return  # mostly nobody forces a locked door
        self.phys[c] = not self.phys[c]
        self.log("door %d %s" % (c + 1, "opened" if self.phys[c] else "closed"))

    def act_wait(self):
        r = self.rng
        ms = r.choice((r.randint(50, 3000), r.randint(3000, 30000), r.randint(60000, 3600000)))
        self.advance(ms)

    def act_outage(self):
        self.outage_until = self.clock + self.rng.randint(10000, 4 * 3600000)
        self.connected = False
        self.log("broker down until %d" % self.outage_until)

    def act_jump(self):
        j = self.rng.choice((-3600, -60, 120, 3600, 86400))
        self.wall_off += j
        self.box.set_time(self.wall_source(), self.now)
        self.log("clock jump %+d s" % j)

    ACTIONS = (("issue", 6), ("revoke", 1), ("unlock", 1), ("clear", 0.3), ("type", 8),
               ("door", 6), ("wait", 10), ("outage", 0.3), ("jump", 0.3))

    def step(self):
        r = self.rng
        self.steps += 1
        name = r.choices([a for a, _ in self.ACTIONS], [w for _, w in self.ACTIONS])[0]
        cut = self.faults and r.random() < 0.06
        th0 = self.box.throttle
        fails0, wait0, clock0 = th0.failures, th0.check(self.now), self.clock
        self.reset_ok = False
        if cut:
            n = r.randint(0, 400)
            self.storage.cut_after(n)
            self.log("power will fail after %d more bytes" % n)
        try:
            getattr(self, "act_" + name)()
            self.advance(r.randint(20, 400))
        except PowerCut:
            self.reboot()
            th = self.box.throttle
            if th.failures < fails0 and not self.reset_ok:
                self.fail("power cut reset the throttle: failures %d -> %d"
                          % (fails0, th.failures))
            left = th.check(self.now)
            if wait0 > 0 and left < wait0 - (self.clock - clock0) - 1000 and not self.reset_ok:
                self.fail("power cut shortened a lockout: %d ms left, expected ~%d"
                          % (left, wait0 - (self.clock - clock0)))
        finally:
            self.storage.budget = -1
        self.checks += 1
        self._check_codes()

    # ---- a run ---------------------------------------------------------------

    def run(self):
        self.healing = False
        end = self.days * DAY_MS
        try:
            while self.clock < end:
                self.step()
            self.heal()
        finally:
            self.ledger.close()  # no SQLite handle left to the garbage collector
        return self

    def heal(self):
        """Invariant 4: with a perfect network, every event created reaches the ledger once."""
        self.healing = True
        self.outage_until = 0
        self.log("network heals")
        for q in (self.down, self.up):
            for k, (t, m) in enumerate(q):
                q[k] = (self.clock, m)
        for _ in range(200):
            self.advance(31000)
            if self.box.outbox.pending() == 0 and not self.up and not self.down:
                break
        if self.box.outbox.pending():
            self.fail("%d events still pending after healing" % self.box.outbox.pending())
        stored = {e.seq: e for e in self.ledger.events(BOX_ID, limit=10 ** 9)}
        rows = self.ledger.db.execute("SELECT count(*) FROM events").fetchone()[0]
        if rows != len(stored):
            self.fail("ledger stores an event twice")
        self.checks += 1
        for seq, (kind, comp, cid, arg, t) in self.created.items():
            e = stored.get(seq)
            if e is None:
                if seq not in self.dropped:
                    self.fail("event #%d %s never reached the ledger" % (seq, events.NAMES[kind]))
                continue
            if (e.type, e.comp, e.id, e.arg, e.t) != (events.NAMES[kind], comp, cid, arg, t):
                self.fail("event #%d differs in the ledger: %r" % (seq, e))
        for seq in stored:
            if seq not in self.created:
                self.fail("ledger holds event #%d the box never created" % seq)


def run_seed(seed, days=2, faults=True, box_factory=Box):
    return World(seed, days, faults, box_factory).run()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--days", type=float, default=2)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    days = checks = steps = cuts = 0
    for seed in range(a.start, a.start + a.seeds):
        try:
            w = run_seed(seed, a.days)
        except InvariantError as e:
            print(e)
            return 1
        days += a.days
        checks += w.checks
        steps += w.steps
        cuts += w.cuts
        if a.verbose:
            print("seed %d: %d steps, %d checks, %d power cuts, %d events"
                  % (seed, w.steps, w.checks, w.cuts, len(w.created)))
    dt = time.perf_counter() - t0
    print("%d seeds, %g box-days, %d steps, %d invariant checks, %d power cuts in %.1f s: "
          "%.1f box-days/s" % (a.seeds, days, steps, checks, cuts, dt, days / dt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
