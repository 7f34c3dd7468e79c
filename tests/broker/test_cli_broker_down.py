# The backend commands against the private broker, up and then down: a command that cannot reach
# it exits 1 with one `Error:` line in words and stores nothing (docs/sdk.md section 4).
import json

import pytest
from click.testing import CliRunner

from host_tools.cli.main import main


@pytest.fixture
def run(broker, tmp_path):
    db = str(tmp_path / "ledger.db")
    env = {"PARCELBOX_DB": db, "PARCELBOX_BROKER": broker.url, "PARCELBOX_CA": str(broker.ca_path),
           "PARCELBOX_USERNAME": "backend", "PARCELBOX_PASSWORD": broker.backend_password,
           "PARCELBOX_DEBUG": None}

    def run(*args, code=0):
        r = CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)
        assert r.exit_code == code and "Traceback" not in r.output, r.output
        return r.output
    return run


def test_a_broker_that_went_away_makes_every_sending_command_exit_1(broker, run):
    run("box", "add", "A", "--compartments", "2")
    issued = json.loads(run("codes", "issue", "A", "--json"))
    assert issued["sent"] is True
    broker.stop()
    for args in (["codes", "issue", "A"], ["codes", "revoke", "A", str(issued["code_id"])],
                 ["codes", "sync", "A"], ["unlock", "A", "1"], ["box", "refresh", "A"],
                 ["events", "--follow"]):
        out = run(*args, code=1)
        errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and "cannot reach the broker at" in errors[0], out
        assert "connection refused" in errors[0] and "ConnectionRefusedError" not in out
    codes = json.loads(run("codes", "list", "A", "--all", "--json"))
    assert [(c["id"], c["status"]) for c in codes] == [(issued["code_id"], "active")]


def test_events_follow_says_when_it_listens_when_the_broker_goes_and_when_it_is_back(broker, run, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading

    from host_tools.testing.wait import wait_for

    run("box", "add", "A")
    env = dict(os.environ, PARCELBOX_DB=str(tmp_path / "ledger.db"), PARCELBOX_BROKER=broker.url,
               PARCELBOX_CA=str(broker.ca_path), PARCELBOX_USERNAME="backend",
               PARCELBOX_PASSWORD=broker.backend_password)
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli.main", "events", "--follow", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("listening for events on" in s for s in said) or proc.poll() is not None,
                 what="the follower to listen")
        broker.stop()
        wait_for(lambda: any("lost the broker at" in s for s in said), what="the follower to notice")
        broker.start()
        wait_for(lambda: any("is back: listening again" in s for s in said), timeout=30,
                 what="the follower to be back")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        reader.join(5)
    assert proc.returncode == 0, "".join(said)
    assert out.strip() == "" and not any("Traceback" in s for s in said)   # stdout: events only
    assert [s.split(" ")[0] for s in said] == ["listening", "lost", "the"], said
