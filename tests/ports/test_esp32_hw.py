# The ESP32 hardware layer (firmware/esp32/pb_esp32/hw.py) on CPython against the fake
# machine module: keys through the circuit and the core's debounce, doors, the solenoid
# failsafe, LED and buzzer, battery, the watchdog. tests/vm/scn_esp32_hw.py runs the
# scan in the MicroPython VM and measures that it allocates nothing.
import copy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "host_tools" / "virtual", ROOT / "firmware" / "esp32"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import fakeboards  # noqa: E402
import fakeworld  # noqa: E402
import machine  # noqa: E402
from fakeboards import ESP32_4X3, S3_4X4, Wired  # noqa: E402
from parcelbox.feedback import LED_AMBER, LED_BLUE, LED_GREEN, LED_OFF, LED_RED  # noqa: E402
from parcelbox.keypad import NONE, Keypad  # noqa: E402
from pb_esp32.hw import Hardware  # noqa: E402

from host_tools import boards  # noqa: E402

BOARDS = [ESP32_4X3, S3_4X4]
IDS = ["esp32-4x3", "s3-4x4"]
MASK = 0x3FFFFFFF


def setup(board, **kw):
    wired = Wired(board, **kw)
    return wired, Hardware(board)


def keypad_for(board):
    kp = board["keypad"]
    return Keypad(len(kp["rows"]), len(kp["cols"]), kp["layout"].encode())


def test_the_fake_boards_are_the_shipped_ones():
    assert ESP32_4X3 == boards.device_board(ROOT / "boards" / "esp32-devkitc-4x3.json")
    assert S3_4X4 == boards.device_board(ROOT / "boards" / "esp32s3-devkitc-4x4.json")
    assert fakeboards.BOARDS == (ESP32_4X3, S3_4X4)


# ---- keypad -------------------------------------------------------------------------

@pytest.mark.parametrize("board", BOARDS, ids=IDS)
def test_each_key_alone_sets_its_own_bit(board):
    wired, hw = setup(board, bounce_ms=0)
    kp = board["keypad"]
    nc = len(kp["cols"])
    assert hw.scan() == 0
    for i, ch in enumerate(kp["layout"]):
        wired.keys.press(ch)
        assert hw.scan() == 1 << i, ch
        assert i == (i // nc) * nc + i % nc       # bit r*cols + c
        wired.keys.release(ch)
        assert hw.scan() == 0
    assert wired.world.shorts == 0


@pytest.mark.parametrize("bounce_ms", [0, 3, 8, 15])
@pytest.mark.parametrize("board", BOARDS, ids=IDS)
def test_every_key_through_bounce_and_the_cores_debounce(board, bounce_ms):
    wired, hw = setup(board, bounce_ms=bounce_ms, t0=MASK - 1000)   # the ticks wrap mid-way
    w = wired.world
    decoder = keypad_for(board)
    got = []
    for ch in board["keypad"]["layout"]:
        for action in (wired.keys.press, wired.keys.release):
            action(ch)
            for _ in range(10):                     # 10 scans, 5 ms apart
                k = decoder.update(hw.scan(), w.ticks_ms())
                if k != NONE:
                    got.append(chr(k))
                w.advance(5)
    assert "".join(got) == board["keypad"]["layout"]
    assert w.ticks_ms() < 100000 and w.shorts == 0


def test_bounce_alone_never_makes_a_key():
    wired, hw = setup(ESP32_4X3, bounce_ms=15)
    w = wired.world
    decoder = keypad_for(ESP32_4X3)
    wired.keys.press("5")
    wired.keys.release("5", at=w.now + 12)          # a tap shorter than the bounce settles
    raw = set()
    for _ in range(10):
        f = hw.scan()
        raw.add(f)
        assert decoder.update(f, w.ticks_ms()) == NONE
        w.advance(2)
    assert raw == {0, 1 << 4}                       # it did chatter


def test_three_keys_of_a_rectangle_read_as_four_and_are_rejected():
    wired, hw = setup(ESP32_4X3, bounce_ms=0)
    w = wired.world
    decoder = keypad_for(ESP32_4X3)
    for ch in "124":
        wired.keys.press(ch)
    bits = hw.scan()
    assert bits == 0b11011                          # 1, 2, 4 and the ghost 5
    for _ in range(10):
        assert decoder.update(hw.scan(), w.ticks_ms()) == NONE
        w.advance(5)
    assert decoder.rejected == 1


def test_two_keys_in_one_column_never_short_two_rows():
    # Rows are open drain: the released row is not driven high against the scanned one.
    wired, hw = setup(S3_4X4, bounce_ms=0)
    wired.keys.press("1")
    wired.keys.press("4")
    wired.keys.press("*")
    assert hw.scan() == (1 << 0) | (1 << 4) | (1 << 12)
    assert wired.world.shorts == 0


def test_every_row_is_released_after_a_scan():
    wired, hw = setup(S3_4X4)
    wired.keys.press("D")
    hw.scan()
    w = wired.world
    for p in S3_4X4["keypad"]["rows"]:
        assert w.mode[p] == machine.Pin.OPEN_DRAIN and w.out[p] == 1


def test_a_column_on_a_pin_without_pull_up_floats_which_is_why_the_host_refuses_it():
    board = copy.deepcopy(ESP32_4X3)
    board["keypad"]["cols"] = [25, 33, 34]          # GPIO34: no internal pull-up
    board["tamper"] = None
    wired, hw = setup(board, bounce_ms=0)
    assert hw.scan() == 0b100100100100              # column 3 floats low: all its keys "pressed"
    wired.world.resistor(34, 1)                     # the external pull-up the host asks for
    assert hw.scan() == 0
    r = boards.check_text(_as_source(board))
    assert any("keypad column 3 (GPIO34)" in e and "no internal pull-up" in e for e in r.errors)


def _as_source(board):
    import json
    src = {k: v for k, v in board.items() if k not in ("format", "tamper_open_level", "tamper_pull",
                                                       "battery_divider")}
    src["led"] = dict(zip(("red", "green", "blue"), board["led"]))
    src["battery"] = None
    return json.dumps(src)


def test_an_output_on_an_input_only_pin_fails_at_boot_like_on_the_chip():
    board = copy.deepcopy(ESP32_4X3)
    board["compartments"] = [{"solenoid": 34, "door": 22}]
    fakeworld.new("esp32")
    with pytest.raises(ValueError, match="pin can only be input"):
        Hardware(board)


# ---- doors and tamper -------------------------------------------------------------------

def test_door_reads_open_when_its_switch_opens():
    wired, hw = setup(S3_4X4, bounce_ms=0)
    assert [hw.door(c) for c in (1, 2, 3, 4)] == [False] * 4
    wired.doors[2].set(False)                       # compartment 3's door opens
    assert [hw.door(c) for c in (1, 2, 3, 4)] == [False, False, True, False]
    with pytest.raises(IndexError):
        hw.door(0)
    with pytest.raises(IndexError):
        hw.door(5)


def test_door_open_level_0_inverts_the_reading():
    board = dict(ESP32_4X3, door_open_level=0)
    wired, hw = setup(board, bounce_ms=0)
    assert hw.door(1) is True                       # switch closed reads 0 = "open" here
    wired.doors[0].set(False)
    assert hw.door(1) is False


def test_tamper_reads_open_through_an_external_pull_up_and_none_without_one():
    wired, hw = setup(ESP32_4X3, bounce_ms=0)
    assert hw.tamper() is False
    wired.tamper.set(False)
    assert hw.tamper() is True
    wired, hw = setup(dict(ESP32_4X3, tamper=None))
    assert hw.tamper() is None


# ---- solenoids and the failsafe ------------------------------------------------------------

@pytest.mark.parametrize("board", BOARDS, ids=IDS)
def test_solenoids_are_off_from_the_start(board):
    wired, hw = setup(board)
    for c in range(1, len(board["compartments"]) + 1):
        assert not wired.energised(c)


def test_the_core_drives_the_solenoid_on_and_off():
    wired, hw = setup(ESP32_4X3)
    hw.solenoid(1, True)
    assert wired.energised(1)
    wired.world.advance(700)
    hw.solenoid(1, False)
    assert not wired.energised(1)
    wired.world.advance(5000)                       # its failsafe was stopped: nothing trips
    assert hw.failsafe_tripped() == 0


def test_the_failsafe_cuts_the_solenoid_when_the_loop_stops():
    wired, hw = setup(ESP32_4X3)
    w = wired.world
    hw.solenoid(1, True)
    w.advance(1999)
    assert wired.energised(1)
    w.advance(1)                                    # the loop hangs: no more solenoid() calls
    assert not wired.energised(1)
    assert hw.failsafe_tripped() == 1 and hw.failsafe_tripped() == 0


def test_calling_on_every_loop_does_not_extend_the_failsafe():
    wired, hw = setup(ESP32_4X3)
    w = wired.world
    for _ in range(300):                            # a buggy core asking for "on" forever
        hw.solenoid(1, True)
        w.advance(10)
        if not wired.energised(1):
            break
    assert w.now == 2000


def test_after_a_trip_the_solenoid_stays_off_until_the_core_says_off():
    wired, hw = setup(ESP32_4X3)
    hw.solenoid(1, True)
    wired.world.advance(2000)
    hw.solenoid(1, True)                            # the core still says on: refused
    assert not wired.energised(1)
    hw.solenoid(1, False)
    hw.solenoid(1, True)                            # a new pulse is allowed
    assert wired.energised(1)


def test_each_compartment_has_its_own_failsafe():
    wired, hw = setup(S3_4X4)
    w = wired.world
    hw.solenoid(1, True)
    w.advance(1000)
    hw.solenoid(4, True)
    w.advance(1000)
    assert not wired.energised(1) and wired.energised(4)
    w.advance(1000)
    assert not wired.energised(4)
    assert hw.failsafe_tripped() == 0b1001


def test_an_active_low_solenoid_is_driven_low():
    board = dict(ESP32_4X3, solenoid_active=0)
    wired, hw = setup(board)
    assert wired.world.level(23) == 1 and not wired.energised(1)
    hw.solenoid(1, True)
    assert wired.world.level(23) == 0 and wired.energised(1)
    wired.world.advance(2000)
    assert wired.world.level(23) == 1


def test_a_watchdog_reset_lets_the_gate_pull_down_switch_the_solenoid_off():
    wired, hw = setup(ESP32_4X3)
    w = wired.world
    hw.watchdog(1500)
    hw.solenoid(1, True)
    with pytest.raises(fakeworld.Reset) as e:
        w.advance(1600)                             # before the 2000 ms failsafe: the WDT
    assert e.value.cause == machine.WDT_RESET == machine.reset_cause()
    assert not wired.energised(1)


# ---- watchdog ------------------------------------------------------------------------

def test_feeding_keeps_the_watchdog_quiet_and_not_feeding_resets():
    wired, hw = setup(ESP32_4X3)
    w = wired.world
    hw.feed()                                       # before watchdog(): nothing to feed
    hw.watchdog(3000)
    for _ in range(10):
        w.advance(2500)
        hw.feed()
    assert w.resets == [] and w.wdt_feeds == 10
    with pytest.raises(fakeworld.Reset):
        w.advance(3000)
    assert w.resets == [(w.now, machine.WDT_RESET)]


# ---- LED, buzzer, battery ----------------------------------------------------------------

def test_led_colours_light_the_rgb_pins():
    wired, hw = setup(ESP32_4X3)
    w = wired.world
    red, green, blue = ESP32_4X3["led"]
    want = {LED_OFF: (0, 0, 0), LED_GREEN: (0, 1, 0), LED_RED: (1, 0, 0),
            LED_AMBER: (1, 1, 0), LED_BLUE: (0, 0, 1)}
    for colour, levels in want.items():
        hw.indicate(colour, 0)
        assert (w.level(red), w.level(green), w.level(blue)) == levels, colour
    with pytest.raises(ValueError):
        hw.indicate(9, 0)


def test_a_single_led_is_on_for_any_colour_and_active_low_works():
    board = dict(ESP32_4X3, led=[21], led_active=0)
    wired, hw = setup(board)
    w = wired.world
    assert w.level(21) == 1
    hw.indicate(LED_RED, 0)
    assert w.level(21) == 0
    hw.indicate(LED_OFF, 0)
    assert w.level(21) == 1


def test_the_buzzer_plays_the_frequency_and_is_silent_at_0():
    wired, hw = setup(S3_4X4)
    w = wired.world
    assert w.tone(42) == 0
    hw.indicate(LED_GREEN, 800)
    assert w.tone(42) == 800
    hw.indicate(LED_GREEN, 1800)
    assert w.tone(42) == 1800
    hw.indicate(LED_GREEN, 0)
    assert w.tone(42) == 0


def test_indicate_touches_the_pwm_only_on_a_change():
    wired, hw = setup(S3_4X4)
    calls = []
    pwm = hw._buzzer
    orig = pwm.freq
    pwm.freq = lambda f=None: calls.append(f) or orig(f)
    for _ in range(5):
        hw.indicate(LED_AMBER, 300)
    assert calls == [300]


def test_battery_voltage_through_the_divider():
    for board in BOARDS:
        wired, hw = setup(board, battery_mv=12600)
        assert abs(hw.battery_mv() - 12600) <= 10
    wired, hw = setup(dict(ESP32_4X3, battery=None))
    assert hw.battery_mv() is None


def test_all_off():
    wired, hw = setup(S3_4X4)
    hw.solenoid(2, True)
    hw.indicate(LED_BLUE, 1200)
    hw.all_off()
    assert not wired.energised(2) and wired.world.tone(42) == 0
    assert all(wired.world.level(p) == 0 for p in S3_4X4["led"])


def test_a_newer_board_format_is_refused():
    fakeworld.new("esp32")
    with pytest.raises(ValueError, match="format"):
        Hardware(dict(ESP32_4X3, format=2))
