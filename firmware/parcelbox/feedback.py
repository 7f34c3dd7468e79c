# Language-free feedback: LED colour and buzzer patterns, and a sans-I/O Player.
# The port polls led(now) and hz(now) and drives the LED and the buzzer with the ints.
#
# Each pattern is a tuple of steps (led, buzzer_hz, duration_ms); buzzer_hz 0 = silent.
# They are told apart by colour alone (for the deaf or in street noise) and by sound
# alone (LED in sunlight): green = it worked, red = it did not, amber = wait, blue =
# technician. Rising tones mean yes, low long tones mean no (docs/keypad.md section 5).
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

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

_LOW = const(300)       # "no" tone
_MID = const(800)
_HIGH = const(1200)
_CLICK = const(2400)

PATTERNS = (
    # KEY: a 30 ms high click, LED untouched (off): fast typing stays crisp.
    ((LED_OFF, _CLICK, 30),),
    # ACCEPTED: green, rising two-tone, green held so the driver sees it while pulling.
    ((LED_GREEN, _MID, 150), (LED_GREEN, _HIGH * 3 // 2, 200), (LED_GREEN, 0, 1650)),
    # REJECTED: red, one low long buzz, red held.
    ((LED_RED, _LOW, 800), (LED_RED, 0, 700)),
    # THROTTLED: amber blinking, three short low beeps, then two silent blinks.
    ((LED_AMBER, _LOW, 120), (LED_OFF, 0, 120),
     (LED_AMBER, _LOW, 120), (LED_OFF, 0, 120),
     (LED_AMBER, _LOW, 120), (LED_OFF, 0, 120),
     (LED_AMBER, 0, 120), (LED_OFF, 0, 120),
     (LED_AMBER, 0, 120), (LED_OFF, 0, 120)),
    # BUSY: amber steady, two mid beeps.
    ((LED_AMBER, _MID, 100), (LED_AMBER, 0, 100), (LED_AMBER, _MID, 100),
     (LED_AMBER, 0, 900)),
    # ERROR: red fast blinking with a high/low warble (unlike REJECTED's steady red).
    ((LED_RED, _HIGH, 60), (LED_OFF, _LOW, 60), (LED_RED, _HIGH, 60), (LED_OFF, _LOW, 60),
     (LED_RED, _HIGH, 60), (LED_OFF, _LOW, 60), (LED_RED, 0, 60), (LED_OFF, 0, 60),
     (LED_RED, 0, 60), (LED_OFF, 0, 60), (LED_RED, 0, 60), (LED_OFF, 0, 60)),
    # CLEARED: falling two-tone, LED off: "undone", neither yes nor no.
    ((LED_OFF, _HIGH, 60), (LED_OFF, _MID, 90)),
    # SERVICE: blue steady, three rising tones.
    ((LED_BLUE, _MID, 100), (LED_BLUE, _HIGH, 100), (LED_BLUE, _HIGH * 4 // 3, 100),
     (LED_BLUE, 0, 1200)),
)

NAMES = ("key", "accepted", "rejected", "throttled", "busy", "error", "cleared", "service")


# Total length of pattern `p` in ms.
def duration(p):
    total = 0
    for step in PATTERNS[p]:
        total += step[2]
    return total


class Player:
    # Plays one pattern at a time; a new start() cuts the current one short.
    def __init__(self):
        self.pattern = -1       # pattern playing, -1 when idle
        self._steps = ()
        self._i = 0             # index of the current step
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
        self._steps = ()
        self._i = 0

    # Move past every step that has ended by `now`; step starts add up, so no drift.
    def _advance(self, now):
        steps = self._steps
        while self._i < len(steps):
            end = ticks.add(self._t0, steps[self._i][2])
            if not ticks.reached(now, end):
                return
            self._t0 = end
            self._i += 1
        self.pattern = -1

    # LED colour to show at `now` (LED_OFF when idle).
    def led(self, now):
        self._advance(now)
        if self._i < len(self._steps):
            return self._steps[self._i][0]
        return LED_OFF

    # Buzzer frequency in Hz at `now` (0 = silent, also when idle).
    def hz(self, now):
        self._advance(now)
        if self._i < len(self._steps):
            return self._steps[self._i][1]
        return 0

    # True when nothing is playing at `now`.
    def done(self, now):
        self._advance(now)
        return self._i >= len(self._steps)

    # Tick at which the current step ends (the port changes outputs then), or None.
    def next_deadline(self):
        if self._i >= len(self._steps):
            return None
        return ticks.add(self._t0, self._steps[self._i][2])
