# Boot to the superloop on Linux (docs/linux.md; docs/runtime.md section 6 on the ESP32):
# configuration checked, the last crash reported, systemd told READY, a crash reset.
import os
import sys

from parcelbox import crash, devconf, ticks
from parcelbox.app import App, ERROR, INFO, WARNING
from parcelbox.link import Link
from pb_linux.port import DurableStorage, LinuxNet, Port, logger, ticks_ms

STATE_DIR = "/var/lib/parcelbox"     # the unit's StateDirectory=parcelbox
RETRY_MS = crash.RETRY_MS  # a boot that failed after its configuration: exit (restart) after this
EXIT_RESET = 75     # the process exit that stands for machine.reset(): systemd restarts us
LAST_EXIT = "last_exit"     # $SERVICE_RESULT of the last stop, written by --all-off
CRASH = crash.CRASH
# machine.reset_cause() values, from how the last run ended (systemd's $SERVICE_RESULT)
PWRON_RESET, HARD_RESET, WDT_RESET, SOFT_RESET = 1, 2, 3, 5
_CAUSES = {"watchdog": WDT_RESET, "exit-code": SOFT_RESET, "success": SOFT_RESET}


def _sleep(ms):
    import time
    time.sleep(ms / 1000)


def _exit_reset():
    sys.exit(EXIT_RESET)


# What the hardware layer raises for a board.json it cannot drive.
_REFUSED = (ValueError, TypeError, KeyError, IndexError, AttributeError)


# The hardware from Blinka: the real `board` and `digitalio` modules on the SBC.
def blinka_hardware(board):
    import board as pins
    import digitalio
    from adafruit_matrixkeypad import Matrix_Keypad
    from pb_linux.hw import Hardware
    return Hardware(board, digitalio, pins, Matrix_Keypad)


# How the last run ended (read once: the file is removed): a reset cause for crash events.
def last_cause(storage):
    data = storage.read(LAST_EXIT)
    if data is None:
        return PWRON_RESET      # no stop was recorded: the machine was powered up
    storage.remove(LAST_EXIT)
    return _CAUSES.get(data.decode("ascii", "replace").strip(), HARD_RESET)


# Everything up to the loop: (app, hw), or (None, why) with a bad board or configuration.
# The keywords lend the hardware, network, clock and service manager (tests, the sim).
def boot(root=STATE_DIR, hw_factory=None, net=None, clock=None, sleep=None, reset_cause=None,
         out=print, notify=None, rand=None, reset=None, blink_rounds=-1):
    from pb_linux.watchdog import Notifier
    clock = clock or ticks_ms
    lent_sleep, sleep = sleep, sleep or _sleep
    notify = notify or Notifier()
    t0 = clock()
    log = logger(clock, out)
    storage = DurableStorage(root)

    # while the LED blinks an error, systemd must still hear from us (no restart storm)
    def idle_fed(ms):
        notify("WATCHDOG=1")
        sleep(ms)

    try:
        board = devconf.load_board(storage)
    except devconf.ConfigError as e:
        log(ERROR, "board: %s" % e)
        notify("READY=1")
        notify("STATUS=board: %s" % e)
        return None, e.why
    try:
        hw = (hw_factory or blinka_hardware)(board)
    except _REFUSED as e:
        # complete, yet not a board this machine can drive (a pin its `board` module
        # lacks, a wrong type): a bad board, as above, not a crash loop
        log(ERROR, "board: the hardware refused it: %s: %s" % (e.__class__.__name__, e))
        notify("READY=1")
        notify("STATUS=board: the hardware refused it")
        return None, devconf.BAD_BOARD
    hw.all_off()
    try:
        conf = devconf.load_config(storage)
        devconf.check_settings(board, conf)
    except devconf.ConfigError as e:
        log(ERROR, "config: %s" % e)
        notify("READY=1")
        notify("STATUS=config: %s" % e)
        crash.error_loop(hw.indicate, idle_fed, e.why, blink_rounds)
        return None, e.why
    log(INFO, "boot " + devconf.describe(conf, board))
    try:
        wait = crash.wait_ms(storage)
        if wait:
            log(WARNING, "crash loop: starting in %d s" % (wait // 1000))
            notify("READY=1")
            crash.pause(hw.indicate, idle_fed, wait)
        if net is None:
            net = LinuxNet(root)
        # the port's own sleep unless one is lent: on the real clock it waits on the link
        port = Port(hw, storage, net, log, notify, clock, lent_sleep, rand)
        app = App(port, board, conf, make_link=Link)
        app.boot_ms = t0
        cause = reset_cause() if reset_cause is not None else last_cause(storage)
        crash.report(app.box, storage, cause, clock())
        notify("READY=1")
        notify("STATUS=running box %s" % conf["box_id"])
    except Exception as e:  # noqa: BLE001 - the loop never started: a crash all the same
        crash.boot_failed(storage, e, ticks.diff(clock(), t0), hw.all_off, log, sleep,
                          reset or _exit_reset)
        return None, None
    return app, hw


# The loop; a crash turns everything off, saves its report and restarts the process.
def run(app, hw, loops=-1, reset=None):
    crash.run(app, hw.all_off, reset or _exit_reset, loops)


# The service: boot and loop; SIGTERM (systemctl stop) ends it with every output off.
def main(root=STATE_DIR, loops=-1, **kw):
    import signal

    def stop(signum, frame):
        sys.exit(0)

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:
        pass    # not the main thread (a test): the caller stops us
    app, hw = boot(root, **kw)
    if app is None:
        return hw
    try:
        run(app, hw, loops, kw.get("reset"))
    finally:
        hw.all_off()
        app.port.notify("STOPPING=1")
    return None


# ExecStopPost: every solenoid, LED and buzzer pin driven off (whatever ended the
# service: a crash, the watchdog's SIGABRT, a kill), and how it ended noted for the
# next boot's reset cause. Without a readable board.json there is nothing to drive.
def all_off(root=STATE_DIR, hw_factory=None, result=None):
    storage = DurableStorage(root)
    if result is None:
        result = os.environ.get("SERVICE_RESULT", "")
    if result:
        storage.replace(LAST_EXIT, result.encode())
    try:
        board = devconf.load_board(storage)
    except devconf.ConfigError as e:
        print("PB E 0 all-off: board: %s" % e)
        return 1
    try:
        hw = (hw_factory or blinka_hardware)(board)
    except _REFUSED as e:
        print("PB E 0 all-off: board: the hardware refused it: %s" % e)
        return 1
    hw.all_off()
    print("PB I 0 all-off: %d solenoids, LED and buzzer off (%s)" % (hw.n, result or "by hand"))
    return 0
