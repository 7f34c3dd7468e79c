# The linux port: the parcelbox firmware on CPython on a Linux single-board computer
# (Raspberry Pi), with Blinka's digitalio for pins and systemd as the watchdog.
