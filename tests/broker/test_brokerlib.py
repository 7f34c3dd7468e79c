"""host_tools/testing/broker.py itself: which broker it picks, and the amqtt fallback
that developers without mosquitto get (users and the section 9 ACL)."""

import hashlib
import base64
import shutil
import subprocess

import pytest

from host_tools.testing import broker as brokerlib
from host_tools.testing.broker import Broker, BrokerUnavailable, ConnectRefused, choose_kind


@pytest.fixture
def no_mosquitto(monkeypatch):
    monkeypatch.setenv("PARCELBOX_MOSQUITTO", "/nonexistent/mosquitto")
    monkeypatch.delenv("PARCELBOX_TEST_BROKER", raising=False)


def test_without_mosquitto_a_developer_gets_amqtt(no_mosquitto, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert choose_kind() == "amqtt"


def test_without_mosquitto_ci_is_an_error_not_a_fallback(no_mosquitto, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BrokerUnavailable, match="CI=true needs mosquitto"):
        choose_kind()


def test_ci_refuses_a_forced_amqtt(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PARCELBOX_TEST_BROKER", "amqtt")
    with pytest.raises(BrokerUnavailable):
        choose_kind()


def test_the_password_hash_is_mosquittos_pbkdf2_format():
    line = brokerlib.mosquitto_password_hash("secret", salt=b"0123456789ab", iterations=101)
    _, seven, iterations, salt, digest = line.split("$")
    assert (seven, iterations, base64.b64decode(salt)) == ("7", "101", b"0123456789ab")
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac(
        "sha512", b"secret", b"0123456789ab", 101, 64)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_mosquitto_passwd_writes_the_same_format(tmp_path):
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "u", "secret"], check=True)
    _, stored = path.read_text().strip().split(":", 1)
    _, _, iterations, salt, digest = stored.split("$")
    ours = brokerlib.mosquitto_password_hash("secret", base64.b64decode(salt), int(iterations))
    assert ours == stored


@pytest.fixture
def amqtt(tmp_path):
    with Broker("amqtt", workdir=tmp_path / "amqtt") as b:
        b.add_user("box1", "pw-box1")
        b.add_user("box2", "pw-box2")
        yield b


def test_the_amqtt_fallback_checks_passwords(amqtt):
    assert (amqtt.kind, amqtt.secure, amqtt.ca_path) == ("amqtt", False, None)
    assert amqtt.connect_args("box1")["tls"] is False
    with pytest.raises(ConnectRefused):
        amqtt.paho_client("box1", "pw-box2")
    assert amqtt.probe("box3", "x") == 5
    assert amqtt.probe("box1", "pw-box1") == 0


def test_the_amqtt_fallback_confines_a_box_to_its_subtree(amqtt):
    box1, box2 = amqtt.paho_client("box1"), amqtt.paho_client("box2")
    backend = amqtt.paho_client("backend")
    # unlike mosquitto, amqtt refuses the subscription itself
    assert box1.subscribe_wait("parcelbox/v1/box2/cmd") == [0x80]
    assert box1.subscribe_wait("parcelbox/v1/+/cmd") == [0x80]
    assert box1.subscribe_wait("parcelbox/v1/box1/cmd") == [1]
    assert box2.subscribe_wait("parcelbox/v1/box2/cmd") == [1]
    assert backend.subscribe_wait("parcelbox/v1/+/evt") == [1]

    box1.publish_wait("parcelbox/v1/box2/evt", b"forged")
    box1.publish_wait("parcelbox/v1/box2/cmd", b"forged")
    box1.publish_wait("parcelbox/v1/box1/evt", b"real")
    backend.publish_wait("parcelbox/v1/box1/cmd", b"for box1")
    backend.publish_wait("parcelbox/v1/box2/cmd", b"for box2")

    assert backend.until(b"real") == []
    assert box1.until(b"for box1") == []
    assert box2.until(b"for box2") == []


def test_the_amqtt_fallback_restarts_on_the_same_port(amqtt):
    port = amqtt.port
    amqtt.restart()
    assert amqtt.port == port
    assert amqtt.probe("box1", "pw-box1") == 0


def test_the_sdk_connects_with_the_brokers_settings(broker):
    from host_tools.backend.sdk import mqtt as sdk_mqtt

    cfg = broker.sdk_config("backend")
    assert cfg.tls == broker.secure
    assert sdk_mqtt.MqttConfig.from_url(broker.url, "backend", broker.backend_password,
                                        cfg.ca) == cfg
    c = sdk_mqtt.client(cfg, "backend")
    sdk_mqtt.connect(c, cfg, timeout=5)
    c.disconnect()
    c.loop_stop()
