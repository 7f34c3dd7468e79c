# How the ledger follows what a box holds (host_tools/sdk/mirror.py): the uses codes spend,
# owner codes included; revoked codes that may still be on the box; full syncs sent again.
# SQLite only: events are handed to the ledger as a consumer would store them.
import itertools
import random

import pytest

from host_tools import crypto
from host_tools import protocol as p
from host_tools.sdk import Backend, Ledger
from host_tools.sdk import mirror

OWNER, RECIPIENT, REMOTE = 3, 1, 5
OP = {name: p.OPS.index(name) for name in p.OPS[1:]}


@pytest.fixture
def ledger(tmp_path):
    lg = Ledger(tmp_path / "ledger.db")
    yield lg
    lg.close()


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


# ---- owner codes spend their uses in the ledger too --------------------------------------

def test_each_opening_of_a_one_compartment_owner_code_spends_a_use(ledger):
    box = Box(ledger, compartments=2)
    code = box.issue("owner", comp=2, uses=3).code_id
    box.feed(box.ev("opened", 2, code, OWNER), box.ev("closed", 2, code, OWNER))
    assert box.uses(code) == (2, "active")
    box.feed(box.ev("opened", 2, code, OWNER), box.ev("closed", 2, code, OWNER),
             box.ev("opened", 2, code, OWNER), box.ev("closed", 2, code, OWNER))
    assert box.uses(code) == (0, "used")


def test_one_owner_use_that_opens_every_door_is_counted_once(ledger):
    box = Box(ledger, compartments=3)
    code = box.issue("owner", comp=0, uses=2).code_id
    box.feed(*[box.ev("opened", c, code, OWNER) for c in (1, 2, 3)],
             *[box.ev("closed", c, code, OWNER) for c in (2, 1, 3)])
    assert box.uses(code) == (1, "active")
    # the next use: one door opened, the two others given up; one use all the same
    box.feed(box.ev("not_opened", 1, code, 0), box.ev("opened", 2, code, OWNER),
             box.ev("not_opened", 3, code, 0), box.ev("closed", 2, code, OWNER))
    assert box.uses(code) == (0, "used")


def test_a_shared_owner_use_that_opened_nothing_stays_spent_and_a_lone_one_comes_back(ledger):
    box = Box(ledger, compartments=2)
    shared = box.issue("owner", comp=0, uses=5).code_id
    box.feed(box.ev("not_opened", 1, shared, 0), box.ev("not_opened", 2, shared, 0))
    assert box.uses(shared) == (4, "active")  # the box gives a shared use back never
    lone = box.issue("owner", comp=1, uses=5).code_id
    box.feed(box.ev("not_opened", 1, lone, 0))
    assert box.uses(lone) == (5, "active")  # the box gave it back


def test_a_door_open_across_a_power_cut_is_one_use(ledger):
    box = Box(ledger, compartments=2)
    code = box.issue("owner", comp=1, uses=3).code_id
    # opened, the power cut with the door open; found open at boot: opened again, then closed
    box.feed(box.ev("opened", 1, code, OWNER), box.ev("boot", 0, 0, 2),
             box.ev("opened", 1, code, OWNER), box.ev("closed", 1, code, OWNER))
    assert box.uses(code) == (2, "active")
    # opened, cut, closed while the power was off: not_opened arg 1 at boot, the same grant
    box.feed(box.ev("opened", 1, code, OWNER), box.ev("boot", 0, 0, 3),
             box.ev("not_opened", 1, code, 1))
    assert box.uses(code) == (1, "active")
    # granted, cut before the use was spent (arg 3): nothing spent; before it opened (arg 1): spent
    box.feed(box.ev("boot", 0, 0, 4), box.ev("not_opened", 1, code, 3))
    assert box.uses(code) == (1, "active")
    box.feed(box.ev("boot", 0, 0, 5), box.ev("not_opened", 1, code, 1))
    assert box.uses(code) == (0, "used")


def test_owner_uses_come_out_the_same_whatever_order_the_events_arrive_in(tmp_path):
    story = [("opened", 1, OWNER), ("opened", 2, OWNER), ("closed", 1, OWNER),
             ("closed", 2, OWNER),                                   # use 1: both doors
             ("not_opened", 1, 0), ("not_opened", 2, 0),             # use 2: none opened
             ("opened", 2, OWNER), ("not_opened", 1, 0), ("closed", 2, OWNER)]  # use 3
    rnd = random.Random(7)
    for run in range(6):
        lg = Ledger(tmp_path / ("l%d.db" % run))
        box = Box(lg, compartments=2)
        code = box.issue("owner", comp=0, uses=10).code_id
        evs = [box.ev(k, c, code, a) for k, c, a in story]
        if run:
            rnd.shuffle(evs)
        box.feed(*evs)
        assert box.uses(code) == (7, "active"), [e.seq for e in evs]
        lg.close()


def test_owner_uses_spent_groups_grants_into_uses():
    rows = lambda *evs: [(i, k, c, a, t) for i, (k, c, a, t) in enumerate(evs, 1)]  # noqa
    o = OWNER
    assert mirror.owner_uses_spent([]) == 0
    # one use, the doors opened one after the other within its window
    assert mirror.owner_uses_spent(rows(("opened", 1, o, 100), ("closed", 1, o, 103),
                                        ("opened", 2, o, 105), ("closed", 2, o, 110))) == 1
    # the same compartment again: a new use
    assert mirror.owner_uses_spent(rows(("opened", 1, o, 100), ("closed", 1, o, 103),
                                        ("opened", 1, o, 105), ("closed", 1, o, 110))) == 2
    # another compartment long after the first use's window: a new use
    assert mirror.owner_uses_spent(rows(("opened", 1, o, 100), ("closed", 1, o, 103),
                                        ("opened", 2, o, 5000), ("closed", 2, o, 5003))) == 2
    # a close whose opening was lost still spent the use
    assert mirror.owner_uses_spent(rows(("closed", 1, o, 0))) == 1


def test_an_unlimited_owner_code_and_remote_unlocks_change_no_uses(ledger):
    box = Box(ledger, compartments=2)
    unlimited = box.issue("owner", comp=0, uses=p.UNLIMITED).code_id
    limited = box.issue("owner", comp=1, uses=2).code_id
    box.feed(box.ev("opened", 1, unlimited, OWNER), box.ev("closed", 1, unlimited, OWNER))
    assert box.uses(unlimited) == (p.UNLIMITED, "active")
    # a remote unlock whose command seq equals the owner code's id: role remote, not a use
    box.feed(box.ev("opened", 1, limited, REMOTE), box.ev("closed", 1, limited, REMOTE))
    assert box.uses(limited) == (2, "active")


# ---- not_opened: what the ledger gives back and takes -------------------------------------

def test_not_opened_takes_a_recipients_use_only_when_it_stays_spent(ledger):
    box = Box(ledger, compartments=1)
    back, spent, never = (box.issue(comp=1).code_id for _ in range(3))
    box.feed(box.ev("not_opened", 1, back, 0),    # given back on the box; nothing was taken
             box.ev("not_opened", 1, spent, 1),   # found closed at boot: no pickup follows
             box.ev("not_opened", 1, never, 3))   # the cut came before the use was spent
    assert [box.uses(c) for c in (back, spent, never)] == [(1, "active"), (0, "used"),
                                                           (1, "active")]


def test_a_remote_unlocks_not_opened_leaves_the_code_with_the_same_number_alone(ledger):
    box = Box(ledger, compartments=1)
    box.issue(comp=1)
    box.issue(comp=1)
    unlock = box.command("unlock", comp=1, exp=2 ** 31)   # seq 3
    code = box.issue(comp=1).code_id                       # id 3: the same number
    assert unlock == code == 3
    box.feed(box.ev("result", OP["unlock"], unlock, 0), box.ev("boot", 0, 0, 2),
             box.ev("not_opened", 1, unlock, 1))
    assert box.uses(code) == (1, "active")
    # once another grant of that compartment has ended, a not_opened with that id is the code's
    box.feed(box.ev("opened", 1, 1, RECIPIENT), box.ev("closed", 1, 1, RECIPIENT),
             box.ev("boot", 0, 0, 3), box.ev("not_opened", 1, code, 1))
    assert box.uses(code) == (0, "used")


def test_a_pickup_reported_after_a_revoke_leaves_the_code_revoked(ledger):
    box = Box(ledger, compartments=1)
    code = box.issue(comp=1).code_id
    with pytest.raises(Exception, match="broker"):
        box.be.revoke("A", code)
    box.feed(box.ev("pickup", 1, code, 0))  # used before the revoke reached the box
    assert box.uses(code) == (0, "revoked")


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

