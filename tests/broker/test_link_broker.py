# The firmware's own MQTT link (firmware/parcelbox/link.py) on CPython through
# firmware/linux/pb_linux/net.py, against the private mosquitto over TLS: a firmware Box and
# Remote with their Link, a backend issuing codes, a consumer storing events.
import os
import time

import pytest

from pb_linux.net import HostNet
from host_tools.backend.sdk import Backend, Consumer, Ledger, mqtt_password
from parcelbox import link as L
from parcelbox import ticks
from parcelbox.box import Box
from parcelbox.remote import Remote, stored_settings
from parcelbox.storage import Storage

BOX = "box-1"
SCAN_S = 0.010  # the superloop's scan period


class Device:
    """The box's superloop in miniature: door samples, ticks, solenoids, the link; every
    link.step timed. The test calls run_until() wherever a device would just keep going."""

    def __init__(self, flash, key, conf):
        flash.mkdir()
        self.skew = 0  # ms added to the clock: skip() jumps the box's timers forward
        storage = Storage(str(flash))
        now = self.now()
        self.box = Box(storage, key, stored_settings(storage, {"compartments": 1}), now)
        self.remote = Remote(self.box, BOX, key)
        self.link = L.Link(self.remote, conf, HostNet(), os.urandom)
        self.door_open = False
        self.unlocks = 0
        self._level = False
        self.steps = []  # (seconds the step took, link state before it)

    def now(self):
        return (time.monotonic_ns() // 1000000 + self.skew) & (ticks.PERIOD - 1)

    def skip(self, ms):
        self.skew += ms

    def loop_once(self):
        now = self.now()
        self.box.door(1, self.door_open, now)
        self.box.tick(now)
        level = bool(self.box.solenoid(1, now))
        if level and not self._level:
            self.unlocks += 1
        self._level = level
        state = self.link.state
        t0 = time.perf_counter()
        self.link.step(now)
        self.steps.append((time.perf_counter() - t0, state))
        wait = ticks.diff(self.link.next_deadline(self.now()), self.now())
        time.sleep(min(max(wait, 0) / 1000, SCAN_S))

    def run_until(self, cond, timeout=20, what="condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.loop_once()
            v = cond()
            if v:
                return v
        raise AssertionError("timed out waiting for %s (link %s, %s)" % (
            what, self.link.state, self.link.last_error))

    def run_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.loop_once()

    def type(self, keys):
        for ch in keys:
            self.box.key(ord(ch), self.now())


@pytest.fixture
def system(mosquitto, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    mosquitto.add_user("cli", backend=True)
    mosquitto.add_user("consumer-1", backend=True)
    backend = Backend(ledger, mosquitto.sdk_config("cli"))
    key = bytes.fromhex(backend.register(BOX, 1)["box_key"])
    mosquitto.add_user(BOX, mqtt_password(key))
    a = mosquitto.connect_args(BOX)
    assert a["tls"] and a["ca"]
    conf = {"box_id": BOX, "host": a["host"], "port": a["port"], "tls": True, "ca": a["ca"],
            "password": a["password"], "keepalive": 60}
    consumer = Consumer(tmp_path / "ledger.db", mosquitto.sdk_config("consumer-1"),
                        name="consumer-1").start()
    assert consumer.subscribed.wait(10)
    dev = Device(tmp_path / "flash", key, conf)
    yield mosquitto, ledger, backend, consumer, dev
    dev.link.close(clean=False)
    consumer.stop()
    backend.close()
    ledger.close()


def test_a_box_on_its_own_link_answers_a_code_and_survives_a_broker_restart(system):
    broker, ledger, backend, consumer, dev = system
    dev.run_until(lambda: dev.link.state == L.CONNECTED, what="CONNACK over TLS")
    dev.run_until(lambda: ledger.box(BOX).online, what="online status in the ledger")

    issued = backend.issue(BOX, role="driver", comp=1)
    assert issued.sent
    dev.run_until(lambda: ledger.command_outcome(BOX, issued.cmd_seq) != (None, None),
                  what="the box's answer to the add command")
    assert ledger.command_outcome(BOX, issued.cmd_seq)[0] == 0  # ok

    # The broker goes away mid-way; the box keeps its loop and reconnects by itself.
    broker.stop()
    opened = dev.link.net.opened
    down_from = len(dev.steps)
    dev.run_for(3.2)
    down = dev.steps[down_from:]
    assert dev.link.state != L.CONNECTED and dev.link.last_error
    attempts = dev.link.net.opened - opened
    dev.type(issued.code)  # a deposit while offline: its events wait on flash
    dev.run_until(lambda: dev.unlocks, what="the unlock")
    dev.door_open = True
    dev.run_for(0.3)
    dev.door_open = False
    dev.run_for(0.3)
    assert dev.box.outbox.pending() >= 3  # opened, closed, deposit
    consumer.subscribed.clear()
    broker.start()
    dev.run_until(lambda: dev.link.connects == 2, timeout=30, what="reconnection")
    # What the box sent again at once may have beaten the consumer's own reconnection, and
    # mosquitto then had no member of the shared subscription to give it to: the box's
    # 30 s resend (docs/protocol.md section 6) brings it. Move the box's clock past that.
    dev.run_until(consumer.subscribed.is_set, what="the consumer back")
    dev.skip(31000)
    dev.run_until(lambda: [e for e in ledger.events(BOX) if e.type == "deposit"],
                  what="deposit in the ledger")
    dev.run_until(lambda: dev.box.outbox.pending() == 0, what="every event acked")

    events = ledger.events(BOX, limit=10 ** 6)
    seqs = [e.seq for e in events]
    assert len(seqs) == len(set(seqs)) == max(seqs)  # each event exactly once, none missing
    kinds = [e.type for e in events]
    assert kinds.count("deposit") == kinds.count("opened") == kinds.count("closed") == 1
    assert kinds.count("result") == 1

    # No step may block the superloop while the broker is down (each attempt opens a
    # socket, then finds it refused on a later step): count the steps over a scan period.
    worst = max(d for d, _ in down)
    slow = sum(1 for d, _ in down if d > SCAN_S)
    print("\nbroker down 3.2 s: %d link steps, %d connection attempts, slowest step %.3f ms, "
          "%d over %d ms" % (len(down), attempts, worst * 1000, slow, SCAN_S * 1000))
    print("whole run: %d steps, slowest %.3f ms (%s)" % (
        len(dev.steps), max(dev.steps)[0] * 1000, max(dev.steps)[1]))
    assert attempts >= 2 and worst < 0.1 and slow <= 2


def test_wrong_broker_credentials_are_refused_and_backed_off(system):
    broker, ledger, backend, consumer, dev = system
    dev.link.password = "not-the-password"
    dev.run_until(lambda: dev.link.refused, what="a refused CONNACK")
    assert dev.link.state == L.OFFLINE and dev.link.refused == 5
    assert dev.link.last_error == "refused: not authorized"
    wait = ticks.diff(dev.link.next_deadline(dev.now()), dev.now())
    assert 0 < wait <= 1000  # backing off, not hammering the broker
