# Commands that must not work, sent through the private mosquitto by a client with
# backend rights (the broker routes; the box decides): each is refused with its reason,
# reported to the ledger, and nothing in the box's state changes.
import json
import secrets
import time

import pytest

from host_tools.backend import protocol as p
from host_tools.backend.sdk import Backend
from host_tools.testing.wait import wait_for
from roundtrip_world import World

BOX = "box-1"


@pytest.fixture
def world(mosquitto, tmp_path):
    w = World(mosquitto, tmp_path)
    w.consumer()
    w.link = w.add_box(BOX, compartments=2)
    w.attacker = mosquitto.paho_client(mosquitto.add_user("attacker", backend=True) and "attacker")
    yield w
    w.close()


def _state_files(world):
    """Everything the box keeps but its event log (where the refusal is reported), read
    under the core's lock: never a file the box is halfway through replacing."""
    files = world.link.call(lambda box, r, now: world.flash(BOX))
    return {k: v for k, v in files.items() if not k.startswith("events.log")}


def _refused(world, payload, reason, seq_id=None, topic=None):
    n = len(world.events(BOX, "rejected"))
    before = _state_files(world)
    codes_before = world.link.call(lambda box, r, now: box.codes.set_digest())
    world.attacker.publish_wait(topic or p.topic(BOX, "cmd"), payload)
    ev = wait_for(lambda: world.events(BOX, "rejected")[n:], what="rejected event")[0]
    assert p.REJECT[ev.arg & 0xFF] == reason
    if seq_id is not None:
        assert ev.id == seq_id
    assert _state_files(world) == before
    assert world.link.call(lambda box, r, now: box.codes.set_digest()) == codes_before
    assert world.link.unlocks == []
    world.link.skip(61000)  # refill the box's report bucket (5, then one a minute)


def _accepted(world, seq, op="state", **f):
    keys = world.ledger.current_keys(BOX)
    exp = int(time.time()) + 120 if op == "unlock" else None  # a one-shot needs its exp
    _, payload = p.command(keys, BOX, seq, op, exp, **f)
    world.attacker.publish_wait(p.topic(BOX, "cmd"), payload)
    wait_for(lambda: [e for e in world.events(BOX, "result") if e.id == seq], what="result")
    return payload


def test_a_forged_mac_is_refused(world):
    forger = p.WireKeys.of(secrets.token_bytes(32))
    _, payload = p.command(forger, BOX, 1, "unlock", comp=1)
    _refused(world, payload, "bad_mac", 0)


def test_a_command_for_another_box_is_refused_on_this_ones_topic(world):
    other = Backend(world.ledger).register("box-2")
    keys = p.WireKeys.of(bytes.fromhex(other["box_key"]))
    body = json.dumps({"v": 1, "box": "box-2", "seq": 1, "op": "unlock", "comp": 1}).encode()
    _refused(world, p.seal(keys.cmd, p.topic(BOX, "cmd"), body), "bad_mac")


def test_a_replayed_command_is_refused(world):
    payload = _accepted(world, 1, "unlock", comp=2)
    wait_for(lambda: world.link.unlocks, what="the genuine unlock")
    # its pulse over, the grant goes (a state write of its own): only then compare
    wait_for(lambda: world.link.call(lambda box, r, now: not any(box.opener_role)),
             what="the genuine unlock's grant to end")
    world.link.unlocks.clear()
    _refused(world, payload, "replay", 1)


def test_a_stale_command_is_refused(world):
    _accepted(world, 100)
    _, payload = p.command(world.ledger.current_keys(BOX), BOX, 50, "unlock", comp=1)
    _refused(world, payload, "stale", 50)


def test_malformed_json_with_a_valid_mac_is_refused(world):
    keys = world.ledger.current_keys(BOX)
    t = p.topic(BOX, "cmd")
    _refused(world, p.seal(keys.cmd, t, b'{"v":1,"box":"box-1","seq":'), "malformed", 0)


def test_an_oversized_payload_is_refused_before_anything_is_read(world):
    _refused(world, b"0" * 64 + b" " + b"x" * 5000, "too_big", 0)


def test_an_unknown_command_is_refused(world):
    keys = world.ledger.current_keys(BOX)
    t = p.topic(BOX, "cmd")
    body = json.dumps({"v": 1, "box": BOX, "seq": 7, "op": "open_all"}).encode()
    _refused(world, p.seal(keys.cmd, t, body), "unknown_op", 7)


def test_a_wrong_box_id_in_the_body_is_refused(world):
    keys = world.ledger.current_keys(BOX)
    t = p.topic(BOX, "cmd")
    body = json.dumps({"v": 1, "box": "box-9", "seq": 3, "op": "unlock", "comp": 1}).encode()
    _refused(world, p.seal(keys.cmd, t, body), "wrong_box")


def test_an_expired_command_is_refused(world):
    _accepted(world, 1, "time", t=1795000000)
    _, payload = p.command(world.ledger.current_keys(BOX), BOX, 2, "unlock", comp=1,
                           exp=1795000000 - 60)
    _refused(world, payload, "expired", 2)


def test_the_ledger_records_the_refusal_against_the_backends_command(world):
    with Backend(world.ledger, world.broker.sdk_config("cli")) as be:
        seq = be.request_state(BOX)
    world.outcome(BOX, seq)
    _, payload = p.command(world.ledger.current_keys(BOX), BOX, seq, "state")
    _refused(world, payload, "replay", seq)
    assert world.ledger.command_outcome(BOX, seq) == (0, None)  # the result stands
