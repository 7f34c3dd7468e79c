"""Flash wear: bytes written per event, per code added, per pickup, per full sync.

The firmware core and its wire end (Box + Remote, the ESP32's code) run on CPython
over `CountingStorage`, the firmware's own Storage with every write counted at the
interface; commands and acks are real sealed messages from host_tools.backend.protocol. The
store holds 1,000 codes throughout, so journal compactions (which write the whole
snapshot) are paid at their real size. Bytes written are the same on any interpreter.
"""

from __future__ import annotations

import os
import tempfile

from bench.common import Row
from bench.flashcount import PARTITION, CountingStorage, years
from host_tools.backend import protocol as HP
from host_tools.backend.crypto import code_digest
from parcelbox import events, feedback
from parcelbox.box import Box
from parcelbox.outbox import Outbox
from parcelbox.remote import Remote

TITLE = "Flash wear (bytes at the storage interface)"

KEY = bytes(range(32))
BOX = "bench-flash"
T0 = 1_795_600_000
EVENTS_PER_DAY = 200
TARGET_B_PER_EVENT = 64
TARGET_YEARS = 10


def _code(i: int) -> str:
    return "%08d" % (20_000_000 + i * 7919)


class Rig:
    """A one-door box with Box and Remote on counted flash, and a backend that acks."""

    def __init__(self, root: str, codes: int):
        self.st = CountingStorage(root)
        self.now = 0
        self.cmd_seq = 0
        self.online = False
        self.keys = HP.WireKeys.of(KEY)
        self.box = Box(self.st, KEY, {"code_len": 8, "max_codes": 2048}, self.now)
        self.box.set_time(T0, self.now)
        self.remote = Remote(self.box, BOX, KEY)
        self.door(False)
        self.sync(range(1, codes + 1))
        self.ack_all()

    def wire_code(self, i: int, role: int = 1, uses: int = 1) -> list:
        return HP.code_array(i, code_digest(KEY, _code(i)), role, 1, uses, 0, T0 + 86400 * 365)

    def send(self, op: str, **fields) -> None:
        self.cmd_seq += 1
        t, p = HP.command(self.keys, BOX, self.cmd_seq, op, **fields)
        self.remote.receive(t, p, self.now)
        seq, kind, comp, cid, arg, _ = self.box.outbox.get(self.box.outbox.pending() - 1)
        if kind != events.RESULT or cid != self.cmd_seq or arg != 0:
            raise RuntimeError(f"command {op} failed: event {events.NAMES[kind]} status {arg}")

    def sync(self, ids) -> None:
        codes = [self.wire_code(i) for i in ids]
        sid = self.cmd_seq + 1
        digest = HP.set_digest(codes).hex()
        self.send("sync_begin", sync=sid, count=len(codes), digest=digest)
        parts = [codes[k:k + HP.SYNC_PART] for k in range(0, len(codes), HP.SYNC_PART)]
        for k, part in enumerate(parts):
            self.send("sync_part", sync=sid, part=k, codes=part)
        self.send("sync_end", sync=sid, parts=len(parts))

    # Publish every pending event (8 in flight at a time) and ack what was published: the
    # box takes acks only for seqs it has sent. Publishing writes nothing to flash.
    def ack_all(self) -> int:
        ob = self.box.outbox
        if not self.online:
            self.remote.connected(self.now)
            self.online = True
        n = 0
        while ob.pending():
            while self.remote.poll(self.now) is not None:
                pass
            seqs = [ob.seq(i) for i in range(min(8, ob.pending()))]
            t, p = HP.ack(self.keys, BOX, seqs)
            self.remote.receive(t, p, self.now)
            if ob.pending() and ob.seq(0) == seqs[0]:
                raise RuntimeError("acked events still pending")
            n += len(seqs)
        return n

    def advance(self, ms: int) -> None:
        end = self.now + ms
        while self.now < end:
            self.now += 10
            self.box.tick(self.now)

    def door(self, is_open: bool) -> None:
        for _ in range(2):
            self.box.door(1, is_open, self.now)
            self.advance(60)

    def use(self, code: str, kind: int) -> None:
        for ch in code.encode():
            self.box.key(ch, self.now)
            self.advance(120)
        if self.box.player.take() != feedback.ACCEPTED:
            raise RuntimeError("code refused")
        self.door(True)
        self.door(False)
        self.advance(4000)  # past the solenoid's cooldown
        ob = self.box.outbox
        if not any(ob.get(i)[1] == kind for i in range(ob.pending())):
            raise RuntimeError(f"no {events.NAMES[kind]} event")


def _measure(rig: Rig, fn) -> tuple[int, float, int]:
    """(bytes, modelled erases, events) that fn() costs, its events acked."""
    b0, e0 = rig.st.snapshot()
    s0 = rig.box.outbox.next_seq
    fn()
    rig.ack_all()
    b1, e1 = rig.st.snapshot()
    return b1 - b0, e1 - e0, rig.box.outbox.next_seq - s0


def run(quick: bool = False) -> list[Row]:
    n_codes = 100 if quick else 1000
    n_cycles = 10 if quick else 300       # deposit + pickup cycles
    n_adds = 20 if quick else 420         # enough adds for 4 journal compactions
    n_events = 500 if quick else 20_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # 1. The outbox alone: add, ack (one A record per seq), compaction, amortised.
        os.mkdir(tmp + "/ob")
        st = CountingStorage(tmp + "/ob")
        ob = Outbox(st, 256)
        ob.load()
        b0 = st.total.bytes
        for i in range(n_events):
            ob.add(events.PICKUP, 1, i + 1, 0, T0 + i)
            if ob.pending() >= 8:              # the link keeps 8 in flight
                for s in [ob.seq(k) for k in range(ob.pending())]:
                    ob.ack(s)
        ob_bytes = (st.total.bytes - b0) / n_events

        os.mkdir(tmp + "/box")
        rig = Rig(tmp + "/box", n_codes)
        sync_b, sync_e, sync_ev = _measure(rig, lambda: rig.sync(range(1, n_codes + 1)))
        # Codes added one by one with add commands, each with its result event, acked.
        first = n_codes + 1
        add_b, add_e, add_ev = _measure(rig, lambda: [
            rig.send("add", code=rig.wire_code(i)) for i in range(first, first + n_adds)])
        # Each cycle: a driver deposits, a recipient picks up (one-time codes).
        drv = first + n_adds
        rig.send("add", code=rig.wire_code(drv, role=2, uses=0xFFFF))
        rig.ack_all()
        dep = [0, 0.0, 0]
        pick = [0, 0.0, 0]
        before = {k: v.bytes for k, v in rig.st.files.items()}
        for c in range(n_cycles):
            for acc, code, kind in ((dep, _code(drv), events.DEPOSIT),
                                    (pick, _code(1 + c % n_codes), events.PICKUP)):
                b, e, ev = _measure(rig, lambda: rig.use(code, kind))
                acc[0] += b
                acc[1] += e
                acc[2] += ev
        files = {k: v.bytes - before.get(k, 0) for k, v in rig.st.files.items()
                 if v.bytes != before.get(k, 0)}

    per_event = (dep[0] + pick[0]) / (dep[2] + pick[2])
    erases_per_event = (dep[1] + pick[1]) / (dep[2] + pick[2])
    y_bytes = years(per_day_bytes=per_event * EVENTS_PER_DAY)
    y_lfs = years(per_day_erases=erases_per_event * EVENTS_PER_DAY)
    day_note = (f"{n_cycles} deposit+pickup cycles, 1 door, {n_codes} codes stored: "
                f"{dep[2] + pick[2]} events, every file (state, codes journal and snapshot, "
                f"outbox) counted, acks and compactions included")
    rows += [
        Row("whole box, per event (deposit/pickup mix)", round(per_event, 1), "B/event",
            f"<= {TARGET_B_PER_EVENT} B/event", per_event <= TARGET_B_PER_EVENT, day_note,
            extra={"bytes_by_file": files, "events": dep[2] + pick[2]}),
        Row("of which the state file (state.0/state.1), per event",
            round((files.get("state.0", 0) + files.get("state.1", 0)) / (dep[2] + pick[2]), 1),
            "B/event", note="one state write per checked code, per grant, per close after a grant"),
        Row("outbox alone, per event (add + ack + compaction)", round(ob_bytes, 1), "B/event",
            note=f"{n_events} events, 256-event outbox, acked 8 at a time"),
        Row("per code added (add command, result event acked)", round(add_b / n_adds, 1),
            "B/code", note=f"{n_adds} adds onto {n_codes} codes; journal compactions "
                           f"(a {12 + 32 * n_codes + 4} B snapshot each) amortised"),
        Row("per pickup (type code, open, close, events acked)", round(pick[0] / n_cycles, 1),
            "B/pickup", note=f"{pick[2] / n_cycles:.1f} events per pickup"),
        Row("per deposit", round(dep[0] / n_cycles, 1), "B/deposit",
            note=f"{dep[2] / n_cycles:.1f} events per deposit"),
        Row(f"per full sync of {n_codes:,} codes (staged, applied, results acked)", sync_b,
            "B/sync", note=f"{sync_ev} result events; sync.bin staging + codes.bin snapshot"),
        Row(f"flash life at {EVENTS_PER_DAY} events/day, by bytes written", round(y_bytes),
            "years", f"> {TARGET_YEARS} years", y_bytes > TARGET_YEARS,
            f"{PARTITION // 1024} KB x 100,000 cycles / ({per_event:.1f} B x {EVENTS_PER_DAY}/day);"
            " ideal wear levelling, no filesystem overhead"),
        Row(f"flash life at {EVENTS_PER_DAY} events/day, LittleFS copy-on-write model",
            round(y_lfs, 1), "years", f"> {TARGET_YEARS} years", y_lfs > TARGET_YEARS,
            f"{erases_per_event:.2f} block erases per event: every synced append rewrites the "
            "file's 4 KB tail block; 384 blocks x 100,000 cycles (docs/performance.md section 5)"),
    ]
    return rows
