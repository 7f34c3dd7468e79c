# What every port's boot shares (docs/runtime.md section 6): the error blinks of a bad
# configuration, and crash reports saved before a reset and reported after the next boot.
import sys

from parcelbox import events, ticks

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

CRASH = "crash.txt"        # the last crash's report, until the next boot reports it
CRASH_LAST = "crash.last"  # kept for `parcelbox doctor`
CRASH_COUNT = "crash.n"    # crashes in a row, each within STABLE_MS of its boot
_RED = const(2)            # feedback.LED_RED
STABLE_MS = const(600000)  # a crash after 10 min of uptime starts a new count
LOOP_AFTER = const(3)      # from the third crash in a row the boot waits first,
FIRST_WAIT_MS = const(10000)   # 10 s, doubling with every further crash,
MAX_WAIT_MS = const(300000)    # up to 5 min
CRASH_LOOP = const(6)      # red blinks while it waits
_ROUND_MS = const(4500)    # one round of error_loop(CRASH_LOOP): 6 x 500 + 1500
_ERROR = const(40)         # app.ERROR (crash is imported before app)
RETRY_MS = const(10000)    # a boot that failed after its configuration: reset after this


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


# Save the traceback (MicroPython; type and message on CPython) for the next boot, and
# count it: up_ms is the uptime at the crash (-1: unknown, a count of its own). Best
# effort: with no flash or no memory the reset that follows matters more.
def save(storage, e, up_ms=-1):
    try:
        import io
        buf = io.StringIO()
        if hasattr(sys, "print_exception"):
            sys.print_exception(e, buf)
        else:
            buf.write("%s: %s\n" % (e.__class__.__name__, e))
        storage.replace(CRASH, buf.getvalue().encode())
        n = _count(storage) + 1 if 0 <= up_ms < STABLE_MS else 1
        storage.replace(CRASH_COUNT, str(min(n, 99)).encode())
    except Exception:  # noqa: BLE001
        pass


def _count(storage):
    try:
        return int(storage.read(CRASH_COUNT) or b"0")
    except ValueError:
        return 0


# At boot, before the App: how long a crash loop waits (0: no loop). The third crash in
# a row within STABLE_MS of its boot waits 10 s, the next 20 s, ... up to 5 min, so a
# box that crashes at every start neither wears its flash nor floods the outbox with
# crash events. A boot that follows no crash (a power cut, the watchdog) ends the count.
def wait_ms(storage):
    if storage.read(CRASH) is None:
        storage.remove(CRASH_COUNT)
        return 0
    n = _count(storage)
    if n < LOOP_AFTER:
        return 0
    return min(FIRST_WAIT_MS << min(n - LOOP_AFTER, 5), MAX_WAIT_MS)


# The wait itself: every output off already, CRASH_LOOP red blinks over and over for
# about `ms` (the watchdog is not armed yet); Ctrl-C from mpremote ends it.
def pause(indicate, idle, ms):
    error_loop(indicate, idle, CRASH_LOOP, ms // _ROUND_MS + 1)


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


# The loop, as every port runs it: a crash turns every output off, saves its report
# (with the uptime, for the crash-loop count), logs one line and resets; reset() does
# not return on a device. app.boot_ms: the tick the boot began.
def run(app, all_off, reset, loops=-1):
    port = app.port
    try:
        app.run(loops)
    except Exception as e:  # noqa: BLE001 - a crash: reported at the next boot
        all_off()
        save(port.storage, e, ticks.diff(port.ticks_ms(), app.boot_ms))
        port.log(_ERROR, "crash: %s; restarting" % e.__class__.__name__)
        reset()


# A boot that failed between a good configuration and the loop (a flash error, no memory,
# the Wi-Fi driver) is a crash all the same: outputs off, saved, one line, then a pause
# (no reset storm on the flash, time for Ctrl-C; never idle at the REPL with no watchdog)
# and a reset. pause(ms) is the port's sleep; reset() does not return on a device.
def boot_failed(storage, e, up_ms, all_off, log, pause, reset):
    all_off()
    save(storage, e, up_ms)
    log(_ERROR, "boot failed: %s; restarting in %d s" % (e.__class__.__name__, RETRY_MS // 1000))
    pause(RETRY_MS)
    reset()
