# Safe mode (docs/runtime.md section 6): '*' held while the box powers up, or a file
# safe_mode on the flash, and main.py skips the application: the REPL stays free.
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

HOLD_MS = const(600)    # '*' must read pressed this long, from the start
FLAG = "safe_mode"
ACTIVE = False


# Decide once, at boot. Any problem reading the board (missing, damaged) is not safe
# mode by itself: main.py reports it on the LED and the REPL stays reachable anyway.
def check(storage, clock, sleep, hw_factory=None):
    global ACTIVE
    if storage.size(FLAG) >= 0:
        ACTIVE = True
        return ACTIVE
    try:
        from parcelbox import devconf
        board = devconf.load_board(storage)
        if hw_factory is None:
            from pb_esp32.hw import Hardware as hw_factory
        hw = hw_factory(board)
    except Exception:  # noqa: BLE001 - any failure here means: boot normally
        return False
    star = 1 << board["keypad"]["layout"].index("*")
    t0 = clock()
    held = True
    while held and clock() - t0 < HOLD_MS:
        held = hw.scan() == star
        sleep(20)
    ACTIVE = held
    if held:
        hw.indicate(4, 0)  # blue: technician
    else:
        hw.all_off()
    return ACTIVE
