# The fake machine, network and ntptime modules (host_tools/virtual/) behave like MicroPython's
# on the ESP32 and ESP32-S3, so code that passes against them meets the same rules there.
import sys
from pathlib import Path

import pytest

FAKES = Path(__file__).resolve().parents[2] / "host_tools" / "virtual"
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))

import fakeworld  # noqa: E402
import machine  # noqa: E402
import network  # noqa: E402
import ntptime  # noqa: E402
from machine import ADC, PWM, WDT, Pin, Timer  # noqa: E402


@pytest.fixture
def w():
    return fakeworld.new("esp32")


def test_constants_are_the_esp32_ports():
    assert (Pin.IN, Pin.OUT, Pin.OPEN_DRAIN, Pin.PULL_UP, Pin.PULL_DOWN) == (1, 3, 7, 2, 1)
    assert (Timer.ONE_SHOT, Timer.PERIODIC) == (0, 1)
    assert (machine.PWRON_RESET, machine.HARD_RESET, machine.WDT_RESET,
            machine.DEEPSLEEP_RESET, machine.SOFT_RESET) == (1, 2, 3, 4, 5)


def test_a_pin_the_chip_lacks_is_invalid(w):
    for p in (20, 24, 28, 31, 40):
        with pytest.raises(ValueError, match="invalid pin"):
            Pin(p)
    fakeworld.new("esp32s3")
    Pin(40)
    with pytest.raises(ValueError, match="invalid pin"):
        Pin(22)


def test_input_only_pins_refuse_output_like_the_esp32(w):
    for p in range(34, 40):
        with pytest.raises(ValueError, match="pin can only be input"):
            Pin(p, Pin.OUT)
        with pytest.raises(ValueError, match="pin can only be input"):
            Pin(p, Pin.OPEN_DRAIN)
        with pytest.raises(ValueError, match="pin can only be input"):
            PWM(Pin(p), freq=1000)
        Pin(p, Pin.IN)


def test_a_pull_up_on_gpio34_39_is_accepted_and_does_nothing(w):
    # MicroPython calls gpio_pullup_en(), which on these pads has no resistor to enable.
    floating = Pin(34, Pin.IN, Pin.PULL_UP)
    pulled = Pin(33, Pin.IN, Pin.PULL_UP)
    assert pulled.value() == 1
    assert floating.value() == w.float_level == 0
    w.float_level = 1
    assert floating.value() == 1
    w.resistor(34, 1)
    w.float_level = 0
    assert floating.value() == 1          # an external pull-up works


def test_value_is_set_before_the_direction_and_read_back_from_the_pad(w):
    p = Pin(23, Pin.OUT, value=1)
    assert p.value() == 1 and p() == 1
    p(0)
    assert p.value() == 0
    p.on()
    assert w.level(23) == 1
    p.toggle()
    assert w.level(23) == 0


def test_open_drain_only_pulls_low(w):
    od = Pin(13, Pin.OPEN_DRAIN, value=1)
    assert od.value() == 0                  # released, nothing pulls it: floats low here
    w.resistor(13, 1)
    assert od.value() == 1
    od(0)
    assert od.value() == 0


def test_a_pressed_key_joins_its_row_to_its_column(w):
    kp = w.keypad([13, 14], [25, 33], "12ab")
    rows = [Pin(p, Pin.OPEN_DRAIN, value=1) for p in (13, 14)]
    cols = [Pin(p, Pin.IN, Pin.PULL_UP) for p in (25, 33)]
    assert [c() for c in cols] == [1, 1]
    kp.press("b")                           # row 1, column 1
    rows[0](0)
    assert [c() for c in cols] == [1, 1]
    rows[0](1)
    rows[1](0)
    assert [c() for c in cols] == [1, 0]
    kp.release("b")
    assert [c() for c in cols] == [1, 1]


def test_three_keys_of_a_rectangle_make_the_fourth_read_pressed(w):
    kp = w.keypad([13, 14], [25, 33], "12ab")
    rows = [Pin(p, Pin.OPEN_DRAIN, value=1) for p in (13, 14)]
    cols = [Pin(p, Pin.IN, Pin.PULL_UP) for p in (25, 33)]
    for ch in "12a":
        kp.press(ch)
    rows[1](0)                              # only "a" is pressed in row 1...
    assert [c() for c in cols] == [0, 0]    # ...but "b" reads pressed too: a ghost
    assert w.shorts == 0


def test_push_pull_rows_shorted_through_two_keys_are_counted(w):
    kp = w.keypad([13, 14], [25, 33], "12ab")
    rows = [Pin(p, Pin.OUT, value=1) for p in (13, 14)]
    Pin(25, Pin.IN, Pin.PULL_UP)
    kp.press("1")
    kp.press("a")                           # both rows meet on column 0
    rows[1](0)
    assert Pin(25).value() == 0
    assert w.shorts == 1


def test_contacts_bounce_for_bounce_ms_after_a_press_and_a_release(w):
    kp = w.keypad([13], [25], "1", bounce_ms=6)
    Pin(13, Pin.OPEN_DRAIN, value=0)
    col = Pin(25, Pin.IN, Pin.PULL_UP)
    kp.press("1")
    seen = []
    for _ in range(10):
        seen.append(col())
        w.advance(1)
    assert 1 in seen[:6] and 0 in seen[:6] and seen[6:] == [0] * 4
    kp.release("1")
    seen = []
    for _ in range(10):
        seen.append(col())
        w.advance(1)
    assert 1 in seen[:6] and 0 in seen[:6] and seen[6:] == [1] * 4


def test_a_switch_holds_its_pin_while_closed_and_bounces(w):
    door = w.add_switch(22, level=0, closed=True, bounce_ms=4)
    pin = Pin(22, Pin.IN, Pin.PULL_UP)
    assert pin() == 0
    door.set(False)
    seen = []
    for _ in range(6):
        seen.append(pin())
        w.advance(1)
    assert seen[0] == 1 and 0 in seen[:4] and seen[4:] == [1, 1]


def test_ticks_wrap_at_2_30():
    w = fakeworld.new("esp32", t0=0x3FFFFFFF - 5)
    assert w.ticks_ms() == 0x3FFFFFFF - 5
    w.advance(10)
    assert w.ticks_ms() == 4


def test_a_one_shot_timer_fires_once_at_its_time(w):
    got = []
    t = Timer(0)
    t.init(mode=Timer.ONE_SHOT, period=100, callback=lambda tm: got.append(w.now))
    w.advance(99)
    assert got == []
    w.advance(500)
    assert got == [100] and not t.armed()


def test_a_periodic_timer_repeats_and_deinit_stops_it(w):
    got = []
    t = Timer(1, mode=Timer.PERIODIC, period=30, callback=lambda tm: got.append(w.now))
    w.advance(100)
    assert got == [30, 60, 90]
    t.deinit()
    w.advance(100)
    assert got == [30, 60, 90]


def test_timers_are_numbered_like_the_chip_and_hard_ones_refused(w):
    with pytest.raises(ValueError, match="invalid Timer number"):
        Timer(4)
    Timer(-1)
    with pytest.raises(ValueError, match="hard Timers are not implemented"):
        Timer(0).init(mode=Timer.ONE_SHOT, period=10, callback=print, hard=True)


def test_one_hardware_timer_per_id(w):
    got = []
    Timer(2).init(mode=Timer.ONE_SHOT, period=10, callback=lambda t: got.append("a"))
    Timer(2).init(mode=Timer.ONE_SHOT, period=20, callback=lambda t: got.append("b"))
    w.advance(50)
    assert got == ["b"]


def test_an_unfed_watchdog_resets_the_chip(w):
    wdt = WDT(timeout=1000)
    for _ in range(5):
        w.advance(900)
        wdt.feed()
    assert w.resets == [] and w.wdt_feeds == 5
    with pytest.raises(fakeworld.Reset) as e:
        w.advance(1000)
    assert e.value.cause == machine.WDT_RESET == machine.reset_cause()
    assert w.resets == [(5500, machine.WDT_RESET)]


def test_a_reset_floats_every_pin_and_stops_timers(w):
    w.on_reset = "flag"
    w.resistor(23, 0)                       # the solenoid driver's gate pull-down
    Pin(23, Pin.OUT, value=1)
    t = Timer(0, mode=Timer.PERIODIC, period=10, callback=lambda t: None)
    WDT(timeout=100)
    w.advance(150)                          # flagged, not raised
    assert w.resets == [(100, machine.WDT_RESET)]
    assert w.level(23) == 0 and not t.armed() and w.wdt_timeout == -1


def test_wdt_arguments_are_checked(w):
    with pytest.raises(ValueError):
        WDT(id=1)
    with pytest.raises(ValueError, match="too short"):
        WDT(timeout=0)


def test_machine_reset_is_a_soft_reset(w):
    with pytest.raises(fakeworld.Reset):
        machine.reset()
    assert machine.reset_cause() == machine.SOFT_RESET
    assert len(machine.unique_id()) == 6


def test_pwm_frequency_and_duty(w):
    pwm = PWM(Pin(4), freq=2000, duty_u16=0)
    assert w.tone(4) == 0
    pwm.duty_u16(32768)
    assert w.tone(4) == 2000 and pwm.freq() == 2000
    with pytest.raises(ValueError):
        pwm.freq(0)
    with pytest.raises(ValueError):
        pwm.duty_u16(70000)
    pwm.deinit()
    assert w.tone(4) == 0


def test_adc_reads_the_pin_voltage_within_its_range(w):
    w.set_mv(35, 1200)
    adc = ADC(Pin(35), atten=ADC.ATTN_11DB)
    assert adc.read_uv() == 1200000
    assert adc.read_u16() == 1200000 * 65535 // 3100000
    w.set_mv(35, 5000)
    assert adc.read_uv() == 3100000         # clipped at full scale
    with pytest.raises(ValueError):
        ADC(Pin(23))


def test_adc2_fails_while_wi_fi_runs(w):
    w.set_mv(25, 1000)
    adc = ADC(Pin(25), atten=ADC.ATTN_11DB)
    assert adc.read_uv() == 1000000
    network.WLAN(network.STA_IF).active(True)
    with pytest.raises(OSError):
        adc.read_uv()


def test_wlan_joins_a_known_access_point_after_a_while(w):
    w.add_ap("box-net", "secret")
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    wlan.connect("box-net", "secret")
    assert wlan.status() == network.STAT_CONNECTING and not wlan.isconnected()
    w.advance(w.wifi_connect_ms)
    assert wlan.isconnected() and wlan.ifconfig()[0] != "0.0.0.0"
    wlan.connect("box-net", "wrong")
    w.advance(w.wifi_connect_ms)
    assert wlan.status() == network.STAT_WRONG_PASSWORD
    wlan.connect("elsewhere", "x")
    w.advance(w.wifi_connect_ms)
    assert wlan.status() == network.STAT_NO_AP_FOUND


def test_ntptime_answers_in_the_ports_epoch_or_times_out(w):
    with pytest.raises(OSError):
        ntptime.time()
    w.utc = 1767225600                      # 2026-01-01
    network.WLAN(network.STA_IF).active(True)
    assert ntptime.time() == 1767225600 - 946684800
    ntptime.settime()
    assert w.rtc == 1767225600 - 946684800


def test_mpselect_polls_objects_as_micropython_does():
    import errno
    import socket

    import mpselect
    a, b = socket.socketpair()
    p = mpselect.poll()
    p.register(a, mpselect.POLLIN)
    p.register(a, mpselect.POLLIN)            # again: the mask replaced, not a second entry
    assert p.poll(0) == [] and list(p.ipoll(0)) == []
    b.send(b"x")
    it = p.ipoll(0)
    assert it is p                            # ipoll hands back the poll object itself
    first = next(it)
    assert tuple(first) == (a, mpselect.POLLIN)
    assert p.poll(0) == [(a, mpselect.POLLIN)]
    a.close()
    # a closed socket is not refused: it answers POLLNVAL at once, whatever was asked
    assert p.poll(0) == [(a, mpselect.POLLNVAL)]
    p.unregister(a)
    p.unregister(a)                           # not registered: no error on MicroPython
    with pytest.raises(OSError) as e:
        p.modify(a, mpselect.POLLIN)
    assert e.value.args[0] == errno.ENOENT
    b.close()


def test_the_virtual_hardware_is_found_by_its_device_names_only():
    from host_tools import virtual

    spec = virtual._Finder.find_spec("machine")
    assert spec.origin == str(virtual.DIR / "machine.py")
    assert virtual._Finder.find_spec("memflash").origin == str(virtual.DIR / "memflash.py")
    for name in ("os", "__init__", "keycircuitx"):
        assert virtual._Finder.find_spec(name) is None
    assert virtual._Finder.find_spec("machine", path=["x"]) is None   # never a submodule
