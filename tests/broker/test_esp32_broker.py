# The whole ESP32 firmware (firmware/esp32/pb_esp32/main.py: boot, superloop, its own MQTT
# link) on CPython with the fake machine for the pins and firmware/linux/pb_linux/net.py for the
# sockets, against the private mosquitto over TLS: provisioned, online, a code issued by
# the backend opens the box, and its events reach the ledger once.
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "host_tools" / "virtual", ROOT / "firmware" / "esp32"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from fakeboards import ESP32_4X3, Wired  # noqa: E402
from pb_linux.net import HostNet  # noqa: E402
from host_tools.backend.sdk import Backend, Consumer, Ledger, mqtt_password  # noqa: E402
import mpselect  # noqa: E402
from pb_esp32 import main as pbmain  # noqa: E402
from pb_esp32 import port as pbport  # noqa: E402

BOX = "box-1"


@pytest.fixture(autouse=True)
def micropython_select(monkeypatch):
    # The port's idle polls the link's socket as MicroPython does (ipoll, objects
    # registered): CPython's select.poll has neither.
    monkeypatch.setattr(pbport, "select", mpselect)


class Device:
    """The ESP32 firmware provisioned for `broker` in a flash folder, booted with fake pins
    and host sockets; `until(cond)` keeps its superloop running."""

    def __init__(self, broker, tmp_path, monkeypatch, cert=False):
        self.ledger = Ledger(tmp_path / "ledger.db")
        self.rec = Backend(self.ledger).register(BOX)
        key = bytes.fromhex(self.rec["box_key"])
        broker.add_user(BOX, mqtt_password(key))
        flash = tmp_path / "flash"
        flash.mkdir()
        shutil.copy(broker.ca_path, flash / "ca.pem")
        b = {"host": broker.host, "port": broker.port, "tls": True, "ca": "ca.pem"}
        if cert:
            c, k = broker.client_cert_files(BOX)
            shutil.copy(c, flash / "box.crt")
            shutil.copy(k, flash / "box.key")
            b.update(cert="box.crt", key="box.key")
        (flash / "board.json").write_text(json.dumps(ESP32_4X3))
        (flash / "config.json").write_text(json.dumps({
            "box_id": BOX, "box_key": self.rec["box_key"], "wifi": {"ssid": "home", "password": "x"},
            "broker": b, "mqtt_password": self.rec["mqtt_password"]}))
        monkeypatch.chdir(flash)  # the device's working directory is its flash root
        self.wired = Wired(ESP32_4X3, bounce_ms=3)
        w = self.wired.world

        def sleep(ms):
            time.sleep(ms / 1000)
            w.advance(ms)

        self.lines = []
        self.app, self.hw = pbmain.boot(str(flash), net=HostNet(), clock=w.ticks_ms, sleep=sleep,
                                        reset_cause=1, out=self.lines.append)

    def until(self, cond, what, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.app.run(5)
            if cond():
                return
        raise AssertionError("timed out: %s\n%s" % (what, "\n".join(self.lines[-20:])))


def test_the_esp32_firmware_connects_answers_a_code_and_reports_once(mosquitto, tmp_path, monkeypatch):
    mosquitto.add_user("consumer", backend=True)
    mosquitto.add_user("issuer", backend=True)
    d = Device(mosquitto, tmp_path, monkeypatch)
    app, wired, ledger, until = d.app, d.wired, d.ledger, d.until
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
    assert any("boot box box-1" in x for x in d.lines) and wired.world.wdt_feeds > 0
    for secret in (issued.code, d.rec["box_key"], d.rec["mqtt_password"]):
        assert not any(secret in x for x in d.lines)


@pytest.fixture
def cert_broker(mosquitto, tmp_path):
    from host_tools.testing import broker as brokerlib
    with brokerlib.Broker("mosquitto", workdir=tmp_path / "cert-broker", require_client_cert=True) as b:
        yield b


def test_a_broker_that_wants_client_certificates_admits_the_box_with_its_certificate(
        cert_broker, tmp_path, monkeypatch):
    d = Device(cert_broker, tmp_path, monkeypatch, cert=True)
    d.until(lambda: d.app.link.state == "connected", "connected with a client certificate")


def test_without_its_certificate_the_box_stays_out_and_says_why(cert_broker, tmp_path, monkeypatch):
    d = Device(cert_broker, tmp_path, monkeypatch, cert=False)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        d.app.run(5)
    assert d.app.link.state != "connected" and d.app.link.connects == 0
    assert d.app.link.last_error
