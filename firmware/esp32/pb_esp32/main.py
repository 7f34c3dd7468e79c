# Boot to the superloop (docs/runtime.md section 6): configuration checked with its
# error on the LED, the last crash reported, the watchdog armed, a crash logged and reset.
from parcelbox import crash, devconf, ticks
from parcelbox.app import App, ERROR, INFO, WARNING
from parcelbox.storage import Storage

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

# The watchdog's timeout. Long enough for the one call that blocks, a DNS lookup (lwIP
# waits seconds per server that does not answer; addresses are cached, so it is rare),
# short enough that a hung box is back in well under a minute. No network call ever
# runs while a solenoid is on, and each solenoid has its own failsafe timer.
WDT_MS = const(20000)
RETRY_MS = crash.RETRY_MS  # a boot that failed after its configuration: reset after this
CRASH = crash.CRASH
CRASH_LAST = crash.CRASH_LAST


def _machine_reset():
    import machine
    machine.reset()


# Everything after boot.py up to the loop: (app, hw), or (None, why) when the board or
# the configuration is bad (then the LED has said so). The keyword arguments let tests
# and the simulator lend the hardware, the network and the clock; on the ESP32 the
# defaults are the real ones.
def boot(root="/", hw_factory=None, net=None, clock=None, sleep=None, reset_cause=None,
         out=print, blink_rounds=-1, reset=None):
    import time
    from pb_esp32.port import Port, logger
    clock = clock or time.ticks_ms
    sleep = sleep or time.sleep_ms
    t0 = clock()
    log = logger(clock, out)
    storage = Storage(root)
    try:
        board = devconf.load_board(storage)
    except devconf.ConfigError as e:
        log(ERROR, "board: %s" % e)
        return None, e.why  # no pins known: nothing to blink; the REPL stays free
    if hw_factory is None:
        from pb_esp32.hw import Hardware as hw_factory
    try:
        hw = hw_factory(board)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        # complete, yet not a board this chip can drive (a pin it lacks, a wrong type):
        # a bad board, as above; its pins were set off before any became an output
        log(ERROR, "board: the hardware refused it: %s: %s" % (e.__class__.__name__, e))
        return None, devconf.BAD_BOARD
    hw.all_off()
    try:
        conf = devconf.load_config(storage)
        devconf.check_settings(board, conf)
    except devconf.ConfigError as e:
        log(ERROR, "config: %s" % e)
        crash.error_loop(hw.indicate, sleep, e.why, blink_rounds)
        return None, e.why
    log(INFO, "boot " + devconf.describe(conf, board))
    try:
        wait = crash.wait_ms(storage)
        if wait:
            log(WARNING, "crash loop: starting in %d s" % (wait // 1000))
            crash.pause(hw.indicate, sleep, wait)
        if net is None:
            import os
            from pb_esp32.net import Net
            net = Net(conf["wifi"], os.urandom, log)
        from parcelbox.link import Link
        port = Port(hw, storage, net, log, clock, sleep)
        app = App(port, board, conf, make_link=Link)
        app.boot_ms = t0  # type: ignore[attr-defined]  # App (app.py) does not declare it yet
        if reset_cause is None:
            import machine
            reset_cause = machine.reset_cause()
        crash.report(app.box, storage, reset_cause, clock())
        hw.watchdog(WDT_MS)
    except Exception as e:  # noqa: BLE001 - the loop never started: a crash all the same
        crash.boot_failed(storage, e, ticks.diff(clock(), t0), hw.all_off, log, sleep,
                          reset or _machine_reset)
        return None, None
    return app, hw


# The loop; a crash turns everything off, saves its report and resets the box.
def run(app, hw, loops=-1, reset=None):
    crash.run(app, hw.all_off, reset or _machine_reset, loops)


def main():
    app, hw = boot()
    if app is not None:
        run(app, hw)
