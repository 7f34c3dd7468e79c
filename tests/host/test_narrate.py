# What the simulator prints of the box (host_tools/sim/narrate.py): the firmware's feedback
# patterns by name, one line each, and the keypad's lockout from the trace.
from parcelbox import feedback
from parcelbox.throttle import Throttle

from host_tools.sim import narrate


def _play(reader, changes):
    return [x for x in (reader.line(led, hz) for led, hz in changes) if x is not None]


def test_a_key_press_is_one_line_not_the_click_and_its_end():
    r = narrate.Feedback()
    assert _play(r, [("off", 2400), ("off", 0)] * 3) == ["feedback key (LED off, buzzer 2400 Hz)"] * 3


def test_a_pattern_is_named_once_with_its_blinks_and_end_left_out():
    r = narrate.Feedback()
    steps = [(("off", "green", "red", "amber", "blue")[led], hz)
             for led, hz, _ in feedback.steps(feedback.THROTTLED)]
    changes = [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]] + [("off", 0)]
    assert _play(r, changes) == ["feedback throttled (LED amber, buzzer 300 Hz)"]
    # a key cuts a held red short: a new pattern, named
    assert _play(r, [("red", 300), ("red", 0), ("off", 2400)]) == [
        "feedback rejected (LED red, buzzer 300 Hz)", "feedback key (LED off, buzzer 2400 Hz)"]


def test_a_change_that_is_no_pattern_is_shown_as_it_is():
    assert _play(narrate.Feedback(), [("blue", 0)]) == ["LED blue"]


def _ev(t, name, arg=0):
    return {"t": t, "kind": "event", "name": name, "arg": arg}


def test_the_lockout_runs_from_the_throttled_event_and_restarts_in_full_at_a_boot():
    recs = [_ev(1000, "wrong_code", 6 << 8), _ev(1000, "throttled", 30)]
    assert narrate.lockout_left(recs, 11000) == 20000
    assert narrate.lockout_left(recs, 40000) == 0
    recs.append({"t": 50000, "kind": "power", "on": True})     # over, but six in a row remain
    assert narrate.lockout_left(recs, 50000) == Throttle().lockout_for(6) == 30000
    recs.append({"t": 51000, "kind": "applied", "op": "clear-throttle", "status": 0})
    assert narrate.lockout_left(recs, 52000) == 0


def test_a_right_code_ends_the_run_so_a_boot_brings_no_lockout():
    recs = [_ev(1000, "wrong_code", 6 << 8), _ev(1000, "throttled", 30),
            _ev(40000, "opened", 1 | 0 << 8), {"t": 50000, "kind": "power", "on": True}]
    assert narrate.lockout_left(recs, 50000) == 0
