# The world behind the fake machine module: one fake clock, the chip's pin table, and
# the circuit on the board (keypad matrix, switches, resistors, analog levels, Wi-Fi).
#
# Runs unmodified on CPython and in the MicroPython VM. Reading a pin allocates nothing
# (state lives in preallocated lists and small-int bitmaps), so a scan through these
# fakes can be measured with gc.mem_alloc(). Times inside the world are ms since it was
# created (`now`, a small int); ticks_ms() adds the start tick and wraps at 2**30.
#
# Electrical model of a pin's level, strongest first:
#   1. the pin's own driver: OUT drives its value, OPEN_DRAIN drives 0 or lets go;
#   2. through closed keypad contacts, the whole connected net: any driver low -> 0
#      (a driver high on the same net too is a short: `shorts` counts it), else a
#      driver high -> 1;
#   3. a closed switch (door, tamper) -> its level;
#   4. resistors: an external pull, else an internal pull the pad really has
#      (GPIO34-39 on the ESP32 have none: PULL_UP there is silently ignored, as on the
#      real chip), else the pin floats and reads `float_level`.
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_MASK = const(0x3FFFFFFF)
_NPINS = const(64)
_IN = const(1)           # ESP-IDF GPIO_MODE_DEF_INPUT
_OUTBIT = const(2)       # GPIO_MODE_DEF_OUTPUT
_ODBIT = const(4)        # GPIO_MODE_DEF_OD
_PULL_UP = const(2)
_PULL_DOWN = const(1)

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)


def _span(a, b):
    return tuple(range(a, b + 1))


# Per chip: GPIOs that exist, input-only ones, ones without internal pulls, ADC1 and
# ADC2 pins, hardware timers. host_tools/boards.py has the same facts for validation;
# tests/host/test_boards.py checks that the two agree.
CHIPS = {
    "esp32": {
        "pins": _span(0, 19) + (21, 22, 23, 25, 26, 27) + _span(32, 39),
        "input_only": _span(34, 39),
        "no_pull": _span(34, 39),
        "adc1": _span(32, 39),
        "adc2": (0, 2, 4, 12, 13, 14, 15, 25, 26, 27),
        "timers": 4,
    },
    "esp32s3": {
        "pins": _span(0, 21) + _span(26, 48),
        "input_only": (),
        "no_pull": (),
        "adc1": _span(1, 10),
        "adc2": _span(11, 20),
        "timers": 4,
    },
}


class Reset(BaseException):
    # Raised out of World.advance() or machine.reset() when the chip resets and the
    # world's on_reset is "raise". BaseException, so `except Exception` cannot hide it.
    # Reset(cause).cause is the machine.*_RESET constant.
    @property
    def cause(self):
        return self.args[0]


class Matrix:
    # A rows x cols key matrix: key (r, c) joins row pin r to column pin c while its
    # contact is closed. bounce_ms of chatter follows every press and release.
    def __init__(self, world, rows, cols, layout, bounce_ms):
        self.w = world
        self.rows = tuple(rows)
        self.cols = tuple(cols)
        self.nr = len(self.rows)
        self.nc = len(self.cols)
        n = self.nr * self.nc
        if n > 30:
            raise ValueError("fake matrix: at most 30 keys")
        if layout is not None and len(layout) != n:
            raise ValueError("fake matrix: layout must have rows*cols keys")
        self.layout = bytes(layout.encode() if isinstance(layout, str) else layout) if layout else None
        self.bounce_ms = bounce_ms
        self.down = [-1] * n     # world time of the last press, -1 never
        self.up = [-1] * n       # world time of the release after it, -1 still held
        self.pins = self.rows + self.cols
        self._k = 0              # closed-contact bitmap, cached for _k_at
        self._k_at = -1
        for i in range(len(self.pins)):
            p = self.pins[i]
            if world.kp_node[p] >= 0:
                raise ValueError("fake matrix: GPIO%d wired twice" % p)
            world.kp_node[p] = i

    def _index(self, key):
        if isinstance(key, tuple):
            r, c = key
            if not (0 <= r < self.nr and 0 <= c < self.nc):
                raise ValueError("fake matrix: no key at %r" % (key,))
            return r * self.nc + c
        if isinstance(key, str):
            key = ord(key)
        if self.layout is None or key not in self.layout:
            raise ValueError("fake matrix: no key %r" % (key,))
        return self.layout.index(bytes((key,)))

    # Press `key` (layout char, ASCII int or (row, col)) at world time `at` (default now).
    def press(self, key, at=None):
        k = self._index(key)
        self.down[k] = self.w.now if at is None else at
        self.up[k] = -1
        self._k_at = -1

    def release(self, key, at=None):
        k = self._index(key)
        self.up[k] = self.w.now if at is None else at
        self._k_at = -1

    def release_all(self, at=None):
        for k in range(len(self.down)):
            if self.down[k] >= 0 and self.up[k] < 0:
                self.up[k] = self.w.now if at is None else at
        self._k_at = -1

    # Contact k at world time t: 1 closed, 0 open. Deterministic chatter while bouncing.
    def _contact(self, k, t):
        d = self.down[k]
        if d < 0 or t < d:
            return 0
        u = self.up[k]
        b = self.bounce_ms
        if u < 0 or t < u:
            e = t - d
            if e < b and (e + k) % 3 == 2:
                return 0        # pressing: mostly closed, with open spikes
            return 1
        e = t - u
        if e < b and (e + k) % 3 == 1:
            return 1            # releasing: mostly open, with closed spikes
        return 0

    # Bitmap of closed contacts now (bit r*cols+c), computed once per world time.
    def closed(self):
        t = self.w.now
        if self._k_at == t:
            return self._k
        k = 0
        i = 0
        n = self.nr * self.nc
        while i < n:
            if self._contact(i, t):
                k |= 1 << i
            i += 1
        self._k = k
        self._k_at = t
        return k

    # The level of node i (rows 0..nr-1, then columns) through the contacts now.
    def level(self, i):
        k = self.closed()
        nr = self.nr
        nc = self.nc
        net = 1 << i
        while True:
            grown = net
            r = 0
            while r < nr:
                c = 0
                while c < nc:
                    if (k >> (r * nc + c)) & 1:
                        pair = (1 << r) | (1 << (nr + c))
                        if grown & pair:
                            grown |= pair
                    c += 1
                r += 1
            if grown == net:
                break
            net = grown
        w = self.w
        lo = 0
        hi = 0
        up = 0
        dn = 0
        j = 0
        pins = self.pins
        while j < nr + nc:
            if (net >> j) & 1:
                p = pins[j]
                m = w.mode[p]
                if m & _OUTBIT:
                    if w.out[p] == 0:
                        lo = 1
                    elif not m & _ODBIT:
                        hi = 1
                pl = w.pull_level(p)
                if pl == 1:
                    up = 1
                elif pl == 0:
                    dn = 1
            j += 1
        if lo:
            if hi:
                w.shorts += 1
            return 0
        if hi:
            return 1
        if up:
            return 1
        if dn:
            return 0
        return w.float_level


class Switch:
    # A switch on one pin (door reed, tamper micro switch): while closed it holds the
    # pin at `level`. bounce_ms of chatter follows every change.
    def __init__(self, world, pin, level, closed, bounce_ms):
        self.w = world
        self.pin = pin
        self.to = level
        self.state = 1 if closed else 0
        self.prev = self.state
        self.at = -1000000
        self.bounce_ms = bounce_ms

    def set(self, closed, at=None):
        self.prev = self.state_at(self.w.now)
        self.state = 1 if closed else 0
        self.at = self.w.now if at is None else at

    def state_at(self, t):
        if t < self.at:
            return self.prev
        e = t - self.at
        if e < self.bounce_ms and e % 2 == 1:
            return self.prev
        return self.state


class World:
    def __init__(self, chip="esp32", t0=0, float_level=0):
        if chip not in CHIPS:
            raise ValueError("fake world: unknown chip " + chip)
        c = CHIPS[chip]
        self.chip = chip
        self.valid = [0] * _NPINS
        self.no_out = [0] * _NPINS
        self.no_pull = [0] * _NPINS
        self.adc = [0] * _NPINS       # 1: ADC1, 2: ADC2
        for p in c["pins"]:
            self.valid[p] = 1
        for p in c["input_only"]:
            self.no_out[p] = 1
        for p in c["no_pull"]:
            self.no_pull[p] = 1
        for p in c["adc1"]:
            self.adc[p] = 1
        for p in c["adc2"]:
            self.adc[p] = 2
        self.ntimers = c["timers"]
        self.base = t0 & _MASK
        self.now = 0
        self.float_level = float_level
        self.mode = [0] * _NPINS      # 0: not configured (reset state)
        self.pull = [0] * _NPINS      # pull requested by software
        self.out = [0] * _NPINS       # output latch
        self.ext = [-1] * _NPINS      # external resistor: -1 none, 0 pull-down, 1 pull-up
        self.kp_node = [-1] * _NPINS
        self.switch = [None] * _NPINS
        self.uv = [0] * _NPINS        # microvolts at each pin, for the ADC
        self.pwm = [None] * _NPINS    # the PWM object driving a pin
        self.matrix = None
        self.shorts = 0
        self.timers = []              # armed fake Timers
        self.wdt_timeout = -1         # ms; -1: no watchdog running
        self.wdt_fed = 0
        self.wdt_feeds = 0
        self.cause = PWRON_RESET
        self.resets = []              # (world time, cause) of every reset
        self.on_reset = "raise"       # or "flag": record the reset and carry on
        self.mac = b"\x24\x0a\xc4\x5a\x17\x01"
        self.wifi_aps = {}            # ssid -> password
        self.wifi_connect_ms = 1500
        self.wifi_active = False
        self.utc = None               # UTC seconds since 1970 that NTP reports; None: unreachable
        self.epoch_year = 2000        # time.time() epoch of the ESP32 port
        self.rtc = None               # what ntptime.settime() set

    # ---- time -----------------------------------------------------------

    # time.ticks_ms() of the fake chip: wraps at 2**30 like MicroPython's.
    def ticks_ms(self):
        n = self.now
        b = self.base
        if n > _MASK - b:
            return n - (_MASK - b + 1)
        return b + n

    # Let `ms` pass: fire due timers in time order, trip an unfed watchdog.
    def advance(self, ms):
        end = self.now + ms
        while True:
            due = end
            first = None
            for t in self.timers:
                if t._due <= due:
                    due = t._due
                    first = t
            wdt = -1
            if self.wdt_timeout >= 0:
                wdt = self.wdt_fed + self.wdt_timeout
                if wdt <= due:
                    self.now = max(self.now, wdt)
                    self.reset(WDT_RESET)
                    continue
            if first is None:
                break
            self.now = max(self.now, due)
            first._fire()
        self.now = end

    # ---- the chip -------------------------------------------------------

    # The chip resets: pins float, timers, PWM and the watchdog stop.
    def reset(self, cause):
        self.cause = cause
        self.resets.append((self.now, cause))
        for p in range(_NPINS):
            self.mode[p] = 0
            self.pull[p] = 0
            self.out[p] = 0
            self.pwm[p] = None
        for t in self.timers:
            t._due = -1
        self.timers = []
        self.wdt_timeout = -1
        self.wifi_active = False
        if self.on_reset == "raise":
            raise Reset(cause)

    def check_pin(self, p):
        if not isinstance(p, int) or p < 0 or p >= _NPINS or not self.valid[p]:
            raise ValueError("invalid pin")

    # The pull a pin's resistors give it: 1 up, 0 down, -1 none (external wins).
    def pull_level(self, p):
        e = self.ext[p]
        if e >= 0:
            return e
        if self.no_pull[p]:
            return -1           # the pad has no pull resistors: the request did nothing
        q = self.pull[p]
        if q & _PULL_UP:
            return 1
        if q & _PULL_DOWN:
            return 0
        return -1

    # The level on pin p now (allocation-free).
    def level(self, p):
        m = self.mode[p]
        if m & _OUTBIT:
            v = self.out[p]
            if not m & _ODBIT or v == 0:
                return v
        n = self.kp_node[p]
        if n >= 0:
            return self.matrix.level(n)
        s = self.switch[p]
        if s is not None and s.state_at(self.now):
            return s.to
        pl = self.pull_level(p)
        if pl >= 0:
            return pl
        return self.float_level

    # ---- the board around the chip --------------------------------------

    def keypad(self, rows, cols, layout=None, bounce_ms=0):
        for p in tuple(rows) + tuple(cols):
            self.check_pin(p)
        self.matrix = Matrix(self, rows, cols, layout, bounce_ms)
        return self.matrix

    # A switch that holds `pin` at `level` while closed (a door reed switch to GND: level 0).
    def add_switch(self, pin, level=0, closed=False, bounce_ms=0):
        self.check_pin(pin)
        s = Switch(self, pin, level, closed, bounce_ms)
        self.switch[pin] = s
        return s

    # An external resistor on `pin` to 3.3 V (level 1) or to GND (level 0).
    def resistor(self, pin, level):
        self.check_pin(pin)
        self.ext[pin] = level

    # The voltage at an ADC pin, in millivolts.
    def set_mv(self, pin, mv):
        self.check_pin(pin)
        self.uv[pin] = mv * 1000

    # The tone on a PWM pin: its frequency while the duty is above 0, else 0.
    def tone(self, pin):
        w = self.pwm[pin]
        if w is None or w._duty == 0:
            return 0
        return w._freq

    # Minimal Wi-Fi: an access point the fake network.WLAN can join.
    def add_ap(self, ssid, password):
        self.wifi_aps[ssid] = password


world = None


# A fresh world (and so a fresh chip): every fake module reads this one.
def new(chip="esp32", t0=0, float_level=0):
    global world
    world = World(chip, t0, float_level)
    return world


# The current world, created on first use.
def get():
    if world is None:
        new()
    return world
