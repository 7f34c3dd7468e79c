"""The simulator's virtual hardware: the circuit around the chip, on the host.

The same electrical model as the test fakes (tests/fakes/fakeworld.py, which the
simulator cannot import: host_tools ships without tests/), reduced to what the box
has: a matrix keypad scanned the way the ESP32 port scans it (rows open-drain, driven
low one at a time; columns with pull-ups; a pressed key joins its row to its column,
so three keys at the corners of a rectangle make a ghost at the fourth), contacts
that chatter for bounce_ms after every change, door and tamper switches to GND with
pull-ups, solenoids behind a max-on failsafe, and the LED and buzzer. Times are world
milliseconds (ints). tests/test_sim.py checks that the scan here equals
pb_esp32.hw.Hardware.scan over the fakes, press for press.
"""

from __future__ import annotations

from dataclasses import dataclass

LED_NAMES = ("off", "green", "red", "amber", "blue")  # feedback.LED_* in the firmware


class Keypad:
    """A rows x cols key matrix with bouncing contacts."""

    def __init__(self, rows: int, cols: int, layout: str, bounce_ms: int = 5):
        if rows * cols > 30 or len(layout) != rows * cols:
            raise ValueError("keypad: layout must have rows*cols (at most 30) keys")
        self.nr, self.nc, self.layout = rows, cols, layout
        self.bounce_ms = bounce_ms
        n = rows * cols
        self.down = [-1] * n   # world time of the last press, -1 never
        self.up = [-1] * n     # world time of the release after it, -1 still held

    def index(self, key: str | tuple[int, int]) -> int:
        if isinstance(key, tuple):
            r, c = key
            if not (0 <= r < self.nr and 0 <= c < self.nc):
                raise ValueError(f"keypad: no key at {key!r}")
            return r * self.nc + c
        if len(key) != 1 or key not in self.layout:
            raise ValueError(f"keypad: no key {key!r} on layout {self.layout}")
        return self.layout.index(key)

    def press(self, key, t: int) -> None:
        k = self.index(key)
        self.down[k], self.up[k] = t, -1

    def release(self, key, t: int) -> None:
        k = self.index(key)
        if self.down[k] >= 0 and self.up[k] < 0:
            self.up[k] = t

    def release_all(self, t: int) -> None:
        for k in range(len(self.down)):
            if self.down[k] >= 0 and self.up[k] < 0:
                self.up[k] = t

    def held(self) -> str:
        return "".join(self.layout[k] for k in range(len(self.down))
                       if self.down[k] >= 0 and self.up[k] < 0)

    # Contact k at time t, 1 closed: the fakes' deterministic chatter, spike for spike.
    def _contact(self, k: int, t: int) -> int:
        d = self.down[k]
        if d < 0 or t < d:
            return 0
        u, b = self.up[k], self.bounce_ms
        if u < 0 or t < u:
            e = t - d
            return 0 if e < b and (e + k) % 3 == 2 else 1
        e = t - u
        return 1 if e < b and (e + k) % 3 == 1 else 0

    def closed(self, t: int) -> int:
        """Bitmap of closed contacts (bit r*cols+c)."""
        return sum(1 << k for k in range(len(self.down)) if self._contact(k, t))

    def scan(self, t: int) -> int:
        """The frame the firmware's scan reads at t: bit r*cols+c set when column c reads
        low while row r is driven low, i.e. when c is joined to r through closed contacts."""
        k = self.closed(t)
        nr, nc = self.nr, self.nc
        frame = 0
        for r in range(nr):
            rows, cols = 1 << r, 0
            while True:  # grow row r's net through the closed contacts
                grown_c = cols
                for rr in range(nr):
                    if rows >> rr & 1:
                        for c in range(nc):
                            if k >> (rr * nc + c) & 1:
                                grown_c |= 1 << c
                grown_r = rows
                for c in range(nc):
                    if grown_c >> c & 1:
                        for rr in range(nr):
                            if k >> (rr * nc + c) & 1:
                                grown_r |= 1 << rr
                if grown_c == cols and grown_r == rows:
                    break
                rows, cols = grown_r, grown_c
            for c in range(nc):
                if cols >> c & 1:
                    frame |= 1 << (r * nc + c)
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
        self.keypad = Keypad(rows, cols, layout, bounce_ms) if rows * cols else Keypad(0, 0, "")
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
