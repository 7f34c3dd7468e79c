# Fuzz target "flash": the files a short real run leaves (codes, journal, events, both
# state copies, wire key, settings, a staged sync) mutated, then a Box and a Remote built
# on them, as at boot. Nothing may raise; the box must keep working afterwards.
#
# Mutations: bytes (which the checksums mostly catch), payloads changed inside their frames
# with the checksum made right again (what the parsers behind the checksums see), files cut,
# removed, swapped, or taken from an earlier moment of the run. Checked after the boot: no
# solenoid on; a code never stored opens nothing; the box ticks, takes keys, an event, a
# connect and the end of the staged sync; it boots again; every event takes a seq above the
# one before, and while both state copies are intact, none of the run's seqs again
# (docs/box.md section 7).
import hashlib
import hmac
import struct
from binascii import crc32, hexlify

from host_tools.backend.crypto import code_digest
from host_tools.fuzz.runner import Finding, guarded
from host_tools.fuzz.mutate import encode, mutate, mutate_bytes, mutate_value, nested
from host_tools.fuzz.command import _seq_key, _set_digest
from host_tools import virtual  # noqa: E402

virtual.install()
from memflash import MemStorage  # noqa: E402
from parcelbox import events
from parcelbox.box import Box
from parcelbox.codestore import ROLE_DRIVER, ROLE_OWNER, ROLE_RECIPIENT
from parcelbox.remote import Remote, stored_settings
from parcelbox.storage import frame, frame_at

BOX = "box-7"
KEY = bytes(range(32))
T0 = 1_795_600_000
BOARD = {"compartments": 2, "max_codes": 16, "outbox_capacity": 32}
FILES = ("codes.bin", "codes.log", "events.log", "state.0", "state.1", "wirekey.bin",
         "settings.bin", "sync.bin")
OWNER, REVOKED, NEVER = "482915", "555555", "999999"

# Findings in files being rewritten elsewhere (host_tools/fuzz/runner.py: reported, not failed on).
KNOWN = {}


class _Run:
    # The real run: codes synced, added, revoked, typed; a door opened; settings, a key
    # rotation, acks; a sync staged. `moments`: copies of the flash along the way.
    def __init__(self):
        self.st = MemStorage()
        self.now = 0
        self.moments = []
        self.box = Box(self.st, KEY, dict(BOARD), 0)
        self.box.set_time(T0, 0)
        self.remote = Remote(self.box, BOX, KEY)
        self.seq = 0
        self._doors(False)
        arr = [self._code(1, OWNER, ROLE_OWNER, 0, 0xFFFF), self._code(2, "100001", ROLE_DRIVER, 1, 3),
               self._code(3, "777777", ROLE_RECIPIENT, 2, 1)]
        self.sync(11, arr, True)
        self.snap()
        self.cmd("add", code=self._code(4, "424242", ROLE_DRIVER, 0, 2))
        self.cmd("add", code=self._code(5, REVOKED, ROLE_OWNER, 0, 9))
        self.cmd("revoke", id=5)
        self.cmd("settings", set={"free_tries": 3, "state_every_s": 600})
        self.snap()
        self.type(OWNER)
        self._doors(True)
        self._doors(False)
        self.type("000000")
        self.type("000001")
        self.cmd("rotate", gen=1, key=bytes(range(100, 132)).hex())
        self.snap()
        self.remote.connected(self.now)
        while self.remote.poll(self.now) is not None:
            pass
        ob = self.box.outbox
        self.ack([ob.seq(i) for i in range(min(4, ob.pending()))])
        self.cmd("time", t=T0 + 120)
        self.sync(12, [self._code(6, "606060", ROLE_OWNER, 1, 5)], False)
        self.snap()
        missing = [f for f in FILES if f not in self.st.files]
        if missing:
            raise RuntimeError("the run left no " + ", ".join(missing))
        self.max_seq = self.box.outbox.next_seq - 1

    def snap(self):
        self.moments.append({k: bytes(v) for k, v in self.st.files.items() if not k.endswith(".tmp")})

    def _code(self, i, code, role, comp, uses):
        return [i, code_digest(KEY, code).hex(), role, comp, uses, 0, 0]

    def _doors(self, is_open):
        for c in range(1, 3):
            for _ in range(2):
                self.box.door(c, is_open, self.now)
                self.now += 60
                self.box.tick(self.now)

    def type(self, code):
        for ch in code:
            self.box.key(ord(ch), self.now)
            self.now += 50
        for _ in range(20):
            self.now += 100
            self.box.tick(self.now)

    def cmd(self, op, **f):
        self.seq += 1
        send(self.remote, self.remote.topic_cmd,
             {"v": 1, "box": BOX, "seq": self.seq, "op": op, **f}, self.now)
        ev = self.box.outbox.get(self.box.outbox.pending() - 1)
        if ev[1] != events.RESULT or ev[4] & 0xFF:
            raise RuntimeError("the run's %s did not succeed: %r" % (op, ev))

    def ack(self, seqs):
        send(self.remote, self.remote.topic_ack, {"v": 1, "box": BOX, "acks": seqs}, self.now)

    def sync(self, s, codes, end):
        self.cmd("sync_begin", sync=s, count=len(codes), digest=_set_digest(codes).hex())
        self.cmd("sync_part", sync=s, part=0, codes=codes)
        if end:
            self.cmd("sync_end", sync=s, parts=1)


def send(remote, topic, body, now):
    raw = body if isinstance(body, bytes) else encode(body)
    mac = hmac.new(remote._cmd_key, topic.encode() + b"\n" + raw, hashlib.sha256).digest()
    remote.receive(topic, hexlify(mac) + b" " + raw, now)


# ---- mutations ---------------------------------------------------------------------

def _frames(data):
    out, pos = [], 0
    while True:
        r = frame_at(data, pos)
        if r is None:
            return out
        out.append(r)
        pos = r[1] + 4


# A frame's payload changed and framed again with a good checksum.
def _reframe(rng, data):
    fr = _frames(data)
    if not fr:
        return mutate(rng, data)
    s, e = rng.choice(fr)
    p = bytes(data[s:e])
    if p[:1] == b"{":  # settings: JSON, changed as JSON
        try:
            import json
            p = encode(mutate_value(rng, json.loads(p))) if rng.random() < 0.8 else nested(rng).encode()
        except (ValueError, RecursionError):
            p = mutate(rng, p)
    elif rng.random() < 0.7:  # the same length: the parsers look past the length check
        for _ in range(rng.randint(1, 3)):
            q = mutate_bytes(rng, p)
            p = (q + p)[:len(p)] if len(q) >= len(p) else q + p[len(q):]
    else:
        p = mutate(rng, p)
    return bytes(data[:s - 2]) + frame(p[:0xFFFF]) + bytes(data[e + 4:])


# codes.bin: records changed, the header's count and the whole file's crc32 made to fit.
def _snapshot(rng, data):
    body = bytearray(data[:-4]) if len(data) >= 16 else bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(12, max(13, len(body)))
        if i < len(body):
            body[i] = rng.randrange(256) if rng.random() < 0.5 else body[i] ^ (1 << rng.randrange(8))
    if rng.random() < 0.2 and len(body) >= 12:
        body += body[-32:] if len(body) >= 44 else b""
        struct.pack_into("<I", body, 8, (len(body) - 12) >> 5)
    return bytes(body) + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


class Target:
    def __init__(self, rng):
        self.run = _Run()
        self.final = self.run.moments[-1]
        self.last_input = None

    def _mutated(self, rng):
        files = dict(self.final)
        touched = {}
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            name = rng.choice(FILES)
            data = files.get(name, b"")
            k = rng.randrange(10)
            if k < 3:
                files[name] = _reframe(rng, data)
            elif k < 5:
                files[name] = mutate(rng, data, [files.get(n, b"") for n in FILES])
            elif k == 5 and name == "codes.bin":
                files[name] = _snapshot(rng, data)
            elif k == 5:
                files.pop(name, None)
            elif k == 6:
                fr = _frames(data)
                files[name] = data[:fr[rng.randrange(len(fr))][1] + 4 - rng.choice((0, 1, 4))] if fr else b""
            elif k == 7:  # from an earlier moment (or missing there)
                m = rng.choice(self.run.moments[:-1])
                files.pop(name, None)
                if name in m:
                    files[name] = m[name]
            elif k == 8:
                other = rng.choice(FILES)
                files[name] = files.get(other, b"")
            else:
                files[name] = _snapshot(rng, data) if name == "codes.bin" else _reframe(rng, data)
            touched[name] = k
        return files, touched

    def one(self, rng):
        files, touched = self._mutated(rng)
        self.last_input = {k: files[k] for k in touched if k in files}
        st = MemStorage({k: bytearray(v) for k, v in files.items()})
        seqs = []
        now = 1000

        def on_event(seq, kind, comp, code_id, arg, t):
            seqs.append(seq)
        box = Box(st, KEY, stored_settings(st, dict(BOARD)), now, on_event)
        r = Remote(box, BOX, KEY)
        if any(box.solenoid(c, now) for c in (1, 2)):
            raise Finding("a solenoid is on right after boot")
        for _ in range(2):
            for c in (1, 2):
                box.door(c, False, now)
            now += 60
            box.tick(now)
        if any(box.solenoid(c, now) for c in (1, 2)):
            raise Finding("a solenoid is on after the doors' first samples")
        box.set_time(T0 + 600, now)
        for code in (NEVER, REVOKED):
            now = _type(box, code, now)
            # a journal cut at a frame's end or forged with a good checksum may bring the
            # revoked code back (nothing can tell); damage elsewhere must not
            if any(box.solenoid(c, now) for c in (1, 2)) and (
                    code == NEVER or not {"codes.bin", "codes.log"} & set(touched)):
                raise Finding("code %s opened a compartment" % code)
            now += 900000  # past any lockout
            box.tick(now)
        now = _type(box, OWNER, now)
        box.event(events.TAMPER, 0, 0, 1, now)
        r.connected(now)
        for _ in range(60):
            if r.poll(now) is None:
                break
        escaped = []

        r._command = guarded(r._command, escaped.append)
        r._acks = guarded(r._acks, escaped.append)
        # the journal, the staged sync and the outbox written to after their load
        for f in ({"op": "add", "code": [7, code_digest(KEY, "707070").hex(), ROLE_OWNER, 0, 2, 0, 0]},
                  {"op": "revoke", "id": 4}, {"op": "sync_end", "sync": 12, "parts": 1}):
            send(r, r.topic_cmd, dict(f, v=1, box=BOX, seq=box.cmd_top + 1), now)
        ob = box.outbox
        send(r, r.topic_ack, {"v": 1, "box": BOX, "acks": [ob.seq(i) for i in range(min(3, ob.pending()))]
                              or [1]}, now)
        if escaped:
            raise escaped[0]
        if "state.0" not in touched and "state.1" not in touched:
            low = [s for s in seqs if s <= self.run.max_seq]
            if low:
                raise Finding("event seq %d handed out again (the run went up to %d)"
                              % (low[0], self.run.max_seq))
        st2 = st.reboot()
        b2 = Box(st2, KEY, stored_settings(st2, dict(BOARD)), now + 5000, on_event)
        Remote(b2, BOX, KEY)
        b2.event(events.TAMPER, 0, 0, 0, now + 5000)
        _increasing(seqs)


# Every event this flash hands out, over both boots, takes a seq above the one before.
def _increasing(seqs):
    for i in range(1, len(seqs)):
        if seqs[i] <= seqs[i - 1]:
            raise Finding("event seq %d handed out after %d" % (seqs[i], seqs[i - 1]),
                          _seq_key(seqs[i]))


def _type(box, code, now):
    for ch in code:
        box.key(ord(ch), now)
        now += 50
    for _ in range(3):
        now += 30
        box.tick(now)
    return now
