# The ESP32 port of the parcelbox firmware (docs/runtime.md): pins, keypad scan,
# solenoid failsafe, LED and buzzer, watchdog (hw); Wi-Fi, NTP and sockets.
