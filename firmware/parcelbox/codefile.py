# The code store on flash: snapshot "codes.bin" and journal "codes.log" (docs/codestore.md
# sections 3-5), written and read for CodeStore, which holds the records and the index.
import struct
from binascii import crc32

from parcelbox.storage import frame, frame_at

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# Records live in pages of _PR records (512 B): small enough to fit the holes that
# loading modules leaves in a fragmented ESP32-sized heap, big enough to keep the
# per-page object overhead near 8%. Slot s is page s >> _PS, offset (s & _PM) << 5.
_PS = const(4)
_PR = const(16)
_PM = const(15)


_Z = bytes(4)
_MAX_GEN = 0x7FFFFFFF  # one snapshot per ~300 uses: a generation above is damage
# Length of a journal op with its op byte, by op: ADD 1 + 32-byte record (33), REVOKE
# 1 + code_id (5), CONSUME and GIVEBACK 1 + code_id + uses (7), EXPIRE 1 + time (5).
_OP_LEN = b"\x05\x21\x05\x07\x07\x05"


# Sign of (u32 at a[i]) - (u32 at b[j]), little-endian, without big ints.
def _cmp(a, i, b, j):
    return (((a[i + 3] << 8 | a[i + 2]) - (b[j + 3] << 8 | b[j + 2]))
            or ((a[i + 1] << 8 | a[i]) - (b[j + 1] << 8 | b[j])))


# Mixed into CodeStore: uses its pages _pg, count _n, _at(), _find(), _grow() and _index().
class CodeFile:
    # Apply a journal op to RAM, first appending it to the journal if `write`; returns the
    # codes it hit (0: nothing written). ValueError if it cannot apply (a corrupt journal
    # on replay). Codes that go rebuild the index, except on replay: load() does it then.
    # `hit`: the slot of its code_id when the caller knows it (no scan).
    def _do(self, op, write, hit=None):
        self.changes += 1  # callers that cache a figure about the set watch this
        k = op[0]
        if not 0 < k < 6 or len(op) != _OP_LEN[k]:
            raise ValueError("bad op")
        if k == 1:  # ADD
            s = self._find(op[5:21]) if write else -1
            if s >= 0 and _cmp(*self._at(s), op, 1):
                raise ValueError("digest in use")
            if self._n >= self._cap and self.slot_of(struct.unpack_from("<I", op, 1)[0]) < 0:
                self._grow(self._n + 1)  # full, and not a replacement: ValueError
        # Two passes over the codes it hits: the first only counts them (nothing hit: no
        # write; an ADD is written anyway), the journal write goes between, the second
        # applies it. RAM changes only after the op is on flash.
        for act in (0, 1):
            n = 0
            scan = range(self._n - 1, -1, -1) if hit is None else (hit,)
            for s in scan if act or k > 1 else ():  # backwards: a moved-in record was seen
                pg, o = self._pg[s >> _PS], (s & _PM) << 5
                if not (_cmp(pg, o + 28, op, 1) < 0 < _cmp(pg, o + 28, _Z, 0) if k == 5
                        else not _cmp(pg, o, op, 1)):  # EXPIRE: ended before; else: code_id
                    continue
                n += 1
                if act and 2 < k < 5:  # CONSUME, GIVEBACK: uses left as journaled
                    pg[o + 22] = op[5]
                    pg[o + 23] = op[6]
                elif act:  # REVOKE, EXPIRE, ADD (the old code): the last record moves in
                    q, r = self._at(self._n - 1)
                    pg[o:o + 32] = q[r:r + 32]
                    self._n -= 1
            if not (act or n or k == 1):
                return 0
            if write and not act:
                # a snapshot first if flash needs one (bad snapshot, torn or stale journal)
                # or the journal passed compact_at (a failure there is retried later)
                if self._dirty or self._jlen > self._limit:
                    try:
                        self._snap()
                    except OSError:
                        if self._dirty:
                            raise
                fr = frame(op)
                if not self._jlen:  # a new journal starts with HEAD: the snapshot it follows
                    fr = frame(struct.pack("<BI", 0, self._gen)) + fr
                self._dirty = True  # until the append is known to be complete
                self._st.append("codes.log", fr)
                self._dirty = False
                self._jlen += len(fr)
        if k == 1:
            self._n += 1
            pg, o = self._at(self._n - 1)
            pg[o:o + 32] = op[1:]
            if _cmp(op, 29, _Z, 0) and (not self.next_end or _cmp(op, 29, self._end, 0) < 0):
                self._ends()  # an earlier end than any stored: the sweep must wake for it
        elif k == 5 and write:
            self._ends()
        if write and n and not 2 < k < 5:
            self._index(4)  # codes went (REVOKE, EXPIRE, a replacing ADD)
        elif write and k == 1:
            self._find(op[5:21], 4, self._n)  # a new code
        return n

    # Write RAM as the next generation's snapshot (page by page, no copy), then drop the journal.
    def _snap(self):
        n = self._n
        self._gen += 1  # even if the write fails: a generation may be skipped, never reused
        parts = [struct.pack("<4sII", b"PBC1", self._gen, n)]
        for s in range(0, n, _PR):
            parts.append(self._pg[s >> _PS][:min(n - s, _PR) << 5])
        crc = 0
        for p in parts:
            crc = crc32(p, crc)
        parts.append(struct.pack("<I", crc))
        self._st.replace("codes.bin", parts)
        self._st.remove("codes.log")
        self._jlen = 0
        self._dirty = False

    # Read snapshot and journal into RAM; 0 when clean, else PROBLEM_SNAPSHOT (1) and/or
    # PROBLEM_JOURNAL (2). Never raises on bad data: a bad snapshot leaves the store EMPTY.
    def load(self):
        self.changes += 1
        st = self._st
        self._grow(1, True)  # the old records go before the new ones come
        st.remove("codes.bin.tmp")  # left by a cut during a snapshot write
        size = st.size("codes.bin")
        n = (size - 16) >> 5
        f = st.open("codes.bin")
        bad = size >= 0
        if f:
            try:  # straight into the pages with readinto: no second buffer
                h = f.read(12)
                if (size == 16 + (n << 5) and h[:4] == b"PBC1" and h[8:] == struct.pack("<I", n)
                        and struct.unpack_from("<I", h, 4)[0] <= _MAX_GEN):
                    self._grow(n or 1, True)
                    self._n = n
                    crc = crc32(h)
                    for s in range(0, n, _PR):
                        p = self._pg[s >> _PS][:min(n - s, _PR) << 5]
                        if f.readinto(p) != len(p):
                            raise ValueError
                        crc = crc32(p, crc)
                    if f.read(4) == struct.pack("<I", crc):
                        self._index(0)  # ValueError: an impossible record or a code_id twice
                        self._gen = struct.unpack_from("<I", h, 4)[0]
                        bad = False
            except ValueError:
                pass
            finally:
                f.close()
        if bad:
            self._grow(1, True)
        f = st.open("codes.log")
        # r: 0 clean, 1 stale (follows another snapshot: ignored), 2 torn, 3 corrupt. Torn
        # is only a short last frame whose length and op agree (an append the power cut);
        # a whole frame with a bad checksum, a length no op has, or a first frame that is
        # not HEAD is damage, wherever it is: what it said is unknown.
        pos = r = 0
        while f and not r:
            h = f.read(2)
            if not h:
                break
            n = h[-1] << 8 | h[0]
            body = f.read(n + 4) if len(h) == 2 and n in (5, 7, 33) else b""
            k = body[0] if body else -1
            fr = h + body
            if len(h) == 2 and n not in (5, 7, 33):
                r = 3
            elif k >= 0 and (k > 5 or _OP_LEN[k] != n or (k == 0) != (pos == 0)):
                r = 3  # the op does not fit its length, or HEAD not first (or again)
            elif len(body) < n + 4:
                r = 2  # a short tail: the append a power cut stopped
            elif frame_at(fr, 0) is None:
                r = 3
            elif pos:
                try:
                    self._do(memoryview(fr)[2:-4], False)
                except (ValueError, IndexError):
                    r = 3
            elif struct.unpack_from("<I", fr, 3)[0] > _MAX_GEN:
                r = 3
            else:
                g = struct.unpack_from("<I", fr, 3)[0]
                if not bad and g > self._gen:
                    self._n = 0  # the snapshot is older than its journal: it went back
                    bad = True
                if bad or g != self._gen:
                    self._gen = g  # the next snapshot must not carry this generation
                    r = 1
            if not r:
                pos += len(fr)
        if f:
            f.close()
        if r == 3:
            # Damage inside the journal: the revokes and uses after it are unknown, and
            # replaying only the prefix could bring back a revoked or used-up code. Fail
            # closed, as for a bad snapshot: EMPTY until the backend resyncs.
            self._n = 0
            bad = True
        try:
            self._index(4)  # replay leaves it behind; a digest twice makes the store bad
        except ValueError:
            self._n = 0  # EMPTY, keeping the generation
            self._index(4)
            bad = True
        self._jlen = pos
        self._dirty = bad or r > 0
        self._ends()
        return (1 if bad and r != 3 or (r == 1 and size < 0) else 0) | (2 if r == 2 else 0) | (
            4 if r == 3 else 0)
