# Scenario: the ESP32 hardware layer (pb_esp32.hw) on the fake machine module, on
# CPython and in the MicroPython VM: every key through the circuit and the core's
# debounce, the failsafe, and a keypad scan that allocates 0 bytes (gc.mem_alloc).
# vm-paths: firmware/esp32 host_tools/virtual
import gc

import fakeboards
from parcelbox.keypad import NONE, Keypad
from pb_esp32.hw import Hardware

STEP = 5    # ms between scans, as the superloop's 10 ms at most


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# Press and release every key (with contact bounce), scanning every STEP ms through the
# Keypad decoder; return the keys it accepted.
def type_every_key(wired, hw, kp):
    w = wired.world
    got = bytearray()
    for ch in wired.board["keypad"]["layout"]:
        wired.keys.press(ch)
        for _ in range(12):
            k = kp.update(hw.scan(), w.ticks_ms())
            if k != NONE:
                got.append(k)
            w.advance(STEP)
        wired.keys.release(ch)
        for _ in range(12):
            k = kp.update(hw.scan(), w.ticks_ms())
            if k != NONE:
                got.append(k)
            w.advance(STEP)
    return bytes(got)


def scenario_every_key():
    for board in fakeboards.BOARDS:
        wired = fakeboards.Wired(board, bounce_ms=8, t0=0x3FFFFFFF - 700)   # wraps mid-way
        hw = Hardware(board)
        kp = Keypad(len(board["keypad"]["rows"]), len(board["keypad"]["cols"]),
                    board["keypad"]["layout"].encode())
        got = type_every_key(wired, hw, kp)
        check(got == board["keypad"]["layout"].encode(), "%s: keys %r" % (board["name"], got))
        check(wired.world.shorts == 0, "no row driven against another")
        print("%s: %d keys through bounce and debounce" % (board["name"], len(got)))


def scenario_failsafe():
    board = fakeboards.S3_4X4
    wired = fakeboards.Wired(board)
    hw = Hardware(board)
    hw.solenoid(3, True)
    wired.world.advance(1999)
    check(wired.energised(3), "on until max_on_ms")
    wired.world.advance(1)          # the loop is stuck: nobody calls solenoid() again
    check(not wired.energised(3), "cut by the failsafe timer")
    check(hw.failsafe_tripped() == 4, "compartment 3 tripped")
    print("failsafe: solenoid cut after %d ms without the loop" % board["max_on_ms"])


# n scans 1 ms apart (the world's clock stepped directly: no timer is armed), so every
# scan re-reads the contacts, bouncing ones included, and the ticks cross the wrap.
def measure_scans(hw, kp, w, n):
    seen = 0
    i = 0
    a = gc.mem_alloc()
    while i < n:
        k = kp.update(hw.scan(), w.ticks_ms())
        if k != NONE:
            seen += 1
        w.now += 1
        i += 1
    return gc.mem_alloc() - a, seen


def scenario_no_allocation():
    if not hasattr(gc, "mem_alloc"):
        print("alloc: gc.mem_alloc unavailable (CPython), skipped")
        return
    for board in fakeboards.BOARDS:
        wired = fakeboards.Wired(board, bounce_ms=8, t0=0x3FFFFFFF - 2500)
        hw = Hardware(board)
        kp = Keypad(len(board["keypad"]["rows"]), len(board["keypad"]["cols"]),
                    board["keypad"]["layout"].encode())
        layout = board["keypad"]["layout"]
        cols = len(board["keypad"]["cols"])
        # 1000 scans each: the idle pad, a key pressed (bouncing, then held and accepted),
        # a key released, three keys of a rectangle and the ghost they make (rejected).
        total = 0
        accepted = 0
        for keys in ((), (layout[4],), (), (layout[0], layout[1], layout[cols])):
            wired.keys.release_all()
            for ch in keys:
                wired.keys.press(ch)
            measure_scans(hw, kp, wired.world, 5)      # warm up (first calls cache lookups)
            gc.collect()
            gc.disable()
            try:
                used, seen = measure_scans(hw, kp, wired.world, 1000)
            finally:
                gc.enable()
            check(used == 0, "%s: scan allocated %d bytes with %r held" % (board["name"], used, keys))
            total += used
            accepted += seen
        check(accepted == 1 and kp.rejected == 1, "one key accepted, the ghost rejected")
        check(wired.world.ticks_ms() < 2000, "the ticks wrapped while measuring")
        print("alloc: %s scan + decode, 4000 scans across the tick wrap, %d bytes" % (board["name"], total))


scenario_every_key()
scenario_failsafe()
scenario_no_allocation()
print("OK esp32_hw")
