# `parcelbox sim` (host_tools/cli/sim.py): every shipped scenario through --script on the
# embedded amqtt broker (its default), the trace to a file or stdout, a bad file, an unmet
# expectation, and the interactive, line-based box driven through stdin.
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from host_tools.cli.main import main
from test_scenarios import _check_trace

from host_tools.sim import scenario as sc

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.txt"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_sim_script_runs_a_shipped_scenario_and_writes_its_trace(path, tmp_path):
    trace = tmp_path / "trace.jsonl"
    r = CliRunner().invoke(main, ["sim", "--script", str(path), "--trace", str(trace), "--keep",
                                  str(tmp_path / "work")])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ok: %s, " % path)
    _check_trace(trace.read_text(), sc.load(path))


def test_sim_script_prints_the_trace_without_trace_file(tmp_path):
    r = CliRunner().invoke(main, ["sim", "--script", str(ROOT / "scenarios" / "revoke.txt")])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("{")]
    recs = [json.loads(ln) for ln in lines]
    assert recs[-1]["kind"] == "end" and recs[-1]["ok"] is True


def test_sim_script_refuses_a_bad_file_naming_the_line(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("wait 1s\ndoor 1 ajar\n")
    r = CliRunner().invoke(main, ["sim", "--script", str(f)])
    assert r.exit_code == 2 and "bad.txt:2: door 1 ajar: door N open|close" in r.output


def test_sim_script_exits_1_at_an_unmet_expectation(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("expect online\nexpect unlock 1\n")
    r = CliRunner().invoke(main, ["sim", "--script", str(f), "--trace", str(tmp_path / "t")])
    assert r.exit_code == 1 and "line 2: expect unlock 1: not met" in r.output


def test_the_interactive_box_takes_lines_on_stdin(tmp_path):
    lines = ["help", "backend issue pin owner comp 0 uses unlimited", "t pin", "wait 1s", "o 2",
             "wait 500ms", "c 2", "expect stored closed comp 2", "1 2 3", "bogus line", "s", "quit"]
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "sim", "--cpython", "--box-id", "box-7"],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    out = p.stdout
    assert p.returncode == 0, p.stderr[-2000:]
    assert "parcelbox sim: box box-7, 4 compartments" in out and "shortcuts:" in out
    code = [ln for ln in out.splitlines() if ln.startswith("code pin is ")]
    assert len(code) == 1 and out.count(code[0].split()[3]) == 1      # shown once
    for comp in (1, 2, 3, 4):
        assert "LOCK %d unlocked" % comp in out
    assert "door 2 open" in out and "opened: compartment 2, code " in out
    assert "sent: closed" in out and "ok: expect stored closed comp 2" in out
    # each key press is one line (the click's end is not another), and a pattern is named
    assert "feedback key (LED off, buzzer 2400 Hz)" in out
    assert not re.search(r"(?m)^ +[0-9.]+s LED off$", out)
    assert "event #" in out and " arg " not in out
    assert "error: bogus line: unknown command 'bogus'" in out
    assert "online |" in out and "2:shut" in out
    assert out.rstrip().endswith("bye")
