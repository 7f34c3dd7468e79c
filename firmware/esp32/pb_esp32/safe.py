# Safe mode (docs/runtime.md section 6): '*' held while the box powers up and then let
# go, or a file safe_mode on the flash, and main.py skips the application: the REPL stays free.
try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

HOLD_MS = const(600)      # '*' must read pressed this long, from the start...
RELEASE_MS = const(5000)  # ...and then come up within this: a key that never does is stuck
FLAG = "safe_mode"
ACTIVE = False


# Decide once, at boot. Nothing here may raise: on the ESP32 an exception in boot.py
# keeps main.py from running at all. Any problem reading the board or the keypad
# (missing, damaged) is not safe mode by itself: main.py reports it on the LED and the
# REPL stays reachable anyway. A '*' jammed down is not a technician: the box boots.
def check(storage, clock, sleep, hw_factory=None, out=print):
    global ACTIVE
    ACTIVE = False
    try:
        if storage.size(FLAG) >= 0:
            ACTIVE = True
            return ACTIVE
        from parcelbox import devconf, ticks
        board = devconf.load_board(storage)
        if hw_factory is None:
            from pb_esp32.hw import Hardware as hw_factory
        hw = hw_factory(board)
        star = 1 << board["keypad"]["layout"].index("*")
        t0 = clock()
        while ticks.diff(clock(), t0) < HOLD_MS:
            if hw.scan() != star:
                hw.all_off()
                return ACTIVE
            sleep(20)
        hw.indicate(4, 0)  # blue: the technician may let go
        t0 = clock()
        while ticks.diff(clock(), t0) < RELEASE_MS:
            if hw.scan() == 0:
                ACTIVE = True
                return ACTIVE
            sleep(20)
        hw.all_off()
        out("PB W 0 safe mode: '*' still held after %d s, taken for a stuck key" % (RELEASE_MS // 1000))
    except Exception:  # noqa: BLE001 - any failure here means: boot normally
        pass
    return ACTIVE
