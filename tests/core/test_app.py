# The superloop (firmware/parcelbox/app.py) on CPython with a scripted port: keys in,
# solenoid out, the watchdog fed only when keypad, lock, link and storage all progress.
import pytest

from fakenet import FakeNet
from host_tools.backend import crypto
from memflash import MemStorage
from parcelbox import app as _app
from parcelbox.codestore import ROLE_OWNER
from parcelbox.link import Link

KEY = bytes(range(32))
BOARD = {"name": "t", "keypad": {"rows": [1, 2, 3, 4], "cols": [5, 6, 7], "layout": "123456789*0#"},
         "compartments": [{"solenoid": 23, "door": 22}]}
CONF = {"box_id": "box-1", "box_key": KEY, "broker": {"host": "h", "port": 1883, "tls": False, "ca": None},
        "mqtt_username": "box-1", "mqtt_password": "pw", "wifi": {"ssid": "s", "password": ""},
        "settings": {}}


class ScriptedPort:
    """A port whose clock only moves when the loop sleeps; keys are held for 50 ms."""

    def __init__(self, storage=None):
        self.now = 1000
        self.storage = storage or MemStorage()
        self.net = None
        self.keys = []          # (bit, from_ms, to_ms)
        self.doors = {1: False}
        self.levels = []        # (ms, comp, level) on every change
        self._level = {}
        self.feeds = []
        self.logs = []
        self.slept = []
        self.waits = []         # (now, ms, conn) of every idle

    def ticks_ms(self):
        return self.now

    def press(self, ch, layout="123456789*0#"):
        start = max([k[2] for k in self.keys] + [self.now]) + 30
        self.keys.append((1 << layout.index(ch), start, start + 50))

    def scan(self):
        bits = 0
        for b, t0, t1 in self.keys:
            if t0 <= self.now < t1:
                bits |= b
        return bits

    def door(self, comp):
        return self.doors[comp]

    def tamper(self):
        return None

    def solenoid(self, comp, on):
        if self._level.get(comp) != bool(on):
            self._level[comp] = bool(on)
            self.levels.append((self.now, comp, bool(on)))

    def indicate(self, led, hz):
        pass

    def feed(self):
        self.feeds.append(self.now)

    def idle(self, ms, conn=None):
        self.slept.append(ms)
        self.waits.append((self.now, ms, conn))
        self.now += max(ms, 1)

    def urandom(self, n):
        return bytes(n)

    def log(self, level, text):
        self.logs.append((level, text))


def owner_code(app, code="482915"):
    app.box.codes.add(7, crypto.code_digest(KEY, code), ROLE_OWNER, 0, 0xFFFF, 0, 0)
    return code


def test_a_typed_code_drives_the_solenoid_for_one_pulse():
    port = ScriptedPort()
    a = _app.App(port, BOARD, CONF)
    for ch in owner_code(a):
        port.press(ch)
    a.run(loops=1000)
    ons = [(t, lv) for t, c, lv in port.levels if c == 1]
    assert ons[0][1] is False and ons[1][1] is True and ons[2][1] is False
    assert ons[2][0] - ons[1][0] == a.box.cfg["pulse_ms"]


def test_the_loop_never_sleeps_longer_than_a_scan_period():
    port = ScriptedPort()
    _app.App(port, BOARD, CONF).run(loops=300)
    assert max(port.slept) <= _app.SCAN_MS


def test_the_watchdog_is_fed_about_once_a_second_while_everything_progresses():
    port = ScriptedPort()
    _app.App(port, BOARD, CONF).run(loops=500)  # ~5 s
    assert 4 <= len(port.feeds) <= 6
    gaps = [b - a for a, b in zip(port.feeds, port.feeds[1:])]
    assert all(1000 <= g <= 1020 for g in gaps)


class StuckLink:
    state = "connecting"
    last_error = None
    connects = 0

    def __init__(self, *a):
        self.progress = 0

    def step(self, now):
        pass  # never progresses: a hung network part

    def next_deadline(self, now):
        return None

    def waitable(self):
        return None


class Net:
    def step(self, now):
        pass

    def time(self):
        return None


def test_a_link_that_stops_progressing_starves_the_watchdog():
    port = ScriptedPort()
    port.net = Net()
    a = _app.App(port, BOARD, CONF, make_link=StuckLink)
    a.run(loops=300)
    assert port.feeds == [] and a.link.progress == 0


class BrokenFlash(MemStorage):
    def size(self, name):
        raise OSError(5, "EIO")


def test_storage_that_stops_answering_starves_the_watchdog():
    good = MemStorage()
    port = ScriptedPort(good)
    a = _app.App(port, BOARD, CONF)
    a.run(loops=200)
    fed = len(port.feeds)
    bad = BrokenFlash(good.files)
    port.storage = bad
    a.box.storage = bad
    a.run(loops=500)
    assert fed >= 1 and len(port.feeds) == fed  # no feed after the flash broke
    assert a.errors >= 4 and any("loop error: OSError" in t for _, t in port.logs)


def test_a_step_that_fails_every_time_ends_the_loop_with_its_exception():
    port = ScriptedPort()
    a = _app.App(port, BOARD, CONF)
    a.run(loops=10)

    def broken_scan():
        raise RuntimeError("keypad driver bug")
    port.scan = broken_scan
    with pytest.raises(RuntimeError):
        a.run()
    assert a.errors == _app.MAX_FAILS


def test_the_boot_log_names_each_event_without_a_code():
    port = ScriptedPort()
    a = _app.App(port, BOARD, CONF)
    code = owner_code(a)
    for ch in "111111":
        port.press(ch)
    a.run(loops=300)
    texts = [t for _, t in port.logs]
    assert any(t.startswith("event 1 boot") for t in texts)
    assert any("wrong_code" in t for t in texts)
    assert not any(code in t or "111111" in t for t in texts)


class TamperPort(ScriptedPort):
    def __init__(self):
        ScriptedPort.__init__(self)
        self.tamper_at = []  # (from_ms, open)

    def tamper(self):
        state = False
        for t, v in self.tamper_at:
            if self.now >= t:
                state = v
        return state


def _events(a, kind):
    ob = a.box.outbox
    return [ob.get(i) for i in range(ob.pending()) if ob.get(i)[1] == kind]


def test_the_tamper_switch_opening_and_closing_are_events_once_each():
    from parcelbox import events
    port = TamperPort()
    a = _app.App(port, BOARD, CONF)
    t0 = port.now
    # a 30 ms bounce is no event; then open for good, later closed
    port.tamper_at = [(t0 + 200, True), (t0 + 230, False), (t0 + 500, True), (t0 + 2000, False)]
    a.run(loops=400)
    assert [e[4] for e in _events(a, events.TAMPER)] == [1, 0]
    assert any("tamper switch open" in t for _, t in port.logs)


def test_a_closed_tamper_switch_at_boot_is_not_an_event():
    from parcelbox import events
    port = TamperPort()
    a = _app.App(port, BOARD, CONF)
    a.run(loops=100)
    assert _events(a, events.TAMPER) == []


class SlowNet(Net):
    """A network whose next step blocks in C for `ms` (a DNS lookup, a TLS handshake
    step): the clock jumps and nothing else runs meanwhile."""

    def __init__(self, port, ms):
        self.port, self.ms, self.armed = port, ms, False

    def step(self, now):
        if self.armed:
            self.armed = False
            self.port.now += self.ms


class PulseArmsSlowNet(ScriptedPort):
    def solenoid(self, comp, on):
        if on and not self._level.get(comp):
            self.net.armed = True  # the lookup that happens to start during the pulse
        ScriptedPort.solenoid(self, comp, on)


def test_a_network_call_that_blocks_never_stretches_a_solenoid_pulse():
    port = PulseArmsSlowNet()
    port.net = SlowNet(port, 3000)
    a = _app.App(port, BOARD, CONF)
    for ch in owner_code(a):
        port.press(ch)
    a.run(loops=1000)
    ons = [(t, lv) for t, c, lv in port.levels if c == 1]
    assert [lv for _, lv in ons] == [False, True, False]
    assert ons[2][0] - ons[1][0] == a.box.cfg["pulse_ms"] <= a.box.cfg["max_on_ms"]


class DoorPort(ScriptedPort):
    """Door 1 open during [open_at, close_at)."""

    def __init__(self):
        ScriptedPort.__init__(self)
        self.open_at = self.close_at = None

    def door(self, comp):
        return self.open_at is not None and self.open_at <= self.now < (self.close_at or 1 << 60)


def test_a_settings_restart_waits_until_an_unlock_has_run_its_course():
    from parcelbox import events
    port = DoorPort()
    a = _app.App(port, BOARD, CONF)
    for ch in owner_code(a):
        port.press(ch)
    while not a.box.solenoid(1, port.now):
        a.run(loops=1)
    a.remote.restart_pending = True  # a settings command was applied meanwhile
    t_on = port.now
    # the door opens after the pulse, inside the open window, and closes again
    port.open_at = t_on + a.box.cfg["pulse_ms"] + 1000
    port.close_at = port.open_at + 2000
    a.run(loops=800)
    kinds = [e[1] for e in _events_all(a)]
    assert events.OPENED in kinds and events.CLOSED in kinds
    assert events.FORCED not in kinds and events.NOT_OPENED not in kinds
    assert any("restarting the core" in t for _, t in port.logs)  # once the box was idle
    assert not a.remote.restart_pending


def _events_all(a):
    ob = a.box.outbox
    return [ob.get(i) for i in range(ob.pending())]


class ClockNet(Net):
    def __init__(self, t):
        self.t = t

    def time(self):
        return self.t


def test_the_core_rebuilt_for_new_settings_keeps_the_trusted_clock():
    port = ScriptedPort()
    port.net = ClockNet(1795600000)
    a = _app.App(port, BOARD, CONF)
    a.run(loops=10)
    assert a.box.clock_trusted()
    old = a.box
    a.remote.restart_pending = True
    a.run(loops=10)
    assert a.box is not old and a.box.clock_trusted()
    assert abs(a.box.wall(port.now) - 1795600000) <= 1


class ScriptedLink:
    """A link whose last_error follows a script of (from_step, error, connects)."""
    script = [(0, None, 0), (5, "open: [Errno 111] refused", 0), (50, None, 1),
              (80, "closed by the broker", 1)]

    def __init__(self, *a):
        self.progress = 0
        self.last_error, self.connects, self.state = None, 0, "offline"

    def step(self, now):
        self.progress += 1
        for at, err, n in self.script:
            if self.progress >= at:
                self.last_error, self.connects = err, n

    def next_deadline(self, now):
        return None

    def waitable(self):
        return None


class UpNet(Net):
    def up(self):
        return True


def test_the_loop_logs_why_the_link_went_down_once_per_change():
    port = ScriptedPort()
    port.net = UpNet()
    _app.App(port, BOARD, CONF, make_link=ScriptedLink).run(loops=150)
    link_lines = [t for _, t in port.logs if t.startswith("link")]
    assert link_lines == ["link: open: [Errno 111] refused", "link: connected",
                          "link: closed by the broker"]


def test_a_failsafe_trip_is_logged_and_shown_as_an_error():
    port = ScriptedPort()
    trips = [0, 0, 1]
    port.failsafe_tripped = lambda: trips.pop(0) if trips else 0
    a = _app.App(port, BOARD, CONF)
    a.run(loops=5)
    assert any(level == _app.ERROR and "failsafe cut solenoids 0x1" in t for level, t in port.logs)
    assert a.box.faults == 1


def test_a_flash_error_recording_the_tamper_event_is_a_fault_not_a_failed_step():
    class FullFlash(MemStorage):
        def append(self, name, data):
            raise OSError(28, "ENOSPC")

    port = TamperPort()
    a = _app.App(port, BOARD, CONF)
    port.tamper_at = [(port.now + 50, True)]
    bad = FullFlash(port.storage.files)
    a.box.storage = bad
    a.box.outbox._st = bad
    a.run(loops=50)
    assert a.errors == 0 and a.box.faults >= 1
    assert any("tamper switch open" in t for _, t in port.logs)


def test_the_network_time_is_taken_again_every_six_hours_so_crystal_drift_is_corrected():
    port = ScriptedPort()
    port.net = ClockNet(1795600000)
    a = _app.App(port, BOARD, CONF)
    a.run(loops=10)
    assert abs(a.box.wall(port.now) - 1795600000) <= 1
    # 6 h later by the box's crystal, but the time server says 90 s more have passed
    port.now += 6 * 3600 * 1000 - 5000
    port.net.t = 1795600000 + 6 * 3600 + 90
    a.run(loops=5)
    assert abs(a.box.wall(port.now) - 1795600000 - 6 * 3600) <= 10   # not yet: before 6 h
    port.now += 10000
    a.run(loops=5)
    assert abs(a.box.wall(port.now) - port.net.t) <= 1


class LinkNet(FakeNet):
    """host_tools/virtual/fakenet.py's network for the App's own Link: up, no time, and every
    connection answered with a CONNACK."""

    def __init__(self, clock):
        FakeNet.__init__(self, recv_into=True)
        self.clock = clock

    def step(self, now):
        pass

    def time(self):
        return None

    def open(self, host, port, tls, ca):
        c = FakeNet.open(self, host, port, tls, ca)
        c.give(b"\x20\x02\x00\x00")
        return c


def test_the_port_is_handed_the_links_connection_to_wake_on_but_not_while_a_solenoid_is_on():
    port = ScriptedPort()
    port.net = LinkNet(port.ticks_ms)
    a = _app.App(port, BOARD, CONF, make_link=Link)
    for ch in owner_code(a):
        port.press(ch)
    a.run(loops=1000)
    c = port.net.conn
    assert a.link.state == "connected" and len(port.net.conns) == 1
    assert port.waits[0][2] is None                    # opened, not yet up
    ons = [(t, lv) for t, comp, lv in port.levels if comp == 1]
    t_on, t_off = ons[1][0], ons[2][0]
    assert ons[1][1] is True and ons[2][1] is False    # one pulse
    during = [w for w in port.waits if t_on <= w[0] < t_off]
    after = [w for w in port.waits if w[0] >= t_off]
    # the network waits for the pulse's end: its data must not wake the loop (a spin)
    assert during and all(conn is None for _, _, conn in during)
    assert after and all(conn is c for _, _, conn in after)
    assert max(ms for _, ms, _ in port.waits) <= _app.SCAN_MS
