# Board files are checked on the host (host_tools/boards.py, docs/boards.md): every rule
# has a bad board here, each message names the role and the pin, the shipped boards pass.
import copy
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from host_tools import boards
from host_tools.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "host_tools" / "virtual"))
import fakeworld  # noqa: E402

ESP32 = json.loads((ROOT / "boards" / "esp32-devkitc-4x3.json").read_text())
S3 = json.loads((ROOT / "boards" / "esp32s3-devkitc-4x4.json").read_text())


def check(board, path="test-board"):
    return boards.check_text(json.dumps(board), path)


def errors(board):
    return check(board).errors


def one_error(board, *parts):
    errs = errors(board)
    assert len(errs) == 1, errs
    for p in parts:
        assert p in errs[0], errs[0]
    return errs[0]


def edit(base, **changes):
    b = copy.deepcopy(base)
    for k, v in changes.items():
        b[k] = v
    return b


def keypad(base, **changes):
    b = copy.deepcopy(base)
    b["keypad"].update(changes)
    return b


# ---- the shipped boards -------------------------------------------------------

@pytest.mark.parametrize("path", boards.shipped(), ids=lambda p: p.name)
def test_every_shipped_board_is_valid_without_warnings(path):
    r = boards.check_file(path)
    assert r.ok and r.errors == [] and r.warnings == [], r.errors + r.warnings


def test_the_boards_of_the_issues_ship():
    assert [p.name for p in boards.shipped()] == [
        "esp32-devkitc-4x3.json", "esp32-wrover-devkitc-4x3.json",     # the PSRAM builds
        "esp32s3-devkitc-4x4.json", "esp32s3-n8r8-devkitc-4x4.json",
        "rpi4-4x4.json"]                                                # the linux port's


@pytest.mark.parametrize("psram, counterpart, module", [
    ("esp32-wrover-devkitc-4x3", "esp32-devkitc-4x3", "ESP32-WROVER-E"),
    ("esp32s3-n8r8-devkitc-4x4", "esp32s3-devkitc-4x4", "ESP32-S3-WROOM-1-N8R8"),
])
def test_a_psram_build_has_the_pins_of_its_counterpart_and_names_its_module(psram, counterpart, module):
    # same wiring, same firmware board.json but the name: only the dev board differs
    a = boards.device_board(ROOT / "boards" / f"{psram}.json")
    b = boards.device_board(ROOT / "boards" / f"{counterpart}.json")
    assert {**a, "name": b["name"]} == b
    raw = json.loads((ROOT / "boards" / f"{psram}.json").read_text())
    assert raw["module"] == module and boards.MODULES[module].psram_mb == 8
    assert "module" not in a                      # the device never reads it


def test_the_wroom_board_names_its_module_without_psram():
    assert ESP32["module"] == "ESP32-WROOM-32E" and boards.MODULES["ESP32-WROOM-32E"].psram_mb == 0


def test_the_device_board_is_flat_with_every_default_filled_in():
    b = boards.device_board(ROOT / "boards" / "esp32-devkitc-4x3.json")
    assert b == {
        "format": 1, "name": "esp32-devkitc-4x3", "chip": "esp32",
        "keypad": {"rows": [13, 14, 27, 26], "cols": [25, 33, 32], "layout": "123456789*0#",
                   "pull": "internal"},
        "compartments": [{"solenoid": 23, "door": 22}],
        "solenoid_active": 1, "door_open_level": 1, "door_pull": "internal", "max_on_ms": 2000,
        "led": [21, 19, 18], "led_active": 1, "buzzer": 4,
        "tamper": 39, "tamper_open_level": 1, "tamper_pull": "external",
        "battery": 35, "battery_divider": [100, 18],
    }


@pytest.mark.parametrize("doc, section", [("runtime.md", "## 3. Boards"), ("boards.md", "## 3. The device")])
def test_the_docs_show_the_device_board_of_the_esp32_board(doc, section):
    text = (ROOT / "docs" / doc).read_text()
    block = text[text.index(section):].split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == boards.device_board(ROOT / "boards" / "esp32-devkitc-4x3.json")


def test_a_minimal_board_is_valid_and_gets_defaults():
    doc = {"name": "example", "chip": "esp32",
           "keypad": {"rows": [13, 14, 27, 26], "cols": [25, 33, 32], "layout": "123456789*0#"},
           "compartments": [{"solenoid": 23, "door": 22}], "led": 21, "buzzer": 4}
    r = check(doc)
    assert r.ok, r.errors
    b = r.board
    assert b["led"] == [21] and b["keypad"]["pull"] == "internal" and b["max_on_ms"] == 2000
    assert b["tamper"] is None and b["battery"] is None and b["solenoid_active"] == 1


def test_the_device_board_passes_the_firmwares_completeness_check():
    from parcelbox import devconf

    class St:
        def __init__(self, data):
            self.data = data

        def read(self, name):
            return self.data

    for path in boards.shipped():
        b = boards.device_board(path)
        assert devconf.load_board(St(json.dumps(b).encode())) == b
        s = devconf.core_settings(b, {"settings": {}})
        assert s["keypad_rows"] * s["keypad_cols"] == len(b["keypad"]["layout"])


def test_the_chip_tables_agree_with_the_fake_machine():
    for name, chip in boards.CHIPS.items():
        if chip.named:
            continue        # a linux board: Blinka's pins, no fake machine (tests/ports/test_linux_port.py)
        fake = fakeworld.CHIPS[name]
        assert tuple(chip.pins) == fake["pins"]
        assert tuple(chip.input_only) == fake["input_only"]
        assert tuple(chip.no_pull) == fake["no_pull"]
        assert tuple(chip.adc1) == fake["adc1"] and tuple(chip.adc2) == fake["adc2"]
        assert chip.timers == fake["timers"]


# ---- pins used twice, and pins the chip lacks -----------------------------------

def test_a_pin_used_twice_names_both_roles():
    b = edit(ESP32, buzzer=22)
    one_error(b, "GPIO22 is used twice", "compartment 1 door", "buzzer")


def test_a_pin_used_three_times_names_all():
    b = edit(ESP32, buzzer=22, led=22)
    one_error(b, "GPIO22 is used 3 times", "compartment 1 door", "LED", "buzzer")


@pytest.mark.parametrize("chip, pin", [("esp32", 20), ("esp32", 24), ("esp32", 28), ("esp32", 40),
                                       ("esp32s3", 22), ("esp32s3", 25), ("esp32s3", 49)])
def test_a_pin_the_chip_does_not_have(chip, pin):
    base = ESP32 if chip == "esp32" else S3
    one_error(edit(base, buzzer=pin), f"buzzer (GPIO{pin})", f"the {chip} has no GPIO{pin}")


# ---- outputs on input-only pins, pull-ups where there are none -------------------

@pytest.mark.parametrize("pin", [34, 36, 38])
def test_outputs_on_input_only_pins_are_refused(pin):
    if pin == 38:
        pin = 36   # 37/38 are not on the module; the input-only rule is shown on 34 and 36
    for b, role in [(edit(ESP32, buzzer=pin), "buzzer"),
                    (edit(ESP32, led=pin), "LED"),
                    (edit(ESP32, compartments=[{"solenoid": pin, "door": 22}]), "compartment 1 solenoid"),
                    (keypad(ESP32, rows=[13, 14, 27, pin]), "keypad row 4")]:
        one_error(b, f"{role} (GPIO{pin})", "input-only", "needs an output pin")


def test_keypad_columns_door_and_tamper_need_a_pull_up_the_pin_has():
    one_error(keypad(ESP32, cols=[25, 33, 34]), "keypad column 3 (GPIO34)", "no internal pull-up",
              'keypad "pull" to "external"')
    one_error(edit(ESP32, compartments=[{"solenoid": 23, "door": 36}]), "compartment 1 door (GPIO36)",
              "no internal pull-up", '"door_pull" to "external"')
    one_error(edit(ESP32, tamper={"pin": 39, "pull": "internal"}), "tamper switch (GPIO39)",
              "no internal pull-up", 'tamper "pull" to "external"')


def test_external_pull_ups_make_input_only_pins_fine_for_inputs():
    b = keypad(ESP32, cols=[34, 36, 39], pull="external")
    b = edit(b, tamper={"pin": 32, "pull": "external"}, door_pull="external",
             compartments=[{"solenoid": 23, "door": 33}])
    assert errors(b) == []


def test_keypad_rows_need_outputs_even_with_external_pull_ups():
    one_error(keypad(ESP32, rows=[13, 14, 27, 34], pull="external"), "keypad row 4 (GPIO34)", "input-only")


# ---- flash, console, USB and PSRAM pins ----------------------------------------------

@pytest.mark.parametrize("pin", range(6, 12))
def test_the_esp32_flash_pins_are_refused(pin):
    one_error(edit(ESP32, buzzer=pin), f"buzzer (GPIO{pin})", "SPI flash (GPIO6-11)")


@pytest.mark.parametrize("pin", range(26, 33))
def test_the_s3_flash_pins_are_refused(pin):
    one_error(edit(S3, buzzer=pin), f"buzzer (GPIO{pin})", "SPI flash and PSRAM (GPIO26-32)")


@pytest.mark.parametrize("pin", range(33, 38))
def test_the_s3_octal_psram_pins_are_refused(pin):
    one_error(edit(S3, buzzer=pin), f"buzzer (GPIO{pin})", "octal PSRAM")


@pytest.mark.parametrize("chip, pin, what", [("esp32", 1, "UART0 TX"), ("esp32", 3, "UART0 RX"),
                                             ("esp32s3", 43, "UART0 TX"), ("esp32s3", 44, "UART0 RX"),
                                             ("esp32s3", 19, "USB D-"), ("esp32s3", 20, "USB D+"),
                                             ("esp32", 37, "not brought out")])
def test_console_usb_and_missing_module_pins_are_refused(chip, pin, what):
    base = ESP32 if chip == "esp32" else S3
    one_error(edit(base, buzzer=pin), f"buzzer (GPIO{pin})", what)


@pytest.mark.parametrize("chip, pin, what", [("esp32", 16, "PSRAM on ESP32-WROVER"),
                                             ("esp32", 17, "PSRAM on ESP32-WROVER"),
                                             ("esp32s3", 38, "RGB LED"), ("esp32s3", 48, "RGB LED")])
def test_pins_that_work_on_some_modules_only_warn(chip, pin, what):
    base = copy.deepcopy(ESP32 if chip == "esp32" else S3)
    base.pop("module", None)                      # a board that does not say which module
    r = check(edit(base, buzzer=pin))
    assert r.ok and len(r.warnings) == 1 and what in r.warnings[0] and f"GPIO{pin}" in r.warnings[0]


@pytest.mark.parametrize("pin", [16, 17])
def test_a_wrover_e_board_refuses_the_psram_pins_and_a_wroom_32e_board_frees_them(pin):
    one_error(edit(ESP32, module="ESP32-WROVER-E", buzzer=pin), f"buzzer (GPIO{pin})",
              "PSRAM inside the ESP32-WROVER-E")
    r = check(edit(ESP32, module="ESP32-WROOM-32E", buzzer=pin))
    assert r.ok and r.warnings == []


def test_a_module_the_checker_does_not_know_is_named_with_a_suggestion():
    err = one_error(edit(ESP32, module="ESP32-WROVER"), 'module must name a module', "ESP32-WROVER-E")
    assert "did you mean" in err
    one_error(edit(ESP32, module=8), "not the number 8", "known: ESP32-WROOM-32E, ESP32-WROVER-E")


def test_a_module_of_another_chip_is_refused():
    one_error(edit(ESP32, module="ESP32-S3-WROOM-1-N8R8"), "carries an esp32s3", 'chip is "esp32"')
    one_error(edit(S3, module="ESP32-WROVER-E"), "carries an esp32", 'chip is "esp32s3"')


# ---- strapping pins ---------------------------------------------------------------------

def test_gpio0_is_refused_for_every_role_on_both_chips():
    for base in (ESP32, S3):
        for b, role in [(edit(base, buzzer=0), "buzzer"), (edit(base, led=0), "LED")]:
            one_error(b, f"{role} (GPIO0)", "serial bootloader", "BOOT button")


@pytest.mark.parametrize("pin, why", [(2, "flashing over USB fails"), (12, "1.8 V flash")])
def test_esp32_gpio2_and_12_must_not_be_held_high_at_reset(pin, why):
    # a door with an external pull-up holds it high while the door is open
    b = edit(ESP32, door_pull="external", compartments=[{"solenoid": 23, "door": pin}])
    one_error(b, f"compartment 1 door (GPIO{pin})", why, "external pull-up holds it high")
    # keypad lines with external pull-ups: a key held at power-up
    one_error(keypad(ESP32, cols=[25, 33, pin], pull="external"), f"keypad column 3 (GPIO{pin})", why,
              "key held at power-up")
    # an active-low solenoid's driver holds it high
    b = edit(ESP32, solenoid_active=0, compartments=[{"solenoid": pin, "door": 22}])
    one_error(b, f"compartment 1 solenoid (GPIO{pin})", why)


@pytest.mark.parametrize("pin", [2, 12])
def test_esp32_gpio2_and_12_are_fine_for_what_keeps_them_low(pin):
    assert errors(edit(ESP32, led=pin)) == []
    assert errors(edit(ESP32, buzzer=pin, led=4)) == []
    assert errors(edit(ESP32, compartments=[{"solenoid": pin, "door": 22}], buzzer=23)) == []


def test_esp32_gpio15_must_not_be_held_low_at_reset():
    one_error(edit(ESP32, compartments=[{"solenoid": 23, "door": 15}]), "compartment 1 door (GPIO15)",
              "silences the boot messages", "closed switch holds it low")
    one_error(edit(ESP32, buzzer=15), "buzzer (GPIO15)", "silences the boot messages")


def test_a_solenoid_on_a_pin_the_chip_pulls_on_at_reset_is_refused():
    one_error(edit(ESP32, compartments=[{"solenoid": 5, "door": 22}]), "compartment 1 solenoid (GPIO5)",
              "pulls GPIO5 high", "at every reset")
    # driven low, the same pin is fine: the chip's pull-up keeps it off during reset
    assert errors(edit(ESP32, solenoid_active=0, compartments=[{"solenoid": 5, "door": 22}])) == []


@pytest.mark.parametrize("pin, why", [(45, "1.8 V flash"), (46, "serial bootloader")])
def test_s3_gpio45_and_46_must_not_be_held_high_at_reset(pin, why):
    b = edit(S3, tamper={"pin": pin, "pull": "external"})
    one_error(b, f"tamper switch (GPIO{pin})", why)
    assert errors(edit(S3, buzzer=pin)) == []


def test_s3_gpio3_may_not_be_held_at_all():
    one_error(edit(S3, buzzer=3), "buzzer (GPIO3)", "JTAG")
    one_error(edit(S3, tamper={"pin": 3}), "tamper switch (GPIO3)", "JTAG")


# ---- battery sense ---------------------------------------------------------------------

def battery(base, pin, top=100, bottom=18, max_mv=14400):
    return edit(base, battery={"pin": pin, "r_top_kohm": top, "r_bottom_kohm": bottom, "max_mv": max_mv})


def test_battery_sense_on_adc2_is_refused_because_of_wi_fi():
    one_error(battery(edit(ESP32, buzzer=5), 4), "battery sense (GPIO4)", "ADC2", "Wi-Fi", "GPIO32-39")
    s3 = edit(S3, compartments=S3["compartments"][:3] + [{"solenoid": 47, "door": 21}])
    one_error(battery(s3, 11), "battery sense (GPIO11)", "ADC2", "GPIO1-10")


def test_battery_sense_on_a_pin_without_adc_is_refused():
    one_error(battery(ESP32, 5), "battery sense (GPIO5)", "has no ADC")
    one_error(battery(S3, 47), "battery sense (GPIO47)", "has no ADC")


def test_a_divider_that_overdrives_the_adc_is_refused():
    one_error(battery(ESP32, 35, top=100, bottom=47), "battery sense (GPIO35)", "divider 100k/47k",
              "14.4 V", "above the 2.45 V")


def test_battery_needs_all_its_fields():
    e = errors(edit(ESP32, battery={"pin": 35}))
    assert sorted(e) == sorted(f'battery lacks "{k}"' for k in ("max_mv", "r_bottom_kohm", "r_top_kohm"))


# ---- the keypad layout ------------------------------------------------------------------

def test_layout_length_must_match_rows_times_cols():
    one_error(keypad(ESP32, layout="123456789*0#A"), "layout has 13 keys but 4 rows x 3 columns make 12")


def test_layout_must_have_the_digits_star_and_hash():
    one_error(keypad(ESP32, layout="123456789*0A"), "lacks the key #")
    e = one_error(keypad(ESP32, layout="ABC456789DEF"), "lacks the keys 0 1 2 3 * #")
    assert "codes need 0-9" in e


def test_layout_keys_must_be_distinct_and_printable():
    e = errors(keypad(ESP32, layout="1234567890*#"[:11] + "1"))
    assert any("names '1' more than once" in x for x in e)
    e = errors(keypad(ESP32, layout="12345678 0*#"))
    assert any("printable ASCII" in x for x in e)


def test_keypad_size_limits():
    one_error(keypad(ESP32, rows=[]), "keypad rows must list 1 to 8 pins, not 0")
    b = keypad(S3, rows=[4, 5, 6, 7, 8, 9, 10, 11], cols=[15, 16, 17, 18], layout="0123456789*#" + "x" * 20)
    b["compartments"] = [{"solenoid": 12, "door": 13}]
    assert any("= 32 keys; at most 30" in x for x in errors(b))


# ---- shapes, types and names ---------------------------------------------------------

def test_bad_json_names_the_line_and_column():
    r = boards.check_text('{\n  "name": "x",\n  "chip" "esp32"\n}')
    assert r.errors == ["line 3, column 10: not valid JSON: Expecting ':' delimiter"]


def test_a_key_given_twice_is_an_error():
    r = boards.check_text('{"name": "a", "name": "b"}')
    assert r.errors == ['not a valid board: the key "name" appears twice in one object']


def test_unknown_keys_are_named_with_a_suggestion():
    b = edit(ESP32, buzer=4)
    one_error(b, 'unknown key "buzer" in the board (did you mean "buzzer"?)')
    one_error(keypad(ESP32, colums=[1]), 'unknown key "colums" in keypad (did you mean "cols"?)')
    b = edit(ESP32, compartments=[{"solenoid": 23, "door": 22, "lock": 5}])
    one_error(b, 'unknown key "lock" in compartment 1')


def test_missing_keys_are_named():
    b = copy.deepcopy(ESP32)
    del b["buzzer"], b["led"]
    assert errors(b) == ['the board lacks "led"', 'the board lacks "buzzer"']
    b = copy.deepcopy(ESP32)
    b["compartments"] = [{"solenoid": 23}]
    one_error(b, 'compartment 1 lacks "door"')


@pytest.mark.parametrize("change, message", [
    ({"buzzer": "4"}, 'buzzer must be a GPIO number, not the text "4"'),
    ({"buzzer": True}, "buzzer must be a GPIO number, not true/false"),
    ({"buzzer": 4.0}, "buzzer must be a GPIO number, not the number 4.0"),
    ({"compartments": {}}, "compartments must be a list"),
    ({"compartments": []}, "compartments must be a list of at least one"),
    ({"keypad": [1, 2]}, "keypad must be an object"),
    ({"led": "red"}, 'led must be a GPIO number (one LED) or {"red": pin'),
    ({"led": {"red": 21, "green": 19}}, 'led lacks "blue"'),
    ({"solenoid_active": 2}, "solenoid_active must be 0 or 1, not 2"),
    ({"door_open_level": True}, "door_open_level must be 0 or 1, not true"),
    ({"door_pull": "up"}, 'door_pull must be "internal"'),
    ({"max_on_ms": 6000}, "max_on_ms must be 50..5000, not 6000"),
    ({"max_on_ms": "2s"}, "max_on_ms must be a whole number"),
    ({"chip": "esp8266"}, 'chip must be one of "esp32", "esp32s3", "rpi", not "esp8266"'),
    ({"name": "My Board"}, "name must be 1 to 40 of a-z 0-9 -"),
    ({"tamper": 39}, "tamper must be an object"),
])
def test_wrong_types_and_values_are_explained(change, message):
    e = errors(edit(ESP32, **change))
    assert any(message in x for x in e), e


def test_keypad_rows_must_be_a_list():
    one_error(keypad(ESP32, rows="13,14"), 'keypad rows must be a list of GPIO numbers, not the text "13,14"')


def test_more_compartments_than_hardware_timers_is_refused():
    b = edit(S3, compartments=S3["compartments"] + [{"solenoid": 47, "door": 1}], battery=None)
    one_error(b, "5 compartments", "4 hardware timers", "failsafe")


def test_a_name_other_than_the_file_name_is_a_warning():
    r = check(ESP32, "boards/other.json")
    assert r.ok and r.warnings == ['name "esp32-devkitc-4x3" differs from the file name other.json']


def test_every_error_is_listed_not_just_the_first():
    b = edit(ESP32, buzzer=6, led=34)
    b["keypad"]["layout"] = "123"
    assert len(errors(b)) == 4


def test_device_board_raises_with_every_error(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps(edit(ESP32, buzzer=6, led=34)))
    with pytest.raises(boards.BoardFileError) as e:
        boards.device_board(p)
    assert len(e.value.errors) == 2


# ---- the command ------------------------------------------------------------------------

def test_board_check_passes_the_shipped_boards():
    r = CliRunner().invoke(main, ["board", "check", *map(str, boards.shipped())])
    assert r.exit_code == 0, r.output
    assert "esp32-devkitc-4x3.json: ok: esp32-devkitc-4x3 for the esp32, 4x3 keypad, 1 compartment" in r.output
    assert "4x4 keypad, 4 compartments" in r.output


def test_board_check_exits_1_listing_every_error(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(edit(ESP32, buzzer=6, led=34)))
    r = CliRunner().invoke(main, ["board", "check", str(p)])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert lines[0] == f"{p}: 2 errors, the board must not ship:"
    assert lines[1].startswith("  error: LED (GPIO34)") and lines[2].startswith("  error: buzzer (GPIO6)")


def test_board_check_json_gives_errors_warnings_and_the_device_board(tmp_path):
    good = ROOT / "boards" / "esp32s3-devkitc-4x4.json"
    p = tmp_path / "bad.json"
    p.write_text("{")
    r = CliRunner().invoke(main, ["board", "check", "--json", str(good), str(p)])
    assert r.exit_code == 1
    a, b = [json.loads(x) for x in r.output.splitlines()]
    assert a["ok"] and a["board"] == boards.device_board(good) and a["errors"] == []
    assert not b["ok"] and b["board"] is None and b["errors"][0].startswith("line 1, column 2")


def test_board_check_writes_the_device_board(tmp_path):
    out = tmp_path / "board.json"
    src = ROOT / "boards" / "esp32-devkitc-4x3.json"
    r = CliRunner().invoke(main, ["board", "check", str(src), "--out", str(out)])
    assert r.exit_code == 0
    assert json.loads(out.read_text()) == boards.device_board(src)


def test_board_check_of_a_missing_file(tmp_path):
    r = CliRunner().invoke(main, ["board", "check", str(tmp_path / "none.json")])
    assert r.exit_code == 1 and "cannot read the file" in r.output


def test_every_board_error_is_one_family_with_names_that_do_not_collide():
    from host_tools.tech.conn import BoardConnectionError
    from host_tools.vboard.board import VirtualBoardError

    kinds = (boards.BoardFileError, BoardConnectionError, VirtualBoardError)
    assert all(issubclass(k, boards.BoardError) for k in kinds)
    assert len({k.__name__ for k in kinds}) == 3
    assert issubclass(boards.BoardFileError, ValueError)        # a bad file is bad input
    assert issubclass(VirtualBoardError, RuntimeError)
