# The schematic (host_tools/hardware/schematic.py) and the header in pin order
# (host_tools/hardware/header.py): every GPIO on a flag and on the header, the parts the bill
# of materials' with the arithmetic's values, and the headers as their makers publish them.
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from host_tools import boards
from host_tools.boards import pin_name
from host_tools.hardware import calc as hwcalc
from host_tools.hardware import design as hwdesign
from host_tools.hardware import header as hwheader
from host_tools.hardware import page as hwpage
from host_tools.hardware import schematic

ROOT = Path(__file__).resolve().parents[2]
HW = ROOT / "hardware"
SHIPPED = [p for p in boards.shipped() if json.loads(p.read_text())["chip"] in hwdesign.DEVBOARDS]
SVG = "{http://www.w3.org/2000/svg}"


def load(path):
    return ET.parse(HW / path.stem / "schematic.svg").getroot()


def texts(el, cls=None):
    return [t.text for t in el.iter(SVG + "text") if cls is None or t.get("class") == cls]


def drawn_parts(root):
    return {g.get("id"): g for g in root.iter(SVG + "g") if g.get("class") == "part"}


def roles_of(path):
    """Every pin role of a board file, as `parcelbox board check` names them."""
    c = boards._Checker(str(path))
    c.board(json.loads(Path(path).read_text()))
    assert not c.r.errors, c.r.errors
    return c.roles


# ---- the drawing -------------------------------------------------------------------------

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_schematic_is_well_formed_svg_and_is_what_the_generator_makes(path):
    raw = (HW / path.stem / "schematic.svg").read_text()
    root = ET.fromstring(raw.encode())
    assert root.tag == SVG + "svg" and int(root.get("width")) > 0 and int(root.get("height")) > 0
    assert raw == schematic.svg(hwdesign.design(path))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_gpio_the_board_uses_is_on_a_flag_and_on_the_header(path):
    root = load(path)
    flags, header = texts(root, "net"), texts(root, "hdr")
    names = {pin_name(r.pin) for r in roles_of(path)}
    assert names and names <= set(flags) and names <= set(header)
    assert set(flags) == names            # and no flag for a pin the board does not use
    assert set(header) - names <= set(hwdesign.POWER)      # the rest of the header: the supplies


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_each_lock_driver_is_drawn_with_the_arithmetics_parts_and_values(path):
    d = hwdesign.design(path)
    g = drawn_parts(load(path))
    by = {p.does: p for p in d.parts}
    gate = f"{hwcalc.vc('r_gate', d.chip):g} Ohm"          # 100 Ohm, 330 Ohm on the Pi
    pulldown = f"{hwcalc.v('r_pulldown') / 1000:g} kOhm"
    for i in range(1, len(d.board["compartments"]) + 1):
        part = {k: g[by[f"compartment {i} {k}"].ref] for k in
                ("lock", "solenoid switch", "flyback diode", "gate resistor", "gate pull-down", "door contact")}
        assert hwcalc.MOSFETS[0].part in texts(part["solenoid switch"])
        assert hwcalc.DIODES[0].part in texts(part["flyback diode"])
        assert any(gate in t for t in texts(part["gate resistor"]))
        assert pulldown in texts(part["gate pull-down"])
        assert part["lock"].get("data-kind") == "lock" and part["door contact"].get("data-kind") == "reed"
    assert gate == ("330 Ohm" if d.linux else "100 Ohm") and pulldown == "10 kOhm"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_schematic_draws_the_bill_of_materials_and_nothing_else(path):
    d = hwdesign.design(path)
    g = drawn_parts(load(path))
    bom = {r for line in hwpage.bom_lines(d) if line[0] != "-" for r in line[0].split(", ")}
    kept_out = {p.ref for p in d.parts if p.kind.startswith("devboard") or p.kind in schematic.NOT_DRAWN}
    assert set(g) == bom - kept_out
    for p in d.parts:
        if p.ref in g:
            assert (g[p.ref].get("data-kind"), g[p.ref].get("data-value")) == (p.kind, p.value)
            assert any(p.ref in t.split() for t in texts(g[p.ref]))
            if p.value and p.kind != "psu":
                assert any(p.value in t for t in texts(g[p.ref])), p


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_pull_up_is_a_part_where_the_board_says_external_and_dashed_where_internal(path):
    d = hwdesign.design(path)
    root = load(path)
    g = drawn_parts(root)
    n = len(d.board["compartments"])
    pulls = [(d.board["door_pull"], f"compartment {i} door pull-up") for i in range(1, n + 1)]
    if d.board["tamper"] is not None:
        pulls.append((d.board["tamper_pull"], "tamper pull-up"))
    by = {p.does: p for p in d.parts}
    for pull, does in pulls:
        assert (pull == "external") == (does in by)
        if pull == "external":
            assert by[does].ref in g and "10 kOhm" in texts(g[by[does].ref])
    if any(pull == "internal" for pull, _ in pulls):
        assert "in the chip" in texts(root)


def test_a_board_with_external_pull_ups_one_led_and_no_battery_draws_them(tmp_path):
    b = json.loads((ROOT / "boards" / "esp32-devkitc-4x3.json").read_text())
    b.update(battery=None, tamper=None, led=19, led_active=0, door_pull="external")
    b["keypad"]["pull"] = "external"
    b["compartments"].append({"solenoid": 16, "door": 17})
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(b))
    d = hwdesign.design(path)
    root = ET.fromstring(schematic.svg(d).encode())
    g = drawn_parts(root)
    assert set(g) == {p.ref for p in d.parts if p.kind not in ("devboard-esp32", "rtc")}
    assert sum(1 for p in g.values() if p.get("data-kind") == "mosfet") == 2
    assert "GPIO16" in texts(root, "net") and "GPIO35" not in texts(root, "net")
    assert "in the chip" not in texts(root)


# ---- the header in pin order -------------------------------------------------------------

# Anchor pins from the makers' pages: Espressif's ESP32-DevKitC V4 and ESP32-S3-DevKitC-1
# user guides (header blocks J2/J3 and J1/J3), the Raspberry Pi's 40-pin header.
ANCHORS = {
    "esp32": {"J2-1": "3V3", "J2-2": "EN", "J2-3": 36, "J2-4": 39, "J2-5": 34, "J2-13": 12, "J2-14": "GND",
              "J2-15": 13, "J2-19": "5V", "J3-1": "GND", "J3-2": 23, "J3-4": 1, "J3-5": 3, "J3-7": "GND",
              "J3-14": 0, "J3-16": 15, "J3-19": 6},
    "esp32s3": {"J1-1": "3V3", "J1-2": "3V3", "J1-3": "RST", "J1-4": 4, "J1-8": 15, "J1-12": 8, "J1-13": 3,
                "J1-14": 46, "J1-20": 14, "J1-21": "5V", "J1-22": "GND", "J3-1": "GND", "J3-2": 43,
                "J3-3": 44, "J3-4": 1, "J3-14": 0, "J3-16": 48, "J3-20": 19, "J3-21": "GND", "J3-22": "GND"},
    "rpi": {"J8-1": "3V3", "J8-2": "5V", "J8-3": "D2", "J8-4": "5V", "J8-6": "GND", "J8-8": "D14",
            "J8-11": "D17", "J8-12": "D18", "J8-17": "3V3", "J8-27": "D0", "J8-28": "D1", "J8-39": "GND",
            "J8-40": "D21"},
}
SIZES = {"esp32": {"J2": 19, "J3": 19}, "esp32s3": {"J1": 22, "J3": 22}, "rpi": {"J8": 40}}


@pytest.mark.parametrize("chip", sorted(hwdesign.DEVBOARDS))
def test_each_header_is_in_its_makers_pin_order(chip):
    dev = hwdesign.DEVBOARDS[chip]
    table = dict(dev.headers)
    assert len(table) == len(dev.headers)
    for pin, what in ANCHORS[chip].items():
        assert table[pin] == what, pin
    count: dict = {}
    for pin, _ in dev.headers:
        name, n = pin.split("-")
        count[name] = count.get(name, 0) + 1
        assert int(n) == count[name]           # numbered 1, 2, 3... in order
    assert count == SIZES[chip]
    for supply, pin in dev.power.items():
        assert table[pin] == supply


@pytest.mark.parametrize("board, first, last", [
    ("esp32-devkitc-4x3", ("J2-1", "J3-1"), ("J2-19", "J3-19")),
    ("esp32s3-devkitc-4x4", ("J1-1", "J3-1"), ("J1-22", "J3-22")),
    ("rpi4-4x4", ("J8-1", "J8-2"), ("J8-39", "J8-40")),
])
def test_the_header_rows_pair_the_pins_that_sit_side_by_side(board, first, last):
    rows = hwheader.rows(hwdesign.design(ROOT / "boards" / f"{board}.json"))
    assert (rows[0][0].pin, rows[0][1].pin) == first and (rows[-1][0].pin, rows[-1][1].pin) == last


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_wiring_table_lists_the_whole_header_in_pin_order(path):
    d = hwdesign.design(path)
    md = (HW / path.stem / "wiring.md").read_text()
    sec = md.split("## Header order", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in sec.splitlines() if re.match(r"\| J\d+-\d+ \|", ln)]
    cells = [c.strip() for ln in lines for c in ln.strip("|").split(" | ")]
    shown = [(cells[i], cells[i + 1]) for i in range(0, len(cells), 3)]
    pairs = [(p.pin, p.name) for row in hwheader.rows(d) for p in row]
    assert shown == pairs and len(shown) == len(d.devboard.headers)
    for w in d.wires():
        if w.pin not in hwdesign.POWER:
            assert f"| {d.header(w.pin)} | {pin_name(w.pin)} | **{w.role}**" in sec


@pytest.mark.parametrize("board, pin, says", [
    ("esp32-devkitc-4x3", "J3-2", "compartment 1 solenoid"),
    ("esp32-devkitc-4x3", "J3-19", "not free: wired to the module's SPI flash"),
    ("esp32-devkitc-4x3", "J3-12", "free"),                                       # GPIO16 on a WROOM-32E
    ("esp32-wrover-devkitc-4x3", "J3-12", "not free: wired to the PSRAM inside the ESP32-WROVER-E"),
    ("esp32-devkitc-4x3", "J2-2", "reset (EN of the chip): leave free"),
    ("rpi4-4x4", "J8-4", "U1 5 V output, with J8-2"),                             # the Pi is fed on both
    ("rpi4-4x4", "J8-27", "not free: ID_SD"),
])
def test_a_header_pin_says_what_it_does_or_why_it_stays_free(board, pin, says):
    rows = hwheader.rows(hwdesign.design(ROOT / "boards" / f"{board}.json"))
    p = next(p for row in rows for p in row if p.pin == pin)
    assert says in (p.use, p.to)
