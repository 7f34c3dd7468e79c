# The ESP32 port object the superloop drives (docs/runtime.md section 2): the hardware
# layer, the network, the flash, the clock, randomness and the structured log.
import os
import select
import time

from parcelbox import ticks

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

_LEVELS = {10: "D", 20: "I", 30: "W", 40: "E"}
_SLICE_MS = const(1)    # idle(ms, conn) looks at the connection this often


# One log line per record, "PB <level> <ms> <text>": `parcelbox monitor` decodes it.
# Callers never pass a secret (codes, keys, passwords); see docs/runtime.md section 7.
def logger(clock, out=print):
    def log(level, text):
        out("PB %s %d %s" % (_LEVELS.get(level, "I"), clock(), text))
    return log


class Port:
    # hw: pb_esp32.hw.Hardware; storage: parcelbox.storage.Storage; net: pb_esp32.net.Net
    # (or any net of docs/runtime.md section 4); clock/sleep: ticks_ms and sleep_ms.
    def __init__(self, hw, storage, net, log, clock=None, sleep=None, rand=None):
        self.hw = hw
        self.storage = storage
        self.net = net
        self.log = log
        self.ticks_ms = clock or time.ticks_ms
        self._sleep = sleep or time.sleep_ms
        self.urandom = rand or os.urandom
        self.scan = hw.scan
        self.door = hw.door
        self.tamper = hw.tamper
        self.solenoid = hw.solenoid
        self.indicate = hw.indicate
        self.feed = hw.feed
        self.failsafe_tripped = hw.failsafe_tripped  # optional in a port: bits of cut solenoids
        self._poll = None       # select.poll, made for the first connection
        self._conn = None       # the connection whose socket is registered in it...
        self._polled = None     # ...and that socket (None: it offers none)

    # Sleep ms, or less once conn (the link's connection, or None) has data to read.
    # MicroPython's ESP32 build wakes a waiting poll only at FreeRTOS ticks (100 Hz: lwIP
    # tells the main task nothing), so poll(ms) would return up to 10 ms late and miss the
    # next scan. Instead the socket is looked at (ipoll(0): no allocation) every _SLICE_MS
    # until ms have passed. The sleeps in between cost what one sleep_ms(ms) did: for up
    # to a tick MicroPython's sleep_ms waits busy either way (mphalport.c).
    def idle(self, ms, conn=None):
        if ms <= 0:
            return
        if conn is not None and conn is not self._conn:
            self._watch(conn)
        if conn is None or self._polled is None:
            self._sleep(ms)
            return
        p = self._poll
        end = ticks.add(self.ticks_ms(), ms)
        while True:
            for _ in p.ipoll(0):
                return
            left = ticks.diff(end, self.ticks_ms())
            if left <= 0:
                return
            self._sleep(_SLICE_MS if left > _SLICE_MS else left)

    # Register conn's socket (pb_esp32.net.Conn.pollable) in place of the last one: once
    # per connection, not per sleep (a registration allocates). The TLS socket's poll sees
    # the bytes mbedTLS already holds decrypted (MicroPython 1.28 modtls_mbedtls.c).
    def _watch(self, conn):
        if self._polled is not None:
            self._poll.unregister(self._polled)
        self._conn = conn
        f = getattr(conn, "pollable", None)
        self._polled = s = f() if f is not None else None
        if s is not None:
            if self._poll is None:
                self._poll = select.poll()
            self._poll.register(s, select.POLLIN)

    def reset(self):
        import machine
        self.hw.all_off()
        machine.reset()
