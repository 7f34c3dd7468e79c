"""What a simulated box does, in words, from the Runner's trace records: the LED and buzzer
as the firmware's feedback patterns (one line per pattern: a key press is one click), the
keypad's lockout and its remaining time.

The patterns are the firmware's own (parcelbox.feedback.PATTERNS and NAMES), read here;
the lockout follows the box's throttled events and its rule that a boot restarts the
lockout of the wrong codes in a row in full (parcelbox.throttle, default settings).
"""

from __future__ import annotations

from parcelbox import feedback
from parcelbox.throttle import Throttle

from host_tools.sim.world import LED_NAMES

# each pattern's steps as the circuit records them: (LED name, buzzer Hz)
_STEPS = [[(LED_NAMES[led], hz) for led, hz, _ in feedback.steps(p)]
          for p in range(len(feedback.PATTERNS))]
_REST = ("off", 0)


def _looks(led: str, hz: int) -> str:
    return "LED %s%s" % (led, ", buzzer %d Hz" % hz if hz else "")


class Feedback:
    """Reads the LED and buzzer changes one by one: a pattern's first step names it, its
    later steps and its end are not worth a line of their own."""

    def __init__(self):
        self._steps: list | None = None
        self._i = 0

    def line(self, led: str, hz: int) -> str | None:
        now = (led, hz)
        steps = self._steps
        if steps is not None:
            if now in steps[self._i + 1:]:       # the pattern going on
                self._i = steps.index(now, self._i + 1)
                return None
            if now == _REST:                     # it ended
                self._steps = None
                return None
        for p, steps in enumerate(_STEPS):
            if steps[0] == now:
                self._steps, self._i = steps, 0
                return "feedback %s (%s)" % (feedback.NAMES[p], _looks(led, hz))
        self._steps = None
        return _looks(led, hz)


def lockout_left(records: list[dict], now: int) -> int:
    """Ms the keypad stays locked out at world time `now` (0: not locked), from the trace."""
    until, failures = 0, 0
    for r in records:
        k = r["kind"]
        if k == "event" and r["name"] == "throttled":
            until = r["t"] + r["arg"] * 1000
        elif k == "event" and r["name"] == "wrong_code":
            failures = r["arg"] >> 8
        elif k == "event" and (r["name"] in ("refused", "service") or
                               r["name"] == "opened" and r["arg"] & 0xFF != 5):
            failures = 0                         # a code that was right (not a remote unlock)
        elif k == "applied" and r["op"] == "clear-throttle" and r["status"] == 0:
            until, failures = 0, 0
        elif k == "power" and r["on"]:           # a boot restarts it in full
            until = r["t"] + Throttle().lockout_for(failures)
    return max(0, until - now)
