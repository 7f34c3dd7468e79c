# The ESP32 port object the superloop drives (docs/runtime.md section 2): the hardware
# layer, the network, the flash, the clock, randomness and the structured log.
import os
import time

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

_LEVELS = {10: "D", 20: "I", 30: "W", 40: "E"}


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

    def idle(self, ms):
        if ms > 0:
            self._sleep(ms)

    def reset(self):
        import machine
        self.hw.all_off()
        machine.reset()
