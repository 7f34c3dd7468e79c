# The operator's box and the simulated box are the same box: `parcelbox sim --attach` (and
# --provision-file) boots the simulator as a box the operator registered, on the operator's
# broker, with no box or consumer of its own. A code the operator issues opens it, and its
# events, sealed with its own key, reach the operator's ledger.
import json

from click.testing import CliRunner

from host_tools import paths
from host_tools.backend.sdk import Backend, Consumer, Ledger
from host_tools.cli.main import main
from host_tools.sim import scenario as sc


def _operator(broker, tmp_path, compartments=1):
    """The operator's registry with one box, as `parcelbox box add` leaves it."""
    db = tmp_path / "operator.db"
    broker.add_user("operator", backend=True)
    led = Ledger(db)
    rec = Backend(led).register("box-17", compartments=compartments)
    led.close()
    broker.add_user("box-17", rec["mqtt_password"])   # the operator's broker knows its boxes
    return db, rec


def _at(broker):
    return ["--broker", broker.url] + (["--ca", str(broker.ca_path)] if broker.ca_path else [])


def test_a_code_the_operator_issues_opens_the_attached_box_and_its_events_reach_the_ledger(
        broker, tmp_path):
    db, rec = _operator(broker, tmp_path)
    broker.add_user("operator-consumer", backend=True)
    consumer = Consumer(str(db), broker.sdk_config("operator-consumer"))   # events --follow
    consumer.start()
    assert consumer.subscribed.wait(10)
    attach = {k: rec[k] for k in ("box_id", "box_key", "mqtt_password", "compartments")}
    runner = sc.Runner(broker, tmp_path / "sim", attach=attach, ledger=db)
    led = Ledger(db, create=False)
    try:
        assert runner.wait_online()
        r = CliRunner(env={"PARCELBOX_PASSWORD": broker.users["operator"]}).invoke(
            main, ["codes", "issue", "box-17", "--role", "driver", "--comp", "1", "--json",
                   "--db", str(db), *_at(broker), "--username", "operator"])
        assert r.exit_code == 0, r.output
        issued = json.loads(r.output, object_hook=lambda d: type("Issued", (), d))
        assert issued.sent
        assert runner._wait(lambda: led.command_outcome("box-17", issued.command)[0] == 0, 30000)
        runner.codes["c"] = issued
        runner.run_steps(sc.parse("type c\nexpect unlock 1 within 2s", names={"c"}))
        runner.run_steps(sc.parse("door 1 open\nwait 1s\ndoor 1 close"))
        assert runner._wait(lambda: ("deposit", issued.code_id) in
                            [(e.type, e.id) for e in led.events("box-17")], 30000)
    finally:
        led.close()
        runner.close()
        consumer.stop()
    led = Ledger(db, create=False)
    try:
        assert [b.id for b in led.boxes()] == ["box-17"]   # the sim registered nothing
        assert ("deposit", issued.code_id) in [(e.type, e.id) for e in led.events("box-17")]
    finally:
        led.close()
    assert not (tmp_path / "sim" / "ledger.db").exists()   # and kept no ledger of its own


def test_sim_attach_runs_a_script_against_the_operator_s_registry(broker, tmp_path,
                                                                   monkeypatch):
    db, _ = _operator(broker, tmp_path)
    pw = broker.add_user("scenario-consumer", backend=True)   # the sim's own backend users
    broker.add_user("scenario-backend", pw, backend=True)
    script = tmp_path / "s.txt"
    script.write_text("expect online\nbackend issue c1 driver comp 1\ntype c1\nexpect unlock 1 within 2s\n"
                      "door 1 open\nwait 1s\ndoor 1 close\nexpect stored deposit comp 1 within 20s\n")
    monkeypatch.setenv("PARCELBOX_PASSWORD", pw)
    r = CliRunner().invoke(main, ["sim", "--attach", "box-17", "--db", str(db), *_at(broker),
                                  "--consume", "--script", str(script), "--trace",
                                  str(tmp_path / "t.jsonl")])
    assert r.exit_code == 0, r.output
    led = Ledger(db, create=False)
    try:
        assert [b.id for b in led.boxes()] == ["box-17"]
        assert "deposit" in [e.type for e in led.events("box-17")]
        assert len(led.codes("box-17")) == 1   # the code was issued in the operator's registry
    finally:
        led.close()
    assert (tmp_path / "sim-box-17" / "flash" / "config.json").exists()  # beside the registry


def test_sim_attach_names_what_is_missing_in_one_line(broker, tmp_path):
    db, rec = _operator(broker, tmp_path)
    prov = tmp_path / "box-17.json"
    prov.write_text(json.dumps(rec))
    outside = tmp_path / "outside.json"   # its box id would name a flash folder elsewhere
    outside.write_text(json.dumps(dict(rec, box_id="../../elsewhere")))
    script = tmp_path / "s.txt"
    script.write_text("backend issue c1 recipient comp 1\n")
    cases = [
        (["--attach", "box-99", "--db", str(db), *_at(broker)], "no box box-99"),
        (["--attach", "box-17", "--db", str(tmp_path / "nope.db"), *_at(broker)], "no registry"),
        (["--attach", "box-17", "--db", str(db)], "PARCELBOX_BROKER"),
        (["--provision-file", str(script), *_at(broker)], "not a provisioning file"),
        (["--provision-file", str(outside), *_at(broker)], "not a provisioning file"),
        (["--provision-file", str(prov), *_at(broker), "--script", str(script)], "codes issue"),
        (["--attach", "box-17", "--db", str(db), *_at(broker), "--board",
          str(paths.BOARDS / "esp32s3-devkitc-4x4.json")], "1 compartment, the board 4"),
    ]
    for args, words in cases:
        r = CliRunner(env={"PARCELBOX_BROKER": ""}).invoke(main, ["sim", *args],
                                                           catch_exceptions=False)
        assert r.exit_code in (1, 2), (args, r.output)
        assert words in r.output and "Traceback" not in r.output, (args, r.output)
    assert not (tmp_path / "nope.db").exists()
