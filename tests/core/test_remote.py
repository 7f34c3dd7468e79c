# Tests for parcelbox.remote: every op and every refusal through real sealed messages (the
# backend codec host_tools.backend.protocol), power cuts, the rate limit, publishing, acks, vectors.
import json
from pathlib import Path

import pytest

from host_tools.backend import protocol as HP
from host_tools.backend.crypto import code_digest
from memflash import MemStorage, PowerCut
from parcelbox import events, protocol as P
from parcelbox import remotestore
from parcelbox.box import Box
from parcelbox.codestore import ROLE_REMOTE
from parcelbox.remote import Remote, stored_settings

KEY = bytes(range(32))
BOX = "box-7"
T0 = 1_795_600_000
CMD_T, ACK_T, EVT_T, STATE_T, STATUS_T = P.topics(BOX)


def code(i, role=1, comp=1, uses=1, nb=0, na=0, key=KEY):
    return HP.code_array(i, code_digest(key, "%06d" % (100000 + i)), role, comp, uses, nb, na)


class Rig:
    def __init__(self, storage=None, settings=None, trusted=True, box_id=BOX, key=KEY):
        self.st = storage if storage is not None else MemStorage()
        self.settings, self.trusted, self.box_id, self.key = settings, trusted, box_id, key
        self.now = 0
        self.seq = 0
        self.keys = HP.WireKeys.of(key)
        self.boot()

    def boot(self):
        self.box = Box(self.st, self.key, stored_settings(self.st, self.settings), self.now)
        if self.trusted:
            self.box.set_time(T0 + self.now // 1000, self.now)
        self.remote = Remote(self.box, self.box_id, self.key)
        for c in range(1, len(self.box.doors) + 1):
            self.door(c, False)

    def reboot(self):
        self.st = self.st.reboot()
        self.now += 5000
        self.boot()

    def advance(self, ms, step=10):
        end = self.now + ms
        while self.now < end:
            self.now += step
            self.box.tick(self.now)

    def door(self, comp, is_open):
        for _ in range(2):
            self.box.door(comp, is_open, self.now)
            self.advance(60)

    # Send op with the next seq (or `seq`); returns the seq.
    # One-shot ops get the SDK's default expiry, 120 s ahead (exp=0: none at all).
    def send(self, op, seq=None, exp=None, **fields):
        if seq is None:
            self.seq += 1
            seq = self.seq
        if exp is None and op in ("unlock", "clear_throttle"):
            exp = T0 + self.now // 1000 + 120
        exp = exp or None
        t, p = HP.command(self.keys, self.box_id, seq, op, exp, **fields)
        self.remote.receive(t, p, self.now)
        return seq

    # A body sealed as given (dict or bytes), on the cmd topic unless told.
    def raw(self, body, topic=CMD_T, key=None):
        b = body if isinstance(body, bytes) else HP.dumps(body)
        self.remote.receive(topic, HP.seal(key or self.keys.cmd, topic, b), self.now)

    def last(self):
        ob = self.box.outbox
        return ob.get(ob.pending() - 1)

    # (op, command seq, status) of the newest event, which must be a result.
    def result(self):
        seq, kind, comp, cid, arg, t = self.last()
        assert kind == events.RESULT, events.NAMES[kind]
        return comp, cid, arg

    def drain(self):
        out = []
        while True:
            m = self.remote.poll(self.now)
            if m is None:
                return out
            out.append(m)

    def published_events(self, msgs, keys=None):
        return [HP.parse_event([keys or self.keys], self.box_id, p)[0]
                for t, p, r in msgs if t == EVT_T]


# The state summary in a payload, verified under one of `keys` (WireKeys).
def state_of(keys, payload):
    return HP.parse_state(keys, BOX, payload)[0]


def body(seq=1, op="state", **kw):
    b = {"v": 1, "box": BOX, "seq": seq, "op": op}
    b.update(kw)
    return b


def files(st):
    return {k: bytes(v) for k, v in st.files.items()}


@pytest.fixture
def rig():
    return Rig()


# ---- the link's API ---------------------------------------------------------------------

def test_topics_will_and_online_status():
    r = Rig()
    assert r.remote.subscriptions() == [CMD_T, ACK_T]
    assert r.remote.will() == (STATUS_T, b'{"v":1,"online":false}')
    assert r.remote.online() == (STATUS_T, b'{"v":1,"online":true}')
    assert HP.parse_status(r.remote.will()[1]) is False


def test_nothing_is_published_before_the_first_connect(rig):
    assert rig.remote.poll(rig.now) is None and rig.remote.next_deadline(rig.now) is None


def test_a_connect_publishes_the_retained_state_then_the_pending_events(rig):
    rig.remote.connected(rig.now)
    out = rig.drain()
    assert out[0][0] == STATE_T and out[0][2] is True
    s = state_of([rig.keys], out[0][1])
    assert s["boots"] == 1 and s["pending"] == 1 and s["t"] == T0 and s["capacity"] == 256
    assert [e.type for e in rig.published_events(out[1:])] == ["boot"]
    assert all(retain is False for t, p, retain in out[1:])


def test_bad_box_id_or_key_is_refused_at_start():
    box = Box(MemStorage(), KEY)
    with pytest.raises(ValueError):
        Remote(box, "a/b", KEY)
    with pytest.raises((ValueError, TypeError)):
        Remote(box, BOX, "key")


# ---- ops ----------------------------------------------------------------------------------

def test_add_stores_the_code_and_reports_ok(rig):
    seq = rig.send("add", code=code(1))
    assert rig.result() == (P.ADD, seq, P.OK)
    assert rig.box.codes.count() == 1
    rig.send("add", code=code(1, uses=5))  # the same id replaces
    assert rig.result()[2] == P.OK and rig.box.codes.count() == 1
    assert rig.box.codes.fields(0)[3] == 5


def test_add_of_a_digest_held_by_another_code_is_bad_value(rig):
    rig.send("add", code=code(1))
    a = code(1)
    a[0] = 2
    rig.send("add", code=a)
    assert rig.result()[2] == P.BAD_VALUE and rig.box.codes.count() == 1


def test_add_beyond_the_capacity_is_full_but_a_replacement_fits():
    r = Rig(settings={"max_codes": 16})
    for i in range(1, 17):
        r.send("add", code=code(i))
    r.send("add", code=code(17))
    assert r.result()[2] == P.FULL and r.box.codes.count() == 16
    r.send("add", code=code(16, uses=3))
    assert r.result()[2] == P.OK


def test_revoke_removes_the_code_or_says_unknown(rig):
    rig.send("add", code=code(1))
    rig.send("revoke", id=1)
    assert rig.result()[2] == P.OK and rig.box.codes.count() == 0
    rig.send("revoke", id=1)
    assert rig.result()[2] == P.UNKNOWN_CODE


def sync(rig, codes, sync_id=9, per_part=40, count=None, digest=None, parts=None):
    rig.send("sync_begin", sync=sync_id, count=len(codes) if count is None else count,
             digest=(digest or HP.set_digest(codes)).hex())
    statuses = [rig.result()[2]]
    chunks = [codes[i:i + per_part] for i in range(0, len(codes), per_part)]
    for k, chunk in enumerate(chunks):
        rig.send("sync_part", sync=sync_id, part=k, codes=chunk)
        statuses.append(rig.result()[2])
    rig.send("sync_end", sync=sync_id, parts=len(chunks) if parts is None else parts)
    statuses.append(rig.result()[2])
    return statuses


def test_a_sync_in_parts_replaces_every_code_at_the_end_and_publishes_state(rig):
    rig.send("add", code=code(500))
    new = [code(i) for i in range(1, 101)]
    rig.remote.connected(rig.now)
    rig.drain()
    rig.send("sync_begin", sync=3, count=100, digest=HP.set_digest(new).hex())
    for k in range(3):
        rig.send("sync_part", sync=3, part=k, codes=new[40 * k:40 * k + 40])
        assert rig.result()[2] == P.OK
        assert rig.box.codes.count() == 1  # staged only
    rig.send("sync_end", sync=3, parts=3)
    assert rig.result()[2] == P.OK and rig.box.codes.count() == 100
    assert rig.box.codes.set_digest() == HP.set_digest(new)
    assert remotestore.STAGE not in rig.st.files
    out = rig.drain()
    s = state_of([rig.keys], out[0][1])
    assert out[0][0] == STATE_T and s["digest"] == HP.set_digest(new).hex() and s["codes"] == 100


def test_an_empty_sync_clears_every_code(rig):
    rig.send("add", code=code(1))
    assert sync(rig, []) == [P.OK, P.OK] and rig.box.codes.count() == 0


@pytest.mark.parametrize("case, want", [
    ("count", P.SYNC_MISMATCH), ("digest", P.SYNC_MISMATCH), ("parts", P.SYNC_ORDER),
    ("dup", P.BAD_VALUE),
])
def test_a_sync_that_does_not_add_up_changes_no_code(rig, case, want):
    rig.send("add", code=code(500))
    new = [code(i) for i in range(1, 11)]
    kw = {}
    if case == "count":
        kw["count"] = 11
    elif case == "digest":
        kw["digest"] = HP.set_digest(new[1:])
    elif case == "parts":
        kw["parts"] = 3
    else:
        new[5] = list(new[4])
    st = sync(rig, new, per_part=5, **kw)
    assert st[-1] == want and rig.box.codes.count() == 1
    assert remotestore.STAGE not in rig.st.files
    rig.send("sync_end", sync=9, parts=2)  # the sync is over either way
    assert rig.result()[2] == P.SYNC_ORDER


def test_sync_parts_out_of_order_or_without_begin_are_refused(rig):
    rig.send("sync_part", sync=1, part=0, codes=[code(1)])
    assert rig.result()[2] == P.SYNC_ORDER
    rig.send("sync_begin", sync=1, count=2, digest=HP.set_digest([code(1), code(2)]).hex())
    rig.send("sync_part", sync=1, part=1, codes=[code(1)])
    assert rig.result()[2] == P.SYNC_ORDER
    rig.send("sync_part", sync=2, part=0, codes=[code(1)])
    assert rig.result()[2] == P.SYNC_ORDER
    rig.send("sync_part", sync=1, part=0, codes=[code(1)])
    rig.send("sync_part", sync=1, part=1, codes=[code(2)])
    rig.send("sync_end", sync=1, parts=2)
    assert rig.result()[2] == P.OK and rig.box.codes.count() == 2


def test_sync_begin_beyond_the_capacity_is_full(rig):
    rig.send("sync_begin", sync=1, count=257, digest="00" * 16)
    assert rig.result()[2] == P.FULL


def test_a_staged_sync_survives_a_reboot(rig):
    new = [code(i) for i in range(1, 5)]
    rig.send("sync_begin", sync=4, count=4, digest=HP.set_digest(new).hex())
    rig.send("sync_part", sync=4, part=0, codes=new[:2])
    rig.reboot()
    rig.send("sync_part", sync=4, part=1, codes=new[2:])
    rig.send("sync_end", sync=4, parts=2)
    assert rig.result()[2] == P.OK and rig.box.codes.count() == 4


def test_a_damaged_staging_file_is_dropped_at_boot(rig):
    new = [code(i) for i in range(1, 5)]
    rig.send("sync_begin", sync=4, count=4, digest=HP.set_digest(new).hex())
    rig.send("sync_part", sync=4, part=0, codes=new[:2])
    rig.st.corrupt(remotestore.STAGE, 40)
    rig.reboot()
    assert remotestore.STAGE not in rig.st.files
    rig.send("sync_part", sync=4, part=1, codes=new[2:])
    assert rig.result()[2] == P.SYNC_ORDER


def test_remote_unlock_opens_with_role_remote_and_keeps_occupancy(rig):
    rig.box.occupied = 1
    seq = rig.send("unlock", comp=1)
    assert rig.result() == (P.UNLOCK, seq, P.OK)
    assert rig.box.solenoid(1, rig.now)
    rig.door(1, True)
    rig.door(1, False)
    kinds = [(e[1], e[3], e[4]) for e in (rig.box.outbox.get(i) for i in range(rig.box.outbox.pending()))]
    # opened: role remote, no uses to report (0xFFFF in the high bits)
    assert (events.OPENED, seq, ROLE_REMOTE | 0xFFFF << 8) in kinds
    assert (events.CLOSED, seq, ROLE_REMOTE) in kinds
    assert rig.box.occupied == 1


def test_remote_unlock_never_opened_gives_no_use_to_a_code_with_the_seqs_id(rig):
    rig.send("add", code=code(2, uses=1))  # code id 2 == the unlock's seq below
    rig.box.codes.consume(rig.box.codes.slot_of(2))
    assert rig.send("unlock", comp=1) == 2
    rig.advance(12000)
    assert rig.last()[1] == events.NOT_OPENED
    assert rig.box.codes.fields(rig.box.codes.slot_of(2))[3] == 0


def test_remote_unlock_of_a_busy_or_missing_compartment_is_refused(rig):
    rig.door(1, True)
    rig.send("unlock", comp=1)
    assert rig.result()[2] == P.BUSY
    rig.send("unlock", comp=2)
    assert rig.result()[2] == P.BAD_VALUE
    rig.advance(1000)
    assert not rig.box.solenoid(1, rig.now)


def test_remote_unlock_grant_is_on_flash_before_the_solenoid_fires(rig):
    rig.st.cut_after(len(files(rig.st)["state.0"]) * 2 - 1)  # window saved; grant cut
    with pytest.raises(PowerCut):
        rig.send("unlock", comp=1)
    assert not rig.box.solenoid(1, rig.now)
    rig.reboot()
    assert rig.box.grant_code[0] == 0 and rig.box.cmd_top == 1  # lost, never twice


def test_clear_throttle_forgets_failures_and_lockouts(rig):
    for _ in range(6):
        for ch in b"999999":
            rig.box.key(ch, rig.now)
        rig.advance(200)
    assert rig.box.throttle.check(rig.now) > 0
    rig.send("clear_throttle")
    assert rig.result()[2] == P.OK
    assert rig.box.throttle.check(rig.now) == 0 and rig.box.throttle.failures == 0
    rig.reboot()
    assert rig.box.throttle.failures == 0


def test_settings_are_saved_and_take_effect_when_the_box_is_rebuilt(rig):
    rig.send("settings", set={"free_tries": 3, "submit_on_length": False})
    assert rig.result()[2] == P.OK | P.RESTART_PENDING and rig.remote.restart_pending
    assert rig.box.cfg["free_tries"] == 5  # not yet
    rig.reboot()
    assert rig.box.cfg["free_tries"] == 3 and rig.box.cfg["submit_on_length"] is False
    assert not rig.remote.restart_pending
    rig.send("settings", set={"free_tries": 4})  # merged with the earlier ones
    rig.reboot()
    assert rig.box.cfg["free_tries"] == 4 and rig.box.cfg["submit_on_length"] is False


@pytest.mark.parametrize("new", [
    {"compartments": 2}, {"max_on_ms": 5000}, {"keypad_layout": 5}, {"free_tries": 0},
    {"pulse_ms": 1500},  # would need cooldown_ms >= 4500, a board setting
    {"free_tries": 3, "code_len": 8},  # all or none
    {"submit_on_length": 1},
])
def test_settings_outside_the_allowed_names_or_ranges_are_bad_value(rig, new):
    before = rig.st.files.get(remotestore.SETTINGS)
    rig.send("settings", set=new)
    assert rig.result()[2] == P.BAD_VALUE and not rig.remote.restart_pending
    assert rig.st.files.get(remotestore.SETTINGS) == before


def test_stored_settings_that_no_longer_fit_the_board_are_ignored():
    st = MemStorage()
    remotestore.save_settings(st, {"pulse_ms": 1000})
    assert stored_settings(st, {"cooldown_ms": 3000})["pulse_ms"] == 1000
    assert stored_settings(st, {"cooldown_ms": 2000}) == {"cooldown_ms": 2000}
    remotestore.save_settings(st, {"compartments": 4, "free_tries": 2})
    assert stored_settings(st) == {"free_tries": 2}  # only settable names count
    st.corrupt(remotestore.SETTINGS, 3)
    assert stored_settings(st, {"free_tries": 7}) == {"free_tries": 7}


def test_rotate_saves_the_new_key_and_seals_the_result_with_it(rig):
    rig.remote.connected(rig.now)
    rig.drain()
    new = bytes(range(100, 132))
    seq = rig.seq + 1
    rig.send("rotate", gen=1, key=HP.wrap_key(rig.keys.cmd, seq, new))
    assert rig.result() == (P.ROTATE, seq, P.OK) and rig.remote.key_gen == 1
    old, rig.keys = rig.keys, HP.WireKeys.of(KEY, new)
    out = rig.drain()
    ev, which = HP.parse_event([old, rig.keys], BOX, out[-1][1])
    assert which == 1 and ev.type == "result" and ev.id == seq
    rig.keys = old
    rig.send("state")  # the old key is worthless now
    assert rig.last()[1] == events.REJECTED and rig.last()[4] == P.BAD_MAC
    rig.keys = HP.WireKeys.of(KEY, new)
    rig.reboot()
    assert rig.remote.key_gen == 1
    rig.send("state")
    assert rig.result()[2] == P.OK
    rig.remote.connected(rig.now)
    s = state_of([rig.keys], rig.drain()[0][1])
    assert s["key_gen"] == 1 and s["cmd_seq"] == rig.seq


def test_rotate_to_any_generation_but_the_next_is_bad_value(rig):
    rig.send("rotate", gen=2, key="00" * 32)
    assert rig.result()[2] == P.BAD_VALUE and rig.remote.key_gen == 0
    assert remotestore.WIRE not in rig.st.files


def test_a_lost_wire_key_file_falls_back_to_the_box_key_and_is_reported(rig):
    new = bytes(range(100, 132))
    rig.send("rotate", gen=1, key=HP.wrap_key(rig.keys.cmd, rig.seq + 1, new))
    rig.st.corrupt(remotestore.WIRE, 5)
    rig.reboot()
    assert rig.remote.key_gen == 1  # one copy is enough: reported, and written twice again
    rig.remote.connected(rig.now)
    assert rig.last()[1:5] == (events.STORE_CORRUPT, 0, 0, events.FILE_KEY | 2 << 8)
    rig.st.corrupt(remotestore.WIRE, 5)
    rig.st.corrupt(remotestore.WIRE, 47)
    rig.reboot()
    assert rig.remote.key_gen == 0
    rig.remote.connected(rig.now)
    assert rig.last()[1:5] == (events.STORE_CORRUPT, 0, 0, events.FILE_KEY | 1 << 8)


def test_a_wire_key_file_that_vanishes_after_a_rotation_is_reported():
    # on main the box fell back to the box key and said nothing
    rig = Rig()
    new = bytes(range(100, 132))
    rig.send("rotate", gen=1, key=HP.wrap_key(rig.keys.cmd, rig.seq + 1, new))
    del rig.st.files[remotestore.WIRE]
    rig.reboot()
    assert rig.remote.key_gen == 0
    rig.remote.connected(rig.now)
    assert rig.last()[1:5] == (events.STORE_CORRUPT, 0, 0, events.FILE_KEY | 4 << 8)


def test_state_op_publishes_a_state_summary(rig):
    rig.remote.connected(rig.now)
    rig.drain()
    rig.send("state")
    out = rig.drain()
    assert out[0][0] == STATE_T and state_of([rig.keys], out[0][1])["cmd_seq"] == 1


def test_time_op_sets_a_trusted_clock():
    r = Rig(trusted=False)
    r.send("time", t=T0 + 50)
    assert r.result()[2] == P.OK and r.box.clock_trusted() and r.box.wall(r.now) == T0 + 50
    assert r.last()[5] == T0 + 50  # the result itself carries the time


# ---- refusals -----------------------------------------------------------------------------

FORGED = HP.WireKeys.of(bytes(32))
REFUSALS = {
    # name: (send it, reason, the rejected event's id)
    "forged_mac": (lambda r: r.raw(body(41), key=FORGED.cmd), P.BAD_MAC, 0),
    "sealed_for_another_topic": (lambda r: r.remote.receive(
        CMD_T, HP.seal(r.keys.cmd, ACK_T, HP.dumps(body(41))), r.now), P.BAD_MAC, 0),
    "replay": (lambda r: r.raw(body(40)), P.REPLAY, 40),
    "stale": (lambda r: r.raw(body(40 - 33)), P.STALE, 7),
    "malformed_json": (lambda r: r.raw(b'{"v":1,"box":'), P.MALFORMED, 0),
    "not_utf8": (lambda r: r.raw(b'{"v":1,"box":"\xff"}'), P.MALFORMED, 0),
    "not_an_object": (lambda r: r.raw(b"[1,2]"), P.MALFORMED, 0),
    "no_seq": (lambda r: r.raw({"v": 1, "box": BOX, "op": "state"}), P.MALFORMED, 0),
    "seq_zero": (lambda r: r.raw(body(0)), P.MALFORMED, 0),
    "seq_text": (lambda r: r.raw(body("5")), P.MALFORMED, 0),
    "no_envelope": (lambda r: r.remote.receive(CMD_T, HP.dumps(body(41)), r.now), P.MALFORMED, 0),
    "oversized": (lambda r: r.raw(body(41, pad="x" * 4000)), P.TOO_BIG, 0),
    "unknown_op": (lambda r: r.raw(body(41, op="explode")), P.UNKNOWN_OP, 41),
    "op_not_text": (lambda r: r.raw(body(41, op=3)), P.UNKNOWN_OP, 41),
    "wrong_box": (lambda r: r.raw(dict(body(41), box="box-8")), P.WRONG_BOX, 41),
    "bad_version": (lambda r: r.raw(dict(body(41), v=2)), P.BAD_VERSION, 41),
    "version_true": (lambda r: r.raw(dict(body(41), v=True)), P.BAD_VERSION, 41),
    "expired": (lambda r: r.raw(body(41, exp=T0 + 9)), P.EXPIRED, 41),
    "exp_not_int": (lambda r: r.raw(body(41, exp="soon")), P.MALFORMED, 41),
    "missing_field": (lambda r: r.raw(body(41, op="revoke")), P.MALFORMED, 41),
    "bad_code": (lambda r: r.raw(body(41, op="add", code=code(9)[:6])), P.MALFORMED, 41),
    "setting_text": (lambda r: r.raw(body(41, op="settings", set={"pulse_ms": "9"})), P.MALFORMED, 41),
    "unlock_comp_0": (lambda r: r.raw(body(41, op="unlock", comp=0)), P.MALFORMED, 41),
    "bad_ack": (lambda r: r.raw({"v": 1, "box": BOX, "acks": []}, topic=ACK_T), P.MALFORMED, 0),
    "ack_forged": (lambda r: r.raw({"v": 1, "box": BOX, "acks": [1]}, topic=ACK_T,
                                   key=FORGED.cmd), P.BAD_MAC, 0),
    "ack_wrong_box": (lambda r: r.raw({"v": 1, "box": "b", "acks": [1]}, topic=ACK_T), P.WRONG_BOX, 0),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_refused_message_changes_nothing_but_reports_rejected(name):
    r = Rig()
    r.send("add", code=code(1))  # seq 1
    r.send("state", seq=40)
    r.advance(20000)  # past exp
    send, why, seq = REFUSALS[name]
    before, pending = files(r.st), r.box.outbox.pending()
    window = (r.box.cmd_top, r.box.cmd_bits)
    send(r)
    after = files(r.st)
    log = after.pop("events.log")
    assert after == {k: v for k, v in before.items() if k != "events.log"}
    assert log.startswith(before["events.log"])  # one event appended, nothing else
    assert r.box.outbox.pending() == pending + 1
    assert r.last()[1:5] == (events.REJECTED, 0, seq, why)
    assert (r.box.cmd_top, r.box.cmd_bits) == window and r.box.codes.count() == 1
    assert not r.box.solenoid(1, r.now)


def test_an_untrusted_clock_refuses_every_time_bounded_command():
    # on main an untrusted clock skipped the exp check: a late unlock opened on arrival
    r = Rig(trusted=False)
    r.send("unlock", comp=1, exp=T0 + 120)
    assert r.last()[1] == events.REJECTED and r.last()[4] == P.NO_CLOCK
    r.send("state", exp=T0 + 120)
    assert r.last()[4] == P.NO_CLOCK and not r.box.solenoid(1, r.now)
    r.send("time", t=T0 + 1)
    assert r.result()[2] == P.OK
    r.send("state", exp=T0)
    assert r.last()[1] == events.REJECTED and r.last()[4] == P.EXPIRED
    r.send("state", exp=T0 + 120)
    assert r.result()[2] == P.OK


def test_after_a_reboot_without_time_the_saved_floor_still_refuses_a_late_unlock():
    r = Rig()
    r.advance(2 * 3_600_000, step=60_000)  # the hourly floor follows the trusted clock
    sent = T0 + 600  # an unlock sent while the box was offline, hours ago
    r.trusted = False
    r.reboot()
    r.send("unlock", comp=1, exp=sent + 120)
    assert r.last()[1] == events.REJECTED and r.last()[4] == P.EXPIRED  # the floor decides
    r.send("unlock", comp=1, exp=T0 + 10 * 3600)
    assert r.last()[4] == P.NO_CLOCK and not r.box.solenoid(1, r.now)  # it cannot decide


@pytest.mark.parametrize("op", ["unlock", "clear_throttle"])
def test_a_one_shot_command_without_a_short_exp_is_refused(op, rig):
    fields = {"comp": 1} if op == "unlock" else {}
    rig.send(op, exp=0, **fields)
    assert rig.last()[1] == events.REJECTED and rig.last()[4] == P.NO_EXP
    rig.send(op, exp=T0 + 2 * 86400, **fields)
    assert rig.last()[4] == P.NO_EXP and not rig.box.solenoid(1, rig.now)
    rig.send(op, **fields)
    assert rig.result()[2] == P.OK


def test_an_unlock_delivered_after_its_expiry_is_refused_as_expired(rig):
    seq = rig.send("unlock", comp=1, exp=T0 + 120)  # queued while the box was offline
    rig.box.cmd_top, rig.box.cmd_bits = seq - 1, 0  # (as if it came now)
    rig.advance(3 * 3600_000, step=60_000)
    rig.send("unlock", seq=seq + 1, comp=1, exp=T0 + 120)
    assert rig.last()[1] == events.REJECTED and rig.last()[4] == P.EXPIRED
    assert rig.last()[3] == seq + 1


def test_a_command_seq_may_not_jump_past_the_bound_so_the_window_never_runs_out(rig):
    # on main seq 2^32-1 was accepted and no command was ever taken again
    rig.send("state", seq=0xFFFFFFFF)
    assert rig.last()[1] == events.REJECTED and rig.last()[4] == P.SEQ_JUMP
    rig.send("state", seq=P.MAX_SEQ_JUMP + 1)  # exactly the bound above top 0... 
    assert rig.last()[4] == P.SEQ_JUMP or rig.result()[2] == P.OK
    rig.box.cmd_top, rig.box.cmd_bits = 0, 0
    rig.send("state", seq=P.MAX_SEQ_JUMP)
    assert rig.result()[2] == P.OK
    rig.send("rotate", seq=P.MAX_SEQ_JUMP + 1, gen=1,
             key=HP.wrap_key(rig.keys.cmd, P.MAX_SEQ_JUMP + 1, bytes(range(100, 132))))
    assert rig.remote.key_gen == 1  # later commands are taken as before


def test_a_time_command_that_goes_back_is_refused_and_reported(rig):
    rig.advance(600_000, step=10_000)
    rig.send("time", t=T0 - 3600)
    assert rig.box.outbox.get(rig.box.outbox.pending() - 2)[1:5] == (
        events.TIME_REFUSED, events.TIME_CMD, T0 - 3600, events.CLOCK_BACK)
    assert rig.result()[2] == P.BAD_VALUE and rig.box.wall(rig.now) >= T0 + 600
    rig.send("time", t=2 ** 32 - 5)  # far future: refused like far past
    assert rig.result()[2] == P.BAD_VALUE and rig.box.wall(rig.now) < T0 + 700


def test_messages_on_other_topics_are_ignored(rig):
    before = files(rig.st)
    rig.remote.receive(EVT_T, b"anything", rig.now)
    rig.remote.receive("parcelbox/v1/box-8/cmd", b"x", rig.now)
    assert files(rig.st) == before


def test_a_bug_inside_is_reported_as_malformed_and_opens_nothing(rig, monkeypatch):
    def boom(*a):
        raise RuntimeError("bug")
    monkeypatch.setattr(rig.box.codes, "add", boom)
    monkeypatch.setattr(rig.box, "remote_unlock", boom)
    rig.send("add", code=code(1))
    assert rig.last()[1] == events.REJECTED and rig.last()[4] == P.MALFORMED
    rig.send("unlock", comp=1)
    assert rig.last()[1] == events.REJECTED and not rig.box.solenoid(1, rig.now)
    assert rig.box.codes.count() == 0


def test_a_flash_error_while_applying_reports_flash_and_opens_nothing(rig):
    st = rig.st
    writes = []

    def failing(name, data):
        writes.append(name)
        if len(writes) == 2:  # the window went through; the grant does not
            raise OSError(28, "no space")
        MemStorage.replace(st, name, data)
    st.replace = failing
    rig.send("unlock", comp=1)
    assert rig.result()[2] == P.FLASH
    rig.advance(1000)
    assert not rig.box.solenoid(1, rig.now)


# A MemoryError is the box's shortage, not the backend's mistake: before, it was reported
# malformed (the backend heard its valid command was bad) and could leave the seq spent.
def test_a_memory_error_while_parsing_a_command_is_no_memory_and_the_same_command_again_applies(
        rig, monkeypatch):
    import parcelbox.remote as R
    real, calls = R._loads, []

    def short(body):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("memory allocation failed, allocating 4096 bytes")
        return real(body)
    monkeypatch.setattr(R, "_loads", short)
    window = (rig.box.cmd_top, rig.box.cmd_bits)
    t, p = HP.command(rig.keys, BOX, 1, "add", None, code=code(1))
    rig.remote.receive(t, p, rig.now)
    assert rig.last()[1:5] == (events.REJECTED, 0, 0, P.NO_MEMORY)  # no seq read yet
    assert (rig.box.cmd_top, rig.box.cmd_bits) == window and rig.box.codes.count() == 0
    rig.remote.receive(t, p, rig.now)  # the backend sends it again, same seq
    assert rig.result() == (P.ADD, 1, P.OK) and rig.box.codes.count() == 1


def test_a_memory_error_saving_the_window_names_the_command_and_leaves_its_seq_free(rig):
    st = rig.st
    failed = []

    def short(name, data):
        if name.startswith("state") and not failed:
            failed.append(name)
            raise MemoryError()
        MemStorage.replace(st, name, data)
    st.replace = short
    window = (rig.box.cmd_top, rig.box.cmd_bits)
    t, p = HP.command(rig.keys, BOX, 7, "revoke", None, id=1)
    rig.remote.receive(t, p, rig.now)
    assert failed and rig.last()[1:5] == (events.REJECTED, 0, 7, P.NO_MEMORY)
    assert (rig.box.cmd_top, rig.box.cmd_bits) == window  # RAM as before the save
    rig.remote.receive(t, p, rig.now)
    assert rig.result() == (P.REVOKE, 7, P.UNKNOWN_CODE)  # taken, not a replay


def test_a_memory_error_after_the_window_is_saved_is_no_memory_and_spends_the_seq(
        rig, monkeypatch):
    def short(*a):
        raise MemoryError()
    monkeypatch.setattr(rig.box.codes, "add", short)
    seq = rig.send("add", code=code(1))
    assert rig.last()[1:5] == (events.REJECTED, 0, seq, P.NO_MEMORY)
    monkeypatch.undo()
    rig.send("add", seq=seq, code=code(1))
    assert rig.last()[1:5] == (events.REJECTED, 0, seq, P.REPLAY)  # the seq is spent...
    rig.send("add", code=code(1))
    assert rig.result()[2] == P.OK and rig.box.codes.count() == 1  # ...a new one applies


def test_a_rotation_short_of_memory_for_its_new_key_keeps_the_old_one_until_the_boot(
        rig, monkeypatch):
    import parcelbox.remote as R
    new = bytes(range(100, 132))
    real = R.Hmac
    made = []

    def short(key):
        made.append(1)
        if len(made) == 2:  # the new event key, after the command key: neither is taken
            raise MemoryError()
        return real(key)
    monkeypatch.setattr(R, "Hmac", short)
    seq = rig.seq + 1
    rig.send("rotate", gen=1, key=HP.wrap_key(rig.keys.cmd, seq, new))
    assert rig.last()[1:5] == (events.REJECTED, 0, seq, P.NO_MEMORY)
    assert rig.remote.key_gen == 0
    rig.send("state")  # the old key still works in this boot
    assert rig.result()[2] == P.OK
    monkeypatch.undo()
    rig.keys = HP.WireKeys.of(KEY, new)
    rig.reboot()  # the key file was written: the boot takes it
    assert rig.remote.key_gen == 1
    rig.send("state")
    assert rig.result()[2] == P.OK


def test_receive_never_raises_when_even_the_no_memory_report_cannot_be_written(
        rig, monkeypatch):
    import parcelbox.remote as R

    def short(*a):
        raise MemoryError()
    monkeypatch.setattr(R, "_loads", short)
    monkeypatch.setattr(rig.box, "event", short)
    pending = rig.box.outbox.pending()
    rig.send("state")
    assert rig.box.outbox.pending() == pending


def test_rejected_events_are_rate_limited_and_count_the_suppressed(rig):
    for _ in range(8):
        rig.raw(body(5), key=FORGED.cmd)
    rej = [e for e in (rig.box.outbox.get(i) for i in range(rig.box.outbox.pending()))
           if e[1] == events.REJECTED]
    assert len(rej) == 5 and all(e[4] == P.BAD_MAC for e in rej)
    rig.advance(59000, step=1000)
    rig.raw(body(5), key=FORGED.cmd)
    assert rig.box.outbox.pending() == 1 + 5  # still suppressed: 4 now
    rig.advance(1000)
    rig.raw(b"x", topic=ACK_T)
    assert rig.last()[1:5] == (events.REJECTED, 0, 0, P.MALFORMED | 4 << 8)
    rig.raw(body(5), key=FORGED.cmd)
    assert rig.last()[4] == P.MALFORMED | 4 << 8  # that one was suppressed again
    rig.advance(300000, step=1000)
    for _ in range(5):
        rig.raw(body(5), key=FORGED.cmd)
    assert rig.last()[4] >> 8 == 0 and rig.last()[4] & 0xFF == P.BAD_MAC  # full burst again


# ---- publishing, resending, acks ----------------------------------------------------------

def acks(rig, seqs):
    t, p = HP.ack(rig.keys, BOX, seqs)
    rig.remote.receive(t, p, rig.now)


def test_at_most_8_events_are_in_flight_and_acks_let_more_go(rig):
    for _ in range(19):
        rig.send("state")
    rig.remote.connected(rig.now)
    out = rig.drain()
    assert [m[0] for m in out] == [STATE_T] + [EVT_T] * 8
    seqs = [e.seq for e in rig.published_events(out)]
    assert seqs == list(range(1, 9))
    assert rig.remote.next_deadline(rig.now) == rig.now + 30000
    acks(rig, [3, 1, 2, 99])  # 99 was never made: ignored, and reported
    assert rig.last()[1:5] == (events.REJECTED, 0, 99, P.UNSENT_ACK)
    assert [e.seq for e in rig.published_events(rig.drain())] == [9, 10, 11]
    assert rig.box.outbox.pending() == 20 - 3 + 1


def test_an_ack_for_a_seq_made_but_never_published_is_ignored_and_reported(rig):
    # on main any pending seq was taken: a buggy backend made an event vanish unsent
    rig.remote.connected(rig.now)
    rig.drain()
    seq = rig.send("state")  # its result event is made; the box has not published it
    res = rig.box.outbox.next_seq - 1
    acks(rig, [res])
    ob = rig.box.outbox
    assert ob.seq(0) <= res and res in [ob.seq(i) for i in range(ob.pending())]
    assert rig.last()[1:5] == (events.REJECTED, 0, res, P.UNSENT_ACK)
    assert seq
    rig.drain()
    acks(rig, [res])  # published now: taken
    assert res not in [ob.seq(i) for i in range(ob.pending())]


def test_an_ack_from_before_a_reboot_is_ignored_until_the_event_goes_again(rig):
    rig.remote.connected(rig.now)
    rig.drain()
    rig.reboot()  # the events published before are pending again
    ob = rig.box.outbox
    first = ob.seq(0)
    n = ob.pending()
    acks(rig, [first])  # a late ack: it may be for this very event, but not provably
    assert ob.pending() == n and rig.last()[1] != events.REJECTED  # no alarm either
    rig.remote.connected(rig.now)
    rig.drain()
    acks(rig, [first])
    assert ob.pending() == n - 1


def test_unacked_events_go_again_after_30_s_and_all_after_a_reconnect(rig):
    rig.remote.connected(rig.now)
    rig.drain()
    rig.send("state")
    rig.send("state")
    rig.drain()
    rig.advance(29990)
    assert rig.drain() == []
    rig.advance(10)
    again = rig.published_events(rig.drain())
    assert [e.seq for e in again] == [1, 2, 3]
    acks(rig, [2])
    rig.remote.connected(rig.now)
    out = rig.drain()
    assert out[0][0] == STATE_T and [e.seq for e in rig.published_events(out)] == [1, 3]


def test_acked_events_leave_flash_and_a_replayed_ack_changes_nothing(rig):
    rig.send("state")
    rig.remote.connected(rig.now)
    rig.drain()
    t, p = HP.ack(rig.keys, BOX, [1, 2])
    rig.remote.receive(t, p, rig.now)
    assert rig.box.outbox.pending() == 0
    before = files(rig.st)
    rig.remote.receive(t, p, rig.now)
    assert files(rig.st) == before
    rig.reboot()
    assert [rig.box.outbox.get(i)[1] for i in range(rig.box.outbox.pending())] == [events.BOOT]


def test_the_state_summary_is_published_every_state_every_s():
    r = Rig(settings={"state_every_s": 60})
    r.remote.connected(r.now)
    r.drain()
    assert r.remote.next_deadline(r.now) == r.now + 30000  # the boot event's resend first
    acks(r, [1])
    assert r.remote.next_deadline(r.now) == r.now + 60000
    r.advance(60000, step=1000)
    out = r.drain()
    assert [m[0] for m in out] == [STATE_T]


def test_an_event_dropped_by_a_full_outbox_leaves_the_in_flight_window():
    r = Rig(settings={"outbox_capacity": 8})
    r.remote.connected(r.now)
    r.drain()
    for _ in range(7):
        r.send("state")
    assert len(r.drain()) == 8 and r.remote.poll(r.now) is None
    r.send("state")  # drops the oldest non-security event
    out = r.drain()
    assert [e.seq for e in r.published_events(out)] == [9]
    assert r.remote.next_deadline(r.now) != r.now


# ---- power cuts ---------------------------------------------------------------------------

def cut_everywhere(setup, act, check, step=7):
    n = 0
    while True:
        r = setup()
        r.st.cut_after(n)
        try:
            act(r)
        except PowerCut:
            r.reboot()
            check(r, False)
            n += step
            continue
        r.st.cut_after(-1)  # it went through: no more cuts
        check(r, True)
        return n


def test_power_cut_at_any_byte_of_a_sync_end_leaves_the_old_or_the_new_set():
    old = [code(i) for i in range(1, 6)]
    new = [code(i, uses=2) for i in range(3, 40)]
    base = Rig()
    sync(base, old)
    base.send("sync_begin", sync=2, count=len(new), digest=HP.set_digest(new).hex())
    base.send("sync_part", sync=2, part=0, codes=new)
    snap = files(base.st)

    def setup():
        r = Rig(MemStorage({k: bytearray(v) for k, v in snap.items()}))
        r.seq = base.seq
        return r

    def check(r, done):
        d = r.box.codes.set_digest()
        assert d in (HP.set_digest(old), HP.set_digest(new))
        assert done <= (d == HP.set_digest(new))
    n = cut_everywhere(setup, lambda r: r.send("sync_end", sync=2, parts=1), check)
    assert n > 37 * 32


def test_power_cut_at_any_byte_of_a_rotate_leaves_one_usable_key():
    new = bytes(range(100, 132))

    def act(r):
        r.send("rotate", gen=1, key=HP.wrap_key(r.keys.cmd, 1, new))

    def check(r, done):
        gen = r.remote.key_gen
        assert gen in (0, 1) and done <= (gen == 1)
        if gen:
            assert r.box.cmd_top == 1  # the window went first
        r.keys = HP.WireKeys.of(KEY, new if gen else None)
        r.send("state", seq=2)
        assert r.result()[2] == P.OK
    cut_everywhere(Rig, act, check, step=3)


def test_power_cut_at_any_byte_never_applies_a_command_twice():
    def act(r):
        r.send("add", code=code(1))

    def check(r, done):
        added = r.box.codes.count() == 1
        seen = r.box.cmd_top == 1
        assert done <= added and added <= seen  # applied only after its seq was saved
        r.seq = 0
        r.send("add", code=code(1))  # the same command again
        if seen:
            assert r.last()[1] == events.REJECTED and r.last()[4] == P.REPLAY
        else:
            assert r.result()[2] == P.OK
    cut_everywhere(Rig, act, check, step=3)


# ---- the published vectors ----------------------------------------------------------------

def test_the_box_accepts_every_vector_command_in_order():
    v = json.loads((Path(__file__).resolve().parents[1] / "protocol_vectors.json").read_text())
    key = bytes.fromhex(v["box_key"])
    r = Rig(box_id=v["box_id"], key=key, trusted=False)
    r.box.set_time(1795000000, r.now)
    for c in v["commands"]:
        r.remote.receive(c["topic"], c["payload"].encode(), r.now)
        op, seq, st = r.result()
        assert (P.OPS[op], seq) == (c["op"], c["seq"])
        assert st == (P.OK | P.RESTART_PENDING if c["op"] == "settings" else P.OK), c["name"]
        r.advance(100)
    assert r.remote.key_gen == 1
    assert r.box.codes.set_digest().hex() == v["set_digest"]["digest"]


def test_a_remote_unlock_whose_grant_cannot_be_saved_leaves_no_grant_behind(rig):
    st = rig.st
    fail = [True]

    def failing(name, data):
        if name.startswith("state.") and fail[0] and rig.box.opener_role[0]:
            raise OSError(28, "no space")  # the grant's save, not the window's
        MemStorage.replace(st, name, data)
    st.replace = failing
    seq = rig.send("unlock", comp=1)
    assert rig.result() == (P.UNLOCK, seq, P.FLASH)
    assert rig.box.opener_role[0] == 0 and rig.box.grant_code[0] == 0  # RAM as on flash
    fail[0] = False
    rig.send("clear_throttle")  # any later state save
    st.replace = lambda name, data: MemStorage.replace(st, name, data)
    rig.reboot()
    kinds = [rig.box.outbox.get(i)[1] for i in range(rig.box.outbox.pending())]
    assert events.NOT_OPENED not in kinds  # no unlock that never was


def test_a_sync_end_that_cannot_read_its_staged_parts_reports_flash_not_ok(rig):
    rig.send("add", code=code(500))
    new = [code(i) for i in range(1, 5)]
    rig.send("sync_begin", sync=4, count=4, digest=HP.set_digest(new).hex())
    rig.send("sync_part", sync=4, part=0, codes=new)
    st = rig.st
    st.open = lambda name: None if name == remotestore.STAGE else MemStorage.open(st, name)
    rig.send("sync_end", sync=4, parts=1)  # Storage.open: None on a read error too
    assert rig.result()[2] == P.FLASH
    assert rig.box.codes.count() == 1  # the old set, untouched


def test_settings_are_checked_together_with_those_still_waiting_for_a_restart(rig):
    rig.send("settings", set={"lockout_base_ms": 600000})  # fine with lockout_max 900000
    assert rig.result()[2] == P.OK | P.RESTART_PENDING
    rig.send("settings", set={"lockout_max_ms": 60000})  # fine with the running base only
    assert rig.result()[2] == P.BAD_VALUE
    rig.reboot()
    assert rig.box.cfg["lockout_base_ms"] == 600000  # what was reported ok took effect


def test_a_damaged_state_copy_never_lets_the_last_command_run_again(rig):
    rig.send("state")
    t, p = HP.command(rig.keys, BOX, rig.seq + 1, "state")
    rig.remote.receive(t, p, rig.now)  # its window is only in the newest state copy
    assert rig.result() == (P.STATE, rig.seq + 1, P.OK)
    newest = "state.%d" % (rig.box.state.gen & 1)
    data = bytearray(rig.st.files[newest])
    data[8] ^= 0xFF  # bit rot: the boot falls back to the older copy
    rig.st.files[newest] = bytes(data)
    rig.reboot()
    top = rig.box.cmd_top
    rig.remote.receive(t, p, rig.now)  # the same command again
    assert rig.last()[1] == events.REJECTED and rig.last()[4] & 0xFF in (P.REPLAY, P.STALE)
    assert rig.box.cmd_top == top
    # the backend continues above the box's cmd_seq (from its state summary)
    rig.seq = rig.box.cmd_top
    rig.send("state")
    assert rig.result()[2] == P.OK


# ---- a sync never undoes a newer add or revoke ---------------------------------------------

def test_an_add_newer_than_a_staged_sync_drops_it_and_its_end_is_sync_order(rig):
    new = [code(1), code(2)]
    begin = rig.send("sync_begin", sync=50, count=2, digest=HP.set_digest(new).hex())
    rig.send("sync_part", sync=50, part=0, codes=new)
    rig.send("add", code=code(7))  # issued after the sync's set was taken
    rig.send("sync_end", sync=50, parts=1)
    assert rig.result()[2] == P.SYNC_ORDER and rig.box.codes.slot_of(7) >= 0
    assert begin


def test_a_sync_older_than_an_applied_revoke_is_refused_even_after_a_reboot(rig):
    rig.send("add", code=code(3))
    old = [code(3)]  # the set as it was before the revoke below
    rig.seq += 5  # the sync's commands were numbered before the revoke...
    revoke = rig.send("revoke", id=3)  # ...which the box gets first
    rig.reboot()
    rig.send("sync_begin", seq=revoke - 5, sync=revoke - 5, count=1,
             digest=HP.set_digest(old).hex())
    assert rig.result()[2] == P.SYNC_ORDER
    rig.send("sync_part", seq=revoke - 4, sync=revoke - 5, part=0, codes=old)
    rig.send("sync_end", seq=revoke - 3, sync=revoke - 5, parts=1)
    assert rig.box.codes.slot_of(3) == -1  # the revoked code never comes back


# ---- uses in events: what the backend mirrors ----------------------------------------------

def test_opened_and_not_opened_carry_the_uses_the_code_has_left(rig):
    rig.send("add", code=code(1, role=3, comp=1, uses=3))
    for ch in "%06d" % 100001:
        rig.box.key(ord(ch), rig.now)
        rig.advance(200)
    rig.door(1, True)
    rig.door(1, False)
    opened = [e for e in (rig.box.outbox.get(i) for i in range(rig.box.outbox.pending()))
              if e[1] == events.OPENED][-1]
    assert opened[4] == 3 | 2 << 8  # role owner, 2 uses left
    rig.advance(4000)
    for ch in "%06d" % 100001:
        rig.box.key(ord(ch), rig.now)
        rig.advance(200)
    rig.advance(20000)  # never opened: the use comes back
    e = rig.last()
    assert e[1] == events.NOT_OPENED and e[4] == 0 | 2 << 8


def test_a_service_mode_unlock_never_opened_gives_the_technician_code_no_use():
    # on main the relock gave the tech code a use it never spent (3 uses became 4)
    rig = Rig()
    rig.send("add", code=code(4, role=4, comp=0, uses=3))
    for ch in "%06d" % 100004 + "1#":
        rig.box.key(ord(ch), rig.now)
        rig.advance(200)
    assert rig.box.opener_role[0] == 4
    rig.advance(20000)
    e = rig.last()
    assert e[1] == events.NOT_OPENED and e[4] == 4 | 0xFFFF << 8  # not given back, no count
    assert rig.box.codes.fields(rig.box.codes.slot_of(4))[3] == 3


def test_a_wire_key_file_that_went_back_to_an_older_generation_is_reported_not_used():
    # found by the deterministic simulation (seed 24): the older key was taken, and box and
    # backend held different keys for good; now the box falls back to the box key, as when
    # the file is lost, and says so (the backend follows a key_gen 0 summary)
    rig = Rig()
    rig.send("rotate", gen=1, key=HP.wrap_key(rig.keys.cmd, rig.seq + 1, bytes(range(100, 132))))
    old = bytes(rig.st.files[remotestore.WIRE])
    k1 = HP.WireKeys.of(KEY, bytes(range(100, 132)))
    rig.keys = k1
    rig.send("rotate", gen=2, key=HP.wrap_key(k1.cmd, rig.seq + 1, bytes(range(140, 172))))
    assert rig.remote.key_gen == 2
    rig.st.files[remotestore.WIRE] = bytearray(old)  # LittleFS fell back to an older commit
    rig.reboot()
    assert rig.remote.key_gen == 0
    rig.remote.connected(rig.now)
    assert rig.last()[1:5] == (events.STORE_CORRUPT, 0, 0, events.FILE_KEY | 4 << 8)


# ---- late and straddling code commands (found by the deterministic simulation) ----------

def type_code(rig, i):
    for ch in "%06d" % (100000 + i):
        rig.box.key(ord(ch), rig.now)
        rig.advance(200)


def test_a_sync_that_began_before_a_use_does_not_give_the_use_back(rig):
    # finding G (seeds 21023, 33015): the sync carried the uses the backend had counted
    # before the code was used; its end gave the use back and a used-up code opened again
    rig.send("add", code=code(1, role=3, comp=1, uses=1))
    new = [code(1, role=3, comp=1, uses=1), code(2)]
    rig.send("sync_begin", sync=60, count=2, digest=HP.set_digest(new).hex())
    rig.send("sync_part", sync=60, part=0, codes=new)
    type_code(rig, 1)  # the last use, between the sync's begin and its end
    rig.door(1, True)
    rig.door(1, False)
    s = rig.box.codes.slot_of(1)
    assert rig.box.codes.fields(s)[3] == 0
    rig.send("sync_end", sync=60, parts=1)
    assert rig.result()[2] == P.OK and rig.box.codes.count() == 2
    assert rig.box.codes.fields(rig.box.codes.slot_of(1))[3] == 0  # the fewer uses kept
    assert rig.box.codes.set_digest() == HP.set_digest(new)  # the set is the backend's
    rig.reboot()
    assert rig.box.codes.fields(rig.box.codes.slot_of(1))[3] == 0  # and so on flash


def test_a_sync_gives_a_code_with_the_same_id_but_another_digest_its_own_uses(rig):
    rig.send("add", code=code(1, uses=1))
    other = HP.code_array(1, code_digest(KEY, "123123"), 1, 1, 3, 0, 0)
    sync(rig, [other])
    assert rig.box.codes.fields(rig.box.codes.slot_of(1))[3] == 3


def test_an_add_delivered_after_a_newer_revoke_of_it_is_refused_and_asks_for_a_sync(rig):
    # finding H (seeds 22423, 23080): the broker held add #n; revoke #n+1 of the same code
    # arrived first and was acknowledged; the late add then put the revoked code back
    late = rig.seq + 1
    rig.seq += 1
    rig.send("add", code=code(8))
    rig.send("revoke", id=8)
    rig.send("add", seq=late, code=code(4))
    assert rig.result() == (P.ADD, late, P.SYNC_ORDER) and rig.box.codes.count() == 0
    rig.reboot()  # the rule holds across a power cut (the state file keeps the seq)
    rig.send("revoke", seq=late - 0, id=8)  # replayed: the window refuses it anyway
    rig.send("add", seq=rig.seq - 1, code=code(8))
    assert rig.box.codes.slot_of(8) == -1


def test_a_revoke_delivered_after_a_newer_add_is_refused_too(rig):
    late = rig.seq + 1
    rig.seq += 1
    rig.send("add", code=code(5))
    rig.send("revoke", seq=late, id=5)
    assert rig.result()[2] == P.SYNC_ORDER and rig.box.codes.slot_of(5) >= 0


# ---- the wire key's generation and fingerprint ---------------------------------------------

def rotate(rig, gen, key):
    rig.send("rotate", gen=gen, key=HP.wrap_key(rig.keys.cmd, rig.seq + 1, key))
    assert rig.result()[2] == P.OK
    rig.keys = HP.WireKeys.of(rig.key, key)


def test_an_older_wire_key_file_of_the_same_generation_is_void(rig):
    # finding D' (seed 20284): after a fall back to the box key generations start again at
    # 1, so the first rotation's file, back from an older version, passed for the newest
    k1, k2 = bytes(range(1, 33)), bytes(range(50, 82))
    rotate(rig, 1, k1)
    old = bytes(rig.st.files[remotestore.WIRE])
    rig.st.remove(remotestore.WIRE)
    rig.reboot()  # both copies gone: the box key, reported
    assert rig.remote.key_gen == 0
    rig.keys = HP.WireKeys.of(rig.key)
    rig.remote.connected(rig.now)
    assert rig.last()[1:5] == (events.STORE_CORRUPT, 0, 0, events.FILE_KEY | 4 << 8)
    rotate(rig, 1, k2)  # generation 1 again, another key
    rig.st.files[remotestore.WIRE] = bytearray(old)  # the file back at its older version
    rig.reboot()
    assert rig.remote.key_gen == 0  # void: the box key, never k1
    rig.remote.connected(rig.now)
    assert rig.last()[1:5] == (events.STORE_CORRUPT, 0, 0, events.FILE_KEY | 4 << 8)



def test_the_state_summary_carries_the_clocks_slack_only_when_there_is_one(rig):
    rig.remote.connected(rig.now)
    assert "slack" not in state_of([rig.keys], rig.drain()[0][1])
    rig.trusted = False
    rig.reboot()  # no time source: the clock may lag by the uptime the last save missed
    rig.remote.connected(rig.now)
    st = state_of([rig.keys], rig.drain()[0][1])
    assert st["slack"] == 3660 and st["ref"]
    # a backend `time` that answers another summary (or none) may be stale: the slack stays
    rig.send("time", exp=T0 + 200, t=T0 + 80, ref=st["ref"] + 1)
    assert rig.result()[2] == P.OK and rig.box.clock_slack() > 0
    rig.advance(1500)
    rig.send("time", exp=T0 + 200, t=T0 + 80, ref=st["ref"])  # answers it, 2 s later
    assert rig.result()[2] == P.OK and rig.box.clock_slack() == 2
