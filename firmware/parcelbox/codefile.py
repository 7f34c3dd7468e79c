# The code store on flash: snapshot "codes.bin" and journal "codes.log" (docs/codestore.md
# sections 3-5). A CodeStore owns one CodeFile; both use the record and journal names here.
import struct
from binascii import crc32

from parcelbox.storage import frame, frame_at

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

# A record: 32 bytes, the offset of each field (docs/codestore.md section 2).
R_ID = const(0)         # u32 code_id
R_DIGEST = const(4)     # 16-byte keyed digest
R_ROLE = const(20)      # u8
R_COMP = const(21)      # u8 compartment
R_USES = const(22)      # u16 uses left
R_NB = const(24)        # u32 not_before
R_NA = const(28)        # u32 not_after
REC = const(32)

# Where a record is on flash (a CodeStore keeps it for each code, docs/codestore.md
# section 6): below AT_LOG, its index in the snapshot (or in NEW while a full sync is
# written); with AT_LOG set, the offset of its ADD frame in the journal.
AT_LOG = const(0x8000)
_MAX_AT = const(0x7F00)  # an ADD frame goes no further: the journal is compacted first

# Journal ops: the first byte of a journal record (docs/codestore.md section 3).
OP_HEAD = const(0)      # the snapshot generation this journal follows (its first record)
OP_ADD = const(1)       # + a 32-byte record
OP_REVOKE = const(2)    # + code_id
OP_CONSUME = const(3)   # + code_id + uses left
OP_GIVEBACK = const(4)  # + code_id + uses left
OP_EXPIRE = const(5)    # + time: codes whose window ended before it
# Length of each op's record, op byte included, indexed by op.
OP_LEN = b"\x05\x21\x05\x07\x07\x05"

ZERO = bytes(4)
_MAX_GEN = const(0x7FFFFFFF)  # one snapshot per ~300 uses: a generation above is damage
SNAPSHOT = "codes.bin"
JOURNAL = "codes.log"
NEW = "codes.new"  # a full sync's records as they come, before they become the snapshot


# Sign of (u32 at a[i]) - (u32 at b[j]), little-endian, without big ints.
def cmp_u32(a, i, b, j):
    return (((a[i + 3] << 8 | a[i + 2]) - (b[j + 3] << 8 | b[j + 2]))
            or ((a[i + 1] << 8 | a[i]) - (b[j + 1] << 8 | b[j])))


class CodeFile:
    # The generation of the newest snapshot, the journal's length after it, and whether
    # flash needs a fresh snapshot before the next append (a bad snapshot, a torn or
    # stale journal, an append not known to be complete).
    def __init__(self, storage, compact_at):
        self._st = storage
        self.limit = compact_at
        self.gen = self.jlen = 0
        self.dirty = False
        self.src = None  # NEW while a full sync's records are read from there
        self._fh = None  # files kept open for a pass over every record (begin .. end)

    # Append journal op `op` (bytes without framing); first a snapshot of `store` if flash
    # needs one or the journal passed compact_at (a failure there is retried later
    # unless flash needs it, or the journal is too long to say where an ADD is). OSError
    # escapes; RAM is the caller's to change after. Returns the op's frame offset.
    def append(self, op, store):
        if self.dirty or self.jlen > self.limit or self.jlen > _MAX_AT:
            try:
                self.snapshot(store)
            except OSError:
                if self.dirty or self.jlen > _MAX_AT:
                    raise
        fr = frame(op)
        if not self.jlen:  # a new journal starts with HEAD: the snapshot it follows
            fr = frame(struct.pack("<BI", OP_HEAD, self.gen)) + fr
        at = self.jlen + len(fr) - len(op) - 6
        self.dirty = True  # until the append is known to be complete
        self._st.append(JOURNAL, fr)
        self.dirty = False
        self.jlen += len(fr)
        return at

    # Keep the files open for many read()s (a snapshot, the set digest), until end().
    def begin(self):
        self._fh = {}

    def end(self):
        fh = self._fh
        self._fh = None
        for f in fh.values():
            f.close()

    # Read the 32-byte record at `at` (AT_LOG, above) into buf. OSError if it cannot.
    def read(self, at, buf):
        if at & AT_LOG:
            name, off = JOURNAL, (at & 0x7FFF) + 3  # the frame's length, the op byte
        elif self.src:
            name, off = self.src, at << 5
        else:
            name, off = SNAPSHOT, 12 + (at << 5)
        fh = self._fh
        f = fh.get(name) if fh is not None else None
        if f is None:
            f = self._st.open(name)
            if f is None:
                raise OSError(2, "record gone")
            if fh is not None:
                fh[name] = f
        try:
            f.seek(off)
            if f.readinto(buf) != REC:
                raise OSError(5, "record short")
        finally:
            if fh is None:
                f.close()

    # Write the store's records as the next generation's snapshot, each read from where
    # it is on flash and written on (one record in RAM at a time), then drop the journal.
    def snapshot(self, store):
        self.gen += 1  # even if the write fails: a generation may be skipped, never reused
        self.begin()
        try:
            self._st.replace(SNAPSHOT, self._records(store, store.count()))
        finally:
            self.end()
        store.placed()  # every record is now at its slot's index in the snapshot
        self._st.remove(JOURNAL)
        self.jlen = 0
        self.dirty = False

    # The parts of a snapshot of `store`'s n records: header, records, crc. A record that
    # cannot be read back as the one the store holds is an OSError: nothing is replaced.
    def _records(self, store, n):
        h = struct.pack("<4sII", b"PBC1", self.gen, n)
        crc = crc32(h)
        yield h
        buf = bytearray(REC)
        for s in range(n):
            if not store.full(s, buf):
                raise OSError(5, "record unreadable")
            crc = crc32(buf, crc)
            yield buf
        yield struct.pack("<I", crc)

    # Read snapshot and journal into `store` (its pages, then each journal op through
    # store.replay). Bits: 1 the snapshot is bad or lost (the store is EMPTY), 2 a torn
    # journal tail dropped, 4 damage inside the journal (EMPTY). Never raises on bad data.
    def load(self, store):
        st = self._st
        self.gen = self.jlen = 0  # until a good snapshot or the journal's HEAD says
        store.clear(1)  # the old records go before the new ones come
        self.src = None
        st.remove(SNAPSHOT + ".tmp")  # left by a cut during a snapshot write
        st.remove(NEW)  # left by a cut during a full sync
        size = st.size(SNAPSHOT)
        n = (size - 16) >> 5
        f = st.open(SNAPSHOT)
        bad = size >= 0
        if f:
            try:  # record by record into the store, which keeps what it needs of each
                h = f.read(12)
                if (size == 16 + (n << 5) and h[:4] == b"PBC1" and h[8:] == struct.pack("<I", n)
                        and struct.unpack_from("<I", h, 4)[0] <= _MAX_GEN):
                    store.clear(n or 1)
                    crc = crc32(h)
                    buf = bytearray(REC)
                    for s in range(n):
                        if f.readinto(buf) != REC:
                            raise ValueError
                        crc = crc32(buf, crc)
                        store.put(s, buf, s)  # ValueError: an impossible record
                    if f.read(4) == struct.pack("<I", crc):
                        store.loaded(n)  # ValueError: an impossible record or a code_id twice
                        self.gen = struct.unpack_from("<I", h, 4)[0]
                        bad = False
            except ValueError:
                pass
            finally:
                f.close()
        if bad:
            store.clear(1)
        f = st.open(JOURNAL)
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
            elif k >= 0 and (k > OP_EXPIRE or OP_LEN[k] != n or (k == OP_HEAD) != (pos == 0)):
                r = 3  # the op does not fit its length, or HEAD not first (or again)
            elif len(body) < n + 4:
                r = 2  # a short tail: the append a power cut stopped
            elif frame_at(fr, 0) is None:
                r = 3
            elif pos:
                try:
                    store.replay(memoryview(fr)[2:-4], pos)
                except (ValueError, IndexError):
                    r = 3
            elif struct.unpack_from("<I", fr, 3)[0] > _MAX_GEN:
                r = 3
            else:
                g = struct.unpack_from("<I", fr, 3)[0]
                if not bad and g > self.gen:
                    store.clear(1)  # the snapshot is older than its journal: it went back
                    bad = True
                if bad or g != self.gen:
                    self.gen = g  # the next snapshot must not carry this generation
                    r = 1
            if not r:
                pos += len(fr)
        if f:
            f.close()
        if r == 3:
            # Damage inside the journal: the revokes and uses after it are unknown, and
            # replaying only the prefix could bring back a revoked or used-up code. Fail
            # closed, as for a bad snapshot: EMPTY until the backend resyncs.
            store.clear(1)
            bad = True
        if not store.reindex():  # replay leaves it behind; a digest twice: EMPTY
            bad = True
        self.jlen = pos
        self.dirty = bad or r > 0
        return (1 if bad and r != 3 or (r == 1 and size < 0) else 0) | (2 if r == 2 else 0) | (
            4 if r == 3 else 0)
