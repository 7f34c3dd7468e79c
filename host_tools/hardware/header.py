"""The dev board's header pins in physical order, each with what it connects to.

One list of rows (:func:`rows`) feeds the table in wiring.md and the first section of
schematic.svg, so the two show the same pins in the same order as the board holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from host_tools import boards as _boards
from host_tools.boards import pin_name
from host_tools.hardware import svgdraw as sd
from host_tools.hardware.design import OTHER, POWER, Design


@dataclass(frozen=True)
class Pin:
    pin: str            # header pin, "J3-2"
    name: str           # "GPIO23", "D17", "GND", "EN"
    use: str            # the role ("compartment 1 solenoid"), or "" when nothing connects
    to: str             # short: what it connects to, or why it stays free
    colour: str


def _short(why: str) -> str:
    """'is wired to the module's SPI flash (GPIO6-11): ...' -> "wired to the module's SPI flash"."""
    s = why[3:] if why.startswith("is ") else why
    for cut in (" (", ":", ";", ",", " with ", " of "):
        s = s.split(cut, 1)[0]
    return s


def _pin(d: Design, pin: str, lab) -> Pin:
    if lab in POWER:
        w = next((w for w in d.wires() if w.pin == lab), None)
        if w and d.header(lab) == pin:
            return Pin(pin, lab, w.role, w.to, sd.COLOURS[lab])
        if lab == "GND":
            return Pin(pin, lab, "", "spare ground", sd.GREY)
        if w and d.linux and lab == "5V":      # the Pi takes its 5 V through both pins
            return Pin(pin, lab, w.role, f"{w.to}, with {d.header(lab)}", sd.COLOURS[lab])
        return Pin(pin, lab, "", "not used", sd.GREY)
    if lab in OTHER:
        return Pin(pin, lab, "", "reset (EN of the chip): leave free", sd.GREY)
    name = pin_name(lab)
    used = [w for w in d.wires() if w.pin == lab]
    if used:
        w = used[0]
        to = w.to if w.role.startswith("keypad") else w.label    # "KP1 R1 (keys 1 2 3)", "R1 -> Q1 gate"
        return Pin(pin, name, w.role, to, sd.COLOURS[sd.kind(w.role, w.pin)])
    chip = _boards.CHIPS[d.chip]
    why = (d.module.takes.get(lab) if d.module else None) or chip.reserved.get(lab)
    if not why and lab in chip.caution and not (d.module and lab in d.module.frees):
        why = chip.caution[lab]
    if why:
        return Pin(pin, name, "", "not free: " + _short(why), sd.GREY)
    return Pin(pin, name, "", "free (a strapping pin)" if lab in chip.straps and not chip.named else "free",
               sd.GREY)


def rows(d: Design) -> list[tuple[Pin, Pin]]:
    """The header pins two by two, as they sit side by side on the board (pin 1 first)."""
    pins = [_pin(d, p, lab) for p, lab in d.devboard.headers]
    if d.devboard.odd_even:
        return list(zip(pins[0::2], pins[1::2]))
    first = d.devboard.headers[0][0].split("-")[0]
    left = [p for p in pins if p.pin.startswith(first + "-")]
    right = [p for p in pins if not p.pin.startswith(first + "-")]
    return list(zip(left, right))


def table_md(d: Design) -> list[str]:
    """wiring.md's section: the header in physical order."""
    if d.devboard.odd_even:
        head = "One two-row header: odd pins on the left (the inner row), even pins on the right."
    else:
        a, b = (r.pin.split("-")[0] for r in rows(d)[0])
        head = f"Two headers, {a} on the left and {b} on the right, seen from above with the USB port at the bottom."
    out = ["## Header order", "",
           f"Every pin of the {d.devboard.title}'s header as it sits on the board, pin 1 at the top. {head} "
           f"The same as the first section of [schematic.svg](schematic.svg).", "",
           "| pin | name | connects to | pin | name | connects to |", "| --- | --- | --- | --- | --- | --- |"]
    for a, b in rows(d):
        out.append(f"| {a.pin} | {a.name} | {_cell(a)} | {b.pin} | {b.name} | {_cell(b)} |")
    return out + [""]


def _cell(p: Pin) -> str:
    return (f"**{p.use}**: {p.to}" if p.use else p.to).replace("|", "\\|")


_ROW = 20


def svg(d: Design, x: float, y: float, width: float) -> tuple[list[str], float]:
    """The header drawn as the board holds it, at (x, y); returns the elements and the bottom."""
    rs = rows(d)
    cx, bw = x + width / 2, 230
    top = y + 34
    out = [sd.text(x, y + 14, f"A1 {d.devboard.title}: header pins in physical order", 14, weight="bold"),
           sd.rect(cx - bw / 2, top, bw, _ROW * len(rs) + 16, fill="#eaf2f8", stroke="#1b4f72", rx=8)]
    for i, (a, b) in enumerate(rs):
        ry = top + 8 + _ROW * i + _ROW / 2
        for p, side in ((a, -1), (b, 1)):
            px = cx + side * (bw / 2)
            out.append(sd.rect(px - 5, ry - 5, 10, 10, fill="#b7950b" if p.use else "#d5d8dc", stroke="#7d6608"))
            num = p.pin.split("-")[1]
            inner = px - side * 12
            anchor = "start" if side < 0 else "end"
            out.append(sd.text(inner, ry + 4, num, 10, anchor, fill="#555555", mono=True))
            out.append(sd.text(inner - side * 24, ry + 4, p.name, 11, anchor, "bold", p.colour, mono=True,
                               cls="hdr" if p.use else ""))
            out.append(sd.line((px + side * 5, ry), (px + side * 22, ry), colour=p.colour,
                               width=2 if p.use else 1))
            label = f"{p.use}: {p.to}" if p.use else p.to
            out.append(sd.text(px + side * 28, ry + 4, label, 11, "end" if side < 0 else "start",
                               fill=sd.INK if p.use else sd.GREY))
    names = [r.pin.split("-")[0] for r in rs[0]]
    if d.devboard.odd_even:
        out.append(sd.text(cx, top - 6, f"{names[0]}: odd pins | even pins", 11, "middle", fill="#1b4f72"))
    else:
        out.append(sd.text(cx - bw / 2 + 4, top - 6, names[0], 11, weight="bold", fill="#1b4f72"))
        out.append(sd.text(cx + bw / 2 - 4, top - 6, names[1], 11, "end", "bold", "#1b4f72"))
    bottom = top + _ROW * len(rs) + 16
    out.append(sd.text(cx, bottom + 16, "(the USB ports at this end)" if d.linux else "(USB at this end)",
                       11, "middle", fill="#555555"))
    return out, bottom + 24
