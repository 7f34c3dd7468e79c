# The linux port's hardware layer: the port methods that touch pins (docs/runtime.md
# section 2) over Blinka's digitalio and board modules, built from board.json.
#
# Keypad: adafruit_matrixkeypad.Matrix_Keypad scans (rows driven low one at a time,
# push-pull, the others inputs with pull-ups; columns with pull-ups). Its key names are
# the frame bits of docs/keypad.md (key (r, c) is named 1 << (r*cols+c)), so scan() ORs
# pressed_keys into the frame the core's parcelbox.keypad decodes: debounce, one event
# per press, multi-key presses and ghosts rejected, exactly as on the ESP32.
#
# Solenoids: each has a failsafe timer (a thread on Linux: it fires even while the loop
# hangs in Python or in a blocking call), armed for max_on_ms whenever the solenoid turns
# on; it sets the pin off and a flag. The process dying with a solenoid on is covered by
# the service's ExecStopPost (python -m pb_linux --all-off, docs/linux.md).
#
# Buzzer: an active buzzer (its own oscillator) on a plain output: on while the core asks
# for any tone. The patterns keep their rhythm; the pitch is the buzzer's.
import threading

_RGB = b"\x00\x02\x01\x03\x04"     # feedback.LED_* -> RGB mask (bit 0 red, 1 green, 2 blue)


def thread_timer(ms, fn):
    # The failsafe timer: fn() after ms in a daemon thread; .cancel() stops it.
    t = threading.Timer(ms / 1000, fn)
    t.daemon = True
    t.start()
    return t


class Hardware:
    # board: the flat board.json dict; digitalio, pins: Blinka's digitalio and board
    # modules (or the virtual circuit's); keypad_class: Matrix_Keypad; timer(ms, fn).
    def __init__(self, board, digitalio, pins, keypad_class, timer=thread_timer):
        self._dio = digitalio
        self._pins = pins
        self._timer = timer
        self._lock = threading.Lock()
        comps = board["compartments"]
        self.n = len(comps)
        self._sol_on = board["solenoid_active"]
        self._sol_off = 1 - self._sol_on
        self._sols = tuple(self._output(c["solenoid"], self._sol_off) for c in comps)
        self._timers = [None] * self.n
        self._max_on = board["max_on_ms"]
        self._on = 0                # bit i: compartment i+1's solenoid is on
        self._latched = 0           # bit i: cut by the failsafe; off until told off
        self.tripped = 0

        kp = board["keypad"]
        nc = len(kp["cols"])
        keys = [[1 << (r * nc + c) for c in range(nc)] for r in range(len(kp["rows"]))]
        self._mk = keypad_class([self._pin(p) for p in kp["rows"]],
                                [self._pin(p) for p in kp["cols"]], keys)

        up = digitalio.Pull.UP
        pull = up if board["door_pull"] == "internal" else None
        self._doors = tuple(self._input(c["door"], pull) for c in comps)
        self._door_open = board["door_open_level"]
        self._tamper = None
        t = board.get("tamper")
        if t is not None:
            self._tamper = self._input(t, up if board["tamper_pull"] == "internal" else None)
        self._tamper_open = board.get("tamper_open_level", 1)

        self._led_on = board["led_active"]
        self._leds = tuple(self._output(p, 1 - self._led_on) for p in board["led"])
        self._led_now = 0
        self._buzzer = self._output(board["buzzer"], 0)
        self._hz_now = 0

    def _pin(self, name):
        p = getattr(self._pins, name, None)
        if p is None:
            raise ValueError("board.json names pin %s, which this board's `board` module lacks" % name)
        return self._dio.DigitalInOut(p)

    def _output(self, name, level):
        d = self._pin(name)
        d.switch_to_output(value=bool(level))
        return d

    def _input(self, name, pull):
        d = self._pin(name)
        d.switch_to_input(pull=pull)
        return d

    # One scan of the matrix through Matrix_Keypad: the frame bitmap (bit r*cols+c).
    def scan(self):
        bits = 0
        for b in self._mk.pressed_keys:
            bits |= b
        return bits

    # True if compartment comp's (1-based) door reads open: raw, undebounced.
    def door(self, comp):
        if comp < 1:
            raise IndexError("compartments count from 1")
        return int(self._doors[comp - 1].value) == self._door_open

    def tamper(self):
        if self._tamper is None:
            return None
        return int(self._tamper.value) == self._tamper_open

    # Drive compartment comp's solenoid; on arms its failsafe timer (max_on_ms). Once the
    # failsafe cut it, it stays off until called with False (as pb_esp32.hw).
    def solenoid(self, comp, on):
        if comp < 1:
            raise IndexError("compartments count from 1")
        i = comp - 1
        bit = 1 << i
        with self._lock:
            if on:
                if (self._on | self._latched) & bit:
                    return
                # the failsafe first: a timer that cannot start leaves the coil off
                self._timers[i] = self._timer(self._max_on, lambda: self._cut(i))
                self._on |= bit
                self._sols[i].value = bool(self._sol_on)
            else:
                self._latched &= ~bit
                if self._on & bit:
                    self._on &= ~bit
                    t = self._timers[i]
                    self._timers[i] = None
                    if t is not None:
                        t.cancel()
                self._sols[i].value = bool(self._sol_off)

    # The failsafe timer's callback: the pin off and a flag.
    def _cut(self, i):
        bit = 1 << i
        with self._lock:
            if self._on & bit:
                self._sols[i].value = bool(self._sol_off)
                self._on &= ~bit
                self._latched |= bit
                self.tripped |= bit

    def failsafe_tripped(self):
        with self._lock:
            t = self.tripped
            self.tripped = 0
        return t

    # led: a feedback.LED_* colour; hz: any tone turns the active buzzer on.
    def indicate(self, led, hz):
        if led != self._led_now:
            if led < 0 or led >= len(_RGB):
                raise ValueError("no such LED colour")
            self._led_now = led
            leds = self._leds
            mask = (1 if led else 0) if len(leds) == 1 else _RGB[led]
            for i in range(len(leds)):
                on = (mask >> i) & 1
                leds[i].value = bool(self._led_on if on else 1 - self._led_on)
        if hz != self._hz_now:
            self._hz_now = hz
            self._buzzer.value = hz > 0

    # Every solenoid, the LED and the buzzer off; failsafe timers stopped.
    def all_off(self):
        for i in range(self.n):
            self.solenoid(i + 1, False)
        self.indicate(0, 0)

    # Release every pin (a clean exit); solenoids and outputs go off first.
    def deinit(self):
        self.all_off()
        for p in self._sols + self._doors + self._leds + (self._buzzer,):
            p.deinit()
        if self._tamper is not None:
            self._tamper.deinit()
        for p in self._mk.row_pins + self._mk.col_pins:
            p.deinit()
