"""Memory: the smallest heap the whole device runs in, as deployed (.mpy) and frozen.

The device of tests/vm/scn_app.py (pb_esp32 Hardware on the fake machine, the superloop
App with Box, Remote and Link) boots in the MicroPython VM from a /flash prepared on
CPython with the firmware's own code (N codes in codes.bin, 256 unacked events: a full
outbox), connects to a broker that answers by itself (bench/vm/autobroker.py), takes a
4 KB command (a sync part, staged on flash) while it publishes and resends the outbox,
and opens the door for a typed code (bench/vm/vm_memory.py). Two scenarios, the
issue's targets:

- "mpy": the firmware as `parcelbox deploy` puts it on a board, .mpy files from
  mpy-cross (the same bytecode as the build's; without the xtensawin tag, which the VM
  refuses), 256 codes. Target: a 96 KB heap.
- "frozen": 1,000 codes, the bytecode kept out of the figure (bench/vm/vm_frozen.py: each
  module's source is compiled first and the code objects kept, standing for the image in
  flash; each module body then runs from that code, making the module, class and
  function objects a frozen image makes in RAM too). The figure is the smallest total
  heap minus the kept code. Target: 64 KB.

The smallest heap is found by bisection in 4 KB steps, three runs at each size tried
(the VM is not quite deterministic: os.stat() gives it the flash folder's inode
numbers, a small or a long int, so the heap's layout varies). Its collector can also
corrupt the heap (docs/vm.md section 3: a wasm trap, an object read back as another
type), at sizes well above the limit too, which a real 32-bit MicroPython build never
did: such a run is run again, and a size where only such runs failed is named, not
taken as too small (failure_kind). Then every size above it, up to 64 KB more, runs
once: a heap larger than the smallest that passes must pass too (a long-lived buffer
allocated late finds only fragments in a heap of some sizes).
"""

from __future__ import annotations

import ast
import datetime
import json
import shutil
import tempfile
from pathlib import Path

import bench.fw  # noqa: F401
from bench.common import Row
from bench.vmbench import VM_HELPERS, ProbeError, probe
from host_tools import paths
from host_tools.tech import heapneed
from host_tools.backend.crypto import code_digest
from host_tools.vm.runner import FIRMWARE_DIR, VMLIB_DIR, compile_mpy
from parcelbox import events
from parcelbox.box import Box
from parcelbox.storage import Storage

TITLE = "Memory: smallest heap for the whole device, as deployed (.mpy) and frozen"

KEY = bytes(range(32))
BOX_ID = "box-1"
T0 = 1_795_600_000
CODE = "48291537"
OUTBOX = 256
# (codes, target KB) of each scenario: the two targets
SCENARIOS = {"mpy": (256, 96), "frozen": (1000, 64)}
START_K = 512   # well above what either needs: a failure there is an error, not a figure
MONO_SPAN_K = 64
NEED_MARGIN_K = 4   # heap_need.json's margin over the smallest heap (write_need)
PATHS = (paths.FIRMWARE / "esp32", paths.VIRTUAL)
HEAP_NEED = heapneed.PATH   # what deploy and doctor compare with


def settings(codes: int) -> dict:
    return {"code_len": 8, "max_codes": codes}


def commands(codes: int) -> list[tuple[str, bytes]]:
    """A sync_begin, then a sync part as near 4 KB (the protocol's limit) as codes make it."""
    from host_tools.backend import protocol as P
    keys = P.WireKeys.of(KEY)
    part = []
    while True:
        c = P.code_array(20_000 + len(part), P.code_digest(keys.code, "%08d" % (30_000_000 + len(part))),
                         1, 1, 1, 0, T0 + 86400)
        try:
            cmd = P.command(keys, BOX_ID, 2, "sync_part", sync=1, part=0, codes=part + [c])
        except ValueError:   # over MAX_COMMAND: the part before this code is the one
            break
        part.append(c)
    begin = P.command(keys, BOX_ID, 1, "sync_begin", sync=1, count=len(part),
                      digest=P.set_digest(part).hex())
    return [begin, cmd]


def prepare_flash(root: Path, codes: int) -> None:
    """codes.bin with `codes` codes and a full outbox, written by the firmware on CPython."""
    box = Box(Storage(str(root)), KEY, settings(codes), 0)
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
        f"KEY = {KEY!r}\nSETTINGS = {settings(codes)!r}\nCODES = {codes}\nOUTBOX = {OUTBOX}\n"
        f"CODE = {CODE!r}\nCMDS = {commands(codes)!r}\n")
    return d


def attempt(heap_k: int, tmp: Path, flash0: Path, cfg: Path, stubs: Path | None = None,
            firmware: Path = FIRMWARE_DIR):
    """(probe or None, why it failed) of one run at heap_k KB; stubs: frozen emulation;
    firmware: the folder of the firmware's packages (.py, or .mpy as deployed)."""
    flash = tmp / f"flash-{heap_k}"
    shutil.rmtree(flash, ignore_errors=True)
    shutil.copytree(flash0, flash)
    try:
        if stubs is None:
            p = probe("import vm_memory\n", heap=f"{heap_k}K", extra_paths=(*PATHS, cfg),
                      flash_dir=flash, firmware=firmware)
        else:
            p = probe("import vm_frozen\n", heap=f"{heap_k}K", firmware=stubs,
                      extra_paths=(FIRMWARE_DIR, *PATHS, cfg), flash_dir=flash)
        if p.lines() and p.lines()[-1] == "OK memory":
            return p, ""
        return None, "no OK"
    except ProbeError as e:
        return None, failure_kind(str(e))
    finally:
        shutil.rmtree(flash, ignore_errors=True)


def failure_kind(text: str) -> str:
    """"MemoryError" (out of heap, or a check failing after the App survived one),
    "corrupt" (a wasm trap, or an object read back as another type: the VM's collector,
    docs/vm.md section 3; a real 32-bit build never failed so), else "error"."""
    if "MemoryError" in text:
        return "MemoryError"
    if ("trap" in text or "exit -1" in text or "TypeError" in text or "AttributeError" in text
            or "IndexError" in text):
        return "corrupt"
    return "error"


def smallest_heap(run_at, start: int, step: int, repeat: int, floor: int = 16):
    """The smallest size in `step` KB units between `floor` and `start` at which every one
    of `repeat` runs passes, by bisection (a fresh copy of the flash each run: the folder's
    inode numbers, which os.stat() hands the VM, vary and so does the heap's layout).
    (that size, the sizes tried as [(KB, passes, failure kinds)], a probe of it)."""
    runs = []

    def ok_at(k):
        # `repeat` runs that did not end in the VM's own corruption, with up to `repeat`
        # more tries for those that did; all of them must pass (a size where only
        # corrupted runs failed is run again, not taken as too small).
        got, bad, tries = [], [], 0
        while len(got) + len(bad) < repeat and tries < 2 * repeat:
            p, why = run_at(k)
            tries += 1
            if p is not None:
                got.append(p)
            elif why != "corrupt":
                bad.append(why)
        if not got and not bad:   # only corrupted runs: the VM's fault, not too small
            runs.append((k, 0, ["corrupt"]))
            return "corrupt"
        runs.append((k, len(got), sorted(set(bad) | ({"corrupt"} if tries > len(got) + len(bad)
                                                        else set()))))
        return None if bad else got[0]
    best = ok_at(start)
    if best is None or best == "corrupt":
        raise RuntimeError(f"the firmware does not run even in a {start} KB heap")
    lo, hi = floor, start          # lo: taken as failing; hi: no run ran out of memory
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            mid = lo + step
        got = ok_at(mid)
        if got is None:
            lo = mid
        else:
            hi = mid
            best = best if got == "corrupt" else got
    return hi, sorted(runs, reverse=True), best


def larger_heaps_fail(run_at, smallest: int, span: int, step: int) -> list[tuple[int, str]]:
    """Every size above `smallest` up to `span` KB more, run once (again if the VM corrupted
    its heap, up to twice): [(KB, why)] that failed."""
    out = []
    for k in range(smallest + step, smallest + span + 1, step):
        for _ in range(3):
            p, why = run_at(k)
            if p is not None or why != "corrupt":
                break
        if p is None:
            out.append((k, why))
    return out



def _roots(cfg: Path) -> list[Path]:
    """The host folders behind /lib0, /lib1, ... of a probe with PATHS and cfg."""
    return [FIRMWARE_DIR, VMLIB_DIR, VM_HELPERS, *PATHS, cfg]


def import_order(srcs: dict[str, Path]) -> list[str]:
    """The dotted names of `srcs` (name: source file), each after the modules its body
    imports (a topological order, from the sources' import statements; a module's
    package counts as imported)."""
    deps = {}
    for name, host in srcs.items():
        d = set()
        for node in ast.walk(ast.parse(host.read_text())):
            if isinstance(node, ast.Import):
                d.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                d.add(node.module)
                d.update(f"{node.module}.{a.name}" for a in node.names)
        pkg = name.rsplit(".", 1)[0] if "." in name else None
        deps[name] = sorted(x for x in d | ({pkg} if pkg else set()) if x in srcs and x != name)
    order, seen = [], set()

    def visit(n):
        if n in seen:
            return
        seen.add(n)
        for m in deps[n]:
            visit(m)
        order.append(n)
    for n in sorted(srcs):
        visit(n)
    return order


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
    order = import_order({name: host for name, (host, _) in mods.items()})
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
    fakes = [n for n, host, root in order if root in (VM_HELPERS, paths.VIRTUAL)]
    (cfg / "benchorder.py").write_text(f"ORDER = {entries!r}\nFAKES = {fakes!r}\n")
    return stubs


def mpy_firmware(tmp: Path) -> Path:
    """The firmware's packages as the .mpy files a deploy puts on the board."""
    fw = tmp / "fw-mpy"
    compile_mpy(FIRMWARE_DIR / "parcelbox", fw / "parcelbox")
    compile_mpy(FIRMWARE_DIR / "esp32" / "pb_esp32", fw / "pb_esp32")
    return fw


def _tried(runs, repeat):
    fails = [f"{k}K ({n} passed; {'/'.join(why)})" for k, n, why in runs if why]
    return (f"bisection in 4K steps, {repeat} runs at each size (a run the VM's collector "
            f"corrupted is run again): "
            + ", ".join(str(k) for k, _, _ in runs) + "K"
            + (f"; failures at {', '.join(fails)}" if fails else ""))


def scenario(mode: str, tmp: Path, quick: bool) -> dict:
    """Measure one scenario: its smallest heap (KB), the larger sizes that fail, figures."""
    codes, target = SCENARIOS[mode]
    codes = min(codes, 100) if quick else codes
    step, repeat, span = (64, 1, 64) if quick else (4, 3, MONO_SPAN_K)
    sub = tmp / mode
    sub.mkdir()
    flash0 = sub / "flash0"
    flash0.mkdir()
    prepare_flash(flash0, codes)
    cfg = _cfg(sub, codes)
    out = {"codes": codes, "target": target, "repeat": repeat}
    if mode == "mpy":
        fw = mpy_firmware(sub)
        run_at = lambda k: attempt(k, sub, flash0, cfg, firmware=fw)  # noqa: E731
    else:
        big, _ = attempt(1024, sub, flash0, cfg)
        if big is None:
            raise RuntimeError("the firmware does not run in a 1 MB heap")
        order = frozen_order(big.value("modules").split(","), cfg)
        stubs = frozen_setup(sub, cfg, order)
        out["fakes"] = [n for n, host, root in order if root in (VM_HELPERS, paths.VIRTUAL)]
        out["modules"] = len(order)
        run_at = lambda k: attempt(k, sub, flash0, cfg, stubs)  # noqa: E731
    big, why = run_at(1024)
    if big is None:
        raise RuntimeError(f"the {mode} device does not run in a 1 MB heap ({why})")
    smallest, runs, p = smallest_heap(run_at, START_K, step, repeat)
    out.update(smallest=smallest, runs=runs, above=larger_heaps_fail(run_at, smallest, span, step))
    if mode == "mpy":
        out["imports"] = int(big.value("imports"))
        out["device"] = int(big.value("device")) - out["imports"]
        out["figure"] = smallest
    else:
        out["rom"] = int(p.value("rom"))
        out["bodies"] = int(p.value("bodies")) - out["rom"]
        out["scaffold"] = int(p.value("fakes")) + int(p.value("world"))
        out["device"] = int(big.value("device")) - int(big.value("imports"))
        out["figure"] = round(smallest - out["rom"] / 1024, 1)
    return out


def rows_of(mode: str, m: dict) -> list[Row]:
    codes, target, fig = m["codes"], m["target"], m["figure"]
    what = ("as deployed (.mpy files)" if mode == "mpy" else "frozen (bytecode in flash)")
    over = "" if fig <= target else f"; {fig - target:.1f} KB over"
    real = [(k, w) for k, w in m["above"] if w != "corrupt"]
    rows = [Row(f"smallest heap, {what}, {codes:,} codes, full outbox, 4 KB command, connected",
                fig, "KB", f"<= {target} KB", fig <= target,
                (f"smallest total heap {m['smallest']}K minus the kept bytecode "
                 f"({m['rom'] / 1024:.1f} KB of {m['modules']} modules); module, class and "
                 f"function objects {m['bodies'] / 1024:.1f} KB; " if mode == "frozen" else "")
                + _tried(m["runs"], m["repeat"]) + over, extra={"runs": m["runs"]}),
            Row(f"{what}: larger heaps that run out of memory, up to {m['smallest'] + MONO_SPAN_K}K",
                len(real), "sizes", "0", not real,
                "each 4K step above the smallest run once (again if the VM corrupted its heap)"
                + (": failed at " + ", ".join(f"{k}K ({w})" for k, w in m["above"])
                   if m["above"] else ""), extra={"failed": m["above"]})]
    if mode == "mpy":
        rows.append(Row(f"{what}: the firmware's modules after import", round(m["imports"] / 1024, 1),
                        "KB", note="bytecode, qstrs and objects of every module the device imports"))
    else:
        rows.append(Row("frozen: of which the test scaffolding (fake machine, world, broker)",
                        round(m["scaffold"] / 1024, 1), "KB",
                        note=f"module objects of {', '.join(m['fakes'])} and the fake world's "
                             f"state; without them: {fig - m['scaffold'] / 1024:.1f} KB"))
    rows.append(Row(f"{what}: the device's objects after boot ({codes:,} codes, full outbox, link "
                    f"buffers)", round(m["device"] / 1024, 1), "KB",
                    note="heap after building App minus after imports"))
    return rows


def write_need(got: dict, path: Path = HEAP_NEED) -> None:
    """host_tools/tech/heap_need.json: base + per code of each mode, from this run (the per-code
    figure is the device's objects' growth from the mpy scenario's codes to the frozen's).
    Each need is the smallest heap plus one 4 KB step: at the edge, runs pass or fail by
    the heap's layout (the VM's inode numbers), and a board's heap is never laid out as
    in the VM either."""
    a, b = got["mpy"], got["frozen"]
    per = max(0, round((b["device"] - a["device"]) / (b["codes"] - a["codes"])))
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({"measured": f"{datetime.date.today().isoformat()}, bench_memory",
                "mpy": {"base_bytes": (a["smallest"] + NEED_MARGIN_K) * 1024 - per * a["codes"],
                        "per_code_bytes": per},
                "frozen": {"base_bytes": round((b["figure"] + NEED_MARGIN_K) * 1024) - per * b["codes"],
                           "per_code_bytes": per}})
    old.setdefault("psram_heap_bytes", 2097152)
    path.write_text(json.dumps(old, indent=1) + "\n")


def run(quick: bool = False) -> list[Row]:
    got = {}
    with tempfile.TemporaryDirectory(prefix="pb-bench-mem-") as t:
        for mode in SCENARIOS:
            got[mode] = scenario(mode, Path(t), quick)
    if not quick:
        write_need(got)
    return rows_of("mpy", got["mpy"]) + rows_of("frozen", got["frozen"])
