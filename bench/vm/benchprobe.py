# VM side of bench/vmbench.py: mark() has the host record the fuel left at that instant;
# measure(fn, n) marks around n calls of fn with the collector off, and gives the bytes
# they left allocated. The same with `nothing` gives the overhead to subtract.
import gc

import host

_P = '{"args":[]}'
# The bridge's first call allocates more than later ones: spent here, before any mark.
host.call("nop", _P)
host.call("nop", _P)


def mark():
    host.call("mark", _P)


def nothing():
    return 0


# Two marks around n calls of fn(); returns the bytes allocated meanwhile (gc off, so
# nothing is freed behind our back). The host reads the span from the two marks.
def measure(fn, n):
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    mark()
    i = 0
    while i < n:
        fn()
        i += 1
    mark()
    a1 = gc.mem_alloc()
    gc.enable()
    return a1 - a0
