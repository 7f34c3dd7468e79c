# The backend commands of `parcelbox` without a broker: arguments, errors, --json, and
# the one place a code is shown. Against mosquitto: tests/test_roundtrip.py.
import json

import pytest
from click.testing import CliRunner

from host_tools.cli import main


@pytest.fixture
def run(tmp_path):
    db = str(tmp_path / "ledger.db")

    def run(*args, code=0):
        r = CliRunner().invoke(main, list(args) + ["--db", db], catch_exceptions=False)
        assert r.exit_code == code, r.output
        return r.output
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


def test_an_issued_code_is_shown_once_and_never_by_list_or_status(run):
    run("box", "add", "A", "--json")
    out = run("codes", "issue", "A", "--comp", "1", "--valid-until", "2d", "--json",
              "--broker", "mqtt://127.0.0.1:1")
    issued = json.loads(out.splitlines()[-1])
    code = issued["code"]
    assert len(code) == 6 and code.isdigit() and issued["sent"] is False
    later = (run("codes", "list", "A") + run("codes", "list", "A", "--json", "--all")
             + run("box", "status", "A", "--json") + run("events"))
    assert code not in later
    assert json.loads(run("codes", "list", "A", "--json"))[0]["id"] == issued["code_id"]


def test_events_with_nothing_stored_says_so(run):
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
