# Tests for parcelbox.lock: fail-secure solenoid pulses, cool-down, door debounce
# and the door events of one compartment, including tick wrap-around and random runs.
import random

import pytest

from parcelbox import events, lock, ticks
from parcelbox.lock import Compartment

WRAP = ticks.PERIOD


def closed_door(c, now=0):
    # establish a closed door (first stable sample, no event)
    assert c.door(False, now) == lock.NONE
    assert c.door(False, now + c.door_debounce_ms) == lock.NONE
    assert c.door_known and not c.door_open


def settle(c, is_open, now):
    # feed a stable sample long enough to be accepted; return the event
    c.door(is_open, now)
    return c.door(is_open, ticks.add(now, c.door_debounce_ms))


def test_solenoid_is_off_at_boot():
    c = Compartment(0)
    assert c.state == lock.LOCKED
    for t in (0, 1, 700, 5000, WRAP - 1):
        assert c.energised(t) is False
        assert c.tick(t) == lock.NONE
    assert c.next_deadline(0) is None


def test_event_numbers_match_the_outbox_event_kinds():
    assert lock.OPENED == events.OPENED
    assert lock.CLOSED == events.CLOSED
    assert lock.FORCED == events.FORCED
    assert lock.LEFT_OPEN == events.LEFT_OPEN
    assert lock.NOT_OPENED == events.NOT_OPENED
    assert lock.NONE == 0


def test_unlock_energises_for_the_pulse_then_releases():
    c = Compartment(1, pulse_ms=700)
    closed_door(c)
    assert c.unlock(100, code_id=42) == lock.STARTED
    assert c.state == lock.PULSING and c.code_id == 42
    assert c.energised(100) and c.energised(799)
    assert c.next_deadline(100) == 800
    assert c.tick(800) == lock.NONE
    assert c.state == lock.RELEASED
    assert not c.energised(800)


def test_pulse_never_exceeds_max_on_time_even_if_tick_is_late():
    c = Compartment(0, pulse_ms=2000, max_on_ms=2000, cooldown_ms=6000)
    closed_door(c)
    assert c.unlock(1000) == lock.STARTED
    # no tick() at all: energised() alone is computed from time
    assert c.energised(2999)
    assert not c.energised(3000)
    assert not c.energised(2999)   # once ended it stays ended, even if asked about the past
    assert c.state == lock.RELEASED


def test_pulse_is_off_when_first_asked_days_later_across_the_tick_horizon():
    for late in (2001, 2 ** 29 - 1, 2 ** 29, 2 ** 29 + 5, WRAP - 1):
        c = Compartment(0, pulse_ms=2000, max_on_ms=2000, cooldown_ms=6000)
        c.unlock(0)
        assert not c.energised(ticks.add(0, late)), late


def test_unlock_during_cooldown_is_queued_not_doubled():
    c = Compartment(0, pulse_ms=700, cooldown_ms=3000)
    closed_door(c)
    assert c.unlock(0, code_id=1) == lock.STARTED
    assert c.tick(700) == lock.NONE              # pulse ends at 700
    assert c.tick(10700) == lock.NOT_OPENED      # window (from pulse start) long gone
    # cool-down ended at 3700: a fresh unlock starts at once
    c2 = Compartment(0, pulse_ms=700, cooldown_ms=3000)
    closed_door(c2)
    c2.unlock(0, code_id=1)
    c2.tick(700)
    assert settle(c2, True, 1000) == lock.OPENED
    assert settle(c2, False, 1500) == lock.CLOSED
    assert c2.unlock(1600, code_id=2) == lock.QUEUED
    assert c2.state == lock.WAITING and c2.code_id == 2
    assert c2.unlock(1601, code_id=3) == lock.REFUSED   # not doubled
    assert not c2.energised(3699) and c2.tick(3699) == lock.NONE
    assert c2.next_deadline(3000) == 3700
    assert c2.tick(3700) == lock.NONE
    assert c2.state == lock.PULSING and c2.energised(3700)
    assert c2.energised(4399) and not c2.energised(4400)


def test_unlock_is_refused_when_cooldown_outlasts_the_window():
    c = Compartment(0, pulse_ms=1000, cooldown_ms=20000, open_window_ms=5000)
    closed_door(c)
    c.unlock(0)
    c.tick(1000)
    assert c.tick(5000) == lock.NOT_OPENED
    assert c.unlock(6000) == lock.COOLING        # cool-down ends at 21000 > 6000 + 5000
    assert c.state == lock.LOCKED
    assert c.unlock(16000) == lock.COOLING       # would start exactly as the window closes
    assert c.unlock(16001) == lock.QUEUED        # ends 21000 < 16001 + 5000
    assert c.tick(21000) == lock.NONE and c.energised(21000)


def test_unlock_refused_while_door_open_or_unlocking():
    c = Compartment(0)
    closed_door(c)
    assert c.unlock(0) == lock.STARTED
    assert c.unlock(10) == lock.REFUSED
    c.tick(700)
    assert c.unlock(800) == lock.REFUSED          # RELEASED: still waiting for the door
    assert settle(c, True, 900) == lock.OPENED
    assert c.unlock(5000) == lock.REFUSED         # door open


def test_door_opened_without_unlock_is_forced():
    c = Compartment(3)
    closed_door(c)
    assert settle(c, True, 500) == lock.FORCED
    assert c.state == lock.OPEN and c.door_open and not c.authorised
    assert not c.energised(600)
    assert settle(c, False, 1000) == lock.CLOSED
    assert c.state == lock.LOCKED


def test_door_opened_during_pulse_is_authorised_and_cuts_the_solenoid():
    c = Compartment(0, pulse_ms=700)
    closed_door(c)
    c.unlock(0, code_id=9)
    c.door(True, 200)
    assert c.energised(220)                       # not yet debounced
    assert c.door(True, 250) == lock.OPENED
    assert not c.energised(251)
    assert c.authorised and c.code_id == 9 and c.state == lock.OPEN
    # cool-down counts from the cut
    assert settle(c, False, 400) == lock.CLOSED
    assert c.unlock(3249) == lock.QUEUED
    assert c.tick(3250) == lock.NONE and c.energised(3250)


def test_door_opening_while_queued_counts_as_opened_and_drops_the_pulse():
    c = Compartment(0)
    closed_door(c)
    c.unlock(0)
    settle(c, True, 100)
    settle(c, False, 300)
    assert c.unlock(400, code_id=5) == lock.QUEUED
    assert settle(c, True, 500) == lock.OPENED
    assert c.authorised and c.code_id == 5
    for t in range(500, 10000, 250):
        c.tick(t)
        assert not c.energised(t)


def test_unlocked_but_never_opened_relocks_and_reports_not_opened():
    c = Compartment(0, open_window_ms=10000)
    closed_door(c)
    c.unlock(1000, code_id=7)
    assert c.tick(1700) == lock.NONE
    assert c.state == lock.RELEASED
    assert c.next_deadline(1700) == 11000
    assert c.tick(10999) == lock.NONE
    assert c.tick(11000) == lock.NOT_OPENED
    assert c.state == lock.LOCKED and c.code_id == 7
    assert c.tick(11001) == lock.NONE
    assert settle(c, True, 12000) == lock.FORCED  # the lock re-latched: opening now is forced


def test_left_open_reported_once():
    c = Compartment(0, left_open_ms=120000)
    closed_door(c)
    c.unlock(0)
    assert settle(c, True, 100) == lock.OPENED     # open at 150
    assert c.next_deadline(200) == 120150
    assert c.tick(120149) == lock.NONE
    assert c.tick(120150) == lock.LEFT_OPEN
    assert c.next_deadline(120150) is None
    for t in range(120151, 400000, 5000):
        assert c.tick(t) == lock.NONE
    assert settle(c, False, 400000) == lock.CLOSED
    assert settle(c, True, 401000) == lock.FORCED   # a new opening may be reported again
    assert c.tick(ticks.add(401050, 120000)) == lock.LEFT_OPEN


def test_door_bounce_is_ignored():
    c = Compartment(0, door_debounce_ms=50)
    closed_door(c)
    for t in range(100, 400, 10):                   # chatter every 10 ms
        assert c.door(t % 20 == 0, t) == lock.NONE
    assert c.door(False, 400) == lock.NONE and not c.door_open
    assert c.door(True, 500) == lock.NONE
    assert c.next_deadline(500) == 550
    assert c.door(True, 549) == lock.NONE
    assert c.door(True, 550) == lock.FORCED


def test_first_stable_sample_sets_the_door_state_without_an_event():
    c = Compartment(0)
    assert settle(c, True, 0) == lock.NONE
    assert c.door_known and c.door_open and c.state == lock.OPEN and not c.authorised
    assert c.unlock(100) == lock.REFUSED
    assert c.tick(120050) == lock.LEFT_OPEN        # timed from the first stable sample
    assert settle(c, False, 130000) == lock.CLOSED
    c = Compartment(0, door_open_at_boot=True)
    assert c.state == lock.OPEN and c.unlock(0) == lock.REFUSED
    assert settle(c, False, 10) == lock.NONE and c.state == lock.LOCKED
    assert c.unlock(100) == lock.STARTED


def test_unlock_before_the_first_door_sample_still_reports_the_opening():
    c = Compartment(0)
    assert c.unlock(0, code_id=6) == lock.STARTED
    assert settle(c, True, 100) == lock.OPENED
    assert c.authorised and c.code_id == 6 and not c.energised(150)


def test_door_sample_must_be_a_bool():
    c = Compartment(0)
    for bad in (2, -1, "1", None, b"\x01"):
        with pytest.raises(ValueError):
            c.door(bad, 0)
    assert c.door(1, 0) == lock.NONE and c.door(0, 100) == lock.NONE


def test_tick_wraparound():
    start = WRAP - 300
    c = Compartment(0, pulse_ms=700, cooldown_ms=3000, open_window_ms=10000)
    closed_door(c, start)
    t = ticks.add(start, 100)                       # WRAP - 200
    assert c.unlock(t, code_id=4) == lock.STARTED
    assert c.energised(ticks.add(t, 699)) and ticks.add(t, 699) < t
    assert c.next_deadline(t) == ticks.add(t, 700) == 500
    assert c.tick(500) == lock.NONE and not c.energised(500)
    assert c.tick(ticks.add(t, 9999)) == lock.NONE
    assert c.tick(ticks.add(t, 10000)) == lock.NOT_OPENED
    # cool-down spanning the wrap
    c = Compartment(0)
    closed_door(c, start)
    c.unlock(WRAP - 1000)
    assert settle(c, True, WRAP - 900) == lock.OPENED
    assert settle(c, False, WRAP - 800) == lock.CLOSED
    assert c.unlock(WRAP - 700) == lock.QUEUED
    assert c.next_deadline(WRAP - 700) == 2150      # 3000 after the cut at WRAP - 850
    assert c.tick(2149) == lock.NONE and not c.energised(2149)
    assert c.tick(2150) == lock.NONE and c.energised(2150)


@pytest.mark.parametrize("kw, words", [
    ({"pulse_ms": 49}, "pulse_ms"),
    ({"pulse_ms": 2500}, "pulse_ms"),                       # above max_on_ms
    ({"max_on_ms": 5001, "pulse_ms": 700}, "max_on_ms"),     # above the hard ceiling
    ({"cooldown_ms": 2099}, "25%"),
    ({"pulse_ms": 1000, "cooldown_ms": 2999}, "3 * pulse_ms"),
    ({"open_window_ms": 0}, "open_window_ms"),
    ({"left_open_ms": 0}, "left_open_ms"),
    ({"door_debounce_ms": -1}, "door_debounce_ms"),
    ({"pulse_ms": 700.0}, "int"),
    ({"pulse_ms": True}, "int"),
    ({"door_open_at_boot": 1}, "bool"),
    ({"open_window_ms": 2 ** 29}, "open_window_ms"),
])
def test_bad_config_is_rejected_with_a_clear_message(kw, words):
    with pytest.raises(ValueError) as e:
        Compartment(0, **kw)
    assert words in str(e.value)


def test_bad_index_is_rejected():
    for bad in (-1, 256, "0", None):
        with pytest.raises(ValueError):
            Compartment(bad)


def test_hard_ceiling_is_accepted_exactly():
    c = Compartment(0, pulse_ms=5000, max_on_ms=lock.HARD_MAX_ON_MS, cooldown_ms=15000)
    c.unlock(0)
    assert c.energised(4999) and not c.energised(5000)


def _random_run(seed, late):
    # A shell loop with a random door and random unlocks; returns the pin's on-runs.
    rnd = random.Random(seed)
    pulse = rnd.randrange(50, 2001)
    c = Compartment(rnd.randrange(8), pulse_ms=pulse, max_on_ms=rnd.randrange(pulse, 5001),
                    cooldown_ms=pulse * 3 + rnd.randrange(0, 3000),
                    open_window_ms=rnd.randrange(1, 15000),
                    left_open_ms=rnd.randrange(1, 20000), door_debounce_ms=rnd.randrange(0, 120),
                    door_open_at_boot=rnd.random() < 0.2)
    abs_t = rnd.randrange(WRAP)              # unwrapped time; the box sees abs_t % WRAP
    physical = rnd.random() < 0.5
    runs = []
    level, since, started = False, 0, None
    for _ in range(400):
        t = abs_t % WRAP
        r = rnd.random()
        if r < 0.15:
            physical = not physical
        c.door(physical, t)
        if rnd.random() < 0.3:
            c.unlock(t, rnd.randrange(100))
        c.tick(t)
        if c.state == lock.PULSING and started is None:
            started = abs_t
        elif c.state != lock.PULSING:
            started = None
        on = c.energised(t)
        if on:
            assert started is not None and 0 <= abs_t - started < pulse <= c.max_on_ms
            assert not (c.door_known and c.door_open)
        assert (c.door_known and c.door_open) == (c.door_known and c.state == lock.OPEN)
        if on != level:
            if level:
                runs.append((since, abs_t))
            level, since = on, abs_t
        step = rnd.choice((1, 7, 30, 60, 200, 700, 2500, 9000))
        nd = c.next_deadline(t)
        if not late and nd is not None:
            step = min(step, max(0, ticks.diff(nd, t)))
        abs_t += step
    if level:
        runs.append((since, abs_t))
    return c, runs


@pytest.mark.parametrize("seed", range(300))
def test_random_runs_keep_on_time_and_duty_cycle_within_limits(seed):
    c, runs = _random_run(seed, late=False)
    p, cd = c.pulse_ms, c.cooldown_ms
    for i, (s, e) in enumerate(runs):
        assert e - s <= p <= c.max_on_ms
        if i:
            assert s - runs[i - 1][1] >= cd
        # on-time within any window of pulse + cooldown starting at a run start
        total = 0
        for s2, e2 in runs[i:]:
            total += max(0, min(e2, s + p + cd) - s2)
        assert total <= p


@pytest.mark.parametrize("seed", range(100))
def test_random_runs_with_a_late_shell_never_report_on_past_the_pulse(seed):
    _random_run(seed, late=True)   # the assertions inside check energised() against the start
