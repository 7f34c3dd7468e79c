"""The firmware on CPython for the benchmarks that count bytes (not instructions).

Makes the virtual modules importable by their device-side names, so `parcelbox`
(the same source the ESP32 runs, an installed package) and the RAM helpers import. Flash and heap figures
that do not depend on the interpreter (bytes written) are measured here; instruction
and heap figures are measured in the MicroPython VM (bench/vmbench.py).
"""

from __future__ import annotations

from host_tools import virtual

virtual.install()
