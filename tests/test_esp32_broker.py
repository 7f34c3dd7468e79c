# The whole ESP32 firmware (firmware/esp32/pb_esp32/main.py: boot, superloop, its own MQTT
# link) on CPython with the fake machine for the pins and host_tools/hostnet.py for the
# sockets, against the private mosquitto over TLS: provisioned, online, a code issued by
# the backend opens the box, and its events reach the ledger once.
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "tests" / "fakes", ROOT / "firmware" / "esp32"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from fakeboards import ESP32_4X3, Wired  # noqa: E402
from host_tools.hostnet import HostNet  # noqa: E402
from host_tools.sdk import Backend, Consumer, Ledger, mqtt_password  # noqa: E402
from pb_esp32 import main as pbmain  # noqa: E402

BOX = "box-1"


def test_the_esp32_firmware_connects_answers_a_code_and_reports_once(mosquitto, tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "ledger.db")
    rec = Backend(ledger).register(BOX)
    key = bytes.fromhex(rec["box_key"])
    mosquitto.add_user(BOX, mqtt_password(key))
    mosquitto.add_user("consumer", backend=True)
    mosquitto.add_user("issuer", backend=True)
    flash = tmp_path / "flash"
    flash.mkdir()
    shutil.copy(mosquitto.ca_path, flash / "ca.pem")
    (flash / "board.json").write_text(json.dumps(ESP32_4X3))
    (flash / "config.json").write_text(json.dumps({
        "box_id": BOX, "box_key": rec["box_key"], "wifi": {"ssid": "home", "password": "x"},
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "tls": True, "ca": "ca.pem"},
        "mqtt_password": rec["mqtt_password"]}))
    monkeypatch.chdir(flash)  # the device's working directory is its flash root

    wired = Wired(ESP32_4X3, bounce_ms=3)
    w = wired.world

    def sleep(ms):
        time.sleep(ms / 1000)
        w.advance(ms)

    lines = []
    app, hw = pbmain.boot(str(flash), net=HostNet(), clock=w.ticks_ms, sleep=sleep,
                          reset_cause=1, out=lines.append)

    def until(cond, what, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            app.run(5)
            if cond():
                return
        raise AssertionError("timed out: %s\n%s" % (what, "\n".join(lines[-20:])))

    with Consumer(tmp_path / "ledger.db", mosquitto.sdk_config("consumer")) as consumer:
        consumer.subscribed.wait(10)
        until(lambda: app.link.state == "connected", "connected")
        with Backend(ledger, mosquitto.sdk_config("issuer")) as be:
            issued = be.issue(BOX, "owner", uses=1)
            until(lambda: ledger.command_outcome(BOX, issued.cmd_seq)[0] == 0, "code applied")
        for ch in issued.code:
            wired.keys.press(ch)
            app.run(6)
            wired.keys.release(ch)
            app.run(6)
        until(lambda: wired.energised(1), "solenoid on")
        wired.doors[0].set(False)  # the door opens (the reed switch opens)
        until(lambda: [e for e in ledger.events(BOX) if e.type == "opened"], "opened event")
        wired.doors[0].set(True)
        until(lambda: [e for e in ledger.events(BOX) if e.type == "closed"], "closed event")
        until(lambda: app.box.outbox.pending() == 0, "every event acked")
    seqs = [e.seq for e in ledger.events(BOX)]
    assert sorted(seqs) == list(range(1, max(seqs) + 1))
    assert ledger.box(BOX).online is True
    assert any("boot box box-1" in x for x in lines) and w.wdt_feeds > 0
    for secret in (issued.code, rec["box_key"], rec["mqtt_password"]):
        assert not any(secret in x for x in lines)
