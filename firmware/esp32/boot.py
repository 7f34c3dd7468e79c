# parcelbox boot.py: put the app slot that app.ptr names on sys.path (or the other slot when
# that one is incomplete or damaged: docs/tooling.md section 3), then decide safe mode.
import json
import os
import sys

SLOTS = ("app_a", "app_b")
POINTER = "app.ptr"
SLOT = None  # the slot's folder on sys.path; None: frozen firmware, or no application


# A slot is complete when its manifest.json is there (deploy writes it last) and every app
# file it lists has the size it gives: a missing or cut file sends the boot to the other slot.
# (Sizes, not hashes: a stat each; parcelbox doctor compares the hashes.)
def _complete(path):
    try:
        with open(path + "/manifest.json") as f:
            files = json.load(f)["files"]
        for e in files:
            p = e["path"]
            if p[:4] == "app/" and os.stat(path + "/" + p[4:])[6] != e["size"]:
                return False
        return True
    except Exception:  # noqa: BLE001 - missing, unreadable, not JSON, a file missing: incomplete
        return False


# Nothing here may raise: on the ESP32 an exception in boot.py keeps main.py from running.
try:
    _root = os.getcwd().rstrip("/")
    try:
        with open(POINTER) as _f:
            _want = _f.read().strip()
    except Exception:  # noqa: BLE001 - missing (OSError) or not UTF-8 (UnicodeError): no pointer
        _want = ""
    for _s in (_want,) + SLOTS:  # the pointer's slot first; a missing or bad pointer: any complete one
        if _s in SLOTS and _complete(_root + "/" + _s):
            SLOT = _root + "/" + _s
            sys.path.insert(0, SLOT)
            break
    _f = _want = _s = None
    import time
    from parcelbox.storage import Storage
    from pb_esp32 import safe
    safe.check(Storage("/"), time.ticks_ms, time.sleep_ms)
except Exception:  # noqa: BLE001 - no port here (the sim's slot, no application): main.py says so
    pass
