# Tests for parcelbox.protocol: the published vectors byte for byte (keys, digests, MACs,
# event and state bodies, the wrap), the envelope's checks, codes, op fields, the window.
import hashlib
import hmac
import json
import struct
from pathlib import Path

import pytest

from memflash import MemStorage
from parcelbox import events, protocol as P
from parcelbox.codestore import CodeStore, set_digest_of
from parcelbox.hmac256 import Hmac, derive

V = json.loads((Path(__file__).resolve().parents[1] / "protocol_vectors.json").read_text())
BOX_KEY = bytes.fromhex(V["box_key"])
BOX = V["box_id"]
WIRE1 = bytes.fromhex(V["rotation"]["new_wire_key"])


def keys_of_gen(gen):
    return P.wire_keys(BOX_KEY if gen == 0 else WIRE1)


def record(a):
    return struct.pack("<I16sBBHII", *P.parse_code(a))


# ---- the vectors --------------------------------------------------------------------

def test_purpose_keys_match_the_vectors():
    assert derive(BOX_KEY, b"code").hex() == V["keys"]["code"]
    cmd, evt = P.wire_keys(BOX_KEY)
    assert (cmd.hex(), evt.hex()) == (V["keys"]["cmd"], V["keys"]["evt"])
    cmd, evt = P.wire_keys(WIRE1)
    assert (cmd.hex(), evt.hex()) == (V["rotation"]["keys"]["cmd"], V["rotation"]["keys"]["evt"])


def test_code_digests_match_the_vectors():
    store = CodeStore(MemStorage(), derive(BOX_KEY, b"code"), 16)
    for c in V["codes"]:
        assert store.digest(c["code"].encode()).hex() == c["array"][1]
        assert P.parse_code(c["array"])[1] == bytes.fromhex(c["array"][1])


def test_set_digest_matches_the_vectors_in_any_order():
    recs = [record(a) for a in V["set_digest"]["codes"]]
    assert set_digest_of(recs).hex() == V["set_digest"]["digest"]
    assert set_digest_of(reversed(recs)).hex() == V["set_digest"]["digest"]
    assert set_digest_of([]).hex() == V["set_digest"]["empty"]


def test_topics_match_the_vectors():
    t = V["topics"]
    assert P.topics(BOX) == (t["cmd"], t["ack"], t["evt"], t["state"], t["status"])


def test_status_payloads_match_the_vectors():
    assert P.ONLINE.decode() == V["status"]["online"]
    assert P.OFFLINE.decode() == V["status"]["offline"]


@pytest.mark.parametrize("ev", V["events"], ids=lambda e: "%d-%s" % (e["seq"], e["type"]))
def test_event_body_and_payload_match_the_vectors(ev):
    assert events.NAMES[ev["kind"]] == ev["type"]
    body = P.event_body(BOX, ev["seq"], ev["kind"], ev["comp"], ev["id"], ev["arg"], ev["t"])
    assert body.decode() == ev["body"]
    evt = Hmac(keys_of_gen(ev["key_gen"])[1])
    assert P.seal(evt, ev["topic"], body).decode() == ev["payload"]


def test_state_body_and_payload_match_the_vectors():
    s = V["state"]
    f = dict(s["fields"])
    f["digest"] = bytes.fromhex(f["digest"])
    body = P.state_body(BOX, *[f[k] for k in ("t", "boots", "codes", "active", "capacity",
                                              "digest", "pending", "next_seq", "cmd_seq",
                                              "key_gen", "occupied", "failures", "wait_s",
                                              "faults")])
    assert body.decode() == s["body"]
    evt = Hmac(keys_of_gen(s["fields"]["key_gen"])[1])
    assert P.seal(evt, s["topic"], body).decode() == s["payload"]


def test_wrap_pad_and_unwrap_match_the_vectors():
    r = V["rotation"]
    cmd = P.wire_keys(BOX_KEY)[0]
    assert P.wrap_pad(cmd, r["seq"]).hex() == r["pad"]
    assert P.unwrap(cmd, r["seq"], bytes.fromhex(r["wrapped"])) == WIRE1
    assert P.unwrap(cmd, r["seq"], WIRE1).hex() == r["wrapped"]  # wrapping twice unwraps


@pytest.mark.parametrize("c", V["commands"], ids=lambda c: c["name"])
def test_every_vector_command_opens_under_its_key_and_has_valid_fields(c):
    gen = 1 if c["seq"] > V["rotation"]["seq"] else 0
    body = P.open_payload(Hmac(keys_of_gen(gen)[0]), c["topic"], c["payload"].encode())
    assert bytes(body).decode() == c["body"]
    d = json.loads(bytes(body))
    op = P.OPS.index(d["op"])
    assert op and P.op_fields(op, d) is not None
    # under the other generation's key the same payload is forged
    other = Hmac(keys_of_gen(1 - gen)[0])
    assert P.open_payload(other, c["topic"], c["payload"].encode()) == P.BAD_MAC


def test_vector_ack_opens_under_the_cmd_key():
    a = V["ack"]
    body = P.open_payload(Hmac(keys_of_gen(0)[0]), a["topic"], a["payload"].encode())
    assert bytes(body).decode() == a["body"]


# ---- the envelope ---------------------------------------------------------------------

CMD = Hmac(b"c" * 32)
TOPIC = "parcelbox/v1/b1/cmd"


def test_seal_is_hex_mac_of_topic_newline_body_then_space_then_body():
    body = b'{"v":1}'
    want = hmac.new(b"c" * 32, TOPIC.encode() + b"\n" + body, hashlib.sha256).hexdigest()
    assert P.seal(CMD, TOPIC, body) == want.encode() + b" " + body
    assert P.open_payload(CMD, TOPIC.encode(), P.seal(CMD, TOPIC, body)) == body


@pytest.mark.parametrize("payload, why", [
    (b"", P.MALFORMED),
    (b"a" * 64, P.MALFORMED),
    (b"a" * 64 + b"x{}", P.MALFORMED),
    (b"A" * 64 + b" {}", P.MALFORMED),  # hex is lowercase
    (b"g" * 64 + b" {}", P.MALFORMED),
    (b"a" * 63 + b" {}", P.MALFORMED),
    (b"a" * 64 + b" {}", P.BAD_MAC),
    (b"a" * 64 + b" " + b"x" * 4031, P.BAD_MAC),
    (b"a" * 64 + b" " + b"x" * 4032, P.TOO_BIG),
])
def test_open_refuses_what_is_not_a_sealed_payload(payload, why):
    assert P.open_payload(CMD, TOPIC, payload) == why


def test_a_payload_is_bound_to_its_topic_and_its_body():
    p = P.seal(CMD, TOPIC, b'{"v":1}')
    assert P.open_payload(CMD, "parcelbox/v1/b2/cmd", p) == P.BAD_MAC
    assert P.open_payload(CMD, "parcelbox/v1/b1/ack", p) == P.BAD_MAC
    assert P.open_payload(CMD, TOPIC, p[:-1] + b"]") == P.BAD_MAC
    assert P.open_payload(Hmac(b"d" * 32), TOPIC, p) == P.BAD_MAC


def test_the_mac_check_does_not_stop_at_the_first_differing_byte(monkeypatch):
    seen = []
    monkeypatch.setattr(P, "equal", lambda a, b: seen.append((len(a), len(b))) or False)
    assert P.open_payload(CMD, TOPIC, b"0" * 64 + b" {}") == P.BAD_MAC
    assert seen == [(32, 32)]  # one constant-time compare of the whole MAC


# ---- ids, bodies --------------------------------------------------------------------

@pytest.mark.parametrize("box_id", ["", "a" * 33, "a b", "a/b", "é", "a+", 7, b"ab"])
def test_bad_box_ids_are_refused(box_id):
    with pytest.raises(ValueError):
        P.topics(box_id)


def test_box_ids_of_every_allowed_character_are_fine():
    assert P.topics("AZaz09_-")[0] == "parcelbox/v1/AZaz09_-/cmd"
    assert P.topics("x" * 32)


def test_event_body_of_an_unknown_kind_still_parses():
    body = P.event_body("b", 5, 200, 1, 2, 3, 4)
    assert json.loads(body)["type"] == "unknown"


def test_event_body_carries_u32_extremes_exactly():
    body = P.event_body("b", 0xFFFFFFFF, events.RESULT, 255, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    d = json.loads(body)
    assert d["seq"] == d["id"] == d["arg"] == d["t"] == 0xFFFFFFFF and b" " not in body


# ---- codes and op fields ----------------------------------------------------------------

GOOD = [7, "00112233445566778899aabbccddeeff", 2, 0, 65535, 100, 200]


def test_a_code_array_becomes_a_code_store_record():
    assert P.parse_code(GOOD) == (7, bytes.fromhex(GOOD[1]), 2, 0, 65535, 100, 200)
    assert P.parse_code([1, GOOD[1], 1, 32, 1, 0, 0]) is not None
    assert P.parse_code([0xFFFFFFFF, GOOD[1], 4, 1, 1, 0xFFFFFFFF, 0]) is not None


@pytest.mark.parametrize("i, value", [
    (0, 0), (0, 2 ** 32), (0, True), (0, 1.0), (0, "7"),
    (1, "00"), (1, GOOD[1] + "00"), (1, "zz" * 16), (1, 5),
    (2, 0), (2, 5), (2, False),
    (3, 33), (3, -1),
    (4, 0), (4, 65536),
    (5, -1), (5, 2 ** 32),
    (6, 99),  # ends before it starts
])
def test_a_code_array_with_a_field_out_of_range_is_refused(i, value):
    a = list(GOOD)
    a[i] = value
    assert P.parse_code(a) is None


@pytest.mark.parametrize("a", [None, {}, "x", GOOD[:6], GOOD + [0], tuple(GOOD)])
def test_a_code_that_is_not_an_array_of_seven_is_refused(a):
    assert P.parse_code(a) is None


FIELDS = {
    "add": {"code": GOOD},
    "revoke": {"id": 3},
    "sync_begin": {"sync": 1, "count": 2, "digest": "ab" * 16},
    "sync_part": {"sync": 1, "part": 0, "codes": [GOOD]},
    "sync_end": {"sync": 1, "parts": 1},
    "unlock": {"comp": 1},
    "settings": {"set": {"pulse_ms": 500, "submit_on_length": False}},
    "rotate": {"gen": 1, "key": "cd" * 32},
    "time": {"t": 1795000000},
}

BAD_FIELDS = [
    ("add", {"code": GOOD[:6]}), ("add", {}),
    ("revoke", {"id": 0}), ("revoke", {"id": "3"}),
    ("sync_begin", {"sync": 1, "count": 2, "digest": "ab" * 15}),
    ("sync_begin", {"sync": -1, "count": 2, "digest": "ab" * 16}),
    ("sync_part", {"sync": 1, "part": 0, "codes": [GOOD, GOOD[:3]]}),
    ("sync_part", {"sync": 1, "part": 0, "codes": GOOD}),
    ("sync_part", {"sync": 1, "codes": [GOOD]}),
    ("sync_end", {"sync": 1, "parts": True}),
    ("unlock", {"comp": 0}), ("unlock", {"comp": 33}),
    ("settings", {"set": {}}), ("settings", {"set": {"pulse_ms": "500"}}),
    ("settings", {"set": [1]}), ("settings", {"set": {"pulse_ms": 1.5}}),
    ("rotate", {"gen": 0, "key": "cd" * 32}), ("rotate", {"gen": 1, "key": "cd" * 31}),
    ("time", {"t": 0}), ("time", {"t": None}),
]


@pytest.mark.parametrize("op", sorted(FIELDS))
def test_op_fields_take_what_the_op_needs(op):
    assert P.op_fields(P.OPS.index(op), dict(FIELDS[op])) is not None


@pytest.mark.parametrize("op, fields", BAD_FIELDS, ids=lambda x: str(x)[:30])
def test_op_fields_refuse_a_missing_or_bad_field(op, fields):
    assert P.op_fields(P.OPS.index(op), fields) is None


def test_ops_without_fields_take_none():
    assert P.op_fields(P.STATE, {}) == () == P.op_fields(P.CLEAR_THROTTLE, {"x": 1})


# ---- the anti-replay window -----------------------------------------------------------

def accept(window, seq):
    assert P.window_check(*window, seq) == 0
    return P.window_mark(*window, seq)


def test_window_accepts_each_seq_once_in_any_order_within_32():
    w = (0, 0)
    for seq in (5, 3, 4, 1, 2, 9, 6):
        w = accept(w, seq)
    assert w[0] == 9
    for seq in range(1, 10):
        if seq in (7, 8):
            continue
        assert P.window_check(*w, seq) == P.REPLAY
    w = accept(w, 8)
    w = accept(w, 7)


def test_window_edge_32_below_is_open_33_below_is_stale():
    w = accept((0, 0), 100)
    assert P.window_check(*w, 68) == 0  # 32 below
    assert P.window_check(*w, 67) == P.STALE
    w = accept(w, 68)
    assert P.window_check(*w, 68) == P.REPLAY
    w = accept(w, 101)  # 68 is now 33 below
    assert P.window_check(*w, 68) == P.STALE and P.window_check(*w, 69) == 0


def test_window_jump_beyond_32_forgets_the_old_bits():
    w = accept(accept((0, 0), 10), 9)
    w = accept(w, 43)  # 10 sits exactly 33 below: stale
    assert w == (43, 0) and P.window_check(*w, 10) == P.STALE
    w = accept(accept((0, 0), 10), 42)  # 10 is 32 below: still remembered as seen
    assert w == (42, 1 << 31) and P.window_check(*w, 10) == P.REPLAY


def test_window_bits_stay_u32():
    w = (0, 0)
    for seq in range(1, 200, 2):
        w = accept(w, seq)
        assert 0 <= w[1] < 2 ** 32
    assert w == (199, 0xAAAAAAAA)  # bit i: seq 198 - i; the odd ones seen
