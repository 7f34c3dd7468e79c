# The sim port (firmware/sim/pb_sim) and the simulator (host_tools/sim/simbox.py, simworld.py):
# the unmodified superloop on virtual hardware, under CPython and in the MicroPython VM,
# offline on a virtual clock and online against the private mosquitto over TLS.
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "host_tools" / "virtual", ROOT / "firmware" / "esp32"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from fakeboards import ESP32_4X3, S3_4X4, Wired  # noqa: E402
from host_tools.backend.sdk import Backend, Consumer, Ledger, mqtt_password  # noqa: E402
from host_tools.sim.simbox import SOFT_RESET, WDT_RESET, SimBox, provision  # noqa: E402
from host_tools.sim.world import Keypad, Solenoids  # noqa: E402

BOX = "box-1"
KEY = bytes(range(32))
OFFLINE = {"box_id": BOX, "box_key": KEY.hex(), "wifi": {"ssid": "home", "password": "x"},
           "broker": {"host": "127.0.0.1", "port": 1, "tls": False}, "mqtt_password": "pw"}
BOTH = [pytest.param(False, id="cpython"), pytest.param(True, id="vm", marks=pytest.mark.vm)]


# ---- the virtual hardware -------------------------------------------------------------

@pytest.mark.parametrize("board", [ESP32_4X3, S3_4X4], ids=lambda b: b["name"])
def test_the_host_keypad_reads_as_the_esp32_scan_reads_the_fake_circuit(board):
    # the same presses, bounce and ghosts: simworld's scan equals pb_esp32.hw's over the fakes
    from pb_esp32.hw import Hardware
    wired = Wired(board, bounce_ms=4)
    hw = Hardware(board)
    kp = board["keypad"]
    mine = Keypad(len(kp["rows"]), len(kp["cols"]), kp["layout"], bounce_ms=4)
    rnd = random.Random(5)
    frames = set()
    for _ in range(600):
        t = wired.world.now
        key = rnd.choice(kp["layout"])
        if key not in mine.held():
            wired.keys.press(key)
            mine.press(key, t)
        else:
            wired.keys.release(key)
            mine.release(key, t)
        for _ in range(rnd.randrange(1, 4)):
            assert mine.scan(wired.world.now) == hw.scan()
            frames.add(hw.scan())
            wired.world.advance(1)
    assert len(frames) > 40  # single keys, several keys, ghosts, bounce


def test_three_keys_at_a_rectangles_corners_show_a_ghost_at_the_fourth():
    k = Keypad(4, 3, "123456789*0#", bounce_ms=0)
    for key in "124":
        k.press(key, 0)
    assert k.scan(1) == 0b11011  # 1, 2, 4 and the ghost 5


def test_the_failsafe_cuts_a_solenoid_at_max_on_and_holds_it_off_until_released():
    s = Solenoids(2, max_on_ms=2000)
    s.drive(0b01, 100)
    s.drive(0b01, 1500)
    s.check(2600)
    p = s.pulses[0]
    assert (p.comp, p.start, p.end, p.cut, s.trips) == (1, 100, 2100, True, 1)
    s.drive(0b01, 2700)             # still asked on: stays off (latched)
    assert len(s.pulses) == 1 and not s.energised(1)
    s.drive(0, 2800)
    s.drive(0b10, 2900)
    s.drive(0, 3600)
    assert [(p.comp, p.ms, p.cut) for p in s.pulses] == [(1, 2000, True), (2, 700, False)]


# ---- offline, on the virtual clock (deterministic) ---------------------------------------

def _offline(tmp_path, vm=False, config=OFFLINE, **kw):
    flash = provision(tmp_path / "flash", ESP32_4X3, config)
    return SimBox(flash, vm=vm, clock="virtual", **kw)


def test_an_idle_loop_is_one_host_call_and_a_wrong_code_shows_red(tmp_path):
    with _offline(tmp_path) as box:
        box.run(3000)   # boots, tries the broker (refused), backs off
        calls, loops = dict(box.calls), box.loops
        box.run(1000)
        assert box.loops - loops >= 90
        assert sum(box.calls.values()) - sum(calls.values()) <= box.loops - loops + 4  # io + a retry
        box.type("111111")
        box.run(100)
        assert box.led == "red" and box.hz > 0
        assert [e[1] for e in box.events()] == ["boot", "wrong_code"]
        assert box.pulses == [] and box.boots == [(0, 1)]


def test_the_virtual_clock_makes_a_run_repeat_exactly(tmp_path):
    def story(d):
        with _offline(d) as box:
            box.run(500)
            box.type("2580#")
            box.set_door(1, True)
            box.run(3000)
            return box.lines, box.feedback, box.loops
    assert story(tmp_path / "a") == story(tmp_path / "b")


@pytest.mark.parametrize("vm", [False, pytest.param(True, marks=pytest.mark.vm)], ids=["cpython", "vm"])
def test_a_bad_configuration_blinks_its_number_in_red(tmp_path, vm):
    bad = dict(OFFLINE, box_key="00")
    with _offline(tmp_path, config=bad, vm=vm) as box:
        box.run(5000)
        reds = [t for t, led, hz in box.feedback if led == "red"]
        assert len(reds) >= 3 and reds[1] - reds[0] == 500   # 3 blinks, 200 on, 300 off
        assert any("config: box_key" in ln for ln in box.lines)
        assert box.running and not any("boot box" in ln for ln in box.lines)


def test_settings_the_board_cannot_run_blink_as_a_bad_configuration(tmp_path):
    flash = provision(tmp_path / "flash", dict(ESP32_4X3, max_on_ms=500), OFFLINE)
    with SimBox(flash, vm=False, clock="virtual") as box:
        box.run(3000)
        assert any("config: settings:" in ln for ln in box.lines)
        assert [led for _, led, _ in box.feedback].count("red") >= 3


def test_a_start_that_fails_is_a_crash_and_a_reset_after_a_pause(tmp_path, monkeypatch):
    from parcelbox.app import App
    init = App.__init__

    def broken(self, *a, **kw):
        raise MemoryError()
    monkeypatch.setattr(App, "__init__", broken)
    with _offline(tmp_path) as box:
        box.run(9000)
        assert [c for _, c in box.boots] == [1]
        assert any("boot failed: MemoryError; restarting in 10 s" in ln for ln in box.lines)
        monkeypatch.setattr(App, "__init__", init)
        box.run(1500)
        assert [c for _, c in box.boots] == [1, SOFT_RESET]
        assert [e[1] for e in box.events()] == ["boot", "crash"]


def test_a_loop_that_stops_feeding_the_watchdog_is_reset(tmp_path, monkeypatch):
    with _offline(tmp_path) as box:
        box.run(500)
        from pb_sim.port import Port
        monkeypatch.setattr(Port, "feed", lambda self: None)
        box.run(9000)
        assert [c for _, c in box.boots] == [1, WDT_RESET]
        assert [e[1] for e in box.events()].count("boot") == 2


def test_a_crash_resets_the_box_and_is_reported_at_the_next_boot(tmp_path, monkeypatch):
    with _offline(tmp_path) as box:
        box.run(500)
        from parcelbox.app import App
        step = App.step
        monkeypatch.setattr(App, "step", lambda self: 1 / 0)
        box.run(300)
        monkeypatch.setattr(App, "step", step)
        box.run(500)
        assert [c for _, c in box.boots] == [1, SOFT_RESET]
        assert any("crash: ZeroDivisionError" in ln for ln in box.lines)
        assert "crash" in [e[1] for e in box.events()]


def test_a_power_cut_stops_the_firmware_at_a_host_call_and_it_boots_again(tmp_path):
    with _offline(tmp_path) as box:
        box.run(500)
        box.press("1")
        box.cut_power()
        assert not box.running and box.led == "off"
        box.run(1000)
        box.release("1")
        box.boot()
        box.run(500)
        assert [t for t, _ in box.boots] == [0, 1500]
        assert [e[1] for e in box.events()] == ["boot", "boot"]


def test_the_tamper_switch_opening_is_an_event(tmp_path):
    with _offline(tmp_path) as box:
        box.run(500)
        box.set_tamper(True)
        box.run(300)
        assert [e[1] for e in box.events()] == ["boot", "tamper"]


@pytest.mark.vm
def test_a_host_call_fits_a_small_heap_and_output_can_go_to_files(tmp_path):
    from host_tools.vm.runner import VM
    code = "import host\nprint(host.call('echo', '{\"args\": [1, \"a\"]}'))\n"
    files = (tmp_path / "out", tmp_path / "err")
    res = VM(heap="96K", host_functions={"echo": lambda *a: list(a)}, output_files=files).run_code(code)
    assert res.ok and res.stdout == '{"ok":true,"value":[1,"a"]}\n'
    assert files[0].read_text() == res.stdout


@pytest.mark.vm
def test_the_vm_runs_the_offline_box_on_the_virtual_clock_like_cpython(tmp_path):
    def story(d, vm):
        with _offline(d, vm=vm) as box:
            box.run(500)
            box.type("2580#")
            box.run(1500)
            return box.lines, box.feedback, box.halted
    vm, cp = story(tmp_path / "vm", True), story(tmp_path / "cp", False)
    heap = [ln for ln in vm[0] if " heap used " in ln]   # the VM's own report, at boot
    assert len(heap) == 1 and int(heap[0].split()[-1]) > 40000
    assert ([ln for ln in vm[0] if ln not in heap], *vm[1:]) == cp


# ---- online: the private mosquitto over TLS ------------------------------------------

class Online:
    """A box provisioned for `broker` (as tests/broker/test_esp32_broker.py provisions one), and
    the backend's ledger."""

    def __init__(self, broker, tmp_path, vm):
        self.ledger = Ledger(tmp_path / "ledger.db")
        self.rec = Backend(self.ledger).register(BOX)
        broker.add_user(BOX, mqtt_password(bytes.fromhex(self.rec["box_key"])))
        broker.add_user("consumer", backend=True)
        broker.add_user("issuer", backend=True)
        self.broker = broker
        flash = provision(tmp_path / "flash", ESP32_4X3, {
            "box_id": BOX, "box_key": self.rec["box_key"], "wifi": {"ssid": "home", "password": "x"},
            "broker": {"host": broker.host, "port": broker.port, "tls": True, "ca": "ca.pem"},
            "mqtt_password": self.rec["mqtt_password"]}, {"ca.pem": broker.ca_path})
        self.box = SimBox(flash, vm=vm, bounce_ms=3, power=False)

    def events(self, kind=None):
        return [e for e in self.ledger.events(BOX) if kind is None or e.type == kind]


@pytest.fixture(params=BOTH)
def online(request, mosquitto, tmp_path):
    o = Online(mosquitto, tmp_path, request.param)
    with o.box, Consumer(tmp_path / "ledger.db", mosquitto.sdk_config("consumer")) as consumer:
        consumer.subscribed.wait(10)
        o.box.boot()   # once the backend listens: nothing published before goes astray
        yield o


def test_the_box_opens_for_a_backend_code_and_its_events_reach_the_ledger_once(online):
    box, ledger = online.box, online.ledger
    box.until(lambda: box.online, "connected", ms=60000)
    with Backend(ledger, online.broker.sdk_config("issuer")) as be:
        issued = be.issue(BOX, "owner", uses=1)
        box.until(lambda: ledger.command_outcome(BOX, issued.cmd_seq)[0] == 0, "code applied")
    box.type(issued.code)
    box.until(lambda: box.pulses, "the lock opens")
    box.set_door(1, True)
    box.until(lambda: online.events("opened"), "opened in the ledger")
    box.set_door(1, False)
    box.until(lambda: online.events("closed"), "closed in the ledger")
    box.until(lambda: ledger.box(BOX).online, "online in the ledger")
    seqs = [e.seq for e in online.events()]
    assert sorted(seqs) == list(range(1, max(seqs) + 1))   # every event once, none missing
    assert [p.comp for p in box.pulses] == [1] and not box.pulses[0].cut
    assert box.failsafe_trips == 0 and [c for _, c in box.boots] == [1]
    for secret in (issued.code, online.rec["box_key"], online.rec["mqtt_password"]):
        assert not any(secret in ln for ln in box.lines)
    print("%d passes, host calls %s" % (box.loops, dict(box.calls)))  # docs/sim.md section 5


def test_a_power_cut_in_the_middle_loses_nothing(online):
    box, ledger = online.box, online.ledger
    box.until(lambda: box.online, "connected", ms=60000)
    with Backend(ledger, online.broker.sdk_config("issuer")) as be:
        issued = be.issue(BOX, "owner", uses=1)
        box.until(lambda: ledger.command_outcome(BOX, issued.cmd_seq)[0] == 0, "code applied")
    box.cut_power()          # the code is on flash: it must survive
    box.boot()
    box.until(lambda: box.online, "connected again", ms=60000)
    box.type(issued.code)
    box.until(lambda: box.pulses, "the lock opens")
    # the door opens and the power goes at the host call that logs the event: on flash,
    # not sent yet
    box.cut_at(lambda name, args: name == "log" and " opened " in args[1])
    box.set_door(1, True)
    box.until(lambda: not box.running, "the cut")
    cut_seq = int(box.cut_call[1][1].split()[1])
    assert not online.events("opened")
    n = len(box.lines)
    box.boot()               # the door still open: the opening goes on (docs/box.md 4)
    box.until(lambda: any(" opened " in ln for ln in box.lines[n:]), "the open door seen")
    box.set_door(1, False)
    box.until(lambda: online.events("closed"), "closed in the ledger")
    made = {e[0] for e in box.events()} | {cut_seq}  # the cut came before its log line
    box.until(lambda: {e.seq for e in online.events()} >= made, "every event in the ledger")
    seqs = sorted(e.seq for e in online.events())
    assert seqs == sorted(made)  # each once, none lost (gaps: each boot goes on from the floor)
    assert cut_seq in [e.seq for e in online.events("opened")]
    assert [e.type for e in online.events()].count("closed") == 1
    assert [c for _, c in box.boots] == [1, 1, 1]
    assert [p.comp for p in box.pulses] == [1] and box.failsafe_trips == 0


@pytest.fixture
def cert_broker(mosquitto, tmp_path):
    from host_tools.testing import broker as brokerlib
    with brokerlib.Broker("mosquitto", workdir=tmp_path / "cert-broker", require_client_cert=True) as b:
        yield b


def test_the_host_presents_the_box_certificate_from_its_flash(cert_broker, tmp_path):
    rec = Backend(Ledger(tmp_path / "ledger.db")).register(BOX)
    cert_broker.add_user(BOX, mqtt_password(bytes.fromhex(rec["box_key"])))
    c, k = cert_broker.client_cert_files(BOX)
    flash = provision(tmp_path / "flash", ESP32_4X3, {
        "box_id": BOX, "box_key": rec["box_key"], "wifi": {"ssid": "home", "password": "x"},
        "broker": {"host": cert_broker.host, "port": cert_broker.port, "tls": True, "ca": "ca.pem",
                   "cert": "box.crt", "key": "box.key"},
        "mqtt_password": rec["mqtt_password"]},
        {"ca.pem": cert_broker.ca_path, "box.crt": c, "box.key": k})
    with SimBox(flash, vm=False) as box:
        box.until(lambda: box.online, "connected with the client certificate")


def test_a_firmware_that_crashes_at_every_start_backs_off_instead_of_resetting_at_once(
        tmp_path, monkeypatch):
    from parcelbox.app import App
    monkeypatch.setattr(App, "step", lambda self: 1 / 0)
    with _offline(tmp_path) as box:
        box.run(60000)
        waits = [ln for ln in box.lines if "crash loop: starting in" in ln]
        assert waits and "starting in 10 s" in waits[0]
        # without the back-off it would have reset at every pass: here a handful in a minute
        assert 4 <= len(box.boots) <= 8
        assert not box.running or box.led in ("red", "off")
