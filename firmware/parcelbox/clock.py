# The box's wall clock (docs/box.md section 7): the newest trusted time as a floor, uptime on
# top, the slack power cuts may have taken, and which times to refuse. No I/O: the Box saves.
from parcelbox import events, ticks

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

# Every time source is held to this range; one that goes back more than _BACK_S below the
# newest trusted time is refused, and so is the network's time jumping more than _AHEAD_S
# ahead of a clock already trusted.
MIN_TIME = 1704067200      # 2024-01-01 (not const: above a small int on a 32-bit port)
MAX_TIME = 4102444800      # 2100-01-01, well below 2^32: every event's t fits its u32
_BACK_S = const(60)
_AHEAD_S = const(3600)
_REPORT_MS = const(600000)  # one time_refused event per 10 minutes; the rest counted
_DAY_MS = const(86400000)
_FLOOR_EVERY_MS = const(3600000)  # the floor saved hourly, with or without a time source
# Powered-on time can pass between two state saves (the hourly floor save, a late tick):
# the most a power cut can take from the clock. Each boot without a time source adds it to
# the slack; a time source takes the slack to 0. With a state copy lost, or a clock never
# trusted, the slack is unknown: every code with a not_after counts as ended.
SAVE_GAP_S = const(3660)
UNSURE = 0xFFFFFFFF


class Clock:
    # The clock of a box booting at tick `now`: untrusted, at 0, slack unknown until the
    # state file says otherwise (restore).
    def __init__(self, now):
        self.floor = 0  # newest wall-clock time ever trusted, epoch seconds
        self.saved = 0  # the floor as on flash
        self.slack = UNSURE  # seconds wall() may lag the time known before power cuts
        self.trusted = False
        self.next_save = now  # tick of the next hourly floor save
        self._base = 0  # wall() is _base at tick _tick plus the uptime since
        self._tick = now
        self._tr_tick = None  # time_refused: last report, refusals since
        self._tr_count = 0

    # At boot, from a state copy: its floor and slack. `sound`: no copy was damaged or
    # missing (else the other copy's floor can be any time behind: the slack stays unknown).
    def restore(self, floor, slack, sound):
        self.floor = self.saved = floor
        if sound and floor >= MIN_TIME and slack != UNSURE:
            # this boot lost the powered-on time since that save: at most SAVE_GAP_S more
            self.slack = min(slack + SAVE_GAP_S, UNSURE)
        if floor > MAX_TIME:
            self.floor = MAX_TIME
        self._base = self.floor

    # Current epoch seconds: trusted, or estimated from the newest time the box ever trusted
    # plus uptime (a lower bound of the true time); never below it, never above MAX_TIME.
    def wall(self, now):
        t = self._base + ticks.diff(now, self._tick) // 1000
        if t < self.floor:
            t = self.floor
        return t if t < MAX_TIME else MAX_TIME

    # True if a window ending at `na` (epoch s; 0: none) may have closed by wall time `w`:
    # past it, or, while the time lost in power cuts since the last time source is not
    # known (slack), possibly past it. Such a code is refused, never removed (the sweep
    # goes by the clock alone): a time source lets it open again if it is still valid.
    def ended(self, na, w):
        if not na:
            return False
        s = self.slack
        return w > na or s != 0 and (s == UNSURE or w + s > na)

    # Why time `t` from `source` must be refused at wall time `w` (events.CLOCK_*), or 0:
    # out of range, going back, or (the network's, on a trusted clock) jumping far ahead.
    def check(self, t, w, source):
        if type(t) is not int or not MIN_TIME <= t <= MAX_TIME:
            return events.CLOCK_RANGE
        if t < w - _BACK_S:
            return events.CLOCK_BACK
        if source == events.TIME_NET and self.trusted and t > w + _AHEAD_S:
            return events.CLOCK_AHEAD
        return 0

    # Take time `t` (checked) at tick `now`, wall time `w`. `fresh`: for the backend's
    # time, the seconds since the box published the summary the command answers, or -1.
    # The caller then raises the floor (the clock may have jumped: the sweep comes soon).
    def take(self, t, w, now, source, fresh):
        if w > self.floor:
            self.floor = w  # a step back within the tolerance never lowers wall()
        # The slack keeps the latest time the box may have known: a time taken below it (a
        # spoofed SNTP answer after a reboot without time, a backend `time` the broker held
        # for a while) still refuses the codes that ended before it. The shell's time is
        # believed, and so is any when the slack is unknown. The backend's time answering
        # the box's latest summary (`fresh`) was made after that summary: the box can have
        # known at most `fresh` seconds more than it says.
        s = self.slack
        if s == UNSURE or source == events.TIME_SHELL or w + s <= t:
            s = 0
        else:
            s = w + s - (t if t > w else w)
        if source == events.TIME_CMD and 0 <= fresh < s:
            s = fresh
        self.slack = s
        self._base = t
        self._tick = now
        self.trusted = True
        self.next_save = now

    # A refused time at tick `now`: the refusals before it since the last report, to report
    # now (then reported()), or -1 while the last report is under 10 minutes old.
    def refusal(self, now):
        self._tr_count += 1
        if self._tr_tick is not None and 0 <= ticks.diff(now, self._tr_tick) < _REPORT_MS:
            return -1
        self._tr_tick = now
        return min(self._tr_count - 1, 0xFFFFFF)

    # The refusal report is on flash: counting starts again.
    def reported(self):
        self._tr_count = 0

    # A new core built in the same power-on (settings changed) takes over the old one's
    # clock: its time, whether it is trusted, and its slack. Nothing is lost, nothing
    # gained (a restart is not a time source).
    def take_over(self, old, now):
        if old.floor > self.floor:
            self.floor = old.floor
        self._base = old._base  # exactly: a whole second taken now would lose
        self._tick = old._tick  # the part of a second already passed
        self.trusted = old.trusted
        self.slack = old.slack
        self.next_save = now

    # Time passes: keeps tick differences small (a day at most). True when the hourly
    # floor save is due.
    def tick(self, now):
        if ticks.diff(now, self._tick) > _DAY_MS:
            self._base = self.wall(now)
            self._tick = now
        if ticks.reached(now, self.next_save):
            self.next_save = ticks.add(now, _FLOOR_EVERY_MS)
            return True
        return False

    # The floor to wall time `w` if that is newer than the floor on flash; True if the
    # state must be saved for it.
    def advance(self, w):
        if w > self.saved:
            self.floor = w
            return True
        return False

    # Before a state save at tick `now`: every save keeps the clock's newest time as the
    # floor, not only the hourly ones.
    def catch_up(self, now):
        w = self.wall(now)
        if w > self.floor:
            self.floor = w
