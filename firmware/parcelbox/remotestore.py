# What the remote side keeps on flash (docs/storage.md): the rotated wire key, settings
# changed by the backend, and a full sync staged part by part until its end commits it.
import json
import struct
from array import array
from binascii import crc32, unhexlify
from hashlib import sha256

from parcelbox import config
from parcelbox.codestore import set_digest_of
from parcelbox.hmac256 import equal
from parcelbox.protocol import (BAD_VALUE, FLASH, OK, RESTART_PENDING, SETTABLE,
                                SYNC_MISMATCH, SYNC_ORDER)
from parcelbox.storage import frame, frame_at

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

WIRE = "wirekey.bin"       # two identical frames: u32 key_gen, 32-byte wire key
SETTINGS = "settings.bin"  # one frame: a JSON object of settings the backend set
STAGE = "sync.bin"         # frames: 'B' sync begin, then 'P' parts of 32-byte records
_WIRE_FMT = "<I32s"
_WIRE_FRAME = const(42)
_BEGIN = "<BII16s"         # b"B", sync, count, set digest
_PART = "<BIH"             # b"P", sync, part; then the records
_PART_LEN = const(7)
_REC = "<I16sBBHII"        # a CodeStore record


# ((key_gen, wire key) saved by the last rotation, or None if there is none, damage flags):
# 1 both copies damaged (None), 2 one copy damaged (the other is taken, and written twice
# again here). Whether a missing file was expected is the Box state's to say.
def load_wire(storage):
    data = storage.read(WIRE)
    if data is None:
        return None, 0
    good = []
    for pos in (0, _WIRE_FRAME):
        r = frame_at(data, pos)
        if r is not None and r[1] - r[0] == 36:
            good.append(struct.unpack_from(_WIRE_FMT, data, r[0]))
    if not good:
        return None, 1
    if len(good) == 2 and good[0] == good[1] and len(data) == 2 * _WIRE_FRAME:
        return good[0], 0
    try:
        save_wire(storage, *good[0])  # repaired: rot in the other copy does not add up
    except OSError:
        pass
    return good[0], 2


# A wire key's 16-bit fingerprint (never 0, which names the box key): kept in the state
# file with its generation, so that an older wirekey.bin is known even when generations
# repeat (they start again at 1 after a fall back to the box key).
def wire_fp(key):
    d = sha256(b"pb-fp" + key).digest()
    return d[0] | d[1] << 8 | 1


# Save a new wire key, two copies in one atomic replace (bit rot in one leaves the other).
def save_wire(storage, gen, key):
    fr = frame(struct.pack(_WIRE_FMT, gen, key))
    storage.replace(WIRE, fr + fr)


# The settings the backend set ({} if none, or the file is damaged).
def load_settings(storage):
    data = storage.read(SETTINGS)
    r = frame_at(data, 0) if data else None
    if r is not None:
        try:
            d = json.loads(bytes(data[r[0]:r[1]]))
            if type(d) is dict:
                return d
        except (ValueError, RuntimeError):  # RecursionError: nested too deep (CPython)
            pass
    return {}


def save_settings(storage, settings):
    storage.replace(SETTINGS, frame(json.dumps(settings).encode()))


# The settings to build the Box with: the board's, overlaid with those the backend set.
# The shell calls this before creating its Box. Should the stored ones not fit this board
# (config.make refuses the mix), the board's alone.
def stored_settings(storage, board=None):
    s = dict(board or {})
    stored = load_settings(storage)
    for k in stored:
        if k in SETTABLE:
            s[k] = stored[k]
    try:
        config.make(s)
    except ValueError:
        return dict(board or {})
    return s


# Settings op: `new` (name: value), all or none, allowed names only and valid together
# with the box's other settings `cfg` and those saved before; saved for the next Box. A status.
def change_settings(storage, cfg, new):
    cfg = dict(cfg)
    stored = load_settings(storage)
    for k in stored:  # saved earlier, in effect at the same restart as `new`
        if k in SETTABLE:
            cfg[k] = stored[k]
    for k in new:
        if k not in SETTABLE:
            return BAD_VALUE
        cfg[k] = new[k]
    try:
        config.make(cfg)
    except ValueError:
        return BAD_VALUE
    stored.update(new)
    save_settings(storage, stored)
    return OK | RESTART_PENDING


# One frame from file f: its payload, None at a clean end, False if torn or damaged.
def _next(f):
    h = f.read(2)
    if not h:
        return None
    buf = h + f.read((h[0] | h[1] << 8) + 4) if len(h) == 2 else h
    r = frame_at(buf, 0)
    return False if r is None else memoryview(buf)[r[0]:r[1]]


# A full sync in progress (sync_begin, sync_part..., sync_end), staged in STAGE so that
# the code store changes only at the end, all at once.
class Staging:
    def __init__(self, storage):
        self._st = storage
        self._drop(False)
        f = storage.open(STAGE)
        if f is None:
            return
        try:
            p = _next(f)
            ok = p is not None and p is not False and len(p) == 25 and p[0] == 66
            if ok:
                _, self.sync, self.count, self.digest = struct.unpack(_BEGIN, p)
            while ok:
                p = _next(f)
                if p is None:
                    break
                ok = p is not False and self._fits(p)
                if ok:
                    self.parts += 1
                    self.staged += (len(p) - _PART_LEN) >> 5
        finally:
            f.close()
        if not ok:
            self._drop(True)  # damaged: the backend's next sync starts afresh

    # Drop the sync in progress (its sync_end then answers sync_order). OSError escapes.
    def drop(self):
        self._drop(True)

    # No sync in progress; with `remove`, the staging file goes too.
    def _drop(self, remove):
        self.begin_seq = 0  # the sync_begin command's seq (0: unknown, a sync read at boot)
        self.sync = -1
        self.count = self.parts = self.staged = 0
        self.digest = b""
        if remove:
            self._st.remove(STAGE)

    # True if payload p is the next part of this sync.
    def _fits(self, p):
        if len(p) < _PART_LEN or p[0] != 80 or (len(p) - _PART_LEN) & 31:
            return False
        _, sync, part = struct.unpack_from(_PART, p)
        return sync == self.sync and part == self.parts

    # sync_begin: drop any earlier sync and stage an empty one. OSError escapes.
    def begin(self, sync, count, digest):
        self._drop(False)
        self._st.replace(STAGE, frame(struct.pack(_BEGIN, 66, sync, count, digest)))
        self.sync, self.count, self.digest = sync, count, digest

    # sync_part: stage `codes` (code arrays checked by protocol.op_fields) as part `part`;
    # a status.
    def part(self, sync, part, codes):
        if sync != self.sync or part != self.parts:
            return SYNC_ORDER
        n = len(codes)
        if self.staged + n > self.count:
            self._drop(True)
            return SYNC_MISMATCH
        # A storage.frame built in place (u16 length, payload, crc32): no copies of a part
        # that may hold 80 codes.
        size = _PART_LEN + 32 * n
        buf = bytearray(size + 6)
        struct.pack_into("<HBIH", buf, 0, size, 80, sync, part)
        for i in range(n):
            a = codes[i]
            struct.pack_into(_REC, buf, 9 + 32 * i, a[0], unhexlify(a[1]), a[2], a[3], a[4],
                             a[5], a[6])
        struct.pack_into("<I", buf, size + 2, crc32(memoryview(buf)[:size + 2]) & 0xFFFFFFFF)
        try:
            self._st.append(STAGE, buf)
        except OSError:
            self._drop(True)  # a torn part: this sync cannot finish
            return FLASH
        self.parts += 1
        self.staged += n
        return OK

    # sync_end: check parts, count and set digest, then replace every code in `store` at
    # once (CodeStore.replace_all: all or nothing); a status. The sync is over afterwards.
    def end(self, sync, parts, store):
        if sync != self.sync:
            return SYNC_ORDER
        st = SYNC_ORDER if parts != self.parts else (
            SYNC_MISMATCH if self.staged != self.count else OK)
        f = self._st.open(STAGE) if st == OK else None
        if st == OK and f is None:  # staged parts that cannot be read: nothing applied
            st = FLASH
        # The digest's pass also notes each code the store holds with fewer uses (used
        # since the backend counted): the sync keeps the fewer, as u32 index << 16 | uses.
        low = array("I")
        try:
            if f is not None and not equal(set_digest_of(self._records(f, store, low)),
                                           self.digest):
                st = SYNC_MISMATCH
            elif f is not None:
                f.seek(0)
                store.replace_all(self._tuples(f, low), self.count)
        except ValueError:  # a code_id or digest twice, a record the store refuses
            st = BAD_VALUE
        except OSError:
            st = FLASH
        finally:
            if f is not None:
                f.close()
        self._drop(True)
        return st

    # Every staged record (a 32-byte view), reading file f part by part; with `store`,
    # noting in `low` each one whose code the store holds with fewer uses.
    def _records(self, f, store=None, low=None):
        _next(f)  # the begin frame
        i = 0
        for _ in range(self.parts):
            p = _next(f)
            if p is None or p is False:
                raise OSError("staging damaged")
            for o in range(_PART_LEN, len(p), 32):
                r = p[o:o + 32]
                if store is not None:
                    u = store.fewer_uses(r)
                    if u >= 0:
                        low.append(i << 16 | u)
                i += 1
                yield r

    def _tuples(self, f, low):
        i = j = 0
        for r in self._records(f):
            t = struct.unpack(_REC, r)
            if j < len(low) and low[j] >> 16 == i:
                t = t[:4] + (low[j] & 0xFFFF,) + t[5:]
                j += 1
            i += 1
            yield t
