"""Code store: the firmware's CodeStore against a naive dict, heap per code and lookup cost.

In the MicroPython VM: heap is gc.mem_free() before and after building each store with
N codes (after full collections, the store kept alive), divided by N; so it counts every
object header, not only the codes' bytes. The naive store is what a first
version would do with the wire's hex digests: a dict {hex digest: (id, role,
compartment, uses, not_before, not_after)} (a tuple: its most compact form; epoch
seconds above 2**30 are long ints on a 32-bit MicroPython). Lookup cost is VM
instructions per lookup over R lookups, with the same loop around a function that does
nothing subtracted (bench/vmbench.py). A lookup that matches opens the file holding the
record and reads it back (about 270 B allocated), and the allocator's search for a free block depends on the heap's layout, which varies a little
from run to run (the flash folder's inode numbers reach the VM through os.stat): lookup
figures move by up to about 10 % between runs; heap figures by a few bytes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import bench.fw  # noqa: F401
from bench.common import Row
from bench.vmbench import flash_folder, probe

TITLE = "Code store vs a naive dict (heap per code, lookup cost)"
TARGET_B = 24
CODE_KEY = b"c" * 32      # as bench/vm/vm_store.py
TYPED = b"24681357"
T0 = 1795600000


def compares(n: int, code: bytes) -> int:
    """Digest comparisons CodeStore.find(code) makes over the VM program's codes, counted
    on CPython (the same codes, the same index: the count does not depend on the VM)."""
    import struct
    from hashlib import sha256

    from parcelbox import codestore
    from parcelbox.hmac256 import Hmac
    from host_tools.virtual.memflash import MemStorage
    mac = Hmac(CODE_KEY)
    s = codestore.CodeStore(MemStorage(), CODE_KEY, n)
    s.replace_all(((i, mac.digest(TYPED)[:16] if i == n else
                    sha256(struct.pack("<I", i)).digest()[:16], 1, 1, 1, T0, T0 + 86400)
                   for i in range(1, n + 1)), n)
    count = [0]
    real = codestore.equal

    def counting(a, b):
        count[0] += 1
        return real(a, b)
    codestore.equal = counting
    try:
        s.find(code)
    finally:
        codestore.equal = real
    return count[0]


def measure(n: int, r: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="pb-bench-cfg-") as cfg, flash_folder() as flash:
        Path(cfg, "benchcfg.py").write_text(f"N = {n}\nR = {r}\n")
        p = probe("import vm_store\n", heap="4M" if n > 2000 else "1M",
                  extra_paths=(Path(cfg),), flash_dir=flash)
    sp = p.spans()
    names = ("fw_hit", "fw_miss", "nv_hit", "nv_miss", "fw_code", "nv_code", "nothing",
             "compare")
    instr = {k: sp[2 * i] for i, k in enumerate(names)}
    allocs = dict(zip(names, map(int, p.value("alloc").split())))
    out = {"store_bytes": int(p.value("store")), "naive_bytes": int(p.value("naive")),
           "compares_hit": compares(n, TYPED), "compares_miss": compares(n, b"13572468")}
    for k in names:
        out[k] = (instr[k] - instr["nothing"]) / r
        out[k + "_bytes"] = (allocs[k] - allocs["nothing"]) / r
    return out


def run(quick: bool = False) -> list[Row]:
    sizes = (100,) if quick else (1000, 10_000)
    r = 10 if quick else 200
    rows = []
    for n in sizes:
        m = measure(n, r)
        per = m["store_bytes"] / n
        rows += [
            Row(f"CodeStore heap per code, {n:,} codes", round(per, 1), "B/code",
                f"<= {TARGET_B} B/code", per <= TARGET_B,
                f"{m['store_bytes']:,} B for {n:,} codes: 20 bytes a code in RAM (a 2-byte "
                "digest prefix; the record read back from flash on a match) + page headers"
                + ("" if per <= TARGET_B else f"; {per - TARGET_B:.1f} B/code over"),
                extra=m),
            Row(f"naive dict heap per code, {n:,} codes", round(m["naive_bytes"] / n, 1),
                "B/code", note=f"{m['naive_bytes'] / m['store_bytes']:.1f} x the CodeStore"),
            Row(f"CodeStore lookup of a stored digest, {n:,} codes", round(m["fw_hit"]),
                "VM instr", note=f"{m['fw_hit_bytes']:g} B allocated; {m['compares_hit']} "
                                 f"digest compares, each after a 32-byte flash read; unknown "
                                 f"digest: {m['fw_miss']:,.0f} VM instr, {m['compares_miss']} "
                                 "compares"),
            Row(f"naive dict lookup of a stored digest, {n:,} codes", round(m["nv_hit"]),
                "VM instr", note=f"{m['nv_hit_bytes']:g} B allocated (hex string); unknown: "
                                 f"{m['nv_miss']:,.0f} VM instr"),
            Row("one 16-byte constant-time digest compare (hmac256.equal)", round(m["compare"]),
                "VM instr", note="Python, every byte read whatever the first difference"),
            Row(f"typed code to slot (HMAC + lookup), CodeStore vs naive, {n:,} codes",
                f"{m['fw_code']:,.0f} vs {m['nv_code']:,.0f}", "VM instr",
                note=f"the same keyed HMAC in both: {m['fw_code'] - m['fw_hit']:,.0f} VM instr"),
        ]
    return rows
