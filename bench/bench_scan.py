"""Keypad scan: the firmware's scanner against adafruit_matrixkeypad, in the same VM.

Both run in one MicroPython VM on the virtual keypad circuit (host_tools/virtual/keycircuit.py,
host_tools/virtual/keyrig.py): the firmware's `pb_esp32.hw.Hardware.scan` on machine.Pin-style
pins, and `Matrix_Keypad.pressed_keys` (adafruit-circuitpython-matrixkeypad 1.2.23, its
own source loaded into the VM) on digitalio pins over an identical circuit. Each figure
is the fuel between two marks around n scans, minus the same loop calling a function
that does nothing, divided by n; bytes are gc.mem_alloc() growth with the collector off.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench.common import Row
from bench.vmbench import matrix_keypad_dir, probe
from host_tools import paths

TITLE = "Keypad scan: firmware vs Matrix_Keypad (same VM, same circuit)"

BOARDS = ("esp32-devkitc-4x3", "esp32s3-devkitc-4x4")

PROGRAM = """
import keyrig
from benchprobe import measure, nothing
B = %(board)s
N = %(n)d
rig = keyrig.Rig(B, bounce_ms=5, seed=1)
mk = rig.a.mk
fw = rig.b.scan
kpb = rig.kpb
clock = rig.clock
ca = rig.ca
cb = rig.cb
node = cb.nr    # the first column's node, for the cost of one pin read
NC = cb.nc
NR = cb.nr


def mk_scan():
    return mk.pressed_keys


def fw_scan():
    return fw()


def fw_path():
    return kpb.update(fw(), clock())


def one_read():
    return cb.level(node)


rows_b = rig.b._rows
cols_b = rig.b._cols


# The firmware's scan before this issue (every row alone, every column read), on the
# same pins, for the same-run comparison.
def plain_scan():
    bits = 0
    k = 0
    r = 0
    while r < NR:
        row = rows_b[r]
        row(0)
        c = 0
        while c < NC:
            if not cols_b[c]():
                bits |= 1 << k
            k += 1
            c += 1
        row(1)
        r += 1
    return bits


key = B["keypad"]["layout"][4]
for state in ("idle", "held"):
    if state == "held":
        rig.press(key)
        clock.advance(50)  # past the bounce: a clean, steady press
        if mk.pressed_keys != [key] or fw() != kpb.bit(ord(key)):
            raise AssertionError("the two scanners disagree on the held key")
    elif mk.pressed_keys != [] or fw() != 0:
        raise AssertionError("a key reads pressed on an idle pad")
    r0 = ca.reads
    a_mk = measure(mk_scan, N)
    r_mk = (ca.reads - r0) // N
    r0 = cb.reads
    a_fw = measure(fw_scan, N)
    r_fw = (cb.reads - r0) // N
    a_fp = measure(fw_path, N)
    a_rd = measure(one_read, N)
    a_0 = measure(nothing, N)
    a_pl = measure(plain_scan, N)
    if plain_scan() != fw():
        raise AssertionError("the plain scan reads another frame")
    print("%%s=%%d %%d %%d %%d %%d %%d %%d %%d" %% (state, a_mk, a_fw, a_fp, a_rd, a_0, r_mk, r_fw,
                                            a_pl))
"""


def _measure(board: dict, n: int, lib: Path) -> dict:
    # 2M: the collector is off while n scans of Matrix_Keypad allocate ~500 B each
    p = probe(PROGRAM % {"board": json.dumps(board), "n": n}, heap="2M",
              extra_paths=(paths.FIRMWARE / "esp32", paths.VIRTUAL, lib))
    sp = p.spans()
    out = {}
    for k, state in enumerate(("idle", "held")):
        a_mk, a_fw, a_fp, a_rd, a_0, r_mk, r_fw, a_pl = map(int, p.value(state).split())
        base = 12 * k
        mk, fw, fp, rd, zero, pl = (sp[base + 2 * j] for j in range(6))
        out[state] = {
            "mk_instr": (mk - zero) / n, "fw_instr": (fw - zero) / n,
            "fw_path_instr": (fp - zero) / n, "read_instr": (rd - zero) / n,
            "mk_bytes": (a_mk - a_0) / n, "fw_bytes": (a_fw - a_0) / n,
            "fw_path_bytes": (a_fp - a_0) / n, "mk_reads": r_mk, "fw_reads": r_fw,
            "plain_instr": (pl - zero) / n, "plain_bytes": (a_pl - a_0) / n,
        }
    return out


def run(quick: bool = False) -> list[Row]:
    n = 20 if quick else 500
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lib = matrix_keypad_dir(Path(tmp))
        for name in BOARDS[:1] if quick else BOARDS:
            board = json.loads((paths.BOARDS / f"{name}.json").read_text())
            board.pop("description", None)
            kp = board["keypad"]
            size = f"{len(kp['rows'])}x{len(kp['cols'])}"
            res = _measure(board, n, lib)
            for state in ("idle", "held"):
                m = res[state]
                ratio = m["mk_instr"] / m["fw_instr"]
                what = f"{size}, {'no key' if state == 'idle' else 'one key held'}"
                rows += [
                    Row(f"firmware scan, {what}", round(m["fw_instr"]), "VM instr/scan",
                        note=f"{m['fw_reads']} pin reads/scan through the virtual circuit",
                        extra=m),
                    Row(f"Matrix_Keypad.pressed_keys, {what}", round(m["mk_instr"]),
                        "VM instr/scan", note=f"{m['mk_reads']} pin reads/scan"),
                    Row(f"instructions, Matrix_Keypad / firmware, {what}", round(ratio, 2), "x",
                        ">= 3x", ratio >= 3,
                        "both include the virtual circuit's pin model (Python in the VM, "
                        "C on a device): see the pin-read row"),
                    Row(f"firmware scan allocates, {what}", m["fw_bytes"], "B/scan", "0 B",
                        m["fw_bytes"] == 0, f"gc.mem_alloc() over {n} scans, collector off"),
                    Row(f"Matrix_Keypad allocates, {what}", m["mk_bytes"], "B/scan",
                        note="the pressed list, row_pins + col_pins, enumerate objects"),
                    Row(f"plain row-by-row scan (the firmware's before this issue), {what}",
                        round(m["plain_instr"]), "VM instr/scan",
                        note=f"Matrix_Keypad / plain: {m['mk_instr'] / m['plain_instr']:.2f}x; "
                             f"{m['plain_bytes']:g} B/scan"),
                    Row(f"firmware scan + Keypad.update (the whole scan path), {what}",
                        round(m["fw_path_instr"]), "VM instr/scan",
                        note=f"{m['fw_path_bytes']:g} B/scan allocated"),
                ]
            idle = res["idle"]
            own_fw = idle["fw_instr"] - idle["fw_reads"] * idle["read_instr"]
            own_mk = idle["mk_instr"] - idle["mk_reads"] * idle["read_instr"]
            rows += [
                Row(f"one pin read in the virtual circuit, {size}, no key",
                    round(idle["read_instr"]), "VM instr/read",
                    note="the circuit model's cost, in both figures above"),
                Row(f"scanner code alone (pin reads taken out), {size}, no key: "
                    "Matrix_Keypad / firmware", round(own_mk / own_fw, 2), "x",
                    note=f"firmware {own_fw:.0f}, Matrix_Keypad {own_mk:.0f} VM instr/scan; "
                         "pin writes and digitalio setters stay in"),
            ]
    return rows
