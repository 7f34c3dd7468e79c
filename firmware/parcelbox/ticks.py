# Millisecond tick arithmetic, wrapping like MicroPython's time.ticks_ms().
# The core never reads a clock: callers pass `now` in; only these helpers compare times.
try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

PERIOD = const(0x40000000)  # ticks_ms wraps at 2**30 on every MicroPython port
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)

# Every intermediate value stays inside MicroPython's 31-bit small-int range
# (inputs are ticks in 0..2**30-1), so none of these allocates on the heap.


# Signed difference a - b, correct across one wrap (|a - b| < 2**29 ms, ~6 days).
def diff(a, b):
    d = (a - b) & _MASK
    if d >= _HALF:
        return d - _HALF - _HALF
    return d


# The tick that lies delta ms after t (0 <= delta < 2**29).
def add(t, delta):
    return (t - _MASK - 1 + delta) & _MASK


# True once `now` has reached `deadline`.
def reached(now, deadline):
    return diff(now, deadline) >= 0
