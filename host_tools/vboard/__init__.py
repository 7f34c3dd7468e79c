# The virtual board: a MicroPython board in the VM behind a serial port that mpremote reaches.
