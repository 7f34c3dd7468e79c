# Matrix keypad decoder (sans-I/O): raw scan frames in, debounced key presses out.
# Rejects multi-key frames (ghosting) instead of guessing; the scan path allocates nothing.
#
# Hardware model (see docs/keypad.md section 1): rows are driven low one at a time,
# columns are inputs with pull-ups, so a pressed key reads 0. The port scans all rows,
# inverts the level and assembles one integer per scan, the frame:
#     bit (r * cols + c) set  <=>  key at row r, column c is pressed.
# It then calls Keypad.update(frame, now) with the scan's tick in ms. Like Hinch's
# sw_array, key state lives in integer bitmaps, never in lists: a frame of at most 30
# keys is a MicroPython small int (31-bit on ESP32 and WASI), so no heap is touched.
try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

NONE = const(-1)            # update(): no newly accepted key

LAYOUT_4X3 = b"123456789*0#"          # 4 rows x 3 cols, phone order
LAYOUT_4X4 = b"123A456B789C*0#D"      # 4 rows x 4 cols

_MAX_SIDE = const(8)
_MAX_KEYS = const(30)       # frame bitmap must stay a small int: bits 0..29
_MAX_DEBOUNCE = const(1000)
# Same value as parcelbox.ticks._MASK. Elapsed time on the scan path is the unsigned
# (now - since) & _TICKS_MASK, inline: one operation instead of a call, and with both
# ticks in 0..2**30-1 every intermediate is a small int (no heap).
_TICKS_MASK = const(0x3FFFFFFF)


class Keypad:
    # rows x cols matrix, layout = row-major ASCII bytes, debounce in ms (0 = none).
    def __init__(self, rows, cols, layout, debounce_ms=20):
        if not isinstance(rows, int) or not 1 <= rows <= _MAX_SIDE:
            raise ValueError("keypad rows must be 1..8")
        if not isinstance(cols, int) or not 1 <= cols <= _MAX_SIDE:
            raise ValueError("keypad cols must be 1..8")
        n = rows * cols
        if n > _MAX_KEYS:
            raise ValueError("keypad has more than 30 keys")
        if not isinstance(layout, (bytes, bytearray)) or len(layout) != n:
            raise ValueError("keypad layout must be rows*cols bytes")
        for i in range(n):
            ch = layout[i]
            if ch < 0x21 or ch > 0x7E:
                raise ValueError("keypad layout char not printable ASCII")
            for j in range(i + 1, n):
                if layout[j] == ch:
                    raise ValueError("keypad layout has a duplicate key")
        if not isinstance(debounce_ms, int) or not 0 <= debounce_ms <= _MAX_DEBOUNCE:
            raise ValueError("keypad debounce_ms must be 0..1000")
        self.rows = rows
        self.cols = cols
        self.layout = bytes(layout)
        self.debounce_ms = debounce_ms
        self._all = (1 << n) - 1    # every valid bit; at most 2**30 - 1, a small int
        # Every attribute update() stores is created here, so the scan path only
        # overwrites existing instance slots and never grows the instance dict.
        self._raw = 0               # last frame seen
        self._since = 0             # tick when _raw was first seen
        self._stable = 0            # last frame that stayed unchanged for debounce_ms
        self._blocked = 0           # 1 after a multi-key frame until the pad is all up
        self.rejected = 0           # multi-key frames rejected since construction

    # Feed one scan frame taken at tick `now`; return the ASCII code of a new press or NONE.
    def update(self, bits, now):
        # Scan path: small-int compares, shifts and attribute stores only. No tuple,
        # list, string or bound method is created, and nothing raises unless the
        # sample is impossible. Method calls on self would create no bound method
        # either, but there are none.
        if bits < 0 or bits > self._all:
            raise ValueError("keypad frame has bits outside the matrix")
        if bits != self._raw:
            self._raw = bits
            self._since = now
        if bits == self._stable:
            return NONE             # nothing new (held key, idle pad, bounce back)
        if (now - self._since) & _TICKS_MASK < self.debounce_ms:
            return NONE             # still settling: chatter never reaches _stable
        self._stable = bits
        if bits == 0:
            self._blocked = 0       # stably all up: a rejected multi-press is over
            return NONE
        if self._blocked:
            return NONE
        if bits & (bits - 1):
            # Two or more keys: a real multi-press or a ghost. Reject, do not guess,
            # and accept nothing until every key has been released.
            self._blocked = 1
            self.rejected += 1
            return NONE
        # Exactly one key, and the stable frame before it was different: a new press.
        i = 0
        while bits > 1:             # index of the single set bit
            bits >>= 1
            i += 1
        return self.layout[i]       # bytes indexing yields a small int, no allocation

    # Forget all state, as after power-up (the next stable key counts as a press).
    def reset(self):
        self._raw = 0
        self._since = 0
        self._stable = 0
        self._blocked = 0

    # The debounced frame currently held (0 = all keys up).
    def held(self):
        return self._stable

    # True while a multi-key press is being rejected (until all keys are up).
    def blocked(self):
        return self._blocked == 1

    # The frame bit of ASCII key `ch`, for ports and simulators that build frames.
    def bit(self, ch):
        layout = self.layout
        for i in range(len(layout)):
            if layout[i] == ch:
                return 1 << i
        raise ValueError("key not on this keypad")

    # The frame bit of the key at row r, column c.
    def bit_at(self, r, c):
        if not 0 <= r < self.rows or not 0 <= c < self.cols:
            raise ValueError("no such keypad position")
        return 1 << (r * self.cols + c)
