# VM side of bench/bench_modules.py: the heap each firmware module costs, one module at a
# time in an order where its imports came first (modorder.py). Mode "mpy": an import of
# its .mpy file (bytecode, qstrs and objects). Mode "frozen": its source compiled and the
# code kept (standing for the image in flash), then the module body run from that code
# into an empty module (the module, class and function objects a frozen image makes).
import gc
import sys

import machine  # noqa: F401  the fakes first: their cost is not the firmware's
import network  # noqa: F401
import ntptime  # noqa: F401
import select  # noqa: F401
import socket  # noqa: F401

import modorder


def free():
    gc.collect()
    gc.collect()
    return gc.mem_free()


if modorder.MODE == "mpy":
    for name in modorder.ORDER:
        f = free()
        __import__(name)
        print("mpy %s=%d" % (name, f - free()))
else:
    rom = []
    for name, path in modorder.PATHS:
        h = open(path)
        src = h.read()
        h.close()
        rom.append(compile(src, path, "exec"))
        src = None
    for i in range(len(rom)):
        name = modorder.PATHS[i][0]
        f = free()
        __import__(name)                 # the empty stub: a module object to run it in
        exec(rom[i], sys.modules[name].__dict__)
        print("obj %s=%d" % (name, f - free()))
print("OK modules")
