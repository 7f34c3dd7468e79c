# The box's code store: codes as keyed digests with role, compartment, uses and validity
# window. RAM keeps 20 bytes a code, sorted by a 2-byte digest prefix; the whole 32-byte
# record stays on flash and is read back on a prefix match (docs/codestore.md).
import struct
from hashlib import sha256

from parcelbox.codefile import (AT_LOG, NEW, OP_ADD, OP_CONSUME, OP_EXPIRE, OP_GIVEBACK, OP_LEN,
                                OP_REVOKE, R_DIGEST, R_ID, R_NA, R_NB, R_ROLE, R_USES, REC,
                                ZERO, CodeFile, cmp_u32)
from parcelbox.hmac256 import Hmac, equal

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

ROLE_RECIPIENT = const(1)
ROLE_DRIVER = const(2)
ROLE_OWNER = const(3)
ROLE_TECH = const(4)
ROLE_REMOTE = const(5)     # not a code's role: the opener of a remote unlock (events only)
UNLIMITED = const(0xFFFF)  # uses value that never runs out
DIGEST_LEN = const(16)     # HMAC-SHA256(code_key, code) truncated
PROBLEM_SNAPSHOT = const(1)  # load(): snapshot corrupt, truncated or lost; the store is EMPTY
PROBLEM_JOURNAL = const(2)   # load(): a torn journal tail (a cut append) dropped
PROBLEM_CORRUPT = const(4)   # load(): journal damaged (a bad whole record); the store is EMPTY
PROBLEM_OLD = const(8)       # the Box: files older or shorter than the state says; EMPTY

# A code in RAM: 20 bytes (docs/codestore.md section 6), in pages of _PAGE codes (500 B:
# small enough for the holes a fragmented ESP32 heap keeps, ~5% object overhead).
_C_ID = const(0)     # u32 code_id
_C_PRE = const(4)    # the digest's first 2 bytes: the sort key
_C_ROLE = const(6)   # role, compartment, uses, not_before, not_after: the record's 20..31
_C_USES = const(8)   # u16
_C_NB = const(10)    # u32
_C_NA = const(14)    # u32
_C_AT = const(18)    # u16: where the whole record is on flash (codefile AT_LOG)
_C = const(20)
_PAGE = const(25)

_FMT = "<I16sBBHII"  # code_id, digest, role, compartment, uses, not_before, not_after


# struct.pack(fmt, *vals); ValueError unless each value fits exactly (no bools), and a
# record can be stored: code_id set, role known, window not reversed (0 < not_after <
# not_before).
def _pack(fmt, vals):
    try:
        b = struct.pack(fmt, *vals)
        v = struct.unpack(fmt, b)
        ok = v == tuple(vals) and (fmt != _FMT or v[0] and 0 < v[2] < 5 and not 0 < v[6] < v[5])
    except Exception:  # struct.error on CPython; TypeError on MicroPython
        ok = False
    for x in vals:
        if x is True or x is False:
            ok = False
    if not ok:
        raise ValueError("bad field or not_after")
    return b


# The protocol's set digest (docs/protocol.md section 5) of `records`, any iterable of
# 32-byte records: SHA-256(u32 count || XOR of SHA-256 of each record without `uses`,
# i.e. its bytes 0-21 and 24-31), truncated. Order does not matter.
def set_digest_of(records):
    acc = n = 0
    for r in records:
        h = sha256(r[:R_USES])
        h.update(r[R_NB:REC])
        acc ^= int.from_bytes(h.digest(), "little")
        n += 1
    return sha256(struct.pack("<I", n) + acc.to_bytes(32, "little")).digest()[:DIGEST_LEN]


class CodeStore:
    # Every buffer is allocated here, once: pages for `capacity` codes. Nothing is
    # allocated for codes later, so a long-running box cannot fragment its heap. Its
    # flash side (snapshot and journal) is a CodeFile.
    def __init__(self, storage, code_key, capacity=1024, compact_at=4096):
        if type(code_key) is str or len(code_key) != 32:
            raise ValueError("code key must be 32 bytes")
        if not isinstance(capacity, int) or not 1 <= capacity <= 16384:
            raise ValueError("code capacity must be 1..16384")
        self._file = CodeFile(storage, compact_at)
        self.changes = 0  # counts every change of the set (add, revoke, use, load, ...)
        self._mac = Hmac(code_key)
        self._t_s = -1  # active_count's time, and the same packed as a u32
        self._t = ZERO
        self._end = bytearray(4)  # the earliest not_after stored (u32), as next_end
        self.next_end = 0  # earliest not_after of a stored code (0: none): the expiry sweep's
        self._buf = bytearray(REC)  # a whole record read back from flash
        self._sd = None  # the set digest, until the set changes
        self._pg = []
        for _ in range(0, capacity, _PAGE):
            self._pg.append(bytearray(_PAGE * _C))
        self._cap = capacity
        self.clear(1)

    # ValueError unless `cap` records fit.
    def _grow(self, cap):
        if cap > self._cap:
            raise ValueError("code store full")

    # An empty store in RAM (the file's load fills it); ValueError unless `cap` records fit.
    def clear(self, cap):
        self._n = 0
        self._sd = None
        self._grow(cap)

    # Slot s from the 32-byte record `r` (checked: ValueError), whose flash place is `at`.
    def put(self, s, r, at):
        _pack(_FMT, struct.unpack(_FMT, r))
        pg, o = self._pg[s // _PAGE], s % _PAGE * _C
        pg[o:o + 6] = r[:6]
        pg[o + _C_ROLE:o + _C_AT] = r[R_ROLE:REC]
        pg[o + _C_AT] = at & 255
        pg[o + _C_AT + 1] = at >> 8

    # The file put `n` records in: ValueError if a code_id is held twice.
    def loaded(self, n):
        self._n = n
        self._sort(_C_ID)
        for s in range(1, n):
            if not self._cmp(s - 1, s, _C_ID):
                raise ValueError("id twice")

    # The whole 32-byte record of slot s into buf, read back from flash, with the fields
    # RAM holds (the uses are RAM's). False if flash does not hold that code there.
    def full(self, s, buf):
        pg, o = self._pg[s // _PAGE], s % _PAGE * _C
        try:
            self._file.read(pg[o + _C_AT] | pg[o + _C_AT + 1] << 8, buf)
        except OSError:
            return False
        buf[R_ROLE:REC] = pg[o + _C_ROLE:o + _C_AT]
        return not cmp_u32(buf, R_ID, pg, o) and buf[4:6] == pg[o + _C_PRE:o + _C_ROLE]

    # The snapshot now holds slot s at index s (CodeFile.snapshot).
    def placed(self):
        for s in range(self._n):
            pg, o = self._pg[s // _PAGE], s % _PAGE * _C + _C_AT
            pg[o] = s & 255
            pg[o + 1] = s >> 8

    # Apply one journal op read from flash at journal offset `at` (ValueError: it cannot apply).
    def replay(self, op, at):
        self._do(op, False, None, at)

    # Sorted by digest prefix after loading; False (and EMPTY) if a digest is held twice.
    def reindex(self):
        try:
            self._sort_check()
            return True
        except ValueError:
            self._n = 0  # EMPTY, keeping the generation
            return False

    # Sort by code_id (ValueError if one is held twice), then by digest prefix (ValueError
    # if a digest is held twice: equal prefixes are compared whole, from flash).
    def _sort_check(self):
        self._sd = None
        self.loaded(self._n)
        self._sort(_C_PRE)
        a = self._buf
        b = bytearray(REC)
        for s in range(1, self._n):
            if (self._key(s - 1) == self._key(s) and self.full(s - 1, a) and self.full(s, b)
                    and equal(a[R_DIGEST:R_ROLE], b[R_DIGEST:R_ROLE])):
                raise ValueError("digest twice")

    # Apply a journal op to RAM, first appending it to the journal if `write`; returns the
    # codes it hit (0: nothing written). ValueError if it cannot apply (a corrupt journal
    # on replay). `hit`: the slot of its code_id when the caller knows it (no scan); `at`:
    # where a replayed ADD is in the journal. RAM stays sorted, except on replay: load()
    # sorts it then.
    def _do(self, op, write, hit=None, at=0):
        self.changes += 1  # callers that cache a figure about the set watch this
        k = op[0]
        if not 0 < k <= OP_EXPIRE or len(op) != OP_LEN[k]:
            raise ValueError("bad op")
        if k == OP_ADD:
            s = self._find(op[1 + R_DIGEST:1 + R_DIGEST + DIGEST_LEN]) if write else -1
            if s >= 0 and cmp_u32(self._pg[s // _PAGE], s % _PAGE * _C, op, 1 + R_ID):
                raise ValueError("digest in use")
            if self._n >= self._cap and self.slot_of(struct.unpack_from("<I", op, 1)[0]) < 0:
                self._grow(self._n + 1)  # full, and not a replacement: ValueError
            if not write and at > 0x7FFF:
                raise ValueError("journal too long")
        # Count the codes it hits first (nothing hit: no write; an ADD is written anyway),
        # the journal write goes between, then apply it. RAM changes only after the op is
        # on flash.
        n = 0
        for s in range(self._n) if hit is None else (hit,):
            if self._hits(s, k, op):
                n += 1
        if not (n or k == OP_ADD):
            return 0
        if write:
            at = self._file.append(op, self)
        if k == OP_CONSUME or k == OP_GIVEBACK:  # uses left as journaled
            for s in range(self._n) if hit is None else (hit,):
                if self._hits(s, k, op):
                    pg, o = self._pg[s // _PAGE], s % _PAGE * _C + _C_USES
                    pg[o] = op[5]
                    pg[o + 1] = op[6]
        elif n:  # REVOKE, EXPIRE, ADD (the old code): the others close up, in order
            self._sd = None
            w = 0
            for s in range(self._n):
                if not self._hits(s, k, op):
                    if w < s:
                        self._pg[w // _PAGE][w % _PAGE * _C:w % _PAGE * _C + _C] = \
                            self._pg[s // _PAGE][s % _PAGE * _C:s % _PAGE * _C + _C]
                    w += 1
            self._n = w
        if k == OP_ADD:
            self._sd = None
            s = self._n
            if write:  # its place in the order: the codes after it move up one
                s = self._lower(op[1 + R_DIGEST] | op[2 + R_DIGEST] << 8)
                for i in range(self._n, s, -1):
                    self._pg[i // _PAGE][i % _PAGE * _C:i % _PAGE * _C + _C] = \
                        self._pg[(i - 1) // _PAGE][(i - 1) % _PAGE * _C:(i - 1) % _PAGE * _C + _C]
            self._n += 1
            self.put(s, op[1:], at | AT_LOG)
            if cmp_u32(op, 1 + R_NA, ZERO, 0) and (
                    not self.next_end or cmp_u32(op, 1 + R_NA, self._end, 0) < 0):
                self._ends()  # an earlier end than any stored: the sweep must wake for it
        elif k == OP_EXPIRE and write:
            self._ends()
        return n

    # Whether op (kind k) hits slot s: EXPIRE a code that ended before its time, the
    # others the code with its code_id.
    def _hits(self, s, k, op):
        pg, o = self._pg[s // _PAGE], s % _PAGE * _C
        if k == OP_EXPIRE:
            return cmp_u32(pg, o + _C_NA, op, 1) < 0 < cmp_u32(pg, o + _C_NA, ZERO, 0)
        return not cmp_u32(pg, o + _C_ID, op, 1)

    # Read snapshot and journal into RAM (CodeFile.load); 0 when clean, else PROBLEM_*
    # bits. Never raises on bad data: a bad snapshot leaves the store EMPTY.
    def load(self):
        self.changes += 1
        p = self._file.load(self)
        self._ends()
        return p

    # The digest prefix of slot s, as a small int.
    def _key(self, s):
        pg, o = self._pg[s // _PAGE], s % _PAGE * _C + _C_PRE
        return pg[o] | pg[o + 1] << 8

    # Sign of slot a against slot b: by code_id (ko=_C_ID), or by prefix then code_id.
    def _cmp(self, a, b, ko):
        if ko != _C_ID:
            d = self._key(a) - self._key(b)
            if d:
                return d
        return cmp_u32(self._pg[a // _PAGE], a % _PAGE * _C, self._pg[b // _PAGE], b % _PAGE * _C)

    # Heapsort of the slots in place (no second set in RAM), by _cmp(ko).
    def _sort(self, ko):
        n = self._n
        for i in range(n // 2 - 1, -1, -1):
            self._sift(i, n, ko)
        for e in range(n - 1, 0, -1):
            self._swap(0, e)
            self._sift(0, e, ko)

    def _sift(self, i, n, ko):
        while True:
            c = 2 * i + 1
            if c >= n:
                return
            if c + 1 < n and self._cmp(c, c + 1, ko) < 0:
                c += 1
            if self._cmp(i, c, ko) >= 0:
                return
            self._swap(i, c)
            i = c

    def _swap(self, a, b):
        pa, oa = self._pg[a // _PAGE], a % _PAGE * _C
        pb, ob = self._pg[b // _PAGE], b % _PAGE * _C
        t = pa[oa:oa + _C]
        pa[oa:oa + _C] = pb[ob:ob + _C]
        pb[ob:ob + _C] = t

    # The first slot whose prefix is not below `key` (binary search).
    def _lower(self, key):
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._key(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # Page and offset of a stored slot; ValueError for anything else.
    def _at(self, s):
        if not isinstance(s, int) or not 0 <= s < self._n:
            raise ValueError("bad slot")
        return self._pg[s // _PAGE], s % _PAGE * _C

    # Slot holding `digest` (16 bytes), or -1: a binary search for its prefix, then each
    # code with that prefix read back from flash and compared whole, in constant time.
    # A record flash cannot give back matches nothing: the box fails closed.
    def _find(self, digest):
        key = digest[0] | digest[1] << 8
        s = self._lower(key)
        buf = self._buf
        while s < self._n and self._key(s) == key:
            if self.full(s, buf) and equal(digest, buf[R_DIGEST:R_DIGEST + DIGEST_LEN]):
                return s
            s += 1
        return -1

    # Find the earliest nonzero not_after (next_end), comparing in place: no big ints.
    def _ends(self):
        b = None
        for s in range(self._n):
            pg, o = self._pg[s // _PAGE], s % _PAGE * _C + _C_NA
            if cmp_u32(pg, o, ZERO, 0) and (b is None or cmp_u32(pg, o, b[0], b[1]) < 0):
                b = (pg, o)
        if b is None:
            self.next_end = 0
        else:
            self._end[:] = b[0][b[1]:b[1] + 4]
            self.next_end = struct.unpack("<I", self._end)[0]

    # next_end found again from the codes stored now (one whose code went otherwise is
    # stale): the earliest not_after, 0 if none.
    def find_end(self):
        self._ends()
        return self.next_end

    # (snapshot generation, journal bytes): what the flash must hold at least; the Box
    # keeps it in its state file and checks the files against it at boot.
    def mark(self):
        return self._file.gen, self._file.jlen

    # Every code goes, on flash at once (a new snapshot of a generation above `after`):
    # what the box cannot vouch for counts as revoked until the backend resyncs. OSError
    # escapes.
    def fail_closed(self, after=0):
        self.changes += 1
        if after > self._file.gen:
            self._file.gen = after
        self._n = 0  # the generation goes on: the snapshot is newer than any before
        self._sd = None
        self._ends()
        self._file.snapshot(self)

    # 16-byte keyed digest of a typed code (ASCII digits as bytes); the backend computes the same.
    def digest(self, code):
        return self._mac.digest(code)[:DIGEST_LEN]

    # Slot of the typed code, or -1: one HMAC, one binary search, one flash read.
    def find(self, code):
        return self.find_digest(self.digest(code))

    # Slot holding `digest`, or -1.
    def find_digest(self, digest):
        if len(digest) != DIGEST_LEN:
            raise ValueError("digest not 16 bytes")
        return self._find(digest)

    # (code_id, role, compartment, uses, not_before, not_after) of a slot.
    def fields(self, slot):
        return struct.unpack_from("<I2xBBHII", *self._at(slot))

    # Slot of `code_id`, or -1: a linear scan allocating nothing per record (backend
    # commands only). ValueError if code_id is no u32.
    def slot_of(self, code_id):
        k = _pack("<I", (code_id,))
        for s in range(self._n):
            if not cmp_u32(self._pg[s // _PAGE], s % _PAGE * _C, k, 0):
                return s
        return -1

    def count(self):
        return self._n

    # Codes the store can hold (the capacity asked for).
    def capacity(self):
        return self._cap

    # Codes usable at `now_s`: uses left and inside their window (bounds inclusive). Only
    # slots start..stop-1 with `start`/`stop`, so a big store can be counted in slices; a
    # slice at the same `now_s` as the last allocates nothing (the box counts every tick).
    def active_count(self, now_s, start=0, stop=-1):
        if now_s != self._t_s:
            self._t = _pack("<I", (now_s,))
            self._t_s = now_s
        t = self._t
        if stop < 0 or stop > self._n:
            stop = self._n
        n = 0
        s = start
        while s < stop:
            pg, o = self._pg[s // _PAGE], s % _PAGE * _C
            if ((pg[o + _C_USES] | pg[o + _C_USES + 1]) and cmp_u32(pg, o + _C_NB, t, 0) <= 0
                    and not cmp_u32(pg, o + _C_NA, t, 0) < 0 < cmp_u32(pg, o + _C_NA, ZERO, 0)):
                n += 1
            s += 1
        return n

    # 16 bytes naming the whole set, whatever the order and the uses left (set_digest_of);
    # read back from flash once per change of the set.
    def set_digest(self):
        if self._sd is None:
            self._sd = set_digest_of(self.records())
        return self._sd

    # Each stored 32-byte record, read back from flash (a record flash cannot give back
    # comes out as read, so the set digest differs and the backend resyncs).
    def records(self):
        f = self._file
        f.begin()
        try:
            buf = self._buf
            for s in range(self._n):
                self.full(s, buf)
                yield bytes(buf)
        finally:
            f.end()

    # add(code_id, digest, role, compartment, uses, not_before, not_after): a new code, or
    # one replacing the code with the same code_id. On flash before returning.
    def add(self, *rec):
        self._do(bytes((OP_ADD,)) + _pack(_FMT, rec), True)

    # Remove a code; False if there was none. On flash before returning.
    def revoke(self, code_id):
        return self._do(bytes((OP_REVOKE,)) + _pack("<I", (code_id,)), True) > 0

    # Remove codes whose window ended before `now_s`; returns how many (none: nothing written).
    def expire(self, now_s):
        n = self._do(bytes((OP_EXPIRE,)) + _pack("<I", (now_s,)), True)
        if not n:
            self._ends()  # next_end was early (its code went otherwise): the real one
        return n

    # Use one use of the code in `slot`; returns the uses left (UNLIMITED: nothing
    # written). On flash before returning. ValueError if none is left.
    def consume(self, slot):
        return self._change_uses(slot, OP_CONSUME, -1)

    # Journal op `op` setting the uses of `slot` to uses + delta, unless unlimited or
    # the result would be out of range (a give-back never makes a code unlimited).
    def _change_uses(self, slot, op, delta):
        f = self.fields(slot)
        u = f[3]
        if u < UNLIMITED:
            u += delta
            if u < 0:
                raise ValueError("used up")
            if u < UNLIMITED:
                self._do(struct.pack("<BIH", op, f[0], u), True, slot)
        return u

    # Return a use (unlocked, never opened). False if the code is gone, unlimited or full.
    def give_back(self, code_id):
        s = self.slot_of(code_id)
        return s >= 0 and self._change_uses(s, OP_GIVEBACK, 1) < UNLIMITED

    # For a full sync's record r (32 bytes): the uses this store holds for the same code
    # (code_id and digest) if fewer than r's, else -1. A sync built before a use the box
    # made since must not give that use back (Staging.end keeps the fewer).
    def fewer_uses(self, r):
        s = self._find(r[R_DIGEST:R_DIGEST + DIGEST_LEN])
        if s < 0:
            return -1
        pg, o = self._pg[s // _PAGE], s % _PAGE * _C
        if cmp_u32(pg, o, r, 0):
            return -1
        u = pg[o + _C_USES] | pg[o + _C_USES + 1] << 8
        return u if u < (r[R_USES] | r[R_USES + 1] << 8) else -1

    # Full sync: every code replaced by `records` (any iterable of add() tuples), all or
    # nothing. The records go to RAM over the old ones and to flash as they come (NEW),
    # then become the next snapshot; on any error RAM is reloaded from flash, which still
    # holds the old set. `count`, when the sender announces it, refuses a set too big
    # before any is read.
    def replace_all(self, records, count=0):
        self.changes += 1
        f = self._file
        st = f._st
        try:
            self._n = 0
            self._sd = None
            self._grow(count)
            st.remove(NEW)
            f.src = NEW
            page = bytearray(16 * REC)  # written to NEW 16 records at a time
            k = 0
            for r in records:
                rec = _pack(_FMT, r)
                self._grow(self._n + 1)
                self.put(self._n, rec, self._n)
                self._n += 1
                page[k:k + REC] = rec
                k += REC
                if k == len(page):
                    st.append(NEW, page)
                    k = 0
            if k:
                st.append(NEW, memoryview(page)[:k])
            self._sort_check()  # ValueError on a code_id or a digest twice
            self._ends()
            f.snapshot(self)
            f.src = None
            st.remove(NEW)
        except Exception:
            self.load()
            raise
