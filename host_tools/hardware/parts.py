"""The parts catalogue of the reference design: part numbers, alternatives, rough prices.

Prices are rough single-unit estimates in EUR (see :data:`PRICE_NOTE`), not quotes. The
bill of materials of each board (``host_tools/hardware/page.py``) takes its quantities from the
board's circuit (``host_tools/hardware/design.py``) and its prices from here.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_NOTE = ("Prices: rough single-unit estimates in EUR, written 2026-11 from typical European "
              "distributor and maker-shop price levels (Mouser/DigiKey/Reichelt/Adafruit-type "
              "catalogues), not looked up per part and not quotes; check before ordering. Volume "
              "prices are far lower, especially for the semiconductors and passives.")


@dataclass(frozen=True)
class Item:
    what: str
    pn: str           # the reference part
    alts: str         # alternatives
    eur: float


CATALOGUE: dict[str, Item] = {
    "devboard-esp32": Item("ESP32 dev board", "Espressif ESP32-DevKitC-32E (WROOM-32E, 4 MB flash)",
                           "ESP32-DevKitC-VE (WROVER-E; GPIO16/17 then taken by PSRAM)", 10.00),
    # The VE: about 1.2 times the 32E in one shop's list (Akizuki Denshi: 1,770 against 1,480 JPY)
    "devboard-esp32-wrover-e": Item("ESP32 dev board with PSRAM",
                                    "Espressif ESP32-DevKitC-VE (WROVER-E: 8 MB flash, 8 MB PSRAM)",
                                    "ESP32-DevKitC-VIE (WROVER-IE, for an external antenna)", 12.00),
    "devboard-esp32s3": Item("ESP32-S3 dev board", "Espressif ESP32-S3-DevKitC-1-N8R8",
                             "any ESP32-S3-DevKitC-1 with a WROOM-1 module (N8, N16R8, N32R8)", 16.00),
    "devboard-rpi": Item("Raspberry Pi", "Raspberry Pi 4 Model B, 2 GB",
                         "Raspberry Pi 3 B+, Pi 5 or Pi Zero 2 W (any Pi with the 40-pin header)", 50.00),
    "sd-card": Item("microSD card for the Pi", "high-endurance microSD, 32 GB (e.g. SanDisk High Endurance)",
                    "an industrial (pSLC) microSD card; a USB SSD", 10.00),
    "keypad-4x3": Item("4x3 matrix keypad (12 keys)", "membrane keypad 4x3, 7-pin 2.54 mm ribbon",
                       "metal vandal-resistant 4x3 matrix keypad (IP65) for outdoor boxes, ~25 EUR", 3.00),
    "keypad-4x4": Item("4x4 matrix keypad (16 keys)", "membrane keypad 4x4, 8-pin 2.54 mm ribbon",
                       "metal vandal-resistant 4x4 matrix keypad (IP65) for outdoor boxes, ~30 EUR", 3.50),
    "lock": Item("12 V fail-secure solenoid lock (power opens)", "Adafruit 1512 lock-style solenoid, 12 V 0.65 A",
                 "any 12 V DC fail-secure cabinet lock of 0.6-1.0 A rated for 25 % duty", 12.00),
    "mosfet": Item("logic-level N-MOSFET", "AO3400A (SOT-23, 30 V)",
                   "IRLML6344TRPBF (SOT-23); IRLZ44NPBF (TO-220, through-hole)", 0.20),
    "flyback": Item("flyback diode", "SS34 (Schottky, 40 V 3 A, SMA)", "1N5819 (Schottky, DO-41); 1N4007", 0.15),
    "reed": Item("door contact: reed switch + magnet", "surface door contact (MC-38 type), closed with magnet near",
                 "Littelfuse 59140 reed sensor + 57140 magnet", 2.50),
    "tamper": Item("tamper switch", "Omron D2F-01L micro switch with lever (NO contact)",
                   "a second reed contact on the lid", 2.00),
    "led-rgb-cc": Item("RGB LED, common cathode", "5 mm diffused RGB LED, common cathode",
                       "panel-mount RGB indicator with common cathode", 0.40),
    "led-rgb-ca": Item("RGB LED, common anode", "5 mm diffused RGB LED, common anode",
                       "panel-mount RGB indicator with common anode", 0.40),
    "led": Item("LED", "5 mm LED, green", "panel-mount LED indicator", 0.10),
    "buzzer": Item("passive buzzer (no oscillator inside)", "12 mm magnetic transducer, 5 V o-p, <= 40 mA "
                   "(e.g. CUI CD-1206)", "TDK PS1240P02BT piezo (quieter, 1 kOhm across it instead of the diode)",
                   1.00),
    "buzzer-active": Item("active buzzer (own oscillator)", "12 mm magnetic buzzer, 5 V, about 2.3 kHz, "
                          "<= 30 mA (e.g. CUI CEM-1203(42))", "a 5 V active piezo buzzer module", 1.00),
    "npn": Item("NPN transistor", "MMBT3904 (SOT-23)", "2N3904 (TO-92), BC547", 0.05),
    "signal-diode": Item("signal diode", "1N4148W", "1N4148 (DO-35)", 0.05),
    "resistor": Item("resistor 5 %", "0805 or 1/4 W through-hole", "any", 0.05),
    "resistor-1pct": Item("resistor 1 %", "0805 or 1/4 W metal film", "any 1 %", 0.05),
    "capacitor": Item("ceramic capacitor", "0805 X7R 50 V", "through-hole MLCC", 0.05),
    "buck": Item("12 V to 5 V buck converter", "Traco TSR 1-2450 (1 A, 6.5-36 V in)",
                 "Pololu D24V10F5; an MP1584 module set to 5 V", 7.00),
    "buck-3a": Item("12 V to 5 V buck converter, 3 A", "Pololu D36V28F5 (5 V 3.2 A, up to 50 V in)",
                    "Mean Well DDR-15G-5 (DIN rail, 3 A); any 5.1 V 3 A module", 15.00),
    "fuse": Item("input fuse and holder", "5x20 mm time-lag (T) fuse, panel or PCB holder",
                 "a PTC resettable fuse of the same hold current", 1.50),
    "psu": Item("12 V DC power supply", "12 V DC adapter or DIN-rail supply", "the battery-backed supply "
                "below", 0.0),   # priced by current (psu_eur)
    "rtc": Item("real-time clock", "DS3231SN module (e.g. Adafruit 3013)",
                "ZS-042 DS3231 module", 5.00),
}

OPTIONAL = ("rtc",)

# The battery-backed variant replaces the plain supply with these (hardware/README.md).
BATTERY_KIT = (
    Item("battery", "Yuasa NP7-12 (12 V 7 Ah SLA)", "4S LiFePO4 12.8 V 6 Ah with BMS (~45 EUR)", 20.00),
    Item("charger / backup supply", "13.8 V alarm-panel supply with SLA charging, 2-3 A (the battery "
         "carries the locks' peaks)",
         "a 14.6 V LiFePO4 charger with load output for the LiFePO4 pack", 30.00),
)


def psu_eur(amps: float) -> float:
    if amps <= 2:
        return 10.00
    if amps <= 3:
        return 13.00
    return 22.00


def sundries_eur(compartments: int) -> float:
    """Wire, terminal blocks, perfboard, headers: 5 EUR plus 2 per compartment."""
    return 5.00 + 2.00 * compartments


def price(kind: str, value: str) -> float:
    if kind == "psu":
        return psu_eur(float(value.split()[2]))
    return CATALOGUE[kind].eur
