# Event outbox: every event gets a per-box sequence number and stays on flash until
# the backend acks it. Append-only checksummed log, compacted rarely (docs/outbox.md).
import struct
from array import array

from parcelbox import events
from parcelbox.storage import frame, frame_at

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

TORN = const(1)     # load(): an incomplete record at the end was dropped
CORRUPT = const(2)  # load(): damaged bytes inside the file were skipped

_TAG_EVENT = const(0x45)  # "E": an event, plus 0..2 ranges of pending seqs it drops
_TAG_ACK = const(0x41)    # "A": the backend acked one seq
_TAG_HEAD = const(0x48)   # "H": written twice at the start of a compacted file
_EVT = "<BIBBIII"         # tag, seq, kind, comp, code_id, arg, t
_EVT_LEN = const(19)
_RANGE = "<II"            # lo, hi: every pending seq in lo..hi is dropped
_ACK = "<BI"              # tag, seq
_HEAD = "<BII"            # tag, next_seq, dropped
_LENGTHS = (5, 9, 19, 27, 35)  # every payload length that can occur
_MAX_FRAME = const(41)
_EVT_FRAME = const(25)
_HEAD_FRAME = const(15)
_GARBAGE = const(2)       # compact when dead bytes reach 2 full outboxes of records
_CHUNK = const(256)
_MAX_SEQ = 0x7FFFFFFF     # never handed out: 29,000 years at 200 events a day
_SEQ_LIMIT = 0x7F000000   # a stored seq above is damage (as the Box's seq floor), so the
                          # seqs that follow it stay below _MAX_SEQ


class Outbox:
    def __init__(self, storage, capacity=256, name="events.log"):
        if not isinstance(capacity, int) or capacity < 8 or capacity > 4096:
            raise ValueError("outbox capacity must be 8..4096")
        self._st, self.name, self.capacity = storage, name, capacity
        self._fold = max(4, capacity // 16)  # events folded into one OVERFLOW at a time
        self.load_flags = 0
        self._loaded = False
        self._reset(capacity)

    # Empty RAM state: a ring of (seq, file offset, kind) per pending event, 9 bytes each.
    def _reset(self, slots):
        self._seq = array("I", bytearray(4 * slots))
        self._off = array("I", bytearray(4 * slots))
        self._kind = bytearray(slots)
        self._head = self._n = self._last = self._size = 0
        self._dirty = False
        self.next_seq = 1
        self.file_next = 1  # next_seq as the file alone shows it (skip_to writes nothing)
        self.dropped = self.read_errors = 0

    # Rebuild the state from flash; returns 0, or TORN/CORRUPT bits. Never raises on content.
    # With repair=False a damaged file stays as it is, appended to, until repair(): the
    # Box first appends its report of the damage, so a cut before that finds it again.
    def load(self, repair=True):
        self._reset(self.capacity)
        self._st.remove(self.name + ".tmp")  # a replace cut short; the old file is intact
        flags = 0
        f = self._st.open(self.name)
        if f is not None:
            try:
                flags = self._scan(f)
            finally:
                f.close()
        self._size = max(self._st.size(self.name), 0)
        self._loaded, self.load_flags = True, flags
        if flags and repair:
            self.repair()
        return flags

    # After damage found by load(): a clean file (compacted) before the next append.
    def repair(self):
        if self.load_flags:
            self._compact()
            self.load_flags = 0

    # Replay every valid frame; skip damaged bytes one at a time until a frame fits again.
    def _scan(self, f):
        buf, base, pos, flags, eof, bad = b"", 0, 0, 0, False, False
        while True:
            if not eof and len(buf) - pos < _MAX_FRAME:
                more = f.read(_CHUNK)
                eof = not more
                if more:
                    buf = buf[pos:] + more
                    base += pos
                    pos = 0
            if pos >= len(buf):
                return flags | (TORN if bad else 0)
            end = self._replay(buf, pos, base + pos)
            if end < 0:
                bad, pos = True, pos + 1
            else:
                flags |= CORRUPT if bad else 0
                bad, pos = False, end

    # Apply the frame at buf[pos] (file offset off); its end, or -1 if no valid record is there.
    def _replay(self, buf, pos, off):
        if pos + 2 > len(buf) or (buf[pos] | (buf[pos + 1] << 8)) not in _LENGTHS:
            return -1
        r = frame_at(buf, pos)
        if r is None:
            return -1
        p, end = r
        tag = buf[p]
        if tag == _TAG_EVENT and end - p >= _EVT_LEN:
            ev = struct.unpack_from(_EVT, buf, p)
            seq = ev[1]
            if seq <= self._last or ev[2] == 0 or seq > _SEQ_LIMIT:
                return -1
            for q in range(p + _EVT_LEN, end, 8):
                self._drop(*struct.unpack_from(_RANGE, buf, q))
            if self._n == len(self._kind):
                self._grow()  # capacity was lowered: keep what flash holds
            j = self._slot(self._n)
            self._seq[j], self._off[j], self._kind[j] = seq, off, ev[2]
            self._n, self._last = self._n + 1, seq
        elif tag == _TAG_ACK and end - p == 5:
            seq = struct.unpack_from(_ACK, buf, p)[1]
            i = self._lower(seq)
            if i < self._n and self._seq_at(i) == seq:
                self._remove(i, 1)
            return end + 4  # an ack names an event before it: it moves no seq on
        elif tag == _TAG_HEAD and end - p == 9:
            h = struct.unpack_from(_HEAD, buf, p)
            seq = h[1] - 1
            if seq > _SEQ_LIMIT:
                return -1
            self.dropped = max(self.dropped, h[2])
        else:
            return -1
        self.next_seq = max(self.next_seq, seq + 1)
        self.file_next = max(self.file_next, seq + 1)
        return end + 4

    # Number of unacked events.
    def pending(self):
        self._ready()
        return self._n

    # The oldest unacked event (seq, kind, comp, code_id, arg, t), or None.
    def first(self):
        return self.get(0) if self.pending() else None

    # Seq of the i-th unacked event, oldest first, from RAM (no flash read).
    def seq(self, i):
        if not 0 <= i < self.pending():
            raise IndexError("no pending event at " + str(i))
        return self._seq_at(i)

    # Raise next_seq to `seq`, the box's floor after this file was lost or damaged, so no
    # seq is ever issued twice. Writes nothing: the next add() persists it.
    def skip_to(self, seq):
        self._ready()
        self.next_seq = max(self.next_seq, seq)

    # The i-th unacked event, oldest first, read from flash (payloads are not kept in RAM).
    def get(self, i):
        self._ready()
        if not 0 <= i < self._n:
            raise IndexError("no pending event at " + str(i))
        return self._read(i)

    # Append an event durably and return its seq; when full, apply the policy in docs/outbox.md.
    def add(self, kind, comp=0, code_id=0, arg=0, t=0):
        self._ready()
        if kind == events.OVERFLOW or not 0 < kind < 256 or not 0 <= comp < 256:
            raise ValueError("bad event kind or compartment")
        if min(code_id, arg, t) < 0 or (code_id | arg | t) >> 32:
            raise ValueError("event field out of range")
        seq = self.next_seq
        if seq >= _MAX_SEQ:  # only damage gets here (the box refuses such a floor): never a seq twice
            raise OSError(28, "event seqs used up")
        data = tail = b""
        if self._n >= self.capacity:
            i = self._find(events.is_security, False)
            if i >= 0:
                tail = struct.pack(_RANGE, self._seq_at(i), self._seq_at(i))
            else:
                data = self._summary(seq, t)
                seq += 1
        data += frame(struct.pack(_EVT, _TAG_EVENT, seq, kind, comp, code_id, arg, t) + tail)
        off = self._write(data)
        p = 0
        while 0 <= p < len(data):  # the same code applies it now and at every later load
            p = self._replay(data, p, off + p)
        return seq

    # The backend acked seq: True if it was pending (now durably acked), else False.
    def ack(self, seq):
        self._ready()
        i = self._lower(seq)
        if i >= self._n or self._seq_at(i) != seq:
            return False
        self._write(frame(struct.pack(_ACK, _TAG_ACK, seq)))
        self._remove(i, 1)
        return True

    def _ready(self):
        if not self._loaded:
            self.load()

    def _slot(self, i):
        return (self._head + i) % len(self._kind)

    def _seq_at(self, i):
        return self._seq[self._slot(i)]

    # Logical index of the first pending seq >= seq (binary search).
    def _lower(self, seq):
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._seq_at(mid) < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # Drop every pending seq in lo..hi; an absorbed OVERFLOW is not counted again.
    def _drop(self, lo, hi):
        i = j = self._lower(lo)
        while j < self._n and self._seq_at(j) <= hi:
            self.dropped += 0 if self._kind[self._slot(j)] == events.OVERFLOW else 1
            j += 1
        self._remove(i, j - i)

    # Remove c entries at logical index i: at the head (usual) just advance, else shift down.
    def _remove(self, i, c):
        s, o, k = self._seq, self._off, self._kind
        if i == 0:
            self._head = self._slot(c)
        else:
            for j in range(i + c, self._n):
                a, b = self._slot(j), self._slot(j - c)
                s[b], o[b], k[b] = s[a], o[a], k[a]
        self._n -= c

    # Double the full ring (only when a file holds more than capacity pending events).
    def _grow(self):
        h, z = self._head, bytearray(4 * self._n)
        self._seq = self._seq[h:] + self._seq[:h] + array("I", z)
        self._off = self._off[h:] + self._off[:h] + array("I", z)
        self._kind = self._kind[h:] + self._kind[:h] + bytearray(self._n)
        self._head = 0

    # Index of the oldest pending event whose kind gives test(kind) == want, or -1.
    def _find(self, test, want):
        for i in range(self._n):
            if test(self._kind[self._slot(i)]) == want:
                return i
        return -1

    # The OVERFLOW frame folding the oldest events and the pending OVERFLOW (if any) into one.
    def _summary(self, seq, t):
        a = self._find(lambda k: k == events.OVERFLOW, True)  # there is at most one
        victims = [i for i in range(self._fold + 1) if i != a][:self._fold]
        lo, hi = self._seq_at(victims[0]), self._seq_at(victims[-1])
        first, lost, ranges = lo, self._fold, struct.pack(_RANGE, lo, hi)
        if a >= 0:
            prev = self.get(a)
            lost += prev[4]
            first = min(first, prev[3] or first)
            ranges += struct.pack(_RANGE, prev[0], prev[0])
        ev = struct.pack(_EVT, _TAG_EVENT, seq, events.OVERFLOW, 0, first, lost, t)
        return frame(ev + ranges)

    # Event tuple of pending index i, from file f or a fresh open; damaged reads as zeros.
    def _read(self, i, f=None):
        j = self._slot(i)
        seq = self._seq[j]
        g = f if f is not None else self._st.open(self.name)
        if g is not None:
            try:
                g.seek(self._off[j])
                d = g.read(_MAX_FRAME)
            finally:
                if f is None:
                    g.close()
            r = frame_at(d, 0) if d else None
            if r is not None and r[1] - r[0] >= _EVT_LEN:
                ev = struct.unpack_from(_EVT, d, r[0])
                if ev[0] == _TAG_EVENT and ev[1] == seq:
                    return ev[1:]
        self.read_errors += 1
        return (seq, self._kind[j], 0, 0, 0, 0)

    # Append data, return its file offset. Compact first if the file holds 2 outboxes of
    # dead records, or if the last write failed (its tail may be half a record).
    def _write(self, data):
        dead = self._size - 2 * _HEAD_FRAME - self._n * _EVT_FRAME
        if self._dirty or dead >= _GARBAGE * self.capacity * _EVT_FRAME:
            self._compact()
        off = self._size
        try:
            self._st.append(self.name, data)
        except OSError:
            self._dirty = True
            raise
        self._size += len(data)
        return off

    # Atomically rewrite the file as two headers (next_seq, dropped) and the pending events.
    def _compact(self):
        n = self._n
        img = bytearray(2 * _HEAD_FRAME + n * _EVT_FRAME)
        head = frame(struct.pack(_HEAD, _TAG_HEAD, self.next_seq, self.dropped))
        img[0:2 * _HEAD_FRAME] = head + head
        p = 2 * _HEAD_FRAME
        f = self._st.open(self.name)
        try:
            for i in range(n):
                ev = self._read(i, f)
                img[p:p + _EVT_FRAME] = frame(struct.pack(_EVT, _TAG_EVENT, *ev))
                p += _EVT_FRAME
        finally:
            if f is not None:
                f.close()
        self._st.replace(self.name, img)
        for i in range(n):
            self._off[self._slot(i)] = 2 * _HEAD_FRAME + i * _EVT_FRAME
        self._size = len(img)
        self._dirty = False
