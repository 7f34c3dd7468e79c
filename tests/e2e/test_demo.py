# `parcelbox demo` (the README's first command): the whole story against a
# broker, the firmware in the VM; every step as expected, no key or password printed, a
# failing step exits non-zero and says which.
import io
import json
import re
import subprocess
import sys

import pytest

from host_tools.sim import demo

STORY = ("issued the driver's deposit code #1", "issued the recipient's one-time code #2",
         "ACCEPTED: green", "solenoid 1 energised", "event #6 deposit: compartment 1, code 1",
         "REJECTED: red", "unknown code, 1 failure in a row", "pickup: compartment 1, code 2",
         "stored event #11 pickup",
         "code #2 is used up", "THROTTLED: amber", "the keypad is locked for 30 s",
         "the power is cut", "powers on (boot 2", "the lockout survived the power cut",
         "each exactly once", "the box's outbox on flash: empty", "the clock is simulated",
         "demo: all 7 steps as expected", "of the box's simulated time in")


def _secrets(monkeypatch):
    """The box's provisioning record, as Backend.register returns it to the demo."""
    recs = []
    real = demo.Backend.register
    monkeypatch.setattr(demo.Backend, "register",
                        lambda self, *a, **kw: recs.append(real(self, *a, **kw)) or recs[-1])
    return recs


def _no_secret(text, rec):
    for s in (rec["box_key"], rec["box_key"].upper(), rec["mqtt_password"]):
        assert s not in text


def _issued_codes(text):
    return re.findall(r"code #\d: (\d{6}) \(shown once", text)


@pytest.mark.vm
def test_the_demo_passes_every_step_in_the_vm(monkeypatch):
    recs = _secrets(monkeypatch)
    out = io.StringIO()
    assert demo.run(out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "the firmware in the MicroPython VM" in text and "embedded amqtt broker" in text
    for phrase in STORY:
        assert phrase in text, phrase
    assert text.count("REJECTED: red") >= 2 + demo.ATTACK - 1   # two typos, the guesses
    assert len(_issued_codes(text)) == 2                        # shown once each
    _no_secret(text, recs[0])


@pytest.mark.vm
def test_the_command_exits_zero_and_prints_no_key(tmp_path):
    keep = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "demo", "--keep", str(keep)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo: all 7 steps as expected" in r.stdout
    config = json.loads((keep / "flash" / "config.json").read_text())   # the box's own flash
    _no_secret(r.stdout + r.stderr, {"box_key": config["box_key"],
                                     "mqtt_password": config["mqtt_password"]})


def test_a_step_that_fails_exits_non_zero_and_says_which(monkeypatch):
    # three guesses cannot lock the keypad (5 are free): the attacker step must fail
    monkeypatch.setattr(demo, "ATTACK", 3)
    out = io.StringIO()
    assert demo.run(out=out, vm=False) == 1
    text = out.getvalue()
    assert "demo: FAILED at step 5 (an attacker guesses codes): no throttled feedback" in text
    assert "the power is cut" not in text                 # nothing after the failed step


def test_keep_never_empties_a_folder_that_is_not_a_previous_demos(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    out = io.StringIO()
    assert demo.run(out=out, vm=False, keep=str(tmp_path)) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine" and "notes.txt" in out.getvalue()


def test_an_unreachable_broker_fails_the_first_step(tmp_path):
    out = io.StringIO()
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]         # nothing listens there
    assert demo.run(out=out, vm=False, broker="mqtt://127.0.0.1:%d" % port, username="x") == 1
    assert "FAILED at step 1 (setup" in out.getvalue()


@pytest.mark.vm
def test_the_demo_passes_against_the_private_mosquitto_over_tls(mosquitto, monkeypatch):
    recs = _secrets(monkeypatch)
    pw = mosquitto.add_user("demo-consumer", backend=True)
    mosquitto.add_user("demo-issuer", pw, backend=True)
    out = io.StringIO()
    rc = demo.run(out=out, broker=mosquitto.url, ca=str(mosquitto.ca_path), username="demo-consumer",
                  issuer_username="demo-issuer", password=pw,
                  on_register=lambda box, box_pw: mosquitto.add_user(box, box_pw))
    text = out.getvalue()
    assert rc == 0, text
    assert "(TLS)" in text
    for phrase in STORY:
        assert phrase in text, phrase
    _no_secret(text, recs[0])
    assert pw not in text
