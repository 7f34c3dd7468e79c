# The whole box core with 1,000 codes on flash: driver deposit, recipient pickup,
# throttle, and recovery from a power cut, on CPython and in the VM.
# vm-heap: 136K
# Why not 96K: loaded from .py or .mpy, the firmware's bytecode takes ~40 KB of heap
# and 1,000 codes 36 KB more; frozen into the image (firmware/manifest.py) the bytecode
# takes none. The store alone holds 1,000 codes at 96K (scn_codestore), and the demo
# runs these flows at 96K with the default 256-code store.
import gc
import struct
import sys

from parcelbox import events, feedback
from parcelbox.box import Box
from parcelbox.storage import Storage

if sys.implementation.name == "micropython":   # the VM: the /flash folder it is given
    ROOT = "/flash"
else:  # CPython: a temporary folder (a /flash on the host is not this test's)
    import tempfile
    ROOT = tempfile.mkdtemp()

KEY = b"k" * 32
T0 = 1795600000
N = 1000
SEEN = []


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def free():
    gc.collect()
    return gc.mem_free() if hasattr(gc, "mem_free") else -1


def on_event(seq, kind, comp, code_id, arg, t):
    SEEN.append(kind)
    if len(SEEN) > 16:
        SEEN.pop(0)


def code_of(i):
    return b"%08d" % (10000000 + i * 7)


# Codes 1..N: mostly recipients; code 1 the owner PIN, code 2 a driver's deposit code.
# The backend sends digests, so the box computes none during a sync; only the codes
# this scenario types get real digests, the rest unique stand-ins (cheap to make).
TYPED = (1, 2, 500)


def records(box):
    for i in range(1, N + 1):
        role = 3 if i == 1 else (2 if i == 2 else 1)
        uses = 0xFFFF if i == 1 else 1
        d = box.codes.digest(code_of(i)) if i in TYPED else struct.pack("<IIII", i * 2654435761 & 0xFFFFFFFF, i, ~i & 0xFFFF, 0x5A5A5A5A)
        yield (i, d, role, 0 if i == 2 else 1, uses, 0, T0 + 86400)
        if i % 16 == 0:
            gc.collect()  # a safe point, as a superloop would take one between messages


class Rig:
    def __init__(self):
        self.now = 0
        self.boot()

    def boot(self):
        # A bank with 1,000 active codes uses 8-digit codes (docs/throttle.md).
        self.box = Box(Storage(ROOT), KEY, {"code_len": 8, "max_codes": N}, self.now, on_event)
        self.box.set_time(T0, self.now)
        self.door(False)

    def advance(self, ms):
        end = self.now + ms
        while self.now < end:
            self.now += 10
            self.box.tick(self.now)

    def type(self, code):
        for ch in code:
            self.box.key(ch, self.now)
            self.now += 120
            self.box.tick(self.now)
        return self.box.player.take()

    def door(self, is_open):
        for _ in range(2):
            self.box.door(1, is_open, self.now)
            self.advance(100)


# Each phase is a function: a module-level expression such as `rig.box.solenoid(...)`
# would leave the Box in a slot of the module's frame, which the collector scans
# conservatively, and the power cut below must really free the first Box.
def sync(rig):
    before = free()
    rig.box.codes.replace_all(records(rig.box), N)
    after = free()
    check(rig.box.codes.count() == N, "1,000 codes stored")
    print("heap free before/after 1,000 codes:", before, after)


def deposit_and_pickup(rig):
    check(rig.type(code_of(2)) == feedback.ACCEPTED, "deposit code accepted")
    check(rig.box.solenoid(1, rig.now), "solenoid fires")
    rig.door(True)
    rig.door(False)
    check(SEEN[-1] == events.DEPOSIT and rig.box.occupied == 1, "deposit recorded")
    rig.advance(4000)
    # Recipient 500 picks up.
    check(rig.type(code_of(500)) == feedback.ACCEPTED, "one-time code accepted")
    rig.door(True)
    rig.door(False)
    check(SEEN[-1] == events.PICKUP and rig.box.occupied == 0, "pickup recorded")
    rig.advance(4000)
    check(rig.type(code_of(500)) == feedback.REJECTED, "one-time code works once")


# An attacker is throttled; the owner PIN is not even checked meanwhile.
def attack(rig):
    for _ in range(5):
        rig.type(b"99999999")
    check(rig.box.player.take() == -1 and SEEN[-1] == events.THROTTLED, "throttled")
    check(rig.type(code_of(1)) == feedback.THROTTLED, "owner PIN refused while throttled")


# Power cut: everything comes back from flash, the lockout included.
def power_cut(rig):
    # A real power cut wipes RAM. Here one VM goes on, and its conservative collector
    # may still see a stale word pointing at the old Box, so its buffers are let go.
    rig.box.codes = rig.box.outbox = None
    rig.box = None
    print("heap free with the box gone:", free())
    rig.now = 0
    rig.boot()
    check(rig.box.codes.count() == N, "codes survive the power cut")
    check(rig.type(code_of(1)) == feedback.THROTTLED, "throttle survives the power cut")
    rig.advance(31000)
    check(rig.type(code_of(1)) == feedback.ACCEPTED, "owner opens after the lockout")
    slot = rig.box.codes.find(code_of(500))
    check(rig.box.codes.fields(slot)[3] == 0, "the used code stays used after the power cut")
    print("events pending:", rig.box.outbox.pending(), "heap free at end:", free())


# The superloop's scan path through the Box: frames with no new key allocate nothing.
def scan_allocates_nothing(rig):
    if not hasattr(gc, "mem_alloc"):
        return
    box = rig.box
    bit = box.keypad.bit(0x35)  # '5'
    box.keypad_frame(bit, rig.now)
    box.keypad_frame(bit, rig.now + 30)  # accepted once; held from here on
    box.entry.clear()
    gc.collect()
    gc.disable()
    t = rig.now + 60
    a = gc.mem_alloc()
    for i in range(300):
        box.keypad_frame(bit, t)  # held: no repeat
        box.keypad_frame(0, t + 1)  # bounce, shorter than the debounce
        box.keypad_frame(bit, t + 2)
        t += 5
    used = gc.mem_alloc() - a
    gc.enable()
    box.keypad_frame(0, t)
    box.keypad_frame(0, t + 50)
    rig.now = t + 100
    box.entry.clear()
    print("bytes allocated by 900 scan frames through the Box:", used)
    check(used == 0, "the scan path allocates")


def main():
    rig = Rig()
    scan_allocates_nothing(rig)
    sync(rig)
    deposit_and_pickup(rig)
    attack(rig)
    power_cut(rig)


main()
print("OK box_flows")
