# Freeze the firmware core into a custom MicroPython image: frozen bytecode runs
# from flash and costs no heap (as .mpy files on the filesystem it costs ~40 KB).
metadata(description="parcelbox firmware core for smart parcel boxes", version="0.1.0")
package("parcelbox")
