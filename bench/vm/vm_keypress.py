# VM side of bench/bench_keypress.py: a one-door box with N codes on /flash; a driver
# types an 8-digit deposit code through the keypad decoder, scan frame by scan frame,
# and the span from the final key's accepting sample to the solenoid command is marked.
# N and CASE come from a generated `benchcfg` module (bench/bench_keypress.py).
import gc
import struct
from hashlib import sha256

import benchcfg
from benchprobe import mark
from parcelbox import feedback
from parcelbox.box import Box
from parcelbox.storage import Storage

N = benchcfg.N
KEY = b"k" * 32
T0 = 1795600000
CODE = b"24681357"
SCAN_MS = 10      # the superloop scans the pad every 10 ms; debounce is 20 ms


def records(box):
    # Stand-in digests for codes nobody types (the backend sends digests; the box computes
    # none during a sync), the real keyed digest for the typed one, which sits last.
    for i in range(1, N + 1):
        if i == N:
            d = box.codes.digest(CODE)
        else:
            d = sha256(struct.pack("<I", i)).digest()[:16]  # uniform, like keyed digests
        yield (i, d, 2, 1, 5, 0, T0 + 86400)
        if i % 64 == 0:
            gc.collect()


class Rig:
    def __init__(self):
        self.now = 0
        self.box = Box(Storage("/flash"), KEY, {"code_len": 8, "max_codes": max(N, 16)},
                       self.now)
        self.box.set_time(T0, self.now)
        for _ in range(2):
            self.box.door(1, False, self.now)
            self.idle(100)
        self.box.codes.replace_all(records(self.box), N)
        gc.collect()

    def idle(self, ms):
        end = self.now + ms
        while self.now < end:
            self.now += SCAN_MS
            self.box.keypad_frame(0, self.now)
            self.box.tick(self.now)

    # Press key ch for 60 ms and release it; for the last one, stop before the sample
    # that the decoder accepts and return its frame.
    def press(self, ch, last=False):
        bit = self.box.keypad.bit(ch)
        t_end = self.now + 60
        while self.now < t_end:
            self.now += SCAN_MS
            if last and self.box.keypad._raw == bit and \
                    self.now - self.box.keypad._since >= self.box.keypad.debounce_ms:
                return bit
            self.box.keypad_frame(bit, self.now)
            self.box.tick(self.now)
        self.idle(60)
        return 0


def attempt(rig, code):
    for ch in code[:-1]:
        rig.press(ch)
    bit = rig.press(code[-1], True)
    box = rig.box
    now = rig.now
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    mark()
    box.keypad_frame(bit, now)
    on = box.solenoid(1, now)
    mark()
    a1 = gc.mem_alloc()
    gc.enable()
    return on, a1 - a0


def overhead():
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    mark()
    mark()
    a1 = gc.mem_alloc()
    gc.enable()
    return a1 - a0


def main():
    rig = Rig()
    a_zero = overhead()
    if benchcfg.CASE == "warm":
        # a wrong code first, in the same minute: the box's count of active codes (for the
        # throttle) is then cached, as for any attempt after another within the minute
        attempt(rig, b"99999999")
        rig.idle(1000)
    on, a = attempt(rig, CODE)
    if not on or rig.box.player.take() != feedback.ACCEPTED:
        raise AssertionError("the deposit code did not unlock")
    print("alloc=%d" % (a - a_zero))
    # What the throttle's count of active codes costs, off the keypress path: one tick's
    # slice (32 codes) and the whole store.
    wall = rig.box.wall(rig.now)
    codes = rig.box.codes
    gc.collect()
    gc.disable()
    mark()
    codes.active_count(wall, 0, 32)
    mark()
    codes.active_count(wall)
    mark()
    gc.enable()
    print("codes=%d" % rig.box.codes.count())


main()
