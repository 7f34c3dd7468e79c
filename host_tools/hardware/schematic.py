"""The schematic of a board (hardware/<board>/schematic.svg), generated from its circuit.

First the dev board's header in physical order (host_tools/hardware/header.py), then every
circuit a builder solders: power, battery sense, per compartment the 12 V lock driver and the
door contact, LED, buzzer driver, tamper switch and keypad. Nets meet the header by their
GPIO's name. Parts, references and values are the Design's (host_tools/hardware/design.py),
the same the bill of materials lists, so the picture and the BOM cannot disagree.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from host_tools.boards import pin_name
from host_tools.hardware import calc as hwcalc
from host_tools.hardware import header as hwheader
from host_tools.hardware import parts as hwparts
from host_tools.hardware import svgdraw as sd
from host_tools.hardware.design import Design, Part, Wire

WIDTH = 1240
NOT_DRAWN = ("sd-card", "rtc")     # with the dev board (A1, the header section): in the BOM only
# What the schematic calls a part that has no value in the BOM; semiconductors by part number.
_NAMES = {"lock": "12 V lock", "reed": "door reed", "tamper": "tamper switch", "buzzer": "passive buzzer",
          "buzzer-active": "active buzzer", "buck": "buck 12 V to 5 V", "buck-3a": "buck 12 V to 5 V, 3 A",
          "led-rgb-cc": "RGB LED, common cathode", "led-rgb-ca": "RGB LED, common anode", "led": "LED"}
_LED_FILL = {"red": "#e74c3c", "green": "#2ecc71", "blue": "#3498db", "": "#f4d03f"}


def _name(p: Part) -> str:
    if p.value:
        return p.value
    return _NAMES.get(p.kind) or hwparts.CATALOGUE[p.kind].pn.split(" (")[0]


class _Sheet:
    """The Design's parts by what they do, and its wires by role."""

    def __init__(self, d: Design):
        self.d = d
        self.by_does = {p.does: p for p in d.parts}
        self.by_role = {w.role: w for w in d.wires()}

    def part(self, does: str) -> Part | None:
        return self.by_does.get(does)

    def draw(self, p: Part, body: list[str]) -> list[str]:
        return sd.part(p.ref, p.kind, p.value, body)

    def names(self, p: Part) -> list[str]:
        return [p.ref, _name(p)]

    def net(self, role: str, x: float, y: float, point: str = "right") -> list[str]:
        w: Wire = self.by_role[role]
        return sd.net(x, y, pin_name(w.pin), sd.COLOURS[sd.kind(role, w.pin)], point)

    def pullup(self, x: float, y_rail: float, y_node: float, pull: str, does: str,
               short: bool = False) -> list[str]:
        """A pull-up from the 3.3 V rail to a node: a part, or the chip's own (dashed).
        `short`: the part's reference only, where its neighbours leave no room for the value."""
        out = sd.rail(x, y_rail, "+3.3 V", sd.COLOURS["3V3"])
        if pull == "external":
            p = self.part(does)
            names = [p.ref] if short else self.names(p)
            return out + self.draw(p, sd.resistor(x, y_rail, y_node, names, left=True))
        r = hwcalc.vc("r_pullup_internal", self.d.chip)
        return out + sd.resistor(x, y_rail, y_node, ["in the chip", f"~{r / 1000:g} kOhm"], left=True,
                                 internal=True)


def _title(s: str) -> str:
    return sd.text(0, 14, s, 13, weight="bold")


# ---- the cells, each drawn at (0, 0) and returned with its size ----------------------------

def _power(sh: _Sheet) -> tuple[list[str], int, int]:
    d = sh.d
    ps, fuse = sh.part("supply"), sh.part("12 V input fuse")
    buck = next(p for p in d.parts if p.kind in ("buck", "buck-3a"))
    out = [_title("Power: 12 V in, 5 V for the " + ("Pi" if d.linux else "dev board"))]
    out += sh.draw(ps, sd.box(10, 40, 110, 80, [ps.ref, ps.value, "DC supply"])
                   + [sd.text(124, 50, "+", 11), sd.text(124, 100, "-", 11)])
    out += [sd.line((120, 55), (150, 55))]
    out += sh.draw(fuse, sd.fuse_h(150, 210, 55, [fuse.ref, fuse.value]))
    out += [sd.line((210, 55), (330, 55)), sd.dot(260, 55), sd.line((260, 55), (260, 35)),
            *sd.rail(260, 35, "+12 V", sd.COLOURS["solenoid"])]
    out += sh.draw(buck, sd.box(330, 40, 140, 80, [buck.ref, _name(buck), hwparts.CATALOGUE[buck.kind].pn
                                                   .split(" (")[0]]))
    out += [sd.text(334, 114, "GND", 9, fill=sd.GREY), sd.text(466, 114, "GND", 9, "end", fill=sd.GREY),
            sd.text(334, 51, "in", 9, fill=sd.GREY), sd.text(466, 51, "out", 9, "end", fill=sd.GREY)]
    out += [sd.line((470, 55), (620, 55)), sd.dot(540, 55), sd.line((540, 55), (540, 35)),
            *sd.rail(540, 35, "+5 V", sd.COLOURS["5V"]),
            sd.text(548, 72, f"header {d.header('5V')} (5V)", 11)]
    out += [sd.line((120, 105), (330, 105)), sd.line((470, 105), (620, 105)), sd.dot(260, 105),
            sd.ground(260, 105), sd.text(548, 122, f"header {d.header('GND')} (GND)", 11)]
    reg = "the Pi's own regulator" if d.linux else "the dev board's regulator"
    out += [sd.text(10, 160, f"+3.3 V: {reg}, out on header {d.header('3V3')} (3V3); only pull-ups hang on it.", 11),
            sd.text(10, 176, "One ground for all: the star point at the supply; lock current never runs "
                             "through the " + ("Pi." if d.linux else "dev board."), 11)]
    return out, 640, 190


def _battery(sh: _Sheet) -> tuple[list[str], int, int]:
    top, bottom, cap = (sh.part(s) for s in ("battery divider, top", "battery divider, bottom",
                                             "battery sense filter"))
    out = [_title("Battery sense")]
    out += sd.rail(150, 36, "+12 V", sd.COLOURS["solenoid"])
    out += sh.draw(top, sd.resistor(150, 36, 100, sh.names(top), left=True))
    out += [sd.dot(150, 100), sd.line((90, 100), (150, 100), (200, 100), (200, 110))]
    out += sh.net("battery sense", 90, 100)
    out += sh.draw(bottom, sd.resistor(150, 100, 165, sh.names(bottom), left=True))
    out += sh.draw(cap, sd.capacitor(200, 110, 165, sh.names(cap)))
    out += [sd.line((150, 165), (200, 165)), sd.dot(150, 165), sd.ground(150, 165)]
    return out, 260, 190


def _compartment(sh: _Sheet, i: int) -> tuple[list[str], int, int]:
    b = sh.d.board
    lock, q, fly, rg, rpd, reed = (sh.part(f"compartment {i} {s}") for s in (
        "lock", "solenoid switch", "flyback diode", "gate resistor", "gate pull-down", "door contact"))
    out = [_title(f"Compartment {i}: lock {lock.ref}, door {reed.ref}")]
    out += sd.rail(190, 36, "+12 V", sd.COLOURS["solenoid"])
    out += [sd.line((190, 36), (190, 50)), sd.line((150, 50), (230, 50)), sd.line((150, 110), (230, 110)),
            sd.dot(190, 50), sd.dot(190, 110), sd.line((190, 110), (190, 119))]
    out += sh.draw(fly, sd.diode(150, 50, 110, sh.names(fly), up=True))
    out += sh.draw(lock, sd.coil(230, 50, 110, sh.names(lock)))
    body, pins = sd.nmos(190, 145, sh.names(q))
    out += sh.draw(q, body)
    out += sh.net(f"compartment {i} solenoid", 70, 145)
    out += sh.draw(rg, sd.resistor_h(70, 130, 145, sh.names(rg)))
    out += [sd.line((130, 145), pins["G"]), sd.dot(140, 145)]
    out += sh.draw(rpd, sd.resistor(140, 145, 210, sh.names(rpd), left=True))
    out += [sd.ground(140, 210), sd.line(pins["S"], (190, 210)), sd.ground(190, 210)]
    act = "high" if b["solenoid_active"] == 1 else "low"
    out += [sd.text(10, 246, f"on while the pin is {act}, at most {b['max_on_ms']} ms", 10, fill="#555555")]
    # the door contact
    out += sh.pullup(140, 266, 310, b["door_pull"], f"compartment {i} door pull-up")
    out += [sd.dot(140, 310), sd.line((70, 310), (140, 310))]
    out += sh.net(f"compartment {i} door", 70, 310)
    shut = "door shut" if b["door_open_level"] == 1 else "door open"
    out += sh.draw(reed, sd.switch(140, 310, 360, [reed.ref, _name(reed), f"closed: {shut}"]))
    out += [sd.ground(140, 360)]
    return out, 292, 380


def _led(sh: _Sheet) -> tuple[list[str], int, int]:
    b = sh.d.board
    led = sh.part("status light")
    colours = ["red", "green", "blue"] if len(b["led"]) == 3 else [""]
    cc = b["led_active"] == 1
    out = [_title(f"Status light {led.ref}")]
    ys = [56 + 44 * k for k in range(len(colours))]
    bus = 250
    body = []
    for colour, y in zip(colours, ys):
        r = sh.part(f"LED {colour} current".replace("  ", " "))
        role = f"LED {colour}".strip()
        out += sh.net(role, 70, y)
        out += sh.draw(r, sd.resistor_h(70, 150, y, sh.names(r)))
        body += sd.led_h(150, bus, y, _LED_FILL[colour], anode_left=cc)
        body += [sd.text(200, y + 20, colour, 10, "middle", fill="#555555")] if colour else []
    body += [sd.line((bus, ys[0]), (bus, ys[-1]))] + [sd.dot(bus, y) for y in ys[:-1]]
    if cc:
        body += [sd.line((bus, ys[-1]), (bus, ys[-1] + 24)), sd.ground(bus, ys[-1] + 24)]
    else:
        body += [sd.line((bus, ys[0]), (bus, ys[0] - 20)), *sd.rail(bus, ys[0] - 20, "+3.3 V", sd.COLOURS["3V3"])]
    body += sd.labels(70, ys[-1] + 40, [led.ref, _name(led)])
    out += sh.draw(led, body)
    return out, 280, ys[-1] + 70


def _buzzer(sh: _Sheet) -> tuple[list[str], int, int]:
    bz, q, rb, fly = (sh.part(s) for s in ("tones", "buzzer switch", "buzzer transistor base", "buzzer flyback"))
    bz = bz or sh.part("tones (its own pitch)")
    out = [_title(f"{_name(bz).capitalize()} {bz.ref}, switch {q.ref}")]
    out += sd.rail(190, 36, "+5 V", sd.COLOURS["5V"])
    out += [sd.line((190, 36), (190, 50)), sd.line((150, 50), (230, 50)), sd.line((150, 110), (230, 110)),
            sd.dot(190, 50), sd.dot(190, 110), sd.line((190, 110), (190, 119))]
    out += sh.draw(fly, sd.diode(150, 50, 110, sh.names(fly), up=True))
    out += sh.draw(bz, sd.buzzer(230, 50, 110, [bz.ref]))
    body, pins = sd.npn(190, 145, sh.names(q))
    out += sh.draw(q, body)
    out += sh.net("buzzer", 70, 145)
    out += sh.draw(rb, sd.resistor_h(70, 130, 145, sh.names(rb)))
    out += [sd.line((130, 145), pins["B"]), sd.line(pins["E"], (190, 200)), sd.ground(190, 200)]
    tone = "on while the pin is high" if sh.d.linux else "PWM at the tone's pitch"
    out += [sd.text(10, 236, tone, 10, fill="#555555")]
    return out, 280, 250


def _tamper(sh: _Sheet) -> tuple[list[str], int, int]:
    b = sh.d.board
    sw = sh.part("lid/wall tamper switch")
    out = [_title(f"Tamper switch {sw.ref}")]
    out += sh.pullup(140, 50, 100, b["tamper_pull"], "tamper pull-up")
    out += [sd.dot(140, 100), sd.line((70, 100), (140, 100))]
    out += sh.net("tamper switch", 70, 100)
    on = "lid on" if b["tamper_open_level"] == 1 else "lid off"
    out += sh.draw(sw, sd.switch(140, 100, 150, [sw.ref, _name(sw), f"closed: {on}"]))
    out += [sd.ground(140, 150)]
    return out, 220, 180


def _keypad(sh: _Sheet) -> tuple[list[str], int, int]:
    kp = sh.d.board["keypad"]
    nr, nc, lay = len(kp["rows"]), len(kp["cols"]), kp["layout"]
    k = sh.part("code entry")
    s, gx, gy = 64, 100, 130
    out = [_title(f"Keypad {k.ref}: {nr}x{nc} matrix, no diodes")]
    if kp["pull"] == "external":
        rs = [sh.part(f"keypad column {c + 1} pull-up") for c in range(nc)]
        out.append(sd.text(0, 29, f"column pull-ups {', '.join(r.ref for r in rs)}: {rs[0].value} each", 10))
    body = []
    right = gx + (nc - 1) * s + 34
    bottom = gy + (nr - 1) * s + 24
    for r in range(nr):
        y = gy + r * s
        out += sh.net(f"keypad row {r + 1}", gx - 12, y)
        body += [sd.line((gx - 12, y), (right, y)), sd.text(right + 4, y + 4, f"{k.ref} R{r + 1}", 9, fill=sd.GREY)]
    for c in range(nc):
        x = gx + c * s + 24
        body += [sd.line((x, gy - 40), (x, bottom)), sd.text(x + 3, bottom - 4, f"C{c + 1}", 9, fill=sd.GREY)]
        if c == 0 or kp["pull"] == "external":
            out += sh.pullup(x, 48, gy - 40, kp["pull"], f"keypad column {c + 1} pull-up", short=c > 0)
        else:
            out += [*sd.rail(x, 48, "", sd.COLOURS["3V3"]), *sd.resistor(x, 48, gy - 40, [], internal=True)]
        out += sh.net(f"keypad column {c + 1}", x, bottom, point="up")
        for r in range(nr):
            y = gy + r * s
            # a key joins its row to its column: a contact drawn open between the two
            body += [sd.dot(x - 22, y), sd.line((x - 22, y), (x - 16, y - 14)), sd.line((x - 12, y - 17), (x, y - 17)),
                     sd.dot(x, y - 17), sd.text(x - 10, y + 13, lay[r * nc + c], 11, "middle", "bold", mono=True)]
    out += sh.draw(k, body)
    return out, right + 50, bottom + 40


# ---- the sheet ---------------------------------------------------------------------------

def _flow(cells: list[tuple[list[str], int, int]], y: float) -> tuple[list[str], float]:
    """Cells left to right, wrapping at the sheet's width; returns the elements and the bottom."""
    out: list[str] = []
    x, row_h = 20, 0
    for body, w, h in cells:
        if x > 20 and x + w > WIDTH - 20:
            x, y, row_h = 20, y + row_h + 16, 0
        out += [f'<g transform="translate({x:g},{y:g})">', *body, "</g>"]
        x += w + 6
        row_h = max(row_h, h)
    return out, y + row_h


def svg(d: Design) -> str:
    """hardware/<board>/schematic.svg."""
    sh = _Sheet(d)
    body, y = hwheader.svg(d, 20, 70, WIDTH - 40)
    sections = [
        ("Power" + (" and battery sense" if d.board["battery"] else ""),
         [_power(sh)] + ([_battery(sh)] if d.board["battery"] else [])),
        ("Lock drivers (low-side logic-level N-MOSFET, flyback diode across the coil) and door contacts",
         [_compartment(sh, i) for i in range(1, len(d.board["compartments"]) + 1)]),
        ("Feedback and inputs", [_led(sh), _buzzer(sh)] + ([_tamper(sh)] if d.board["tamper"] else [])
         + [_keypad(sh)]),
    ]
    for title, cells in sections:
        y += 30
        body += [sd.line((20, y - 18), (WIDTH - 20, y - 18), colour="#cccccc", width=1),
                 sd.text(20, y, title, 14, weight="bold", fill="#1b4f72")]
        cells_svg, y = _flow(cells, y + 14)
        body += cells_svg
    y += 30
    body += [sd.text(20, y, "Net labels (the flags) name the GPIO: a flag joins the header pin of the same "
                            "name. Dashed resistor: the chip's own pull-up, nothing to fit. "
                            "Parts and values: the bill of materials in README.md.", 11, fill="#555555")]
    height = int(y + 20)
    head = ['<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}">',
            f"<title>{escape(d.name)}: schematic</title>",
            f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
            sd.text(20, 30, f"{d.name}: schematic", 18, weight="bold"),
            sd.text(20, 50, f"Generated from boards/{d.name}.json by `parcelbox hardware generate`; do not edit. "
                            f"Every pin as a table: wiring.md. Connection map: wiring.svg.", 11, fill="#555555")]
    return "\n".join(head + body + ["</svg>", ""])
