# Fuzz target "command": commands and acks sealed with the box's current command key (so
# every one passes the MAC), their JSON generated per op and then mutated, into a Remote on
# a Box on a MemStorage; keys typed and doors moved in between, as a real box sees them.
#
# Remote.receive turns any exception into a `malformed` rejection, so the harness wraps
# Remote._command and Remote._acks: an exception other than OSError reaching receive's
# broad except is a finding. After every input: a command left a result, a rejection or a
# rate-limited count; a refused one changed no code, window or key; every event takes a
# seq above the one before; the box ticks, takes an event, publishes, and a Box and Remote
# rebuilt from a copy of its flash do not raise.
import hashlib
import hmac
import struct
from binascii import hexlify

from host_tools.backend.crypto import code_digest
from host_tools.fuzz.runner import Finding, guarded
from host_tools.fuzz.mutate import BOUNDARY_INTS, encode, mutate, mutate_value, nested, value
from host_tools import virtual  # noqa: E402

virtual.install()
from memflash import MemStorage  # noqa: E402
from parcelbox import config, events
from parcelbox import protocol as P
from parcelbox.box import Box
from parcelbox.remote import Remote, stored_settings

BOX = "box-7"
KEY = bytes(range(32))
T0 = 1_795_600_000
_BOARDS = ({"compartments": 2, "max_codes": 16, "outbox_capacity": 32},
           {"compartments": 1}, {"compartments": 4, "max_codes": 40, "outbox_capacity": 8})
_STEPS = (0, 0, 10, 60, 1000, 30000, 61000, 3600000)
_RIG_INPUTS = 400  # inputs on one box before a fresh one
_CODES = ("482915", "100001", "777777")  # codes the generator adds, and the keypad types

# Findings in files being rewritten elsewhere (host_tools/fuzz/runner.py: reported, not failed on).
KNOWN = {}


def _seal(key, topic, body):
    return hexlify(hmac.new(key, topic.encode() + b"\n" + body, hashlib.sha256).digest()) + b" " + body


# The set digest of code arrays (docs/protocol.md section 5), for syncs that add up.
def _set_digest(codes):
    acc = 0
    for c in codes:
        rec = struct.pack("<I16sBBII", c[0], bytes.fromhex(c[1]), c[2], c[3], c[5], c[6])
        acc ^= int.from_bytes(hashlib.sha256(rec).digest(), "little")
    return hashlib.sha256(struct.pack("<I", len(codes)) + acc.to_bytes(32, "little")).digest()[:16]


def _seq_key(seq):
    return "an event seq not above the one before" + (" (above 2**31-1)" if seq > 0x7FFFFFFF else "")


class Target:
    def __init__(self, rng):
        self.last_input = None
        self.n = 0
        self.reset(rng)

    def reset(self, rng):
        self.board = rng.choice(_BOARDS)
        self.st = MemStorage()
        self.now = 0
        self.seen = []
        self.plan = []  # the rest of a sync that adds up: bodies to send in order
        self._boot()
        self.box.set_time(T0, self.now)

    def _boot(self, old=None):
        self.box = Box(self.st, KEY, stored_settings(self.st, self.board), self.now, self._on_event)
        if old is not None and old.clock_trusted():
            self.box.set_time(old.wall(self.now), self.now)
        r = self.remote = Remote(self.box, BOX, KEY)
        self.escaped = None
        r._command = self._guard(r._command)
        r._acks = self._guard(r._acks)
        for c in range(1, len(self.box.doors) + 1):
            for _ in range(2):
                self.box.door(c, False, self.now)
                self.now += 60
        r.connected(self.now)

    def _on_event(self, seq, kind, comp, code_id, arg, t):
        self.seen.append((seq, kind, comp, code_id, arg))

    def _guard(self, fn):
        return guarded(fn, lambda e: setattr(self, "escaped", e))

    # ---- inputs -------------------------------------------------------------------

    def _code(self, rng):
        i = rng.choice((1, 2, 3, rng.randrange(1, 40), rng.choice(BOUNDARY_INTS)))
        k = rng.choice(_CODES + ("%06d" % rng.randrange(10 ** 6),))
        wall = self.box.wall(self.now)
        nb, na = rng.choice(((0, 0), (0, 0), (wall - 10, wall + 3600), (wall + 3600, 0),
                             (0, wall - 1), (0, 0xFFFFFFFF)))
        return [i, code_digest(KEY, k).hex(), rng.randrange(1, 5), rng.randrange(0, 3),
                rng.choice((1, 2, 0xFFFF)), max(nb, 0), max(na, 0)]

    def _fields(self, rng, op):
        r = self.remote
        if op == "add":
            return {"code": self._code(rng)}
        if op == "revoke":
            return {"id": rng.choice((1, 2, 3, rng.randrange(1, 40)))}
        if op == "unlock":
            return {"comp": rng.randrange(1, 5)}
        if op == "time":
            return {"t": self.box.wall(self.now) + rng.choice((0, 1, 60, -60, 86400, -86400))}
        if op == "settings":
            k = rng.choice(P.SETTABLE)
            lo, hi = config._RANGES.get(k, (0, 1))
            return {"set": {k: rng.choice((lo, hi, (lo + hi) // 2, config.DEFAULTS[k]))}}
        if op == "rotate":
            return {"gen": r.key_gen + 1, "key": rng.randbytes(32).hex()}
        if op == "sync_begin":
            return {"sync": rng.randrange(1, 5), "count": rng.randrange(0, 20),
                    "digest": bytes(16).hex()}
        if op == "sync_part":
            return {"sync": rng.randrange(1, 5), "part": rng.randrange(0, 3),
                    "codes": [self._code(rng) for _ in range(rng.randrange(0, 4))]}
        if op == "sync_end":
            return {"sync": rng.randrange(1, 5), "parts": rng.randrange(0, 3)}
        return {}

    def _sync_plan(self, rng):
        codes, ids = [], set()
        for _ in range(rng.randrange(0, 12)):
            c = self._code(rng)
            if c[0] not in ids and 1 <= c[0] <= 0xFFFFFFFF and c[1] not in {x[1] for x in codes}:
                ids.add(c[0])
                codes.append(c)
        s, per = rng.randrange(1, 1000), rng.randrange(1, 6)
        chunks = [codes[i:i + per] for i in range(0, len(codes), per)]
        self.plan = ([("sync_begin", {"sync": s, "count": len(codes), "digest": _set_digest(codes).hex()})]
                     + [("sync_part", {"sync": s, "part": k, "codes": ch}) for k, ch in enumerate(chunks)]
                     + [("sync_end", {"sync": s, "parts": len(chunks)})])

    def _seq(self, rng):
        top = self.box.cmd_top
        return rng.choice((top + 1, top + 1, top + 1, top + rng.randrange(2, 40), top,
                           top - rng.randrange(1, 40), top + 65536, top + 65537,
                           rng.choice(BOUNDARY_INTS)))

    def _command(self, rng):
        if self.plan and rng.random() < 0.9:
            op, f = self.plan.pop(0)
        else:
            if rng.random() < 0.05:
                self._sync_plan(rng)
                op, f = self.plan.pop(0)
            else:
                op = rng.choice(P.OPS[1:] + ("", "ADD", None, 5))
                f = self._fields(rng, op)
        c = {"v": 1, "box": BOX, "seq": self._seq(rng), "op": op}
        c.update(f)
        once = op in ("unlock", "clear_throttle")  # these must carry a short exp
        if rng.random() < (0.9 if once else 0.3):
            c["exp"] = self.box.wall(self.now) + rng.choice((60, 60, 600, 86400, 86401, -1, 0))
        for _ in range(rng.choice((0, 0, 0, 0, 0, 1, 1, 2, 3))):
            c = mutate_value(rng, c, ("v", "box", "seq", "op", "exp", "code", "set", "codes"))
        return c

    def _ack(self, rng):
        ob = self.box.outbox
        pend = [ob.seq(i) for i in range(min(ob.pending(), 8))]
        acks = [rng.choice(pend) if pend and rng.random() < 0.8 else rng.choice(BOUNDARY_INTS)
                for _ in range(rng.randrange(1, 6))]
        c = {"v": 1, "box": BOX, "acks": acks}
        return mutate_value(rng, c, ("acks", "v", "box")) if rng.random() < 0.3 else c

    # ---- one input -------------------------------------------------------------------

    def one(self, rng):
        self.n += 1
        if self.n % _RIG_INPUTS == 0:  # a fresh box: its events.log and boot stay small
            self.reset(rng)
        r, box = self.remote, self.box
        self.now += rng.choice(_STEPS)
        cmd = rng.random() < 0.8
        msg = self._command(rng) if cmd else self._ack(rng)
        raw = encode(msg, rng.random() < 0.1)
        x = rng.random()
        if x < 0.1:
            raw = mutate(rng, raw)
        elif x < 0.12:
            raw = nested(rng, rng.choice((100, 1000, 1500, 2000))).encode()
        elif x < 0.13:
            raw = encode(value(rng))
        topic = r.topic_cmd if cmd else r.topic_ack
        payload = _seal(r._cmd_key, topic, raw)
        self.last_input = (topic, raw)
        before = (box.codes.count(), box.codes.set_digest(), box.cmd_top, box.cmd_bits,
                  r.key_gen, r._cmd_key)
        sup, faults, n = r._suppressed, box.faults, len(self.seen)
        self.escaped = None
        r.receive(topic, payload, self.now)
        if self.escaped is not None:
            raise self.escaped  # the bug's own traceback names where it is
        new = self.seen[n:]
        for i in range(max(n, 1), len(self.seen)):
            if self.seen[i][0] <= self.seen[i - 1][0]:
                raise Finding("event seq %d handed out after %d" % (self.seen[i][0], self.seen[i - 1][0]),
                              _seq_key(self.seen[i][0]))
        results = [e for e in new if e[1] == events.RESULT]
        if cmd and not results and not any(e[1] == events.REJECTED for e in new) \
                and r._suppressed == sup and box.faults == faults:
            raise Finding("a command left no result, no rejection and no count")
        if cmd and not results:
            after = (box.codes.count(), box.codes.set_digest(), box.cmd_top, box.cmd_bits,
                     r.key_gen, r._cmd_key)
            if after != before:
                raise Finding("a refused command changed codes, window or key")
        self._after(rng, bool(results))

    # The box carries on: time, keys, doors, an event, publishing, a rebuild from flash.
    def _after(self, rng, applied):
        box, r = self.box, self.remote
        box.tick(self.now)
        if rng.random() < 0.1:
            for ch in rng.choice(_CODES) + rng.choice(("", "#", "*")):
                box.key(ord(ch), self.now)
                self.now += 50
            box.tick(self.now)
        if rng.random() < 0.1:
            c = rng.randrange(1, len(box.doors) + 1)
            is_open = rng.random() < 0.5
            for _ in range(2):
                box.door(c, is_open, self.now)
                self.now += 60
                box.tick(self.now)
        if rng.random() < 0.05:
            box.event(events.TAMPER, 0, 0, 1, self.now)
        for _ in range(40):
            if r.poll(self.now) is None:
                break
        r.next_deadline(self.now)
        if applied or self.n % 4 == 0:  # a boot reads every file: after what changed them
            copy = MemStorage({k: bytearray(v) for k, v in self.st.files.items()})
            b2 = Box(copy, KEY, stored_settings(copy, self.board), self.now)
            Remote(b2, BOX, KEY)
        if r.restart_pending and not any(box.solenoid(c, self.now) for c in range(1, len(box.doors) + 1)):
            self._boot(box)
