"""The reference-design page of one board (hardware/<board>/README.md) and the index's tables.

Generated, never edited: bill of materials, solenoid driver arithmetic, power budget and
battery variant, from the board's circuit (host_tools/hardware/design.py), the parts catalogue
(host_tools/hardware/parts.py) and the arithmetic (host_tools/hardware/calc.py).
"""

from __future__ import annotations

from host_tools.hardware import calc
from host_tools.hardware import parts as hwparts
from host_tools.boards import pin_name
from host_tools.hardware.design import Design

OPENINGS_SHOWN = 10      # the openings per day the battery tables assume


def _f(x: float, nd: int = 2) -> str:
    return f"{x:,.{nd}f}"


def _pct(x: float, nd: int = 1) -> str:
    return f"{x * 100:.{nd}f} %"


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


class Numbers:
    """Everything a board's page states, computed once."""

    def __init__(self, d: Design):
        self.d = d
        self.n = len(d.board["compartments"])
        v_max = d.battery_max_mv / 1000 if d.battery_max_mv else None
        self.sol = calc.solenoid(d.board["max_on_ms"], v_max, d.chip)
        self.supply = calc.supply(self.n, self.sol, d.chip)
        self.budget = calc.budget(d.board, self.sol)
        self.bom = bom_lines(d)
        self.core_eur = sum(r[5] for r in self.bom if not r[6])
        self.optional_eur = sum(r[5] for r in self.bom if r[6])
        self.battery_eur = sum(i.eur for i in hwparts.BATTERY_KIT) - hwparts.psu_eur(self.supply.psu_a)
        self.wh_day = dict((n, wh) for n, wh, _ in self.budget.per_day)[OPENINGS_SHOWN]


def bom_lines(d: Design) -> list[tuple]:
    """(refs, qty, kind, value, unit EUR, line EUR, optional) grouped by kind and value."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in d.parts:
        groups.setdefault((p.kind, p.value), []).append(p.ref)
    out = []
    for (kind, value), refs in groups.items():
        unit = hwparts.price(kind, value)
        out.append((", ".join(refs), len(refs), kind, value, unit, unit * len(refs), kind in hwparts.OPTIONAL))
    unit = hwparts.sundries_eur(len(d.board["compartments"]))
    out.append(("-", 1, "sundries", "", unit, unit, False))
    return out


def page(d: Design) -> str:
    x = Numbers(d)
    kp = d.board["keypad"]
    parts = [
        f"# {d.name}: reference design",
        "",
        f"<!-- Generated from boards/{d.name}.json by `parcelbox hardware generate`; do not edit. -->",
        "",
        f"{d.description}",
        "",
        "Generated from the board file by `parcelbox hardware generate` (do not edit; the inputs and "
        "why the circuits are as they are: [hardware/README.md](../README.md)). Wiring: "
        "[wiring.md](wiring.md), the schematic to solder from and the connection map below.",
        "",
        _table(["", ""], [
            ["dev board", f"{d.devboard.title} ({d.chip})" if d.module is None else
             f"{d.devboard.title} ({d.chip}, module {d.module.name}; PSRAM: {d.module.psram})"],
            ["keypad", f"{len(kp['rows'])}x{len(kp['cols'])}, `{kp['layout']}`"],
            ["compartments", f"{x.n} (one lock, driver and door contact each)"],
            ["GPIOs used", f"{len(d.pins())}"],
            ["parts, estimate", f"{_f(x.core_eur)} EUR (+ {_f(x.optional_eur)} EUR optional RTC)"],
            ["idle power", f"{_f(x.budget.idle_w)} W ({_f(x.budget.idle_12v_ma, 1)} mA at 12 V)"],
            ["standby on a 12 V 7 Ah SLA", f"{_f(calc.standby_days(calc.batteries()[0], x.wh_day), 1)} days "
                                           f"at {OPENINGS_SHOWN} openings a day"],
        ]),
        "",
        _bom(x), _driver(x), _power(x), _battery(x),
        "## 5. Wiring\n\n[wiring.md](wiring.md) lists every pin, and the header in pin order. The "
        "schematic draws every circuit with its parts and values (the same as the bill of materials) and "
        "the header as the board holds it; a flag names the GPIO its net goes to:\n\n"
        f"![schematic of {d.name}](schematic.svg)\n\n"
        "The connection map: one line per pin, from the header to what it connects to:\n\n"
        f"![wiring of {d.name}](wiring.svg)\n",
    ]
    return "\n".join(parts)


def _bom(x: Numbers) -> str:
    rows = []
    for refs, qty, kind, value, unit, line, opt in x.bom:
        if kind == "sundries":
            rows.append([refs, "1", "wire, terminal blocks, perfboard, headers, connectors", "", "",
                         _f(unit), _f(line)])
            continue
        it = hwparts.CATALOGUE[kind]
        what = f"{it.what}, {value}" if value and kind != "psu" else it.what
        pn = f"{value} {it.pn}" if kind == "psu" else it.pn
        rows.append([refs, str(qty), what + (" (optional)" if opt else ""), pn, it.alts, _f(unit), _f(line)])
    kit = [[i.what, i.pn, i.alts, _f(i.eur)] for i in hwparts.BATTERY_KIT]
    return "\n".join([
        "## 1. Bill of materials", "",
        _table(["refs", "qty", "part", "part number", "alternatives", "EUR each", "EUR"], rows), "",
        f"**Total: {_f(x.core_eur)} EUR** without the optional parts; {_f(x.core_eur + x.optional_eur)} EUR "
        f"with them. Not included: the box or cabinet itself, cable glands, the installer's time.", "",
        hwparts.PRICE_NOTE, "",
        "Battery-backed variant (section 4): instead of the plain supply,", "",
        _table(["part", "part number", "alternatives", "EUR"], kit), "",
        f"which adds {_f(x.battery_eur)} EUR: **{_f(x.core_eur + x.battery_eur)} EUR** for the "
        "battery-backed box.", "",
    ])


def _schematic(x: Numbers) -> str:
    pin = x.d.board["compartments"][0]["solenoid"]
    ref = {p.does: p.ref for p in x.d.parts}
    lock, q, fly = ref["compartment 1 lock"], ref["compartment 1 solenoid switch"], ref["compartment 1 flyback diode"]
    rg, rpd, fuse = ref["compartment 1 gate resistor"], ref["compartment 1 gate pull-down"], ref["12 V input fuse"]
    mos, dio = calc.MOSFETS[0].part, calc.DIODES[0].part
    gpio = f"{pin_name(pin)} --{rg} {x.sol.r_gate:g}R--"
    j = max(18, len(gpio))       # the gate node's column
    m = j + 4                    # the drain's column; the diode at m - 8, the coil at m + 8
    lines: list[list[str]] = []

    def put(row: int, col: int, text: str) -> None:
        while len(lines) <= row:
            lines.append([])
        ln = lines[row]
        ln += [" "] * (col + len(text) - len(ln))
        ln[col:col + len(text)] = text

    put(0, m - 5, f"+12 V (after {fuse})")
    put(1, m, "|")
    for r in (2, 7):
        put(r, m - 8, "+-------+-------+")
    for r in (3, 6):
        put(r, m - 8, "|               |")
    put(4, m - 9, "---")
    put(5, m - 9, "/ \\")
    put(4, m - 10 - len(fly), fly)
    put(5, m - 10 - len(dio), dio)
    put(4, m + 8, f"3  {lock}: lock coil")
    put(5, m + 8, "3  (12 V, fail-secure)")
    put(8, m, "|")
    put(9, m, f"D  {q} {mos}")
    put(10, j - len(gpio), gpio + "+---G")
    put(11, j, "|   S")
    put(12, j - len(rpd) - 4, f"{rpd} 10k|   |")
    put(13, j, "|   |")
    put(14, j - 1, "GND GND  (star point at the supply)")
    return "\n".join(["```"] + ["".join(ln).rstrip() for ln in lines] + ["```"])


def _driver(x: Numbers) -> str:
    s, sup = x.sol, x.supply
    n = x.n
    vf = calc.DIODES[0].vf
    vmax_src = "the board's battery max_mv" if x.d.battery_max_mv else calc.INPUTS["v_max"].source
    coil = _table(["quantity", "arithmetic", "value"], [
        ["supply, nominal", "", f"{_f(s.v_nom, 1)} V"],
        ["supply, highest", vmax_src, f"{_f(s.v_max, 1)} V"],
        ["coil resistance, nominal", calc.INPUTS["coil_ohm"].source, f"{_f(s.r_nom, 1)} Ohm"],
        ["coil resistance, lowest", f"{_f(s.r_nom, 1)} x (1 - {_f(calc.v('coil_tol'))})", f"{_f(s.r_min, 1)} Ohm"],
        ["coil current, nominal", f"{_f(s.v_nom, 1)} V / {_f(s.r_nom, 1)} Ohm", f"**{_f(s.i_nom)} A**"],
        ["coil current, worst case", f"{_f(s.v_max, 1)} V / {_f(s.r_min, 1)} Ohm", f"**{_f(s.i_max)} A**"],
        ["coil power, nominal", f"{_f(s.v_nom, 1)}^2 / {_f(s.r_nom, 1)}", f"{_f(s.p_nom, 1)} W"],
        ["coil power, worst case", f"{_f(s.v_max, 1)}^2 / {_f(s.r_min, 1)}", f"{_f(s.p_max, 1)} W"],
    ])
    mrows = []
    for r in calc.mosfet_rows(s, vf):
        m = r["m"]
        if r["verdict"] == "no":
            mrows.append([m.part, m.package, f"{_f(m.vth_max, 1)} V", f"only at {m.rds_vgs:g} V", "-", "-", "-",
                          "-", f"no: {m.note}"])
            continue
        mrows.append([m.part, m.package, f"{_f(m.vth_max, 2)} V", f"{m.rds_mohm:g} mOhm at {m.rds_vgs:g} V",
                      f"{_f(r['rds_hot'] * 1000, 0)} mOhm", f"{_f(s.i_max)}^2 x {_f(r['rds_hot'], 3)} = "
                      f"**{_f(r['p_w'], 3)} W**", f"{_f(r['rise_c'], 0)} C ({m.theta_ja:g} C/W)",
                      f"{m.vds:g} V / {_f(s.v_max + vf, 1)} V = {_f(r['vds_margin'], 1)}x",
                      f"{r['verdict']}: {m.note}"])
    mos = _table(["MOSFET", "package", "Vgs(th) max", "Rds(on) max", f"hot (x{calc.v('rds_hot'):g})",
                  "P = I^2 x Rds(on)", "junction rise", "Vds rating / stress", "at 3.3 V gate"], mrows)
    gate = _table(["quantity", "arithmetic", "value"], [
        ["gate voltage", f"3.3 V x {calc.v('r_pulldown'):g} / ({calc.v('r_pulldown'):g} + {s.r_gate:g})",
         f"{_f(s.vgs)} V"],
        ["gate current, peak while charging", f"3.3 V / {s.r_gate:g} Ohm",
         f"{_f(s.gate_peak_ma, 0)} mA (pin rating {s.gpio_max_ma:g} mA)"],
        ["pin current while on", f"3.3 V / ({s.r_gate:g} + {calc.v('r_pulldown'):g}) Ohm",
         f"{_f(s.gate_hold_ma)} mA"],
        ["gate voltage while the pin floats", f"{calc.v('leak_ua'):g} uA x {calc.v('r_pulldown'):g} Ohm",
         f"{_f(s.gate_float_mv, 0)} mV (threshold >= {calc.MOSFETS[0].vth_min:g} V)"],
    ])
    drows = [[r["d"].part, r["d"].kind, f"{r['d'].vr:g} V / {_f(s.v_max, 1)} V = {_f(r['vr_margin'], 1)}x",
              f"{r['d'].if_avg:g} A", f"{r['d'].ifsm:g} A / {_f(s.i_max)} A = {_f(r['peak_margin'], 0)}x",
              f"{r['d'].vf:g} V"] for r in calc.diode_rows(s)]
    dio = _table(["diode", "type", "reverse voltage / supply", "IF(AV)", "surge rating / coil current", "Vf"],
                 drows)
    timing = _table(["quantity", "arithmetic", "value"], [
        ["pulse (config pulse_ms)", "firmware/parcelbox/config.py", f"{s.pulse_ms} ms"],
        ["cool-down (config cooldown_ms)", f"at least 3 x pulse_ms = {3 * s.pulse_ms} ms", f"{s.cooldown_ms} ms"],
        ["duty cycle, default", f"{s.pulse_ms} / ({s.pulse_ms} + {s.cooldown_ms})", f"**{_pct(s.duty_default)}**"],
        ["coil power averaged, default", f"{_f(s.p_nom, 1)} W x {_pct(s.duty_default)}", f"{_f(s.p_avg_default)} W"],
        ["energy per pulse", f"{_f(s.p_nom, 1)} W x {s.pulse_ms / 1000:g} s", f"{_f(s.e_pulse_j)} J"],
        ["longest pulse (board max_on_ms)", "failsafe timer thread (pb_linux.hw)" if x.d.linux
         else "hardware timer failsafe", f"{s.max_on_ms} ms"],
        ["duty cycle, worst the firmware allows", f"{s.max_on_ms} / ({s.max_on_ms} + 3 x {s.max_on_ms})",
         f"**{_pct(s.duty_worst)}**"],
        ["coil power averaged, worst", f"{_f(s.p_nom, 1)} W x {_pct(s.duty_worst)}", f"{_f(s.p_avg_worst)} W"],
        ["lock duty rating (assumed)", calc.INPUTS["lock_duty"].source, _pct(calc.v("lock_duty"), 0)],
        ["no setting can pass", "lock.HARD_MAX_ON_MS", f"{s.hard_max_on_ms} ms"],
    ])
    psu = _table(["quantity", "arithmetic", "value"], [
        ["peak current, all locks at once", f"{n} x {_f(s.i_max)} A + electronics", f"{_f(sup.peak_a)} A"],
        ["fuse (time-lag)", f"next size >= 1.25 x {_f(sup.peak_a)} A", f"T{sup.fuse_a:g}A"],
        ["12 V supply", f"next size >= 1.25 x ({n} x {_f(s.v_nom / s.r_min)} A + electronics)", f"{sup.psu_a:g} A"],
    ])
    return "\n".join([
        "## 2. Solenoid driver", "",
        f"One per compartment ({n}); compartment 1 shown, the others alike (wiring.md; every "
        f"compartment in [schematic.svg](schematic.svg)):", "",
        _schematic(x), "",
        "The diode's cathode (the band) goes to +12 V, its anode to the drain; the lock is "
        "fail-secure, so a dead supply, a reset or a blown fuse all leave the box locked.", "",
        "### 2.1 Coil", "", coil, "",
        "### 2.2 MOSFET", "",
        f"Dissipation while the coil is on, at the worst-case current and a hot die, as if the "
        f"coil were on for good (a pulse lasts {s.pulse_ms} ms, so the real rise is lower). The "
        f"MOSFET switches twice per pulse, so switching losses are nil; conduction is the loss.",
        "", mos, "",
        "### 2.3 Gate resistor and pull-down", "", gate, "",
        "### 2.4 Flyback diode", "",
        "At switch-off the coil keeps its current flowing through the diode, where it decays within "
        "milliseconds, once per pulse: the diode must block the supply voltage while the coil is on "
        "and carry the coil current for those milliseconds (its average is far below any IF(AV), "
        "so the peak is held against the 8.3 ms surge rating). Without the diode the coil's "
        "voltage spike would exceed the MOSFET's Vds rating at every switch-off; with it the MOSFET "
        "sees the supply plus the diode's drop.", "", dio, "",
        "### 2.5 Pulse length and duty cycle", "", timing, "",
        "### 2.6 Supply and fuse", "",
        "One owner code may open every compartment at once (the firmware pulses them together), "
        "so the supply carries every coil at the same time.", "", psu, "",
    ] + (_gpio(x) if x.d.linux else []))


def _gpio(x: Numbers) -> list[str]:
    g = calc.gpio_load(x.d.board, x.sol)
    n = x.n
    colours = 2 if len(x.d.board["led"]) == 3 else 1
    rows = [
        ["LED, one colour", calc.INPUTS["led_ma"].source, f"{_f(g.led_ma, 1)} mA"],
        ["solenoid gate, while it charges", f"3.3 V / {x.sol.r_gate:g} Ohm", f"{_f(g.gate_peak_ma, 1)} mA"],
        ["solenoid gate, held", f"3.3 V / ({x.sol.r_gate:g} + {calc.v('r_pulldown'):g}) Ohm",
         f"{_f(g.gate_hold_ma, 2)} mA"],
        ["buzzer transistor base", f"(3.3 V - {calc.v('vbe'):g} V) / {calc.v('r_base'):g} Ohm", f"{_f(g.buzzer_ma, 1)} mA"],
        ["**all at once, worst**", f"{colours} LED colour{'s' if colours > 1 else ''} (amber) + {n} gates held "
         f"+ buzzer", f"**{_f(g.worst_ma, 1)} mA**"],
    ]
    return ["### 2.7 GPIO current", "",
            f"The Pi rates its GPIO at {g.pin_max_ma:g} mA a pin and {g.total_max_ma:g} mA over all pins "
            f"(Raspberry Pi documentation); the most any one pin sources here is "
            f"{_f(max(g.led_ma, g.gate_peak_ma, g.buzzer_ma), 1)} mA.", "",
            _table(["load", "arithmetic", "current"], rows), ""]


def _power(x: Numbers) -> str:
    b, s = x.budget, x.sol
    eff = calc.v("buck_eff")
    fb = calc.feedback_times()
    if x.d.chip in calc.FIVE_V_CHIPS:
        head_rows = [
            [calc.INPUTS["idle_ma_" + x.d.chip].what, calc.INPUTS["idle_ma_" + x.d.chip].source,
             f"{_f(b.chip_ma)} mA at 5 V"],
            ["pull-ups of closed switches (doors shut, lid on)", "3.3 V / pull-up each",
             f"{_f(b.pullup_ma)} mA at 3.3 V"],
            ["5 V rail (the Pi's own regulators feed the pull-ups, counted 1:1)",
             f"{_f(b.chip_ma)} + {_f(b.pullup_ma)}", f"{_f(b.rail_5v_ma)} mA"],
        ]
    else:
        head_rows = [
            [f"{x.d.chip} module, Wi-Fi connected, modem sleep", calc.INPUTS["idle_ma_" + x.d.chip].source,
             f"{_f(b.chip_ma)} mA at 3.3 V"],
            ["pull-ups of closed switches (doors shut, lid on)", "3.3 V / pull-up each",
             f"{_f(b.pullup_ma)} mA at 3.3 V"],
            ["3.3 V rail", "", f"{_f(b.rail_3v3_ma)} mA"],
            ["5 V rail (the LDO passes the 3.3 V current)", f"{_f(b.rail_3v3_ma)} + "
             f"{_f(calc.v('devboard_ma'), 0)} dev board overhead", f"{_f(b.rail_5v_ma)} mA"],
        ]
    idle_rows = head_rows + [
        ["at 12 V through the buck", f"{_f(b.rail_5v_ma)} mA x 5 V / ({_f(eff)} x 12 V)",
         f"{_f(b.elec_12v_ma)} mA"],
        ["battery divider", "12 V / (top + bottom)", f"{_f(b.divider_ma, 3)} mA"],
        ["**idle, from 12 V**", "", f"**{_f(b.idle_12v_ma)} mA = {_f(b.idle_w, 3)} W**"],
        ["idle energy per day", f"{_f(b.idle_w, 3)} W x 24 h", f"{_f(b.idle_wh_day)} Wh"],
    ]
    open_rows = [
        ["solenoid pulse", f"{_f(s.p_nom, 1)} W x {s.pulse_ms / 1000:g} s", f"{_f(b.open_solenoid_j)} J"],
        ["electronics busy", f"{calc.v('active_ma'):g} mA x 5 V x {calc.v('active_s'):g} s / {_f(eff)}",
         f"{_f(b.open_active_j)} J"],
        ["LED (ACCEPTED pattern)", f"{calc.v('led_ma'):g} mA x 5 V x {fb['led_s']:g} s / {_f(eff)}",
         f"{_f(b.open_led_j, 3)} J"],
        ["active buzzer (key clicks + ACCEPTED)" if x.d.chip in calc.ACTIVE_BUZZER_CHIPS else
         "buzzer (key clicks + ACCEPTED)",
         f"{calc.vc('buzzer_ma', x.d.chip):g} mA x 5 V x "
         f"{'100' if x.d.chip in calc.ACTIVE_BUZZER_CHIPS else '50'} % x {fb['buzzer_s']:g} s / {_f(eff)}",
         f"{_f(b.open_buzzer_j, 3)} J"],
        ["**one opening**", "", f"**{_f(b.open_j)} J = {_f(b.open_j / 3.6, 2)} mWh**"],
    ]
    day_rows = [[str(n), f"{_f(b.idle_wh_day)} + {n} x {_f(b.open_j / 3600, 4)}", f"{_f(wh)} Wh",
                 _pct(share, 2)] for n, wh, share in b.per_day]
    return "\n".join([
        "## 3. Power budget", "",
        "### 3.1 Idle (waiting for a code, connected to the broker)", "",
        _table(["what", "arithmetic", "current"], idle_rows), "",
        "### 3.2 One opening", "",
        _table(["what", "arithmetic", "energy"], open_rows), "",
        "### 3.3 Per day", "",
        _table(["openings a day", "arithmetic (Wh)", "energy a day", "share of the openings"], day_rows), "",
        ("The Pi itself, idling, not the lock, sets the energy a day." if x.d.chip in calc.FIVE_V_CHIPS else
         "The idle Wi-Fi connection, not the lock, sets the energy a day."), "",
    ])


def _battery(x: Numbers) -> str:
    rows = []
    for bt in calc.batteries():
        i, force = calc.coil_at(bt.v_empty)
        rows.append([bt.name, f"{_f(bt.v_nom, 1)} V x {_f(bt.ah, 1)} Ah x {_pct(bt.usable, 0)}",
                     f"{_f(bt.usable_wh, 1)} Wh", f"**{_f(calc.standby_days(bt, x.wh_day), 1)} days**",
                     f"{_f(bt.v_empty, 1)} V: {_f(i)} A, {_pct(force, 0)} of the force"])
    need = [[f"{d:g}", f"{_f(x.wh_day)} Wh x {d:g} / (12 V x {_pct(calc.v('sla_usable'), 0)})",
             f"{_f(calc.sla_ah_for(d, x.wh_day), 1)} Ah"] for d in calc.STANDBY_TARGET_DAYS]
    return "\n".join([
        "## 4. Battery-backed variant", "",
        f"Standby at {OPENINGS_SHOWN} openings a day ({_f(x.wh_day)} Wh a day, section 3.3):", "",
        _table(["battery", "usable energy", "", "standby", "when empty: coil current, pull"], rows), "",
        "Lead-acid capacity for a given standby:", "",
        _table(["days", "arithmetic", "SLA capacity"], need), "",
    ])


def index_boards(designs: list[Design]) -> str:
    """The index's table of boards."""
    rows = []
    for d in designs:
        x = Numbers(d)
        kp = d.board["keypad"]
        rows.append([f"[{d.name}]({d.name}/README.md)", d.devboard.title,
                     f"{len(kp['rows'])}x{len(kp['cols'])}", str(x.n), str(len(d.pins())),
                     f"{_f(x.core_eur)} EUR", f"{_f(x.budget.idle_w)} W",
                     f"{_f(x.sol.i_nom)} A / {_f(x.sol.i_max)} A",
                     f"[table]({d.name}/wiring.md), [schematic]({d.name}/schematic.svg), "
                     f"[map]({d.name}/wiring.svg)"])
    return _table(["board", "dev board", "keypad", "compartments", "GPIOs", "parts", "idle",
                   "coil current (nominal / worst)", "wiring"], rows)


def index_inputs() -> str:
    """The index's table of the arithmetic's inputs."""
    rows = [[f"`{k}`", f"{i.value:g} {i.unit}".strip(), i.what, i.source] for k, i in calc.INPUTS.items()]
    return _table(["input", "value", "what", "source"], rows)
