"""The reference design's arithmetic: solenoid driver, power budget, battery (hardware/).

Every number the hardware pages show is computed here from the stated inputs
(:data:`INPUTS`, each with where it comes from), the board file and the firmware's own
timing (``firmware/parcelbox/config.py``, ``lock.py``, ``feedback.py``). The pages are
generated from these results (``parcelbox hardware generate``), so a changed input, board
or firmware setting changes the pages, and ``tests/host/test_hardware.py`` fails until they
are regenerated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from parcelbox import config as _config  # noqa: E402
from parcelbox import feedback as _feedback  # noqa: E402
from parcelbox import lock as _lock  # noqa: E402


@dataclass(frozen=True)
class Input:
    value: float
    unit: str
    what: str
    source: str


# The inputs, with their source. Change one here, run `parcelbox hardware generate`.
INPUTS: dict[str, Input] = {
    "v_nom": Input(12.0, "V", "supply and lock rating", "12 V fail-secure cabinet locks; a 12 V DC adapter"),
    "v_max": Input(14.4, "V", "highest supply voltage (boards without battery sense)",
                   "a 12 V lead-acid battery on boost charge; boards with battery sense use their max_mv"),
    "coil_ohm": Input(15.0, "Ohm", "lock coil resistance", "typical small 12 V lock: 0.8 A at 12 V "
                      "(Adafruit 1512 draws 0.65 A, 18.5 Ohm); measure yours with a meter"),
    "coil_tol": Input(0.20, "", "coil resistance below nominal, worst case", "winding tolerance and a cold coil"),
    "rds_hot": Input(1.5, "x", "Rds(on) at 125 C junction over 25 C", "typical normalised Rds(on) curves"),
    "v_gpio": Input(3.3, "V", "GPIO high level", "ESP32 / ESP32-S3 I/O supply"),
    "gpio_max_ma": Input(40.0, "mA", "GPIO source current rating", "ESP32 / ESP32-S3 datasheets, highest drive strength"),
    "r_gate": Input(100.0, "Ohm", "gate series resistor", "docs/boards.md section 7"),
    "r_pulldown": Input(10000.0, "Ohm", "gate pull-down", "docs/boards.md section 7"),
    "leak_ua": Input(1.0, "uA", "leakage of a floating GPIO during reset", "datasheet-order input leakage"),
    "lock_duty": Input(0.25, "", "lock duty-cycle rating", "typical for small cabinet solenoid locks; check yours"),
    "idle_ma_esp32": Input(31.12, "mA", "ESP32, Wi-Fi connected, modem sleep (DTIM1)",
                           "ESP-IDF guide 'Low Power Mode in Wi-Fi Scenarios', measured average"),
    "idle_ma_esp32s3": Input(40.1, "mA", "ESP32-S3, Wi-Fi connected, modem sleep (DTIM1)",
                             "ESP-IDF guide 'Low Power Mode in Wi-Fi Scenarios', measured average"),
    "devboard_ma": Input(10.0, "mA", "dev board overhead at 5 V", "estimate: LDO quiescent, idle USB-UART "
                         "bridge, power LED; measure yours"),
    "r_pullup_internal": Input(45000.0, "Ohm", "the chip's pull-up", "ESP32 datasheet, typical"),
    "r_pullup_external": Input(10000.0, "Ohm", "external pull-up", "docs/boards.md section 1"),
    "buck_eff": Input(0.80, "", "12 V to 5 V buck efficiency at light load", "typical of 1 A modules at 20-60 mA"),
    "active_ma": Input(90.0, "mA", "extra 3.3 V current while handling an opening",
                       "estimate: CPU busy, flash writes, Wi-Fi transmits (ESP32 TX peaks 180-240 mA)"),
    "active_s": Input(5.0, "s", "time per opening spent above idle", "estimate: typing, checking, reporting"),
    "peak_ma_5v": Input(350.0, "mA", "electronics peak at 5 V", "Wi-Fi TX peak plus LED and buzzer"),
    "led_ma": Input(8.0, "mA", "current of one lit LED colour", "the LED resistors of the BOM"),
    "buzzer_ma": Input(40.0, "mA", "buzzer current while sounding (5 V, 50 % PWM)",
                       "passive magnetic transducers: 40 mA max at 5 V"),
    "sla_ah": Input(7.0, "Ah", "lead-acid battery", "12 V 7 Ah SLA (e.g. Yuasa NP7-12)"),
    "sla_usable": Input(0.5, "", "usable share of SLA capacity", "50 % depth of discharge for a long life"),
    "sla_v_empty": Input(10.5, "V", "SLA end of discharge", "lead-acid datasheets"),
    "li_ah": Input(7.0, "Ah", "3S2P Li-ion pack", "six 3.5 Ah 18650 cells, 10.8 V nominal"),
    "li_v": Input(10.8, "V", "3S Li-ion nominal voltage", "3 x 3.6 V"),
    "li_usable": Input(0.8, "", "usable share of Li-ion capacity", "BMS cut-off and ageing margin"),
    "li_v_empty": Input(9.0, "V", "3S Li-ion empty", "3 x 3.0 V"),
    "lfp_ah": Input(6.0, "Ah", "4S LiFePO4 pack", "12.8 V 6 Ah drop-in for a 7 Ah SLA"),
    "lfp_v": Input(12.8, "V", "4S LiFePO4 nominal voltage", "4 x 3.2 V"),
    "lfp_usable": Input(0.8, "", "usable share of LiFePO4 capacity", "BMS cut-off and ageing margin"),
    "lfp_v_empty": Input(11.0, "V", "4S LiFePO4 nearly empty", "4 x 2.75 V"),
    # the Raspberry Pi (linux port, docs/linux.md): a name_rpi input replaces name for it
    "idle_ma_rpi": Input(600.0, "mA", "Raspberry Pi 4 B at 5 V, network up, waiting",
                         "Raspberry Pi documentation (power supplies): typical bare-board active current "
                         "of the Pi 4 B"),
    "peak_ma_5v_rpi": Input(1800.0, "mA", "Raspberry Pi 4 B peak at 5 V, with LED and buzzer",
                            "Raspberry Pi documentation: the recommended 3.0 A supply less its 1.2 A USB "
                            "peripheral allowance (nothing on USB in the box)"),
    "gpio_max_ma_rpi": Input(16.0, "mA", "Raspberry Pi GPIO current, one pin",
                             "Raspberry Pi documentation: 16 mA a pin, 50 mA over all pins"),
    "r_gate_rpi": Input(330.0, "Ohm", "gate series resistor on a Raspberry Pi",
                        "3.3 V / 330 Ohm = 10 mA peak, within the Pi's 16 mA a pin"),
    "r_pullup_internal_rpi": Input(50000.0, "Ohm", "the Pi's pull-up", "Raspberry Pi documentation: "
                                   "50-65 kOhm GPIO pulls, the lower end"),
    "gpio_total_ma_rpi": Input(50.0, "mA", "Raspberry Pi GPIO current, all pins together",
                               "Raspberry Pi documentation: 50 mA over all pins"),
    "vbe": Input(0.7, "V", "NPN base-emitter voltage (buzzer switch)", "MMBT3904-class datasheets, typical"),
    "r_base": Input(1000.0, "Ohm", "buzzer transistor base resistor",
                    "(3.3 V - 0.7 V) / 1 kOhm = 2.6 mA into the base, a forced gain of 15 for a 40 mA "
                    "buzzer: the NPN saturates"),
    "buzzer_ma_rpi": Input(30.0, "mA", "active buzzer current while sounding (5 V, steady)",
                           "5 V active magnetic buzzers with their own oscillator: 30 mA max"),
}

# Boards powered at 5 V with no LDO on the controller's path (idle_ma_<chip> is at 5 V), and
# driving an active buzzer on a plain output (on while sounding, not a 50 % PWM wave).
FIVE_V_CHIPS = ("rpi",)
ACTIVE_BUZZER_CHIPS = ("rpi",)

OPENINGS_PER_DAY = (2, 10, 50)
STANDBY_TARGET_DAYS = (1, 3, 7)
FUSES_A = (0.5, 1.0, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0, 10.0)   # IEC 60127 values
SUPPLIES_A = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def v(name: str) -> float:
    return INPUTS[name].value


def vc(name: str, chip: str | None) -> float:
    """Input `name`, or its `name_<chip>` variant when the chip has one."""
    return INPUTS[key(name, chip)].value


def key(name: str, chip: str | None) -> str:
    """Which input vc() reads."""
    return f"{name}_{chip}" if chip and f"{name}_{chip}" in INPUTS else name


@dataclass(frozen=True)
class Mosfet:
    part: str
    package: str
    vds: float
    vth_min: float
    vth_max: float
    rds_mohm: float | None    # guaranteed maximum at rds_vgs; None: not specified at logic levels
    rds_vgs: float
    theta_ja: float           # junction to ambient, C/W, on a small board
    note: str


@dataclass(frozen=True)
class Diode:
    part: str
    kind: str
    vr: float
    if_avg: float
    ifsm: float       # non-repetitive 8.3 ms surge, A
    vf: float


MOSFETS = (
    Mosfet("AO3400A", "SOT-23", 30, 0.65, 1.45, 48, 2.5, 125, "Rds(on) guaranteed at Vgs = 2.5 V"),
    Mosfet("IRLML6344", "SOT-23", 30, 0.5, 1.1, 37, 2.5, 100, "Rds(on) guaranteed at Vgs = 2.5 V"),
    Mosfet("IRLZ44N", "TO-220", 55, 1.0, 2.0, 70, 4.0, 62,
           "through-hole; specified at 4 V (35 mOhm), so 2 x that is assumed at 3.3 V"),
    Mosfet("IRFZ44N", "TO-220", 55, 2.0, 4.0, None, 10.0, 62,
           "not logic-level: Vgs(th) up to 4 V, above the 3.3 V a GPIO gives; do not use"),
)

DIODES = (
    Diode("SS34", "Schottky", 40, 3.0, 70, 0.5),
    Diode("1N5819", "Schottky", 40, 1.0, 25, 0.6),
    Diode("1N4007", "silicon", 1000, 1.0, 30, 1.0),
)


def firmware_timing() -> dict[str, int]:
    """The solenoid timing the firmware enforces: its defaults and hard limit."""
    d = _config.DEFAULTS
    return {"pulse_ms": d["pulse_ms"], "max_on_ms": d["max_on_ms"], "cooldown_ms": d["cooldown_ms"],
            "hard_max_on_ms": _lock.HARD_MAX_ON_MS, "code_len": d["code_len"]}


def feedback_times() -> dict[str, float]:
    """Seconds of lit LED and sounding buzzer per opening (the keys' clicks and ACCEPTED)."""
    acc = _feedback.steps(_feedback.ACCEPTED)
    key = _feedback.steps(_feedback.KEY)
    n = firmware_timing()["code_len"]
    led = sum(ms for led_, hz, ms in acc if led_) / 1000
    buzz = (sum(ms for led_, hz, ms in acc if hz) + n * sum(ms for led_, hz, ms in key if hz)) / 1000
    return {"led_s": led, "buzzer_s": buzz}


def next_size(need: float, sizes: tuple[float, ...]) -> float:
    for s in sizes:
        if s >= need:
            return s
    return math.inf


@dataclass(frozen=True)
class Solenoid:
    """The lock coil and its driver, worst case at the highest supply voltage."""

    v_nom: float
    v_max: float
    r_nom: float
    r_min: float
    i_nom: float
    i_max: float
    p_nom: float
    p_max: float
    pulse_ms: int
    cooldown_ms: int
    max_on_ms: int
    hard_max_on_ms: int
    duty_default: float
    duty_worst: float
    e_pulse_j: float
    p_avg_default: float
    p_avg_worst: float
    vgs: float
    gate_peak_ma: float
    gate_hold_ma: float
    gate_float_mv: float
    r_gate: float = 100.0
    gpio_max_ma: float = 40.0


def solenoid(max_on_ms: int, v_max: float | None = None, chip: str | None = None) -> Solenoid:
    t = firmware_timing()
    v_nom = v("v_nom")
    v_max = v("v_max") if v_max is None else v_max
    r = v("coil_ohm")
    r_min = r * (1 - v("coil_tol"))
    pulse, cool = t["pulse_ms"], t["cooldown_ms"]
    duty_default = pulse / (pulse + cool)
    duty_worst = max_on_ms / (max_on_ms + 3 * max_on_ms)   # pulse = max_on_ms, least cool-down allowed
    p_nom = v_nom ** 2 / r
    rg, rpd, vg = vc("r_gate", chip), v("r_pulldown"), v("v_gpio")
    return Solenoid(
        v_nom=v_nom, v_max=v_max, r_nom=r, r_min=r_min,
        i_nom=v_nom / r, i_max=v_max / r_min, p_nom=p_nom, p_max=v_max ** 2 / r_min,
        pulse_ms=pulse, cooldown_ms=cool, max_on_ms=max_on_ms, hard_max_on_ms=t["hard_max_on_ms"],
        duty_default=duty_default, duty_worst=duty_worst,
        e_pulse_j=p_nom * pulse / 1000,
        p_avg_default=p_nom * duty_default, p_avg_worst=p_nom * duty_worst,
        vgs=vg * rpd / (rpd + rg), gate_peak_ma=vg / rg * 1000, gate_hold_ma=vg / (rg + rpd) * 1000,
        gate_float_mv=v("leak_ua") * 1e-6 * rpd * 1000,
        r_gate=rg, gpio_max_ma=vc("gpio_max_ma", chip),
    )


def mosfet_rows(s: Solenoid, vf: float) -> list[dict]:
    """Per MOSFET: resistance when hot, dissipation at the worst coil current, its heating.
    verdict: "yes" (Rds(on) guaranteed at the gate voltage we have), "typical only"
    (specified at a higher Vgs, threshold well below it), "no" (threshold near 3.3 V)."""
    out = []
    for m in MOSFETS:
        if m.rds_mohm is None or m.vth_max >= 0.9 * s.vgs:
            out.append({"m": m, "verdict": "no"})
            continue
        verdict = "yes" if m.rds_vgs <= s.vgs else "typical only"
        rds = m.rds_mohm / 1000 * v("rds_hot")
        p = s.i_max ** 2 * rds
        out.append({"m": m, "verdict": verdict, "rds_hot": rds, "p_w": p,
                    "rise_c": p * m.theta_ja, "vds_margin": m.vds / (s.v_max + vf)})
    return out


def diode_rows(s: Solenoid) -> list[dict]:
    """The diode carries at most the coil current at switch-off, decaying within milliseconds:
    its average is far below IF(AV), so the peak is held against the surge rating."""
    return [{"d": d, "vr_margin": d.vr / s.v_max, "peak_margin": d.ifsm / s.i_max} for d in DIODES]


@dataclass(frozen=True)
class Supply:
    peak_a: float
    fuse_a: float
    psu_a: float


@dataclass(frozen=True)
class GpioLoad:
    led_ma: float           # one lit LED colour
    gate_peak_ma: float     # a solenoid gate while it charges
    gate_hold_ma: float     # a solenoid gate held on
    buzzer_ma: float        # the buzzer transistor's base
    worst_ma: float         # all at once: two LED colours (amber), every gate held, the buzzer
    pin_max_ma: float       # the chip's rating for one pin
    total_max_ma: float     # and for all pins together


def gpio_load(board: dict, s: Solenoid) -> GpioLoad:
    """What the pins source, against a chip that rates its GPIO current (the Raspberry Pi)."""
    chip = board["chip"]
    led = v("led_ma")
    base = (v("v_gpio") - v("vbe")) / v("r_base") * 1000     # through the base resistor, mA
    colours = 2 if len(board["led"]) == 3 else 1
    worst = colours * led + len(board["compartments"]) * s.gate_hold_ma + base
    return GpioLoad(led, s.gate_peak_ma, s.gate_hold_ma, base, worst, vc("gpio_max_ma", chip),
                    INPUTS[key("gpio_total_ma", chip)].value if key("gpio_total_ma", chip) in INPUTS else 0.0)


def supply(n_comp: int, s: Solenoid, chip: str | None = None) -> Supply:
    """Every solenoid at once (one owner code may open all compartments) plus the electronics."""
    elec = vc("peak_ma_5v", chip) / 1000 * 5 / (v("buck_eff") * s.v_nom)
    peak = n_comp * s.i_max + elec
    psu_need = n_comp * s.v_nom / s.r_min + elec
    return Supply(peak, next_size(1.25 * peak, FUSES_A), next_size(1.25 * psu_need, SUPPLIES_A))


@dataclass(frozen=True)
class Budget:
    chip_ma: float
    pullup_ma: float
    rail_3v3_ma: float
    rail_5v_ma: float
    elec_12v_ma: float
    divider_ma: float
    idle_12v_ma: float
    idle_w: float
    idle_wh_day: float
    open_solenoid_j: float
    open_active_j: float
    open_led_j: float
    open_buzzer_j: float
    open_j: float
    per_day: tuple[tuple[int, float, float], ...]   # (openings, Wh/day, share of openings)


def _pullup_ma(r: float) -> float:
    return v("v_gpio") / r * 1000


def budget(board: dict, s: Solenoid) -> Budget:
    """Idle and per-opening energy of a board (its flat device board.json)."""
    chip = board["chip"]
    chip_ma = v("idle_ma_" + chip)
    pull = 0.0
    # A switch closed while the box is shut (door shut, lid on) draws through its pull-up.
    if board["door_open_level"] == 1:
        r = vc("r_pullup_" + board["door_pull"], chip)
        pull += len(board["compartments"]) * _pullup_ma(r)
    if board["tamper"] is not None and board["tamper_open_level"] == 1:
        pull += _pullup_ma(vc("r_pullup_" + board["tamper_pull"], chip))
    if chip in FIVE_V_CHIPS:                    # the board draws from 5 V itself; its own
        rail33 = pull                           # regulator feeds the pull-ups (counted 1:1)
        rail5 = chip_ma + pull
    else:
        rail33 = chip_ma + pull
        rail5 = rail33 + v("devboard_ma")       # the dev board's LDO passes the 3.3 V current
    eff = v("buck_eff")
    elec12 = rail5 * 5 / (eff * s.v_nom)
    div = 0.0
    if board["battery"] is not None:
        top, bottom = board["battery_divider"]
        div = s.v_nom / (top + bottom)          # kOhm -> mA
    idle12 = elec12 + div
    idle_w = idle12 / 1000 * s.v_nom
    fb = feedback_times()
    act = 5 * v("active_ma") / 1000 * v("active_s") / eff
    led = 5 * v("led_ma") / 1000 * fb["led_s"] / eff
    share = 1.0 if chip in ACTIVE_BUZZER_CHIPS else 0.5     # steady, or a 50 % PWM wave
    buzz = 5 * vc("buzzer_ma", chip) / 1000 * share * fb["buzzer_s"] / eff
    open_j = s.e_pulse_j + act + led + buzz
    per_day = []
    for n in OPENINGS_PER_DAY:
        wh = idle_w * 24 + n * open_j / 3600
        per_day.append((n, wh, n * open_j / 3600 / wh))
    return Budget(chip_ma, pull, rail33, rail5, elec12, div, idle12, idle_w, idle_w * 24,
                  s.e_pulse_j, act, led, buzz, open_j, tuple(per_day))


@dataclass(frozen=True)
class Battery:
    name: str
    v_nom: float
    ah: float
    usable: float
    v_empty: float

    @property
    def usable_wh(self) -> float:
        return self.v_nom * self.ah * self.usable


def batteries() -> tuple[Battery, ...]:
    return (
        Battery("12 V 7 Ah SLA", v("v_nom"), v("sla_ah"), v("sla_usable"), v("sla_v_empty")),
        Battery("3S2P Li-ion (18650)", v("li_v"), v("li_ah"), v("li_usable"), v("li_v_empty")),
        Battery("4S LiFePO4 6 Ah", v("lfp_v"), v("lfp_ah"), v("lfp_usable"), v("lfp_v_empty")),
    )


def standby_days(b: Battery, wh_day: float) -> float:
    return b.usable_wh / wh_day


def sla_ah_for(days: float, wh_day: float) -> float:
    """The SLA capacity (Ah) that carries the box `days` at its usable share."""
    return wh_day * days / (v("v_nom") * v("sla_usable"))


def coil_at(volts: float) -> tuple[float, float]:
    """Coil current (A) at `volts`, and pull force relative to 12 V (force goes with I squared)."""
    i = volts / v("coil_ohm")
    return i, (volts / v("v_nom")) ** 2
