"""Board files: load one, check it against its chip, and give the device its board.json.

A board file (``boards/*.json``, docs/boards.md) maps roles to GPIO pins. Checking it
happens here, on the host, with messages a technician can act on; every message names
the role and the pin ("keypad column 2 (GPIO34): ..."). The device reads the result,
a flat dict with every default filled in (:func:`device_board`), and only checks that
it is complete (``firmware/parcelbox/devconf.py``).

The facts about each chip (which pins exist, which are input-only, flash, strapping,
ADC1) are data in :data:`CHIPS`, with the reason a technician is given for each; the
modules a board file may name (their PSRAM and its pins) in :data:`MODULES`.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from host_tools import paths

FORMAT = 1
LOW, HIGH = "low", "high"
LAYOUT_KEYS = "0123456789*#"
MAX_KEYS = 30            # the keypad frame is a 30-bit small int (docs/keypad.md)
HARD_MAX_ON_MS = 5000    # firmware/parcelbox/lock.py: no setting may pass it
MIN_ON_MS = 50


def _span(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b + 1))


def pin_name(p: int | str) -> str:
    """A pin as messages name it: GPIO13 on an ESP32, D17 (Blinka's name) on a linux board;
    a name that is not plain ASCII in quotes, escaped (a message must print anywhere)."""
    if isinstance(p, str):
        return p if p.isascii() and p.isprintable() else json.dumps(p)
    return f"GPIO{p}"


@dataclass(frozen=True)
class Strap:
    """A strapping pin: the level it must see while the chip resets, and why."""

    need: str | None      # LOW, HIGH, "float" (no level may be imposed), None (no boot effect)
    pull: str | None      # the chip's own pull on it during reset: LOW, HIGH or None
    why: str
    always: bool = False  # refused for every role


@dataclass(frozen=True)
class Chip:  # noqa: PLR0902 - one record of facts per chip
    name: str
    title: str
    pins: tuple[int, ...]
    input_only: tuple[int, ...]
    no_pull: tuple[int, ...]
    adc1: tuple[int, ...]
    adc2: tuple[int, ...]
    adc_max_mv: int                  # top of the ADC's accurate range at full attenuation
    timers: int                      # hardware timers (one solenoid failsafe each)
    reserved: dict[int, str]         # pins no role may use, and why
    caution: dict[int, str]          # pins that work on some modules only (warnings)
    straps: dict[int, Strap]
    pin_ranges: str                  # the pins as a technician reads them
    named: bool = False              # pins are Blinka `board` names ("D17"), not numbers (linux)
    aliases: dict[str, str] = field(default_factory=dict)   # other Blinka names -> the D name
    failsafe: str = "hardware timers"   # what cuts a solenoid after max_on_ms


_ESP32_FLASH = "is wired to the module's SPI flash (GPIO6-11): using it crashes the chip"
_S3_FLASH = "is wired to the module's SPI flash and PSRAM (GPIO26-32)"
_S3_OCTAL = ("is used by the octal PSRAM or flash inside ESP32-S3 modules with 8 MB PSRAM "
             "(the usual DevKitC-1 N8R8/N16R8/N32R8), GPIO33-37")


_RPI_PINS = tuple(f"D{n}" for n in range(28))
_RPI_UP = ("D0", "D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8")   # BCM2711 pulls at power-up


def _rpi_strap(p: str) -> Strap:
    n = p[1:]
    if p in _RPI_UP:
        return Strap(None, HIGH, f"{p} (GPIO{n}) is pulled up inside the Pi's SoC from power-up until the "
                     f"service configures it (GPIO0-8 default to pull-up)")
    return Strap(None, LOW, f"{p} (GPIO{n}) is pulled down inside the Pi's SoC from power-up until the "
                 f"service configures it (GPIO9-27 default to pull-down)")

CHIPS: dict[str, Chip] = {
    "esp32": Chip(
        name="esp32",
        title="ESP32 (ESP32-WROOM-32/WROVER module, as on the ESP32-DevKitC)",
        pins=_span(0, 19) + (21, 22, 23, 25, 26, 27) + _span(32, 39),
        input_only=_span(34, 39),
        no_pull=_span(34, 39),
        adc1=_span(32, 39),
        adc2=(0, 2, 4, 12, 13, 14, 15, 25, 26, 27),
        adc_max_mv=2450,
        timers=4,
        reserved={
            **{p: _ESP32_FLASH for p in _span(6, 11)},
            1: "is UART0 TX, wired to the USB-serial chip: the REPL, mpremote and the serial monitor need it",
            3: "is UART0 RX, wired to the USB-serial chip: the REPL, mpremote and the serial monitor need it",
            37: "is not brought out on ESP32-WROOM-32/WROVER modules",
            38: "is not brought out on ESP32-WROOM-32/WROVER modules",
        },
        caution={
            16: "is used by the PSRAM on ESP32-WROVER modules; it is free only on a WROOM module",
            17: "is used by the PSRAM on ESP32-WROVER modules; it is free only on a WROOM module",
        },
        straps={
            0: Strap(HIGH, HIGH, "GPIO0 is a strapping pin: held low at reset, the ESP32 waits in the serial "
                     "bootloader instead of starting the box, and the DevKitC's BOOT button pulls it low",
                     always=True),
            2: Strap(LOW, LOW, "GPIO2 is a strapping pin: it must be low or floating at reset for the serial "
                     "bootloader, so flashing over USB fails while something holds it high"),
            5: Strap(None, HIGH, "GPIO5 is pulled up inside the ESP32 while it resets"),
            12: Strap(LOW, LOW, "GPIO12 (MTDI) is a strapping pin: high at reset selects a 1.8 V flash "
                      "supply, and the module's 3.3 V flash then fails to boot"),
            15: Strap(HIGH, HIGH, "GPIO15 (MTDO) is a strapping pin: low at reset silences the boot "
                      "messages a technician reads on the serial port"),
        },
        pin_ranges="GPIO0-19, 21-23, 25-27 and 32-39",
    ),
    "esp32s3": Chip(
        name="esp32s3",
        title="ESP32-S3 (ESP32-S3-WROOM-1 module, as on the ESP32-S3-DevKitC-1)",
        pins=_span(0, 21) + _span(26, 48),
        input_only=(),
        no_pull=(),
        adc1=_span(1, 10),
        adc2=_span(11, 20),
        adc_max_mv=2900,
        timers=4,
        reserved={
            **{p: _S3_FLASH for p in _span(26, 32)},
            **{p: _S3_OCTAL for p in _span(33, 37)},
            19: "is USB D- of the DevKitC-1's native USB port, which carries MicroPython's REPL and mpremote",
            20: "is USB D+ of the DevKitC-1's native USB port, which carries MicroPython's REPL and mpremote",
            43: "is UART0 TX, wired to the DevKitC-1's USB-UART bridge (boot messages, serial monitor)",
            44: "is UART0 RX, wired to the DevKitC-1's USB-UART bridge (boot messages, serial monitor)",
        },
        caution={
            38: "drives the addressable RGB LED of ESP32-S3-DevKitC-1 v1.1 boards",
            48: "drives the addressable RGB LED of ESP32-S3-DevKitC-1 v1.0 boards",
        },
        straps={
            0: Strap(HIGH, HIGH, "GPIO0 is a strapping pin: held low at reset, the ESP32-S3 waits in the "
                     "serial bootloader instead of starting the box, and the DevKitC-1's BOOT button "
                     "pulls it low", always=True),
            3: Strap("float", None, "GPIO3 is a strapping pin: its level at reset chooses where JTAG comes "
                     "from, so nothing may hold it"),
            45: Strap(LOW, LOW, "GPIO45 is a strapping pin: high at reset selects a 1.8 V flash supply, and "
                      "the module's 3.3 V flash then fails to boot"),
            46: Strap(LOW, LOW, "GPIO46 is a strapping pin: it must be low at reset for the serial "
                      "bootloader and the boot messages"),
        },
        pin_ranges="GPIO0-21 and 26-48",
    ),
    "rpi": Chip(
        name="rpi",
        title="Raspberry Pi with the 40-pin header (Pi 3 B/B+, 4 B, 5, Zero 2 W) under Linux, pins as "
              "Blinka's board module names them",
        pins=_RPI_PINS,
        input_only=(),
        no_pull=(),
        adc1=(),
        adc2=(),
        adc_max_mv=0,
        timers=4,
        reserved={
            "D0": "is ID_SD, the HAT ID EEPROM's I2C bus (i2c0) that the firmware probes at boot",
            "D1": "is ID_SC, the HAT ID EEPROM's I2C bus (i2c0) that the firmware probes at boot",
            "D2": "is I2C1 SDA with a 1.8 kOhm pull-up to 3.3 V on the Pi itself; it is the optional "
                  "RTC's bus",
            "D3": "is I2C1 SCL with a 1.8 kOhm pull-up to 3.3 V on the Pi itself; it is the optional "
                  "RTC's bus",
            "D14": "is the UART TX of the serial console a technician logs in on (enable_uart=1)",
            "D15": "is the UART RX of the serial console a technician logs in on (enable_uart=1)",
        },
        caution={},
        straps={p: _rpi_strap(p) for p in _RPI_PINS},
        pin_ranges="D0-D27 (GPIO0-27 of the 40-pin header, by their BCM numbers)",
        named=True,
        aliases={"SDA": "D2", "SCL": "D3", "CE1": "D7", "CE0": "D8", "MISO": "D9", "MOSI": "D10",
                 "SCLK": "D11", "SCK": "D11", "TXD": "D14", "TX": "D14", "RXD": "D15", "RX": "D15",
                 "MISO_1": "D19", "MOSI_1": "D20", "SCLK_1": "D21", "SCK_1": "D21"},
        failsafe="failsafe timers (threads)",
    ),
}


@dataclass(frozen=True)
class Module:
    """A module a board file may name: its PSRAM, and the chip's pins it takes or leaves free."""

    name: str                       # as Espressif names it: "ESP32-WROVER-E"
    chip: str
    psram_mb: int                   # 0: none
    psram: str                      # the PSRAM as a technician reads it
    takes: dict[int, str] = field(default_factory=dict)   # pins the module uses itself: refused
    frees: tuple[int, ...] = ()     # chip cautions that do not apply to this module


_WROVER_PSRAM = ("is wired to the PSRAM inside the ESP32-WROVER-E (GPIO16 its chip select, GPIO17 "
                 "its clock), which holds MicroPython's heap: using it crashes the chip")

# A board file's optional "module" (docs/boards.md section 2). Without one, the chip's cautions
# warn; with one, its pins are known: a WROVER-E refuses GPIO16/17, a WROOM-32E frees them.
MODULES: dict[str, Module] = {m.name: m for m in (
    Module("ESP32-WROOM-32E", "esp32", 0, "none", frees=(16, 17)),
    Module("ESP32-WROVER-E", "esp32", 8, "8 MB quad SPI PSRAM, of which the ESP32 maps 4 MB",
           takes={16: _WROVER_PSRAM, 17: _WROVER_PSRAM}, frees=(16, 17)),
    Module("ESP32-S3-WROOM-1-N8R8", "esp32s3", 8, "8 MB octal SPI PSRAM (GPIO33-37, refused on "
           "every ESP32-S3 board)"),
)}

_TOP = {
    "name", "chip", "keypad", "compartments", "solenoid_active", "door_open_level", "door_pull",
    "max_on_ms", "led", "led_active", "buzzer", "tamper", "battery", "description", "module",
}
_REQUIRED = ("name", "chip", "keypad", "compartments", "led", "buzzer")
_KEYPAD = {"rows", "cols", "layout", "pull"}
_COMPARTMENT = {"solenoid", "door"}
_LED = ("red", "green", "blue")
_TAMPER = {"pin", "open_level", "pull"}
_BATTERY = {"pin", "r_top_kohm", "r_bottom_kohm", "max_mv"}
_PULLS = ("internal", "external")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class BoardError(Exception):
    """Anything wrong with a board: its file (BoardFileError), reaching it
    (tech.conn.BoardConnectionError) or the virtual one (vboard.board.VirtualBoardError)."""


class BoardFileError(BoardError, ValueError):
    """A board file that must not ship: ``errors`` lists every problem found."""

    def __init__(self, path: str, errors: list[str]):
        super().__init__(f"{path}: " + "; ".join(errors))
        self.path = path
        self.errors = errors


@dataclass
class Role:
    """One use of a pin: what it is called, what it is, and how it is wired."""

    name: str           # "keypad column 2"
    kind: str           # row, col, solenoid, door, led, buzzer, tamper, battery
    pin: int | str      # GPIO number, or a Blinka pin name on a linux chip ("D17")
    pull: str = ""      # "internal"/"external" for inputs that need a pull-up
    active: int = 1     # outputs: the level that switches them on

    @property
    def output(self) -> bool:
        return self.kind in ("row", "solenoid", "led", "buzzer")

    def label(self) -> str:
        return f"{self.name} ({pin_name(self.pin)})"

    def at_reset(self) -> dict[str, str]:
        """The levels this role's circuit may hold its pin at while the chip resets, and why
        (the wiring docs/boards.md prescribes: switches to GND, keys joining a row to a column)."""
        k = self.kind
        if k in ("row", "col"):
            if self.pull == "external":
                return {HIGH: "a key held at power-up joins it to an external pull-up"}
            return {}
        if k in ("door", "tamper"):
            out = {LOW: "the closed switch holds it low"}
            if self.pull == "external":
                out[HIGH] = "its external pull-up holds it high while the switch is open"
            return out
        if k == "battery":
            return {LOW: "the battery divider holds it at an analog level",
                    HIGH: "the battery divider holds it at an analog level"}
        if k == "solenoid":
            if self.active == 1:
                return {LOW: "the solenoid driver's gate pull-down holds it low"}
            return {HIGH: "the solenoid driver's pull-up holds it high"}
        if k == "led":
            if self.active == 1:
                return {LOW: "the LED to GND pulls it low"}
            return {HIGH: "the LED to 3.3 V pulls it high"}
        return {LOW: "the buzzer transistor's base resistor pulls it low"}


@dataclass
class Result:
    path: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    board: dict | None = None        # the device's board.json, when there are no errors

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_json(self) -> dict:
        return {"file": self.path, "ok": self.ok, "errors": self.errors,
                "warnings": self.warnings, "board": self.board}


class _Checker:
    def __init__(self, path: str):
        self.r = Result(path)
        self.roles: list[Role] = []
        self.chip: Chip | None = None
        self.module: Module | None = None

    def err(self, msg: str) -> None:
        self.r.errors.append(msg)

    def warn(self, msg: str) -> None:
        self.r.warnings.append(msg)

    # ---- shapes and types ---------------------------------------------------

    def unknown(self, d: dict, known: set[str], where: str) -> None:
        for k in d:
            if k not in known:
                near = difflib.get_close_matches(k, sorted(known), n=1)
                hint = f' (did you mean "{near[0]}"?)' if near else f" (known: {', '.join(sorted(known))})"
                self.err(f'unknown key {json.dumps(k)} in {where}{hint}')

    def obj(self, v, what: str) -> dict | None:
        if not isinstance(v, dict):
            self.err(f"{what} must be an object {{...}}, not {_kind(v)}")
            return None
        return v

    def pin(self, v, what: str, kind: str, **kw) -> Role | None:
        if self.chip is not None and self.chip.named:
            if not isinstance(v, str):
                hint = f' (GPIO{v} is "D{v}")' if isinstance(v, int) and not isinstance(v, bool) else ""
                self.err(f'{what} must be a pin name as Blinka\'s board module names it, such as "D17", '
                         f"not {_kind(v)}{hint}")
                return None
        elif isinstance(v, bool) or not isinstance(v, int):
            self.err(f"{what} must be a GPIO number, not {_kind(v)}")
            return None
        role = Role(what, kind, v, **kw)
        self.roles.append(role)
        return role

    def pins(self, v, what: str, item: str, kind: str, lo: int, hi: int, **kw) -> list[Role] | None:
        if not isinstance(v, list):
            self.err(f"{what} must be a list of GPIO numbers, not {_kind(v)}")
            return None
        if not lo <= len(v) <= hi:
            self.err(f"{what} must list {lo} to {hi} pins, not {len(v)}")
        out = []
        for i, p in enumerate(v, 1):
            role = self.pin(p, f"{item} {i}", kind, **kw)
            if role is None:
                return None
            out.append(role)
        return out

    def level(self, d: dict, key: str, what: str, default: int = 1) -> int:
        v = d.get(key, default)
        if type(v) is not int or v not in (0, 1):
            self.err(f'{what} must be 0 or 1, not {json.dumps(v)}')
            return default
        return v

    def pull(self, d: dict, key: str, what: str) -> str:
        v = d.get(key, "internal")
        if v not in _PULLS:
            self.err(f'{what} must be "internal" (the chip\'s pull-up) or "external" '
                     f'(a resistor on the board), not {json.dumps(v)}')
            return "internal"
        return v

    def int_in(self, d: dict, key: str, what: str, lo: int, hi: int, default: int | None = None) -> int | None:
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(f"{what} must be a whole number, not {_kind(v)}")
            return None
        if not lo <= v <= hi:
            self.err(f"{what} must be {lo}..{hi}, not {v}")
            return None
        return v

    # ---- the board ------------------------------------------------------------

    def board(self, b) -> dict | None:
        b = self.obj(b, "the board file")
        if b is None:
            return None
        self.unknown(b, _TOP, "the board")
        for k in _REQUIRED:
            if k not in b:
                self.err(f'the board lacks "{k}"')

        name = b.get("name")
        if "name" not in b:
            pass
        elif not isinstance(name, str) or not _NAME.match(name):
            self.err(f"name must be 1 to 40 of a-z 0-9 - (starting with a letter or digit), "
                     f"not {json.dumps(name)}")
        elif Path(self.r.path).suffix == ".json" and Path(self.r.path).stem != name:
            self.warn(f'name "{name}" differs from the file name {Path(self.r.path).name}')
        if "description" in b and not isinstance(b["description"], str):
            self.err(f"description must be text, not {_kind(b['description'])}")
        chip = CHIPS.get(b.get("chip")) if isinstance(b.get("chip"), str) else None
        self.chip = chip
        if chip is None and "chip" in b:
            self.err(f"chip must be one of {', '.join(json.dumps(c) for c in CHIPS)}, "
                     f"not {json.dumps(b['chip'])}")
        if "module" in b:
            self.module = self.module_of(b["module"], chip)

        dev = {"format": FORMAT, "name": name, "chip": b.get("chip")}
        dev["keypad"] = self.keypad(b["keypad"]) if "keypad" in b else None
        sol_active = self.level(b, "solenoid_active", "solenoid_active")
        door_level = self.level(b, "door_open_level", "door_open_level")
        door_pull = self.pull(b, "door_pull", "door_pull")
        dev["compartments"] = (self.compartments(b["compartments"], chip, sol_active, door_pull)
                               if "compartments" in b else None)
        dev["solenoid_active"] = sol_active
        dev["door_open_level"] = door_level
        dev["door_pull"] = door_pull
        dev["max_on_ms"] = self.int_in(b, "max_on_ms", "max_on_ms", MIN_ON_MS, HARD_MAX_ON_MS, 2000)
        led_active = self.level(b, "led_active", "led_active")
        dev["led"] = self.led(b["led"], led_active) if "led" in b else None
        dev["led_active"] = led_active
        buzzer = self.pin(b["buzzer"], "buzzer", "buzzer") if "buzzer" in b else None
        dev["buzzer"] = buzzer.pin if buzzer else None
        dev.update(self.tamper(b.get("tamper")))
        dev.update(self.battery(b.get("battery"), chip))
        if chip is not None:
            self.check_pins(chip)
        return dev

    def module_of(self, v, chip: Chip | None) -> Module | None:
        ours = [m for m in MODULES.values() if chip is None or m.chip == chip.name]
        if not isinstance(v, str) or v not in MODULES:
            near = difflib.get_close_matches(v, [m.name for m in ours], n=1) if isinstance(v, str) else []
            hint = f'did you mean "{near[0]}"?' if near else \
                (f"known: {', '.join(m.name for m in ours)}" if ours else
                 f"the {chip.name if chip else 'chip'} takes none")
            self.err(f"module must name a module the checker knows, not {_kind(v)} ({hint})")
            return None
        m = MODULES[v]
        if chip is not None and m.chip != chip.name:
            self.err(f"module {m.name} carries an {m.chip}, but chip is {json.dumps(chip.name)}")
            return None
        return m

    def keypad(self, v) -> dict | None:
        kp = self.obj(v, "keypad")
        if kp is None:
            return None
        self.unknown(kp, _KEYPAD, "keypad")
        for k in ("rows", "cols", "layout"):
            if k not in kp:
                self.err(f'keypad lacks "{k}"')
        pull = self.pull(kp, "pull", "keypad pull")
        if any(k not in kp for k in ("rows", "cols", "layout")):
            return None
        rows = self.pins(kp["rows"], "keypad rows", "keypad row", "row", 1, 8, pull=pull)
        cols = self.pins(kp["cols"], "keypad cols", "keypad column", "col", 1, 8, pull=pull)
        layout = kp["layout"]
        if not isinstance(layout, str):
            self.err(f'keypad layout must be text such as "123456789*0#", not {_kind(layout)}')
            return None
        if rows is None or cols is None or not (1 <= len(rows) <= 8 and 1 <= len(cols) <= 8):
            return None
        n = len(rows) * len(cols)
        if n > MAX_KEYS:
            self.err(f"keypad has {len(rows)} rows x {len(cols)} columns = {n} keys; at most {MAX_KEYS}")
        if len(layout) != n:
            self.err(f"keypad layout has {len(layout)} keys but {len(rows)} rows x {len(cols)} "
                     f"columns make {n}")
        bad = sorted({c for c in layout if not "!" <= c <= "~"})
        if bad:
            self.err(f"keypad layout has {', '.join(repr(c) for c in bad)}: only printable ASCII "
                     f"without spaces names a key")
        dups = sorted({c for c in layout if layout.count(c) > 1})
        if dups:
            self.err(f"keypad layout names {', '.join(repr(c) for c in dups)} more than once")
        missing = [c for c in LAYOUT_KEYS if c not in layout]
        if missing:
            self.err(f"keypad layout lacks the key{'s' if len(missing) > 1 else ''} "
                     f"{' '.join(missing)}: codes need 0-9, * clears and # submits")
        return {"rows": [r.pin for r in rows], "cols": [c.pin for c in cols], "layout": layout,
                "pull": pull}

    def compartments(self, v, chip: Chip | None, active: int, door_pull: str) -> list | None:
        if not isinstance(v, list) or not v:
            self.err(f"compartments must be a list of at least one {{\"solenoid\": pin, \"door\": pin}}, "
                     f"not {_kind(v)}")
            return None
        limit = chip.timers if chip else 4
        if len(v) > limit:
            what = chip.failsafe if chip else "hardware timers"
            self.err(f"{len(v)} compartments, but each needs one of the chip's {limit} {what} "
                     f"for its solenoid failsafe: at most {limit}")
        out = []
        for i, c in enumerate(v, 1):
            c = self.obj(c, f"compartment {i}")
            if c is None:
                continue
            self.unknown(c, _COMPARTMENT, f"compartment {i}")
            for k in ("solenoid", "door"):
                if k not in c:
                    self.err(f'compartment {i} lacks "{k}"')
            s = self.pin(c.get("solenoid"), f"compartment {i} solenoid", "solenoid", active=active) \
                if "solenoid" in c else None
            d = self.pin(c.get("door"), f"compartment {i} door", "door", pull=door_pull) \
                if "door" in c else None
            out.append({"solenoid": s.pin if s else None, "door": d.pin if d else None})
        return out

    def led(self, v, active: int) -> list | None:
        if isinstance(v, dict):
            self.unknown(v, set(_LED), "led")
            out = []
            for colour in _LED:
                if colour not in v:
                    self.err(f'led lacks "{colour}": an RGB LED needs red, green and blue pins')
                    return None
                role = self.pin(v[colour], f"LED {colour}", "led", active=active)
                if role is None:
                    return None
                out.append(role.pin)
            return out
        named = self.chip is not None and self.chip.named
        if (isinstance(v, str) if named else isinstance(v, int) and not isinstance(v, bool)):
            self.pin(v, "LED", "led", active=active)
            return [v]
        self.err(f'led must be a GPIO number (one LED) or {{"red": pin, "green": pin, "blue": pin}}, '
                 f"not {_kind(v)}")
        return None

    def tamper(self, v) -> dict:
        out = {"tamper": None, "tamper_open_level": 1, "tamper_pull": "internal"}
        if v is None:
            return out
        t = self.obj(v, "tamper")
        if t is None:
            return out
        self.unknown(t, _TAMPER, "tamper")
        if "pin" not in t:
            self.err('tamper lacks "pin"')
            return out
        pull = self.pull(t, "pull", "tamper pull")
        role = self.pin(t["pin"], "tamper switch", "tamper", pull=pull)
        out["tamper"] = role.pin if role else None
        out["tamper_open_level"] = self.level(t, "open_level", "tamper open_level")
        out["tamper_pull"] = pull
        return out

    def battery(self, v, chip: Chip | None) -> dict:
        out = {"battery": None, "battery_divider": [1, 1]}
        if v is None:
            return out
        bt = self.obj(v, "battery")
        if bt is None:
            return out
        self.unknown(bt, _BATTERY, "battery")
        missing = [k for k in sorted(_BATTERY) if k not in bt]
        for k in missing:
            self.err(f'battery lacks "{k}"')
        if missing:
            return out
        if chip is not None and not chip.adc1:
            self.err(f"battery sense: the {chip.name} has no ADC on its header, so it cannot read a "
                     f"battery divider; leave battery null")
            return out
        role = self.pin(bt["pin"], "battery sense", "battery")
        top = self.int_in(bt, "r_top_kohm", "battery r_top_kohm", 0, 10000)
        bottom = self.int_in(bt, "r_bottom_kohm", "battery r_bottom_kohm", 1, 10000)
        max_mv = self.int_in(bt, "max_mv", "battery max_mv", 1, 60000)
        if role is None or top is None or bottom is None:
            return out
        out["battery"] = role.pin
        out["battery_divider"] = [top, bottom]
        if chip is not None and max_mv is not None:
            at_pin = max_mv * bottom // (top + bottom)
            if at_pin > chip.adc_max_mv:
                self.err(f"battery sense ({pin_name(role.pin)}): the divider {top}k/{bottom}k puts "
                         f"{max_mv / 1000:.1f} V of battery at {at_pin / 1000:.2f} V on the pin, above the "
                         f"{chip.adc_max_mv / 1000:.2f} V the {chip.name} ADC reads accurately: raise "
                         f"r_top_kohm or lower r_bottom_kohm")
        return out

    # ---- pins against the chip ----------------------------------------------

    def check_pins(self, chip: Chip) -> None:
        by_pin: dict[int | str, list[Role]] = {}
        for role in self.roles:
            by_pin.setdefault(role.pin, []).append(role)
        for p, roles in sorted(by_pin.items(), key=lambda kv: str(kv[0]).zfill(4)):
            if len(roles) > 1:
                names = [r.name for r in roles]
                pn = pin_name(p)
                self.err(f"{pn} is used twice: {' and '.join(names)}" if len(names) == 2 else
                         f"{pn} is used {len(names)} times: {', '.join(names[:-1])} and {names[-1]}")
        for role in self.roles:
            self.check_role(chip, role)

    def check_role(self, chip: Chip, role: Role) -> None:
        p = role.pin
        pn = pin_name(p)
        lab = role.label()
        if p not in chip.pins:
            if chip.named:
                alias = chip.aliases.get(p)
                if alias is None and isinstance(p, str) and p.upper().startswith("GPIO") and p[4:].isascii() and p[4:].isdigit():
                    alias = f"D{int(p[4:])}"
                hint = f'; write "{alias}" for it' if alias in chip.pins else ""
                self.err(f"{lab}: name pins by their Blinka D names, {chip.pin_ranges}; "
                         f"{pn} is not one{hint}")
            else:
                self.err(f"{lab}: the {chip.name} has no GPIO{p} (it has {chip.pin_ranges})")
            return
        if p in chip.reserved:
            self.err(f"{lab}: {pn} {chip.reserved[p]}; use another pin")
            return
        m = self.module
        if m is not None and p in m.takes:
            self.err(f"{lab}: {pn} {m.takes[p]}; use another pin")
            return
        if p in chip.caution and (m is None or p not in m.frees):
            self.warn(f"{lab}: {pn} {chip.caution[p]}")
        if role.output and p in chip.input_only:
            self.err(f"{lab}: {pn} is input-only on the {chip.name} "
                     f"(GPIO{chip.input_only[0]}-{chip.input_only[-1]} cannot drive an output); "
                     f"the {role.name} needs an output pin")
        if role.kind in ("col", "door", "tamper") and role.pull == "internal" and p in chip.no_pull:
            where = {"col": 'keypad "pull"', "door": '"door_pull"', "tamper": 'tamper "pull"'}[role.kind]
            self.err(f"{lab}: {pn} has no internal pull-up (GPIO{chip.no_pull[0]}-{chip.no_pull[-1]} "
                     f"on the {chip.name}), so the input floats; fit a 10 kOhm pull-up to 3.3 V and set "
                     f'{where} to "external", or use another pin')
        if role.kind == "battery":
            if p in chip.adc2:
                self.err(f"{lab}: {pn} is on ADC2, which the Wi-Fi driver owns: readings fail while "
                         f"Wi-Fi is on; use an ADC1 pin (GPIO{chip.adc1[0]}-{chip.adc1[-1]})")
            elif p not in chip.adc1:
                self.err(f"{lab}: {pn} has no ADC; use an ADC1 pin (GPIO{chip.adc1[0]}-{chip.adc1[-1]})")
        strap = chip.straps.get(p)
        if strap is not None:
            self.check_strap(chip, role, strap)

    def check_strap(self, chip: Chip, role: Role, strap: Strap) -> None:
        lab = role.label()
        if strap.always:
            self.err(f"{lab}: {strap.why}; use another pin")
            return
        holds = role.at_reset()
        if strap.need == "float" and holds:
            level, why = next(iter(holds.items()))
            self.err(f"{lab}: {strap.why}, and {why}; use another pin")
            return
        if strap.need in (LOW, HIGH):
            wrong = HIGH if strap.need == LOW else LOW
            if wrong in holds:
                self.err(f"{lab}: {strap.why}, and {holds[wrong]}; use another pin")
                return
        if role.kind == "solenoid" and strap.pull is not None:
            on = HIGH if role.active == 1 else LOW
            if strap.pull == on:
                self.err(f"{lab}: the {chip.name} pulls {pin_name(role.pin)} {on} inside the chip while it "
                         f"resets, which switches a solenoid driven {on} (solenoid_active "
                         f"{role.active}) on and pulls the bolt at every reset; use another pin")


def _kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return f"the number {v}"
    if isinstance(v, str):
        return f"the text {json.dumps(v)}"
    if isinstance(v, list):
        return "a list"
    return "an object"


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f'the key {json.dumps(k)} appears twice in one object')
        d[k] = v
    return d


def check_text(text: str, path: str = "board.json") -> Result:
    """Check the text of a board file; the result lists every error and warning."""
    c = _Checker(path)
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        c.err(f"line {e.lineno}, column {e.colno}: not valid JSON: {e.msg}")
        return c.r
    except ValueError as e:   # a duplicate key, a number of more than 4300 digits
        c.err(f"not a valid board: {e}")
        return c.r
    except RecursionError:    # [[[[... a thousand deep: json gives up before we would
        c.err("not a valid board: nested too deeply")
        return c.r
    dev = c.board(data)
    if not c.r.errors:
        c.r.board = dev
    return c.r


def check_file(path: str | Path) -> Result:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        r = Result(str(path))
        r.errors.append(f"cannot read the file: {e}")
        return r
    return check_text(text, str(path))


def device_board(path: str | Path) -> dict:
    """The board.json the device reads, from a board file; BoardFileError lists every problem."""
    r = check_file(path)
    if not r.ok:
        raise BoardFileError(str(path), r.errors)
    return r.board


def shipped() -> list[Path]:
    """The board files that ship with the firmware (boards/*.json)."""
    return sorted(paths.BOARDS.glob("*.json"))
