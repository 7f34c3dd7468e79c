# The box's code store: keyed digests of codes with role, compartment, uses and validity
# window, in 512-byte pages of 32-byte records with an open-addressing digest index (docs/codestore.md).
import struct
from array import array
from hashlib import sha256

from parcelbox.codefile import (OP_ADD, OP_CONSUME, OP_EXPIRE, OP_GIVEBACK, OP_LEN,
                                OP_REVOKE, PAGE_MASK, PAGE_RECS, PAGE_SHIFT, R_DIGEST,
                                R_ID, R_NA, R_NB, R_USES, REC, ZERO, CodeFile, cmp_u32)
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
    # Every buffer is allocated here, once: `capacity` records in pages and an index of
    # the smallest power of two >= 2 * capacity u16 entries, in 512-byte chunks. Nothing
    # is allocated for codes later, so a long-running box cannot fragment its heap.
    # Its flash side (snapshot and journal) is a CodeFile.
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
        self._pg = []
        self._cap = 0
        while self._cap < capacity:
            self._pg.append(memoryview(bytearray(PAGE_RECS * REC)))  # slices without copies
            self._cap += PAGE_RECS
        size = 1 << len(bin(self._cap - 1)) - 1
        self._ix = []
        for i in range(0, size, 256):
            self._ix.append(array("H", bytes(2 * min(size, 256))))
        self._m = size - 1
        self.clear(1)

    # ValueError unless `cap` records fit.
    def _grow(self, cap):
        if cap > self._cap:
            raise ValueError("code store full")

    # An empty store in RAM (the file's load fills it); ValueError unless `cap` records fit.
    def clear(self, cap):
        self._n = 0
        self._index(R_DIGEST)
        self._grow(cap)

    # The page holding slot s (a memoryview of its records; the file reads and writes these).
    def page(self, s):
        return self._pg[s >> PAGE_SHIFT]

    # The file read `n` records into the pages: index them by code_id, checking each.
    def loaded(self, n):
        self._n = n
        self._index(R_ID)

    # Apply one journal op read from flash (ValueError: it cannot apply).
    def replay(self, op):
        self._do(op, False)

    # The digest index rebuilt after loading; False (and EMPTY) if a digest is held twice.
    def reindex(self):
        try:
            self._index(R_DIGEST)
            return True
        except ValueError:
            self._n = 0  # EMPTY, keeping the generation
            self._index(R_DIGEST)
            return False

    # Apply a journal op to RAM, first appending it to the journal if `write`; returns the
    # codes it hit (0: nothing written). ValueError if it cannot apply (a corrupt journal
    # on replay). Codes that go rebuild the index, except on replay: load() does it then.
    # `hit`: the slot of its code_id when the caller knows it (no scan).
    def _do(self, op, write, hit=None):
        self.changes += 1  # callers that cache a figure about the set watch this
        k = op[0]
        if not 0 < k <= OP_EXPIRE or len(op) != OP_LEN[k]:
            raise ValueError("bad op")
        if k == OP_ADD:
            s = self._find(op[1 + R_DIGEST:1 + R_DIGEST + DIGEST_LEN]) if write else -1
            if s >= 0:
                pg, o = self._at(s)
                if cmp_u32(pg, o + R_ID, op, 1 + R_ID):
                    raise ValueError("digest in use")
            if self._n >= self._cap and self.slot_of(struct.unpack_from("<I", op, 1)[0]) < 0:
                self._grow(self._n + 1)  # full, and not a replacement: ValueError
        # Two passes over the codes it hits: the first only counts them (nothing hit: no
        # write; an ADD is written anyway), the journal write goes between, the second
        # applies it. RAM changes only after the op is on flash.
        for act in (0, 1):
            n = 0
            scan = range(self._n - 1, -1, -1) if hit is None else (hit,)
            for s in scan if act or k != OP_ADD else ():  # backwards: a moved-in record was seen
                pg, o = self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5
                if not (cmp_u32(pg, o + R_NA, op, 1) < 0 < cmp_u32(pg, o + R_NA, ZERO, 0)
                        if k == OP_EXPIRE else not cmp_u32(pg, o + R_ID, op, 1)):
                    continue  # EXPIRE: ended before its time; the others: its code_id
                n += 1
                if act and (k == OP_CONSUME or k == OP_GIVEBACK):  # uses left as journaled
                    pg[o + R_USES] = op[5]
                    pg[o + R_USES + 1] = op[6]
                elif act:  # REVOKE, EXPIRE, ADD (the old code): the last record moves in
                    q, r = self._at(self._n - 1)
                    pg[o:o + REC] = q[r:r + REC]
                    self._n -= 1
            if not (act or n or k == OP_ADD):
                return 0
            if write and not act:
                self._file.append(op, self)
        if k == OP_ADD:
            self._n += 1
            pg, o = self._at(self._n - 1)
            pg[o:o + REC] = op[1:]
            if cmp_u32(op, 1 + R_NA, ZERO, 0) and (
                    not self.next_end or cmp_u32(op, 1 + R_NA, self._end, 0) < 0):
                self._ends()  # an earlier end than any stored: the sweep must wake for it
        elif k == OP_EXPIRE and write:
            self._ends()
        if write and n and not (k == OP_CONSUME or k == OP_GIVEBACK):
            self._index(R_DIGEST)  # codes went (REVOKE, EXPIRE, a replacing ADD)
        elif write and k == OP_ADD:
            self._find(op[1 + R_DIGEST:1 + R_DIGEST + DIGEST_LEN], R_DIGEST, self._n)  # new
        return n

    # Read snapshot and journal into RAM (CodeFile.load); 0 when clean, else PROBLEM_*
    # bits. Never raises on bad data: a bad snapshot leaves the store EMPTY.
    def load(self):
        self.changes += 1
        p = self._file.load(self)
        self._ends()
        return p

    # Rebuild the index in place keyed by digest (ko=R_DIGEST), or by code_id (ko=R_ID)
    # checking every record too. ValueError on an impossible record or a key held twice.
    def _index(self, ko):
        for chunk in self._ix:
            for i in range(len(chunk)):
                chunk[i] = 0
        for s in range(self._n):
            pg, o = self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5
            if ko == R_ID:
                _pack(_FMT, struct.unpack_from(_FMT, pg, o))
            if self._find(pg[o + ko:o + ko + (DIGEST_LEN if ko else 4)], ko, s + 1) >= 0:
                raise ValueError("id or digest twice")

    # Page and offset of a stored slot; ValueError for anything else.
    def _at(self, s):
        if not isinstance(s, int) or not 0 <= s < self._n:
            raise ValueError("bad slot")
        return self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5

    # Slot whose key at record offset ko equals `key`, or -1; then, unless `put` is None,
    # the index entry found (or the free one ending the probe) is set to `put`. Entry i
    # (slot+1, 0 free) is in chunk i >> 8 at i & 255. Candidates compare in constant time.
    def _find(self, key, ko=R_DIGEST, put=None):
        ix, m = self._ix, self._m
        i = (key[0] | key[1] << 8 | key[2] << 16) & m  # digests are uniformly random
        while True:
            s = ix[i >> 8][i & 255] - 1
            if s < 0:
                break
            pg, o = self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5
            if equal(key, pg[o + ko:o + ko + len(key)]):
                break
            i = (i + 1) & m
        if put is not None:
            ix[i >> 8][i & 255] = put
        return s

    # Find the earliest nonzero not_after (next_end), comparing in place: no big ints.
    def _ends(self):
        b = None
        for s in range(self._n):
            pg, o = self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5
            if cmp_u32(pg, o + R_NA, ZERO, 0) and (b is None or cmp_u32(pg, o + R_NA, b[0], b[1]) < 0):
                b = (pg, o + R_NA)
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
        self._index(4)
        self._ends()
        self._file.snapshot(self)

    # 16-byte keyed digest of a typed code (ASCII digits as bytes); the backend computes the same.
    def digest(self, code):
        return self._mac.digest(code)[:DIGEST_LEN]

    # Slot of the typed code, or -1: one HMAC, one index lookup.
    def find(self, code):
        return self.find_digest(self.digest(code))

    # Slot holding `digest`, or -1.
    def find_digest(self, digest):
        if len(digest) != DIGEST_LEN:
            raise ValueError("digest not 16 bytes")
        return self._find(digest)

    # (code_id, role, compartment, uses, not_before, not_after) of a slot.
    def fields(self, slot):
        return struct.unpack_from("<I16xBBHII", *self._at(slot))

    # Slot of `code_id`, or -1: a linear scan allocating nothing per record (backend
    # commands only). ValueError if code_id is no u32.
    def slot_of(self, code_id):
        k = _pack("<I", (code_id,))
        for s in range(self._n):
            if not cmp_u32(self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5, k, 0):
                return s
        return -1

    def count(self):
        return self._n

    # Codes the store can hold (the capacity asked for, rounded up to whole pages).
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
            pg, o = self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5
            if ((pg[o + R_USES] | pg[o + R_USES + 1]) and cmp_u32(pg, o + R_NB, t, 0) <= 0
                    and not cmp_u32(pg, o + R_NA, t, 0) < 0 < cmp_u32(pg, o + R_NA, ZERO, 0)):
                n += 1
            s += 1
        return n

    # 16 bytes naming the whole set, whatever the order and the uses left (set_digest_of).
    def set_digest(self):
        return set_digest_of(self.records())

    # Each stored 32-byte record (a view into the pages, valid until the next change).
    def records(self):
        for s in range(self._n):
            pg, o = self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5
            yield pg[o:o + REC]

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
        pg, o = self._pg[s >> PAGE_SHIFT], (s & PAGE_MASK) << 5
        if cmp_u32(pg, o, r, 0):
            return -1
        u = pg[o + R_USES] | pg[o + R_USES + 1] << 8
        return u if u < (r[R_USES] | r[R_USES + 1] << 8) else -1

    # Full sync: every code replaced by `records` (any iterable of add() tuples), all or
    # nothing. Built over the old records in RAM; on any error RAM is reloaded from flash.
    # `count`, when the sender announces it, refuses a set too big before any is read.
    def replace_all(self, records, count=0):
        self.changes += 1
        try:
            self._n = 0  # the index is stale while the records come: rebuilt at the end
            self._grow(count)
            for r in records:
                rec = _pack(_FMT, r)
                self._grow(self._n + 1)
                s = self._n
                self._n += 1
                self._pg[s >> PAGE_SHIFT][(s & PAGE_MASK) << 5:((s & PAGE_MASK) << 5) + REC] = rec
            self._index(0)  # ValueError on an impossible record or a code_id twice...
            self._index(4)  # ...or a digest twice
            self._ends()
            self._file.snapshot(self)
        except Exception:
            self.load()
            raise
