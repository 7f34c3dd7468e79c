"""Keypress to unlock: VM instructions from the final key sample to the solenoid command.

In the MicroPython VM, a one-door box (Box on Storage over the VM's /flash folder) holds
1, 100, 1,000 or 10,000 codes; a driver's 8-digit deposit code is fed to the keypad
decoder scan frame by scan frame (every 10 ms, 20 ms debounce). The span is marked
around exactly two calls: `box.keypad_frame(frame, now)` with the sample that makes the
decoder accept the last digit (code entry, throttle charge saved to flash, one HMAC,
the index lookup, the refund and grant saved, the use consumed on flash, the unlock) and
`box.solenoid(1, now)`, which then says "energise". The fuel of two back-to-back marks
is subtracted (bench/vmbench.py). Two cases: the first attempt after a full sync of the
codes (typed at once: with 10,000 codes the ticks are still counting the active codes for
the throttle, so the count is not ready) and an attempt after a wrong one within the same
minute. The count itself, taken by tick() 32 codes at a time, is reported beside.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import Row
from bench.vmbench import flash_folder, probe

TITLE = "Keypress to unlock (VM instructions, by codes stored)"

SIZES = (1, 100, 1000, 10_000)
CASES = (("cold", "first attempt after the sync"), ("warm", "after another attempt within the minute"))


def measure(n: int, case: str) -> tuple[int, int]:
    """(VM instructions, bytes allocated) of the span for n codes stored."""
    with tempfile.TemporaryDirectory(prefix="pb-bench-cfg-") as cfg, flash_folder() as flash:
        Path(cfg, "benchcfg.py").write_text(f"N = {n}\nCASE = {case!r}\n")
        p = probe("import vm_keypress\n", heap="2M" if n > 2000 else "1M",
                  extra_paths=(Path(cfg),), flash_dir=flash)
    if int(p.value("codes")) != n:
        raise RuntimeError(f"the store holds {p.value('codes')} codes, not {n}")
    sp = p.spans()
    # spans: the overhead pair, [a wrong attempt, gap,] gap, the attempt, gap, slice, whole
    over = sp[0]
    return sp[-4] - over, int(p.value("alloc")), sp[-2] - over, sp[-1] - over


def run(quick: bool = False) -> list[Row]:
    sizes = (1, 100) if quick else SIZES
    rows = []
    for case, label in CASES:
        got = {n: measure(n, case) for n in sizes}
        base = got[sizes[0]][0]
        for n in sizes:
            instr, alloc, piece, whole = got[n]
            rows.append(Row(f"final key to unlock, {n:,} codes, {label}", instr, "VM instr",
                            note=f"{alloc} B allocated in the span", extra={"bytes": alloc}))
        if case == "warm":
            for n in sizes:
                rows.append(Row(f"count of active codes (tick, off the keypress path), {n:,} codes",
                                got[n][3], "VM instr",
                                note=f"taken {32 if n > 32 else n} codes a tick: "
                                     f"{got[n][2]:,} VM instr per tick while it runs"))
        top = sizes[-1]
        growth = got[top][0] / base - 1
        rows.append(Row(f"{top:,} codes vs 1 code, {label}", round(100 * growth, 1), "% more",
                        "<= 10 %", abs(growth) <= 0.10,
                        f"{got[top][0] - base:+,} VM instr"))
    return rows
