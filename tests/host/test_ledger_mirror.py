# How the ledger follows what a box holds (host_tools/backend/sdk/mirror.py): the uses codes have
# left, as the box counts them; revoked codes that may still be on the box; full syncs sent
# again. SQLite only: events are handed to the ledger as a consumer would store them.
import itertools
import random
import shutil
import sqlite3
import time

import pytest

from host_tools.backend import crypto
from host_tools.backend import protocol as p
from host_tools.backend.sdk import Backend, Ledger

RECIPIENT, DRIVER, OWNER, TECH, REMOTE = 1, 2, 3, 4, 5
NONE = p.UNLIMITED  # uses left 0xFFFF: nothing to count
OP = {name: p.OPS.index(name) for name in p.OPS[1:]}


@pytest.fixture
def ledger(tmp_path):
    lg = Ledger(tmp_path / "ledger.db")
    yield lg
    lg.close()


def arg(low, left):
    """An opened/not_opened arg: role or outcome, and the code's uses left on the box."""
    return low | left << 8


class Box:
    """A box's side of the story: events with the box's seqs, handed to the ledger."""

    def __init__(self, ledger, box_id="A", compartments=1):
        self.lg, self.id = ledger, box_id
        self.be = Backend(ledger)
        self.be.register(box_id, compartments=compartments)
        self.seq = 0

    def issue(self, role="recipient", comp=1, uses=1, **kw):
        return self.be.issue(self.id, role, comp=comp, uses=uses, **kw)

    def ev(self, kind, comp=0, id_=0, arg=0, t=0, seq=None):
        self.seq += 1
        return p.Event(self.id, self.seq if seq is None else seq, kind, comp, id_, arg, t)

    def feed(self, *evs):
        for e in evs:
            self.lg.record_event(e, "c")

    def uses(self, code_id):
        (u, st), = self.lg.db.execute("SELECT uses, status FROM codes WHERE box=? AND id=?",
                                      (self.id, code_id)).fetchall()
        return u, st

    def command(self, op, **f):
        with self.lg.tx() as db:
            return self.lg.next_command(db, self.id, op, **f)[0]


# ---- uses: the count of the newest opened/not_opened that carries one -------------------

def test_opened_sets_the_uses_the_box_reports_and_pickup_or_deposit_takes_none(ledger):
    box = Box(ledger, compartments=2)
    driver = box.issue("driver", comp=1, uses=1).code_id
    recipient = box.issue(comp=1, uses=2).code_id
    box.feed(box.ev("opened", 1, driver, arg(DRIVER, 0)), box.ev("closed", 1, driver, DRIVER),
             box.ev("deposit", 1, driver))
    assert box.uses(driver) == (0, "used")
    box.feed(box.ev("opened", 1, recipient, arg(RECIPIENT, 1)),
             box.ev("closed", 1, recipient, RECIPIENT), box.ev("pickup", 1, recipient))
    assert box.uses(recipient) == (1, "active")  # not 0: the pickup counts no second use
    box.feed(box.ev("pickup", 1, recipient), box.ev("deposit", 1, recipient))
    assert box.uses(recipient) == (1, "active")


def test_a_count_older_than_the_one_applied_changes_nothing(ledger):
    box = Box(ledger, compartments=1)
    code = box.issue("owner", comp=1, uses=5).code_id
    older = box.ev("opened", 1, code, arg(OWNER, 4))
    newer = box.ev("not_opened", 1, code, arg(0, 3))
    box.feed(newer)
    assert box.uses(code) == (3, "active")
    box.feed(older)  # came late (another consumer, a resend): the box's order wins
    assert box.uses(code) == (3, "active")
    assert ledger.db.execute("SELECT uses_seq FROM codes WHERE id=?", (code,)).fetchone() == (
        newer.seq,)


def test_the_uses_come_out_the_same_whatever_order_the_events_arrive_in(tmp_path):
    # one owner code for all three doors (5 uses), a recipient's (2 uses) on door 1
    def story(owner, rec):
        return [("opened", 1, owner, arg(OWNER, 4)), ("opened", 2, owner, arg(OWNER, 4)),
                ("closed", 1, owner, OWNER), ("closed", 2, owner, OWNER),
                ("not_opened", 3, owner, arg(4, 4)),         # use 1: shared, door 3 given up
                ("not_opened", 1, owner, arg(4, 3)), ("not_opened", 2, owner, arg(4, 3)),
                ("not_opened", 3, owner, arg(4, 3)),         # use 2: no door opened, shared
                ("not_opened", 1, rec, arg(0, 2)),           # given back: still 2
                ("opened", 1, rec, arg(RECIPIENT, 1)), ("closed", 1, rec, RECIPIENT),
                ("pickup", 1, rec, 0),
                ("opened", 2, owner, arg(OWNER, 2)), ("closed", 2, owner, OWNER)]  # use 3
    rnd = random.Random(7)
    for run in range(8):
        lg = Ledger(tmp_path / ("l%d.db" % run))
        box = Box(lg, compartments=3)
        owner = box.issue("owner", comp=0, uses=5).code_id
        rec = box.issue(comp=1, uses=2).code_id
        evs = [box.ev(k, c, i, a) for k, c, i, a in story(owner, rec)]
        if run:
            rnd.shuffle(evs)
        box.feed(*evs)
        assert (box.uses(owner), box.uses(rec)) == ((2, "active"), (1, "active")), \
            [e.seq for e in evs]
        lg.close()


def test_one_owner_use_that_opens_every_door_is_one_use(ledger):
    box = Box(ledger, compartments=3)
    code = box.issue("owner", comp=0, uses=2).code_id
    # every door reports the same count: the one use the accept spent
    box.feed(*[box.ev("opened", c, code, arg(OWNER, 1)) for c in (1, 2, 3)],
             *[box.ev("closed", c, code, OWNER) for c in (2, 1, 3)])
    assert box.uses(code) == (1, "active")
    # the next use: one door opened, the two others given up (shared: nothing given back)
    box.feed(box.ev("not_opened", 1, code, arg(4, 0)), box.ev("opened", 2, code, arg(OWNER, 0)),
             box.ev("not_opened", 3, code, arg(4, 0)), box.ev("closed", 2, code, OWNER))
    assert box.uses(code) == (0, "used")


@pytest.mark.parametrize("outcome, left, want", [
    (0, 1, (1, "active")),   # never opened, the use given back
    (4, 0, (0, "used")),     # never opened, nothing given back (it was shared)
    (1, 0, (0, "used")),     # found closed after a power cut, the use stays spent
    (3, 1, (1, "active")),   # found closed after a power cut, the use never spent
    (4, 3, (3, "active")),   # whatever the outcome, the count is the box's
])
def test_not_opened_sets_the_count_it_carries_whatever_its_outcome(ledger, outcome, left, want):
    box = Box(ledger, compartments=1)
    code = box.issue(comp=1, uses=1).code_id
    box.feed(box.ev("not_opened", 1, code, arg(outcome, left)))
    assert box.uses(code) == want


def test_a_count_of_0_then_a_newer_one_above_it_makes_the_code_active_again(ledger):
    box = Box(ledger, compartments=1)
    code = box.issue(comp=1, uses=1).code_id
    # accepted, power cut before the use was written: 0 left at the opening...
    box.feed(box.ev("opened", 1, code, arg(RECIPIENT, 0)))
    assert box.uses(code) == (0, "used")
    # ...the use given back on the box (never opened): active again
    box.feed(box.ev("not_opened", 1, code, arg(0, 1)))
    assert box.uses(code) == (1, "active")


def test_remote_unlocks_change_no_uses_even_when_their_seq_is_a_code_id(ledger):
    box = Box(ledger, compartments=1)
    box.issue(comp=1)
    box.issue(comp=1)
    unlock = box.command("unlock", comp=1, exp=2 ** 31)   # seq 3
    code = box.issue(comp=1, uses=2).code_id               # id 3: the same number
    assert unlock == code == 3
    box.feed(box.ev("result", OP["unlock"], unlock, 0),
             box.ev("opened", 1, unlock, arg(REMOTE, NONE)), box.ev("closed", 1, unlock, REMOTE))
    box.feed(box.ev("not_opened", 1, unlock, arg(4, NONE)),    # a remote unlock never opened
             box.ev("boot", 0, 0, 2), box.ev("not_opened", 1, unlock, arg(1, NONE)))
    assert box.uses(code) == (2, "active")
    # a remote `opened` is never read as a count, even one a box should not send
    box.feed(box.ev("opened", 1, unlock, arg(REMOTE, 0)))
    assert box.uses(code) == (2, "active")
    box.feed(box.ev("opened", 1, code, arg(RECIPIENT, 1)))   # the code itself: counted
    assert box.uses(code) == (1, "active")


def test_an_unlimited_code_and_service_mode_change_no_uses(ledger):
    box = Box(ledger, compartments=2)
    unlimited = box.issue("owner", comp=0, uses=p.UNLIMITED).code_id
    tech = box.issue("tech", comp=0, uses=3).code_id
    box.feed(box.ev("opened", 1, unlimited, arg(OWNER, NONE)),
             box.ev("closed", 1, unlimited, OWNER),
             box.ev("not_opened", 2, unlimited, arg(4, NONE)))
    assert box.uses(unlimited) == (p.UNLIMITED, "active")
    box.feed(box.ev("service", 0, tech, 1), box.ev("opened", 1, tech, arg(TECH, NONE)),
             box.ev("closed", 1, tech, TECH), box.ev("not_opened", 2, tech, arg(4, NONE)),
             box.ev("service", 0, tech, 0))
    assert box.uses(tech) == (3, "active")


def test_a_count_never_brings_a_revoked_code_back(ledger):
    box = Box(ledger, compartments=1)
    code = box.issue(comp=1, uses=2).code_id
    with pytest.raises(Exception, match="broker"):
        box.be.revoke("A", code)
    box.feed(box.ev("opened", 1, code, arg(RECIPIENT, 1)))  # used before the revoke arrived
    assert box.uses(code) == (1, "revoked")
    box.feed(box.ev("pickup", 1, code))
    assert box.uses(code) == (1, "revoked")
    box.feed(box.ev("opened", 1, code, arg(RECIPIENT, 0)))
    assert box.uses(code) == (0, "revoked")


def test_events_of_a_code_the_ledger_does_not_know_are_stored_and_change_nothing(ledger):
    box = Box(ledger, compartments=1)
    code = box.issue(comp=1, uses=2).code_id
    assert box.lg.record_event(box.ev("opened", 1, 999, arg(RECIPIENT, 0)), "c")
    assert box.uses(code) == (2, "active")


def test_a_ledger_made_before_the_count_gets_its_column_and_keeps_working(tmp_path):
    path = tmp_path / "old.db"
    Ledger(path).close()
    db = sqlite3.connect(path)  # as an older ledger had it: `spent`, no `uses_seq`
    db.execute("ALTER TABLE codes DROP COLUMN uses_seq")
    db.execute("ALTER TABLE codes ADD COLUMN spent INTEGER NOT NULL DEFAULT 0")
    db.commit()
    db.close()
    lg = Ledger(path)
    try:
        box = Box(lg, compartments=1)
        code = box.issue("owner", comp=1, uses=3).code_id
        box.feed(box.ev("not_opened", 1, code, arg(1, 1), seq=5),
                 box.ev("opened", 1, code, arg(OWNER, 2), seq=4))
        assert box.uses(code) == (1, "active")
        assert [r[1] for r in lg.db.execute("PRAGMA table_info(codes)")].count("uses_seq") == 1
    finally:
        lg.close()


# ---- a firmware box's own events, in any order, give the ledger the box's counts ------------

T0 = 1_795_600_000


class Firmware:
    """The firmware's box core (parcelbox.Box and Remote, flash in RAM) for a ledger's box:
    codes reach it as the ledger's sealed add commands; its events are read off its outbox."""

    def __init__(self, lg, box_id, key, compartments):
        from memflash import MemStorage

        self.lg, self.id, self.key, self.n = lg, box_id, key, compartments
        self.st, self.now = MemStorage(), 0
        self.boot()

    def boot(self):
        from parcelbox.box import Box as Core
        from parcelbox.remote import Remote, stored_settings

        self.box = Core(self.st, self.key, stored_settings(self.st, {"compartments": self.n}),
                        self.now)
        self.box.set_time(T0 + self.now // 1000, self.now)
        self.remote = Remote(self.box, self.id, self.key)
        for c in range(1, self.n + 1):
            self.door(c, False)

    def power_cut(self):
        self.st = self.st.reboot()
        self.now += 5000
        self.boot()

    def advance(self, ms):
        end = self.now + ms
        while self.now < end:
            self.now += 10
            self.box.tick(self.now)

    def door(self, comp, is_open):
        for _ in range(2):
            self.box.door(comp, is_open, self.now)
            self.advance(60)

    def issue(self, role, comp, uses):
        with self.lg.tx() as db:
            code, arr = self.lg.new_code(db, self.id, p.ROLES[role], comp, uses, 0, 0,
                                         time.time())
            _, t, payload = self.lg.next_command(db, self.id, "add", code=arr)
        self.remote.receive(t, payload, self.now)
        return code, arr[0]

    def type(self, code):
        for ch in code:
            self.box.key(ord(ch), self.now)
            self.advance(200)
        self.advance(1000)

    def visit(self, code, *comps):
        """Type `code`, open and close `comps`; the rest of its grant runs out."""
        self.type(code)
        for c in comps:
            self.door(c, True)
        for c in comps:
            self.door(c, False)
        self.advance(30000)

    def events(self):
        ob = self.box.outbox
        return [p.Event(self.id, s, p.EVENTS[k], c, i, a, t)
                for s, k, c, i, a, t in (ob.get(j) for j in range(ob.pending()))]

    def uses(self, code_id):
        s = self.box.codes.slot_of(code_id)
        return self.box.codes.fields(s)[3] if s >= 0 else None


def test_a_firmware_boxs_events_in_any_order_mirror_its_uses_exactly(tmp_path):
    lg = Ledger(tmp_path / "base.db")
    key = lg.add_box("A", compartments=3)
    fw = Firmware(lg, "A", key, 3)
    owner, oid = fw.issue("owner", 0, 6)
    driver, did = fw.issue("driver", 1, 1)
    rec, rid = fw.issue("recipient", 1, 3)
    alone, aid = fw.issue("owner", 2, 4)
    fw.visit(owner, 1, 2)        # one use for every door: 1 and 2 opened, 3 given up (shared)
    fw.visit(owner)              # one use, no door opened: shared, not given back
    fw.visit(driver, 1)          # deposit
    fw.visit(rec)                # never opened: given back
    fw.visit(rec, 1)             # pickup
    fw.visit(alone)              # never opened: given back
    fw.visit(alone, 2)
    fw.type(alone)               # the power goes before the door opens: the use stays spent
    fw.power_cut()
    fw.advance(30000)
    evs = fw.events()
    kinds = [(e.type, e.arg & 0xFF) for e in evs if e.type == "not_opened"]
    assert {("not_opened", 0), ("not_opened", 4), ("not_opened", 1)} <= set(kinds), kinds
    want = {cid: fw.uses(cid) for cid in (oid, did, rid, aid)}
    assert want == {oid: 4, did: 0, rid: 2, aid: 2}
    lg.close()
    rnd = random.Random(3)
    for run in range(6):
        path = tmp_path / ("l%d.db" % run)
        shutil.copy(tmp_path / "base.db", path)
        lg = Ledger(path)
        order = list(evs)
        if run == 1:
            order.reverse()
        elif run:
            rnd.shuffle(order)
        for e in order:
            lg.record_event(e, "c%d" % (e.seq % 2))
        got = {c["id"]: (c["uses"], c["status"]) for c in lg.codes("A")}
        assert got == {cid: (u, "used" if u == 0 else "active") for cid, u in want.items()}, \
            [e.seq for e in order]
        lg.close()


# ---- a revoked code's value, until the box confirms it gone --------------------------------

def _values(monkeypatch, *codes):
    it = iter(codes)
    monkeypatch.setattr(crypto, "new_code", lambda n: next(it))


def test_an_add_that_lands_after_the_revoke_keeps_the_value_taken(ledger, monkeypatch):
    box = Box(ledger)
    _values(monkeypatch, "111111", "111111", "222222", "111111", "333333")
    first = box.issue()
    with pytest.raises(Exception, match="broker"):
        box.be.revoke("A", first.code_id)
    revoke = ledger.box("A").cmd_seq
    # the revoke overtook the add: unknown_code, then the add lands and puts the code back
    box.feed(box.ev("result", OP["revoke"], revoke, 1), box.ev("result", OP["add"], first.cmd_seq, 0))
    assert box.issue().code == "222222"
    assert box.issue().code == "333333"  # still: 111111 is on the box


def test_a_sync_taken_after_the_revoke_confirms_it_and_one_taken_before_does_not(ledger, monkeypatch):
    box = Box(ledger)
    _values(monkeypatch, "111111", "111111", "222222", "111111")
    first = box.issue()
    box.feed(box.ev("result", OP["add"], first.cmd_seq, 0))
    with pytest.raises(Exception, match="broker"):
        box.be.sync("A")                               # its set has the code
    before = ledger.box("A").cmd_seq
    with pytest.raises(Exception, match="broker"):
        box.be.revoke("A", first.code_id)
    revoke = ledger.box("A").cmd_seq
    box.feed(box.ev("result", OP["revoke"], revoke, 0),
             box.ev("result", OP["sync_end"], before, 0))  # back on the box
    assert box.issue().code == "222222"
    with pytest.raises(Exception, match="broker"):
        box.be.sync("A")
    box.feed(box.ev("result", OP["sync_end"], ledger.box("A").cmd_seq, 0))
    assert box.issue().code == "111111"


def test_an_add_still_on_its_way_keeps_the_value_taken_until_the_box_is_past_it(ledger, monkeypatch):
    box = Box(ledger)
    _values(monkeypatch, "111111", "111111", "222222", "111111")
    first = box.issue()  # its add never answered: lost, or still queued for the box
    with pytest.raises(Exception, match="broker"):
        box.be.revoke("A", first.code_id)
    box.feed(box.ev("result", OP["revoke"], ledger.box("A").cmd_seq, 1))  # unknown_code
    assert box.issue().code == "222222"
    # the box's window is more than 32 past the add: it can never apply any more
    ledger.set_state("A", {"digest": "00" * 16, "t": 0, "cmd_seq": first.cmd_seq + 33})
    assert box.issue().code == "111111"


def test_an_unconfirmed_revoke_goes_again_before_the_next_add_at_most_once_a_minute(
        ledger, monkeypatch):
    import time as _time
    box = Box(ledger)
    code = box.issue().code_id
    with pytest.raises(Exception, match="broker"):
        box.be.revoke("A", code)

    def ops():
        return [r[0] for r in ledger.db.execute("SELECT op FROM commands ORDER BY seq")]
    box.issue()
    assert ops() == ["add", "revoke", "add"]  # sent a moment ago: not again yet
    now = _time.time()
    monkeypatch.setattr(_time, "time", lambda: now + 61)
    box.issue()
    assert ops() == ["add", "revoke", "add", "revoke", "add"]  # first, then the add
    monkeypatch.setattr(_time, "time", lambda: now + 61 + 119)
    box.issue()
    assert ops()[-1] == "add" and ops().count("revoke") == 2  # doubled: 120 s now
    revokes = [r[0] for r in ledger.db.execute("SELECT seq FROM commands WHERE op='revoke'")]
    box.feed(box.ev("result", OP["add"], 1, 0), box.ev("result", OP["revoke"], revokes[-1], 0))
    monkeypatch.setattr(_time, "time", lambda: now + 86400)
    box.issue()
    assert ops().count("revoke") == 2  # confirmed: never again
    assert ledger.db.execute("SELECT gone FROM codes WHERE id=?", (code,)).fetchone()[0] == 1


def test_a_code_marked_revoked_without_a_revoke_sent_keeps_its_value_taken(ledger, monkeypatch):
    box = Box(ledger)
    _values(monkeypatch, "111111", "111111", "222222")
    first = box.issue()
    with ledger.tx() as db:
        db.execute("UPDATE codes SET status='revoked' WHERE id=?", (first.code_id,))
    assert box.issue().code == "222222"  # the box was never told: it still holds 111111


# ---- full syncs the box needs again -----------------------------------------------------

def test_a_sync_answered_sync_order_is_sent_again(ledger):
    box = Box(ledger)
    box.issue()
    with ledger.tx() as db:
        first = ledger.sync_commands(db, "A", 0)
    assert ledger.take_resync("A") == [] and not ledger.sync_due("A")
    box.feed(box.ev("result", OP["sync_end"], first[-1][0], 6))
    assert ledger.sync_due("A")
    again = ledger.take_resync("A")
    ops = [ledger.command_body("A", s)["op"] for s, _, _ in again]
    assert ops == ["sync_begin", "sync_part", "sync_end"] and again[0][0] > first[-1][0]
    assert ledger.command_body("A", again[0][0])["sync"] == again[0][0]
    assert not ledger.sync_due("A") and ledger.take_resync("A") == []


@pytest.mark.parametrize("op", ["add", "revoke"])
def test_an_add_or_revoke_the_box_refused_as_late_brings_a_full_sync(ledger, op):
    # the box refuses an add or revoke older than one it applied (sync_order): the set it
    # should hold then comes as a full sync, even to a box that was never synced
    box = Box(ledger)
    box.issue()
    assert not ledger.sync_due("A")
    box.feed(box.ev("result", OP[op], ledger.box("A").cmd_seq, 6))
    assert ledger.sync_due("A")
    ops = [ledger.command_body("A", s)["op"] for s, _, _ in ledger.take_resync("A")]
    assert ops[0] == "sync_begin" and ops[-1] == "sync_end"


def test_only_the_latest_sync_is_sent_again(ledger):
    box = Box(ledger)
    with ledger.tx() as db:
        old = ledger.sync_commands(db, "A", 0)
        ledger.sync_commands(db, "A", 0)
    box.feed(box.ev("result", OP["sync_end"], old[-1][0], 6))  # a newer one superseded it
    assert not ledger.sync_due("A")


@pytest.mark.parametrize("op", ["add", "revoke"])
def test_a_sync_that_undid_a_newer_add_or_revoke_is_sent_again_whatever_the_arrival_order(
        tmp_path, op):
    for n, order in enumerate(itertools.permutations(range(2))):
        lg = Ledger(tmp_path / ("l%d.db" % n))
        box = Box(lg)
        old = box.issue()
        with lg.tx() as db:
            sync = lg.sync_commands(db, "A", 0)
        if op == "add":
            seq = box.issue().cmd_seq
        else:
            with pytest.raises(Exception, match="broker"):
                box.be.revoke("A", old.code_id)
            seq = lg.box("A").cmd_seq
        # the box applied the newer command before the sync's end (its event seq is lower)
        evs = [box.ev("result", OP[op], seq, 0, seq=10), box.ev("result", OP["sync_end"],
                                                                 sync[-1][0], 0, seq=11)]
        box.feed(*[evs[i] for i in order])
        assert lg.sync_due("A"), order
        lg.close()


def test_a_sync_applied_before_a_newer_add_needs_nothing_more(ledger):
    box = Box(ledger)
    with ledger.tx() as db:
        sync = ledger.sync_commands(db, "A", 0)
    seq = box.issue().cmd_seq
    box.feed(box.ev("result", OP["sync_end"], sync[-1][0], 0),
             box.ev("result", OP["add"], seq, 0))
    assert not ledger.sync_due("A")


def test_a_code_store_that_failed_closed_gets_a_full_sync(ledger):
    box = Box(ledger)
    box.feed(box.ev("store_corrupt", 0, 0, 1 | 2 << 8))  # a torn tail: the codes are there
    assert not ledger.sync_due("A")
    box.feed(box.ev("store_corrupt", 0, 0, 1 | 8 << 8))  # went back in time: EMPTY
    assert ledger.sync_due("A")


def test_automatic_syncs_stop_after_three_in_a_row_until_one_takes_or_an_operator_syncs(ledger):
    box = Box(ledger)
    box.feed(box.ev("store_corrupt", 0, 0, 1 | 1 << 8))
    for _ in range(3):
        msgs = ledger.take_resync("A")
        assert msgs
        box.feed(box.ev("result", OP["sync_end"], msgs[-1][0], 6))
    assert ledger.take_resync("A") is None and ledger.sync_due("A")
    with pytest.raises(Exception, match="broker"):
        box.be.sync("A")  # the operator's: recorded, counted afresh
    end = ledger.box("A").cmd_seq
    box.feed(box.ev("result", OP["sync_end"], end, 6))
    assert ledger.take_resync("A")

