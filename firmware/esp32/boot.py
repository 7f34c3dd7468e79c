# parcelbox boot.py: decide safe mode ('*' held at power-up, or a safe_mode file) before
# main.py runs; in safe mode main.py returns at once and the REPL is free for mpremote.
import time

from parcelbox.storage import Storage
from pb_esp32 import safe

safe.check(Storage("/"), time.ticks_ms, time.sleep_ms)
