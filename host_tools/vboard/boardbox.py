"""The virtual board's world: a SimBox (host_tools/sim/simbox.py) that answers the sim firmware's
host calls from the board's VM instead of running a VM of its own (docs/vboard.md).

Its log lines go out on the board's UART as "PB <level> <ticks> <text>", as the firmware's
log reaches a real ESP32's serial console; paths of the flash are taken as the board sees
them ("/ca.pem", "/flash/ca.pem" or "ca.pem").
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Callable

from host_tools.sim.simbox import SimBox


class BoardBox(SimBox):
    """A SimBox without a firmware thread of its own: the virtual board's VM calls its
    host functions (`_host`). emit: the board's UART; called: set at the first host call."""

    def __init__(self, flash: Path, emit: Callable[[bytes], None], called: threading.Event):
        self._emit_uart = emit
        super().__init__(flash, vm=True, clock="real", power=False)
        self._running = True     # the board's VM runs the firmware, not a thread of ours

    def _h_log(self, level: int, text: str) -> None:
        super()._h_log(level, text)
        self._emit_uart(self.lines[-1].encode("utf-8", "replace") + b"\r\n")

    def _flash_file(self, name: str | None) -> str | None:
        if name and name.startswith("/") and not name.startswith("/flash/"):
            name = name.lstrip("/")
        if name and ".." in Path(name).parts:
            raise FileNotFoundError(errno.ENOENT, "not a file of the flash folder", name)
        return super()._flash_file(name)

    def close(self) -> None:
        self._running = False
        super().close()
