# Boot to the superloop in the simulator (docs/sim.md, as docs/runtime.md section 6 on the
# ESP32): board and configuration checked, the last crash reported, the watchdog armed.
import gc

from parcelbox import crash, devconf, ticks
from parcelbox.app import App, ERROR, INFO, WARNING
from parcelbox.link import Link
from parcelbox.storage import Storage
from pb_sim.port import Bridge, Port

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

WDT_MS = const(8000)
RETRY_MS = crash.RETRY_MS  # a boot that failed after its configuration: reset after this
CRASH = crash.CRASH
CRASH_LAST = crash.CRASH_LAST


# Everything up to the loop: (app, None), or (None, why) when the board or the
# configuration is bad. call: the host-call function (None: the VM's host.call).
def boot(root="/flash", call=None, blink_rounds=-1):
    if call is None:
        import host
        call = host.call
    storage = Storage(root)
    port = Port(Bridge(call), storage)
    t0 = port.ticks_ms()
    try:
        board = devconf.load_board(storage)
    except devconf.ConfigError as e:
        port.log(ERROR, "board: %s" % e)
        return None, e.why
    port.all_off()
    try:
        conf = devconf.load_config(storage)
        devconf.check_settings(board, conf)
    except devconf.ConfigError as e:
        port.log(ERROR, "config: %s" % e)
        crash.error_loop(port.indicate, port.idle, e.why, blink_rounds)
        return None, e.why
    port.log(INFO, "boot " + devconf.describe(conf, board))
    try:
        wait = crash.wait_ms(storage)
        if wait:
            port.log(WARNING, "crash loop: starting in %d s" % (wait // 1000))
            crash.pause(port.indicate, port.idle, wait)
        app = App(port, board, conf, make_link=Link)
        app.boot_ms = t0
        crash.report(app.box, storage, port.reset_cause(), port.ticks_ms())
        if hasattr(gc, "mem_free"):  # MicroPython: what is left for the loop, for docs/sim.md
            gc.collect()
            port.log(INFO, "heap used %d free %d" % (gc.mem_alloc(), gc.mem_free()))
        port.watchdog(WDT_MS)
    except Exception as e:  # noqa: BLE001 - the loop never started: a crash all the same
        crash.boot_failed(storage, e, ticks.diff(port.ticks_ms(), t0), port.all_off, port.log,
                          port.idle, port.reset)
        return None, None
    return app, None


# The loop; a crash turns everything off, saves its report and resets the box.
def run(app, loops=-1):
    crash.run(app, app.port.all_off, app.port.reset, loops)


# The simulator runs this; `loops` passes then return (measurements), -1 forever.
def main(root="/flash", call=None, loops=-1):
    app, why = boot(root, call)
    if app is not None:
        run(app, loops)
    return why
