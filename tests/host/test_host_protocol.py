# The backend's codec (host_tools/backend/protocol.py) against docs/protocol.md and the
# published test vectors in tests/protocol_vectors.json.
import json
from pathlib import Path

import pytest

import gen_protocol_vectors as gen
from host_tools.backend import protocol as p

VEC = json.loads((Path(__file__).resolve().parents[1] / "protocol_vectors.json").read_text())
KEYS = p.WireKeys.of(bytes.fromhex(VEC["box_key"]))
BOX = VEC["box_id"]


def test_vectors_file_is_what_the_generator_writes():
    assert (Path(__file__).resolve().parents[1] / "protocol_vectors.json").read_text() == gen.text()


def test_derived_keys_match_vectors():
    assert KEYS.code.hex() == VEC["keys"]["code"]
    assert KEYS.cmd.hex() == VEC["keys"]["cmd"]
    assert KEYS.evt.hex() == VEC["keys"]["evt"]


def test_code_digests_match_vectors():
    for c in VEC["codes"]:
        assert p.code_digest(KEYS.code, c["code"]).hex() == c["array"][1]


def test_every_vector_command_opens_with_the_cmd_key():
    for c in VEC["commands"]:
        keys = KEYS if c["seq"] < 14 else p.WireKeys.of(
            bytes.fromhex(VEC["box_key"]), bytes.fromhex(VEC["rotation"]["new_wire_key"]))
        body = p.open_envelope(keys.cmd, c["topic"], c["payload"].encode())
        assert body.decode() == c["body"]
        d = json.loads(body)
        assert d["seq"] == c["seq"] and d["op"] == c["op"] and d["box"] == BOX


def test_a_command_on_another_topic_fails_its_mac():
    c = VEC["commands"][0]
    with pytest.raises(p.ProtocolError, match="bad MAC"):
        p.open_envelope(KEYS.cmd, p.topic("box-0002", "cmd"), c["payload"].encode())


def test_a_flipped_body_byte_fails_the_mac():
    c = VEC["commands"][0]["payload"].encode()
    bad = c[:70] + bytes([c[70] ^ 1]) + c[71:]
    with pytest.raises(p.ProtocolError):
        p.open_envelope(KEYS.cmd, VEC["topics"]["cmd"], bad)


@pytest.mark.parametrize("payload", [b"", b"x" * 65, b"zz" * 32 + b" {}", b"00" * 32 + b"{}"])
def test_malformed_envelopes_are_refused(payload):
    with pytest.raises(p.ProtocolError):
        p.open_envelope(KEYS.cmd, VEC["topics"]["cmd"], payload)


def test_vector_events_parse_with_the_right_key_generation():
    new = p.WireKeys.of(bytes.fromhex(VEC["box_key"]), bytes.fromhex(VEC["rotation"]["new_wire_key"]))
    for e in VEC["events"]:
        ev, i = p.parse_event([KEYS, new], BOX, e["payload"].encode())
        assert i == e["key_gen"]
        assert (ev.seq, ev.type, ev.comp, ev.id, ev.arg, ev.t) == (
            e["seq"], e["type"], e["comp"], e["id"], e["arg"], e["t"])
        assert p.event_body(BOX, e["seq"], e["kind"], e["comp"], e["id"], e["arg"], e["t"]).decode() == e["body"]


def test_an_event_under_an_unknown_key_is_refused():
    e = VEC["events"][-1]  # sealed with the rotated key
    with pytest.raises(p.ProtocolError, match="no valid MAC"):
        p.parse_event([KEYS], BOX, e["payload"].encode())


def test_state_summary_vector_parses():
    d, i = p.parse_state([KEYS], BOX, VEC["state"]["payload"].encode())
    assert i == 0
    assert {f: d[f] for f in p.STATE_FIELDS} == VEC["state"]["fields"]


def test_set_digest_ignores_order_and_uses():
    codes = VEC["set_digest"]["codes"]
    assert p.set_digest(codes).hex() == VEC["set_digest"]["digest"]
    assert p.set_digest(list(reversed(codes))) == p.set_digest(codes)
    used = [list(c) for c in codes]
    used[0][4] = 0
    assert p.set_digest(used) == p.set_digest(codes)
    assert p.set_digest(codes[:-1]) != p.set_digest(codes)


def test_rotation_wrap_unwraps_with_the_same_pad():
    r = VEC["rotation"]
    pad = bytes.fromhex(r["pad"])
    assert bytes(a ^ b for a, b in zip(bytes.fromhex(r["wrapped"]), pad)).hex() == r["new_wire_key"]


def test_commands_over_4096_bytes_are_not_built():
    with pytest.raises(ValueError, match="exceeds 4096"):
        p.command(KEYS, BOX, 1, "settings", set={"x" * 5000: 1})


def test_a_sync_part_of_the_chosen_size_fits_one_command():
    worst = p.code_array(0xFFFFFFFF, b"\xff" * 16, 4, 32, 65535, 0xFFFFFFFF, 0xFFFFFFFF)
    _, payload = p.command(KEYS, BOX, 0xFFFFFFFF, "sync_part", sync=0xFFFFFFFF, part=9999,
                           codes=[worst] * p.SYNC_PART)
    assert len(payload) <= p.MAX_COMMAND


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 33, "+", "#", "box 1"])
def test_bad_box_ids_are_refused(bad):
    with pytest.raises(ValueError, match="box id"):
        p.topic(bad, "cmd")


def test_status_payloads():
    assert p.parse_status(VEC["status"]["online"].encode()) is True
    assert p.parse_status(VEC["status"]["offline"].encode()) is False
    assert p.parse_status(b"online") is None


def test_the_repr_of_wire_keys_shows_no_key():
    text = repr(KEYS) + str(KEYS) + repr([KEYS])
    for k in (KEYS.code, KEYS.cmd, KEYS.evt):
        assert k.hex() not in text and repr(k) not in text and repr(k)[2:12] not in text


def test_an_event_type_from_a_newer_firmware_is_accepted_as_it_came():
    t = p.topic(BOX, "evt")
    body = b'{"v":1,"box":"box-0001","seq":9,"type":"lid_sensor","comp":0,"id":0,"arg":1,"t":0}'
    ev, _ = p.parse_event([KEYS], BOX, p.seal(KEYS.evt, t, body))
    assert ev.type == "lid_sensor" and ev.describe() == "arg 1"
    bad = body.replace(b"lid_sensor", b"Lid Sensor!")
    with pytest.raises(p.ProtocolError, match="bad event type"):
        p.parse_event([KEYS], BOX, p.seal(KEYS.evt, t, bad))


def test_the_backend_names_every_reason_and_event_the_firmware_sends():
    # the box's constants (firmware/parcelbox) and the backend's names stay in step
    from parcelbox import events as fe
    from parcelbox import protocol as fp
    assert p.EVENTS == fe.NAMES
    for name in p.REJECT[1:]:
        assert getattr(fp, name.upper()) == p.REJECT.index(name)
    assert p.REJECT[fp.NO_CLOCK] == "no_clock" and p.REJECT[fp.SEQ_JUMP] == "seq_jump"
    assert set(p.REJECT_WORDS) == set(p.REJECT[1:])
    assert p.EVENTS[20] == "time_refused"
    assert p.TIME_SOURCES[fe.TIME_NET] == "network" and p.TIME_SOURCES[fe.TIME_CMD] == "backend"
    assert p.TIME_REFUSALS[fe.CLOCK_BACK] == "earlier than trusted time"
    assert p.TIME_REFUSALS[fe.CLOCK_RANGE] == "outside 2024..2100"
    assert p.TIME_REFUSALS[getattr(fe, "CLOCK_AHEAD", 3)] == "far ahead of trusted time"


def _ev(kind, comp=0, id_=0, arg=0):
    return p.Event(BOX, 9, kind, comp, id_, arg, 0)


@pytest.mark.parametrize("ev, words", [
    (_ev("time_refused", 1, 1704067100, 1), "time refused: earlier than trusted time (network): "
                                            "2023-12-31 23:58:20Z"),
    (_ev("time_refused", 2, 5, 2 | 3 << 8), "time refused: outside 2024..2100 (backend): "
                                            "1970-01-01 00:00:05Z, 3 more refused since"),
    (_ev("rejected", 0, 12, 10), "command 12: no_clock (the box has no trusted time to check "
                                 "its expiry)"),
    (_ev("rejected", 0, 13, 11), "command 13: no_exp (a one-shot command needs an expiry at "
                                 "most a day ahead)"),
    (_ev("rejected", 0, 40, 12), "ack of event 40: unsent_ack (an ack named an event the box "
                                 "never published)"),
    (_ev("rejected", 0, 99999, 13 | 2 << 8), "command 99999: seq_jump (its seq jumps too far "
                                             "above the newest the box accepted), 2 more suppressed"),
    (_ev("rejected", 0, 7, 8), "command 7: expired (it arrived after its expiry)"),
    (_ev("rejected", 0, 7, 14), "command 7: no_memory (the box ran short of memory handling it)"),
    # opened and not_opened: the role or outcome in arg's low byte, the uses left above it
    (_ev("opened", 1, 4, 3 | 2 << 8), "code 4, owner, 2 uses left"),
    (_ev("opened", 1, 4, 1 | 0 << 8), "code 4, recipient, 0 uses left"),
    (_ev("opened", 2, 9, 2 | 1 << 8), "code 9, driver, 1 use left"),
    (_ev("opened", 1, 4, 3 | 0xFFFF << 8), "code 4, owner"),        # unlimited
    (_ev("opened", 1, 17, 5 | 0xFFFF << 8), "code 17, remote"),
    (_ev("opened", 1, 6, 4 | 0xFFFF << 8), "code 6, tech"),         # service mode
    (_ev("closed", 1, 4, 3), "code 4, owner"),
    (_ev("closed", 1, 4, 0), "code 4, none"),
    (_ev("not_opened", 1, 4, 0 | 1 << 8), "code 4: never opened, the use given back, 1 use left"),
    (_ev("not_opened", 1, 4, 4 | 3 << 8), "code 4: never opened, nothing given back, 3 uses left"),
    (_ev("not_opened", 1, 4, 4 | 0xFFFF << 8), "code 4: never opened, nothing given back"),
    (_ev("not_opened", 1, 4, 1 | 0 << 8), "code 4: found closed after a power cut, the use "
                                          "spent, 0 uses left"),
    (_ev("not_opened", 1, 4, 3 | 5 << 8), "code 4: found closed after a power cut, the use "
                                          "never spent, 5 uses left"),
    (_ev("not_opened", 1, 4, 1 | 0xFFFF << 8), "code 4: found closed after a power cut, the use "
                                               "spent"),
    (_ev("store_corrupt", 0, 0, 1 | 1 << 8), "codes: snapshot bad; the box holds NO codes until "
                                             "a full sync"),
    (_ev("store_corrupt", 0, 0, 1 | 2 << 8), "codes: torn journal tail dropped"),
    (_ev("store_corrupt", 0, 0, 1 | 8 << 8), "codes: older than the state; the box holds NO "
                                             "codes until a full sync"),
    (_ev("store_corrupt", 0, 812, 2 | 4 << 8), "events: events lost; events from seq 812 may be "
                                               "missing"),
    (_ev("store_corrupt", 0, 0, 3 | 2 << 8), "state: a copy missing"),
    (_ev("store_corrupt", 0, 0, 4 | 1 << 8), "wire key: both copies lost: box key in use"),
])
def test_new_reasons_and_events_are_described_in_words(ev, words):
    assert ev.describe() == words


def test_a_reason_or_source_from_a_newer_firmware_is_shown_by_number():
    assert _ev("rejected", 0, 3, 77).describe() == "command 3: 77"
    assert _ev("time_refused", 9, 0, 9).describe().startswith("time refused: reason 9 (source 9)")
    assert _ev("store_corrupt", 0, 0, 9 | 1 << 8).describe() == "file 9: flag 1"
    assert _ev("not_opened", 1, 4, 9 | 2 << 8).describe() == "code 4: outcome 9, 2 uses left"
    assert _ev("opened", 1, 4, 7 | 0xFFFF << 8).describe() == "code 4, none"


@pytest.mark.parametrize("kind, comp, id_, arg, words", [
    ("boot", 0, 0, 3, "boot 3"),
    ("wrong_code", 0, 0, 4 | 1 << 8, "power lost while checking, 1 failure in a row"),
    ("throttled", 0, 0, 60, "keypad locked out for 60 s"),
    ("forced", 2, 0, 0, "compartment 2, opened without an unlock"),
    ("forced", 2, 0, 1, "compartment 2, found open at boot"),
    ("closed", 2, 0, 0, "compartment 2"),
    ("refused", 3, 8, 1, "compartment 3, code 8: occupied"),
    ("service", 0, 9, 1, "code 9: entered service mode"),
    ("overflow", 0, 120, 7, "outbox full: 7 events dropped from seq 120"),
    ("expired", 0, 0, 1, "1 code removed, their window ended"),
    ("crash", 0, 3, 0xDEADBEEF, "the application crashed (reset cause 3); report crc32 deadbeef on the box"),
    ("tamper", 0, 0, 0, "enclosure closed again"),
    ("result", 11, 40, 0, "command 40 (time): ok"),   # comp is the op here, not a compartment
    ("time_refused", 1, 0, 2, "time refused: outside 2024..2100 (network): 1970-01-01 00:00:00Z"),
])
def test_every_event_is_described_with_its_compartment_where_comp_is_one(kind, comp, id_, arg, words):
    assert p.describe(kind, comp, id_, arg) == words
