# parcelbox boot.py: put the app slot that app.ptr names on sys.path (or the other slot when
# that one is incomplete: deploy writes a slot's manifest.json last), then decide safe mode.
import os
import sys

SLOTS = ("app_a", "app_b")
POINTER = "app.ptr"
SLOT = None  # the slot's folder on sys.path; None: frozen firmware, or no application


def _complete(path):
    try:
        return os.stat(path + "/manifest.json")[6] > 0
    except OSError:
        return False


# Nothing here may raise: on the ESP32 an exception in boot.py keeps main.py from running.
try:
    _root = os.getcwd().rstrip("/")
    try:
        with open(POINTER) as _f:
            _want = _f.read().strip()
    except OSError:
        _want = ""
    for _s in (_want,) + SLOTS:  # the pointer's slot first; a missing or bad pointer: any complete one
        if _s in SLOTS and _complete(_root + "/" + _s):
            SLOT = _root + "/" + _s
            sys.path.insert(0, SLOT)
            break
    import time
    from parcelbox.storage import Storage
    from pb_esp32 import safe
    safe.check(Storage("/"), time.ticks_ms, time.sleep_ms)
except Exception:  # noqa: BLE001 - no port here (the sim's slot, no application): main.py says so
    pass
