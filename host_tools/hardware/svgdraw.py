"""Schematic symbols as plain SVG text, written with the standard library (no drawing dependency).

Each symbol takes the points its leads end at and returns SVG elements. A fitted part is a
``<g class="part" id="R1" data-kind="resistor" data-value="100 Ohm">`` group, so a test can
compare the drawing with the bill of materials; its reference and value are printed beside it.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

INK = "#222222"
GREY = "#888888"
# one colour per kind of wire, shared by wiring.svg and schematic.svg
COLOURS = {"row": "#1f5fbf", "col": "#2e86c1", "solenoid": "#c0392b", "door": "#1e8449", "led": "#8e44ad",
           "buzzer": "#d35400", "tamper": "#7d6608", "battery": "#6e2c00", "5V": "#e74c3c", "GND": "#222222",
           "3V3": "#e67e22"}
_KINDS = (("row", "row"), ("column", "col"), ("solenoid", "solenoid"), ("door", "door"), ("LED", "led"),
          ("buzzer", "buzzer"), ("tamper", "tamper"), ("battery", "battery"))


def kind(role: str, pin) -> str:
    """The colour key of a wire: its supply, or what its role names."""
    if pin in ("5V", "GND", "3V3"):
        return pin
    for word, key in _KINDS:
        if word in role:
            return key
    return "GND"


def text(x: float, y: float, s: str, size: int = 12, anchor: str = "start", weight: str = "normal",
         fill: str = INK, mono: bool = False, cls: str = "") -> str:
    family = "monospace" if mono else "sans-serif"
    c = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:g}" y="{y:g}"{c} font-family="{family}" font-size="{size}" font-weight="{weight}" '
            f'text-anchor="{anchor}" fill="{fill}">{escape(s)}</text>')


def line(*pts: tuple[float, float], colour: str = INK, width: float = 1.5, dash: bool = False) -> str:
    d = ' stroke-dasharray="4 3"' if dash else ""
    p = " ".join(f"{x:g},{y:g}" for x, y in pts)
    return f'<polyline points="{p}" fill="none" stroke="{colour}" stroke-width="{width:g}"{d}/>'


def dot(x: float, y: float) -> str:
    return f'<circle cx="{x:g}" cy="{y:g}" r="3" fill="{INK}"/>'


def rect(x: float, y: float, w: float, h: float, fill: str = "#ffffff", stroke: str = INK,
         dash: bool = False, rx: float = 0) -> str:
    d = ' stroke-dasharray="4 3"' if dash else ""
    return (f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="{rx:g}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"{d}/>')


def part(ref: str, kind_: str, value: str, body: list[str]) -> list[str]:
    """A fitted part: its drawing grouped under its reference designator."""
    return [f'<g class="part" id={quoteattr(ref)} data-kind={quoteattr(kind_)} data-value={quoteattr(value)}>',
            *body, "</g>"]


def labels(x: float, y: float, lines: list[str], anchor: str = "start") -> list[str]:
    """A part's reference (bold) and then its value, one line each."""
    out = []
    for i, s in enumerate(lines):
        out.append(text(x, y + i * 13, s, 12 if i == 0 else 11, anchor, "bold" if i == 0 else "normal"))
    return out


# ---- two-lead parts, vertical (y1 above y2) unless named _h --------------------------------

def resistor(x: float, y1: float, y2: float, names: list[str], left: bool = False,
             internal: bool = False) -> list[str]:
    """A resistor (IEC box); dashed when it is the chip's own pull-up, not a part to fit."""
    m = (y1 + y2) / 2
    colour = GREY if internal else INK
    lx, anchor = (x - 10, "end") if left else (x + 10, "start")
    return [line((x, y1), (x, m - 14), colour=colour), line((x, m + 14), (x, y2), colour=colour),
            rect(x - 5, m - 14, 10, 28, dash=internal, stroke=colour),
            *labels(lx, m - 2, names, anchor)]


def resistor_h(x1: float, x2: float, y: float, names: list[str]) -> list[str]:
    m = (x1 + x2) / 2
    return [line((x1, y), (m - 14, y)), line((m + 14, y), (x2, y)), rect(m - 14, y - 5, 28, 10),
            text(m, y - 10, "  ".join(names), 11, "middle")]


def _triangle(x: float, y: float, up: bool, fill: str = "#ffffff") -> list[str]:
    """A diode's body centred at (x, y): the bar is the cathode, at the top when `up`."""
    s = -1 if up else 1
    tip, base = y + s * 6, y - s * 6
    return [f'<polygon points="{x - 7:g},{base:g} {x + 7:g},{base:g} {x:g},{tip:g}" fill="{fill}" '
            f'stroke="{INK}" stroke-width="1.5"/>', line((x - 7, tip), (x + 7, tip))]


def diode(x: float, y1: float, y2: float, names: list[str], up: bool = True, left: bool = True) -> list[str]:
    m = (y1 + y2) / 2
    lx, anchor = (x - 12, "end") if left else (x + 12, "start")
    return [line((x, y1), (x, y2)), *_triangle(x, m, up), *labels(lx, m - 2, names, anchor)]


def led_h(x1: float, x2: float, y: float, colour: str, anode_left: bool = True) -> list[str]:
    """An LED lying down, anode on the left unless told; two arrows for its light."""
    m = (x1 + x2) / 2
    s = 1 if anode_left else -1
    tip, base = m + s * 6, m - s * 6
    out = [line((x1, y), (x2, y)),
           f'<polygon points="{base:g},{y - 7:g} {base:g},{y + 7:g} {tip:g},{y:g}" fill="{colour}" '
           f'stroke="{INK}" stroke-width="1.5"/>', line((tip, y - 7), (tip, y + 7))]
    for dx in (-2, 4):
        out.append(line((m + dx, y - 9), (m + dx + 6, y - 15), width=1))
        out.append(line((m + dx + 6, y - 15), (m + dx + 2, y - 14), width=1))
    return out


def coil(x: float, y1: float, y2: float, names: list[str]) -> list[str]:
    """The solenoid's coil: four loops between its leads."""
    m = (y1 + y2) / 2
    top = m - 16
    arcs = " ".join("a 4 4 0 0 1 0 8" for _ in range(4))
    return [line((x, y1), (x, top)), line((x, top + 32), (x, y2)),
            f'<path d="M {x:g} {top:g} {arcs}" fill="none" stroke="{INK}" stroke-width="1.5"/>',
            *labels(x + 14, m - 2, names)]


def capacitor(x: float, y1: float, y2: float, names: list[str]) -> list[str]:
    m = (y1 + y2) / 2
    return [line((x, y1), (x, m - 3)), line((x, m + 3), (x, y2)), line((x - 9, m - 3), (x + 9, m - 3), width=2),
            line((x - 9, m + 3), (x + 9, m + 3), width=2), *labels(x + 14, m - 2, names)]


def switch(x: float, y1: float, y2: float, names: list[str]) -> list[str]:
    """A switch contact (reed, micro switch), drawn open."""
    m = (y1 + y2) / 2
    return [line((x, y1), (x, m - 10)), line((x, m + 10), (x, y2)), line((x, m + 10), (x - 10, m - 8)),
            f'<circle cx="{x:g}" cy="{m - 10:g}" r="2" fill="#ffffff" stroke="{INK}"/>',
            *labels(x + 12, m - 2, names)]


def buzzer(x: float, y1: float, y2: float, names: list[str]) -> list[str]:
    m = (y1 + y2) / 2
    return [line((x, y1), (x, m - 12)), line((x, m + 12), (x, y2)), rect(x - 9, m - 12, 18, 24),
            text(x - 12, m - 6, "+", 10, "end"), *labels(x + 14, m - 2, names)]


def fuse_h(x1: float, x2: float, y: float, names: list[str]) -> list[str]:
    m = (x1 + x2) / 2
    return [line((x1, y), (x2, y)), rect(m - 14, y - 5, 28, 10), text(m, y - 10, "  ".join(names), 11, "middle")]


# ---- transistors: placed by the point on their main lead, returning their pins ------------

def nmos(x: float, y: float, names: list[str]) -> tuple[list[str], dict]:
    """A logic-level N-MOSFET, drain up, source down, gate on the left; pins by name."""
    ch = x - 10
    out = [line((x - 16, y - 12), (x - 16, y + 12), width=2)]
    for a, b in ((-14, -6), (-4, 4), (6, 14)):
        out.append(line((ch, y + a), (ch, y + b), width=2.5))
    out += [line((ch, y - 10), (x, y - 10), (x, y - 26)), line((ch, y + 10), (x, y + 10), (x, y + 26)),
            line((ch, y), (x, y), (x, y + 10)), line((x - 34, y), (x - 16, y)),
            f'<polygon points="{ch:g},{y:g} {ch + 7:g},{y - 4:g} {ch + 7:g},{y + 4:g}" fill="{INK}"/>',
            *labels(x + 10, y - 2, names)]
    return out, {"G": (x - 34, y), "D": (x, y - 26), "S": (x, y + 26)}


def npn(x: float, y: float, names: list[str]) -> tuple[list[str], dict]:
    """An NPN transistor, collector up, emitter down, base on the left; pins by name."""
    b = x - 14
    out = [line((b, y - 12), (b, y + 12), width=2.5), line((x - 34, y), (b, y)),
           line((b, y - 6), (x, y - 16), (x, y - 26)), line((b, y + 6), (x, y + 16), (x, y + 26)),
           f'<polygon points="{x:g},{y + 16:g} {x - 9:g},{y + 14:g} {x - 4:g},{y + 8:g}" fill="{INK}"/>',
           *labels(x + 10, y - 2, names)]
    return out, {"B": (x - 34, y), "C": (x, y - 26), "E": (x, y + 26)}


def box(x: float, y: float, w: float, h: float, lines: list[str]) -> list[str]:
    """A module drawn as a box (supply, regulator), its reference first."""
    return [rect(x, y, w, h, fill="#f4f6f7"), *labels(x + w / 2, y + 18, lines, "middle")]


# ---- supplies and nets ---------------------------------------------------------------------

def ground(x: float, y: float) -> str:
    return "\n".join([line((x, y - 0.5), (x, y + 4)), line((x - 9, y + 4), (x + 9, y + 4), width=2),
                      line((x - 6, y + 8), (x + 6, y + 8), width=1.5), line((x - 3, y + 12), (x + 3, y + 12), width=1)])


def rail(x: float, y: float, name: str, colour: str) -> list[str]:
    """A supply: a bar with its name above, the lead going down from it."""
    return [line((x - 14, y), (x + 14, y), colour=colour, width=2.5),
            text(x, y - 6, name, 11, "middle", "bold", colour)]


def net(x: float, y: float, name: str, colour: str, point: str = "right") -> list[str]:
    """A net label: a flag with the net's name (the GPIO) whose tip touches (x, y).

    `point` is where the tip points: "right" (flag to the left of the point) or "up" (below it).
    """
    w = 12 + 7.2 * len(name)
    if point == "right":
        x0 = x - 8 - w
        pts = f"{x0:g},{y - 8:g} {x - 8:g},{y - 8:g} {x:g},{y:g} {x - 8:g},{y + 8:g} {x0:g},{y + 8:g}"
        tx, ty = x0 + w / 2, y + 4
    else:
        x0 = x - w / 2
        pts = f"{x:g},{y:g} {x0 + w:g},{y + 6:g} {x0 + w:g},{y + 22:g} {x0:g},{y + 22:g} {x0:g},{y + 6:g}"
        tx, ty = x, y + 18
    return [f'<polygon points="{pts}" fill="#ffffff" stroke="{colour}" stroke-width="1.5"/>',
            text(tx, ty, name, 11, "middle", "bold", colour, mono=True, cls="net")]
