# Lock and door controller of one compartment: a fail-secure solenoid pulse with a
# hard on-time cap and cool-down, and a debounced door sensor. Sans-I/O; see docs/lock.md.
from parcelbox import ticks

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

HARD_MAX_ON_MS = const(5000)   # no configuration may energise the solenoid longer
_MIN_PULSE_MS = const(50)
_MAX_SPAN_MS = const(0x10000000)  # every duration stays far below the 2**29 ticks horizon

# Events returned by door() and tick(); equal to the parcelbox.events kinds of the same name.
NONE = const(0)
OPENED = const(2)      # door opened after an unlock (authorised)
CLOSED = const(3)      # door closed again
FORCED = const(8)      # door opened while locked with no unlock pending
LEFT_OPEN = const(9)   # door open longer than left_open_ms (once per opening)
NOT_OPENED = const(10)  # unlocked but the door never opened: relocked, give the use back

# unlock() results
STARTED = const(1)     # solenoid on now
QUEUED = const(2)      # cooling down; the pulse starts by itself when the cool-down ends
REFUSED = const(3)     # door open, or an unlock is already in progress
COOLING = const(4)     # refused: the cool-down would outlast the open window

# States
LOCKED = const(0)      # door closed, solenoid off
PULSING = const(1)     # solenoid energised
RELEASED = const(2)    # pulse over, waiting for the door to open within open_window_ms
OPEN = const(3)        # door open (debounced)
WAITING = const(4)     # unlock accepted, waiting for the cool-down before the pulse


# True while `deadline` lies in (now, now + span]: the only comparison used, so a call
# that is absurdly late (ticks wrapped) reads as "expired", never as "far in the future".
def _pending(now, deadline, span):
    d = ticks.diff(deadline, now)
    return 0 < d <= span


# Configuration check with a message a technician understands.
def _check(name, value, lo, hi):
    if type(value) is not int:
        raise ValueError("lock: %s must be an int" % name)
    if value < lo or value > hi:
        raise ValueError("lock: %s=%d out of range %d..%d" % (name, value, lo, hi))


class Compartment:
    # Validate the timing; the solenoid starts off and the door state starts unknown.
    def __init__(self, index, pulse_ms=700, max_on_ms=2000, cooldown_ms=3000,
                 open_window_ms=10000, left_open_ms=120000, door_debounce_ms=50,
                 door_open_at_boot=False):
        _check("index", index, 0, 255)
        _check("max_on_ms", max_on_ms, _MIN_PULSE_MS, HARD_MAX_ON_MS)
        _check("pulse_ms", pulse_ms, _MIN_PULSE_MS, max_on_ms)
        if type(cooldown_ms) is int and cooldown_ms < pulse_ms * 3:
            raise ValueError("lock: cooldown_ms=%d must be at least 3 * pulse_ms = %d"
                             " (solenoid duty cycle <= 25%%)" % (cooldown_ms, pulse_ms * 3))
        _check("cooldown_ms", cooldown_ms, pulse_ms * 3, _MAX_SPAN_MS)
        _check("open_window_ms", open_window_ms, 1, _MAX_SPAN_MS)
        _check("left_open_ms", left_open_ms, 1, _MAX_SPAN_MS)
        _check("door_debounce_ms", door_debounce_ms, 0, 60000)
        if door_open_at_boot is not True and door_open_at_boot is not False:
            raise ValueError("lock: door_open_at_boot must be a bool")
        self.index = index
        self.pulse_ms = pulse_ms
        self.max_on_ms = max_on_ms
        self.cooldown_ms = cooldown_ms
        self.open_window_ms = open_window_ms
        self.left_open_ms = left_open_ms
        self.door_debounce_ms = door_debounce_ms
        self.door_open = door_open_at_boot   # debounced; an assumption until door_known
        self.door_known = False              # set by the first stable sample
        self.state = OPEN if door_open_at_boot else LOCKED
        self.code_id = 0
        self.authorised = False
        self._on_at = 0        # pulse start
        self._off_at = 0       # pulse end (start + pulse_ms, or the early cut)
        self._window_end = 0   # PULSING/RELEASED: door opens by then; WAITING: pulse starts
        self._cool_until = 0
        self._cooling = False
        self._left_at = 0      # OPEN: LEFT_OPEN due then
        self._left_done = True
        self._raw = -1         # last raw sample (-1: none yet)
        self._raw_since = 0

    # Ask for an unlock with an authorised code: STARTED, QUEUED, REFUSED or COOLING.
    def unlock(self, now, code_id=0):
        if self.state != LOCKED or self.door_open:
            return REFUSED
        if self._cooling and _pending(now, self._cool_until, self.cooldown_ms):
            if ticks.diff(self._cool_until, now) >= self.open_window_ms:
                return COOLING   # the pulse could never start inside the window
            self.state = WAITING
            self.code_id = code_id
            self.authorised = False
            self._window_end = ticks.add(now, self.open_window_ms)
            return QUEUED
        self._cooling = False
        self.code_id = code_id
        self.authorised = False
        self._start_pulse(now)
        return STARTED

    # True when nothing is under way: locked, the door shut, the cool-down over. Only
    # then may the shell replace this Compartment (new settings) without losing an
    # unlock in progress or cutting a cool-down short.
    def at_rest(self, now):
        return (self.state == LOCKED and not self.door_open
                and not (self._cooling and _pending(now, self._cool_until, self.cooldown_ms)))

    # Level to drive the solenoid pin to now; ends an overdue pulse even if tick() is late.
    def energised(self, now):
        if self.state != PULSING:
            return False
        if _pending(now, self._off_at, ticks.diff(self._off_at, self._on_at)):
            return True
        self._end_pulse(now)
        return False

    # Feed one raw door sample (True = open) taken at `now`; returns a door event or NONE.
    def door(self, is_open, now):
        if is_open is True or is_open == 1:
            raw = 1
        elif is_open is False or is_open == 0:
            raw = 0
        else:
            raise ValueError("lock: door sample must be a bool")
        if raw != self._raw:
            self._raw = raw
            self._raw_since = now
        is_open = raw == 1
        if self.door_known and is_open == self.door_open:
            return NONE
        if _pending(now, ticks.add(self._raw_since, self.door_debounce_ms),
                    self.door_debounce_ms):
            return NONE   # not stable long enough yet
        return self._commit(is_open, now)

    # Time-driven work: pulse end, queued pulse start, open window, left-open alarm.
    def tick(self, now):
        if self._cooling and not _pending(now, self._cool_until, self.cooldown_ms):
            self._cooling = False
        st = self.state
        if st == PULSING:
            if self.energised(now):
                return NONE
            st = self.state
        if st == RELEASED:
            if not _pending(now, self._window_end, self.open_window_ms):
                self.state = LOCKED
                return NOT_OPENED
        elif st == WAITING:
            if not _pending(now, self._window_end, self.open_window_ms):
                self.state = LOCKED
                return NOT_OPENED
            if not self._cooling:
                self._start_pulse(now)
        elif st == OPEN:
            if not self._left_done and not _pending(now, self._left_at, self.left_open_ms):
                self._left_done = True
                return LEFT_OPEN
        return NONE

    # Earliest tick at which tick()/energised()/door() must run again, or None.
    def next_deadline(self, now):
        best = None
        st = self.state
        if st == PULSING:
            best = self._off_at
        elif st == RELEASED:
            best = self._window_end
        elif st == WAITING:
            best = self._cool_until
            if ticks.diff(self._window_end, best) < 0:
                best = self._window_end
        elif st == OPEN and not self._left_done:
            best = self._left_at
        if self._raw >= 0 and (not self.door_known or (self._raw == 1) != self.door_open):
            t = ticks.add(self._raw_since, self.door_debounce_ms)
            if best is None or ticks.diff(t, best) < 0:
                best = t
        return best

    # Solenoid on from `now`; the open window runs from the pulse start.
    def _start_pulse(self, now):
        self.state = PULSING
        self._on_at = now
        self._off_at = ticks.add(now, self.pulse_ms)   # pulse_ms <= max_on_ms <= HARD_MAX_ON_MS
        self._window_end = ticks.add(now, self.open_window_ms)

    # The pin goes low at `now` (time-out or early cut); cool down from that moment.
    def _end_pulse(self, now):
        self.state = RELEASED
        self._off_at = now
        self._cool_until = ticks.add(now, self.cooldown_ms)
        self._cooling = True

    # A debounced door change (or the first stable sample after boot).
    def _commit(self, is_open, now):
        first = not self.door_known
        self.door_known = True
        st = self.state
        if first and (is_open == self.door_open
                      or (st != PULSING and st != RELEASED and st != WAITING)):
            # The first stable sample sets the door state without an event.
            self.door_open = is_open
            if is_open:
                self._opened(now)
                self.authorised = False
                self.code_id = 0
            elif st == OPEN:
                self.state = LOCKED
            return NONE
        self.door_open = is_open
        if not is_open:
            self.state = LOCKED
            return CLOSED
        if st == PULSING:
            self._end_pulse(now)   # cut the solenoid as soon as the door is seen open
        self._opened(now)
        if st == PULSING or st == RELEASED or st == WAITING:
            self.authorised = True
            return OPENED
        self.authorised = False
        self.code_id = 0
        return FORCED

    # The door is open from `now`: arm the left-open alarm.
    def _opened(self, now):
        self.state = OPEN
        self._left_at = ticks.add(now, self.left_open_ms)
        self._left_done = False
