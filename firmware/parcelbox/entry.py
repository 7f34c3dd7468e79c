# Code entry collector (sans-I/O): accepted keys in, entry outcomes out.
# Digits go into one preallocated buffer that is wiped on clear; they are never logged.
#
# Keys are ASCII ints from parcelbox.keypad. Rules (docs/keypad.md section 3):
#   '0'..'9'  append a digit; with submit_on_length the code_len-th digit submits
#   '#'       submit now: SUBMIT with exactly code_len digits, else SHORT (discarded)
#   '*'       clear a non-empty entry (CLEARED); on an empty entry: CANCEL
#   other     ignored (NONE), e.g. the letters A-D of a 4x4 pad
# A partial entry with no digit, '*' or '#' for more than timeout_ms is discarded by
# tick() (TIMEOUT). Ignored keys neither start an entry nor extend its timeout.
try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

from parcelbox import ticks

NONE = const(0)         # key ignored / nothing happened
DIGIT = const(1)        # digit stored
CLEARED = const(2)      # '*' cleared a non-empty entry
SUBMIT = const(3)       # code ready: read code(), then clear()
SHORT = const(4)        # '#' with fewer than code_len digits: entry discarded
OVERFLOW = const(5)     # more than code_len digits (submit_on_length=False): discarded
CANCEL = const(6)       # '*' on an empty entry (e.g. leave service mode)
TIMEOUT = const(7)      # tick(): partial entry abandoned, discarded

_MIN_LEN = const(4)
_MAX_LEN = const(8)
_MAX_TIMEOUT = const(0x1FFFFFFF)    # ticks.diff is only valid below 2**29 ms
_KEY_0 = const(0x30)
_KEY_9 = const(0x39)
_KEY_STAR = const(0x2A)
_KEY_HASH = const(0x23)


class CodeEntry:
    # code_len digits per code (4..8); submit_on_length: the last digit submits by itself.
    def __init__(self, code_len=6, submit_on_length=True, timeout_ms=10000):
        if not isinstance(code_len, int) or not _MIN_LEN <= code_len <= _MAX_LEN:
            raise ValueError("code_len must be 4..8")
        if not isinstance(timeout_ms, int) or not 0 < timeout_ms <= _MAX_TIMEOUT:
            raise ValueError("timeout_ms must be 1..2**29-1")
        self.code_len = code_len
        self.submit_on_length = bool(submit_on_length)
        self.timeout_ms = timeout_ms
        self._buf = bytearray(_MAX_LEN)   # the only place digits live; wiped by clear()
        self.count = 0                    # digits typed so far
        self.submitted = False            # True from SUBMIT until clear() or the next key
        self._last = 0                    # tick of the last digit, '*' or '#'

    # Digits typed so far (same as `count`).
    @property
    def length(self):
        return self.count

    # Feed one accepted key (ASCII int) at tick `now`; return an outcome constant.
    def key(self, ch, now):
        if not isinstance(ch, int) or ch < 0 or ch > 0xFF:
            raise ValueError("key must be an ASCII code 0..255")
        if self.submitted:
            self.clear()                  # the app did not clear(): start afresh
        if _KEY_0 <= ch <= _KEY_9:
            if self.count >= self.code_len:
                # Only reachable with submit_on_length=False: one digit too many.
                self.clear()
                return OVERFLOW
            self._buf[self.count] = ch
            self.count += 1
            self._last = now
            if self.submit_on_length and self.count == self.code_len:
                self.submitted = True
                return SUBMIT
            return DIGIT
        if ch == _KEY_STAR:
            if self.count == 0:
                return CANCEL
            self.clear()
            return CLEARED
        if ch == _KEY_HASH:
            if self.count == 0:
                return NONE               # nothing typed: nothing to submit or reject
            if self.count < self.code_len:
                self.clear()
                return SHORT
            self.submitted = True
            self._last = now
            return SUBMIT
        return NONE

    # Call from the superloop; TIMEOUT discards a partial entry idle over timeout_ms.
    def tick(self, now):
        if self.count == 0 or self.submitted:
            return NONE
        if ticks.diff(now, self._last) > self.timeout_ms:
            self.clear()
            return TIMEOUT
        return NONE

    # The submitted digits as ASCII bytes; only valid right after SUBMIT.
    def code(self):
        if not self.submitted:
            raise ValueError("no submitted code")
        return bytes(self._buf[:self.count])

    # Discard the entry and overwrite the digits so no code lingers in RAM.
    def clear(self):
        buf = self._buf
        for i in range(_MAX_LEN):
            buf[i] = 0
        self.count = 0
        self.submitted = False

    # Tick at which tick() will return TIMEOUT, or None when no partial entry is open.
    def deadline(self):
        if self.count == 0 or self.submitted:
            return None
        return ticks.add(self._last, self.timeout_ms + 1)
