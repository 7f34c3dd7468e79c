"""The simulator's virtual hardware: the circuit around the chip, on the host.

The same electrical model as the test fakes (host_tools/virtual/fakeworld.py, which the
simulator cannot import: host_tools ships without tests/), reduced to what the box
has: a matrix keypad, the virtual circuit of host_tools/virtual/keycircuit.py (the one keypad
model the linux port's and the scanners' tests use too), scanned the way the ESP32 port
scans it (rows open-drain, driven low one at a time; columns with pull-ups; a pressed
key joins its row to its column, so three keys at the corners of a rectangle make a
ghost at the fourth), contacts that chatter for bounce_ms after every change, door
and tamper switches to GND with pull-ups, solenoids behind a max-on failsafe, and the
LED and buzzer. Times are world milliseconds (ints). tests/ports/test_sim.py checks that the scan here equals
pb_esp32.hw.Hardware.scan over the fakes, press for press.
"""

from __future__ import annotations

from dataclasses import dataclass

from host_tools.virtual import keycircuit

LED_NAMES = ("off", "green", "red", "amber", "blue")  # feedback.LED_* in the firmware


class Keypad(keycircuit.Circuit):
    """A rows x cols key matrix with bouncing contacts: the virtual circuit of
    host_tools/virtual/keycircuit.py (one keypad model for the sim, the linux port and the scanner
    tests: nets through closed contacts, pull-ups, ghosts), with the fakes' deterministic
    chatter instead of the seeded one, and the frame read as the ESP32 port's scan reads it.
    Times are world ms passed in (press(key, t), scan(t))."""

    def __init__(self, rows: int, cols: int, layout: str, bounce_ms: int = 5):
        if rows * cols > 30 or len(layout) != rows * cols:
            raise ValueError("keypad: layout must have rows*cols (at most 30) keys")
        self._t = 0
        self.empty = rows * cols == 0           # a board without a keypad: scan() is 0
        self.nr, self.nc = rows, cols
        if self.empty:
            return
        super().__init__([("row", r) for r in range(rows)], [("col", c) for c in range(cols)], layout,
                         lambda: self._t, bounce_ms)
        keycircuit.use(self)
        pin = keycircuit.Pin
        # as pb_esp32.hw sets them up: rows open-drain released, columns pulled up
        self._rows = [pin(("row", r), pin.OPEN_DRAIN, value=1) for r in range(rows)]
        self._cols = [pin(("col", c), pin.IN, pin.PULL_UP) for c in range(cols)]

    def index(self, key: str | tuple[int, int]) -> int:
        if isinstance(key, tuple):
            r, c = key
            if not (0 <= r < self.nr and 0 <= c < self.nc):
                raise ValueError(f"keypad: no key at {key!r}")
            return r * self.nc + c
        lay = "" if self.empty else self.layout.decode()
        if len(key) != 1 or key not in lay:
            raise ValueError(f"keypad: no key {key!r} on layout {lay}")
        return lay.index(key)

    def press(self, key, t: int) -> None:
        super().press(key, t)

    def release(self, key, t: int) -> None:
        super().release(key, t)

    def release_all(self, t: int) -> None:
        if not self.empty:
            super().release_all(t)

    def held(self) -> str:
        return "" if self.empty else super().held().decode()

    # Contact k at time t, 1 closed: the fakes' deterministic chatter, spike for spike
    # (host_tools/virtual/fakeworld.py), so the sim reads as pb_esp32.hw reads the fakes.
    def _contact(self, k: int, t: int) -> int:
        if not self._used[k]:
            return 0
        e = t - self._at[k]
        if e < 0:
            return self._prev[k]
        b = self.bounce_ms
        if self._state[k]:
            return 0 if e < b and (e + k) % 3 == 2 else 1
        return 1 if e < b and (e + k) % 3 == 1 else 0

    def closed_at(self, t: int) -> int:
        """Bitmap of closed contacts (bit r*cols+c) at t."""
        if self.empty:
            return 0
        self._t = t
        return self.closed()

    def scan(self, t: int) -> int:
        """The frame the firmware's scan reads at t: each row driven low in turn, the
        columns read through the circuit (bit r*cols+c set when column c reads 0). The
        ESP32 port reads fewer pins for the same frame (tests/ports/test_sim.py compares)."""
        if self.empty:
            return 0
        self._t = t
        frame = 0
        k = 0
        for row in self._rows:
            row(0)
            for col in self._cols:
                if not col():
                    frame |= 1 << k
                k += 1
            row(1)
        return frame


class Switch:
    """A switch to GND on a pulled-up pin (door reed, tamper): closed reads 0, open 1,
    with bounce_ms of chatter after a change."""

    def __init__(self, closed: bool = True, bounce_ms: int = 5):
        self.state = 1 if closed else 0
        self.prev = self.state
        self.at = -1_000_000
        self.bounce_ms = bounce_ms

    def set(self, closed: bool, t: int) -> None:
        self.prev = self.closed_at(t)
        self.state = 1 if closed else 0
        self.at = t

    def closed_at(self, t: int) -> int:
        if t < self.at:
            return self.prev
        e = t - self.at
        if e < self.bounce_ms and e % 2 == 1:
            return self.prev
        return self.state

    def level(self, t: int) -> int:
        return 0 if self.closed_at(t) else 1


@dataclass
class Pulse:
    comp: int             # compartment, from 1
    start: int            # world ms the solenoid was energised
    end: int | None = None  # world ms it was released (None: still on)
    cut: bool = False     # ended by the failsafe, not by the firmware

    @property
    def ms(self) -> int | None:
        return None if self.end is None else self.end - self.start


class Solenoids:
    """Each compartment's solenoid with the board's hardware failsafe: on longer than
    max_on_ms, it is cut, and stays off until the firmware turns it off (as
    pb_esp32.hw does with its one-shot timers)."""

    def __init__(self, n: int, max_on_ms: int):
        self.n, self.max_on_ms = n, max_on_ms
        self.pulses: list[Pulse] = []
        self._on: list[Pulse | None] = [None] * n
        self._latched = 0
        self.trips = 0

    def drive(self, bits: int, t: int) -> None:
        self.check(t)
        for i in range(self.n):
            if bits >> i & 1:
                if self._on[i] is None and not self._latched >> i & 1:
                    p = Pulse(i + 1, t)
                    self.pulses.append(p)
                    self._on[i] = p
            else:
                self._latched &= ~(1 << i)
                if self._on[i] is not None:
                    self._on[i].end = t
                    self._on[i] = None

    def check(self, t: int) -> None:
        """The failsafe: cut, at its exact time, every solenoid on for max_on_ms by t."""
        for i, p in enumerate(self._on):
            if p is not None and t - p.start >= self.max_on_ms:
                p.end, p.cut = p.start + self.max_on_ms, True
                self._on[i] = None
                self._latched |= 1 << i
                self.trips += 1

    def energised(self, comp: int) -> bool:
        return self._on[comp - 1] is not None

    def off(self, t: int) -> None:
        """Power gone or a reset: every gate falls, the failsafe latches clear."""
        self.check(t)
        for i, p in enumerate(self._on):
            if p is not None:
                p.end = t
                self._on[i] = None
        self._latched = 0


class Circuit:
    """The board's circuit built from its board.json dict (docs/boards.md)."""

    def __init__(self, board: dict | None, bounce_ms: int = 5):
        self.board = board
        kp = (board or {}).get("keypad") or {}
        rows, cols = len(kp.get("rows") or ()), len(kp.get("cols") or ())
        layout = kp.get("layout") or ""
        self.keypad = Keypad(rows, cols, layout, bounce_ms)
        comps = (board or {}).get("compartments") or []
        self.door_open_level = (board or {}).get("door_open_level", 1)
        self.doors = [Switch(True, bounce_ms) for _ in comps]   # closed: the door is shut
        self.tamper = Switch(True, bounce_ms) if (board or {}).get("tamper") is not None else None
        self.tamper_open_level = (board or {}).get("tamper_open_level", 1)
        self.solenoids = Solenoids(len(comps), (board or {}).get("max_on_ms", 2000))
        self.led = 0
        self.hz = 0
        self.feedback: list[tuple[int, int, int]] = []   # (world ms, led, hz) on each change

    def doors_open(self, t: int) -> int:
        """Bitmap of doors that read open (bit comp-1): raw, bouncing."""
        return sum(1 << i for i, d in enumerate(self.doors) if d.level(t) == self.door_open_level)

    def tamper_open(self, t: int) -> int:
        """-1 without a tamper switch, else 1 open, 0 closed."""
        if self.tamper is None:
            return -1
        return 1 if self.tamper.level(t) == self.tamper_open_level else 0

    def indicate(self, led: int, hz: int, t: int) -> None:
        if (led, hz) != (self.led, self.hz):
            self.led, self.hz = led, hz
            self.feedback.append((t, led, hz))

    def power_off(self, t: int) -> None:
        self.solenoids.off(t)
        self.indicate(0, 0, t)
