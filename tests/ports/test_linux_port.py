# The linux port (firmware/linux/pb_linux): its hardware layer over digitalio and
# Matrix_Keypad on the virtual circuit, systemd's watchdog over a real socket, the state
# directory, the unit file, the Raspberry Pi board, and every flow scenario against the
# private mosquitto through the same runner as the sim port (host_tools/sim/linuxbox.py).
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINUX = ROOT / "firmware" / "linux"
for p in (LINUX, ROOT / "firmware", ROOT / "firmware" / "esp32"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from host_tools import boards  # noqa: E402

from host_tools.virtual import keycircuit

from host_tools.sim import scenario as sc
from host_tools.sim.linuxbox import LinuxBox, _use_circuit_digitalio, unit_watchdog_ms  # noqa: E402
from host_tools.sim.simbox import provision  # noqa: E402

_use_circuit_digitalio()
from adafruit_matrixkeypad import Matrix_Keypad  # noqa: E402
from parcelbox.keypad import NONE, Keypad  # noqa: E402
from pb_linux import main as lmain  # noqa: E402
from pb_linux.hw import Hardware, thread_timer  # noqa: E402
from pb_linux.port import DurableStorage, LinuxNet, ticks_ms  # noqa: E402
from pb_linux.watchdog import Notifier  # noqa: E402

BOARD_FILE = ROOT / "boards" / "rpi4-4x4.json"
BOARD = boards.device_board(BOARD_FILE)
SHIPPED = sorted((ROOT / "scenarios").glob("*.txt"))


class VTimers:
    # failsafe timers on a keycircuit.Clock: fire() runs the due ones
    def __init__(self, clock):
        self.clock, self.items = clock, []

    def __call__(self, ms, fn):
        t = [self.clock() + ms, fn, True]
        self.items.append(t)

        class H:
            def cancel(self_inner):
                t[2] = False
        return H()

    def fire(self):
        for t in self.items:
            if t[2] and t[0] <= self.clock():
                t[2] = False
                t[1]()


def rig(board=BOARD, bounce_ms=5, seed=1):
    clock = keycircuit.Clock()
    kp = board["keypad"]
    c = keycircuit.Circuit(kp["rows"], kp["cols"], kp["layout"], clock, bounce_ms, seed, float_level=0)
    for comp in board["compartments"]:
        c.add_switch(comp["door"], closed=True)
    if board["tamper"] is not None:
        c.add_switch(board["tamper"], closed=True)
    names = list(c.ids) + [x["solenoid"] for x in board["compartments"]] + board["led"] + [board["buzzer"]]
    timers = VTimers(clock)
    hw = Hardware(board, keycircuit, keycircuit.board_module(c, names), Matrix_Keypad, timer=timers)
    return clock, c, hw, timers


# ---- the hardware layer on the virtual circuit -------------------------------------

def test_every_key_of_the_pi_board_reaches_the_core_through_matrix_keypad_with_bounce():
    clock, c, hw, _ = rig(bounce_ms=8, seed=4)
    layout = BOARD["keypad"]["layout"]
    kp = Keypad(4, 4, layout.encode())
    got = bytearray()
    for ch in layout:
        for action in (c.press, c.release):
            action(ch)
            for _ in range(12):
                k = kp.update(hw.scan(), clock())
                if k != NONE:
                    got.append(k)
                clock.advance(5)
    assert got.decode() == layout
    assert c.shorts == 0


def test_two_keys_and_a_ghost_are_rejected_by_the_core_not_guessed():
    clock, c, hw, _ = rig()
    kp = Keypad(4, 4, BOARD["keypad"]["layout"].encode())

    def run(ms):
        out = bytearray()
        for _ in range(ms // 5):
            k = kp.update(hw.scan(), clock())
            if k != NONE:
                out.append(k)
            clock.advance(5)
        return bytes(out)

    c.press("1")
    c.press("5")
    assert run(60) == b""
    c.release_all()
    run(60)
    for key in ("1", "3", "9"):        # rows 0, 2 and columns 0, 2: "7"... no, 1 3 9 ghost 7
        c.press(key)
    assert run(60) == b""
    assert bin(hw.scan()).count("1") == 4
    c.release_all()
    run(60)
    c.press("7")
    assert run(60) == b"7"
    assert kp.rejected == 2


def test_doors_and_tamper_read_through_digitalio_pull_ups():
    clock, c, hw, _ = rig()
    assert [hw.door(i) for i in (1, 2, 3, 4)] == [False] * 4 and hw.tamper() is False
    c.set_switch(BOARD["compartments"][2]["door"], False)
    c.set_switch(BOARD["tamper"], False)
    clock.advance(10)
    assert [hw.door(i) for i in (1, 2, 3, 4)] == [False, False, True, False] and hw.tamper() is True
    with pytest.raises(IndexError):
        hw.door(0)


def test_the_failsafe_cuts_a_solenoid_at_max_on_ms_and_keeps_it_off_until_told():
    clock, c, hw, timers = rig()
    pin = BOARD["compartments"][1]["solenoid"]
    hw.solenoid(2, True)
    assert c.driven(pin) == 1
    clock.advance(1999)
    timers.fire()
    assert c.driven(pin) == 1
    clock.advance(1)
    timers.fire()
    assert c.driven(pin) == 0 and hw.failsafe_tripped() == 0b10 and hw.failsafe_tripped() == 0
    hw.solenoid(2, True)            # the stuck loop asks again: latched off
    assert c.driven(pin) == 0
    hw.solenoid(2, False)
    hw.solenoid(2, True)
    assert c.driven(pin) == 1


def test_a_failsafe_timer_that_cannot_start_leaves_the_coil_off():
    clock, c, hw, timers = rig()
    pin = BOARD["compartments"][0]["solenoid"]

    def no_thread(ms, fn):
        raise RuntimeError("can't start new thread")
    hw._timer = no_thread
    with pytest.raises(RuntimeError):
        hw.solenoid(1, True)
    assert c.driven(pin) == 0
    hw._timer = timers
    hw.solenoid(1, True)            # the next request works as before
    assert c.driven(pin) == 1


def test_a_real_thread_timer_cuts_the_solenoid_while_the_loop_is_stuck():
    clock, c, _, _ = rig()
    board = dict(BOARD, max_on_ms=60)
    names = list(c.ids) + [x["solenoid"] for x in board["compartments"]] + board["led"] + [board["buzzer"]]
    hw = Hardware(board, keycircuit, keycircuit.board_module(c, names), Matrix_Keypad, timer=thread_timer)
    hw.solenoid(1, True)
    t0 = time.monotonic()
    while c.driven(board["compartments"][0]["solenoid"]) != 0 and time.monotonic() - t0 < 2:
        time.sleep(0.005)           # the "loop" is stuck here; only the timer thread runs
    took = time.monotonic() - t0
    assert c.driven(board["compartments"][0]["solenoid"]) == 0
    assert 0.05 <= took < 1.0 and hw.failsafe_tripped() == 1


def test_led_colours_and_the_active_buzzer():
    clock, c, hw, _ = rig()
    r, g, b = BOARD["led"]
    hw.indicate(1, 0)                       # green
    assert (c.driven(r), c.driven(g), c.driven(b)) == (0, 1, 0)
    hw.indicate(3, 2400)                    # amber, a tone
    assert (c.driven(r), c.driven(g), c.driven(b), c.driven(BOARD["buzzer"])) == (1, 1, 0, 1)
    hw.all_off()
    assert (c.driven(r), c.driven(g), c.driven(b), c.driven(BOARD["buzzer"])) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="no such LED colour"):
        hw.indicate(9, 0)


def test_a_board_pin_the_board_module_lacks_is_a_clear_error():
    clock, c, _, _ = rig()
    with pytest.raises(ValueError, match="names pin D17, which this board's `board` module lacks"):
        Hardware(BOARD, keycircuit, keycircuit.board_module(c, ["D5"]), Matrix_Keypad)


# ---- systemd: the watchdog and readiness over a real datagram socket ------------------

def _listen(tmp_path):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s, path


def test_sd_notify_sends_datagrams_to_the_notify_socket(tmp_path):
    s, path = _listen(tmp_path)
    n = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000",
                          "WATCHDOG_PID": str(os.getpid())})
    try:
        assert n("READY=1") and n("WATCHDOG=1")
        assert [s.recv(100), s.recv(100)] == [b"READY=1", b"WATCHDOG=1"]
        assert n.watchdog_ms == 20000 and n.sent == 2
    finally:
        n.close()
        s.close()


def test_sd_notify_reaches_an_abstract_socket_and_is_silent_without_systemd():
    name = "pb-test-%d" % os.getpid()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        assert n("WATCHDOG=1") and s.recv(100) == b"WATCHDOG=1"
    finally:
        s.close()
    quiet = Notifier(environ={"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"})
    assert quiet("WATCHDOG=1") is False and quiet.watchdog_ms == 0   # another process's watchdog


def test_the_unit_file_runs_the_port_as_a_service_with_the_watchdog(tmp_path):
    unit = (LINUX / "parcelbox.service").read_text()
    keys = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    assert keys["Type"] == ["notify"] and keys["Restart"] == ["always"]
    assert keys["User"] == ["parcelbox"] and "gpio" in keys["SupplementaryGroups"][0].split()
    assert keys["StateDirectory"] == ["parcelbox"]
    assert "--state /var/lib/parcelbox" in keys["ExecStart"][0] and "-m pb_linux" in keys["ExecStart"][0]
    assert keys["ExecStopPost"][0].endswith("--all-off")
    assert unit_watchdog_ms() == 20000 == lmain_wdt_ms()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze to verify the unit")
    copy = tmp_path / "parcelbox.service"
    copy.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines()
                if ln.strip() and "is not executable" not in ln]   # /opt/parcelbox is not installed here
    assert problems == []


def lmain_wdt_ms():
    # the ESP32's watchdog time, so both ports reset a hung box alike
    from pb_esp32 import main as emain
    return emain.WDT_MS


# ---- the state directory and the network ---------------------------------------------

def test_durable_storage_syncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode), real(fd)))
    st = DurableStorage(str(tmp_path))
    st.replace("state.0", [b"ab", b"cd"])
    st.append("events", b"xyz")
    assert st.read("state.0") == b"abcd" and st.read("events") == b"xyz"
    assert not (tmp_path / "state.0.tmp").exists() and st.bytes_written == 7
    import stat
    kinds = ["dir" if stat.S_ISDIR(m) else "file" for m in synced]
    assert kinds == ["file", "dir", "file", "dir"]    # "events" was new: its name synced too


def test_an_append_that_creates_its_file_syncs_the_folder_so_the_file_survives_a_power_cut(
        tmp_path, monkeypatch):
    # codes.log is removed at each snapshot and created again by the next append (a code
    # consumed): fsync of the file alone does not make its directory entry durable
    import stat
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd)))
    st = DurableStorage(str(tmp_path))
    st.append("codes.log", b"new")
    assert synced == [False, True]
    del synced[:]
    st.append("codes.log", b"more")                   # the name exists: the file's data only
    assert synced == [False]


def test_the_network_time_is_trusted_only_once_the_clock_is_synchronised(tmp_path):
    flag = tmp_path / "synchronized"
    net = LinuxNet(str(tmp_path), synced=str(flag))
    assert net.time() is None
    flag.write_text("")
    assert abs(net.time() - time.time()) < 5
    assert LinuxNet(str(tmp_path), synced=True).time() is not None


def test_the_network_opens_tls_with_the_ca_file_of_the_state_directory(mosquitto, tmp_path):
    shutil.copy(mosquitto.ca_path, tmp_path / "ca.pem")
    conn = LinuxNet(str(tmp_path)).open(mosquitto.host, mosquitto.port, True, "ca.pem")
    try:
        t0 = time.monotonic()
        while not conn.ready():
            assert time.monotonic() - t0 < 5
            time.sleep(0.01)
    finally:
        conn.close()


class _Hw:
    def __getattr__(self, name):   # scan, door, solenoid...: not used by idle
        return lambda *a: None


def test_the_port_waits_on_the_links_socket_on_the_real_clock_and_sleeps_on_a_lent_one():
    from pb_linux.port import Port
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    conn = LinuxNet("/", synced=True).open("127.0.0.1", srv.getsockname()[1], False, None)
    peer, _ = srv.accept()
    assert conn.ready()
    port = Port(_Hw(), None, None, lambda l, t: None, lambda s: None)
    t0 = time.monotonic()
    port.idle(30, conn)                       # nothing to read: the whole 30 ms, in poll()
    assert time.monotonic() - t0 >= 0.025
    assert port._fd == conn.pollable().fileno()
    peer.sendall(b"\x20")
    t0 = time.monotonic()
    port.idle(5000, conn)                     # the byte is there: back at once
    assert time.monotonic() - t0 < 1
    slept = []
    lent = Port(_Hw(), None, None, lambda l, t: None, lambda s: None, sleep=slept.append)
    lent.idle(10, conn)                       # a virtual clock cannot wait on a socket
    assert slept == [10]
    for s in (conn, peer, srv):
        s.close()


# ---- boot, crash, stop, all-off -----------------------------------------------------

def _flash(tmp_path, board=BOARD):
    return provision(tmp_path / "state", board, {
        "box_id": "box-9", "box_key": "11" * 32, "wifi": {"ssid": "os"},
        "broker": {"host": "127.0.0.1", "port": 9, "tls": False}, "mqtt_password": "pw"})


class Stop(BaseException):
    pass


def _boot(tmp_path, clock, c, timers, **kw):
    names = list(c.ids) + [x["solenoid"] for x in BOARD["compartments"]] + BOARD["led"] + [BOARD["buzzer"]]
    pins = keycircuit.board_module(c, names)
    lines, notes = [], []

    def sleep(ms):
        clock.advance(ms)
        timers.fire()

    def hwf(board):
        return Hardware(board, keycircuit, pins, Matrix_Keypad, timer=timers)

    args = dict(hw_factory=hwf, clock=clock, sleep=sleep, out=lines.append, notify=notes.append,
                rand=lambda n: bytes(n), net=LinuxNet(str(tmp_path / "state"), synced=True))
    args.update(kw)
    return args, lines, notes


def test_a_crash_in_the_loop_is_saved_the_service_restarts_and_reports_it(tmp_path):
    flash = _flash(tmp_path)
    clock, c, _, timers = rig()

    def reset():
        raise Stop()

    args, lines, notes = _boot(tmp_path, clock, c, timers, reset=reset, reset_cause=lambda: 1)
    app, hw = lmain.boot(str(flash), **args)
    assert "READY=1" in notes and any("boot box box-9" in ln for ln in lines)

    def broken():
        raise RuntimeError("the keypad driver died")
    app.port.scan = broken
    with pytest.raises(Stop):
        lmain.run(app, hw, reset=reset)
    assert (flash / "crash.txt").exists() and any("crash: RuntimeError" in ln for ln in lines)
    args, lines, notes = _boot(tmp_path, clock, c, timers, reset=reset, reset_cause=lambda: 5)
    app, hw = lmain.boot(str(flash), **args)
    assert any(" crash comp 0 id 5 " in ln for ln in lines)       # reported, with the cause
    assert not (flash / "crash.txt").exists() and (flash / "crash.last").exists()


def test_a_bad_config_blinks_its_number_and_keeps_systemd_fed(tmp_path):
    flash = _flash(tmp_path)
    (flash / "config.json").write_text(json.dumps({"box_id": "box-9", "box_key": "zz"}))
    clock, c, _, timers = rig()
    args, lines, notes = _boot(tmp_path, clock, c, timers, blink_rounds=1)
    reds = []
    real = args["hw_factory"]

    def hwf(b):
        hw = real(b)
        ind = hw.indicate
        hw.indicate = lambda led, hz: (reds.append(led) if led else None, ind(led, hz))
        return hw
    args["hw_factory"] = hwf
    app, why = lmain.boot(str(flash), **args)
    assert app is None and why == 3 and reds == [2, 2, 2]          # three red blinks: a bad field
    assert notes[0] == "READY=1" and notes.count("WATCHDOG=1") >= 6
    assert any("config: box_key must be 64 hex digits" in ln for ln in lines)
    assert "zz" not in "".join(lines)


def test_the_loop_feeds_systemd_only_while_every_part_progresses(tmp_path):
    flash = _flash(tmp_path)
    clock, c, _, timers = rig()
    args, lines, notes = _boot(tmp_path, clock, c, timers)
    app, hw = lmain.boot(str(flash), **args)
    app.run(500)                                   # 5 s of 10 ms passes
    fed = notes.count("WATCHDOG=1")
    assert 4 <= fed <= 6                           # about once a second
    for f in ("state.0", "state.1"):   # the state files are gone: the flash check fails
        (flash / f).unlink(missing_ok=True)
    app.run(500)
    assert notes.count("WATCHDOG=1") == fed         # no progress, no feed


def test_sigterm_stops_the_service_with_every_output_off(tmp_path):
    flash = _flash(tmp_path)
    clock, c, _, timers = rig()
    state = {"n": 0}

    def sleep(ms):
        state["n"] += 1
        clock.advance(ms)
        if state["n"] == 50:
            hw_ref[0].solenoid(1, True)           # a pulse under way when the stop comes
        if state["n"] == 51:
            raise SystemExit(0)                   # what the SIGTERM handler raises
    hw_ref = []
    args, lines, notes = _boot(tmp_path, clock, c, timers, sleep=sleep)
    real = args["hw_factory"]
    args["hw_factory"] = lambda b: hw_ref.append(real(b)) or hw_ref[0]
    with pytest.raises(SystemExit):
        lmain.main(str(flash), **args)
    assert c.driven(BOARD["compartments"][0]["solenoid"]) == 0 and notes[-1] == "STOPPING=1"


def test_all_off_drives_every_output_off_and_notes_how_the_run_ended(tmp_path):
    flash = _flash(tmp_path)
    clock, c, hw, timers = rig()
    hw.solenoid(1, True)
    hw.indicate(2, 300)
    names = list(c.ids) + [x["solenoid"] for x in BOARD["compartments"]] + BOARD["led"] + [BOARD["buzzer"]]
    pins = keycircuit.board_module(c, names)
    rc = lmain.all_off(str(flash), lambda b: Hardware(b, keycircuit, pins, Matrix_Keypad, timer=timers),
                       result="watchdog")
    assert rc == 0
    outs = [x["solenoid"] for x in BOARD["compartments"]] + BOARD["led"] + [BOARD["buzzer"]]
    assert [c.driven(p) for p in outs] == [0] * len(outs)
    st = DurableStorage(str(flash))
    assert lmain.last_cause(st) == lmain.WDT_RESET and st.read(lmain.LAST_EXIT) is None
    assert lmain.last_cause(st) == lmain.PWRON_RESET     # no stop recorded: a power-up


def _pb_linux(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, (ROOT / "firmware", LINUX, ROOT))))
    return subprocess.run([sys.executable, "-m", "pb_linux", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def test_the_service_command_line(tmp_path):
    r = _pb_linux("--bogus")
    assert r.returncode == 2 and "usage: python -m pb_linux" in r.stderr
    r = _pb_linux("--state", str(tmp_path), "--all-off")
    assert r.returncode == 1 and "board.json is missing" in r.stdout
    r = _pb_linux("--state", str(tmp_path))
    assert r.returncode == 10 + 4 and "PB E" in r.stdout and "board: board.json is missing" in r.stdout
    # on this host Blinka finds no Raspberry Pi: the board's pins are missing, said plainly
    flash = _flash(tmp_path)
    r = _pb_linux("--state", str(flash), "--all-off")
    assert r.returncode != 0 and "module lacks" in r.stdout and "Traceback" not in r.stderr
    assert "11" * 32 not in r.stdout + r.stderr and "pw" not in r.stdout.split()


# ---- the Raspberry Pi board file ------------------------------------------------------

def test_the_pi_board_checks_clean_and_names_pins_as_blinka_does():
    r = boards.check_file(BOARD_FILE)
    assert r.ok and r.warnings == []
    # Blinka's own pin names for the Pi 4, read from its board module's source (importing it
    # needs libgpiod and a Pi)
    import ast
    import importlib.util
    src = Path(importlib.util.find_spec("adafruit_blinka").origin).parent / "board/raspberrypi/raspi_4b.py"
    names = {t.id for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.Assign)
             for t in n.targets if isinstance(t, ast.Name)}
    used = BOARD["keypad"]["rows"] + BOARD["keypad"]["cols"] + BOARD["led"] + [BOARD["buzzer"], BOARD["tamper"]]
    used += [p for comp in BOARD["compartments"] for p in comp.values()]
    assert set(used) <= names and len(set(used)) == len(used) == 21
    assert set(boards.CHIPS["rpi"].pins) == {n for n in names if n[0] == "D" and n[1:].isdigit()}
    assert {a for a in boards.CHIPS["rpi"].aliases} <= names


@pytest.mark.parametrize("change, message", [
    ({"buzzer": 18}, 'buzzer must be a pin name as Blinka\'s board module names it, such as "D17", '
                     'not the number 18 (GPIO18 is "D18")'),
    ({"buzzer": "SDA"}, 'buzzer (SDA): name pins by their Blinka D names'),
    ({"buzzer": "GPIO4"}, 'write "D4" for it'),
    ({"buzzer": "D2"}, "buzzer (D2): D2 is I2C1 SDA with a 1.8 kOhm pull-up"),
    ({"buzzer": "D14"}, "serial console"),
    ({"compartments": [{"solenoid": "D4", "door": "D24"}]},
     "compartment 1 solenoid (D4): the rpi pulls D4 high inside the chip while it resets"),
    ({"battery": {"pin": "D4", "r_top_kohm": 100, "r_bottom_kohm": 18, "max_mv": 14400}},
     "the rpi has no ADC"),
])
def test_a_bad_pi_board_is_explained(change, message):
    doc = json.loads(BOARD_FILE.read_text())
    doc.update(change)
    r = boards.check_text(json.dumps(doc), "rpi4-4x4.json")
    assert not r.ok and any(message in e for e in r.errors), r.errors


def test_an_active_low_solenoid_cannot_sit_on_a_pin_pulled_down_at_power_up():
    doc = json.loads(BOARD_FILE.read_text())
    doc["solenoid_active"] = 0
    r = boards.check_text(json.dumps(doc), "rpi4-4x4.json")
    assert any("pulls D17 low" in e for e in r.errors)


# ---- the flow scenarios, against the private mosquitto --------------------------------

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_shipped_scenario_runs_on_the_linux_port(path, mosquitto, tmp_path):
    out = io.StringIO()
    steps = sc.load(path)
    r = sc.Runner(mosquitto, tmp_path / "work", trace=out, port="linux")
    try:
        assert isinstance(r.box, LinuxBox)
        r.run(steps)
        codes = [i.code for i in r.codes.values()]
        assert r.box.ready >= 1 and r.box.feeds >= 1         # READY=1, then WATCHDOG=1
    finally:
        r.close()
    recs = [json.loads(ln) for ln in out.getvalue().splitlines()]
    expects = [x for x in recs if x["kind"] == "expect"]
    assert expects and all(x["ok"] for x in expects)
    assert len(expects) == sum(s.verb == "expect" for s in steps)
    assert recs[-1]["kind"] == "end" and recs[-1]["ok"] is True
    for code in codes:
        assert code not in out.getvalue()
    made = [x["seq"] for x in recs if x["kind"] == "event"]
    assert made == sorted(set(made))


def test_the_runner_refuses_an_unknown_port(tmp_path):
    with pytest.raises(sc.ScenarioError, match="port must be"):
        sc.Runner(object(), tmp_path, port="zephyr")


def test_a_hung_linux_box_is_restarted_by_the_unit_watchdog(mosquitto, tmp_path):
    r = sc.Runner(mosquitto, tmp_path / "work", port="linux")
    try:
        box = r.box
        assert r.wait_online()
        flash = box.flash
        for f in ("state.0", "state.1"):            # the SD card lost the state files:
            (flash / f).unlink(missing_ok=True)     # the flash check fails, feeds stop
        box.run(unit_watchdog_ms() + 3000)
        assert "watchdog" in box.exits
        assert [cause for _, cause in box.boots][:2] == [1, 3]    # power-up, then the watchdog
        assert not any(p.end is None and p.start < box.now - 2000 for p in box.pulses)
    finally:
        r.close()


def test_linux_box_and_a_real_time_service_reach_the_ledger(mosquitto, tmp_path):
    # the production path: real clock, LinuxNet's sockets, sd_notify over a real socket,
    # the circuit driven in real time, stopped as SIGTERM stops it
    from host_tools.backend.sdk import Backend, Consumer, Ledger, mqtt_password
    ledger = Ledger(tmp_path / "ledger.db")
    rec = Backend(ledger).register("box-rt", compartments=4)
    mosquitto.add_user("box-rt", mqtt_password(bytes.fromhex(rec["box_key"])))
    mosquitto.add_user("rt-backend", backend=True)
    mosquitto.add_user("rt-consumer", backend=True)
    consumer = Consumer(str(tmp_path / "ledger.db"), mosquitto.sdk_config("rt-consumer"))
    consumer.start()
    consumer.subscribed.wait(10)
    flash = provision(tmp_path / "state", BOARD, {
        "box_id": "box-rt", "box_key": rec["box_key"], "wifi": {"ssid": "os"},
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "tls": True, "ca": "ca.pem"},
        "mqtt_password": rec["mqtt_password"]}, {"ca.pem": mosquitto.ca_path})
    sock, path = _listen(tmp_path)
    c = keycircuit.Circuit(BOARD["keypad"]["rows"], BOARD["keypad"]["cols"], BOARD["keypad"]["layout"],
                           ticks_ms, 3, 1, float_level=0)
    for comp in BOARD["compartments"]:
        c.add_switch(comp["door"], closed=True)
    c.add_switch(BOARD["tamper"], closed=True)
    names = list(c.ids) + [x["solenoid"] for x in BOARD["compartments"]] + BOARD["led"] + [BOARD["buzzer"]]
    pins = keycircuit.board_module(c, names)
    stop = threading.Event()
    lines = []

    def sleep(ms):
        if stop.is_set():
            raise SystemExit(0)
        time.sleep(ms / 1000)

    kw = dict(hw_factory=lambda b: Hardware(b, keycircuit, pins, Matrix_Keypad),
              net=LinuxNet(str(flash), synced=True), notify=Notifier(path), out=lines.append,
              sleep=sleep, reset_cause=lambda: 1)
    done = []
    t = threading.Thread(target=lambda: done.append(_catch(lambda: lmain.main(str(flash), **kw))), daemon=True)
    t.start()
    be = Backend(ledger, mosquitto.sdk_config("rt-backend"))
    try:
        assert sock.recv(100) == b"READY=1"
        t0 = time.monotonic()
        while "PB I" not in "".join(x for x in lines if "link: connected" in x):
            assert time.monotonic() - t0 < 20, lines[-5:]
            time.sleep(0.05)
        mosquitto.wait_for_log("Received SUBSCRIBE from box-rt", timeout=20)   # after the CONNACK
        issued = be.issue("box-rt", "driver", comp=2, uses=1)    # a deposit into an empty one
        t0 = time.monotonic()
        while not any(" result " in x for x in lines):
            assert time.monotonic() - t0 < 20, lines[-5:]
            time.sleep(0.05)
        sol = BOARD["compartments"][1]["solenoid"]
        seen_on = False
        for ch in issued.code:
            c.press(ch)
            time.sleep(0.08)
            c.release(ch)
            time.sleep(0.08)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3 and not seen_on:
            seen_on = c.driven(sol) == 1
            time.sleep(0.002)
        assert seen_on, lines[-8:]
        door = BOARD["compartments"][1]["door"]
        c.set_switch(door, False)                   # the driver opens the door, puts the parcel in
        time.sleep(0.5)
        c.set_switch(door, True)
        feeds = 0
        sock.settimeout(0.2)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:
            try:
                feeds += sock.recv(100) == b"WATCHDOG=1"
            except socket.timeout:
                pass
        assert feeds >= 1
        t0 = time.monotonic()
        while not {"opened", "closed", "deposit"} <= {e.type for e in ledger.events("box-rt")}:
            assert time.monotonic() - t0 < 20, (lines[-6:], [e.type for e in ledger.events("box-rt")])
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(10)
        consumer.stop()
        be.close()
        ledger.close()
        sock.close()
    assert done == ["SystemExit"] and not t.is_alive()
    assert c.driven(sol) == 0
    assert issued.code not in "\n".join(lines)


def _catch(fn):
    try:
        fn()
        return "returned"
    except BaseException as e:  # noqa: BLE001 - the test looks at what ended it
        return type(e).__name__


# ---- the Pi's reference design (hardware/rpi4-4x4, parcelbox hardware generate) ---------

def test_the_pi_reference_design_keeps_within_the_pis_pin_current_and_header():
    from host_tools.hardware import calc as hwcalc
    from host_tools.hardware import design as hwdesign
    d = hwdesign.design(BOARD_FILE)
    s = hwcalc.solenoid(BOARD["max_on_ms"], None, "rpi")
    assert s.r_gate == 330 and s.gate_peak_ma <= hwcalc.v("gpio_max_ma_rpi") == 16
    assert hwcalc.solenoid(2000).gate_peak_ma > 16          # the ESP32's 100 Ohm would not do here
    headers = [d.header(p) for p in d.pins()]
    assert all(h.startswith("J8-") for h in headers) and len(set(headers)) == len(headers) == 21
    kinds = {p.kind for p in d.parts}
    assert {"devboard-rpi", "sd-card", "buzzer-active", "buck-3a"} <= kinds and "buzzer" not in kinds
    wiring = (ROOT / "hardware" / "rpi4-4x4" / "wiring.md").read_text()
    assert "not 5 V tolerant" in wiring and "J8-11" in wiring     # 3.3 V logic is said on the page
    assert (ROOT / "hardware" / "rpi4-4x4" / "wiring.svg").exists()
    g = hwcalc.gpio_load(BOARD, s)                # the Pi's GPIO current ratings hold
    assert max(g.led_ma, g.gate_peak_ma, g.buzzer_ma) <= g.pin_max_ma == 16
    assert g.worst_ma <= g.total_max_ma == 50


# ---- parcelbox linux: provisioning a state directory, the unit -------------------------

def test_linux_provision_writes_a_state_directory_the_port_boots_from(tmp_path, mosquitto):
    from click.testing import CliRunner
    from host_tools.cli.main import main
    from host_tools.backend.sdk import Backend, Ledger
    db = tmp_path / "reg.db"
    ledger = Ledger(db)
    rec = Backend(ledger).register("box-pi", compartments=4)
    ledger.close()
    state = tmp_path / "state"
    state.mkdir()
    args = ["linux", "provision", "--box", "box-pi", "--state", str(state), "--board", "rpi4-4x4",
            "--db", str(db), "--broker", "mqtts://%s:%d" % (mosquitto.host, mosquitto.port),
            "--ca", str(mosquitto.ca_path)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert rec["box_key"] not in r.output and rec["mqtt_password"] not in r.output
    assert sorted(p.name for p in state.iterdir()) == ["board.json", "ca.pem", "config.json"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in state.iterdir())
    assert json.loads((state / "board.json").read_text()) == BOARD
    clock, c, _, timers = rig()
    args2, lines, notes = _boot(tmp_path, clock, c, timers, reset_cause=lambda: 1)
    app, hw = lmain.boot(str(state), **args2)
    assert app is not None and any("boot box box-pi board rpi4-4x4 compartments 4" in ln for ln in lines)
    # an ESP32 board is refused, and nothing changes
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    r = CliRunner().invoke(main, args[:7] + ["esp32s3-devkitc-4x4"] + args[8:])
    assert r.exit_code != 0 and "not a linux board" in r.output
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before


def test_linux_unit_prints_the_shipped_unit():
    from click.testing import CliRunner
    from host_tools.cli.main import main
    r = CliRunner().invoke(main, ["linux", "unit"])
    assert r.exit_code == 0 and r.output == (LINUX / "parcelbox.service").read_text()


def test_a_board_the_hardware_refuses_is_a_bad_board_not_a_crash(tmp_path):
    # found by the config fuzzer on the ESP32 port; the linux port raised out of boot()
    from parcelbox import devconf
    flash = _flash(tmp_path)
    clock, c, _, timers = rig()
    args, lines, notes = _boot(tmp_path, clock, c, timers)
    args["hw_factory"] = lambda b: Hardware(b, keycircuit, keycircuit.board_module(c, ["D5"]),
                                            Matrix_Keypad)
    assert lmain.boot(str(flash), **args) == (None, devconf.BAD_BOARD)
    assert any("the hardware refused it" in ln for ln in lines) and "READY=1" in notes
    assert lmain.all_off(str(flash), hw_factory=args["hw_factory"], result="x") == 1
