# The backend commands of `parcelbox` without a broker: arguments, errors, --json, and
# the one place a code is shown. Against mosquitto: tests/broker/test_roundtrip.py.
import json

import pytest
from click.testing import CliRunner

from host_tools.cli.main import main


@pytest.fixture
def run(tmp_path):
    db = str(tmp_path / "ledger.db")

    def run(*args, code=0):
        r = CliRunner().invoke(main, list(args) + ["--db", db], catch_exceptions=False)
        assert r.exit_code == code, r.output
        return r.output
    run.db = db
    return run


@pytest.mark.parametrize("cmd", [[], ["box"], ["codes"], ["box", "add"], ["box", "list"], ["box", "rotate-key"], ["box", "clear-throttle"],
                                 ["box", "status"], ["codes", "issue"], ["codes", "revoke"],
                                 ["codes", "list"], ["codes", "sync"], ["unlock"], ["events"]])
def test_every_command_has_help(cmd):
    r = CliRunner().invoke(main, cmd + ["--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


def test_box_add_shows_the_key_once_and_lists_the_box(run):
    out = run("box", "add", "A", "--json")
    rec = json.loads(out)
    assert len(bytes.fromhex(rec["box_key"])) == 32 and rec["mqtt_username"] == "A"
    listed = run("box", "list", "--json")
    assert json.loads(listed)[0]["box"] == "A" and rec["box_key"] not in listed
    assert rec["box_key"] not in run("box", "status", "A") + run("box", "status", "A", "--json")


def test_box_add_with_a_provision_file_writes_it_private_and_prints_no_key(run, tmp_path):
    f = tmp_path / "prov.json"
    out = run("box", "add", "A", "--provision-file", str(f))
    rec = json.loads(f.read_text())
    assert rec["box_key"] not in out and (f.stat().st_mode & 0o777) == 0o600
    out = run("box", "add", "B", "--provision-file", str(f), code=1)
    assert "not overwriting" in out and json.loads(f.read_text()) == rec


@pytest.mark.parametrize("args", [["box", "add", "a/b"], ["box", "add", "x" * 33],
                                  ["box", "status", "nobody"], ["codes", "list", "nobody"]])
def test_bad_box_ids_fail_with_a_clear_error(run, args):
    run("box", "add", "A")
    out = run(*args, code=1)
    assert out.startswith("Error: ") and ("box id" in out or "no box nobody" in out)


@pytest.mark.parametrize("args", [["box", "add", "A", "--compartments", "0"],
                                  ["codes", "issue", "A", "--role", "king"],
                                  ["codes", "issue", "A", "--uses", "0", "--broker", "h"],
                                  ["codes", "issue", "A", "--comp", "33"],
                                  ["codes", "issue", "A", "--valid-until", "soon", "--broker", "h"],
                                  ["codes", "revoke", "A", "0"], ["unlock", "A", "x"]])
def test_bad_arguments_exit_2_and_change_nothing(run, args):
    run("box", "add", "A", "--json")
    out = run(*args, code=2)
    assert "Error" in out
    assert json.loads(run("codes", "list", "A", "--json")) == []


def test_a_command_for_a_box_needs_a_broker(run):
    run("box", "add", "A", "--json")
    assert "no broker" in run("unlock", "A", "1", code=2)


def test_an_unreachable_broker_is_one_clear_line(run):
    run("box", "add", "A", "--json")
    out = run("unlock", "A", "1", "--broker", "mqtt://127.0.0.1:1", code=1)
    assert "cannot reach the broker at 127.0.0.1:1" in out and "Traceback" not in out


def test_an_issued_code_is_shown_once_and_never_by_list_or_status(run, fake_broker):
    run("box", "add", "A", "--json")
    out = run("codes", "issue", "A", "--comp", "1", "--valid-until", "2d", "--json",
              "--broker", "mqtt://h")
    issued = json.loads(out.splitlines()[-1])
    code = issued["code"]
    assert len(code) == 6 and code.isdigit() and issued["sent"] is True
    later = (run("codes", "list", "A") + run("codes", "list", "A", "--json", "--all")
             + run("box", "status", "A", "--json") + run("events"))
    assert code not in later
    assert json.loads(run("codes", "list", "A", "--json"))[0]["id"] == issued["code_id"]


def test_events_with_nothing_stored_says_so(run):
    run("box", "add", "A")
    assert "no events" in run("events")


def test_a_provision_file_that_cannot_be_written_registers_no_box(run, tmp_path):
    out = run("box", "add", "A", "--provision-file", str(tmp_path / "no-dir" / "prov.json"), code=1)
    assert out.startswith("Error: ")
    assert json.loads(run("box", "list", "--json")) == []  # else its key is lost for good
    run("box", "add", "A", "--provision-file", str(tmp_path / "prov.json"))


def test_the_broker_address_in_a_provision_file_carries_no_backend_credentials(run, tmp_path):
    f = tmp_path / "prov.json"
    out = run("box", "add", "A", "--provision-file", str(f),
              "--broker", "mqtt://backend:s3cret-pw@broker.example:1883")
    out += run("box", "add", "B", "--json", "--broker", "mqtt://backend:s3cret-pw@broker.example")
    text = f.read_text() + out
    assert "s3cret-pw" not in text and "backend@" not in text
    assert json.loads(f.read_text())["broker"] == "mqtt://broker.example:1883"


# ---- one-shot expiry and the box's answer, with the broker and consumer faked ----------

@pytest.fixture
def fake_broker(monkeypatch):
    """Publishes are recorded; a --wait is answered with `answer` (event type, arg) as a
    consumer would store it."""
    from host_tools.cli import backend as backend_cli
    from host_tools.backend import protocol as p
    from host_tools.backend.sdk import Ledger
    from host_tools.backend.sdk import mqtt as sdkmqtt

    sent = []
    monkeypatch.setattr(sdkmqtt, "connect", lambda c, cfg, timeout=10: None)
    monkeypatch.setattr(sdkmqtt, "publish", lambda c, t, payload, **kw: sent.append(
        json.loads(payload[65:])))

    class FakeConsumer:
        answer = None

        def __init__(self, db_path, cfg, **kw):
            self.db_path = db_path

        def __enter__(self):
            if FakeConsumer.answer:
                kind, comp, arg = FakeConsumer.answer
                lg = Ledger(self.db_path)
                seq = sent[-1]["seq"]
                n = len(lg.events())
                lg.record_event(p.Event(sent[-1]["box"], n + 1, kind, comp, seq, arg, 0), "c")
                lg.close()
            return self

        def __exit__(self, *exc):
            pass
    monkeypatch.setattr(backend_cli, "Consumer", FakeConsumer)
    return sent, FakeConsumer


def test_an_unlock_carries_a_short_expiry_and_says_when(run, fake_broker):
    import time
    sent, _ = fake_broker
    run("box", "add", "A", "--compartments", "2", "--json")
    out = run("unlock", "A", "2", "--broker", "mqtt://h")
    exp = sent[-1]["exp"]
    assert sent[-1]["op"] == "unlock" and abs(exp - (time.time() + 120)) <= 2
    hms = __import__("datetime").datetime.fromtimestamp(
        exp, __import__("datetime").timezone.utc).strftime("%H:%M:%S")
    assert "expires in 120 s, at %s UTC" % hms in out
    data = json.loads(run("unlock", "A", "1", "--expires", "5m", "--json", "--broker", "mqtt://h"))
    assert data["expires_in"] == 300 and data["exp"] == sent[-1]["exp"]
    assert abs(sent[-1]["exp"] - (time.time() + 300)) <= 2


def test_clear_throttle_carries_its_expiry_too(run, fake_broker):
    import time
    sent, _ = fake_broker
    run("box", "add", "A", "--json")
    out = run("box", "clear-throttle", "A", "--expires", "90s", "--broker", "mqtt://h")
    assert sent[-1]["op"] == "clear_throttle" and abs(sent[-1]["exp"] - (time.time() + 90)) <= 2
    assert "expires in 90 s" in out
    run("box", "refresh", "A", "--broker", "mqtt://h")
    assert "exp" not in sent[-1]  # only one-shot commands are time-bounded by default


@pytest.mark.parametrize("bad", ["0", "0s", "2d", "86401", "soon", "-5m"])
def test_an_expiry_outside_one_second_to_a_day_is_a_usage_error(run, fake_broker, bad):
    sent, _ = fake_broker
    run("box", "add", "A", "--json")
    assert "--expires" in run("unlock", "A", "1", "--expires", bad, "--broker", "mqtt://h", code=2)
    assert "--expires" in run("box", "clear-throttle", "A", "--expires", bad, "--broker",
                              "mqtt://h", code=2)
    assert sent == [] and json.loads(run("box", "list", "--json"))[0]["commands"] == 0


@pytest.mark.parametrize("answer, words, hint", [
    (("rejected", 0, 10), "rejected: no_clock", "no trusted time; it refuses time-bounded "
                                                "commands until it gets the time (SNTP or "
                                                "`parcelbox box set-time A`)"),
    (("rejected", 0, 11), "rejected: no_exp", "at most a day ahead of the box's clock"),
    (("rejected", 0, 8), "rejected: expired", "(it arrived after its expiry); the box was "
                                              "offline?"),
    (("rejected", 0, 13), "rejected: seq_jump", "the box's own ledger"),
    (("rejected", 0, 14), "rejected: no_memory", "the command is not at fault: send it again"),
    (("result", 6, 4), "busy", "try again shortly"),
])
def test_a_refused_unlock_says_why_and_exits_1(run, fake_broker, answer, words, hint):
    sent, consumer = fake_broker
    run("box", "add", "A", "--json")
    consumer.answer = answer
    out = run("unlock", "A", "1", "--wait", "1", "--broker", "mqtt://h", code=1)
    assert words in out and hint in " ".join(out.split())
    assert "Error: box A refused command 1 (unlock)" in out
    data = json.loads(run("unlock", "A", "1", "--wait", "1", "--json", "--broker", "mqtt://h",
                          code=1).splitlines()[0])
    assert data["reason"] == words.split()[-1] and data["hint"] in " ".join(out.split())


def test_an_answered_unlock_exits_0_and_a_box_that_refused_the_time_points_to_its_event(
        run, fake_broker):
    sent, consumer = fake_broker
    run("box", "add", "A", "--json")
    consumer.answer = ("result", 6, 0)
    assert "(command 1; expires in 120 s" in run("unlock", "A", "1", "--wait", "1",
                                                  "--broker", "mqtt://h")
    consumer.answer = ("result", 11, 3)
    out = run("box", "set-time", "A", "--wait", "1", "--broker", "mqtt://h", code=1)
    assert "bad_value" in out and "time_refused" in out
    assert sent[-1]["exp"] == sent[-1]["t"] + 120  # a `time` held too long is refused


def test_box_status_tells_an_untrusted_clock_and_the_last_refused_command(run, fake_broker):
    from host_tools.backend.sdk import Ledger
    sent, consumer = fake_broker
    run("box", "add", "A", "--json")
    consumer.answer = ("rejected", 0, 10)
    run("unlock", "A", "1", "--wait", "1", "--broker", "mqtt://h", code=1)
    st = json.loads(run("box", "status", "A", "--json"))
    assert st["clock_trusted"] is None
    assert st["last_refused"] == {"seq": 1, "op": "unlock", "rejected": "no_clock"}
    lg = Ledger(run.db)
    lg.set_state("A", {"digest": "00" * 16, "t": 0, "cmd_seq": 1})
    lg.close()
    st = json.loads(run("box", "status", "A", "--json"))
    assert st["clock_trusted"] is False and st["sync_due"] is False
    out = " ".join(run("box", "status", "A").split())
    assert "NOT trusted" in out and "no_clock" in out


def test_box_status_tells_a_full_sync_is_due(run):
    from host_tools.backend import protocol as p
    from host_tools.backend.sdk import Ledger
    run("box", "add", "A", "--json")
    lg = Ledger(run.db)
    lg.record_event(p.Event("A", 1, "store_corrupt", 0, 0, 1 | 4 << 8, 0), "c")  # codes EMPTY
    lg.close()
    assert json.loads(run("box", "status", "A", "--json"))["sync_due"] is True
    assert "full sync due │ yes" in run("box", "status", "A").replace("  ", "")
    assert "the box holds NO codes until a full sync" in " ".join(run("events").split())


def test_a_revoke_the_box_answers_unknown_code_succeeds_the_code_is_not_there(run, fake_broker):
    sent, consumer = fake_broker
    run("box", "add", "A", "--json")
    consumer.answer = ("result", 2, 1)
    out = run("codes", "revoke", "A", "7", "--wait", "1", "--broker", "mqtt://h", code=1)
    assert "no code 7" in out  # the ledger has none: nothing sent
    issued = json.loads(run("codes", "issue", "A", "--json", "--broker", "mqtt://h"))
    out = run("codes", "revoke", "A", str(issued["code_id"]), "--wait", "1", "--broker", "mqtt://h")
    assert "unknown_code" in out and "Error" not in out
    assert json.loads(run("box", "status", "A", "--json"))["last_refused"] is None


def test_events_are_shown_by_box_and_seq_in_words_and_json_is_one_array(run):
    from host_tools.backend import protocol as p
    from host_tools.backend.sdk import Ledger
    run("box", "add", "A", "--json")
    run("box", "add", "B", "--json")
    assert json.loads(run("events", "--json")) == []
    lg = Ledger(run.db)
    # arrival order is not the box's order: after an outage the older events come late
    for box, seq, kind, comp, id_, arg in (("B", 2, "result", 1, 4, 0), ("A", 3, "throttled", 0, 0, 30),
                                          ("A", 1, "boot", 0, 0, 1), ("A", 2, "wrong_code", 0, 0, 6 << 8)):
        lg.record_event(p.Event(box, seq, kind, comp, id_, arg, 0), "c")
    lg.close()
    listed = json.loads(run("events", "--json"))
    assert [(e["box"], e["seq"]) for e in listed] == [("A", 1), ("A", 2), ("A", 3), ("B", 2)]
    assert listed[1]["text"] == "unknown code, 6 failures in a row"
    # --limit: the events stored last (A 1 and A 2 came after A 3), still in seq order
    assert [e["seq"] for e in json.loads(run("events", "--json", "--box", "A", "--limit", "2"))] == [1, 2]
    lines = run("events").splitlines()
    assert [ln.split()[3] for ln in lines] == ["#1", "#2", "#3", "#2"]
    assert "keypad locked out for 30 s" in lines[2] and "command 4 (add): ok" in lines[3]
    assert "arg " not in " ".join(lines)
