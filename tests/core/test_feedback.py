# Tests for parcelbox.feedback: pattern table shape and distinguishability, and the
# Player's step timing (exact boundaries, late polling, wrap, restart).
import pytest

from parcelbox import feedback as fb
from parcelbox.feedback import Player, PATTERNS

WRAP = 1 << 30
LEDS = (fb.LED_OFF, fb.LED_GREEN, fb.LED_RED, fb.LED_AMBER, fb.LED_BLUE)
ALL = (fb.KEY, fb.ACCEPTED, fb.REJECTED, fb.THROTTLED, fb.BUSY, fb.ERROR, fb.CLEARED,
       fb.SERVICE)


def test_every_pattern_constant_indexes_a_pattern_of_valid_steps():
    assert sorted(ALL) == list(range(len(PATTERNS))) == list(range(len(fb.NAMES)))
    for p in ALL:
        assert fb.steps(p)
        for led, hz, ms in fb.steps(p):
            assert led in LEDS
            assert hz == 0 or 100 <= hz <= 5000
            assert 0 < ms <= 2000


def test_patterns_are_distinguishable_by_light_alone_and_by_sound_alone():
    lights = set(tuple(s[0] for s in fb.steps(p)) for p in ALL if p != fb.KEY)
    sounds = set(tuple(s[1] for s in fb.steps(p)) for p in ALL)
    assert len(lights) == len(ALL) - 1
    assert len(sounds) == len(ALL)


def test_outcome_colours_match_their_meaning():
    def colours(p):
        return set(s[0] for s in fb.steps(p)) - {fb.LED_OFF}
    assert colours(fb.ACCEPTED) == {fb.LED_GREEN}
    assert colours(fb.REJECTED) == colours(fb.ERROR) == {fb.LED_RED}
    assert colours(fb.THROTTLED) == colours(fb.BUSY) == {fb.LED_AMBER}
    assert colours(fb.SERVICE) == {fb.LED_BLUE}
    tones = [s[1] for s in fb.steps(fb.ACCEPTED) if s[1]]
    assert tones == sorted(tones) and len(tones) == 2          # rising two-tone
    assert [s[1] for s in fb.steps(fb.THROTTLED) if s[1]] == [300] * 3


def test_player_steps_change_exactly_at_their_boundaries():
    p = Player()
    p.start(fb.ACCEPTED, 1000)
    assert (p.led(1000), p.hz(1000)) == (fb.LED_GREEN, 800)
    assert p.next_deadline() == 1150
    assert p.hz(1149) == 800
    assert p.hz(1150) == 1800
    assert p.next_deadline() == 1350
    assert p.hz(1350) == 0 and p.led(1350) == fb.LED_GREEN
    assert not p.done(2999)
    assert p.done(3000)
    assert (p.led(3000), p.hz(3000)) == (fb.LED_OFF, 0)
    assert p.next_deadline() is None
    assert p.pattern == -1


def test_late_poll_skips_finished_steps_without_drift():
    p = Player()
    p.start(fb.THROTTLED, 0)
    # 3rd step (second beep) spans 240..360; poll once, late, at 300.
    assert p.led(300) == fb.LED_AMBER and p.hz(300) == 300
    assert p.next_deadline() == 360
    assert p.done(fb.duration(fb.THROTTLED) + 5000)


def test_player_runs_across_tick_wrap():
    p = Player()
    p.start(fb.REJECTED, WRAP - 100)
    assert p.hz(WRAP - 1) == 300
    assert p.next_deadline() == 700
    assert p.hz(700) == 0 and p.led(700) == fb.LED_RED
    assert p.done(1400)


def test_new_start_cuts_current_pattern():
    p = Player()
    p.start(fb.REJECTED, 0)
    p.start(fb.KEY, 10)
    assert p.pattern == fb.KEY
    assert p.hz(10) == 2400
    assert p.done(40)


def test_idle_player_is_dark_and_silent():
    p = Player()
    assert p.done(0) and p.led(0) == fb.LED_OFF and p.hz(0) == 0
    assert p.next_deadline() is None
    p.start(fb.ERROR, 0)
    p.stop()
    assert p.done(1) and p.led(1) == fb.LED_OFF


@pytest.mark.parametrize("bad", [-1, len(PATTERNS), "key", None])
def test_unknown_pattern_raises(bad):
    with pytest.raises(ValueError):
        Player().start(bad, 0)


def test_next_deadline_given_now_never_returns_a_finished_step():
    p = Player()
    p.start(fb.ACCEPTED, 1000)
    assert p.next_deadline(1000) == 1150
    assert p.next_deadline(1200) == 1350  # the first step ended at 1150
    assert p.next_deadline(5000) is None
