# Tick arithmetic wraps at 2**30 like MicroPython's ticks_ms and agrees with plain maths.
import random

import pytest

from parcelbox import ticks


@pytest.mark.parametrize("a,b,d", [(5, 3, 2), (3, 5, -2), (2, 0x3FFFFFFE, 4), (0x3FFFFFFE, 2, -4),
                                   (0, 0x20000000 - 1, -(0x20000000 - 1)), (0x1FFFFFFF, 0, 0x1FFFFFFF)])
def test_diff_is_signed_and_correct_across_the_wrap(a, b, d):
    assert ticks.diff(a, b) == d


def test_add_and_reached_agree_with_unwrapped_time():
    rng = random.Random(7)
    for _ in range(10000):
        t = rng.randrange(ticks.PERIOD)
        delta = rng.randrange(0x20000000)
        dl = ticks.add(t, delta)
        assert dl == (t + delta) % ticks.PERIOD
        assert ticks.diff(dl, t) == delta
        assert ticks.reached(dl, dl) and (delta == 0 or not ticks.reached(t, dl))
