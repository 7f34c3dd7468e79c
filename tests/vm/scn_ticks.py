# Tick helpers in the VM: right answers across the 2**30 wrap, and no heap allocation.
import gc

from parcelbox import ticks


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


check(ticks.diff(2, 0x3FFFFFFE) == 4, "diff across wrap")
check(ticks.add(0x3FFFFFFE, 5) == 3, "add across wrap")
check(ticks.reached(3, 0x3FFFFFFE), "reached across wrap")


# Inside a function: locals live on the stack, so only the helpers could allocate.
def measure(n):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    t = 0x3FFFFF00
    for i in range(n):
        ticks.diff(t, 5)
        ticks.add(t, 0x1FFFFFFF)
        ticks.reached(t, 0x3FFFFFFF)
        t = (t + 1) & 0x3FFFFFFF
    used = gc.mem_alloc() - before
    gc.enable()
    return used


if hasattr(gc, "mem_alloc"):
    # Any fixed cost of measuring shows in both runs; only a per-call cost grows.
    used = measure(1000) - measure(500)
    print("bytes allocated per extra 1500 tick operations near the wrap:", used)
    check(used == 0, "tick helpers allocate")
print("OK ticks")
