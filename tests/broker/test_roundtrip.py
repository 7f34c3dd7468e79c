# The proof, against the private mosquitto: a code issued with the CLI opens the
# right compartment of a firmware box core, and deposit and pickup reach the ledger once.
from pathlib import Path

import pytest

from host_tools.testing.wait import wait_for
from roundtrip_world import World, diagnose, open_and_close


@pytest.fixture
def world(mosquitto, tmp_path):
    w = World(mosquitto, tmp_path)
    yield w
    w.close()


def test_codes_issued_with_the_cli_open_the_right_compartment_and_report_once(world):
    world.consumer()
    link = world.add_box("box-1", compartments=2)
    driver = world.cli_json("codes", "issue", "box-1", "--role", "driver", "--comp", "1",
                            "--wait", "15")
    recipient = world.cli_json("codes", "issue", "box-1", "--role", "recipient", "--comp", "1",
                               "--valid-until", "2d", "--wait", "15")
    assert driver["result"] == "ok" and recipient["result"] == "ok"

    link.type(driver["code"])
    wait_for(lambda: link.unlocks, what="an unlock")
    assert [c for c, _ in link.unlocks] == [1]
    open_and_close(world, link, 1, "box-1")
    (dep,) = wait_for(lambda: world.events("box-1", "deposit"), what="deposit",
                      diag=lambda: diagnose(world, link))
    assert (dep.comp, dep.id) == (1, driver["code_id"])

    link.skip(5000)  # past the solenoid's cool-down
    link.type(recipient["code"])
    wait_for(lambda: len(link.unlocks) == 2, what="second unlock")
    assert [c for c, _ in link.unlocks] == [1, 1]
    open_and_close(world, link, 1, "box-1")
    (pick,) = wait_for(lambda: world.events("box-1", "pickup"), what="pickup")
    assert (pick.comp, pick.id) == (1, recipient["code_id"])

    # every event acked: the box's outbox drains; the ledger holds each seq once
    link.skip(31000)  # anything published while no consumer listened goes again
    wait_for(lambda: link.call(lambda box, r, now: box.outbox.pending() == 0), what="all acked")
    seqs = [e.seq for e in world.events("box-1")]
    assert len(seqs) == len(set(seqs)) == max(seqs)
    assert len(world.events("box-1", "pickup")) == 1
    codes = {c["id"]: c for c in world.ledger.codes("box-1")}
    assert codes[recipient["code_id"]]["status"] == "used"
    # the ledger's uses are the box's own count (the `opened` events carry it)
    for c in (driver, recipient):
        assert codes[c["code_id"]]["uses"] == 0


def test_a_used_code_does_not_open_again_and_the_box_says_why(world):
    world.consumer()
    link = world.add_box("box-1")
    owner = world.cli_json("codes", "issue", "box-1", "--role", "owner", "--uses", "1", "--wait", "15")
    link.type(owner["code"])
    wait_for(lambda: link.unlocks, what="unlock")
    open_and_close(world, link, 1, "box-1")
    link.skip(5000)
    link.type(owner["code"])
    (wrong,) = wait_for(lambda: world.events("box-1", "wrong_code"), what="wrong_code")
    assert wrong.arg & 0xFF == 3 and len(link.unlocks) == 1  # used up
    (c,) = [c for c in world.ledger.codes("box-1") if c["id"] == owner["code_id"]]
    assert (c["uses"], c["status"]) == (0, "used")  # the box's count, from its `opened`


def test_remote_unlock_revoke_and_sync_through_the_cli(world):
    world.consumer()
    link = world.add_box("box-1", compartments=2)
    assert world.cli_json("unlock", "box-1", "2", "--wait", "15")["result"] == "ok"
    wait_for(lambda: link.unlocks, what="remote unlock")
    assert [c for c, _ in link.unlocks] == [2]
    a = world.cli_json("codes", "issue", "box-1", "--role", "owner", "--wait", "15")
    world.cli_json("codes", "issue", "box-1", "--role", "driver")
    assert world.cli_json("codes", "revoke", "box-1", str(a["code_id"]), "--wait", "15")["result"] == "ok"
    assert world.cli_json("codes", "sync", "box-1", "--wait", "15")["result"] == "ok"
    link.call(lambda box, r, now: None)
    status = wait_for(lambda: (lambda s: s if s["codes_in_sync"] else None)(
        world.cli_json("box", "status", "box-1")), what="box in sync")
    assert status["state"]["codes"] == 1 and status["online"] is True
    link.skip(5000)
    link.type(a["code"])  # revoked: refused
    wait_for(lambda: world.events("box-1", "wrong_code"), what="wrong_code")
    assert len(link.unlocks) == 1


def test_revoking_a_code_the_box_never_had_reports_unknown_code(world):
    world.consumer()
    world.add_box("box-1")
    a = world.cli_json("codes", "issue", "box-1", "--wait", "15")  # on the box first
    world.links["box-1"].call(lambda box, r, now: box.codes.revoke(a["code_id"]))
    assert world.cli_json("codes", "revoke", "box-1", str(a["code_id"]), "--wait", "15")[
        "result"] == "unknown_code"


def test_a_settings_change_takes_effect_after_the_core_restarts(world):
    world.consumer()
    link = world.add_box("box-1")
    be = __import__("host_tools.backend.sdk", fromlist=["Backend"]).Backend(
        world.ledger, world.broker.sdk_config("cli"))
    with be:
        seq = be.settings("box-1", {"free_tries": 2})
    status, _ = world.outcome("box-1", seq)
    assert status == 0
    wait_for(lambda: link.call(lambda box, r, now: box.cfg["free_tries"] == 2), what="restart")


def test_a_key_rotation_through_the_cli_keeps_commands_and_events_flowing(world):
    world.consumer()
    link = world.add_box("box-1")
    old = world.ledger.current_keys("box-1")
    assert world.cli_json("box", "rotate-key", "box-1", "--wait", "15")["result"] == "ok"
    assert world.ledger.current_keys("box-1") != old and world.ledger.box("box-1").key_gen == 1
    assert link.call(lambda box, r, now: r.key_gen) == 1
    # commands under the new key work; events under it verify
    assert world.cli_json("unlock", "box-1", "1", "--wait", "15")["result"] == "ok"
    wait_for(lambda: link.unlocks, what="unlock after rotation")
    # the box rejects a command under the old key
    _, payload = __import__("host_tools.backend.protocol", fromlist=["command"]).command(
        old, "box-1", 999, "unlock", comp=1)
    spy = world.broker.paho_client(world.broker.add_user("spy", backend=True) and "spy")
    spy.publish_wait("parcelbox/v1/box-1/cmd", payload)
    (rej,) = wait_for(lambda: world.events("box-1", "rejected"), what="rejected")
    assert rej.arg & 0xFF == 1  # bad_mac


def test_clear_throttle_through_the_cli_lets_the_right_code_in_again(world):
    world.consumer()
    link = world.add_box("box-1")
    owner = world.cli_json("codes", "issue", "box-1", "--role", "owner", "--uses", "unlimited",
                           "--wait", "15")
    wrong = owner["code"][:-1] + str((int(owner["code"][-1]) + 1) % 10)
    for _ in range(6):  # five free tries, then a lockout
        link.type(wrong)
    wait_for(lambda: world.events("box-1", "throttled"), what="throttled")
    link.type(owner["code"])  # locked out: not even checked
    assert link.unlocks == []
    assert world.cli_json("box", "clear-throttle", "box-1", "--wait", "15")["result"] == "ok"
    link.type(owner["code"])
    wait_for(lambda: link.unlocks, what="unlock after clearing")


def test_events_follow_prints_each_new_event_once_as_json_lines(world):
    import json as _json
    import os
    import signal
    import subprocess
    import sys

    world.broker.add_user("follower", backend=True)
    env = {k: v for k, v in world.env().items() if v is not None}
    env.update(PARCELBOX_USERNAME="follower", PARCELBOX_PASSWORD=world.broker.users["follower"])
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli.main", "events", "--follow", "--json"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: "follower" in world.broker.log_text() or proc.poll() is not None,
                 what="the follower to connect")
        link = world.add_box("box-1")
        link.skip(31000)  # boot may have gone out before the follower subscribed
        link.call(lambda box, r, now: box.event(15, 0, 0, 7, now))
        wait_for(lambda: link.call(lambda box, r, now: box.outbox.pending() == 0), what="acked")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    lines = [_json.loads(x) for x in out.splitlines()]
    assert sorted((x["seq"], x["type"]) for x in lines) == [(1, "boot"), (2, "expired")], err
    assert proc.returncode == 0, err


def test_a_box_that_lost_its_wire_key_is_heard_again_and_can_be_rotated_anew(world):
    world.consumer()
    link = world.add_box("box-1")
    assert world.cli_json("box", "rotate-key", "box-1", "--wait", "15")["result"] == "ok"
    assert world.ledger.box("box-1").key_gen == 1
    link.power_cut()
    f = Path(link.flash_dir) / "wirekey.bin"
    f.write_bytes(bytes(len(f.read_bytes())))  # both copies damaged
    link.boot()
    wait_for(lambda: world.ledger.box("box-1").key_gen == 0, what="ledger back on the box key")
    link.skip(31000)  # the events refused before the fallback go again
    corrupt = wait_for(lambda: world.events("box-1", "store_corrupt"), what="store_corrupt")
    assert corrupt[-1].arg & 0xFF == 4
    link.skip(31000)
    wait_for(lambda: link.call(lambda box, r, now: box.outbox.pending() == 0), what="all acked")
    assert world.cli_json("box", "rotate-key", "box-1", "--wait", "15")["result"] == "ok"
    assert world.ledger.box("box-1").key_gen == 1
