# Scenario: the ESP32 port's idle waiting on the link's socket (pb_esp32.port), on CPython
# (host_tools/virtual/mpselect.py) and with the MicroPython VM's own select.poll: it returns at
# the first look once data is there, sleeps the whole period otherwise, and allocates 0.
# vm-paths: firmware/esp32 host_tools/virtual
import gc
import sys

from pb_esp32 import port as eport

if sys.implementation.name != "micropython":
    import mpselect
    eport.select = mpselect
    IOBase = object
else:
    from io import IOBase

POLLIN = 1
_MP_STREAM_POLL = 3


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Sock(IOBase):
    # a stream MicroPython's poll asks through ioctl (mpselect through mp_poll)
    def __init__(self):
        self.readable = False
        self.closed = False

    def ioctl(self, req, arg):
        if req != _MP_STREAM_POLL:
            return -1
        return self.mp_poll(arg)

    def mp_poll(self, mask):
        if self.closed:
            return 0x20   # POLLNVAL
        return mask & POLLIN if self.readable else 0


class Conn:
    def __init__(self):
        self.s = Sock()

    def pollable(self):
        return self.s


class Hw:
    scan = door = tamper = solenoid = indicate = feed = failsafe_tripped = None


class Clock:
    def __init__(self):
        self.now = 0
        self.sleeps = 0

    def ticks_ms(self):
        return self.now

    def sleep(self, ms):
        self.sleeps += 1
        self.now += ms


clock = Clock()
port = eport.Port(Hw(), None, None, None, clock.ticks_ms, clock.sleep, None)
c = Conn()
port.idle(10, c)
check(clock.now == 10 and clock.sleeps == 10, "no data: the whole 10 ms, a look each ms")
c.s.readable = True
t = clock.now
port.idle(10, c)
check(clock.now == t, "data: back at the first look")
c2 = Conn()
port.idle(4, c2)
check(clock.now == t + 4, "a new connection: its own socket, quiet")
c.s.closed = True   # the old one, closed: no longer polled (it would answer at once)
port.idle(4, c2)
check(clock.now == t + 8, "the closed socket is not polled")


def cost(n, conn):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(n):
        port.idle(10, conn)
    used = gc.mem_alloc() - a
    gc.enable()
    return used


if hasattr(gc, "mem_alloc"):
    c2.s.readable = False
    port.idle(10, c2)
    quiet = cost(20, c2), cost(40, c2)
    c2.s.readable = True
    ready = cost(20, c2), cost(40, c2)
    print("alloc per idle: quiet %d %d, ready %d %d bytes" % (quiet + ready))
    check(quiet == (0, 0) and ready == (0, 0), "idle allocates nothing")
else:
    print("alloc: gc.mem_alloc unavailable (CPython), skipped")
print("OK port_wait")
