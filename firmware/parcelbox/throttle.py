# The guess throttle: lockouts after consecutive wrong codes plus a daily budget of
# wrong guesses sized so that hitting any active code takes years. Pure, integers only.
import struct

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

from parcelbox import ticks

DAY_MS = const(86400000)
_VERSION = const(1)
_FMT = "<BBHIII"  # version, reserved 0, consecutive, daily cap, tokens, ms toward next token
STATE_LEN = const(16)
_MAX_COUNT = const(0xFFFF)
# 10 years of 365.25 days plus the day the full bucket is worth: 4 * (365.25 * T + 1) = 1461 * T + 4
_QDAYS_PER_YEAR = const(1461)


def _check_len(code_len):
    if not isinstance(code_len, int) or code_len < 4 or code_len > 8:
        raise ValueError("code length must be 4..8")


def _check_active(active):
    if not isinstance(active, int) or active < 0:
        raise ValueError("active codes must be an integer >= 0")


# Wrong guesses allowed per day (and the bucket's capacity) with `active` codes of
# `code_len` digits: the largest c with (10^L + 1) / ((K + 1) c) - 1 >= 365.25 * years
# days, i.e. the expected time to a first hit, even after spending a full bucket at once,
# is at least `years`. Never below 1: see docs/throttle.md for when that falls short.
def daily_cap(active, code_len, years=10):
    _check_active(active)
    _check_len(code_len)
    if not isinstance(years, int) or years < 1:
        raise ValueError("years must be an integer >= 1")
    c = 4 * (10 ** code_len + 1) // ((active + 1) * (_QDAYS_PER_YEAR * years + 4))
    return c if c > 1 else 1


# Whole days (rounded down) that an attacker allowed `per_day` wrong guesses a day,
# starting with a full bucket of `per_day`, needs on average to hit one of `active` codes.
def expected_days_to_hit(active, code_len, per_day):
    _check_active(active)
    _check_len(code_len)
    if not isinstance(per_day, int) or per_day < 1:
        raise ValueError("per_day must be an integer >= 1")
    # E[guesses] = (N + 1) / (K + 1); the first per_day are free, then per_day a day.
    d = per_day * (active + 1)
    n = 10 ** code_len + 1 - d
    return n // d if n > 0 else 0


# Tenths of a year (rounded down) that the same attacker needs on average.
def expected_tenth_years(active, code_len, per_day):
    expected_days_to_hit(active, code_len, per_day)  # validates
    d = per_day * (active + 1)
    n = 10 ** code_len + 1 - d
    return 40 * n // (_QDAYS_PER_YEAR * d) if n > 0 else 0


# Rows for the docs table: (active, [(daily cap, tenths of years to a first hit)
# for each code length]).
def table_rows(actives, lengths, years=10):
    rows = []
    for k in actives:
        cells = []
        for n in lengths:
            c = daily_cap(k, n, years)
            cells.append((c, expected_tenth_years(k, n, c)))
        rows.append((k, cells))
    return rows


# Milliseconds per token at `cap` tokens a day, rounded up: never faster than the cap.
def _interval(cap):
    return (DAY_MS + cap - 1) // cap


class Throttle:
    def __init__(self, code_len=6, free_tries=5, base_ms=30000, max_ms=900000,
                 target_years=10):
        _check_len(code_len)
        if not isinstance(free_tries, int) or free_tries < 0 or free_tries > 255:
            raise ValueError("free tries must be 0..255")
        if not isinstance(base_ms, int) or base_ms < 1 or base_ms > DAY_MS:
            raise ValueError("lockout base must be 1..86400000 ms")
        if not isinstance(max_ms, int) or max_ms < base_ms or max_ms > DAY_MS:
            raise ValueError("lockout max must be base..86400000 ms")
        if not isinstance(target_years, int) or target_years < 1 or target_years > 1000:
            raise ValueError("target years must be 1..1000")
        self.code_len = code_len
        self.free_tries = free_tries
        self.base_ms = base_ms
        self.max_ms = max_ms
        self.years = target_years
        self.dirty = False  # persisted fields changed since the last dump()
        self.clear(0)
        self.dirty = False

    # Back to a fresh box: no failures, no lockout, a full bucket (at the zero-code cap,
    # which the first failure lowers to the cap for the codes then active).
    def clear(self, now):
        self.failures = 0
        self._cap = daily_cap(0, self.code_len, self.years)
        self._tokens = self._cap
        self._part = 0  # ms accrued toward the next token since self._last
        self._last = now
        self._lock_until = now
        self._lock_len = 0  # 0: no lockout running
        self.dirty = True

    # Whole wrong guesses left in today's budget (as of the last check/failure).
    @property
    def tokens(self):
        return self._tokens

    # Wrong guesses allowed per day at the last failure's count of active codes.
    @property
    def cap(self):
        return self._cap

    # Credit the bucket with the time since the last call. Ticks never over-credit:
    # a gap beyond the wrap window reads as shorter (or negative, then nothing).
    def _refill(self, now):
        if self._tokens >= self._cap:
            self._tokens = self._cap
            self._part = 0
            self._last = now
            return
        e = ticks.diff(now, self._last)
        if e <= 0:
            if e < 0:
                self._last = now
            return
        step = _interval(self._cap)
        acc = self._part + e
        n = acc // step
        self._tokens += n
        self._part = acc - n * step
        self._last = now
        if self._tokens >= self._cap:
            self._tokens = self._cap
            self._part = 0

    # Ms left of the running lockout (0: none). A remaining time longer than the
    # lockout itself can only come from a tick wrap long after it ended.
    def _lock_left(self, now):
        if self._lock_len == 0:
            return 0
        left = ticks.diff(self._lock_until, now)
        if left <= 0 or left > self._lock_len:
            self._lock_len = 0
            return 0
        return left

    # Lockout for the n-th consecutive wrong code: base * 2^(n - free - 1), at most max.
    def lockout_for(self, n):
        if n <= self.free_tries:
            return 0
        v = self.base_ms
        for _ in range(n - self.free_tries - 1):
            v <<= 1
            if v >= self.max_ms:
                return self.max_ms
        return v

    # 0 if a typed code may be checked now, else ms until it may (throttled).
    def check(self, now):
        self._refill(now)
        wait = self._lock_left(now)
        if self._tokens < 1:
            t = _interval(self._cap) - self._part
            if t > wait:
                wait = t
        return wait

    # A wrong code with `active_codes` codes active: take a token, count it, maybe lock
    # out. Returns check(now) afterwards: ms the keypad is now throttled (0: not).
    def failure(self, now, active_codes):
        self._refill(now)
        cap = daily_cap(active_codes, self.code_len, self.years)
        if cap != self._cap:
            self._cap = cap
            if self._tokens >= cap:
                self._tokens = cap
                self._part = 0
            elif self._part >= _interval(cap):
                self._part = _interval(cap) - 1
        if self._tokens > 0:
            self._tokens -= 1
        if self.failures < _MAX_COUNT:
            self.failures += 1
        lock = self.lockout_for(self.failures)
        if lock:
            self._lock_len = lock
            self._lock_until = ticks.add(now, lock)
        self.dirty = True
        return self.check(now)

    # A correct code: the consecutive count starts again (the daily budget does not).
    def success(self, now):
        if self.failures:
            self.failures = 0
            self.dirty = True

    # The guess just charged with failure() proved correct: its token comes back, the
    # consecutive count starts again and the lockout it may have started is lifted.
    def refund(self, now):
        self._refill(now)
        if self._tokens < self._cap:
            self._tokens += 1
        self.failures = 0
        self._lock_len = 0
        self.dirty = True

    # Tick at which the throttle next changes (lockout end or next token), or None.
    def next_deadline(self, now):
        self._refill(now)
        best = None
        left = self._lock_left(now)
        if left:
            best = left
        if self._tokens < self._cap:
            t = _interval(self._cap) - self._part
            if best is None or t < best:
                best = t
        return None if best is None else ticks.add(now, best)

    # The persisted state: 16 bytes, versioned; the caller frames it (storage.frame).
    def dump(self):
        self.dirty = False
        return struct.pack(_FMT, _VERSION, 0, self.failures, self._cap, self._tokens,
                           self._part)

    # Restore after a reboot at tick `now`. Counters come back as saved, a lockout due
    # to them restarts in full, time spent powered off earns nothing. Malformed data:
    # False, and the most restrictive state (locked for max_ms, empty bucket at 1/day).
    def load(self, data, now):
        ok = False
        if data is not None and len(data) == STATE_LEN:
            ver, res, count, cap, tokens, part = struct.unpack(_FMT, data)
            ok = (ver == _VERSION and res == 0 and 1 <= cap <= DAY_MS and tokens <= cap
                  and part < _interval(cap))
        self._last = now
        if not ok:
            self.failures = self.free_tries
            self._cap = 1
            self._tokens = 0
            self._part = 0
            self._lock_len = self.max_ms
            self._lock_until = ticks.add(now, self.max_ms)
            self.dirty = True
            return False
        # A cap above this configuration's largest (code length lowered) is cut down.
        top = daily_cap(0, self.code_len, self.years)
        if cap > top:
            cap = top
            if tokens > cap:
                tokens = cap
            if part >= _interval(cap):
                part = _interval(cap) - 1
        self.failures = count
        self._cap = cap
        self._tokens = tokens
        self._part = part
        self._lock_len = self.lockout_for(count)
        self._lock_until = ticks.add(now, self._lock_len)
        self.dirty = False
        return True
