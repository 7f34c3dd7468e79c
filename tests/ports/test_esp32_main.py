# The ESP32 boot path (firmware/esp32: boot.py's safe mode, pb_esp32/main.py) on CPython
# with the fake machine: configuration errors on the LED, the box running from its own
# main, a crash saved, reset, and reported as an event on the next boot.
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "host_tools" / "virtual", ROOT / "firmware" / "esp32"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import fakeworld  # noqa: E402
import mpselect  # noqa: E402
from fakeboards import ESP32_4X3, Wired  # noqa: E402
from fakenet import FakeNet  # noqa: E402
from host_tools.backend import crypto  # noqa: E402
from parcelbox import app as _app, devconf, events, mqtt, ticks  # noqa: E402
from parcelbox.codestore import ROLE_OWNER  # noqa: E402
from parcelbox.storage import Storage  # noqa: E402
from pb_esp32 import main as pbmain  # noqa: E402
from pb_esp32 import safe  # noqa: E402

KEY = bytes(range(32))
CONF = {"box_id": "box-1", "box_key": KEY.hex(), "wifi": {"ssid": "home", "password": "wifi-secret"},
        "broker": {"host": "127.0.0.1", "port": 1, "tls": False}, "mqtt_password": "mqtt-secret"}


class OfflineNet:
    def step(self, now):
        pass

    def up(self):
        return False

    def time(self):
        return None


@pytest.fixture
def box(tmp_path):
    wired = Wired(ESP32_4X3, bounce_ms=3)
    st = Storage(str(tmp_path))
    st.replace("board.json", json.dumps(ESP32_4X3).encode())
    st.replace("config.json", json.dumps(CONF).encode())
    lines = []
    w = wired.world

    def boot(**kw):
        return pbmain.boot(str(tmp_path), net=OfflineNet(), clock=w.ticks_ms, sleep=w.advance,
                           reset_cause=kw.pop("cause", 1), out=lines.append, **kw)
    return wired, st, lines, boot


def test_the_box_boots_from_its_own_main_and_a_typed_code_opens_it(box):
    wired, st, lines, boot = box
    app, hw = boot()
    app.box.codes.add(7, crypto.code_digest(KEY, "482915"), ROLE_OWNER, 0, 0xFFFF, 0, 0)
    assert any(x.startswith("PB I ") and "boot box box-1" in x for x in lines)
    for ch in "482915":
        wired.keys.press(ch)
        app.run(8)
        wired.keys.release(ch)
        app.run(8)
    app.run(10)
    assert wired.energised(1)
    app.run(200)
    assert not wired.energised(1)  # one pulse
    assert wired.world.wdt_feeds > 0  # fed while everything progressed
    text = "\n".join(lines)
    for secret in ("482915", "wifi-secret", "mqtt-secret", KEY.hex()):
        assert secret not in text


@pytest.mark.parametrize("damage, why", [
    (lambda st: st.remove("config.json"), devconf.NO_CONFIG),
    (lambda st: st.replace("config.json", b"{"), devconf.BAD_CONFIG),
    (lambda st: st.replace("config.json", json.dumps(dict(CONF, box_key="00")).encode()),
     devconf.BAD_CONFIG)])
def test_a_bad_configuration_blinks_its_number_in_red_and_starts_nothing(box, damage, why):
    wired, st, lines, boot = box
    damage(st)
    w = wired.world
    assert pbmain.boot(str(st.root), net=OfflineNet(), clock=w.ticks_ms, sleep=w.advance,
                       reset_cause=1, out=lines.append, blink_rounds=1) == (None, why)
    assert any("config:" in x and x.startswith("PB E") for x in lines)
    assert not wired.energised(1) and w.wdt_feeds == 0
    assert w.now >= why * 500  # it blinked (200 ms on, 300 ms off, `why` times)


def test_the_red_led_blinks_as_many_times_as_the_error_number():
    class LedRecorder:
        def __init__(self):
            self.on = 0

        def indicate(self, led, hz):
            self.on += led == 2

    rec = LedRecorder()
    from parcelbox import crash
    crash.error_loop(rec.indicate, lambda ms: None, devconf.BAD_CONFIG, rounds=2)
    assert rec.on == 2 * devconf.BAD_CONFIG


def test_a_missing_board_leaves_the_repl_free(box):
    wired, st, lines, boot = box
    st.remove("board.json")
    assert boot() == (None, devconf.NO_BOARD)


def test_a_crash_is_saved_the_box_reset_and_the_next_boot_reports_it(box):
    wired, st, lines, boot = box
    app, hw = boot()
    resets = []

    def broken():
        raise ZeroDivisionError("bug in a part")
    app.port.scan = broken
    pbmain.run(app, hw, loops=1000, reset=lambda: resets.append(1))
    assert resets == [1] and st.read(pbmain.CRASH).startswith(b"ZeroDivisionError")
    assert any("crash: ZeroDivisionError; restarting" in x for x in lines)
    app2, _ = boot(cause=3)  # machine.WDT_RESET... any cause is reported as given
    evs = [app2.box.outbox.get(i) for i in range(app2.box.outbox.pending())]
    crash = [e for e in evs if e[1] == events.CRASH]
    assert len(crash) == 1 and crash[0][3] == 3
    assert st.read(pbmain.CRASH) is None and st.read(pbmain.CRASH_LAST).startswith(b"ZeroDivision")


def _release_star_after(wired, ms):
    """A sleep that lets the technician let go of '*' after `ms`."""
    w = wired.world
    t_release = w.now + ms

    def sleep(n):
        w.advance(n)
        if w.now >= t_release:
            wired.keys.release("*")
    return sleep


def test_holding_star_at_power_up_then_letting_go_enters_safe_mode(box):
    wired, st, lines, boot = box
    w = wired.world
    wired.keys.press("*")
    assert safe.check(st, w.ticks_ms, _release_star_after(wired, 1500)) is True and safe.ACTIVE
    w.advance(50)
    assert safe.check(st, w.ticks_ms, w.advance) is False and not safe.ACTIVE


def test_a_star_key_stuck_at_every_power_up_does_not_keep_the_box_in_safe_mode(box):
    wired, st, lines, boot = box
    w = wired.world
    wired.keys.press("*")  # jammed: it never comes up
    out = []
    assert safe.check(st, w.ticks_ms, w.advance, out=out.append) is False and not safe.ACTIVE
    assert any("stuck" in x for x in out)
    assert w.now < 30000  # the boot goes on after a bounded wait


def test_the_safe_mode_decision_ends_across_the_tick_wrap(tmp_path):
    wired = Wired(ESP32_4X3, bounce_ms=3, t0=0x3FFFFFFF - 300)  # ticks wrap 300 ms in
    w = wired.world
    st = Storage(str(tmp_path))
    st.replace("board.json", json.dumps(ESP32_4X3).encode())
    wired.keys.press("*")
    sleeps = []

    def sleep(ms):
        sleeps.append(ms)
        if len(sleeps) > 5000:
            raise AssertionError("the '*' check never ended")
        w.advance(ms)
        if w.now >= 1500:
            wired.keys.release("*")
    assert safe.check(st, w.ticks_ms, sleep) is True


def test_the_safe_mode_check_never_stops_the_box_from_booting(box):
    wired, st, lines, boot = box
    w = wired.world
    st.replace("board.json", json.dumps(dict(ESP32_4X3, keypad=dict(
        ESP32_4X3["keypad"], layout="123456789A0#"))).encode())  # no '*' on this keypad
    assert safe.check(st, w.ticks_ms, w.advance) is False


def test_a_safe_mode_file_enters_safe_mode_without_touching_the_pins(box):
    wired, st, lines, boot = box
    st.replace(safe.FLAG, b"")
    assert safe.check(st, wired.world.ticks_ms, wired.world.advance, hw_factory=None) is True


def test_settings_the_board_cannot_run_blink_as_a_bad_configuration(box):
    wired, st, lines, boot = box
    w = wired.world
    # a valid board with a short solenoid limit, and no pulse_ms: the default 700 ms
    # pulse would exceed it
    st.replace("board.json", json.dumps(dict(ESP32_4X3, max_on_ms=500)).encode())
    assert pbmain.boot(str(st.root), net=OfflineNet(), clock=w.ticks_ms, sleep=w.advance,
                       reset_cause=1, out=lines.append, blink_rounds=1) == (None, devconf.BAD_CONFIG)
    assert any(x.startswith("PB E") and "config:" in x and "pulse_ms" in x for x in lines)
    assert not wired.energised(1) and w.wdt_feeds == 0


def test_a_boot_that_fails_after_the_configuration_is_a_crash_saved_and_reset(box, monkeypatch):
    wired, st, lines, boot = box

    def no_memory(*a, **kw):
        raise MemoryError("heap fragmented")
    monkeypatch.setattr(pbmain, "App", no_memory)
    resets = []
    app, why = boot(reset=lambda: resets.append(wired.world.now))
    assert app is None and resets  # never left at the REPL with nothing running
    assert st.read(pbmain.CRASH).startswith(b"MemoryError")
    assert any(x.startswith("PB E") and "MemoryError" in x for x in lines)
    assert not wired.energised(1)


def _crash_once(box, after_ms=0):
    """Boot, run `after_ms` of uptime, then crash in the loop; returns the boot's lines."""
    wired, st, lines, boot = box
    start = len(lines)
    app, hw = boot()
    wired.world.advance(after_ms)

    def broken():
        raise ZeroDivisionError("bug in a part")
    app.port.scan = broken
    wired.world.on_reset = "flag"   # machine.reset(): the chip (and its watchdog) restarts
    pbmain.run(app, hw, loops=1000, reset=lambda: wired.world.reset(4))
    return lines[start:]


def test_a_box_that_crashes_at_every_start_waits_longer_each_time_with_the_locks_off(box):
    wired, st, lines, boot = box
    w = wired.world
    for _ in range(3):
        _crash_once(box)
    assert not any("crash loop" in x for x in lines)   # three boots: no wait yet
    t = w.now
    booted = _crash_once(box)   # the boot after three crashes in a row waits 10 s
    assert any(x.startswith("PB W") and "crash loop: starting in 10 s" in x for x in booted)
    first_wait = w.now - t
    assert 10000 <= first_wait < 16000 and not wired.energised(1)
    t = w.now
    booted = _crash_once(box)
    assert any("crash loop: starting in 20 s" in x for x in booted)
    assert w.now - t >= 20000
    assert st.read(pbmain.CRASH)   # still saved for the next report


def test_the_crash_count_restarts_after_a_stable_run_or_a_boot_without_a_crash(box):
    wired, st, lines, boot = box
    for _ in range(3):
        _crash_once(box)
    _crash_once(box, after_ms=11 * 60 * 1000)   # ran 11 min before crashing: a new count
    from parcelbox import crash
    assert st.read(crash.CRASH_COUNT) == b"1"
    st.remove(pbmain.CRASH)                     # the next boot is after a power cut
    boot()
    assert st.read(crash.CRASH_COUNT) is None


def test_a_crash_count_file_that_is_garbage_counts_as_no_crash(box):
    wired, st, lines, boot = box
    from parcelbox import crash
    st.replace(crash.CRASH_COUNT, b"\xff\x00")
    booted = _crash_once(box)
    assert not any("crash loop" in x for x in booted)
    assert st.read(crash.CRASH_COUNT) == b"1"


# ---- found by fuzzing (host_tools/fuzz/config.py): each ends in the error blink or the ----
# ---- free REPL, (None, why), never in an exception out of boot() or a crash and reset ----

def _deep(st):
    st.replace("config.json", b'{"box_id":"box-1","settings":' + b"[" * 3000 + b"]" * 3000 + b"}")


def _nul_ca(st):
    broker = {"host": "127.0.0.1", "port": 8883, "tls": True, "ca": "ca.pem\x00"}
    st.replace("ca.pem", b"-----BEGIN CERTIFICATE-----\n")
    st.replace("config.json", json.dumps(dict(CONF, broker=broker)).encode())


def _twice(st):
    # a 4x4 keypad (a fourth column on GPIO15) whose layout has every needed key, 1 twice
    kp = dict(ESP32_4X3["keypad"], cols=[25, 33, 32, 15], layout="123A456B789C*0#1")
    st.replace("board.json", json.dumps(dict(ESP32_4X3, keypad=kp)).encode())


@pytest.mark.parametrize("damage, why, said", [
    (_deep, devconf.BAD_CONFIG, "config.json is not valid JSON"),
    (_nul_ca, devconf.BAD_CONFIG, "broker.ca must name a file"),
    (_twice, devconf.BAD_CONFIG, "keypad_layout has the key 1 twice")])
def test_a_configuration_that_used_to_crash_the_boot_blinks_as_a_bad_configuration(box, damage, why, said):
    wired, st, lines, boot = box
    damage(st)
    w = wired.world
    resets = []
    assert pbmain.boot(str(st.root), net=OfflineNet(), clock=w.ticks_ms, sleep=w.advance,
                       reset_cause=1, out=lines.append, blink_rounds=1,
                       reset=lambda: resets.append(1)) == (None, why)
    assert any(x.startswith("PB E") and "config:" in x and said in x for x in lines)
    assert w.now >= why * 500  # it blinked
    assert not resets and st.read(pbmain.CRASH) is None  # no crash, no reset: no crash loop
    assert not wired.energised(1) and w.wdt_feeds == 0


def test_deeply_nested_board_json_is_a_bad_board_and_leaves_the_repl_free(box):
    wired, st, lines, boot = box
    st.replace("board.json", b"[" * 3000 + b"]" * 3000)
    assert boot() == (None, devconf.BAD_BOARD)
    assert any(x.startswith("PB E") and "board: board.json is not valid JSON" in x for x in lines)


@pytest.mark.parametrize("change", [{"buzzer": 99}, {"led": [21, 19, 36]}, {"battery_divider": [1]},
                                    {"door_pull": None, "door_open_level": "x"}, {"format": 2}])
def test_a_complete_board_the_chip_cannot_drive_is_a_bad_board_not_an_exception(box, change):
    # a pin the chip lacks, an input-only pin as an output, a field of the wrong shape: the
    # Hardware raised out of boot() (main.py stopped with a traceback)
    wired, st, lines, boot = box
    board = dict(ESP32_4X3)
    for k, v in change.items():
        if v is None:
            board.pop(k)
        else:
            board[k] = v
    st.replace("board.json", json.dumps(board).encode())
    assert boot() == (None, devconf.BAD_BOARD)
    assert any(x.startswith("PB E") and "board: the hardware refused it" in x for x in lines)
    assert not wired.energised(1) and st.read(pbmain.CRASH) is None


class BrokerNet(FakeNet):
    """host_tools/virtual/fakenet.py's network on the world's clock: up, and every connection
    answered with a CONNACK; the test sends the broker's bytes with conn.give_at."""

    def __init__(self, clock, pollable=True):
        FakeNet.__init__(self, recv_into=True)
        self.clock = clock
        self.pollable = pollable    # False: connections offer the port nothing to poll

    def step(self, now):
        pass

    def up(self):
        return True

    def time(self):
        return None

    def open(self, host, port, tls, ca):
        c = FakeNet.open(self, host, port, tls, ca)
        c.give(b"\x20\x02\x00\x00")
        if not self.pollable:
            c.pollable = lambda: None
        return c


@pytest.mark.parametrize("wakes", [True, False])
def test_a_command_pushed_by_the_broker_is_read_when_it_arrives_not_at_the_next_scan(
        box, tmp_path, monkeypatch, wakes):
    from pb_esp32 import port as eport
    monkeypatch.setattr(eport, "select", mpselect)  # MicroPython's poll: ipoll, objects
    wired, st, lines, _ = box
    w = wired.world
    net = BrokerNet(w.ticks_ms, pollable=wakes)  # without: the port just sleeps
    app, hw = pbmain.boot(str(tmp_path), net=net, clock=w.ticks_ms, sleep=w.advance,
                          reset_cause=1, out=lines.append)
    idles = []
    sleep = app.port.idle

    def timed(ms, conn=None):
        t0 = w.ticks_ms()
        sleep(ms, conn)
        idles.append((ms, ticks.diff(w.ticks_ms(), t0)))
    app.port.idle = timed
    app.run(50)
    c = net.conn
    assert app.link.state == "connected"
    arrival = ticks.add(w.ticks_ms(), 3)      # 3 ms into the loop's next sleep
    c.give_at(arrival, mqtt.publish("parcelbox/v1/box-1/cmd", b"{}", qos=1, pid=7))
    app.run(5)
    read = [t for t in c.reads if ticks.diff(t, arrival) >= 0][0]
    if wakes:
        assert ticks.diff(read, arrival) <= eport._SLICE_MS   # the next look at the socket
    else:
        assert ticks.diff(read, arrival) == _app.SCAN_MS - 3   # the next scan
    # the keypad is scanned as often as before: no sleep outlasts the time it was given
    assert all(0 <= took <= ms <= _app.SCAN_MS for ms, took in idles if ms > 0)
