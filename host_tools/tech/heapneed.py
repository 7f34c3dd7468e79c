"""The heap the firmware needs: host_tools/tech/heap_need.json, which `make bench` keeps current
(bench/bench_memory.py measures it). Build records it, deploy refuses by it, doctor reports it.

    {"measured": "2026-12-07, bench_memory",
     "mpy":    {"base_bytes": B, "per_code_bytes": P},   the firmware as .mpy files (deploy)
     "frozen": {"base_bytes": B, "per_code_bytes": P},   the firmware frozen into the image
     "psram_heap_bytes": 2097152}                        the heap a board with PSRAM gives

The whole device needs base + per_code * max_codes bytes of MicroPython heap, as gc counts it
on the board (gc.mem_free() + gc.mem_alloc()).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from host_tools import paths

PATH = Path(__file__).with_name("heap_need.json")
FIRMWARE = paths.FIRMWARE
MODES = ("mpy", "frozen")
HOW = {"mpy": "as .mpy files", "frozen": "frozen into the image"}
PSRAM_BOARDS = ("the ESP32-DevKitC-VE (ESP32-WROVER-E, boards/esp32-wrover-devkitc-4x3.json) or the "
                "ESP32-S3-DevKitC-1-N8R8 (boards/esp32s3-n8r8-devkitc-4x4.json), flashed with "
                "MicroPython's SPIRAM image; docs/boards.md sections 5 and 6")
FREEZE = ("parcelbox build --target esp32 writes build/esp32/manifest.py to freeze into "
          "MicroPython; docs/tooling.md section 2")


class HeapNeedError(ValueError):
    """heap_need.json, or a build's copy of it, is missing or not as the header says."""


def _bytes(v) -> bool:
    return type(v) is int and v >= 0


def check(table, where: str = "host_tools/tech/heap_need.json") -> dict:
    """The table, if it has every key with a sane value; HeapNeedError naming the first that
    does not."""
    if not isinstance(table, dict):
        raise HeapNeedError("%s is not a JSON object" % where)
    if not isinstance(table.get("measured"), str):
        raise HeapNeedError("%s: measured must say when and by what (a string)" % where)
    for mode in MODES:
        m = table.get(mode)
        if not isinstance(m, dict):
            raise HeapNeedError("%s: %s must be an object with base_bytes and per_code_bytes" % (where, mode))
        for k in ("base_bytes", "per_code_bytes"):
            if not _bytes(m.get(k)) or (k == "base_bytes" and m[k] == 0):
                raise HeapNeedError("%s: %s.%s must be a whole number of bytes" % (where, mode, k))
    if not _bytes(table.get("psram_heap_bytes")) or table["psram_heap_bytes"] == 0:
        raise HeapNeedError("%s: psram_heap_bytes must be a whole number of bytes" % where)
    return table


def load(path: Path | str | None = None) -> dict:
    """The current figures (make bench writes them)."""
    p = Path(path) if path is not None else PATH
    try:
        table = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise HeapNeedError("%s cannot be read (%s); `make bench` writes it"
                            % (p.name, getattr(e, "strerror", None) or e)) from None
    return check(table, p.name)


def need(mode: str, max_codes: int, table: dict | None = None) -> int:
    """Bytes of heap the whole device needs with room for max_codes codes."""
    m = (table or load())[mode]
    return m["base_bytes"] + m["per_code_bytes"] * max_codes


def codes_that_fit(mode: str, heap: int, table: dict | None = None, most: int = 16384) -> int:
    """The largest max_codes whose need fits `heap` (0: not even one), at most `most` (the
    firmware's own limit for the setting)."""
    m = (table or load())[mode]
    room = heap - m["base_bytes"]
    if room < 0:
        return 0
    return most if m["per_code_bytes"] == 0 else min(most, room // m["per_code_bytes"])


def firmware_settings(firmware: Path | str = FIRMWARE) -> tuple[int, int]:
    """(default, highest) max_codes of the firmware tree, read from parcelbox/config.py's
    DEFAULTS and _RANGES (the host does not import the firmware it builds)."""
    src = Path(firmware) / "parcelbox" / "config.py"
    found = {}
    try:
        for node in ast.parse(src.read_text()).body:
            # DEFAULTS = {...}, or annotated: DEFAULTS: dict = {...}
            targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None \
                    and names in (["DEFAULTS"], ["_RANGES"]):
                found[names[0]] = ast.literal_eval(node.value)
        return int(found["DEFAULTS"]["max_codes"]), int(found["_RANGES"]["max_codes"][1])
    except (OSError, SyntaxError, ValueError, KeyError, IndexError, TypeError):
        raise HeapNeedError("%s has no max_codes in DEFAULTS and _RANGES" % src) from None


def kb(n: int) -> str:
    return "%.1f KB" % (n / 1024)


def what_fits(mode: str, heap: int, psram: bool, max_codes: int, table: dict, most: int = 16384) -> list[str]:
    """What would fit a board with `heap` bytes when the firmware `mode` with max_codes does
    not: fewer codes, the frozen image, a board with PSRAM. One line each."""
    out = []
    n = codes_that_fit(mode, heap, table, most)
    if n >= 1:
        out.append("at most %d codes %s: parcelbox provision ... --max-codes %d (settings.max_codes "
                   "in the board's config.json)" % (n, HOW[mode], n))
    if mode == "mpy":
        f = need("frozen", max_codes, table)
        if f <= heap:
            out.append("a frozen image, which needs %s with %d codes (%s)" % (kb(f), max_codes, FREEZE))
        elif codes_that_fit("frozen", heap, table, most) >= 1:
            out.append("a frozen image with at most %d codes (%s)"
                       % (codes_that_fit("frozen", heap, table, most), FREEZE))
    if not psram:
        out.append("a board with PSRAM (about %d KB of heap): %s"
                   % (table["psram_heap_bytes"] // 1024, PSRAM_BOARDS))
    return out
