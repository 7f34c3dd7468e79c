# The one wait of the tests and benchmarks: poll until a condition holds, never a sleep that
# guesses how long something takes. A timeout fails with what was awaited, and a diagnosis.
import time


def wait_for(cond, timeout=15.0, what="condition", diag=None, every=0.02, step=None,
             error=AssertionError):
    """cond()'s first true value. step(), if given, runs before each look (to drive a loop
    that makes progress only when called); diag() adds to the timeout's message."""
    end = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise error("timed out waiting for " + what + ("; " + diag() if diag else ""))
        if every:
            time.sleep(every)
