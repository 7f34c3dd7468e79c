# VM side of bench/bench_memory.py: the whole device (pb_esp32 Hardware on the fake machine,
# the superloop App with Box, Remote and Link) booting from a /flash that holds 1,000
# codes and a full outbox, connecting to a broker that answers by itself, taking a 4 KB
# command (a sync part, staged on flash) while it publishes the outbox, and opening the
# door for a typed code. Prints OK when all of it ran.
import gc
import sys

gc.collect()
F0 = gc.mem_free()

import fakeboards  # noqa: E402
import autobroker  # noqa: E402
from parcelbox.app import App  # noqa: E402
from parcelbox.link import Link  # noqa: E402
from parcelbox.storage import Storage  # noqa: E402
from pb_esp32.hw import Hardware  # noqa: E402
from pb_esp32.port import Port  # noqa: E402
import benchcfg  # noqa: E402

gc.collect()
print("imports=%d" % (F0 - gc.mem_free()))


# Out of memory, handled: the App survived a MemoryError in a loop step (it logs the
# class's name), or the remote refused a command as no_memory (a `rejected` event, 14).
# Any other error a loop step survived is named too (a TypeError there is the VM's
# collector corrupting the heap, docs/vm.md section 3).
OOM = []
OTHER = []


def log(level, text):
    if not OOM and ("MemoryError" in text
                    or " rejected " in text and int(text.rsplit(" ", 1)[1]) & 0xFF == 14):
        OOM.append(1)
    elif not OTHER and text.startswith("loop error: "):
        OTHER.append(text[12:])


def check(cond, msg):
    if not cond:   # a check that fails after a MemoryError the App survived: out of memory
        raise AssertionError(msg + (" (after a MemoryError)" if OOM else
                                    " (after a %s in the loop)" % OTHER[0] if OTHER else ""))


def main():
    board = fakeboards.ESP32_4X3
    gc.collect()
    f1 = gc.mem_free()
    wired = fakeboards.Wired(board, bounce_ms=3)   # the fake world: not on a device
    w = wired.world
    net = autobroker.Net(benchcfg.CMDS)
    gc.collect()
    print("world=%d" % (f1 - gc.mem_free()))
    hw = Hardware(board)
    conf = {"box_id": "box-1", "box_key": benchcfg.KEY, "settings": benchcfg.SETTINGS,
            "broker": {"host": "broker.example", "port": 8883, "tls": True, "ca": "ca.pem"},
            "mqtt_username": "box-1", "mqtt_password": "pw",
            "wifi": {"ssid": "s", "password": ""}}
    port = Port(hw, Storage("/flash"), net, log, w.ticks_ms, w.advance,
                lambda n: bytes(n))
    app = App(port, board, conf, make_link=Link)
    hw.watchdog(8000)
    box = app.box
    check(box.codes.count() == benchcfg.CODES, "codes loaded")
    check(box.outbox.pending() >= benchcfg.OUTBOX, "outbox full")
    gc.collect()
    print("device=%d" % (F0 - gc.mem_free()))
    app.run(300)                                 # connect, subscribe, publish
    check(app.link.state == "connected", "connected")
    check(net.conn.published >= 8, "events published")
    check(net.conn.pubacks == len(benchcfg.CMDS), "commands taken")
    check(app.remote._stage.parts == 1, "the 4 KB sync part staged")
    for ch in benchcfg.CODE:
        wired.keys.press(ch)
        app.run(6)
        wired.keys.release(ch)
        app.run(6)
    app.run(5)
    check(wired.energised(1), "the code opened the lock")
    app.run(3200)                                # 32 s: the unacked events go again
    check(net.conn.published >= 16, "events resent")
    check(app.errors == 0, "no loop errors")   # App.run survives failing steps, MemoryError too
    check(box.outbox.pending() >= benchcfg.OUTBOX, "outbox still full")
    print("published=%d" % net.conn.published)


main()
gc.collect()
mods = []
for name in sys.modules:
    f = getattr(sys.modules[name], "__file__", None)
    if f:
        mods.append(f)
print("modules=" + ",".join(mods))
print("OK memory")
