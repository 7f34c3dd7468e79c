# Deterministic simulation (docs/detsim.md): one seeded world drives the firmware core
# (Box + Remote on a flash that keeps each file's earlier versions) and a model of the
# backend (the ledger's event store and key columns, in memory) through randomised days:
# power cuts, a lossy reordering network that delivers late and twice, broker outages,
# spoofed and late clocks, reboots without a time source, damaged files, a buggy backend's
# acks, service mode, settings, key rotation and full syncs; invariants after every step.
# No wall clock, no threads, no broker: random.Random(seed) decides everything.
#
#   python -m host_tools.sim.detsim --seeds 200 [--start 0] [--days 2] [--jobs 2] [--verbose]
import argparse
import heapq
import sqlite3
import struct
import sys
import time
from collections import Counter, deque
import random

from host_tools import virtual  # noqa: E402

virtual.install()   # memflash by its device-side name, as the tests and the VM import it

from memflash import MemStorage, PowerCut  # noqa: E402
from parcelbox import events, lock as L, ticks  # noqa: E402
from parcelbox.box import Box  # noqa: E402
from parcelbox.codestore import (CodeStore, ROLE_DRIVER, ROLE_OWNER,  # noqa: E402
                                 ROLE_RECIPIENT, ROLE_REMOTE, ROLE_TECH)
from parcelbox.hmac256 import derive  # noqa: E402
from parcelbox.remote import Remote  # noqa: E402
from parcelbox.remotestore import stored_settings  # noqa: E402
from parcelbox.storage import frame_at  # noqa: E402

from host_tools.backend import protocol as HP  # noqa: E402
from host_tools.backend.sdk import ledger as LG  # noqa: E402

BOX_ID = "sim-1"
T0 = 1_795_600_000
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TRACE = 40  # steps kept for a failure's trace
# Every fault the world can inject; World(faults=...) takes any subset (True: all).
FAULTS = ("power", "net", "late", "clock", "flash", "badack", "noexp", "service",
          "settings", "rotate", "sync")
# The files the firmware persists (docs/storage.md); "flash" damages any of them.
FILES = ("codes.bin", "codes.log", "events.log", "state.0", "state.1", "wirekey.bin",
         "settings.bin", "sync.bin")
FILE_WEIGHTS = (2, 3, 2, 1, 1, 1, 0.5, 0.5)  # the code journal changes most and matters most
KEEP_VERSIONS = 6       # earlier versions of each file the flash keeps (LittleFS fallback)
MAX_QUIET_MS = 600_000  # longest step of advance() while nothing is due
RESEND_MS = 60_000      # the backend sends a command again after this long unanswered
TIME_NET = getattr(events, "TIME_NET", 1)
TIME_CMD = getattr(events, "TIME_CMD", 2)
TIME_SHELL = getattr(events, "TIME_SHELL", 3)
STORE_CORRUPT, FILE_CODES, FILE_OUTBOX = events.STORE_CORRUPT, events.FILE_CODES, events.FILE_OUTBOX
OP = {name: i for i, name in enumerate(HP.OPS)}
ONE_SHOT = ("unlock", "clear_throttle")  # commands the box must refuse without a valid exp
SETTINGS = {"free_tries": (1, 2, 5, 10), "lockout_base_ms": (10000, 30000, 60000),
            "open_window_ms": (5000, 10000, 20000), "pulse_ms": (300, 500, 700, 1000),
            "service_timeout_ms": (30000, 120000), "state_every_s": (600, 3600),
            "entry_timeout_ms": (5000, 10000), "left_open_ms": (60000, 120000)}
THROTTLE_CFG = ("free_tries", "lockout_base_ms", "lockout_max_ms", "target_years")


class InvariantError(AssertionError):
    pass


def memory_ledger(box_id, key, comps):
    """A Ledger on an in-memory SQLite (same schema and record_event), box registered:
    the shadow that checks the in-memory Backend stores and deduplicates as it does."""
    led = LG.Ledger.__new__(LG.Ledger)
    led.path = ":memory:"
    led.db = sqlite3.connect(":memory:", isolation_level=None)
    led.db.executescript(LG.SCHEMA)
    led.db.execute("INSERT INTO boxes (id, box_key, compartments, code_len, created) "
                   "VALUES (?,?,?,?,?)", (box_id, key, comps, 6, 0))
    return led


class SimFlash(MemStorage):
    """A MemStorage that keeps the last KEEP_VERSIONS complete versions of every file, as
    (bytearray, length): a file only grows in place, so a prefix stays as it was, and the
    damage helpers (MemStorage.flip, truncate, restore) copy before they change a byte."""

    def __init__(self, files=None, hist=None):
        super().__init__(files)
        self.hist = hist if hist is not None else {}

    def reboot(self):
        return SimFlash(self.files, self.hist)

    def _keep(self, name):
        h = self.hist.get(name)
        if h is None:
            h = self.hist[name] = deque(maxlen=KEEP_VERSIONS)
        buf = self.files[name]
        w = self.hist.setdefault("#w", [0])  # every completed write, numbered across files
        w[0] += 1
        h.append((buf, len(buf), w[0]))

    @property
    def writes(self):
        return self.hist.get("#w", [0])[0]

    def newest_write(self, name):
        """The number of the newest completed write to `name` (0: none kept)."""
        h = self.hist.get(name)
        return h[-1][2] if h else 0

    def replace(self, name, data):
        super().replace(name, data)
        self._keep(name)
        self.hist.setdefault("#rep", {})[name] = self.writes

    def append(self, name, data):
        super().append(name, data)
        self._keep(name)

    def replaced(self, name):
        """The number of the newest completed replace of `name` (0: none): after it the
        file only grew by appends, each at the end."""
        return self.hist.get("#rep", {}).get(name, 0)


class Backend:
    """The backend's side without SQLite: what Ledger.record_event does with an event (stored
    once per seq; a command's result or rejection noted; a rotation's result promoting the
    pending key) and the ledger's key columns (wire key, key_gen, pending key and its seq,
    the key before the last rotation and the seqs it still verifies: host_tools/backend/sdk/ledger.py
    keys, may_verify, confirm_key, fall_back_to_box_key)."""

    def __init__(self, box_key):
        self.box_key = box_key
        self.events = {}     # seq: HP.Event, each stored once
        self.dups = 0
        self.last_next = 0   # next_seq of the last state summary taken (Ledger.set_state)
        self.results = {}    # command seq: status
        self.rejected = {}   # command seq: reason (no result seen for it)
        self.wire = None     # None: the box key (no rotation yet)
        self.gen = 0
        self.pending = self.pseq = None
        self.prev = self.prev_below = None
        self.rot_seq = 0     # seq of the rotate command whose key is current
        self.rot_seqs = []   # every rotate command that carried that key
        self.pseqs = []      # every rotate command that carried the pending key
        self.lost = None     # (wire, gen, rot_seq, seq) a fall back dropped: heard again, restored
        self.cmd_seq = 0
        self._wk = {}

    def wk(self, wire):
        k = self._wk.get(wire)
        if k is None:
            k = self._wk[wire] = HP.WireKeys.of(self.box_key, wire)
        return k

    def current(self):
        return self.wk(self.wire)

    def keys(self):
        out = [self.wk(self.wire)]
        if self.prev is not None:
            out.insert(0, self.wk(self.prev))
        if self.pending is not None:
            out.append(self.wk(self.pending))
        if self.lost is not None:
            out.append(self.wk(self.lost[0]))
        return out

    def heard(self, used, seq):
        """A message verified under `used` with event seq `seq`: if that is the key a fall back
        dropped and the box sealed it after the summary that made the backend fall back
        (a higher seq), the box still holds that key (the summary was an old one, late): it
        becomes current again. Seqs below are messages sealed before, arriving late."""
        if self.lost is None or self.wk(self.lost[0]) != used or seq < self.lost[3]:
            return False
        self.prev, self.prev_below = self.box_key, seq
        self.wire, self.gen, self.rot_seq = self.lost[:3]
        self.rot_seqs = [self.rot_seq]
        self.pending = self.pseq = self.lost = None
        return True

    def may_verify(self, used, seq):
        if self.prev is None or self.wk(self.prev) != used:
            return True
        return self.prev_below is not None and seq < self.prev_below

    def confirm(self, used, below):
        if self.pending is None or self.wk(self.pending) != used:
            return False
        self._promote(below)
        return True

    def _promote(self, below):
        self.prev = self.wire if self.wire is not None else self.box_key
        self.prev_below = below
        self.rot_seq, self.rot_seqs = self.pseq, self.pseqs
        self.wire, self.pending, self.pseq, self.pseqs = self.pending, None, None, []
        self.gen += 1
        self.lost = None

    def record(self, ev):
        if ev.seq in self.events:
            self.dups += 1
            return False
        self.events[ev.seq] = ev
        if ev.type == "result":
            st = ev.arg & 0xFF
            self.results[ev.id] = st
            self.rejected.pop(ev.id, None)
            if ev.comp == OP["rotate"] and self.pseq == ev.id:
                if st == 0:
                    self._promote(ev.seq)
                else:
                    self.pending = self.pseq = None
        elif ev.type == "rejected" and ev.id and ev.id not in self.results:
            self.rejected[ev.id] = ev.arg & 0xFF
        return True

    def fall_back(self, payload):
        if self.gen == 0:
            return None
        try:
            state, _ = HP.parse_state([self.wk(None)], BOX_ID, payload)
        except HP.ProtocolError:
            return None
        # Not in Ledger.fall_back_to_box_key, which takes a summary the box sealed before
        # it applied the rotation (late, or refused because the rotation was confirmed by
        # a re-published older event: prev_below too low) and then drops the key the box
        # holds: the two never hear each other again. A box that really lost its key has
        # applied that rotate command: its window is at or above its seq.
        if state["key_gen"] != 0 or self.rot_seqs and all(
                HP.window_saw(state, q) is False for q in self.rot_seqs):
            return None
        # as the ledger: a summary at or below a seq already heard of is an old one, late
        if state["next_seq"] - 1 <= max(max(self.events, default=0), self.last_next - 1):
            return None
        # ...and, not in the ledger either, it keeps listening under the key it drops: a
        # summary that late can still pass that test (a rotate applied late, after later
        # commands), and then the box's next message under its key restores it
        self.lost = (self.wire, self.gen, self.rot_seq, state["next_seq"])
        self.prev = self.prev_below = self.wire = self.pending = self.pseq = None
        self.gen = self.rot_seq = 0
        self.rot_seqs = []
        return state


def _frame_ends(data):
    """Every offset of data at which a whole storage.frame ends (0 included)."""
    out, pos = [0], 0
    while True:
        r = frame_at(data, pos)
        if r is None:
            return out
        pos = r[1] + 4
        out.append(pos)


class World:
    def __init__(self, seed, days=2, faults=True, box_factory=Box, shadow=False):
        self.seed = seed
        self.rng = random.Random(seed)
        self.days = days
        self.f = set(FAULTS) if faults is True else set(faults or ())
        unknown = self.f - set(FAULTS)
        if unknown:
            raise ValueError("unknown faults: " + ", ".join(sorted(unknown)))
        self.box_factory = box_factory
        r = self.rng
        self.key = bytes(r.randrange(256) for _ in range(32))
        self.comps = r.randint(1, 3)
        self.board = {"compartments": self.comps, "outbox_capacity": 256,
                      "free_tries": r.choice((1, 2, 5)), "lockout_base_ms": 30000}
        self.be = Backend(self.key)
        self.shadow = memory_ledger(BOX_ID, self.key, self.comps) if shadow else None
        self.code_key = self.be.current().code
        self.storage = SimFlash()
        self.clock = 0          # world ms since start (never wraps)
        self.off_ms = 0         # of which the box was powered off
        self.k_base = None      # box-knowable time: the last accepted time (epoch s)...
        self.k_on = 0           # ...and the powered-on ms when it was accepted
        self.k_hi = 0           # the highest box-knowable time so far
        self.trace = deque(maxlen=TRACE)
        self.steps = self.checks = self.cuts = self.boots = self.damages = 0
        self.stats = Counter()  # what happened: faults injected, events, results, openings
        self._late = None       # a failure seen inside a firmware call, raised after it
        # backend model
        self.commands = {}      # seq: (op, fields, exp)
        self.op_of = {}         # command payload: op
        self.unanswered = {}    # seq: tick last sent; sent again until answered
        self._resend_at = 0
        self.doubtful = {}      # command seq: tick it was rejected with no result
        self.sync_wanted = False
        self.sync_next = 0      # earliest tick for the next sync
        self.sync_end = None    # seq of the sync_end in flight
        self.sync_sets = {}     # sync_end seq: code ids the sync carries
        self.rotate_wanted = False
        self.bad_acks = {}      # ack payload: seqs a buggy backend acks unsent
        self.acked_wrongly = set()  # published seqs a buggy ack took (lost: the backend's bug)
        self.reset_ok = False   # this step may lower the throttle (clear, accepted code)
        self.codes = {}         # id: dict(digits, role, comp, uses, nb, na)
        self.next_code = 1
        self.revoke_sent = set()   # code ids any revoke was sent for
        self.acked_revoke = set()  # code ids whose revoke result OK reached the backend
        self.expected = set()   # code ids the box must hold (applied adds and syncs)
        self.k_store = {}       # code id: highest box-knowable time when it reached the box
        self._exp_ver = 0
        self._ids_key = None    # (store, changes, expected version) last checked
        self.granted_remote = set()
        self.used = {}          # code id: uses spent (grants whose door the world opened)
        self.grant_of = [None] * self.comps  # per door: code id of its running grant
        self.created = {}       # seq: (kind, comp, code_id, arg, t), from on_event
        self.created_w = {}     # seq: the flash write that made it durable
        self.created_end = {}   # seq: the size of events.log once its append was done
        self.reverted = set()   # seqs lost with the newest writes of all (as a cut before them)
        self.dropped = set()    # seqs the outbox reported as dropped (overflow)
        self.published = set()  # event seqs the box published since it booted
        self.svc_num = 0        # digits typed in service mode since the last '#'
        self.damaged = set()    # files damaged at the last boot
        self.flipped = set()    # code files with a bit flipped in a record the box reads
        self.boot_reports = {}
        self.truth = None       # the codes the flash held before that damage
        # network: heaps of (deliver_at_ms, n, message); the world picks the order
        self.down, self.up = [], []
        self._n = 0
        self.outage_until = 0
        self.healing = False
        self.connected = False
        self.phys = [False] * self.comps  # door physically open
        self.on_since = [None] * self.comps
        self.ntp_at = self.ntp_due = 0
        names = [("issue", 6), ("revoke", 1), ("unlock", 1), ("clear", 0.3), ("type", 8),
                 ("door", 6), ("wait", 10), ("state", 0.1)]
        for name, w, need in (("outage", 0.3, "net"), ("spoof", 0.4, "clock"),
                              ("time", 0.3, "clock"), ("badack", 0.3, "badack"),
                              ("settings", 0.15, "settings"), ("rotate", 0.1, "rotate"),
                              ("sync", 0.1, "sync")):
            if need in self.f:
                names.append((name, w))
        self._acts = [getattr(self, "act_" + a) for a, _ in names]
        self._names = [a for a, _ in names]
        self._weights = list(__import__("itertools").accumulate(w for _, w in names))
        self.boot()

    # ---- plumbing ----------------------------------------------------------

    @property
    def now(self):
        return self.clock & ticks._MASK

    def true_wall(self):
        return T0 + self.clock // 1000

    def known(self):
        """The time the box can know: the newest time an accepted source gave plus the
        powered-on time since (time powered off is unknowable); None before any."""
        if self.k_base is None:
            return None
        return self.k_base + (self.clock - self.off_ms - self.k_on) // 1000

    def known_hi(self):
        """The highest box-knowable time so far: a code whose not_after it passed expired
        while the box was running, and must never open again."""
        k = self.known()
        return self.k_hi if k is None or k < self.k_hi else k

    def log(self, msg):
        self.trace.append("%9d ms  %s" % (self.clock, msg))

    def fail(self, msg):
        raise InvariantError("seed %d: %s\nreplay: python -m host_tools.sim.detsim --seeds 1 "
                             "--start %d --days %s%s\nlast steps:\n  %s"
                             % (self.seed, msg, self.seed, self.days, self._faults_arg(),
                                "\n  ".join(self.trace)))

    def _faults_arg(self):
        if self.f == set(FAULTS):
            return ""
        return " --faults " + (",".join(a for a in FAULTS if a in self.f) or "none")

    # A failure seen inside a firmware call (the remote swallows exceptions): raised by
    # the next check.
    def later(self, msg):
        if self._late is None:
            self._late = msg

    def _on_event(self, seq, kind, comp, code_id, arg, t):
        if seq in self.created:
            if self.created[seq] != (kind, comp, code_id, arg, t):
                self.later("event seq #%d handed out twice: %r, then %r"
                           % (seq, self.created[seq], (kind, comp, code_id, arg, t)))
            return
        self.created[seq] = (kind, comp, code_id, arg, t)
        self.created_w[seq] = self.storage.writes  # its append's number (it is durable now)
        self.created_end[seq] = self.storage.size("events.log")
        name = events.NAMES[kind] if kind < len(events.NAMES) else str(kind)
        if kind == events.RESULT:
            st = HP.STATUS[arg & 0xFF] if arg & 0xFF < len(HP.STATUS) else str(arg & 0xFF)
            name = "result %s %s" % (HP.OPS[comp] if comp < len(HP.OPS) else comp, st)
        elif kind == events.REJECTED:
            name = "rejected %d" % (arg & 0xFF)
        elif kind == STORE_CORRUPT:
            name = "store_corrupt file %d flags %d" % (arg & 0xFF, arg >> 8)
            self.boot_reports[arg & 0xFF] = self.boot_reports.get(arg & 0xFF, 0) | arg >> 8
        self.stats[name] += 1
        if kind == events.REFUSED or kind == events.SERVICE:
            self.reset_ok = True
        elif kind == events.OVERFLOW:
            for s in range(code_id, code_id + arg):
                self.dropped.add(s)
        elif kind == STORE_CORRUPT and arg & 0xFF == FILE_CODES and (arg >> 8) & ~2:
            self.expected = set()  # the store may be EMPTY until a resync (fail closed)
            self._exp_ver += 1
        elif kind == events.RESULT:
            self._applied(code_id, arg & 0xFF)

    # The box applied command `seq` with status st (its result event is on flash).
    def _applied(self, seq, st):
        cmd = self.commands.get(seq)
        if cmd is None or st != 0:
            return
        op, f, exp = cmd
        if op in ONE_SHOT:
            k = self.known()
            if exp is None:
                self.later("%s #%d without exp honoured" % (op, seq))
            elif k is None or k > exp:
                self.later("%s #%d honoured after its exp %d (box-knowable time %s, box wall "
                           "%d, trusted %s)" % (op, seq, exp, k, self.box.wall(self.now),
                                                self.box.clock_trusted()))
        elif op == "add":
            self.expected.add(f["code"][0])
            self.k_store.setdefault(f["code"][0], self.known_hi())
        elif op == "revoke":
            self.expected.discard(f["id"])
        elif op == "sync_end":
            self.expected = set(self.sync_sets.get(seq, ()))
            for cid in self.expected:
                self.k_store.setdefault(cid, self.known_hi())
        else:
            return
        self._exp_ver += 1

    def _accepted_time(self, t):
        self.k_hi = self.known_hi()
        self.k_base, self.k_on = t, self.clock - self.off_ms

    # The box's set_time, watched: an accepted time moves the box-knowable time.
    def _watch_time(self, box):
        orig = box.set_time

        def set_time(epoch_s, now, *source):
            ok = orig(epoch_s, now, *source)
            if ok is None or ok:  # None: a firmware that takes every time
                self._accepted_time(epoch_s)
            return ok
        box.set_time = set_time

    def set_time(self, t, source):
        try:
            return self.box.set_time(t, self.now, source)
        except TypeError:  # a firmware without time sources
            return self.box.set_time(t, self.now)

    # ---- power, boots, flash damage ------------------------------------------

    def boot(self, rebuild=False):
        self.boots += 1
        old = self.box if rebuild else None
        settings = stored_settings(self.storage, self.board)
        self.box = self.box_factory(self.storage, self.key, settings, self.now,
                                    on_event=self._on_event)
        self._watch_time(self.box)
        if old is not None:  # as app._build: the new core knows it too
            try:
                self.box.take_clock(old, self.now)
            except AttributeError:  # a firmware before take_clock
                if old.clock_trusted():
                    self.set_time(old.wall(self.now), TIME_SHELL)
        self.remote = Remote(self.box, BOX_ID, self.key)
        self.published = set()
        self.svc_num = 0
        self.on_since = [None] * self.comps
        self.grant_of = [None] * self.comps
        if rebuild:
            if self.connected:
                self.remote.connected(self.now)
            return
        self.connected = False
        if "clock" in self.f and self.rng.random() < 0.25:  # no time source for a while
            self.stats["boot without time"] += 1
            self.ntp_at = self.clock + self.rng.randint(600_000, 12 * HOUR_MS)
            self.log("boot without a time source until %d" % self.ntp_at)
        else:
            self.ntp_at = self.clock
        self.ntp_due = self.ntp_at
        if self.truth is not None:
            self._check_damage()
        for c in range(1, self.comps + 1):
            self.box.door(c, self.phys[c - 1], self.now)
        self._ntp()
        self.advance(self.box.cfg["door_debounce_ms"] + 10)

    def reboot(self):
        self.cuts += 1
        self.storage = self.storage.reboot()
        self._off(self.rng.randint(100, 20000) if self.rng.random() < 0.9
                  else self.rng.randint(60_000, 6 * HOUR_MS))
        self.log("power back: reboot")
        self.damaged = set()
        self.flipped = set()
        self.boot_reports = {}  # file: store_corrupt flags reported by the boots that follow
        self.truth = None
        if "flash" in self.f and self.rng.random() < 0.3:
            self.truth = self._codes_on(self.storage)  # what the flash says before the damage
            self.damage()
            if self.rng.random() < 0.1:
                # a second file, but never the last intact state copy when events.log or a
                # state copy is already damaged: losing every copy of what the box knew is
                # a new box, which nothing can tell from one that was reset
                keep = [n for n in ("state.0", "state.1")
                        if self.storage.files.get(n) and n not in self.damaged]
                self.damage(set(keep) if len(keep) == 1 and
                            self.damaged & {"state.0", "state.1", "events.log"} else ())
        while "power" in self.f and self.rng.random() < 0.2:  # it fails again while booting
            n = self.rng.randint(0, 200)
            self.storage.cut_after(n)
            try:
                self.boot()
            except PowerCut:
                self.cuts += 1
                self.storage = self.storage.reboot()
                self._off(self.rng.randint(100, 5000))
                self.log("power failed again during the boot after %d bytes" % n)
                continue
            self.storage.budget = -1
            return
        self.boot()

    def _codes_on(self, st=None):
        """The code records (id: 32 bytes with uses zeroed, and uses) a clean boot loads from
        flash st, or (None) the box holds."""
        if st is None:
            cs = self.box.codes
        else:
            cs = CodeStore(MemStorage(dict(st.files)), derive(self.key, b"code"), 256)
            cs.load()
        out = {}
        for rec in cs.records():
            r = bytearray(rec)
            uses = r[22] | r[23] << 8
            r[22] = r[23] = 0
            out[struct.unpack_from("<I", r)[0]] = (bytes(r), uses)
        return out

    def _live_journal(self):
        """Whether codes.log follows codes.bin (its HEAD names the snapshot's generation)."""
        f = self.storage.files
        log, snap = f.get("codes.log"), f.get("codes.bin")
        r = frame_at(log, 0) if log else None
        if r is None or r[1] - r[0] != 5:
            return bool(log)
        gen = struct.unpack_from("<I", snap, 4)[0] if snap and len(snap) >= 16 else 0
        return struct.unpack_from("<I", log, r[0] + 1)[0] == gen

    def _check_damage(self):
        """Damage may take codes or uses away (fail closed), never give back what counted as
        gone: a code the undamaged files no longer held returns only if its removal was not
        acknowledged (a revoke or sync whose result the cut lost), and a use comes back only
        if no door opened for it. Records never change."""
        truth, self.truth = self.truth, None
        what = "damage to " + ", ".join(sorted(self.damaged))
        if self.flipped:
            flags = self.boot_reports.get(FILE_CODES, 0)
            if not flags & ~2 or "codes.log" in self.flipped and flags & 2:
                self.fail("a bit flipped in a whole record of %s was reported as %s, not as "
                          "damage (store_corrupt of the codes, flags 1, 4 or 8: EMPTY)"
                          % (" and ".join(sorted(self.flipped)),
                             "a torn write" if flags else "nothing"))
        hi = self.known_hi()
        for cid, (rec, uses) in self._codes_on().items():
            t, c = truth.get(cid), self.codes.get(cid)
            if c is None:
                self.fail("%s brought code %d, never issued" % (what, cid))
            left = c["uses"] - self.used.get(cid, 0)
            if t is None:
                if cid in self.acked_revoke:
                    self.fail("%s brought back code %d after its revoke was acknowledged"
                              % (what, cid))
                if left <= 0:
                    self.fail("%s brought back code %d, used up" % (what, cid))
                # an expired code back in the store that can never open again (the saved
                # floor is past its end: the sweep saves it before journaling the expiry)
                # is as good as gone; the next sweep removes it
                if c["na"] and self.k_store.get(cid, hi) <= c["na"] < hi and \
                        self.box.wall(self.now) <= c["na"]:
                    self.fail("%s brought back code %d, expired while the box held it"
                              % (what, cid))
            elif t[0] != rec:
                self.fail("%s changed code %d" % (what, cid))
            elif uses > t[1] and uses > left:
                self.fail("%s gave code %d a spent use back: %d uses, %d before the damage, "
                          "%d left" % (what, cid, uses, t[1], left))

    def _off(self, ms):
        self.clock += ms
        self.off_ms += ms

    def damage(self, spare=()):
        """One file (not one in `spare`) damaged while the power was off: a bit flipped, its
        tail lost at a record boundary, gone, or back to an earlier version."""
        st, r = self.storage, self.rng
        names = [(n, w) for n, w in zip(FILES, FILE_WEIGHTS)
                 if (st.files.get(n) or st.hist.get(n)) and n not in spare]
        if not names:
            return
        name = r.choices([n for n, _ in names], [w for _, w in names])[0]
        cur = st.files.get(name)
        olds = [v for v in st.hist.get(name, ()) if cur is None or v[1] != len(cur)
                or bytes(v[0][:v[1]]) != cur]
        kinds = (["flip", "flip last", "flip last", "tail", "vanish"] if cur else []) + (
            ["older"] * 2 if olds else [])
        if not kinds:
            return
        kind = r.choice(kinds)
        if kind.startswith("flip"):
            # anywhere, or in the last record (the page being written when the power went:
            # whole but wrong, not torn)
            ends = _frame_ends(cur) if name != "codes.bin" else [max(0, len(cur) - 36)]
            lo = ends[-2] if kind == "flip last" and len(ends) > 1 else (
                ends[-1] if kind == "flip last" and ends[-1] < len(cur) else 0)
            bit = r.randrange(lo * 8, len(cur) * 8)
            if name == "codes.bin" or name == "codes.log" and self._live_journal() and \
                    bit >> 3 < _frame_ends(cur)[-1]:
                self.flipped.add(name)  # a whole record the box reads: damage, not a torn write
            st.flip(name, bit)
            what = "bit %d flipped" % bit
        elif kind == "tail":
            if name == "codes.bin":
                ends = list(range(0, len(cur), 32)) if len(cur) > 16 else [0]
                ends = [12 + e for e in ends if 12 + e < len(cur)] + [0]
            else:
                ends = [e for e in _frame_ends(cur) if e < len(cur)]
            n = r.choice(ends)
            st.truncate(name, n)
            what = "cut to %d of %d bytes" % (n, len(cur))
        elif kind == "vanish":
            st.restore(name, None)
            what = "gone"
        else:
            buf, n, back_to = r.choice(olds)
            st.restore(name, buf[:n])
            what = "back to an earlier version (%d bytes)" % n
        if name == "events.log" and kind in ("tail", "older"):
            self._revert_newest(n, back_to if kind == "older" else None)
        if not kind.startswith("flip") or name in self.damaged:
            self.flipped.discard(name)
        self.damages += 1
        self.stats["damage " + kind] += 1
        self.damaged.add(name)
        self.log("flash: %s %s" % (name, what))

    def _revert_newest(self, n, back_to=None):
        """events.log went back to its first n bytes. Of the events it lost, those no state
        file was saved after have no mark anywhere that says they existed: the box sees
        what a power cut just before them leaves. LittleFS, whose metadata falls back by
        whole commits, loses writes only as the newest of all (this simulation is harsher:
        it lets a later write to another file stay); either way the events they made count
        as never written. A loss past a state save is the box's to find and report
        (docs/storage.md section 3)."""
        st = self.storage
        h = list(st.hist.get("events.log", ()))
        if back_to is not None:  # the version it went back to, by its write: all after it
            lost = [v for v in h if v[2] > back_to]
        else:  # cut at n: back from the newest while they reach past n (a compaction before
            k = len(h)  # them shrank the file: stop there)
            while k and h[k - 1][1] > n:
                k -= 1
            lost = h[k:]
        first = lost[0][2] if lost else st.writes + 1
        saved = max(st.newest_write(f) for f in ("state.0", "state.1"))
        gone = {s for s, w in self.created_w.items() if w >= first and w > saved}
        if back_to is None:
            # A cut may reach further back than the versions kept: an event appended since
            # the file was last replaced, after the newest state save, whose append ended
            # past the cut, went with it all the same.
            rep = st.replaced("events.log")
            gone |= {s for s, w in self.created_w.items()
                     if w > saved and w > rep and self.created_end.get(s, 0) > n}
        if not gone:
            return
        self.reverted |= gone
        self.stats["newest writes reverted"] += 1

    # ---- time sources --------------------------------------------------------

    def _ntp(self):
        if self.clock >= self.ntp_at and self.clock >= self.ntp_due:
            self.ntp_due = self.clock + 6 * HOUR_MS  # as app.py: again every 6 h
            ok = self.set_time(self.true_wall(), TIME_NET)
            self.log("sntp: %d %s" % (self.true_wall(), "taken" if ok or ok is None else "refused"))

    # ---- the network -------------------------------------------------------

    def net_up(self):
        return self.clock >= self.outage_until

    def _enqueue(self, q, msg):
        self._n += 1
        if self.healing or "net" not in self.f:
            heapq.heappush(q, (self.clock, self._n, msg))
            return
        r = self.rng
        if r.random() < 0.08:
            self.log("net: lost %s" % (msg[0].rsplit("/", 1)[-1],))
            return
        for k in range(2 if r.random() < 0.08 else 1):
            if "late" in self.f and r.random() < 0.03:  # queued at the broker for hours
                d = r.randint(HOUR_MS, 6 * HOUR_MS)
                self.stats["delivered late"] += 1
            else:
                d = r.choice((0, 0, 50, 500, 5000, 60000))
            heapq.heappush(q, (self.clock + d, self._n + k, msg))
        self._n += 1

    def send_cmd(self, op, exp=None, **fields):
        be = self.be
        be.cmd_seq += 1
        s = be.cmd_seq
        self.commands[s] = (op, fields, exp)
        self.unanswered[s] = self.clock
        self._resend_at = min(self._resend_at, self.clock + RESEND_MS)
        self._send(s)
        self.log("backend sends #%d %s %s%s" % (s, op, fields.get("id", fields.get("comp", "")),
                                               "" if exp is None else " exp %d" % exp))
        return s

    def _send(self, s):
        op, f, exp = self.commands[s]
        be = self.be
        if op == "rotate":  # wrapped under the cmd key it is sealed with
            if be.pseq != s:
                self.unanswered.pop(s, None)  # superseded or answered: nothing to send
                return
            f = {"gen": be.gen + 1, "key": HP.wrap_key(be.current().cmd, s, be.pending)}
        msg = HP.command(be.current(), BOX_ID, s, op, exp, **f)
        self.op_of[msg[1]] = op
        self._enqueue(self.down, msg)

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
            if m[0].endswith("/evt"):
                p = m[1]
                i = p.find(b'"seq":') + 6
                self.published.add(int(p[i:p.find(b",", i)]))
            self._enqueue(self.up, (m[0], m[1]))
        if self.unanswered and self.clock >= self._resend_at:
            for s, t in list(self.unanswered.items()):
                if self.clock - t >= RESEND_MS:
                    self.unanswered[s] = self.clock
                    self._send(s)
            self._resend_at = min(self.unanswered.values(), default=self.clock) + RESEND_MS
        acks = []
        for q, deliver in ((self.down, self._to_box), (self.up, self._to_backend)):
            if not q or q[0][0] > self.clock:
                continue
            due = []
            while q and q[0][0] <= self.clock:
                due.append(heapq.heappop(q)[2])
            if not self.healing:
                self.rng.shuffle(due)
            for msg in due:
                deliver(msg, acks)
        if acks:  # the backend acks what it stored (now or before), under its current key
            for i in range(0, len(acks), HP.MAX_ACKS):
                self._enqueue(self.down, HP.ack(self.be.current(), BOX_ID, acks[i:i + HP.MAX_ACKS]))
        self._backend_step()

    def _to_box(self, msg, acks):
        t, p = msg
        before = self._doors()
        op = self.op_of.get(p)
        if op == "clear_throttle":
            self.reset_ok = True
        bad = self.bad_acks.get(p)
        if bad:
            ob = self.box.outbox
            pend = {ob.seq(i) for i in range(ob.pending())}
            bad = [s for s in bad if s in pend]
        self.remote.receive(t, p, self.now)
        if bad:
            ob = self.box.outbox
            pend = {ob.seq(i) for i in range(ob.pending())}
            for s in bad:
                if s in pend:
                    continue
                if s not in self.published:
                    self.later("ack for unsent seq #%d honoured: the event is gone, never "
                               "published since the boot" % s)
                self.acked_wrongly.add(s)  # published: the box cannot tell; the backend lost it
        self.after_input(before, remote=True)

    def _to_backend(self, msg, acks):
        t, p = msg
        be = self.be
        if t.endswith("/state"):
            self._state(p)
            return
        keys = be.keys()
        try:
            ev, i = HP.parse_event(keys, BOX_ID, p)
        except HP.ProtocolError:
            return  # under a key the backend does not hold: sent again later
        if be.heard(keys[i], ev.seq):
            self.stats["backend took the box's key back"] += 1
        elif not be.may_verify(keys[i], ev.seq):
            return
        be.confirm(keys[i], ev.seq)
        stored = be.record(ev)
        if self.shadow is not None and self.shadow.record_event(ev, "detsim") != stored:
            self.fail("the in-memory backend and the SQLite ledger disagree on event #%d" % ev.seq)
        acks.append(ev.seq)
        if not stored:
            return
        self.log("ledger stores #%d %s" % (ev.seq, ev.type))
        if ev.type == "result":
            self.unanswered.pop(ev.id, None)
            self.doubtful.pop(ev.id, None)
            cmd = self.commands.get(ev.id)
            if cmd is None:
                return
            ok = ev.arg & 0xFF == 0
            if ok and cmd[0] == "revoke":
                self.acked_revoke.add(cmd[1]["id"])
            elif not ok and cmd[0].startswith("sync"):
                self.sync_wanted = True  # the box answered sync_order, sync_mismatch...: again
            elif ev.arg & 0xFF == HP.STATUS.index("sync_order"):
                self.sync_wanted = True  # an add or revoke older than one applied: as mirror.py
        elif ev.type == "rejected" and ev.id:
            self.unanswered.pop(ev.id, None)
            if ev.id not in be.results and ev.id in self.commands:
                self.doubtful[ev.id] = self.clock
        elif ev.type == "store_corrupt" and ev.arg & 0xFF == FILE_CODES:
            self.sync_wanted = True

    def _state(self, p):
        be = self.be
        keys = be.keys()
        try:
            st, i = HP.parse_state(keys, BOX_ID, p)
            if not be.may_verify(keys[i], st["next_seq"] - 1):
                raise HP.ProtocolError("state under the key before the last rotation")
        except HP.ProtocolError:
            st = be.fall_back(p)
            if st is None:
                return
            self.stats["backend fell back to the box key"] += 1
            self.log("backend falls back to the box key (the box lost its wire key)")
            self.rotate_wanted = "rotate" in self.f
        else:
            if be.heard(keys[i], st["next_seq"] - 1 if st["next_seq"] > 1 else 0):
                self.stats["backend took the box's key back"] += 1
            be.confirm(keys[i], st["next_seq"])
        be.last_next = st["next_seq"]
        if st["cmd_seq"] > be.cmd_seq:  # as Ledger.set_state
            be.cmd_seq = st["cmd_seq"]
        if 60 < st.get("slack", 0) < 0xFFFFFFFF:  # as the SDK's consumer: a sealed time
            t = self.true_wall()
            self.send_cmd("time", exp=t + 120, t=t, ref=st.get("ref", 0))

    def _backend_step(self):
        """The backend's reactions: a full sync when the box's codes cannot be trusted (a
        store_corrupt, a failed sync, a command rejected and never applied), a new rotation
        after the box fell back to its box key."""
        if self.doubtful:
            for s, t in list(self.doubtful.items()):
                if s in self.be.results:
                    del self.doubtful[s]
                elif self.clock - t > 600_000:
                    del self.doubtful[s]
                    if self.commands[s][0] in ("add", "revoke", "sync_begin", "sync_part",
                                               "sync_end"):
                        self.sync_wanted = True
        if self.sync_end is not None and (self.sync_end in self.be.results
                                          or self.sync_end not in self.unanswered):
            self.sync_end = None
        if self.sync_wanted and self.sync_end is None and self.clock >= self.sync_next:
            self.sync()
        if self.rotate_wanted and self.be.pending is None:
            self.rotate_wanted = False
            self.act_rotate()

    # ---- time --------------------------------------------------------------

    def advance(self, ms):
        end = self.clock + ms
        while self.clock < end:
            box = self.box
            busy = False
            for i, d in enumerate(box.doors):
                if d.state == L.PULSING or d.state == L.WAITING or d.door_open != self.phys[i]:
                    busy = True
                    break
            self.clock += 50 if busy else self._quiet_step(end)
            if self.clock > end:
                self.clock = end
            before = self._doors()
            now = self.now
            for c in range(1, self.comps + 1):
                box.door(c, self.phys[c - 1], now)
            box.tick(now)
            self._ntp()
            self.after_input(before)
            if not self.healing or self.net_up():
                self.pump()

    def _quiet_step(self, end):
        """Ms to the next moment anything is due: the box's deadline, the remote's, a
        message, the broker's return, the time source, a resend; at least 10 (a scan)."""
        now, clock = self.now, self.clock
        best = min(end - clock, MAX_QUIET_MS)
        dl = self.box.next_deadline(now)
        if dl is not None:
            best = min(best, ticks.diff(dl, now))
        if self.net_up():
            if self.connected:
                dl = self.remote.next_deadline(now)
                if dl is not None:
                    best = min(best, ticks.diff(dl, now))
            for q in (self.down, self.up):
                if q:
                    best = min(best, q[0][0] - clock)
            if self.unanswered:
                best = min(best, self._resend_at - clock)
        else:
            best = min(best, self.outage_until - clock)
        best = min(best, max(self.ntp_at, self.ntp_due) - clock)
        return best if best > 10 else 10

    # ---- invariants --------------------------------------------------------

    def _doors(self):
        return [(d.state, d.code_id, d.door_open) for d in self.box.doors]

    def after_input(self, before, typed=None, remote=False, wait=0, occupied=0, svc=None):
        """Every door that left LOCKED in this input is justified (invariant 1);
        solenoids within max_on_ms (5); uses within bounds (2)."""
        self.checks += 1
        if self._late is not None:
            self.fail(self._late)
        box = self.box
        for i, d in enumerate(box.doors):
            st0, cid0, open0 = before[i]
            if st0 == L.LOCKED and d.state in (L.PULSING, L.WAITING, L.RELEASED):
                role = box.opener_role[i]
                self.stats["door unlocked role %d" % role] += 1
                if role == ROLE_REMOTE:
                    self._check_unlock(i, d.code_id, remote)
                elif role == ROLE_TECH:
                    if svc != i + 1:
                        self.fail("door %d unlocked in service mode without its number and "
                                  "'#' typed" % (i + 1))
                    self._check_valid(d.code_id, "technician code %d opened door %d"
                                      % (d.code_id, i + 1), ROLE_TECH)
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

    def _check_unlock(self, i, seq, remote):
        cmd = self.commands.get(seq)
        if not remote or cmd is None or cmd[0] != "unlock" or cmd[1]["comp"] != i + 1:
            self.fail("door %d unlocked for remote seq %d never sent for it" % (i + 1, seq))
        if seq in self.granted_remote:
            self.fail("remote unlock #%d applied twice" % seq)
        self.granted_remote.add(seq)
        exp, k = cmd[2], self.known()
        if exp is None:
            self.fail("unlock #%d without exp honoured: door %d opened" % (seq, i + 1))
        if k is None or k > exp:
            self.fail("unlock #%d honoured after its exp %d: box-knowable time %s"
                      % (seq, exp, k))

    def _check_valid(self, cid, what, role):
        """An authority valid at this moment: issued, its revoke not acknowledged, inside its
        window by the box-knowable time, a use left. The box-knowable time after a source
        set it back lies between the last one (known) and the highest (known_hi): a window
        fails only if it fails for both, or if the code expired while the box held it."""
        c = self.codes.get(cid)
        if c is None or c["role"] != role:
            self.fail("%s: no such code issued with role %d" % (what, role))
        if cid in self.acked_revoke:
            self.fail("%s after its revoke was acknowledged" % what)
        k, hi = self.known(), self.known_hi()
        if c["nb"] and (k is None or hi < c["nb"]):
            self.fail("%s before its window: box-knowable time %s < not_before %d"
                      % (what, k, c["nb"]))
        na = c["na"]
        if na and k is not None and (k > na or self.k_store.get(cid, hi) <= na < hi):
            self.fail("%s after it expired: box-knowable time %d (reached %d) > not_after %d "
                      "(box wall %d)" % (what, k, hi, na, self.box.wall(self.now)))
        if self.used.get(cid, 0) >= c["uses"]:
            self.fail("%s with no use left" % what)

    def _check_code_grant(self, i, cid, role, typed, wait, occupied):
        c = self.codes.get(cid)
        if typed is None or c is None or typed != cid:
            self.fail("door %d unlocked for code %d, which was not just typed" % (i + 1, cid))
        if wait > 0:
            self.fail("code %d accepted during a lockout (%d ms left)" % (cid, wait))
        self._check_valid(cid, "code %d accepted" % cid, c["role"])
        full = (occupied >> i) & 1
        if role != c["role"] or (role == ROLE_DRIVER and full) or (
                role == ROLE_RECIPIENT and not full):
            self.fail("code %d (role %d) opened door %d, occupied=%d" % (cid, role, i + 1, full))
        if c["comp"] and c["comp"] != i + 1:
            self.fail("code %d for compartment %d opened %d" % (cid, c["comp"], i + 1))

    def _check_codes(self):
        """Acknowledged revokes stay, applied adds stay (invariant 3, the code part); only
        when the store or the expectation changed."""
        codes = self.box.codes
        key = (id(codes), codes.changes, self._exp_ver, len(self.acked_revoke))
        if key == self._ids_key:
            return
        self._ids_key = key
        self.checks += 1
        ids = {struct.unpack_from("<I", rec)[0] for rec in codes.records()}
        back = ids & self.acked_revoke
        if back:
            self.fail("code %d present after its revoke was acknowledged" % min(back))
        wall = max(self.box.wall(self.now), self.known_hi())  # expired by one or the other
        for cid in self.expected - ids:
            c = self.codes[cid]
            if cid in self.revoke_sent or (c["na"] and wall > c["na"]):
                continue
            if self.used.get(cid, 0) < c["uses"]:
                self.fail("applied add of code %d lost without a store_corrupt saying the "
                          "store was emptied" % cid)

    # ---- actions -----------------------------------------------------------

    def act_issue(self):
        r = self.rng
        cid = self.next_code
        self.next_code += 1
        roles = (ROLE_DRIVER, ROLE_DRIVER, ROLE_RECIPIENT, ROLE_RECIPIENT, ROLE_OWNER)
        if "service" in self.f:
            roles += (ROLE_TECH,)
        role = r.choice(roles)
        comp = r.randint(1, self.comps) if role in (ROLE_DRIVER, ROLE_RECIPIENT) else \
            r.randint(0, self.comps)
        if role == ROLE_DRIVER and self.comps > 1 and r.random() < 0.3:
            comp = 0
        w = self.true_wall()
        nb = r.choice((0, 0, w - 3600, w + r.randint(60, 7200)))
        na = r.choice((0, w + r.randint(600, DAY_MS // 1000), w + r.randint(60, 900)))
        digits = "%06d" % r.randrange(10 ** 6)
        while any(c["digits"] == digits for c in self.codes.values()):
            digits = "%06d" % r.randrange(10 ** 6)
        if na and nb and na <= nb:
            na = nb + r.randint(600, 7200)
        uses = r.randint(1, 3)
        self.codes[cid] = dict(digits=digits, role=role, comp=comp, uses=uses, nb=nb, na=na)
        arr = HP.code_array(cid, HP.code_digest(self.code_key, digits), role, comp, uses, nb, na)
        self.send_cmd("add", code=arr)

    def act_revoke(self):
        if self.codes:
            cid = self.rng.choice(sorted(self.codes))
            self.revoke_sent.add(cid)
            self.send_cmd("revoke", id=cid)

    def _exp(self):
        r = self.rng
        if "noexp" in self.f and r.random() < 0.1:
            return None  # a buggy or old backend
        return self.true_wall() + r.choice((300, 300, 300, 60, 3600))

    def act_unlock(self):
        self.send_cmd("unlock", exp=self._exp(), comp=self.rng.randint(1, self.comps))

    def act_clear(self):
        self.send_cmd("clear_throttle", exp=self._exp())

    def act_state(self):
        self.send_cmd("state")

    def act_time(self):
        self.send_cmd("time", t=self.true_wall())

    def act_spoof(self):
        r = self.rng
        w = self.true_wall()
        if r.random() < 0.1:
            t = r.choice((1, 1_500_000_000, 4_200_000_000, 0xFFFFFFFF))
        else:
            t = w + r.choice((-r.randint(1, 59), -r.randint(61, 3600), -r.randint(3600, 30 * 86400),
                              r.randint(1, 3600), r.randint(3600, 2 * 86400),
                              r.randint(30 * 86400, 400 * 86400)))
        ok = self.set_time(t, TIME_NET)
        self.stats["spoofed time %s" % ("taken" if ok or ok is None else "refused")] += 1
        self.log("spoofed sntp: %+d s %s" % (t - w, "taken" if ok or ok is None else "refused"))

    def act_badack(self):
        """A buggy backend acks a seq the box created but never published, or a future one."""
        r = self.rng
        ob = self.box.outbox
        unsent = [ob.seq(i) for i in range(ob.pending())]
        unsent = [s for s in unsent if s not in self.published and s not in self.be.events]
        if unsent and r.random() < 0.7:
            s = r.choice(unsent)
        else:
            s = ob.next_seq + r.randint(0, 3)
        msg = HP.ack(self.be.current(), BOX_ID, [s])
        self.bad_acks[msg[1]] = [s]
        self._enqueue(self.down, msg)
        self.stats["buggy ack"] += 1
        self.log("buggy backend acks #%d" % s)

    def act_settings(self):
        r = self.rng
        s = {k: r.choice(SETTINGS[k]) for k in r.sample(sorted(SETTINGS), r.randint(1, 3))}
        if r.random() < 0.1:
            s[r.choice(("compartments", "lockout_base_ms"))] = 86_400_000  # refused: bad_value
        self.send_cmd("settings", set=s)

    def act_rotate(self):
        be = self.be
        s = be.cmd_seq + 1
        if be.pending is None:  # as Backend.rotate: a pending key is sent again
            be.pending = bytes(self.rng.randrange(256) for _ in range(32))
            be.pseqs = []
        be.pseq = s
        be.pseqs.append(s)
        self.send_cmd("rotate")

    def act_sync(self):
        self.sync_wanted = True

    def sync(self):
        """A full sync of the codes the backend holds live: not revoked, not expired, uses
        left (the world's count: a backend that has heard every use)."""
        self.sync_wanted = False
        self.sync_next = self.clock + 300_000
        w = self.true_wall()
        arrs = []
        for cid in sorted(self.codes):
            c = self.codes[cid]
            left = c["uses"] - self.used.get(cid, 0) - (cid in self.grant_of)
            if cid in self.revoke_sent or left <= 0 or (c["na"] and c["na"] < w):
                continue
            arrs.append(HP.code_array(cid, HP.code_digest(self.code_key, c["digits"]), c["role"],
                                      c["comp"], left, c["nb"], c["na"]))
        sid = self.be.cmd_seq + 1
        self.send_cmd("sync_begin", sync=sid, count=len(arrs), digest=HP.set_digest(arrs).hex())
        parts = [arrs[i:i + HP.SYNC_PART] for i in range(0, len(arrs), HP.SYNC_PART)]
        for k, part in enumerate(parts):
            self.send_cmd("sync_part", sync=sid, part=k, codes=part)
        end = self.send_cmd("sync_end", sync=sid, parts=len(parts))
        self.sync_sets[end] = [a[0] for a in arrs]
        self.sync_end = end

    def press(self, ch, typed=None):
        """One key at the keypad, checked; in service mode the world follows the number."""
        box = self.box
        svc = None
        if box.service_code >= 0:
            if "0" <= ch <= "9":
                self.svc_num = (self.svc_num * 10 + ord(ch) - 48) % 100
            elif ch == "#":
                svc, self.svc_num = self.svc_num, 0
        wait = box.throttle.check(self.now)
        occupied = box.occupied
        svc0 = box.service_code
        before = self._doors()
        box.key(ord(ch), self.now)
        self.after_input(before, typed=typed, wait=wait, occupied=occupied, svc=svc)
        if svc0 < 0 <= box.service_code:  # service mode entered: by a valid technician code
            cid = box.service_code
            self.svc_num = 0
            if typed != cid:
                self.fail("service mode entered for code %d, which was not just typed" % cid)
            if wait > 0:
                self.fail("service mode entered during a lockout (%d ms left)" % wait)
            self._check_valid(cid, "technician code %d entered service mode" % cid, ROLE_TECH)
            self.reset_ok = True

    def act_type(self):
        r = self.rng
        if self.box.service_code >= 0 and r.random() < 0.7:
            return self.act_service()
        if self.codes and r.random() < 0.88:
            ids = sorted(self.codes)
            cid = r.choice(ids[-4:] if r.random() < 0.7 else ids)  # mostly a recent code
            digits = self.codes[cid]["digits"]
        else:
            cid, digits = None, "%06d" % r.randrange(10 ** 6)
            for k, c in self.codes.items():
                if c["digits"] == digits:
                    cid = k
        if cid is not None:
            self.reset_ok = True  # a right code refunds and resets the count when saved
        self.log("keypad: %s (code %s)" % (digits, cid))
        for ch in digits:
            self.press(ch, cid)
            self.clock += r.randint(150, 600)

    def act_service(self):
        r = self.rng
        if r.random() < 0.15:
            keys = "*"
        else:
            n = r.randint(0, self.comps + 1) if r.random() < 0.2 else r.randint(1, self.comps)
            keys = "%d#" % n
        self.log("service keys: %s" % keys)
        for ch in keys:
            self.press(ch)
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

    def _idle(self):
        box = self.box
        for i, d in enumerate(box.doors):
            if not d.at_rest(self.now) or self.phys[i]:
                return False
        return box.entry.count == 0 and box.service_code < 0

    def step(self):
        r = self.rng
        self.steps += 1
        k = r.random() * self._weights[-1]
        act = self._acts[next(i for i, w in enumerate(self._weights) if k < w)]
        cut = "power" in self.f and r.random() < 0.06
        box = self.box
        th0 = box.throttle
        fails0, wait0, clock0 = th0.failures, th0.check(self.now), self.clock
        thr0 = tuple(box.cfg[k] for k in THROTTLE_CFG)
        self.reset_ok = False
        if cut:
            n = r.randint(0, 400)
            self.storage.cut_after(n)
            self.log("power will fail after %d more bytes" % n)
        try:
            act()
            self.advance(r.randint(20, 400))
            if self.remote.restart_pending and self._idle():  # new settings: as app._build
                self.log("settings saved: the core restarts")
                self.stats["core restarted"] += 1
                self.boot(rebuild=True)
        except PowerCut:
            self.reboot()
            th = self.box.throttle
            state_hurt = self.damaged & {"state.0", "state.1"}
            if th.failures < fails0 and not self.reset_ok and not state_hurt:
                self.fail("power cut reset the throttle: failures %d -> %d"
                          % (fails0, th.failures))
            left = th.check(self.now)
            same = thr0 == tuple(self.box.cfg[k] for k in THROTTLE_CFG)
            if (wait0 > 0 and left < wait0 - (self.clock - clock0) - 1000 and not self.reset_ok
                    and same and not state_hurt):
                self.fail("power cut shortened a lockout: %d ms left, expected ~%d"
                          % (left, wait0 - (self.clock - clock0)))
        finally:
            self.storage.budget = -1
        self.checks += 1
        if self._late is not None:
            self.fail(self._late)
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
            if self.shadow is not None:
                self.shadow.close()  # no SQLite handle left to the garbage collector
        return self

    def heal(self):
        """Invariant 4: with a perfect network, every event created reaches the ledger once,
        or a store_corrupt event that did reports its loss."""
        self.healing = True
        self.outage_until = 0
        self.log("network heals")
        for q in (self.down, self.up):
            for k, (t, n, m) in enumerate(q):
                q[k] = (self.clock, n, m)
        for _ in range(300):
            self.advance(31000)
            if self.box.outbox.pending() == 0 and not self.up and not self.down:
                break
        if self._late is not None:
            self.fail(self._late)
        be = self.be
        if self.box.outbox.pending():
            self.fail("%d events still pending after healing (backend key_gen %d, box %d)"
                      % (self.box.outbox.pending(), be.gen, self.remote.key_gen))
        if be.gen != self.remote.key_gen:
            self.fail("after healing the backend holds key_gen %d, the box %d"
                      % (be.gen, self.remote.key_gen))
        self.checks += 1
        reports = [s for s, e in self.created.items()
                   if e[0] == STORE_CORRUPT and e[3] & 0xFF == FILE_OUTBOX and s in be.events]
        reported = max(reports) if reports else 0
        stored = be.events
        for seq, (kind, comp, cid, arg, t) in self.created.items():
            e = stored.get(seq)
            if e is None:
                if seq not in self.dropped and seq >= reported and seq not in self.acked_wrongly \
                        and seq not in self.reverted:
                    self.fail("event #%d %s never reached the ledger and no store_corrupt "
                              "reported its loss" % (seq, events.NAMES[kind]))
                continue
            if (e.type, e.comp, e.id, e.arg, e.t) != (events.NAMES[kind], comp, cid, arg, t):
                self.fail("event #%d differs in the ledger: %r" % (seq, e))
        for seq in stored:
            if seq not in self.created:
                self.fail("ledger holds event #%d the box never created" % seq)


def run_seed(seed, days=2, faults=True, box_factory=Box, shadow=False):
    return World(seed, days, faults, box_factory, shadow).run()


def _run_range(args):
    start, n, days, faults, verbose = args
    tot = [0, 0, 0, 0, 0, 0]  # seeds, steps, checks, cuts, damages, events
    stats = Counter()
    for seed in range(start, start + n):
        try:
            w = run_seed(seed, days, faults)
        except InvariantError as e:
            return tot, stats, str(e)
        tot = [tot[0] + 1, tot[1] + w.steps, tot[2] + w.checks, tot[3] + w.cuts,
               tot[4] + w.damages, tot[5] + len(w.created)]
        stats.update(w.stats)
        if verbose:
            print("seed %d: %d steps, %d checks, %d power cuts, %d files damaged, %d events"
                  % (seed, w.steps, w.checks, w.cuts, w.damages, len(w.created)), flush=True)
    return tot, stats, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--days", type=float, default=2)
    ap.add_argument("--faults", default="all",
                    help="comma-separated subset of: %s (or all, none)" % ", ".join(FAULTS))
    ap.add_argument("--jobs", type=int, default=1, help="processes (seeds split in ranges)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    faults = (True if a.faults == "all" else () if a.faults == "none"
              else tuple(x for x in a.faults.split(",") if x))
    t0 = time.perf_counter()
    jobs = max(1, min(a.jobs, a.seeds))
    chunks, k = [], a.start
    for j in range(jobs):
        n = a.seeds // jobs + (1 if j < a.seeds % jobs else 0)
        chunks.append((k, n, a.days, faults, a.verbose))
        k += n
    if jobs == 1:
        results = [_run_range(chunks[0])]
    else:
        import multiprocessing
        with multiprocessing.Pool(jobs) as pool:
            results = pool.map(_run_range, chunks)
    tot = [sum(x) for x in zip(*(r[0] for r in results))]
    dt = time.perf_counter() - t0
    for _, _, err in results:
        if err:
            print(err)
    if a.verbose:
        stats = sum((r[1] for r in results), Counter())
        for k in sorted(stats):
            print("%8d  %s" % (stats[k], k))
    days = tot[0] * a.days
    print("%d seeds, %g box-days, %d steps, %d invariant checks, %d power cuts, %d files "
          "damaged, %d events in %.1f s: %.2f box-days/s (%.2f per process)"
          % (tot[0], days, tot[1], tot[2], tot[3], tot[4], tot[5], dt, days / dt,
             days / dt / jobs))
    return 1 if any(err for _, _, err in results) else 0


if __name__ == "__main__":
    sys.exit(main())
