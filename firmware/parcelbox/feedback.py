# Language-free feedback: LED colour and buzzer patterns, and a sans-I/O Player.
# The port polls led(now) and hz(now) and drives the LED and the buzzer with the ints.
#
# They are told apart by colour alone (for the deaf or in street noise) and by sound
# alone (LED in sunlight): green = it worked, red = it did not, amber = wait, blue =
# technician. Rising tones mean yes, low long tones mean no (docs/keypad.md section 5).
try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

from parcelbox import ticks

KEY = const(0)          # a key was taken: short click
ACCEPTED = const(1)     # code good, door unlocked
REJECTED = const(2)     # wrong, short or abandoned code
THROTTLED = const(3)    # too many wrong codes: locked out for a while
BUSY = const(4)         # code good but the box cannot act now (cooling, occupied)
ERROR = const(5)        # fault in the box (storage, solenoid): call service
CLEARED = const(6)      # entry cleared by '*' or timed out
SERVICE = const(7)      # technician mode entered

LED_OFF = const(0)
LED_GREEN = const(1)
LED_RED = const(2)
LED_AMBER = const(3)
LED_BLUE = const(4)

# Each pattern is bytes of 3-byte steps: LED colour, buzzer Hz / 20 (0 = silent),
# duration ms / 10. Bytes, not tuples of tuples, so the table costs ~160 bytes of RAM.
# Tones: 300 Hz low ("no"), 800 mid, 1200 high, 1800 higher, 1600, 2400 click.
PATTERNS = (
    # KEY: a 30 ms high click, LED untouched (off): fast typing stays crisp.
    b"\x00\x78\x03",
    # ACCEPTED: green, rising two-tone, green held so the driver sees it while pulling.
    b"\x01\x28\x0f\x01\x5a\x14\x01\x00\xa5",
    # REJECTED: red, one low long buzz, red held.
    b"\x02\x0f\x50\x02\x00\x46",
    # THROTTLED: amber blinking, three short low beeps, then two silent blinks.
    b"\x03\x0f\x0c\x00\x00\x0c\x03\x0f\x0c\x00\x00\x0c\x03\x0f\x0c\x00\x00\x0c"
    b"\x03\x00\x0c\x00\x00\x0c\x03\x00\x0c\x00\x00\x0c",
    # BUSY: amber steady, two mid beeps.
    b"\x03\x28\x0a\x03\x00\x0a\x03\x28\x0a\x03\x00\x5a",
    # ERROR: red fast blinking with a high/low warble (unlike REJECTED's steady red).
    b"\x02\x3c\x06\x00\x0f\x06\x02\x3c\x06\x00\x0f\x06\x02\x3c\x06\x00\x0f\x06"
    b"\x02\x00\x06\x00\x00\x06\x02\x00\x06\x00\x00\x06\x02\x00\x06\x00\x00\x06",
    # CLEARED: falling two-tone, LED off: "undone", neither yes nor no.
    b"\x00\x3c\x06\x00\x28\x09",
    # SERVICE: blue steady, three rising tones.
    b"\x04\x28\x0a\x04\x3c\x0a\x04\x50\x0a\x04\x00\x78",
)

NAMES = ("key", "accepted", "rejected", "throttled", "busy", "error", "cleared", "service")


# Pattern `p` as a list of (led, hz, ms) steps, for tools and tests.
def steps(p):
    b = PATTERNS[p]
    return [(b[i], b[i + 1] * 20, b[i + 2] * 10) for i in range(0, len(b), 3)]


# Total length of pattern `p` in ms.
def duration(p):
    b = PATTERNS[p]
    total = 0
    for i in range(2, len(b), 3):
        total += b[i] * 10
    return total


class Player:
    # Plays one pattern at a time; a new start() cuts the current one short.
    def __init__(self):
        self.pattern = -1       # pattern playing, -1 when idle
        self._steps = b""
        self._i = 0             # byte offset of the current step
        self._t0 = 0            # tick at which the current step began
        self._fresh = -1        # last pattern started and not yet taken

    # Begin pattern `pattern` (one of the constants above) at tick `now`.
    def start(self, pattern, now):
        if not isinstance(pattern, int) or not 0 <= pattern < len(PATTERNS):
            raise ValueError("unknown feedback pattern")
        self.pattern = pattern
        self._fresh = pattern
        self._steps = PATTERNS[pattern]
        self._i = 0
        self._t0 = now

    # The pattern started since the last take(), or -1: for logs and tests.
    def take(self):
        p = self._fresh
        self._fresh = -1
        return p

    # Silence: LED off, buzzer off, idle.
    def stop(self):
        self.pattern = -1
        self._steps = b""
        self._i = 0

    # Move past every step that has ended by `now`; step starts add up, so no drift.
    def _advance(self, now):
        steps = self._steps
        while self._i < len(steps):
            end = ticks.add(self._t0, steps[self._i + 2] * 10)
            if not ticks.reached(now, end):
                return
            self._t0 = end
            self._i += 3
        self.pattern = -1

    # LED colour to show at `now` (LED_OFF when idle).
    def led(self, now):
        self._advance(now)
        if self._i < len(self._steps):
            return self._steps[self._i]
        return LED_OFF

    # Buzzer frequency in Hz at `now` (0 = silent, also when idle).
    def hz(self, now):
        self._advance(now)
        if self._i < len(self._steps):
            return self._steps[self._i + 1] * 20
        return 0

    # True when nothing is playing at `now`.
    def done(self, now):
        self._advance(now)
        return self._i >= len(self._steps)

    # Tick at which the current step ends (the port changes outputs then), or None;
    # given `now`, steps that have ended by then are passed first (never a past tick).
    def next_deadline(self, now=None):
        if now is not None:
            self._advance(now)
        if self._i >= len(self._steps):
            return None
        return ticks.add(self._t0, self._steps[self._i + 2] * 10)
