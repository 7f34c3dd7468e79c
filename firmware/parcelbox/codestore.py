# The box's code store: keyed digests of codes with role, compartment, uses and validity
# window; snapshot + journal on flash (docs/codestore.md), open-addressing digest index in RAM.
import struct
from array import array
from binascii import crc32
from hashlib import sha256

from parcelbox.hmac256 import Hmac, equal
from parcelbox.storage import frame, frame_at

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

ROLE_RECIPIENT = const(1)
ROLE_DRIVER = const(2)
ROLE_OWNER = const(3)
ROLE_TECH = const(4)
UNLIMITED = const(0xFFFF)  # uses value that never runs out
DIGEST_LEN = const(16)     # HMAC-SHA256(code_key, code) truncated
RECORD_LEN = const(32)
RECORD_FMT = "<I16sBBHII"  # code_id, digest, role, compartment, uses, not_before, not_after
MAX_CODES = const(32704)   # index holds slot+1 as u16 in a table of at most 65536

# load() problem bits; either means the backend should resync.
PROBLEM_SNAPSHOT = const(1)  # snapshot corrupt or truncated: the store was left EMPTY
PROBLEM_JOURNAL = const(2)   # torn or corrupt journal tail dropped

SNAPSHOT = "codes.bin"
JOURNAL = "codes.log"
_MAGIC = b"PBC1"
_HEAD = const(12)    # snapshot header: magic, u32 generation, u32 count
_PAGE = const(64)    # records per page: 2 KB blocks, never one 32 KB block
_PAGE_BYTES = const(2048)
_OP_HEAD = const(0)  # journal ops; the first frame names the snapshot generation it follows
_OP_ADD = const(1)
_OP_REVOKE = const(2)
_OP_CONSUME = const(3)
_OP_GIVEBACK = const(4)
_OP_EXPIRE = const(5)
_MAX_OP = const(40)  # longest journal payload accepted (ADD is 33)
_ZERO = bytes(RECORD_LEN)


def _out(value, lo, hi):
    return not isinstance(value, int) or isinstance(value, bool) or value < lo or value > hi


def _int_in(value, lo, hi, name):
    if _out(value, lo, hi):
        raise ValueError("%s must be an integer in %d..%d" % (name, lo, hi))


# What is wrong with a record's fields, or None when it can be stored.
def record_problem(code_id, digest, role, compartment, uses, not_before, not_after):
    if _out(code_id, 1, 0xFFFFFFFF):
        return "code_id must be an integer in 1..4294967295"
    if not isinstance(digest, (bytes, bytearray, memoryview)) or len(digest) != DIGEST_LEN:
        return "digest must be 16 bytes"
    if _out(role, ROLE_RECIPIENT, ROLE_TECH):
        return "role must be an integer in 1..4"
    if _out(compartment, 0, 255):
        return "compartment must be an integer in 0..255"
    if _out(uses, 0, UNLIMITED):
        return "uses must be an integer in 0..65535"
    if _out(not_before, 0, 0xFFFFFFFF) or _out(not_after, 0, 0xFFFFFFFF):
        return "not_before and not_after must be integers in 0..4294967295"
    if not_before and not_after and not_after < not_before:
        return "not_after is before not_before"
    return None


# Raise ValueError unless the fields make a storable record.
def check_record(*fields):
    msg = record_problem(*fields)
    if msg:
        raise ValueError(msg)


# Sign of (u32 at a[i]) - (u32 at b[j]), both little-endian, without making (big) ints.
def _cmp32(a, i, b, j):
    k = 3
    while k >= 0:
        if a[i + k] != b[j + k]:
            return -1 if a[i + k] < b[j + k] else 1
        k -= 1
    return 0


def _zero32(a, i):
    return not (a[i] | a[i + 1] | a[i + 2] | a[i + 3])


# A stored record is sane: code_id != 0, role known, window not reversed.
def _sane(pg, o):
    if _zero32(pg, o) or pg[o + 20] < ROLE_RECIPIENT or pg[o + 20] > ROLE_TECH:
        return False
    return _zero32(pg, o + 24) or _zero32(pg, o + 28) or _cmp32(pg, o + 28, pg, o + 24) >= 0


# The record at pg[o] has uses left and `now` (4 bytes, u32 LE) inside its window.
def _usable(pg, o, now):
    if not (pg[o + 22] | pg[o + 23]):
        return False
    if not _zero32(pg, o + 24) and _cmp32(pg, o + 24, now, 0) > 0:
        return False
    return _zero32(pg, o + 28) or _cmp32(now, 0, pg, o + 28) <= 0


class CodeStore:
    def __init__(self, storage, code_key, capacity=64, compact_at=4096):
        if not isinstance(code_key, (bytes, bytearray)) or len(code_key) != 32:
            raise ValueError("code key must be 32 bytes")
        _int_in(capacity, 1, MAX_CODES, "capacity")
        _int_in(compact_at, 0, 1 << 20, "compact_at")
        self._st = storage
        self._mac = Hmac(code_key)
        self._cap0 = capacity
        self._compact_at = compact_at
        self.probes = 0  # index slots examined by the last lookup (tests, diagnostics)
        self._pages = self._index = None
        self._reset(0)  # pages come with load() (at least `capacity` records) or add()

    # Empty store in RAM with room for `cap` records; flash is not touched.
    def _reset(self, cap):
        self._pages = self._index = None  # free the old buffers before allocating
        self._pages = []
        self._cap = self._n = 0
        while self._cap < cap:
            self._pages.append(memoryview(bytearray(_PAGE_BYTES)))
            self._cap += _PAGE
        self._new_index()
        self._gen = 0            # generation of the snapshot on flash
        self._jsize = 0          # bytes of valid journal on flash
        self._jdirty = False     # journal file holds bytes past _jsize: cut before next append
        self._need_snap = False  # snapshot on flash is bad: write one before next append

    # A fresh index of at least twice the capacity (load factor <= 0.5) holding every record.
    def _new_index(self):
        size = 2
        while size < 2 * self._cap:
            size <<= 1
        self._index = None
        self._index = array("H", bytearray(2 * size))
        self._mask = size - 1
        for s in range(self._n):
            self._insert(s)

    # One more page of records; the index doubles when it would pass half full.
    def _grow(self):
        if self._cap >= MAX_CODES:
            raise ValueError("code store full")
        self._pages.append(memoryview(bytearray(_PAGE_BYTES)))
        self._cap += _PAGE
        if 2 * self._cap > self._mask + 1:
            self._new_index()

    # Index position a digest starts probing at: digests are uniformly random.
    def _home(self, buf, off):
        return (buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16)) & self._mask

    def _insert(self, slot):
        idx, mask = self._index, self._mask
        i = self._home(self._pages[slot // _PAGE], (slot % _PAGE) * RECORD_LEN + 4)
        while idx[i]:
            i = (i + 1) & mask
        idx[i] = slot + 1

    def _pos(self, slot):
        idx, mask = self._index, self._mask
        i = self._home(self._pages[slot // _PAGE], (slot % _PAGE) * RECORD_LEN + 4)
        while idx[i] != slot + 1:
            i = (i + 1) & mask
        return i

    # Linear-probing delete with backward shift (no tombstones).
    def _unindex(self, p):
        idx, mask = self._index, self._mask
        idx[p] = 0
        j = (p + 1) & mask
        while idx[j]:
            s = idx[j] - 1
            h = self._home(self._pages[s // _PAGE], (s % _PAGE) * RECORD_LEN + 4)
            if ((j - h) & mask) >= ((j - p) & mask):
                idx[p] = idx[j]
                idx[j] = 0
                p = j
            j = (j + 1) & mask

    # 16-byte keyed digest of a typed code (ASCII digits as bytes); the backend computes the same.
    def digest(self, code):
        if not isinstance(code, (bytes, bytearray, memoryview)):
            raise TypeError("code must be bytes")
        return self._mac.digest(code)[:DIGEST_LEN]

    # Slot of the typed code, or -1: one HMAC, one index lookup.
    def find(self, code):
        return self.find_digest(self.digest(code))

    # Slot holding `digest`, or -1; every candidate is compared in constant time.
    def find_digest(self, digest):
        if len(digest) != DIGEST_LEN:
            raise ValueError("digest must be 16 bytes")
        idx, mask = self._index, self._mask
        i = self._home(digest, 0)
        self.probes = 1
        while idx[i]:
            s = idx[i] - 1
            o = (s % _PAGE) * RECORD_LEN + 4
            if equal(digest, self._pages[s // _PAGE][o:o + DIGEST_LEN]):
                return s
            i = (i + 1) & mask
            self.probes += 1
        return -1

    # Page and offset of a stored slot; ValueError for any other value.
    def _at(self, slot):
        if not isinstance(slot, int) or slot < 0 or slot >= self._n:
            raise ValueError("no code in slot")
        return self._pages[slot // _PAGE], (slot % _PAGE) * RECORD_LEN

    # (code_id, role, compartment, uses, not_before, not_after) of a slot.
    def fields(self, slot):
        pg, o = self._at(slot)
        return (struct.unpack_from("<I", pg, o)[0],) + struct.unpack_from("<BBHII", pg, o + 20)

    # Slot of `code_id`, or -1 (a linear scan, for backend commands only).
    def slot_of(self, code_id):
        if _out(code_id, 1, 0xFFFFFFFF):
            return -1
        k0, k1, k2, k3 = struct.pack("<I", code_id)
        for s in range(self._n):
            pg, o = self._pages[s // _PAGE], (s % _PAGE) * RECORD_LEN
            if pg[o] == k0 and pg[o + 1] == k1 and pg[o + 2] == k2 and pg[o + 3] == k3:
                return s
        return -1

    def count(self):
        return self._n

    # Codes usable at `now_s`: uses left and inside their window (bounds inclusive).
    def active_count(self, now_s):
        _int_in(now_s, 0, 0xFFFFFFFF, "now_s")
        now = struct.pack("<I", now_s)
        n = 0
        for s in range(self._n):
            if _usable(self._pages[s // _PAGE], (s % _PAGE) * RECORD_LEN, now):
                n += 1
        return n

    # 16 bytes naming the whole set, whatever the order: SHA-256(u32 count ||
    # XOR of SHA-256 of each 32-byte record), truncated.
    def set_digest(self):
        acc = 0
        for s in range(self._n):
            o = (s % _PAGE) * RECORD_LEN
            d = sha256(self._pages[s // _PAGE][o:o + RECORD_LEN]).digest()
            acc ^= int.from_bytes(d, "little")
        h = sha256(struct.pack("<I", self._n))
        h.update(acc.to_bytes(32, "little"))
        return h.digest()[:DIGEST_LEN]

    # Add a code, or replace the one with the same code_id; on flash before returning.
    def add(self, code_id, digest, role, compartment, uses, not_before, not_after):
        check_record(code_id, digest, role, compartment, uses, not_before, not_after)
        rec = struct.pack(RECORD_FMT, code_id, bytes(digest), role, compartment, uses,
                          not_before, not_after)
        old = self._replaces(rec)
        if old < -1:
            raise ValueError("another code has the same digest")
        if old < 0 and self._n == self._cap:
            self._grow()
        self._log(bytes((_OP_ADD,)) + rec)
        self._put(rec, old)
        self._maybe_compact()

    # Slot the record replaces: -1 a new code, -2 another code holds its digest.
    def _replaces(self, rec):
        old = self.slot_of(struct.unpack_from("<I", rec, 0)[0])
        s = self.find_digest(memoryview(rec)[4:4 + DIGEST_LEN])
        return -2 if s >= 0 and s != old else old

    def _put(self, rec, old):
        if old >= 0:
            self._unindex(self._pos(old))
            slot = old
        else:
            slot = self._n
            self._n += 1
        o = (slot % _PAGE) * RECORD_LEN
        self._pages[slot // _PAGE][o:o + RECORD_LEN] = rec
        self._insert(slot)

    # Remove a code; False if there was none. On flash before returning.
    def revoke(self, code_id):
        slot = self.slot_of(code_id)
        if slot < 0:
            return False
        self._log(struct.pack("<BI", _OP_REVOKE, code_id))
        self._remove(slot)
        self._maybe_compact()
        return True

    # Drop a slot: the last record moves into it, so slots stay dense.
    def _remove(self, slot):
        self._unindex(self._pos(slot))
        last = self._n - 1
        lp, lo = self._at(last)
        if slot != last:
            self._index[self._pos(last)] = slot + 1
            pg, o = self._at(slot)
            pg[o:o + RECORD_LEN] = lp[lo:lo + RECORD_LEN]
        lp[lo:lo + RECORD_LEN] = _ZERO
        self._n = last

    # Remove codes whose window ended before `now_s`; returns how many.
    def expire(self, now_s):
        _int_in(now_s, 0, 0xFFFFFFFF, "now_s")
        if not self._expire(now_s, False):
            return 0
        self._log(struct.pack("<BI", _OP_EXPIRE, now_s))
        n = self._expire(now_s, True)
        self._maybe_compact()
        return n

    def _expire(self, now_s, remove):
        now = struct.pack("<I", now_s)
        n = 0
        for s in range(self._n - 1, -1, -1):  # backwards: a moved-in record was already seen
            pg, o = self._pages[s // _PAGE], (s % _PAGE) * RECORD_LEN
            if not _zero32(pg, o + 28) and _cmp32(pg, o + 28, now, 0) < 0:
                n += 1
                if remove:
                    self._remove(s)
        return n

    # Use one use of the code in `slot`; returns the uses left. On flash before returning.
    def consume(self, slot):
        pg, o = self._at(slot)
        uses = pg[o + 22] | (pg[o + 23] << 8)
        if uses == UNLIMITED:
            return UNLIMITED
        if uses == 0:
            raise ValueError("code has no uses left")
        self._set_uses(_OP_CONSUME, pg, o, uses - 1)
        return uses - 1

    # Return a use (unlocked, never opened). False if the code is gone, unlimited or full.
    def give_back(self, code_id):
        slot = self.slot_of(code_id)
        if slot < 0:
            return False
        pg, o = self._at(slot)
        uses = pg[o + 22] | (pg[o + 23] << 8)
        if uses >= UNLIMITED - 1:
            return False
        self._set_uses(_OP_GIVEBACK, pg, o, uses + 1)
        return True

    def _set_uses(self, op, pg, o, uses):
        self._log(struct.pack("<BIH", op, struct.unpack_from("<I", pg, o)[0], uses))
        pg[o + 22] = uses & 0xFF
        pg[o + 23] = uses >> 8
        self._maybe_compact()

    # Full sync: replace every code with `records` (tuples in add() order), all or nothing.
    def replace_all(self, records):
        try:
            self._sync(records)
        except Exception:
            self.load()  # flash still holds the old set: RAM goes back to it
            raise

    def _sync(self, records):
        for s in range(self._n):  # build in place; flash keeps the old set until the snapshot
            o = (s % _PAGE) * RECORD_LEN
            self._pages[s // _PAGE][o:o + RECORD_LEN] = _ZERO
        self._n = 0
        self._new_index()
        ids = []
        for r in records:
            if len(r) != 7:
                raise ValueError("a record has 7 fields")
            check_record(*r)
            if self.find_digest(r[1]) >= 0:
                raise ValueError("two codes have the same digest")
            if self._n == self._cap:
                self._grow()
            self._put(struct.pack(RECORD_FMT, r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[6]), -1)
            ids.append(r[0])
        ids.sort()
        for i in range(1, len(ids)):
            if ids[i] == ids[i - 1]:
                raise ValueError("code_id %d appears twice" % ids[i])
        ids = None
        self._snapshot()

    # Append one journal op, first replacing a bad snapshot or cutting a torn tail.
    def _log(self, payload):
        st = self._st
        if self._need_snap:
            self._snapshot()
        if self._jdirty:
            data = st.read(JOURNAL) if self._jsize else b""
            if data is None or len(data) < self._jsize:
                self._snapshot()  # prefix unreadable: RAM already holds its effects
            elif self._jsize:
                st.replace(JOURNAL, data[:self._jsize])
            else:
                st.remove(JOURNAL)
            self._jdirty = False
        rec = frame(payload)
        if not self._jsize:
            rec = frame(struct.pack("<BI", _OP_HEAD, self._gen)) + rec
        self._jdirty = True  # until the append is known to be complete
        st.append(JOURNAL, rec)
        self._jdirty = False
        self._jsize += len(rec)

    # After a change is on flash: a failed compaction must not fail the change itself.
    def _maybe_compact(self):
        if self._jsize > self._compact_at:
            try:
                self._snapshot()
            except OSError:
                pass  # the journal still holds everything; the next change retries

    # Write RAM as the next generation's snapshot (page by page, no copy), then drop the journal.
    def _snapshot(self):
        gen = (self._gen + 1) & 0xFFFFFFFF
        parts = [struct.pack("<4sII", _MAGIC, gen, self._n)]
        crc = crc32(parts[0])
        left = self._n * RECORD_LEN
        for pg in self._pages:
            if not left:
                break
            parts.append(pg[0:min(left, _PAGE_BYTES)])
            crc = crc32(parts[-1], crc)
            left -= len(parts[-1])
        parts.append(struct.pack("<I", crc & 0xFFFFFFFF))
        self._st.replace(SNAPSHOT, parts)
        self._gen = gen
        self._st.remove(JOURNAL)
        self._jsize = 0
        self._jdirty = self._need_snap = False

    # Read snapshot and journal; 0 when clean, else PROBLEM_* bits. Never raises on bad data.
    def load(self):
        self._reset(0)  # no records until the snapshot says how many
        self._st.remove(SNAPSHOT + ".tmp")  # left by a cut during a snapshot write
        problems = 0
        size = self._st.size(SNAPSHOT)
        if size < 0:
            self._reset(self._cap0)
        elif not self._load_snapshot(size):
            self._reset(self._cap0)
            self._need_snap = True
            problems = PROBLEM_SNAPSHOT
        status = self._load_journal(not self._need_snap)
        if status == 2:
            problems |= PROBLEM_JOURNAL
        elif status == 1 and size < 0:
            problems |= PROBLEM_SNAPSHOT  # a journal past generation 0 but no snapshot: lost
        return problems

    def _load_snapshot(self, size):
        n = (size - _HEAD - 4) // RECORD_LEN
        if size < _HEAD + 4 or size != _HEAD + n * RECORD_LEN + 4 or n > MAX_CODES:
            return False
        f = self._st.open(SNAPSHOT)
        if f is None:
            return False
        try:
            gen = self._read_snapshot(f, n)
        finally:
            f.close()
        if gen < 0:
            return False
        for s in range(n):  # check and index without allocating per record
            pg, o = self._pages[s // _PAGE], (s % _PAGE) * RECORD_LEN
            if not _sane(pg, o) or self._held(pg, o + 4):
                return False
            self._insert(s)
            self._n = s + 1
        self._gen = gen
        return True

    # True if a stored record already has the digest at buf[off].
    def _held(self, buf, off):
        idx, mask = self._index, self._mask
        i = self._home(buf, off)
        while idx[i]:
            s = idx[i] - 1
            pg, o = self._pages[s // _PAGE], (s % _PAGE) * RECORD_LEN + 4
            k = 0
            while k < DIGEST_LEN and pg[o + k] == buf[off + k]:
                k += 1
            if k == DIGEST_LEN:
                return True
            i = (i + 1) & mask
        return False

    # Read `n` records straight into the pages (no second buffer); generation, or -1 if bad.
    def _read_snapshot(self, f, n):
        head = f.read(_HEAD)
        if len(head) != _HEAD or head[0:4] != _MAGIC or struct.unpack_from("<I", head, 8)[0] != n:
            return -1
        self._reset(max(n, self._cap0))
        crc = crc32(head)
        left = n * RECORD_LEN
        for pg in self._pages:
            if not left:
                break
            part = pg[0:min(left, _PAGE_BYTES)]
            got = 0
            while got < len(part):
                k = f.readinto(part[got:])
                if not k:
                    return -1
                got += k
            crc = crc32(part, crc)
            left -= len(part)
        tail = f.read(4)
        if len(tail) != 4 or struct.unpack("<I", tail)[0] != crc & 0xFFFFFFFF:
            return -1
        return struct.unpack_from("<I", head, 4)[0]

    # Replay the journal (with replay False, only learn its generation). Returns 0 clean
    # or absent, 1 stale (follows an older snapshot: ignored), 2 torn or corrupt.
    def _load_journal(self, replay):
        f = self._st.open(JOURNAL)
        if f is None:
            return 0
        try:
            r = self._read_journal(f, replay)
        finally:
            f.close()
        status = r & 3
        self._jsize = 0 if status == 1 else r >> 2
        self._jdirty = status != 0
        return status

    # (valid bytes << 2) | status, reading frame by frame (at most 46 bytes at a time).
    def _read_journal(self, f, replay):
        pos = 0
        while True:
            head = f.read(2)
            if not head:
                return pos << 2
            n = (head[0] | (head[1] << 8)) if len(head) == 2 else 0
            rest = f.read(n + 4) if 0 < n <= _MAX_OP else b""
            fr = head + rest
            if len(rest) != n + 4 or frame_at(fr, 0) is None:
                return (pos << 2) | 2
            if pos:
                if not self._replay(memoryview(fr)[2:2 + n]):
                    return (pos << 2) | 2
            elif fr[2] != _OP_HEAD or n != 5:
                return 2
            elif not replay:
                self._gen = struct.unpack_from("<I", fr, 3)[0]  # the next snapshot must differ
                return 1
            elif struct.unpack_from("<I", fr, 3)[0] != self._gen:
                return 1  # follows an older snapshot: ignored
            pos += n + 6

    # Apply one journal op to RAM; False if it cannot be applied (corrupt journal).
    def _replay(self, op):
        kind, n = op[0], len(op)
        if kind == _OP_ADD and n == 1 + RECORD_LEN:
            rec = bytes(op[1:])
            if not _sane(rec, 0):
                return False
            old = self._replaces(rec)
            if old < -1 or (old < 0 and self._n == self._cap and self._cap >= MAX_CODES):
                return False
            if old < 0 and self._n == self._cap:
                self._grow()
            self._put(rec, old)
        elif kind == _OP_REVOKE and n == 5:
            s = self.slot_of(struct.unpack_from("<I", op, 1)[0])
            if s >= 0:
                self._remove(s)
        elif (kind == _OP_CONSUME or kind == _OP_GIVEBACK) and n == 7:
            s = self.slot_of(struct.unpack_from("<I", op, 1)[0])
            if s >= 0:
                pg, o = self._at(s)
                pg[o + 22] = op[5]
                pg[o + 23] = op[6]
        elif kind == _OP_EXPIRE and n == 5:
            self._expire(struct.unpack_from("<I", op, 1)[0], True)
        else:
            return False
        return True
