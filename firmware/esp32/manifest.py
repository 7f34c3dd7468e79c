# Freeze the whole ESP32 firmware into a custom MicroPython image (frozen bytecode
# costs no heap: Box, Remote and Link need about 62 KB of heap as .mpy files). Build
# with the MicroPython source tree: make BOARD=ESP32_GENERIC FROZEN_MANIFEST=<this file>.
include("$(PORT_DIR)/boards/manifest.py")
metadata(description="parcelbox firmware for ESP32 parcel boxes", version="0.1.0")
package("parcelbox", base_path="..")
package("pb_esp32")
