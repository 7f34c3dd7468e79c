# Puts the firmware package and the VM-side test helpers on sys.path for CPython tests.
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "firmware", ROOT / "host_tools" / "virtual", ROOT / "tests", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# The private MQTT broker (host_tools/testing/broker.py, docs/testing.md). `broker` is
# mosquitto when installed, else the amqtt fallback (never under CI=true, where
# a missing mosquitto fails the test); `mosquitto` skips on the fallback.
# Either starts a broker per test (about 25 ms) with the backend user in it.
BROKER_FIXTURES = ("broker", "mosquitto")


def _start_broker(tmp_path, need_mosquitto):
    from host_tools.testing import broker as brokerlib    # here: paho is not imported by runs without broker tests

    try:
        kind = brokerlib.choose_kind()
    except brokerlib.BrokerUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    if need_mosquitto and kind != "mosquitto":
        pytest.skip("needs mosquitto (TLS, ACL file, client id = username, persistence, "
                    "shared subscriptions); running on the amqtt fallback")
    return brokerlib.Broker(kind, workdir=tmp_path / "broker")


@pytest.fixture
def broker(tmp_path):
    with _start_broker(tmp_path, need_mosquitto=False) as b:
        yield b


@pytest.fixture
def mosquitto(tmp_path):
    with _start_broker(tmp_path, need_mosquitto=True) as b:
        yield b


def pytest_collection_modifyitems(items):
    # `-m 'not broker'` leaves out every test that starts a broker
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in BROKER_FIXTURES):
            item.add_marker(pytest.mark.broker)


# The virtual board (host_tools/vboard/board.py, docs/vboard.md): a started VirtualBoard on a
# fresh flash folder, reached by mpremote as `vboard.url`; stopped after the test.
@pytest.fixture
def vboard(tmp_path):
    from host_tools.vboard.board import VirtualBoard

    with VirtualBoard(tmp_path / "flash") as vb:
        yield vb
