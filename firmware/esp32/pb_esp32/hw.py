# The ESP32 hardware layer: the port methods that touch pins (docs/runtime.md section 2),
# built from the device's board.json (docs/boards.md). The keypad scan allocates nothing.
#
# Keypad: rows are open-drain outputs, released (high-Z) except the one being scanned,
# which is pulled low; columns are inputs with pull-ups (the chip's, or the board's when
# keypad pull is "external"). Open-drain rows mean two keys held in one column never
# short a high row to a low one. A pressed key reads 0 on its column while its row is
# low; scan() inverts that into the frame of docs/keypad.md: bit r*cols+c set = pressed.
# MicroPython spends ~10 us between driving a row and reading its columns, enough for a
# 45 kOhm pull-up and a short ribbon cable to settle; long cables need external pull-ups.
#
# Solenoids: each compartment's pin has its own hardware Timer (ids 0..n-1), armed
# one-shot for max_on_ms whenever the pin turns on. Its callback sets the pin off and a
# flag, nothing else. On the ESP32, Timer callbacks are scheduled (soft): they run when
# the VM reaches the next bytecode, so they cut the solenoid through any Python-level
# hang of the superloop; a hang inside a C call is the watchdog's (the reset floats the
# pin and the driver's gate pull-down switches the solenoid off).
from machine import ADC, PWM, WDT, Pin, Timer

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

FORMAT = const(1)           # the board.json format this layer reads
_TONE_DUTY = const(32768)   # 50 % square wave for the buzzer
# feedback.LED_OFF, GREEN, RED, AMBER, BLUE -> RGB mask (bit 0 red, 1 green, 2 blue)
_RGB = b"\x00\x02\x01\x03\x04"


def _cutter(hw, i):
    def cut(timer):
        hw._cut(i)
    return cut


class Hardware:
    # board: the flat dict of board.json (host_tools/boards.py wrote and checked it).
    def __init__(self, board):
        if board.get("format", FORMAT) != FORMAT:
            raise ValueError("board.json format is not %d: rebuild it with this firmware's tools" % FORMAT)
        comps = board["compartments"]
        n = len(comps)
        # Solenoids first: each pin is set off before it becomes an output (no glitch).
        self._sol_on = board["solenoid_active"]
        self._sol_off = 1 - self._sol_on
        self._sols = tuple(Pin(c["solenoid"], Pin.OUT, value=self._sol_off) for c in comps)
        self._timers = tuple(Timer(i) for i in range(n))
        self._cuts = tuple(_cutter(self, i) for i in range(n))
        self._max_on = board["max_on_ms"]
        self._on = 0                # bit i: compartment i+1's solenoid is on
        self._latched = 0           # bit i: cut by the failsafe; stays off until told off
        self.tripped = 0            # bit i: cut by the failsafe (failsafe_tripped() clears)
        self.n = n

        kp = board["keypad"]
        self._rows = tuple(Pin(p, Pin.OPEN_DRAIN, value=1) for p in kp["rows"])
        # pull None: no pull resistor (the stubs type pull as int, though their docstring says None)
        pull = Pin.PULL_UP if kp["pull"] == "internal" else None
        self._cols = tuple(Pin(p, Pin.IN, pull)  # type: ignore[arg-type]  # stub: None
                           for p in kp["cols"])
        self._nr = len(self._rows)
        self._nc = len(self._cols)

        pull = Pin.PULL_UP if board["door_pull"] == "internal" else None
        self._doors = tuple(Pin(c["door"], Pin.IN, pull)  # type: ignore[arg-type]  # stub: None
                            for c in comps)
        self._door_open = board["door_open_level"]
        t = board.get("tamper")
        self._tamper = None
        if t is not None:
            pull = Pin.PULL_UP if board["tamper_pull"] == "internal" else None
            self._tamper = Pin(t, Pin.IN, pull)  # type: ignore[arg-type]  # stub: None
        self._tamper_open = board.get("tamper_open_level", 1)

        self._led_on = board["led_active"]
        self._leds = tuple(Pin(p, Pin.OUT, value=1 - self._led_on) for p in board["led"])
        self._led_now = 0
        self._buzzer = PWM(Pin(board["buzzer"]), freq=2000, duty_u16=0)
        self._hz_now = 0

        self._adc = None
        b = board.get("battery")
        if b is not None:
            self._adc = ADC(Pin(b), atten=ADC.ATTN_11DB)
            self._div_top, self._div_bottom = board["battery_divider"]
        self._wdt = None

    # ---- keypad -------------------------------------------------------------

    # One scan of the matrix: the frame bitmap (bit r*cols+c = pressed). No allocation:
    # preallocated pin tuples, small-int arithmetic, pins called directly. Every row is
    # driven low at once first: only a column that then reads low can hold a pressed key
    # (a key, or a ghost's path, joins it to some row), so an idle pad, nearly every scan,
    # costs one read per column, and a pressed one only reads those columns row by row.
    def scan(self):
        rows = self._rows
        cols = self._cols
        nr = self._nr
        nc = self._nc
        r = 0
        while r < nr:
            rows[r](0)
            r += 1
        live = 0
        c = 0
        while c < nc:
            if not cols[c]():
                live |= 1 << c
            c += 1
        r = 0
        while r < nr:
            rows[r](1)
            r += 1
        bits = 0
        if not live:
            return bits
        k = 0
        r = 0
        while r < nr:
            row = rows[r]
            row(0)
            c = 0
            while c < nc:
                if (live >> c) & 1 and not cols[c]():
                    bits |= 1 << (k + c)
                c += 1
            row(1)
            k += nc
            r += 1
        return bits

    # ---- doors and tamper ---------------------------------------------------

    # True if compartment comp's (1-based) door reads open: raw, undebounced.
    def door(self, comp):
        if comp < 1:
            raise IndexError("compartments count from 1")
        return self._doors[comp - 1]() == self._door_open

    # True if the tamper switch reads open, None without one.
    def tamper(self):
        if self._tamper is None:
            return None
        return self._tamper() == self._tamper_open

    # ---- solenoids and their failsafe ---------------------------------------

    # Drive compartment comp's (1-based) solenoid. Turning it on arms its one-shot
    # failsafe timer (max_on_ms); calling again while on changes nothing, so the loop may
    # call this every pass. After the failsafe cut it, it stays off until called with False.
    def solenoid(self, comp, on):
        if comp < 1:
            raise IndexError("compartments count from 1")
        i = comp - 1
        bit = 1 << i
        pin = self._sols[i]
        if on:
            if (self._on | self._latched) & bit:
                return
            self._on |= bit
            self._timers[i].init(mode=Timer.ONE_SHOT, period=self._max_on, callback=self._cuts[i])
            if self._on & bit:      # not already cut by a callback run in between
                pin(self._sol_on)
        else:
            self._latched &= ~bit
            if self._on & bit:
                self._on &= ~bit
                self._timers[i].deinit()
            pin(self._sol_off)

    # The failsafe timer's callback: the pin off and a flag, nothing else.
    def _cut(self, i):
        bit = 1 << i
        if self._on & bit:
            self._sols[i](self._sol_off)
            self._on &= ~bit
            self._latched |= bit
            self.tripped |= bit

    # Bitmap of compartments (bit comp-1) the failsafe cut since the last call.
    def failsafe_tripped(self):
        t = self.tripped
        self.tripped = 0
        return t

    # ---- LED and buzzer -----------------------------------------------------

    # led: a feedback.LED_* colour (an RGB LED shows it; a single LED is on for any
    # colour); hz: buzzer frequency, 0 silent. Pins and PWM change only on a change.
    def indicate(self, led, hz):
        if led != self._led_now:
            if led < 0 or led >= len(_RGB):
                raise ValueError("no such LED colour")
            self._led_now = led
            leds = self._leds
            if len(leds) == 1:
                mask = 1 if led else 0
            else:
                mask = _RGB[led]
            i = 0
            while i < len(leds):
                leds[i](self._led_on if (mask >> i) & 1 else 1 - self._led_on)
                i += 1
        if hz != self._hz_now:
            self._hz_now = hz
            if hz > 0:
                self._buzzer.freq(hz)
                self._buzzer.duty_u16(_TONE_DUTY)
            else:
                self._buzzer.duty_u16(0)

    # ---- watchdog, battery, shutdown -----------------------------------------

    # Start the hardware watchdog (it cannot be stopped); feed() does nothing before.
    def watchdog(self, timeout_ms):
        self._wdt = WDT(timeout=timeout_ms)

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    # The battery voltage in mV through the board's divider, None without battery sense.
    def battery_mv(self):
        if self._adc is None:
            return None
        mv = self._adc.read_uv() // 1000
        return mv * (self._div_top + self._div_bottom) // self._div_bottom

    # Every solenoid, the LED and the buzzer off; failsafe timers stopped.
    def all_off(self):
        for i in range(self.n):
            self.solenoid(i + 1, False)
        self.indicate(0, 0)
