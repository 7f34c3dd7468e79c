# The backend's key registry and code ledger (host_tools/backend/sdk/ledger.py): SQLite only,
# no broker; the SDK's MQTT side is tested against mosquitto in test_sdk_broker.py.
import os
import stat
import threading

import pytest

from host_tools.backend import crypto
from host_tools.backend import protocol as p
from host_tools.backend.sdk import Backend, Ledger, LedgerError


@pytest.fixture
def ledger(tmp_path):
    lg = Ledger(tmp_path / "ledger.db")
    yield lg
    lg.close()


def test_the_ledger_file_is_readable_by_its_owner_only(tmp_path):
    Ledger(tmp_path / "l.db").close()
    assert stat.S_IMODE(os.stat(tmp_path / "l.db").st_mode) == 0o600


def test_registering_a_box_twice_is_refused_and_keeps_the_first_key(ledger):
    key = ledger.add_box("A")
    with pytest.raises(LedgerError, match="already registered"):
        ledger.add_box("A")
    assert ledger.box_key("A") == key and len(key) == 32


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 33, "#"])
def test_a_bad_box_id_is_refused(ledger, bad):
    with pytest.raises(ValueError, match="box id"):
        ledger.add_box(bad)
    assert ledger.boxes() == []


def test_an_issued_code_is_stored_as_a_digest_only(ledger, tmp_path):
    be = Backend(ledger)
    be.register("A")
    issued = be.issue("A", "recipient", comp=1)
    assert not issued.sent  # no broker configured: it waits for the next sync
    assert issued.code not in repr(issued)
    raw = (tmp_path / "ledger.db").read_bytes() + (tmp_path / "ledger.db-wal").read_bytes()
    assert issued.code.encode() not in raw
    digest = p.code_digest(p.WireKeys.of(ledger.box_key("A")).code, issued.code)
    assert digest in raw or ledger.db.execute("SELECT 1 FROM codes WHERE digest=?", (digest,)).fetchone()


def test_a_new_code_never_equals_another_code_the_box_may_hold(ledger, monkeypatch):
    be = Backend(ledger)
    be.register("A", code_len=4)
    seq = iter(["1111", "1111", "1111", "2222"])
    monkeypatch.setattr(crypto, "new_code", lambda n: next(seq))
    first = be.issue("A")
    second = be.issue("A")
    assert (first.code, second.code) == ("1111", "2222")


def test_a_revoked_code_frees_its_value_once_the_box_confirms_the_revoke(ledger, monkeypatch):
    be = Backend(ledger)
    be.register("A", code_len=4)
    values = iter(["1111", "1111", "2222", "1111"])
    monkeypatch.setattr(crypto, "new_code", lambda n: next(values))
    first = be.issue("A")
    with pytest.raises(Exception, match="broker"):
        be.revoke("A", first.code_id)  # recorded; whether the box has it, nobody knows yet
    revoke = ledger.box("A").cmd_seq
    assert be.issue("A").code == "2222"  # 1111 may still open on the box: not given out
    ledger.record_event(p.Event("A", 1, "result", p.OPS.index("add"), first.cmd_seq, 0, 0), "c")
    ledger.record_event(p.Event("A", 2, "result", p.OPS.index("revoke"), revoke, 0, 0), "c")
    assert be.issue("A").code == "1111"


def test_issuing_for_a_compartment_the_box_lacks_changes_nothing(ledger):
    be = Backend(ledger)
    be.register("A", compartments=2)
    with pytest.raises(LedgerError, match="2 compartments"):
        be.issue("A", comp=3)
    assert ledger.codes("A") == [] and ledger.box("A").cmd_seq == 0


def test_an_event_is_stored_once_however_often_it_arrives(ledger):
    ledger.add_box("A")
    ev = p.Event("A", 5, "boot", 0, 0, 1, 0)
    seen = []
    assert ledger.record_event(ev, "c1", lambda db, e: seen.append(e.seq))
    assert not ledger.record_event(ev, "c2", lambda db, e: seen.append(e.seq))
    assert seen == [5] and len(ledger.events("A")) == 1


def test_a_failing_handler_stores_nothing_so_the_event_comes_again(ledger):
    ledger.add_box("A")
    ev = p.Event("A", 1, "boot", 0, 0, 1, 0)

    def boom(db, e):
        raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError):
        ledger.record_event(ev, "c1", boom)
    assert ledger.events("A") == []
    assert ledger.record_event(ev, "c1")


def test_concurrent_consumers_store_each_event_once(tmp_path):
    path = tmp_path / "shared.db"
    Ledger(path).add_box("A")
    stored = []

    def consumer(name):
        lg = Ledger(path)
        for seq in range(1, 101):
            if lg.record_event(p.Event("A", seq, "boot", 0, 0, 0, 0), name):
                stored.append(seq)
        lg.close()

    ts = [threading.Thread(target=consumer, args=("c%d" % i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(stored) == list(range(1, 101))


def test_an_opening_that_leaves_no_use_marks_a_one_time_code_used(ledger):
    be = Backend(ledger)
    be.register("A")
    issued = be.issue("A", comp=1)
    # opened by the recipient (role 1), 0 uses left on the box (arg bits 8-23)
    ledger.record_event(p.Event("A", 1, "opened", 1, issued.code_id, 1 | 0 << 8, 0), "c")
    (c,) = ledger.codes("A")
    assert c["uses"] == 0 and c["status"] == "used"
    # the pickup that follows takes no second use
    ledger.record_event(p.Event("A", 2, "pickup", 1, issued.code_id, 0, 0), "c")
    assert ledger.codes("A")[0]["uses"] == 0


def test_a_result_answers_its_command_and_a_rotation_takes_effect(ledger):
    be = Backend(ledger)
    be.register("A")
    old = ledger.current_keys("A")
    with ledger.tx() as db:
        seq, _, _ = ledger.next_command(db, "A", "state")
    assert ledger.command_outcome("A", seq) == (None, None)
    ledger.record_event(p.Event("A", 1, "result", 10, seq, 0, 0), "c")
    assert ledger.command_outcome("A", seq) == (0, None)
    with pytest.raises(Exception):
        be.rotate("A")  # no broker: the command is recorded, the publish fails
    (pending,) = ledger.db.execute("SELECT pending_seq FROM boxes").fetchone()
    assert ledger.current_keys("A") == old and len(ledger.keys("A")) == 2
    ledger.record_event(p.Event("A", 2, "result", 9, pending, 0, 0), "c")
    assert ledger.current_keys("A") != old and ledger.box("A").key_gen == 1
    assert ledger.keys("A")[0] == old  # late events under the old key still verify


def test_a_rejection_is_recorded_against_its_command(ledger):
    ledger.add_box("A")
    with ledger.tx() as db:
        seq, _, _ = ledger.next_command(db, "A", "unlock", comp=1)
    ledger.record_event(p.Event("A", 1, "rejected", 0, seq, 2, 0), "c")
    assert ledger.command_outcome("A", seq) == (None, 2)


def test_in_sync_compares_the_box_digest_with_the_ledger(ledger):
    be = Backend(ledger)
    be.register("A")
    assert ledger.in_sync("A") is None
    be.issue("A")
    want = p.set_digest(ledger.box_set(ledger.db, "A")).hex()
    ledger.set_state("A", {"digest": want, "t": 0})
    assert ledger.in_sync("A") is True
    ledger.set_state("A", {"digest": "00" * 16, "t": 0})
    assert ledger.in_sync("A") is False


def test_command_seqs_are_shared_by_every_process_on_the_ledger(tmp_path):
    path = tmp_path / "l.db"
    a, b = Ledger(path), Ledger(path)
    a.add_box("A")
    seqs = []
    for lg in (a, b, a, b):
        with lg.tx() as db:
            seqs.append(lg.next_command(db, "A", "state")[0])
    assert seqs == [1, 2, 3, 4]


def test_a_message_under_the_pending_key_confirms_a_rotation_whose_result_was_lost(ledger):
    be = Backend(ledger)
    be.register("A")
    with pytest.raises(Exception):
        be.rotate("A")
    old, pending = ledger.keys("A")
    assert not ledger.confirm_key("A", old)
    assert ledger.confirm_key("A", pending)
    assert ledger.current_keys("A") == pending and ledger.box("A").key_gen == 1
    assert not ledger.confirm_key("A", pending)  # once


def test_a_message_with_no_rotation_pending_takes_no_write_lock(ledger):
    # every event is confirmed against a pending rotation; with none, that must not
    # serialise the consumers on the database's write lock
    Backend(ledger).register("A")
    (current,) = ledger.keys("A")
    stmts = []
    ledger.db.set_trace_callback(stmts.append)
    try:
        assert not ledger.confirm_key("A", current)
        assert not ledger.confirm_key("no-such-box", current)
    finally:
        ledger.db.set_trace_callback(None)
    assert not [x for x in stmts if x.startswith(("BEGIN", "UPDATE", "COMMIT"))]


def test_a_sync_leaves_used_up_codes_out_and_in_sync_accepts_either_set(ledger):
    be = Backend(ledger)
    be.register("A")
    used = be.issue("A", comp=1)
    kept = be.issue("A", comp=1, uses=3)
    ledger.record_event(p.Event("A", 1, "opened", 1, used.code_id, 1 | 0 << 8, 0), "c")
    assert [c[0] for c in ledger.box_set(ledger.db, "A")] == [kept.code_id]
    with_used = ledger.box_set(ledger.db, "A", used=True)
    for codes in (with_used, ledger.box_set(ledger.db, "A")):
        ledger.set_state("A", {"digest": p.set_digest(codes).hex(), "t": 0})
        assert ledger.in_sync("A") is True


def test_a_rotation_the_box_refused_with_a_status_can_be_tried_again(ledger):
    be = Backend(ledger)
    be.register("A")
    with pytest.raises(Exception):
        be.rotate("A")  # recorded, then no broker
    seq = ledger.box("A").cmd_seq
    old = ledger.current_keys("A")
    ledger.record_event(p.Event("A", 1, "result", p.OPS.index("rotate"), seq, 3, 0), "c")
    assert ledger.current_keys("A") == old and ledger.box("A").key_gen == 0
    assert ledger.keys("A") == [old]  # the refused key is nobody's
    with pytest.raises(Exception, match="broker"):
        be.rotate("A")  # not "still waiting for its result"


def test_a_rotation_whose_publish_failed_is_sent_again_with_the_same_new_key(ledger):
    be = Backend(ledger)
    be.register("A")
    with pytest.raises(Exception):
        be.rotate("A")  # recorded, then no broker: the box may or may not get it
    pending = ledger.keys("A")[-1]
    with pytest.raises(Exception, match="broker"):
        be.rotate("A")  # not refused as "still waiting" forever
    first, second = [r[0] for r in ledger.db.execute(
        "SELECT seq FROM commands WHERE op='rotate' ORDER BY seq")]
    assert ledger.keys("A")[-1] == pending  # whichever one the box applies, the same key
    assert ledger.db.execute("SELECT pending_seq FROM boxes").fetchone()[0] == second
    assert ledger.confirm_key("A", pending) and ledger.box("A").key_gen == 1


def test_after_a_rotation_the_old_key_verifies_only_events_sealed_before_it(ledger):
    be = Backend(ledger)
    be.register("A")
    old = ledger.current_keys("A")
    with pytest.raises(Exception):
        be.rotate("A")
    pending = ledger.db.execute("SELECT pending_seq FROM boxes").fetchone()[0]
    ledger.record_event(p.Event("A", 20, "result", 9, pending, 0, 0), "c")  # promoted at seq 20
    assert ledger.current_keys("A") != old
    assert ledger.may_verify("A", old, 19)  # published before the box changed keys
    assert not ledger.may_verify("A", old, 20) and not ledger.may_verify("A", old, 5000)
    new = ledger.current_keys("A")
    assert ledger.may_verify("A", new, 5000)


def test_a_rotation_confirmed_by_a_message_bounds_the_old_key_by_that_message(ledger):
    be = Backend(ledger)
    be.register("A")
    old = ledger.current_keys("A")
    with pytest.raises(Exception):
        be.rotate("A")
    pending = ledger.keys("A")[-1]
    assert ledger.confirm_key("A", pending, 31)
    assert ledger.may_verify("A", old, 30) and not ledger.may_verify("A", old, 31)


def test_a_state_summary_moves_a_lagging_command_counter_past_the_box_window(ledger):
    ledger.add_box("A")  # say, the ledger restored from a backup: its counter is behind
    ledger.set_state("A", {"digest": "00" * 16, "t": 0, "cmd_seq": 40, "next_seq": 1})
    with ledger.tx() as db:
        assert ledger.next_command(db, "A", "state")[0] == 41  # not 1: refused as replay
    ledger.set_state("A", {"digest": "00" * 16, "t": 0, "cmd_seq": 7, "next_seq": 1})
    with ledger.tx() as db:
        assert ledger.next_command(db, "A", "state")[0] == 42  # never backwards


def test_a_revoke_that_could_not_be_sent_can_be_sent_again(ledger):
    be = Backend(ledger)
    be.register("A")
    issued = be.issue("A", comp=1)
    for _ in range(2):  # broker down: the box still holds the code, so try again
        with pytest.raises(Exception, match="broker"):
            be.revoke("A", issued.code_id)
    assert [c["status"] for c in ledger.codes("A", include_revoked=True)] == ["revoked"]
    assert len(ledger.db.execute("SELECT 1 FROM commands WHERE op='revoke'").fetchall()) == 2
    with pytest.raises(LedgerError, match="no code 99"):
        be.revoke("A", 99)


def test_a_commit_that_fails_leaves_the_ledger_usable(ledger):
    import sqlite3

    class FailOnce:  # the connection, with one COMMIT failing (disk full, I/O error)
        def __init__(self, db):
            self.db, self.fail = db, True

        def execute(self, sql, *args):
            if sql == "COMMIT" and self.fail:
                self.fail = False
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)
    ledger.add_box("A")
    real, ledger.db = ledger.db, FailOnce(ledger.db)
    ev = p.Event("A", 1, "boot", 0, 0, 1, 0)
    with pytest.raises(sqlite3.OperationalError):
        ledger.record_event(ev, "c")  # not stored: the box sends it again
    assert ledger.record_event(ev, "c")  # not "cannot start a transaction within a transaction"
    ledger.db = real
    assert [e.seq for e in ledger.events("A")] == [1]


def test_a_box_that_lost_its_wire_key_is_heard_again_under_its_box_key(ledger):
    import json as _json
    be = Backend(ledger)
    be.register("A")
    with pytest.raises(Exception):
        be.rotate("A")
    _, pending = ledger.keys("A")
    ledger.confirm_key("A", pending)
    assert ledger.box("A").key_gen == 1
    gen0 = p.WireKeys.of(ledger.box_key("A"))
    st = {"t": 0, "boots": 2, "codes": 0, "active": 0, "capacity": 256,
          "digest": p.set_digest([]).hex(), "pending": 0, "next_seq": 5, "cmd_seq": 1,
          "key_gen": 0, "occupied": 0, "failures": 0, "wait_s": 0, "faults": 0}
    t = p.topic("A", "state")
    body = _json.dumps(dict(v=1, box="A", **st)).encode()
    # sealed with the box key but claiming a later generation: not a fallback
    assert ledger.fall_back_to_box_key("A", p.seal(gen0.evt, t, _json.dumps(
        dict(v=1, box="A", **dict(st, key_gen=1))).encode())) is None
    # a forger without the box key
    assert ledger.fall_back_to_box_key("A", p.seal(p.WireKeys.of(b"x" * 32).evt, t, body)) is None
    assert ledger.box("A").key_gen == 1
    assert ledger.fall_back_to_box_key("A", p.seal(gen0.evt, t, body))["key_gen"] == 0
    assert ledger.box("A").key_gen == 0 and ledger.current_keys("A") == gen0


def test_a_summary_sealed_before_the_rotation_does_not_drop_the_key_the_box_holds(ledger):
    import json as _json
    be = Backend(ledger)
    be.register("A")
    with pytest.raises(Exception):
        be.rotate("A")  # no broker here: the rotate command is recorded, its seq taken
    rot = ledger.box("A").cmd_seq
    _, pending = ledger.keys("A")
    ledger.confirm_key("A", pending)  # the box was heard under the new key
    new_keys = ledger.current_keys("A")
    gen0 = p.WireKeys.of(ledger.box_key("A"))
    st = {"t": 0, "boots": 2, "codes": 0, "active": 0, "capacity": 256,
          "digest": p.set_digest([]).hex(), "pending": 0, "next_seq": 5, "cmd_seq": rot - 1,
          "key_gen": 0, "occupied": 0, "failures": 0, "wait_s": 0, "faults": 0}
    t = p.topic("A", "state")
    late = p.seal(gen0.evt, t, _json.dumps(dict(v=1, box="A", **st)).encode())
    assert ledger.fall_back_to_box_key("A", late) is None  # before the rotate: a late one
    assert ledger.box("A").key_gen == 1 and ledger.current_keys("A") == new_keys
    # found by the simulation (seed 63461): the rotate came out of order, after a newer
    # command, so a summary sealed before it had a cmd_seq above it; its window shows it
    # had not seen the rotate
    unseen = dict(st, cmd_seq=rot + 5, cmd_bits=0b01111)  # rot is 5 below: bit 4 clear
    late = p.seal(gen0.evt, t, _json.dumps(dict(v=1, box="A", **unseen)).encode())
    assert ledger.fall_back_to_box_key("A", late) is None
    seen = dict(unseen, cmd_bits=0b11111)
    lost = p.seal(gen0.evt, t, _json.dumps(dict(v=1, box="A", **seen)).encode())
    assert ledger.fall_back_to_box_key("A", lost)["key_gen"] == 0  # applied it, then lost it
    assert ledger.current_keys("A") == gen0


# ---- one-shot commands carry a short expiry ------------------------------------------

def test_unlock_and_clear_throttle_expire_in_120_s_unless_told_otherwise(ledger):
    import time

    from host_tools.backend.sdk import backend
    be = Backend(ledger)
    be.register("A", compartments=2)
    assert backend.DEFAULT_ONESHOT_EXP == 120
    for send, want in ((lambda: be.unlock("A", 2), 120),
                       (lambda: be.clear_throttle("A"), 120),
                       (lambda: be.unlock("A", 1, expires_in=3600), 3600),
                       (lambda: be.clear_throttle("A", expires_in=86400), 86400)):
        with pytest.raises(Exception, match="broker"):
            send()  # recorded, then no broker
        body = ledger.command_body("A", ledger.box("A").cmd_seq)
        assert abs(body["exp"] - (time.time() + want)) <= 2, body
    with ledger.tx() as db:
        seq, _, _ = ledger.next_command(db, "A", "state")
    assert "exp" not in ledger.command_body("A", seq)  # not a one-shot command


@pytest.mark.parametrize("bad", [0, -1, 86401, 1.5, True, "60"])
def test_a_one_shot_expiry_outside_1_s_to_a_day_is_refused_before_anything_is_sent(ledger, bad):
    be = Backend(ledger)
    be.register("A")
    for send in (lambda: be.unlock("A", 1, expires_in=bad),
                 lambda: be.clear_throttle("A", expires_in=bad)):
        with pytest.raises(ValueError, match="expires_in must be whole seconds, 1 to 86400"):
            send()
    assert ledger.box("A").cmd_seq == 0


def test_a_box_that_applied_an_earlier_send_of_the_pending_key_may_still_fall_back(ledger):
    # found by the simulation (seed 73288): the SDK sends a pending key again under a new
    # seq; the box applied the first send, the ledger promoted on the key, and a box that
    # later lost that key showed the first seq in its window, not the last
    import json as _json
    be = Backend(ledger)
    be.register("A")
    for _ in range(2):
        with pytest.raises(Exception):
            be.rotate("A")  # no broker: recorded, sent again with the same key
    last = ledger.box("A").cmd_seq
    _, pending = ledger.keys("A")
    ledger.confirm_key("A", pending)
    gen0 = p.WireKeys.of(ledger.box_key("A"))
    st = {"t": 0, "boots": 2, "codes": 0, "active": 0, "capacity": 256,
          "digest": p.set_digest([]).hex(), "pending": 0, "next_seq": 5, "cmd_seq": last,
          "key_gen": 0, "occupied": 0, "failures": 0, "wait_s": 0, "faults": 0,
          "cmd_bits": 0b1}  # the first send (last - 1) seen, the last one not
    t = p.topic("A", "state")
    body = p.seal(gen0.evt, t, _json.dumps(dict(v=1, box="A", **dict(st, cmd_seq=last + 3,
                                                                       cmd_bits=0b1000))).encode())
    assert ledger.fall_back_to_box_key("A", body)["key_gen"] == 0
