"""Memory: the smallest -X heapsize the whole firmware runs in, with 1,000 codes and a full outbox.

The device of tests/vm/scn_app.py (pb_esp32 Hardware on the fake machine, the superloop
App with Box, Remote and Link) boots in the MicroPython VM from a /flash prepared on
CPython with the firmware's own code (1,000 codes in codes.bin, 256 unacked events: a
full outbox), connects to a broker that answers by itself (bench/vm/autobroker.py),
publishes and resends the outbox, and opens the door for a typed code
(bench/vm/vm_memory.py). The heap is lowered from 288 KB in 4 KB steps, three runs at
each size, until a run fails; the figure is the smallest size at which every run passed.
Three runs,
because the VM is not quite deterministic here: os.stat() gives it the flash folder's
inode numbers, a small or a long int, so the heap's layout varies from copy to copy;
and near the limit its collector can fail in other ways than MemoryError (docs/vm.md).
Every failure counts as "does not fit".

The bytecode's share is measured, not estimated, and the frozen case is run, not
inferred (bench/vm/vm_frozen.py): a VM first compiles the source of every module the
device imports (compile(), as import does) and keeps the code objects, which stand for
the image in flash; its heap growth is the bytecode share. Then each module body runs
from that code into the module object of an empty stub file, making the module, class
and function objects that a frozen image makes in RAM too, and the same device runs.
The same sweep gives its smallest total heap; minus the bytecode share, that is the heap
the firmware needs when frozen.
"""

from __future__ import annotations

import ast
import shutil
import tempfile
from pathlib import Path

import bench.fw  # noqa: F401
from bench.common import Row
from bench.vmbench import ROOT, VM_HELPERS, ProbeError, probe
from host_tools.crypto import code_digest
from host_tools.vm import FIRMWARE_DIR, VMLIB_DIR
from parcelbox import events
from parcelbox.box import Box
from parcelbox.storage import Storage

TITLE = "Memory: smallest heap for the whole firmware, 1,000 codes, full outbox"

KEY = bytes(range(32))
T0 = 1_795_600_000
CODE = "48291537"
CODES = 1000
OUTBOX = 256
SETTINGS = {"code_len": 8, "max_codes": CODES}
TARGET_KB = 64
START_K = 288  # well above what either variant needs: a failure there is an error, not a figure
PATHS = (ROOT / "firmware" / "esp32", ROOT / "tests" / "fakes")

def prepare_flash(root: Path, codes: int) -> None:
    """codes.bin with `codes` codes and a full outbox, written by the firmware on CPython."""
    box = Box(Storage(str(root)), KEY, SETTINGS, 0)
    box.set_time(T0, 0)

    def records():
        for i in range(1, codes + 1):
            d = code_digest(KEY, CODE) if i == codes else code_digest(KEY, "%08d" % (10_000_000 + i))
            yield (i, d, 3 if i == codes else 1, 1 if i < codes else 0, 1 if i < codes else 0xFFFF,
                   0, T0 + 86400 * 30)
    box.codes.replace_all(records(), codes)
    ob = box.outbox
    i = 0
    while ob.pending() < OUTBOX:
        i += 1
        ob.add(events.WRONG_CODE, 0, 0, i, T0)


def _cfg(tmp: Path, codes: int) -> Path:
    d = tmp / "cfg"
    d.mkdir(exist_ok=True)
    (d / "benchcfg.py").write_text(
        f"KEY = {KEY!r}\nSETTINGS = {SETTINGS!r}\nCODES = {codes}\nOUTBOX = {OUTBOX}\n"
        f"CODE = {CODE!r}\n")
    return d


def attempt(heap_k: int, tmp: Path, flash0: Path, cfg: Path, stubs: Path | None = None):
    """(probe or None, why it failed) of one run at heap_k KB; stubs: frozen emulation."""
    flash = tmp / f"flash-{heap_k}"
    shutil.rmtree(flash, ignore_errors=True)
    shutil.copytree(flash0, flash)
    try:
        if stubs is None:
            p = probe("import vm_memory\n", heap=f"{heap_k}K", extra_paths=(*PATHS, cfg),
                      flash_dir=flash)
        else:
            p = probe("import vm_frozen\n", heap=f"{heap_k}K", firmware=stubs,
                      extra_paths=(FIRMWARE_DIR, *PATHS, cfg), flash_dir=flash)
        if p.lines() and p.lines()[-1] == "OK memory":
            return p, ""
        return None, "no OK"
    except ProbeError as e:
        text = str(e)
        return None, ("MemoryError" if "MemoryError" in text else
                      "trap" if "trap" in text or "exit -1" in text else "error")
    finally:
        shutil.rmtree(flash, ignore_errors=True)


def smallest_heap(run_at, start: int, step: int, repeat: int):
    """Going down from `start` KB in `step`s, each size run `repeat` times (a fresh copy of
    the flash each time: the folder's inode numbers, which os.stat() hands the VM, vary
    and so does the heap's layout). (the smallest size where every run passed, the
    sizes tried as [(KB, passes, failure kinds)], a probe of the smallest)."""
    runs, ok = [], None
    k = start
    while k > 8:
        got = [run_at(k) for _ in range(repeat)]
        bad = [why for p, why in got if p is None]
        runs.append((k, repeat - len(bad), sorted(set(bad))))
        if bad:
            break
        ok = (k, got[0][0])
        k -= step
    if ok is None:
        raise RuntimeError(f"the firmware does not run even in a {start} KB heap")
    return ok[0], runs, ok[1]


def _roots(cfg: Path) -> list[Path]:
    """The host folders behind /lib0, /lib1, ... of a probe with PATHS and cfg."""
    return [FIRMWARE_DIR, VMLIB_DIR, VM_HELPERS, *PATHS, cfg]


def frozen_order(vm_files: list[str], cfg: Path) -> list[tuple[str, Path, Path]]:
    """(dotted name, host file, root) of every module the device imported, each after the
    modules its body imports (a topological order, from the sources' import statements)."""
    roots = _roots(cfg)
    mods = {}
    for f in vm_files:
        root = roots[int(f.split("/")[1][3:])]
        host = root / f.split("/", 2)[2]
        rel = host.relative_to(root).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        name = ".".join(parts)
        if name not in ("vm_memory", "benchcfg"):
            mods[name] = (host, root)
    deps = {}
    for name, (host, _) in mods.items():
        d = set()
        for node in ast.walk(ast.parse(host.read_text())):
            if isinstance(node, ast.Import):
                d.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                d.add(node.module)
                d.update(f"{node.module}.{a.name}" for a in node.names)
        pkg = name.rsplit(".", 1)[0] if "." in name else None
        deps[name] = sorted(x for x in d | ({pkg} if pkg else set()) if x in mods and x != name)
    order, seen = [], set()

    def visit(n):
        if n in seen:
            return
        seen.add(n)
        for m in deps[n]:
            visit(m)
        order.append(n)
    for n in sorted(mods):
        visit(n)
    return [(n, *mods[n]) for n in order]


def frozen_setup(tmp: Path, cfg: Path, order) -> Path:
    """Empty stub files for every module (first on the path) and benchorder.py in cfg."""
    stubs = tmp / "stubs"
    for name, host, root in order:
        rel = host.relative_to(root)
        (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
        (stubs / rel).write_text("")
    # the frozen run's folders: /lib0 stubs, /lib1 vmlib, /lib2 bench/vm, then PATHS..., cfg
    roots = [stubs, VMLIB_DIR, VM_HELPERS, FIRMWARE_DIR, *PATHS, cfg]
    entries = []
    for name, host, root in order:
        i = next(k for k, r in enumerate(roots) if k and host.is_relative_to(r) and r == root)
        entries.append((name, f"/lib{i}/{host.relative_to(root).as_posix()}"))
    fakes = [n for n, host, root in order if root in (VM_HELPERS, ROOT / "tests" / "fakes")]
    (cfg / "benchorder.py").write_text(f"ORDER = {entries!r}\nFAKES = {fakes!r}\n")
    return stubs


def run(quick: bool = False) -> list[Row]:
    codes = 100 if quick else CODES
    step, repeat = (64, 1) if quick else (4, 3)
    with tempfile.TemporaryDirectory(prefix="pb-bench-mem-") as t:
        tmp = Path(t)
        flash0 = tmp / "flash0"
        flash0.mkdir()
        prepare_flash(flash0, codes)
        cfg = _cfg(tmp, codes)
        big, _ = attempt(1024, tmp, flash0, cfg)
        if big is None:
            raise RuntimeError("the firmware does not run in a 1 MB heap")
        imports = int(big.value("imports"))
        device = int(big.value("device")) - imports
        order = frozen_order(big.value("modules").split(","), cfg)
        stubs = frozen_setup(tmp, cfg, order)
        full, runs_full, _ = smallest_heap(lambda k: attempt(k, tmp, flash0, cfg), START_K,
                                           step, repeat)
        froz, runs_froz, p = smallest_heap(lambda k: attempt(k, tmp, flash0, cfg, stubs),
                                           START_K, step, repeat)
        rom = int(p.value("rom"))
        bodies = int(p.value("bodies")) - rom
        scaffold = int(p.value("fakes")) + int(p.value("world"))
        fakes = [n for n, host, root in order if root in (VM_HELPERS, ROOT / "tests" / "fakes")]
    without = froz - rom / 1024

    def tried(runs):
        last = runs[-1]
        fail = (f"; at {last[0]}K {last[1]} of {repeat} ran, failed by {'/'.join(last[2])}"
                if last[2] else "")
        return f"{runs[0][0]}K down to {runs[-1][0]}K in {step}K steps, {repeat} runs each{fail}"
    return [
        Row(f"smallest heap, whole firmware loaded from .py, {codes:,} codes, full outbox",
            full, "KB", note=f"every run passed down to here: {tried(runs_full)}",
            extra={"runs": runs_full}),
        Row("bytecode share (compiled code of the firmware, fakes and helpers)",
            round(rom / 1024, 1), "KB",
            note=f"{len(order)} modules compiled first and kept, as a frozen image keeps "
                 f"them in flash; a plain import keeps {imports / 1024:.1f} KB"),
        Row("smallest heap without the bytecode (frozen image, as the ESP32 build ships)",
            round(without, 1), "KB", f"<= {TARGET_KB} KB", without <= TARGET_KB,
            f"module bodies run from the kept code ({bodies / 1024:.1f} KB of module, class "
            f"and function objects stay in RAM); smallest total {froz}K minus the bytecode; "
            f"runs: {tried(runs_froz)}"
            + ("" if without <= TARGET_KB else f"; {without - TARGET_KB:.1f} KB over")),
        Row("of which the test scaffolding (fake machine and world, self-answering broker)",
            round(scaffold / 1024, 1), "KB",
            note=f"module objects of {', '.join(fakes)} and the fake world's state; "
                 f"without them: {without - scaffold / 1024:.1f} KB"),
        Row(f"the device's objects after boot ({codes:,} codes, full outbox, link buffers)",
            round(device / 1024, 1), "KB", note="heap after building App minus after imports"),
    ]
