"""The firmware on CPython for the benchmarks that count bytes (not instructions).

Puts firmware/ and tests/vmlib/ on sys.path, as tests/conftest.py does, so `parcelbox`
(the same source the ESP32 runs) and the RAM helpers import. Flash and heap figures
that do not depend on the interpreter (bytes written) are measured here; instruction
and heap figures are measured in the MicroPython VM (bench/vmbench.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "firmware", ROOT / "tests" / "vmlib"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
