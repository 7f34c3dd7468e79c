# What every port's boot shares (docs/runtime.md section 6): the error blinks of a bad
# configuration, and crash reports saved before a reset and reported after the next boot.
import sys

from parcelbox import events

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

CRASH = "crash.txt"        # the last crash's report, until the next boot reports it
CRASH_LAST = "crash.last"  # kept for `parcelbox doctor`
_RED = const(2)            # feedback.LED_RED


# Blink red `why` times, pause, forever (or `rounds` times): the LED says what is wrong.
# indicate(led, hz) and idle(ms) are the port's; Ctrl-C from mpremote ends it.
def error_loop(indicate, idle, why, rounds=-1):
    while rounds != 0:
        rounds -= 1
        for _ in range(why):
            indicate(_RED, 0)
            idle(200)
            indicate(0, 0)
            idle(300)
        idle(1500)


# Save the traceback (MicroPython; type and message on CPython) for the next boot. Best
# effort: with no flash or no memory the reset that follows matters more.
def save(storage, e):
    try:
        import io
        buf = io.StringIO()
        if hasattr(sys, "print_exception"):
            sys.print_exception(e, buf)
        else:
            buf.write("%s: %s\n" % (e.__class__.__name__, e))
        storage.replace(CRASH, buf.getvalue().encode())
    except Exception:  # noqa: BLE001
        pass


# A crash saved before the last reset becomes a `crash` event (code_id: reset cause,
# arg: CRC-32 of the report); the report moves to CRASH_LAST.
def report(box, storage, cause, now):
    from binascii import crc32
    data = storage.read(CRASH)
    if data is None:
        return
    box.event(events.CRASH, 0, cause, crc32(data) & 0xFFFFFFFF, now)
    storage.replace(CRASH_LAST, data)
    storage.remove(CRASH)
