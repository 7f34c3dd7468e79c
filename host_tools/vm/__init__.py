# The MicroPython WASI VM runner: the firmware on its path, a real heap, a /flash folder.
