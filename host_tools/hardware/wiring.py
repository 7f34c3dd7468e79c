"""Wiring table and diagram of each board, generated from its board file (hardware/).

``parcelbox hardware generate`` writes, for every ``boards/*.json``,
``hardware/<board>/wiring.md`` (role, GPIO, header pin, what it connects to, pulls and
active levels; the header in pin order), ``hardware/<board>/wiring.svg`` (the dev board's pins
on the left, the peripherals on the right, one labelled line per pin),
``hardware/<board>/schematic.svg`` (host_tools/hardware/schematic.py) and ``hardware/<board>/README.md``
(host_tools/hardware/page.py), and fills the generated blocks of ``hardware/README.md``. All come
from the board.json the firmware reads (host_tools/hardware/design.py), so the pictures and the
firmware cannot disagree; ``--check`` lists what is out of date and exits 1.

The SVGs are written by hand with the standard library: no drawing dependency.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from xml.sax.saxutils import escape

from host_tools import paths
from host_tools.hardware import calc as hwcalc
from host_tools.hardware import design as hwdesign
from host_tools.hardware import header as hwheader
from host_tools.hardware import page as hwpage
from host_tools.hardware import schematic as hwschematic
from host_tools.hardware import svgdraw as sd
from host_tools.boards import pin_name
from host_tools.hardware.design import Design, Group, Wire

REGENERATE = "run `parcelbox hardware generate`"
_BLOCK = re.compile(r"(<!-- generated: ([a-z-]+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def table_md(d: Design) -> str:
    """hardware/<board>/wiring.md."""
    out = [f"# {d.name}: wiring", "",
           f"<!-- Generated from boards/{d.name}.json by `parcelbox hardware generate`; do not edit. -->", "",
           f"Generated from `boards/{d.name}.json`, through the board.json the firmware reads, by "
           f"`parcelbox hardware generate`: edit the board file, never this page. Header pins "
           f"{d.devboard.header_note}. Parts by reference: the bill of materials in [README.md](README.md). "
           f"Diagram: [wiring.svg](wiring.svg); schematic, with the header in pin order: "
           f"[schematic.svg](schematic.svg).", "",
           "## Signals", "",
           f"| role | {'pin' if d.linux else 'GPIO'} | header | connects to | notes |",
           "| --- | --- | --- | --- | --- |"]
    power = []
    for w in d.wires():
        if w.pin in hwdesign.POWER:
            power.append(w)
            continue
        out.append(f"| {w.role} | {w.pin} | {d.header(w.pin)} | {_cell(w.to)} | {_cell(w.notes)} |")
    out += ["", "## Power", "", "| supply | header | connects to | notes |", "| --- | --- | --- | --- |"]
    for w in power:
        out.append(f"| {w.pin} | {d.header(w.pin)} | {_cell(w.to)} | {_cell(w.notes)} |")
    out += [""] + hwheader.table_md(d)[:-1]
    if d.linux:
        out += ["", "3.3 V logic: the Pi's GPIO pins take 0 to 3.3 V and are not 5 V tolerant. Nothing "
                "on this page connects a GPIO to 5 V or 12 V; keep it so (pull-ups to 3V3, pin 1 or 17).",
                "", "## Checks before the first power-up", "",
                "With the ribbon cable off the Pi's header and the supply off, measure at the cable's socket with an ohmmeter:", ""]
    else:
        out += ["", "## Checks before the first power-up", "",
                "With the dev board out of its socket and the supply off, measure with an ohmmeter:", ""]
    ref = {p.does: p.ref for p in d.parts}
    r, i_nom = hwcalc.v("coil_ohm"), hwcalc.v("v_nom") / hwcalc.v("coil_ohm")
    rg = hwcalc.vc("r_gate", d.chip)
    for i, c in enumerate(d.board["compartments"], 1):
        out.append(f"- socket pin of {pin_name(c['solenoid'])} to GND: {(rg + 10000) / 1000:g} kOhm "
                   f"({ref[f'compartment {i} gate resistor']} {rg:g} Ohm and "
                   f"{ref[f'compartment {i} gate pull-down']} 10 kOhm); "
                   f"{ref[f'compartment {i} lock']}'s coil: its rated resistance "
                   f"({r:g} Ohm for a {i_nom:g} A lock), not 0.")
    shut = "0 Ohm with the door shut" if d.board["door_open_level"] == 1 else "open with the door shut"
    doors = ", ".join(str(c["door"]) for c in d.board["compartments"])
    out.append(f"- socket pins of {'' if d.linux else 'GPIO'}{doors} (doors) to GND: {shut}, the other way "
               f"with it open.")
    out.append("- +12 V to GND: no short (the MOSFETs are off; the flyback diodes block).")
    out.append("")
    return "\n".join(out)


# ---- the diagram -------------------------------------------------------------------

_ROW = 24          # one pin
_LINE = 16         # one line of description
_GAP = 14          # between groups
_X_BLOCK, _W_BLOCK = 20, 250
_X_PERI, _W_PERI = 580, 440
_X_DESC = _X_PERI + 190
_KEY = 22          # keypad grid cell
_COLOURS = sd.COLOURS
_LEGEND = (("row", "keypad row"), ("col", "keypad column"), ("solenoid", "solenoid gate"), ("door", "door"),
           ("led", "LED"), ("buzzer", "buzzer"), ("tamper", "tamper"), ("battery", "battery sense"),
           ("5V", "5 V"), ("GND", "GND"), ("3V3", "3.3 V"))


def _kind(w: Wire) -> str:
    return sd.kind(w.role, w.pin)


def _text(x: float, y: float, s: str, size: int = 12, anchor: str = "start", weight: str = "normal",
          fill: str = "#222222", mono: bool = False) -> str:
    family = "monospace" if mono else "sans-serif"
    return (f'<text x="{x:g}" y="{y:g}" font-family="{family}" font-size="{size}" font-weight="{weight}" '
            f'text-anchor="{anchor}" fill="{fill}">{escape(s)}</text>')


def _group_height(g: Group, d: Design) -> int:
    lines = 1 + sum(len(textwrap.wrap(t, 34)) for t in g.lines)
    need = 12 + _LINE * lines
    if g.key == "keypad":
        need += 8 + _KEY * len(d.board["keypad"]["rows"])
    return max(_ROW * len(g.wires), need) + 12


def svg(d: Design) -> str:
    """hardware/<board>/wiring.svg."""
    body: list[str] = []
    y = 96
    top = y - 36
    rows: list[tuple[float, Wire]] = []
    for g in d.groups:
        h = _group_height(g, d)
        body.append(f'<rect x="{_X_PERI}" y="{y}" width="{_W_PERI}" height="{h}" rx="6" fill="#fbfbf7" '
                    f'stroke="#555555"/>')
        ty = y + 20
        body.append(_text(_X_DESC, ty, g.title, 13, weight="bold"))
        for t in g.lines:
            for part in textwrap.wrap(t, 34):
                ty += _LINE
                body.append(_text(_X_DESC, ty, part))
        if g.key == "keypad":
            body += _keypad_grid(d, _X_DESC, ty + 10)
        wy = y + 12 + _ROW / 2
        for w in g.wires:
            rows.append((wy, w))
            colour = _COLOURS[_kind(w)]
            body.append(f'<line x1="{_X_BLOCK + _W_BLOCK}" y1="{wy:g}" x2="{_X_PERI}" y2="{wy:g}" '
                        f'stroke="{colour}" stroke-width="2"/>')
            body.append(f'<circle cx="{_X_PERI}" cy="{wy:g}" r="3" fill="{colour}"/>')
            pin = f"GPIO{w.pin}" if isinstance(w.pin, int) else w.pin
            body.append(_text(_X_BLOCK + _W_BLOCK + 10, wy - 5, pin, 12, weight="bold", fill=colour))
            body.append(_text(_X_PERI - 10, wy - 5, w.role, 11, anchor="end", fill="#444444"))
            body.append(_text(_X_PERI + 10, wy + 4, w.label, 12, mono=True))
            wy += _ROW
        y += h + _GAP
    bottom = y - _GAP + 12
    block = [f'<rect x="{_X_BLOCK}" y="{top}" width="{_W_BLOCK}" height="{bottom - top}" rx="8" '
             f'fill="#eaf2f8" stroke="#1b4f72" stroke-width="2"/>',
             _text(_X_BLOCK + 12, top + 20, d.devboard.title, 13, weight="bold", fill="#1b4f72"),
             _text(_X_BLOCK + 12, top + 36, f"{d.chip}: {'pin' if d.linux else 'GPIO'}, header pin", 11,
                   fill="#1b4f72")]
    for wy, w in rows:
        pin = f"GPIO{w.pin}" if isinstance(w.pin, int) else w.pin
        block.append(_text(_X_BLOCK + 16, wy + 4, pin, 12, weight="bold", mono=True))
        block.append(_text(_X_BLOCK + 120, wy + 4, d.header(w.pin), 12, fill="#555555", mono=True))
        block.append(f'<rect x="{_X_BLOCK + _W_BLOCK - 8}" y="{wy - 5:g}" width="10" height="10" '
                     f'fill="#b7950b" stroke="#7d6608"/>')
    width = _X_PERI + _W_PERI + 20
    legend, ly = _legend(d, bottom + 28, width)
    height = ly + 34
    head = ['<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">',
            f"<title>{escape(d.name)}: wiring</title>",
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
            _text(20, 30, f"{d.name}: wiring", 18, weight="bold"),
            _text(20, 50, f"Generated from boards/{d.name}.json by `parcelbox hardware generate`; do not "
                          f"edit. Parts: README.md; every pin: wiring.md.", 11, fill="#555555")]
    return "\n".join(head + block + body + legend + ["</svg>", ""])


def _keypad_grid(d: Design, x: float, y: float) -> list[str]:
    kp = d.board["keypad"]
    nr, nc, lay = len(kp["rows"]), len(kp["cols"]), kp["layout"]
    out = []
    for r in range(nr):
        for c in range(nc):
            cx, cy = x + 24 + c * _KEY, y + r * _KEY
            out.append(f'<rect x="{cx:g}" y="{cy:g}" width="{_KEY - 3}" height="{_KEY - 3}" rx="3" '
                       f'fill="#ffffff" stroke="#888888"/>')
            out.append(_text(cx + (_KEY - 3) / 2, cy + 15, lay[r * nc + c], 12, anchor="middle", mono=True))
        out.append(_text(x, y + r * _KEY + 15, f"R{r + 1}", 10, fill=_COLOURS["row"]))
    for c in range(nc):
        out.append(_text(x + 24 + c * _KEY + (_KEY - 3) / 2, y + nr * _KEY + 12, f"C{c + 1}", 10,
                         anchor="middle", fill=_COLOURS["col"]))
    return out


def _legend(d: Design, y: float, width: int) -> tuple[list[str], float]:
    used = {_kind(w) for w in d.wires()}
    out = [_text(20, y, "Lines:", 11, weight="bold")]
    x = 70
    for key, name in _LEGEND:
        if key not in used:
            continue
        w = 40 + 7 * len(name)
        if x + w > width - 20:
            x, y = 70, y + 18
        out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 22}" y2="{y - 4}" stroke="{_COLOURS[key]}" '
                   f'stroke-width="3"/>')
        out.append(_text(x + 28, y, name, 11))
        x += w
    return out, y


# ---- generate and check ------------------------------------------------------------

def designs(boards_dir: Path) -> tuple[list[Design], list[str]]:
    """The circuit of every board file, and the files skipped (no reference dev board for
    their chip yet). An invalid board raises BoardFileError."""
    out, skipped = [], []
    for path in sorted(Path(boards_dir).glob("*.json")):
        try:
            out.append(hwdesign.design(path))
        except hwdesign.NoDevBoard as e:
            skipped.append(str(e))
    return out, skipped


def fill_blocks(text: str, blocks: dict[str, str], where: str) -> str:
    """Replace the body of every `<!-- generated: KEY -->` block of `text`."""
    seen = set()

    def sub(m: re.Match) -> str:
        key = m.group(2)
        if key not in blocks:
            raise ValueError(f"{where}: unknown generated block {key!r} (known: {', '.join(blocks)})")
        seen.add(key)
        return m.group(1) + blocks[key].rstrip("\n") + "\n" + m.group(4)

    out = _BLOCK.sub(sub, text)
    missing = [k for k in blocks if k not in seen]
    if missing:
        raise ValueError(f"{where}: lacks the generated block(s) {', '.join(missing)} "
                         f"(<!-- generated: KEY --> ... <!-- end generated -->)")
    return out


def outputs(boards_dir: Path = paths.BOARDS, out_dir: Path = paths.work_dir() / "hardware") -> tuple[dict[Path, str], list[str]]:
    """Every generated file's path and content, and the board files skipped."""
    ds, skipped = designs(boards_dir)
    files: dict[Path, str] = {}
    for d in ds:
        base = Path(out_dir) / d.name
        files[base / "README.md"] = hwpage.page(d)
        files[base / "wiring.md"] = table_md(d)
        files[base / "wiring.svg"] = svg(d)
        files[base / "schematic.svg"] = hwschematic.svg(d)
    index = Path(out_dir) / "README.md"
    if not index.exists():
        raise ValueError(f"{index} is missing: it holds the generated blocks 'boards' and 'inputs'")
    files[index] = fill_blocks(index.read_text(encoding="utf-8"),
                               {"boards": hwpage.index_boards(ds), "inputs": hwpage.index_inputs()}, str(index))
    return files, skipped


def stale(files: dict[Path, str]) -> list[Path]:
    """The generated files that are missing or differ from what is on disk."""
    out = []
    for path, text in files.items():
        try:
            if path.read_text(encoding="utf-8") != text:
                out.append(path)
        except FileNotFoundError:
            out.append(path)
    return out


def orphans(files: dict[Path, str], out_dir: Path) -> list[Path]:
    """Board folders under hardware/ whose board file is gone."""
    made = {p.parent for p in files}
    return sorted(p for p in Path(out_dir).iterdir() if p.is_dir() and p not in made)


def write(files: dict[Path, str]) -> list[Path]:
    changed = stale(files)
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
    return changed
