# Scenario: the whole device (pb_esp32 Hardware on the fake machine, the superloop App with
# Box, Remote and Link, a network that stays down) on CPython and in the MicroPython VM:
# a typed code opens the door for one pulse, the watchdog is fed, and the heap is measured.
# vm-paths: firmware/esp32 host_tools/virtual
# vm-heap: 208K
# Why 208K (192K before the security work added ~5 KB of bytecode): loaded from .py, the bytecode of the firmware (core, remote, MQTT, link, app,
# hw) and of the fakes takes ~108 KB of heap before the device exists; the device itself
# (Box with its 256-code store, Remote, Link buffers, App, Hardware) takes 27 KB. Frozen
# into the image (firmware/esp32/manifest.py) the bytecode costs no heap. At 128K the
# run is a MemoryError; at 160K the VM's own collector bug (docs/vm.md) strikes first.
import gc

import fakeboards
from memflash import MemStorage
from parcelbox.app import App
from parcelbox.codestore import ROLE_OWNER
from parcelbox.link import Link
from pb_esp32.hw import Hardware
from pb_esp32.port import Port

KEY = bytes(range(32))
CONF = {"box_id": "box-1", "box_key": KEY, "settings": {},
        "broker": {"host": "broker.example", "port": 8883, "tls": True, "ca": "ca.pem"},
        "mqtt_username": "box-1", "mqtt_password": "pw", "wifi": {"ssid": "s", "password": ""}}


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class DownNet:
    def step(self, now):
        pass

    def up(self):
        return False

    def time(self):
        return None


def main():
    gc.collect()
    free0 = gc.mem_free() if hasattr(gc, "mem_free") else 0
    board = fakeboards.ESP32_4X3
    wired = fakeboards.Wired(board, bounce_ms=3)
    w = wired.world
    hw = Hardware(board)
    port = Port(hw, MemStorage(), DownNet(), lambda level, text: None, w.ticks_ms, w.advance,
                lambda n: bytes(n))
    app = App(port, board, CONF, make_link=Link)
    hw.watchdog(8000)
    # the code's keyed digest, as the backend would send it
    app.box.codes.add(7, app.box.codes.digest(b"482915"), ROLE_OWNER, 0, 0xFFFF, 0, 0)
    gc.collect()
    if hasattr(gc, "mem_free"):
        print("heap after boot: %d bytes used by the device, %d free" % (
            free0 - gc.mem_free(), gc.mem_free()))
    for ch in "482915":
        wired.keys.press(ch)
        app.run(6)
        wired.keys.release(ch)
        app.run(6)
    app.run(5)
    check(wired.energised(1), "the code opened the lock")
    app.run(120)
    check(not wired.energised(1), "one pulse only")
    check(w.wdt_feeds > 0 and w.resets == [], "watchdog fed, no reset")
    check(app.link.state == "offline", "the network stays down")
    print("a typed code: one pulse; watchdog fed %d times" % w.wdt_feeds)


main()
print("OK app")
