# Scenario: keypad decoding and code entry, on CPython and in the MicroPython VM.
# Also measures that Keypad.update() allocates nothing (MicroPython only: gc.mem_alloc).
import gc

from parcelbox import entry, feedback
from parcelbox.keypad import Keypad, NONE, LAYOUT_4X3, LAYOUT_4X4

MASK = 0x3FFFFFFF
STEP = 5            # ms between scans


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# Frames for one press of key `bit`: chatter, a stable hold, chatter on release, idle.
def press_frames(bit, out):
    for f in (bit, 0, bit, 0, bit):         # bounce: 5 samples, 25 ms, settles down
        out.append(f)
    for _ in range(6):
        out.append(bit)
    for f in (0, bit, 0, bit):              # release bounce
        out.append(f)
    for _ in range(6):
        out.append(0)


# Feed `frames` every STEP ms from t0 (ticks wrap); return accepted keys as bytes.
def feed(kp, frames, t0):
    got = bytearray()
    now = t0
    for f in frames:
        k = kp.update(f, now)
        if k != NONE:
            got.append(k)
        now = (now + STEP) & MASK
    return bytes(got)


# Run the frames `loops` times without allocating; return (bytes allocated, keys seen).
def measure(kp, frames, out, t0, loops):
    n = len(frames)
    seen = 0
    now = t0
    j = 0
    total = loops * n
    a = gc.mem_alloc()
    while j < total:
        i = j % n
        k = kp.update(frames[i], now)
        if k != NONE:
            out[seen % len(out)] = k
            seen += 1
        # now + STEP can exceed the 31-bit small int near the wrap: step without overflow.
        if now > MASK - STEP:
            now = now - (MASK - STEP + 1)
        else:
            now = now + STEP
        j += 1
    b = gc.mem_alloc()
    return b - a, seen


def scenario_layouts():
    for rows, cols, layout in ((4, 3, LAYOUT_4X3), (4, 4, LAYOUT_4X4)):
        kp = Keypad(rows, cols, layout)
        frames = []
        for r in range(rows):
            for c in range(cols):
                press_frames(kp.bit_at(r, c), frames)
        # Start just before the tick wrap so it happens mid-sequence.
        got = feed(kp, frames, MASK - 300)
        check(got == layout, "every key decodes %r" % (got,))
        print("layout %dx%d: %d keys ok across wrap" % (rows, cols, len(got)))


def scenario_ghost():
    kp = Keypad(4, 3, LAYOUT_4X3)
    one, two, five = kp.bit(ord("1")), kp.bit(ord("2")), kp.bit(ord("5"))
    frames = [one | two] * 8 + [two] * 8 + [0] * 8 + [five] * 8 + [0] * 8
    got = feed(kp, frames, MASK - 60)
    check(got == b"5", "multi-press rejected, then 5 accepted: %r" % (got,))
    check(kp.rejected == 1, "one rejection counted")
    print("ghost: rejected %d, then accepted 1 key" % kp.rejected)


def scenario_entry():
    kp = Keypad(4, 4, LAYOUT_4X4)
    en = entry.CodeEntry(6, True, 10000)
    results = []
    frames = []
    for ch in b"12*A481516":
        press_frames(kp.bit(ch), frames)
    now = MASK - 500
    for f in frames:
        k = kp.update(f, now)
        if k != NONE:
            results.append(en.key(k, now))
        now = (now + STEP) & MASK
    want = [entry.DIGIT, entry.DIGIT, entry.CLEARED, entry.NONE] + [entry.DIGIT] * 5
    want.append(entry.SUBMIT)
    check(results == want, "entry outcomes %r" % (results,))
    check(en.code() == b"481516", "submitted code")
    en.clear()
    check(en.key(ord("*"), now) == entry.CANCEL, "star on empty cancels")
    # Partial entry, then silence past the timeout (across the wrap).
    en.key(ord("9"), MASK - 100)
    check(en.tick((MASK - 100 + 10000) & MASK) == entry.NONE, "not yet")
    check(en.tick((MASK - 100 + 10001) & MASK) == entry.TIMEOUT, "timed out")
    check(en.count == 0, "timeout discards")
    short = entry.CodeEntry(4, False, 5000)
    check([short.key(c, 0) for c in b"12#"][-1] == entry.SHORT, "short")
    check([short.key(c, 0) for c in b"12345"][-1] == entry.OVERFLOW, "overflow")
    print("entry: clear, ignore, submit, cancel, timeout, short, overflow ok")


def scenario_feedback():
    # The outcome of a submitted code is shown by the Player; check one pattern's steps.
    p = feedback.Player()
    p.start(feedback.ACCEPTED, MASK - 100)
    check(p.led(MASK - 100) == feedback.LED_GREEN and p.hz(MASK - 100) == 800, "green tone")
    check(p.next_deadline() == 49, "first step 150 ms, ends after the wrap")
    check(p.hz(49) == 1800, "second, higher tone after the wrap")
    check(not p.done(1898) and p.done(1899), "ends 2000 ms after its start")
    print("feedback: accepted pattern plays across wrap")


def scenario_no_allocation():
    kp = Keypad(4, 4, LAYOUT_4X4)
    frames = []
    for ch in LAYOUT_4X4:
        press_frames(kp.bit(ch), frames)
    frames.append(kp.bit(ord("1")) | kp.bit(ord("2")))   # a ghost frame, rejected
    out = bytearray(64)
    if not hasattr(gc, "mem_alloc"):
        print("alloc: gc.mem_alloc unavailable (CPython), skipped")
        return
    gc.collect()
    gc.disable()
    try:
        # 1000+ updates starting near the tick wrap, with chatter and every key.
        used, seen = measure(kp, frames, out, MASK - 1000, 3)
    finally:
        gc.enable()
    check(seen >= 16, "keys accepted while measuring: %d" % seen)
    print("alloc: %d updates, %d keys, %d bytes" % (3 * len(frames), seen, used))
    check(used == 0, "Keypad.update allocated %d bytes" % used)


scenario_layouts()
scenario_ghost()
scenario_entry()
scenario_feedback()
scenario_no_allocation()
print("OK keypad")
