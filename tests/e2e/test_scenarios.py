# Scenarios (docs/scenarios.md, host_tools/sim/scenario.py): the parser and its errors, every
# shipped scenario against the private mosquitto on CPython (one also in the VM), and
# the JSON-lines trace.
import io
import json
from pathlib import Path

import pytest

from host_tools.sim import scenario as sc

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.txt"))
KINDS = {"power", "step", "key", "type", "feedback", "unlock", "relock", "door", "tamper", "network",
         "broker", "clock", "command", "applied", "event", "stored", "expect", "end"}


# ---- the parser ---------------------------------------------------------------------

def test_every_shipped_scenario_parses_and_the_library_covers_the_brief():
    names = {p.stem for p in SHIPPED}
    assert {"deposit_and_pickup", "mistype_then_collect", "throttled_attacker", "owner_pin_opens_all",
            "code_expiry", "revoke", "offline_keeps_working", "power_cut_mid_delivery", "forced_door",
            "door_left_open", "technician_service", "busy_compartment", "backend_sync"} <= names
    for p in SHIPPED:
        assert sc.load(p)


def test_the_parser_reads_every_command():
    steps = sc.parse("""
        # a comment
        at 1.5s
        wait 2s          # trailing comment
        press 4 8 2 9 1 5
        press 1 2 #      # '#' is a key; a comment after it is still a comment
        backend issue c1 recipient comp 1 uses 1 valid 3d
        backend issue pin owner uses unlimited from 1h nowait
        type c1
        type c1 wrong
        door 1 open
        door 1 close
        tamper open
        network down
        network up
        broker restart
        power cut
        power on
        clock +2h
        backend revoke c1
        backend sync
        backend unlock 1
        backend clear-throttle
        backend set-time
        expect event pickup comp 1
        expect no event forced within 3s
        expect stored wrong_code arg 257
        expect led green
        expect unlock 1
        expect no unlock
        expect buzzer
        expect online
        expect offline
        expect ledger complete
    """)
    by = [(s.verb, s.args) for s in steps]
    assert by[0] == ("at", {"ms": 1500}) and by[1] == ("wait", {"ms": 2000})
    assert by[2] == ("press", {"keys": "482915"}) and by[3] == ("press", {"keys": "12#"})
    assert by[4][1] == {"op": "issue", "name": "c1", "role": "recipient", "comp": 1, "uses": 1,
                        "valid": 3 * 86400000}
    assert by[5][1]["uses"] == 0xFFFF and by[5][1]["from"] == 3600000 and by[5][1]["nowait"]
    assert by[7] == ("type", {"name": "c1", "wrong": True})
    assert by[16] == ("clock", {"ms": 7200000})
    assert by[22][1] == {"what": "event", "no": False, "name": "pickup", "comp": 1}
    assert by[23][1] == {"what": "event", "no": True, "name": "forced", "within": 3000}
    assert [s.line for s in steps][:3] == [3, 4, 5]
    assert len(steps) == 32


@pytest.mark.parametrize("text, message", [
    ("wait 2", "not a duration"),
    ("jump 3s", "unknown command 'jump'"),
    ("press 1 2 x", "press takes keys"),
    ("door one open", "compartment must be a number"),
    ("door 1 ajar", "door N open|close"),
    ("type nobody", "code 'nobody' is not issued above this line"),
    ("backend issue c1 janitor", "role must be one of"),
    ("backend issue c1 driver comp", "option 'comp' needs a value"),
    ("backend issue c1 driver colour red", "unknown option 'colour'"),
    ("backend reboot", "unknown backend command"),
    ("clock -1h", "only jumps forward"),
    ("expect event teleported", "needs an event name"),
    ("expect led purple", "expect led COLOUR"),
    ("power off", "power cut|on"),
])
def test_a_bad_line_is_an_error_naming_the_file_and_line(text, message):
    with pytest.raises(sc.ScenarioError) as e:
        sc.parse("wait 1s\n# fine so far\n" + text + "\nwait 1s\n", "s.txt")
    assert str(e.value).startswith("s.txt:3: " + text + ": ") and message in str(e.value)


class NoBroker:
    def __getattr__(self, name):
        raise AssertionError("the broker was touched: " + name)


def test_bad_input_changes_nothing(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("backend issue c1 driver comp 1\ndoor 1 open\nflood the box\n")
    with pytest.raises(sc.ScenarioError, match="bad.txt:3: "):
        sc.run_file(f, NoBroker(), workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()   # no ledger, no flash, no box


# ---- running them: the private mosquitto ----------------------------------------------

def _check_trace(text: str, steps: list) -> list[dict]:
    recs = [json.loads(ln) for ln in text.splitlines()]
    assert recs and all(isinstance(r["t"], int) and r["kind"] in KINDS for r in recs)
    assert [r["t"] for r in recs if r["kind"] == "step"] == sorted(r["t"] for r in recs if r["kind"] == "step")
    assert [r["line"] for r in recs if r["kind"] == "step"] == [s.line for s in steps]
    expects = [r for r in recs if r["kind"] == "expect"]
    assert expects and all(r["ok"] for r in expects)
    assert len(expects) == sum(s.verb == "expect" for s in steps)
    assert recs[-1] == {"t": recs[-1]["t"], "kind": "end", "ok": True}
    return recs


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_shipped_scenario_runs_on_cpython(path, mosquitto, tmp_path):
    out = io.StringIO()
    runner_codes = {}
    steps = sc.load(path)
    r = sc.Runner(mosquitto, tmp_path / "work", trace=out)
    try:
        r.run(steps)
        runner_codes = {n: i.code for n, i in r.codes.items()}
    finally:
        r.close()
    recs = _check_trace(out.getvalue(), steps)
    for code in runner_codes.values():      # the trace names codes, never shows them
        assert code not in out.getvalue()
    # what the box did is in the trace as it happened: each event the box made, once
    made = [x["seq"] for x in recs if x["kind"] == "event"]
    assert made == sorted(set(made))


@pytest.mark.vm
def test_a_scenario_runs_in_the_vm(mosquitto, tmp_path):
    out = io.StringIO()
    recs = sc.run_file(ROOT / "scenarios" / "mistype_then_collect.txt", mosquitto,
                       workdir=tmp_path / "work", trace=out, vm=True)
    _check_trace(out.getvalue(), sc.load(ROOT / "scenarios" / "mistype_then_collect.txt"))
    assert [x["name"] for x in recs if x["kind"] == "event"].count("wrong_code") == 2


def test_an_unmet_expectation_stops_the_run_and_says_where(mosquitto, tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("expect online\npress 1 2 3 4 5 6\nexpect unlock 1\nexpect led green\n")
    out = io.StringIO()
    with pytest.raises(sc.ExpectationFailed, match="line 3: expect unlock 1: not met"):
        sc.run_file(f, mosquitto, workdir=tmp_path / "work", trace=out)
    recs = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert recs[-2]["kind"] == "expect" and recs[-2]["ok"] is False and recs[-2]["line"] == 3
    assert recs[-1] == {"t": recs[-1]["t"], "kind": "end", "ok": False, "line": 3}
    assert not any(r["kind"] == "step" and r["line"] == 4 for r in recs)
    assert any(r["kind"] == "event" and r["name"] == "wrong_code" for r in recs)
