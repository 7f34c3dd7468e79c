# parcelbox firmware: a sans-I/O core (keypad, entry, codes, throttle, lock,
# outbox, storage) that runs unmodified on MicroPython (ESP32, WASI VM) and CPython.
VERSION = "0.1.0"
