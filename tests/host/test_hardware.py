# The reference design under hardware/ is generated from the board files (host_tools/hardware/wiring.py):
# what is checked in is what the generator makes now, every pin is in its table and diagram,
# a moved pin makes `parcelbox hardware generate --check` fail, and the arithmetic holds.
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from host_tools import boards

from host_tools.hardware import calc as hwcalc

from host_tools.hardware import design as hwdesign

from host_tools.hardware import page as hwpage

from host_tools.hardware import parts as hwparts

from host_tools.hardware import wiring
from host_tools.cli.main import main
from parcelbox import config, lock

ROOT = Path(__file__).resolve().parents[2]
HW = ROOT / "hardware"
# Boards for a chip without a reference dev board (hwdesign.DEVBOARDS) are skipped by design.
SHIPPED = [p for p in boards.shipped() if json.loads(p.read_text())["chip"] in hwdesign.DEVBOARDS]
SVG_NS = "{http://www.w3.org/2000/svg}"


def roles_of(path):
    """Every pin role of a board file, as `parcelbox board check` names them."""
    c = boards._Checker(str(path))
    c.board(json.loads(Path(path).read_text()))
    assert not c.r.errors, c.r.errors
    return c.roles


def svg_texts(path):
    root = ET.parse(path).getroot()
    return [t.text for t in root.iter(SVG_NS + "text")]


def run(*args):
    return CliRunner().invoke(main, ["hardware", "generate", *args])


# ---- the checked-in pages -------------------------------------------------------------

def test_the_checked_in_pages_are_what_the_generator_makes_now():
    files, skipped = wiring.outputs()
    assert len(SHIPPED) >= 2 and len(skipped) == len(boards.shipped()) - len(SHIPPED)
    stale = [str(p.relative_to(ROOT)) for p in wiring.stale(files)]
    assert not stale, (f"out of date: {', '.join(stale)}: a board file, an input of host_tools/hardware/calc.py "
                       f"or a firmware timing changed; run `parcelbox hardware generate` and commit hardware/")


def test_every_shipped_board_has_its_folder_and_nothing_else_is_there():
    files, _ = wiring.outputs()
    for path in SHIPPED:
        for name in ("README.md", "wiring.md", "wiring.svg", "schematic.svg"):
            assert HW / path.stem / name in files
    assert wiring.orphans(files, HW) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_pin_is_in_the_wiring_table(path):
    table = (HW / path.stem / "wiring.md").read_text()
    roles = roles_of(path)
    assert len(roles) == len(hwdesign.design(path).pins())
    for r in roles:
        assert re.search(rf"^\| {re.escape(r.name)} \| {r.pin} \| J\d+-\d+ \|", table, re.M), (r.name, r.pin)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_pin_is_in_the_diagram_twice_at_the_header_and_on_its_line(path):
    texts = svg_texts(HW / path.stem / "wiring.svg")
    for r in roles_of(path):
        assert texts.count(boards.pin_name(r.pin)) == 2, r.label()
        assert r.name in texts, r.name
    assert "5V" in texts and "GND" in texts


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_diagram_is_well_formed_svg(path):
    root = ET.fromstring((HW / path.stem / "wiring.svg").read_bytes())
    assert root.tag == SVG_NS + "svg"
    assert int(root.get("width")) > 0 and int(root.get("height")) > 0


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_pin_of_a_shipped_board_is_on_its_dev_boards_header(path):
    d = hwdesign.design(path)
    assert all(d.header(p) for p in d.pins())
    assert d.header("5V") and d.header("GND")


def test_every_module_has_a_dev_board_in_the_catalogue():
    assert set(hwdesign.MODULE_BOARDS) == set(boards.MODULES)
    for name, (title, kind) in hwdesign.MODULE_BOARDS.items():
        assert kind in hwparts.CATALOGUE and boards.MODULES[name].chip in hwdesign.DEVBOARDS


@pytest.mark.parametrize("board, title, kind", [
    ("esp32-devkitc-4x3", "ESP32-DevKitC-32E", "devboard-esp32"),
    ("esp32-wrover-devkitc-4x3", "ESP32-DevKitC-VE", "devboard-esp32-wrover-e"),
    ("esp32s3-n8r8-devkitc-4x4", "ESP32-S3-DevKitC-1-N8R8", "devboard-esp32s3"),
    ("esp32s3-devkitc-4x4", "ESP32-S3-DevKitC-1", "devboard-esp32s3"),      # no module: the chip's
])
def test_the_module_picks_the_dev_board_of_the_pages_and_the_bom(board, title, kind):
    d = hwdesign.design(ROOT / "boards" / f"{board}.json")
    assert d.devboard.title == title and d.parts[0].kind == kind
    assert d.devboard.pins == hwdesign.DEVBOARDS[d.chip].pins      # the header is the chip's
    page = (HW / board / "README.md").read_text()
    assert f"| dev board | {title} ({d.chip}" in page and hwparts.CATALOGUE[kind].pn in page


def test_the_wrover_build_costs_the_dev_boards_difference_more():
    wroom, wrover = (hwpage.Numbers(hwdesign.design(ROOT / "boards" / f"{b}.json"))
                     for b in ("esp32-devkitc-4x3", "esp32-wrover-devkitc-4x3"))
    diff = hwparts.CATALOGUE["devboard-esp32-wrover-e"].eur - hwparts.CATALOGUE["devboard-esp32"].eur
    assert wrover.core_eur - wroom.core_eur == pytest.approx(diff) == pytest.approx(2.0)


def test_the_header_tables_hold_each_pin_once_and_only_pins_the_chip_has():
    for chip, dev in hwdesign.DEVBOARDS.items():
        assert len(set(dev.pins.values())) == len(dev.pins)
        assert set(dev.pins) <= set(boards.CHIPS[chip].pins)


# ---- the command -------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    shutil.copytree(ROOT / "boards", tmp_path / "boards")
    shutil.copytree(HW, tmp_path / "hardware")
    return tmp_path


def test_check_passes_on_the_repository():
    r = run("--check")
    assert r.exit_code == 0, r.output
    assert "up to date" in r.output


def test_a_moved_pin_makes_check_fail_until_regenerated(tree):
    path = tree / "boards" / "esp32-devkitc-4x3.json"
    b = json.loads(path.read_text())
    b["buzzer"] = 5          # valid: GPIO5 is free and no solenoid
    path.write_text(json.dumps(b))
    args = ["--boards", str(tree / "boards"), "--out", str(tree / "hardware")]
    r = run("--check", *args)
    assert r.exit_code == 1, r.output
    assert "esp32-devkitc-4x3/wiring.md" in r.output and "esp32-devkitc-4x3/wiring.svg" in r.output
    assert "esp32-devkitc-4x3/schematic.svg" in r.output
    assert "esp32s3" not in r.output
    assert "run `parcelbox hardware generate`" in r.output
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert run("--check", *args).exit_code == 0
    table = (tree / "hardware" / "esp32-devkitc-4x3" / "wiring.md").read_text()
    assert "| buzzer | 5 | J3-10 |" in table
    assert "GPIO4" not in svg_texts(tree / "hardware" / "esp32-devkitc-4x3" / "wiring.svg")


def test_a_new_compartment_changes_the_page_and_the_bill_of_materials(tree):
    path = tree / "boards" / "esp32-devkitc-4x3.json"
    b = json.loads(path.read_text())
    b["compartments"].append({"solenoid": 16, "door": 17})
    path.write_text(json.dumps(b))
    args = ["--boards", str(tree / "boards"), "--out", str(tree / "hardware")]
    r = run("--check", *args)
    assert r.exit_code == 1
    assert "esp32-devkitc-4x3/README.md" in r.output and "hardware/README.md" in r.output
    assert run(*args).exit_code == 0
    page = (tree / "hardware" / "esp32-devkitc-4x3" / "README.md").read_text()
    assert "| K1, K2 | 2 |" in page


def test_an_invalid_board_is_an_error_not_a_page(tree):
    path = tree / "boards" / "esp32-devkitc-4x3.json"
    b = json.loads(path.read_text())
    b["buzzer"] = 6          # the module's flash
    path.write_text(json.dumps(b))
    r = run("--check", "--boards", str(tree / "boards"), "--out", str(tree / "hardware"))
    assert r.exit_code == 2
    assert "buzzer (GPIO6)" in r.output


def test_a_folder_without_its_board_file_makes_check_fail(tree):
    (tree / "boards" / "esp32-devkitc-4x3.json").unlink()
    r = run("--check", "--boards", str(tree / "boards"), "--out", str(tree / "hardware"))
    assert r.exit_code == 1
    assert "no board file for" in r.output and "esp32-devkitc-4x3" in r.output


def test_a_generated_block_missing_from_the_index_is_named(tree):
    index = tree / "hardware" / "README.md"
    index.write_text(index.read_text().replace("<!-- generated: inputs -->", ""))
    r = run("--check", "--boards", str(tree / "boards"), "--out", str(tree / "hardware"))
    assert r.exit_code == 2
    assert "inputs" in r.output


# ---- the arithmetic, against hand-worked values ------------------------------------------

def test_the_timing_is_the_firmwares():
    t = hwcalc.firmware_timing()
    assert (t["pulse_ms"], t["cooldown_ms"], t["max_on_ms"]) == (
        config.DEFAULTS["pulse_ms"], config.DEFAULTS["cooldown_ms"], config.DEFAULTS["max_on_ms"])
    assert t["hard_max_on_ms"] == lock.HARD_MAX_ON_MS == boards.HARD_MAX_ON_MS


def test_the_firmware_refuses_more_than_25_percent_duty_as_the_docs_say():
    p = config.DEFAULTS["pulse_ms"]
    with pytest.raises(ValueError, match="3 \\* pulse_ms"):
        config.make({"cooldown_ms": 3 * p - 1})
    assert config.make({"cooldown_ms": 3 * p})["cooldown_ms"] == 3 * p
    s = hwcalc.solenoid(2000)
    assert s.duty_worst == pytest.approx(0.25) and s.duty_worst <= hwcalc.v("lock_duty")


def test_coil_current_dissipation_and_duty():
    s = hwcalc.solenoid(2000, 14.4)
    assert s.i_nom == pytest.approx(12 / 15) == pytest.approx(0.8)
    assert s.i_max == pytest.approx(14.4 / (15 * 0.8)) == pytest.approx(1.2)
    assert s.p_nom == pytest.approx(9.6)
    assert s.duty_default == pytest.approx(700 / 3700)
    assert s.e_pulse_j == pytest.approx(9.6 * 0.7)
    assert s.vgs == pytest.approx(3.3 * 10000 / 10100)
    assert s.gate_peak_ma == pytest.approx(33) and s.gate_peak_ma < hwcalc.v("gpio_max_ma")
    rows = {r["m"].part: r for r in hwcalc.mosfet_rows(s, 0.5)}
    assert rows["AO3400A"]["p_w"] == pytest.approx(1.2 ** 2 * 0.048 * 1.5)
    assert rows["AO3400A"]["verdict"] == "yes" and rows["AO3400A"]["rise_c"] < 25
    assert rows["IRLZ44N"]["verdict"] == "typical only"
    assert rows["IRFZ44N"]["verdict"] == "no"
    assert all(r["vr_margin"] > 2 and r["peak_margin"] > 10 for r in hwcalc.diode_rows(s))


def test_the_bom_parts_are_the_ones_the_arithmetic_approves():
    s = hwcalc.solenoid(2000, 14.4)
    first = hwcalc.mosfet_rows(s, hwcalc.DIODES[0].vf)[0]
    assert first["verdict"] == "yes" and first["vds_margin"] > 1.5
    assert hwcalc.MOSFETS[0].part in hwparts.CATALOGUE["mosfet"].pn
    assert hwcalc.DIODES[0].part in hwparts.CATALOGUE["flyback"].pn


def test_supply_and_fuse_carry_every_lock_at_once():
    s = hwcalc.solenoid(2000, 14.4)
    elec = 0.35 * 5 / (0.8 * 12)
    one, four = hwcalc.supply(1, s), hwcalc.supply(4, s)
    assert four.peak_a == pytest.approx(4 * 1.2 + elec)
    assert (one.fuse_a, four.fuse_a) == (2.0, 6.3)
    assert (one.psu_a, four.psu_a) == (1.5, 6.0)


def test_idle_budget_of_the_esp32_board_by_hand():
    d = hwdesign.design(ROOT / "boards" / "esp32-devkitc-4x3.json")
    b = hwcalc.budget(d.board, hwcalc.solenoid(2000, 14.4))
    # module + door pull-up (internal 45k, door shut) + tamper pull-up (external 10k, lid on)
    rail33 = 31.12 + 3.3 / 45 + 3.3 / 10
    at12 = (rail33 + 10) * 5 / (0.8 * 12) + 12 / 118
    assert b.idle_12v_ma == pytest.approx(at12)
    assert b.idle_wh_day == pytest.approx(at12 / 1000 * 12 * 24)
    # one opening: pulse + busy electronics + LED 2.0 s + buzzer 0.53 s at half duty
    fb = hwcalc.feedback_times()
    assert fb == {"led_s": 2.0, "buzzer_s": pytest.approx(0.15 + 0.2 + 6 * 0.03)}
    opening = 6.72 + 5 * 0.09 * 5 / 0.8 + 5 * 0.008 * 2.0 / 0.8 + 5 * 0.04 * 0.5 * 0.53 / 0.8
    assert b.open_j == pytest.approx(opening)
    n, wh, share = b.per_day[1]
    assert wh == pytest.approx(at12 / 1000 * 12 * 24 + n * opening / 3600)
    assert share < 0.05      # the idle connection, not the lock, sets the energy a day


def test_battery_standby_by_hand():
    sla, li, lfp = hwcalc.batteries()
    assert sla.usable_wh == pytest.approx(12 * 7 * 0.5)
    assert hwcalc.standby_days(sla, 6.0) == pytest.approx(7.0)
    assert hwcalc.sla_ah_for(7, 6.0) == pytest.approx(6.0 * 7 / 6)
    assert hwcalc.coil_at(9.0) == pytest.approx((0.6, 0.5625))


# ---- the pages show the code's numbers ---------------------------------------------------

def _bom_rows(page):
    sec = page.split("## 1. Bill of materials", 1)[1].split("**Total", 1)[0]
    return [ln.split(" | ") for ln in sec.splitlines() if ln.startswith("| ") and "---" not in ln][1:]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_pages_bom_total_is_the_sum_of_its_lines(path):
    page = (HW / path.stem / "README.md").read_text()
    rows = _bom_rows(page)
    core = sum(float(r[-1].strip(" |")) for r in rows if "(optional)" not in r[2])
    total = float(re.search(r"\*\*Total: ([\d.,]+) EUR\*\*", page).group(1).replace(",", ""))
    assert total == pytest.approx(core)
    assert total == pytest.approx(hwpage.Numbers(hwdesign.design(path)).core_eur)
    for r in rows:
        assert float(r[-1].strip(" |")) == pytest.approx(int(r[1]) * float(r[-2]))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_page_states_the_key_figures(path):
    page = (HW / path.stem / "README.md").read_text()
    n = hwpage.Numbers(hwdesign.design(path))
    for figure in (f"**{n.sol.i_nom:.2f} A**", f"**{n.sol.i_max:.2f} A**", f"**{n.sol.duty_default * 100:.1f} %**",
                   f"**{n.sol.duty_worst * 100:.1f} %**", f"T{n.supply.fuse_a:g}A", f"{n.sol.pulse_ms} ms"):
        assert figure in page, figure
    assert len(n.d.board["compartments"]) == sum(1 for p in n.d.parts if p.kind == "lock")
