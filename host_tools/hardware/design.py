"""A board file as a circuit: the parts (with reference designators) and every wire.

One model feeds the bill of materials, the wiring table and the wiring diagram
(``host_tools/hardware/wiring.py``, ``host_tools/hardware/page.py``), so they cannot disagree with each
other, and it is built from the board.json the firmware reads (``boards.device_board``),
so they cannot disagree with the firmware. The circuits are docs/boards.md section 7's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from host_tools import boards as _boards
from host_tools.hardware import calc as hwcalc


POWER = ("5V", "GND", "3V3")   # the power wires' names (every other wire is a signal pin)


@dataclass(frozen=True)
class DevBoard:
    title: str
    pins: dict[int | str, str]   # GPIO (or Blinka name, "D17") -> header pin ("J3-15")
    power: dict[str, str]        # "5V", "GND", "3V3" -> the header pin the wiring uses
    header_note: str = ""        # how the header's pins are numbered, for wiring.md
    # every header pin in physical order, as (header pin, what it is: a GPIO, POWER or OTHER)
    headers: tuple[tuple[str, int | str], ...] = ()
    odd_even: bool = False       # one two-row header (odd pins one row, even the other), not two


OTHER = ("EN", "RST")   # header pins that are neither a GPIO nor a supply


def _numbered(name: str, labels: list) -> list[tuple[str, int | str]]:
    return [(f"{name}-{i}", lab) for i, lab in enumerate(labels, 1)]


# Header pin order from Espressif's user guides (ESP32-DevKitC V4: J2 left, J3 right;
# ESP32-S3-DevKitC-1: J1 left, J3 right), USB at the bottom, pin 1 at the top.
_DEVKITC = (_numbered("J2", ["3V3", "EN", 36, 39, 34, 35, 32, 33, 25, 26, 27, 14, 12, "GND", 13,
                             9, 10, 11, "5V"])
            + _numbered("J3", ["GND", 23, 22, 1, 3, 21, "GND", 19, 18, 5, 17, 16, 4, 0, 2, 15, 8, 7, 6]))
_S3_DEVKITC = (_numbered("J1", ["3V3", "3V3", "RST", 4, 5, 6, 7, 15, 16, 17, 18, 8, 3, 46, 9, 10, 11, 12,
                                13, 14, "5V", "GND"])
               + _numbered("J3", ["GND", 43, 44, 1, 2, 42, 41, 40, 39, 38, 37, 36, 35, 0, 45, 48, 47, 21,
                                  20, 19, "GND", "GND"]))


# The Raspberry Pi's 40-pin header J8, by BCM number as Blinka names the pins (D17...).
_RPI_J8 = _numbered("J8", ["3V3", "5V", "D2", "5V", "D3", "GND", "D4", "D14", "GND", "D15", "D17", "D18",
                           "D27", "GND", "D22", "D23", "3V3", "D24", "D10", "GND", "D9", "D25", "D11", "D8",
                           "GND", "D7", "D0", "D1", "D5", "GND", "D6", "D12", "D13", "GND", "D19", "D16",
                           "D26", "D20", "GND", "D21"])


def _devboard(title: str, headers: list, power: dict, note: str, odd_even: bool = False) -> DevBoard:
    pins = {lab: p for p, lab in headers if lab not in POWER and lab not in OTHER}
    return DevBoard(title, pins, power, note, tuple(headers), odd_even)


_ESPRESSIF = "as Espressif's {title} user guide numbers them (pin 1 at the end away from USB)"
DEVBOARDS = {
    "esp32": _devboard("ESP32-DevKitC V4", _DEVKITC, {"5V": "J2-19", "GND": "J3-1", "3V3": "J2-1"},
                       _ESPRESSIF.format(title="ESP32-DevKitC V4")),
    "esp32s3": _devboard("ESP32-S3-DevKitC-1", _S3_DEVKITC, {"5V": "J1-21", "GND": "J1-22", "3V3": "J1-1"},
                         _ESPRESSIF.format(title="ESP32-S3-DevKitC-1")),
    # 5 V also on pin 4: the Pi is fed through both (the power group's note)
    "rpi": _devboard("Raspberry Pi 4 Model B", _RPI_J8, {"5V": "J8-2", "GND": "J8-6", "3V3": "J8-1"},
                     "as the Raspberry Pi's 40-pin header J8 numbers them (pin 1 is 3V3, at the end "
                     "away from the USB ports; odd pins on the inner row)", odd_even=True),
}


# A board file's module (boards.MODULES) names its dev board: the title on the pages and the
# catalogue entry of the bill of materials (host_tools/hardware/parts.py). The header is the chip's.
MODULE_BOARDS = {
    "ESP32-WROOM-32E": ("ESP32-DevKitC-32E", "devboard-esp32"),
    "ESP32-WROVER-E": ("ESP32-DevKitC-VE", "devboard-esp32-wrover-e"),
    "ESP32-S3-WROOM-1-N8R8": ("ESP32-S3-DevKitC-1-N8R8", "devboard-esp32s3"),
}


class NoDevBoard(ValueError):
    """A valid board for a chip the reference design has no dev board for (yet)."""


@dataclass
class Part:
    ref: str          # reference designator: R3, Q1, K1
    kind: str         # the catalogue entry (host_tools/hardware/page.py)
    value: str        # "100 Ohm", "" when the kind says it all
    does: str         # what it is for


@dataclass
class Wire:
    role: str         # as `parcelbox board check` names it: "keypad row 1"
    pin: int | str    # GPIO number, or "5V" / "GND" / "3V3" for power
    to: str           # what it connects to
    notes: str        # direction, pull, active level
    label: str        # short terminal name in the diagram


@dataclass
class Group:
    key: str
    title: str
    lines: list[str]  # description in the diagram
    wires: list[Wire] = field(default_factory=list)


@dataclass
class Design:
    name: str
    chip: str
    description: str
    board: dict           # the device's board.json
    battery_max_mv: int | None
    devboard: DevBoard
    parts: list[Part] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    module: _boards.Module | None = None   # the board file's module, when it names one

    def header(self, pin) -> str:
        if pin in POWER:
            return self.devboard.power.get(pin, "")
        return self.devboard.pins.get(pin, "")

    def wires(self) -> list[Wire]:
        return [w for g in self.groups for w in g.wires]

    def pins(self) -> list[int | str]:
        return [w.pin for w in self.wires() if w.pin not in POWER]

    @property
    def linux(self) -> bool:
        """A linux board (a Raspberry Pi running pb_linux), not an ESP32 dev board."""
        return _boards.CHIPS[self.chip].named


class _Refs:
    def __init__(self):
        self.n: dict[str, int] = {}

    def __call__(self, prefix: str) -> str:
        self.n[prefix] = self.n.get(prefix, 0) + 1
        return f"{prefix}{self.n[prefix]}"


def _ohm(r: float) -> str:
    return f"{r / 1000:g} kOhm" if r >= 1000 else f"{r:g} Ohm"


PULL_UP = _ohm(hwcalc.v("r_pullup_external"))     # "10 kOhm": the BOM, the pages and the schematic
PULL_DOWN = _ohm(hwcalc.v("r_pulldown"))
R_BASE = _ohm(hwcalc.v("r_base"))


LED_RESISTORS = {"red": 150, "green": 68, "blue": 68, "": 150}


def design(path: str | Path) -> Design:
    """The circuit of board file `path`; BoardFileError if the board is not valid."""
    b = _boards.device_board(path)
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    bat = raw.get("battery") or {}
    if b["chip"] not in DEVBOARDS:
        raise NoDevBoard(f"{path}: no reference dev board for chip {b['chip']!r} yet "
                         f"(host_tools/hardware/design.py DEVBOARDS); no hardware pages for it")
    devboard, kind, module = DEVBOARDS[b["chip"]], "devboard-" + b["chip"], None
    if raw.get("module"):
        module = _boards.MODULES[raw["module"]]
        title, kind = MODULE_BOARDS[module.name]
        devboard = replace(devboard, title=title)
    d = Design(b["name"], b["chip"], raw.get("description", ""), b, bat.get("max_mv"), devboard,
               module=module)
    ref = _Refs()
    add = d.parts.append
    add(Part(ref("A"), kind, "", "the controller"))
    if d.linux:
        add(Part(ref("A"), "sd-card", "", "the Pi's system, the firmware and its state directory"))
    _keypad(d, ref)
    _compartments(d, ref)
    _led(d, ref)
    _buzzer(d, ref)
    _tamper(d, ref)
    _battery(d, ref)
    _power(d, ref)
    return d


def _pull_note(pull: str, ref: str | None, d: Design | None = None) -> str:
    if pull == "internal":
        if d is not None and d.linux:
            return "input, the Pi's pull-up (50-65 kOhm), set by the service"
        return "input, the chip's pull-up (~45 kOhm)"
    if d is not None and d.linux:
        return f"input, external pull-up {ref} {PULL_UP} to 3.3 V (never 5 V: the Pi's GPIO is not 5 V tolerant)"
    return f"input, external pull-up {ref} {PULL_UP} to 3.3 V"


def _keypad(d: Design, ref) -> None:
    kp = d.board["keypad"]
    rows, cols, lay = kp["rows"], kp["cols"], kp["layout"]
    nc = len(cols)
    k = ref("KP")
    d.parts.append(Part(k, f"keypad-{len(rows)}x{nc}", "", "code entry"))
    g = Group("keypad", f"{k}: {len(rows)}x{nc} matrix keypad",
              ["membrane keypad, no diodes", "connector: rows then columns", "(check: key 1 joins R1 and C1)"])
    for i, p in enumerate(rows):
        keys = " ".join(lay[i * nc:(i + 1) * nc])
        row_note = ("output, low while its row is scanned (Matrix_Keypad), an input with pull-up otherwise"
                    if d.linux else "open-drain output: low while its row is scanned, released otherwise")
        g.wires.append(Wire(f"keypad row {i + 1}", p, f"{k} R{i + 1} (keys {keys})", row_note,
                            f"R{i + 1}  {keys}"))
    for j, p in enumerate(cols):
        keys = " ".join(lay[j::nc])
        pr = None
        if kp["pull"] == "external":
            pr = ref("R")
            d.parts.append(Part(pr, "resistor", PULL_UP, f"keypad column {j + 1} pull-up"))
        g.wires.append(Wire(f"keypad column {j + 1}", p, f"{k} C{j + 1} (keys {keys})",
                            _pull_note(kp["pull"], pr, d) + "; a pressed key in the scanned row reads 0",
                            f"C{j + 1}  {keys}"))
    d.groups.append(g)


def _compartments(d: Design, ref) -> None:
    b = d.board
    act = b["solenoid_active"]
    mos, dio = hwcalc.MOSFETS[0].part, hwcalc.DIODES[0].part
    rg_val = _ohm(hwcalc.vc("r_gate", d.chip))
    for i, c in enumerate(b["compartments"], 1):
        lock, q, fly, rg, rpd, sw = ref("K"), ref("Q"), ref("D"), ref("R"), ref("R"), ref("S")
        d.parts += [Part(lock, "lock", "", f"compartment {i} lock"),
                    Part(q, "mosfet", "", f"compartment {i} solenoid switch"),
                    Part(fly, "flyback", "", f"compartment {i} flyback diode"),
                    Part(rg, "resistor", rg_val, f"compartment {i} gate resistor"),
                    Part(rpd, "resistor", PULL_DOWN, f"compartment {i} gate pull-down"),
                    Part(sw, "reed", "", f"compartment {i} door contact")]
        level = "high" if act == 1 else "low"
        g = Group(f"comp{i}", f"Compartment {i}",
                  [f"{lock}: 12 V fail-secure lock", f"{q} {mos} low side, {fly} {dio}",
                   f"across {lock}; {rpd} holds it off", f"{sw}: reed to GND, magnet on door"])
        pr = None
        if b["door_pull"] == "external":
            pr = ref("R")
            d.parts.append(Part(pr, "resistor", PULL_UP, f"compartment {i} door pull-up"))
        closed = "shut" if b["door_open_level"] == 1 else "open"
        cutter = (f"its failsafe timer thread cuts it after max_on_ms = {b['max_on_ms']} ms; off at reset "
                  f"({rpd}) and whenever the service stops (ExecStopPost)" if d.linux else
                  f"hardware timer {i - 1} cuts it after max_on_ms = {b['max_on_ms']} ms; off at reset ({rpd})")
        g.wires.append(Wire(f"compartment {i} solenoid", c["solenoid"],
                            f"{rg} {rg_val} to the gate of {q}; {rpd} {PULL_DOWN} gate to GND; {q} switches "
                            f"{lock}'s coil to GND, {fly} across the coil",
                            f"output, active {level} (energised at {act}); {cutter}",
                            f"{rg} -> {q} gate"))
        g.wires.append(Wire(f"compartment {i} door", c["door"],
                            f"{sw} to GND (closed while the door is {closed})",
                            _pull_note(b["door_pull"], pr, d) + f"; door open reads {b['door_open_level']}",
                            f"{sw} door reed"))
        d.groups.append(g)


def _led(d: Design, ref) -> None:
    b = d.board
    pins = b["led"]
    led = ref("LED")
    act = b["led_active"]
    common = "cathode to GND" if act == 1 else "anode to 3.3 V"
    if len(pins) == 3:
        d.parts.append(Part(led, "led-rgb-cc" if act == 1 else "led-rgb-ca", "", "status light"))
        colours = ["red", "green", "blue"]
        title, lines = f"{led}: RGB LED", [f"common {common}", "one resistor per colour"]
    else:
        d.parts.append(Part(led, "led", "", "status light"))
        colours = [""]
        title, lines = f"{led}: LED", ["anode via resistor" if act == 1 else "cathode via resistor"]
    g = Group("led", title, lines)
    for colour, p in zip(colours, pins):
        r = ref("R")
        val = _ohm(LED_RESISTORS[colour])
        d.parts.append(Part(r, "resistor", val, f"LED {colour} current".replace("  ", " ")))
        role = f"LED {colour}".strip()
        g.wires.append(Wire(role, p, f"{r} {val} to {led} {colour or 'LED'}".replace("  ", " "),
                            f"output, lit at {act}", f"{r} -> {colour or 'LED'}"))
    d.groups.append(g)


def _buzzer(d: Design, ref) -> None:
    if d.linux:
        return _active_buzzer(d, ref)
    bz, q, rb, fly = ref("BZ"), ref("Q"), ref("R"), ref("D")
    d.parts += [Part(bz, "buzzer", "", "tones"), Part(q, "npn", "", "buzzer switch"),
                Part(rb, "resistor", R_BASE, "buzzer transistor base"),
                Part(fly, "signal-diode", "", "buzzer flyback")]
    g = Group("buzzer", f"{bz}: passive buzzer", [f"{q} NPN low side, {bz} from 5 V", f"{fly} across {bz}"])
    g.wires.append(Wire("buzzer", d.board["buzzer"], f"{rb} {R_BASE} to the base of {q}; {bz} between 5 V "
                        f"and {q}'s collector",
                        "PWM output, 50 % square wave at the tone's frequency (300-2400 Hz); "
                        "low when silent", f"{rb} -> {q} base"))
    d.groups.append(g)


def _active_buzzer(d: Design, ref) -> None:
    # digitalio has no PWM: an active buzzer makes its own tone while its pin is high
    bz, q, rb, fly = ref("BZ"), ref("Q"), ref("R"), ref("D")
    d.parts += [Part(bz, "buzzer-active", "", "tones (its own pitch)"), Part(q, "npn", "", "buzzer switch"),
                Part(rb, "resistor", R_BASE, "buzzer transistor base"),
                Part(fly, "signal-diode", "", "buzzer flyback")]
    g = Group("buzzer", f"{bz}: active buzzer", [f"{q} NPN low side, {bz} from 5 V", f"{fly} across {bz}",
                                                 "one pitch; the patterns keep their rhythm"])
    g.wires.append(Wire("buzzer", d.board["buzzer"], f"{rb} {R_BASE} to the base of {q}; {bz} between 5 V "
                        f"and {q}'s collector",
                        "output, high while the firmware asks for any tone, low when silent",
                        f"{rb} -> {q} base"))
    d.groups.append(g)


def _tamper(d: Design, ref) -> None:
    b = d.board
    if b["tamper"] is None:
        return
    sw = ref("S")
    d.parts.append(Part(sw, "tamper", "", "lid/wall tamper switch"))
    pr = None
    if b["tamper_pull"] == "external":
        pr = ref("R")
        d.parts.append(Part(pr, "resistor", PULL_UP, "tamper pull-up"))
    closed = "on" if b["tamper_open_level"] == 1 else "off"
    lines = [f"{sw} to GND, closed while", f"the lid is {closed}"]
    if pr:
        lines.append(f"{pr} {PULL_UP} to 3.3 V")
    g = Group("tamper", f"{sw}: tamper switch", lines)
    g.wires.append(Wire("tamper switch", b["tamper"], f"{sw} to GND (closed while the lid is {closed})",
                        _pull_note(b["tamper_pull"], pr, d) + f"; open reads {b['tamper_open_level']}",
                        f"{sw}" + (f" + {pr}" if pr else "")))
    d.groups.append(g)


def _battery(d: Design, ref) -> None:
    b = d.board
    if b["battery"] is None:
        return
    top, bottom = b["battery_divider"]
    rt, rb, c = ref("R"), ref("R"), ref("C")
    d.parts += [Part(rt, "resistor-1pct", f"{top} kOhm", "battery divider, top"),
                Part(rb, "resistor-1pct", f"{bottom} kOhm", "battery divider, bottom"),
                Part(c, "capacitor", "100 nF", "battery sense filter")]
    mv = d.battery_max_mv or 0
    at_pin = mv * bottom / (top + bottom) / 1000
    g = Group("battery", "Battery sense", [f"{rt} {top}k from the 12 V bus", "(battery + when backed up)",
                                           f"{rb} {bottom}k and {c} to GND", f"{mv / 1000:.1f} V reads {at_pin:.2f} V"])
    g.wires.append(Wire("battery sense", b["battery"],
                        f"the middle of {rt} {top} kOhm (from the 12 V bus: battery + in the battery-backed "
                        f"variant) and {rb} {bottom} kOhm (to GND); {c} 100 nF to GND",
                        f"ADC1 input, 11 dB attenuation; {mv / 1000:.1f} V of battery reads {at_pin:.2f} V",
                        f"{rt}/{rb} + {c}"))
    d.groups.append(g)


def _power(d: Design, ref) -> None:
    u, f, ps = ref("U"), ref("F"), ref("PS")
    n = len(d.board["compartments"])
    s = hwcalc.solenoid(d.board["max_on_ms"], _v_max(d), d.chip)
    sup = hwcalc.supply(n, s, d.chip)
    if d.linux:
        buck = Part(u, "buck-3a", "", "12 V to 5 V, 3 A, for the Pi")
        rtc = Part(ref("U"), "rtc", "", "optional: the OS keeps time across power cuts (DS3231 on D2/D3, "
                   "dtoverlay=i2c-rtc,ds3231)")
        feed = ("powers the Pi through header pins 2 and 4 (the Pi makes its own 3.3 V); "
                "a 5.1 V 3 A supply, no USB-C cable")
    else:
        buck = Part(u, "buck", "", "12 V to 5 V for the dev board")
        rtc = Part(ref("U"), "rtc", "", "optional: time without network (not used by the firmware yet)")
        feed = "powers the dev board (its LDO makes 3.3 V)"
    d.parts += [Part(ps, "psu", f"12 V {sup.psu_a:g} A", "supply"),
                Part(f, "fuse", f"T{sup.fuse_a:g}A", "12 V input fuse"), buck, rtc]
    g = Group("power", "Power", [f"{ps} 12 V -> {f} -> locks and {u}", f"{u} buck 12 V -> 5 V",
                                 "one common ground"])
    g.wires.append(Wire("5 V in", "5V", f"{u} 5 V output", feed, f"{u} +5 V"))
    g.wires.append(Wire("ground", "GND", f"{u} GND, the MOSFET sources, every switch's GND",
                        "star ground at the supply; the lock current does not flow through the dev board",
                        "GND"))
    if any(p.does.endswith("pull-up") for p in d.parts):
        g.wires.append(Wire("3.3 V out", "3V3", "the external pull-ups", "the dev board's 3.3 V output; nothing else draws from it", "pull-ups"))
    d.groups.append(g)


def _v_max(d: Design) -> float | None:
    return d.battery_max_mv / 1000 if d.battery_max_mv else None
