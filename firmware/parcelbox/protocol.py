# The box side of the wire protocol v1 (docs/protocol.md): topics, keys, the MAC envelope,
# event and state bodies byte for byte, the anti-replay window, codes and the key wrap.
import struct
from binascii import hexlify, unhexlify

from parcelbox import events
from parcelbox.hmac256 import LABEL_CMD, LABEL_EVT, Hmac, derive, equal, hmac_sha256

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

VERSION = const(1)
MAX_PAYLOAD = const(4096)  # bytes of a command or ack payload, MAC included
MAX_ACKS = const(64)       # seqs in one ack message
WINDOW = const(32)         # command seqs below the highest that may still arrive
MAX_CODE_COMP = const(32)

# Rejection reasons (low byte of a `rejected` event's arg), section 6.
BAD_MAC = const(1)
REPLAY = const(2)
STALE = const(3)
MALFORMED = const(4)
TOO_BIG = const(5)
UNKNOWN_OP = const(6)
WRONG_BOX = const(7)
EXPIRED = const(8)
BAD_VERSION = const(9)
NO_CLOCK = const(10)    # time-bounded: the box cannot show it is inside the window
NO_EXP = const(11)      # a one-shot command without exp, or exp too far ahead
UNSENT_ACK = const(12)  # an ack for a seq the box never published (id: that seq)
SEQ_JUMP = const(13)    # seq more than MAX_SEQ_JUMP above the highest accepted
NO_MEMORY = const(14)   # the box ran short of RAM handling it: not a bad command (remote.py)

MAX_SEQ_JUMP = const(65536)  # how far one command seq may jump above the window's top
MAX_EXP_S = const(86400)     # a one-shot command's exp at most this far ahead of the clock

# Result statuses (a `result` event's arg), section 5.
OK = const(0)
UNKNOWN_CODE = const(1)
FULL = const(2)
BAD_VALUE = const(3)
BUSY = const(4)
SYNC_MISMATCH = const(5)
SYNC_ORDER = const(6)
FLASH = const(7)
RESTART_PENDING = const(0x100)  # settings: saved, in effect when the core restarts

# Op numbers (a `result` event's comp): OPS[n] is the name of op n.
ADD = const(1)
REVOKE = const(2)
SYNC_BEGIN = const(3)
SYNC_PART = const(4)
SYNC_END = const(5)
UNLOCK = const(6)
CLEAR_THROTTLE = const(7)
SETTINGS = const(8)
ROTATE = const(9)
STATE = const(10)
TIME = const(11)
OPS = ("", "add", "revoke", "sync_begin", "sync_part", "sync_end", "unlock", "clear_throttle",
       "settings", "rotate", "state", "time")

# Settings a backend may change (section 5.8); the rest belong to the board.
SETTABLE = ("entry_timeout_ms", "submit_on_length", "pulse_ms", "open_window_ms",
            "left_open_ms", "free_tries", "lockout_base_ms", "lockout_max_ms", "target_years",
            "service_timeout_ms", "state_every_s")

ONLINE = b'{"v":1,"online":true}'
OFFLINE = b'{"v":1,"online":false}'
_HEX = b"0123456789abcdef"
_WRAP = b"parcelbox/v1/wrap"


# ValueError unless `box_id` is 1 to 32 characters of A-Z a-z 0-9 _ -.
def check_box_id(box_id):
    ok = type(box_id) is str and 1 <= len(box_id) <= 32
    for ch in box_id if ok else "":
        if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch in "_-"):
            ok = False
    if not ok:
        raise ValueError("box id must be 1 to 32 of A-Z a-z 0-9 _ -")


# The five topics of a box: (cmd, ack, evt, state, status).
def topics(box_id):
    check_box_id(box_id)
    p = "parcelbox/v1/" + box_id + "/"
    return p + "cmd", p + "ack", p + "evt", p + "state", p + "status"


# (cmd key, evt key) derived from the wire key (the box key until the first rotation).
def wire_keys(wire_key):
    return derive(wire_key, LABEL_CMD), derive(wire_key, LABEL_EVT)


# The MAC of `body` on `topic`: HMAC-SHA256(key, topic || "\n" || body). `mac` is an
# Hmac of the key; `topic` str or bytes.
def mac_of(mac, topic, body):
    if type(topic) is str:
        topic = topic.encode()
    return mac.digest(topic + b"\n", body)


# The payload that carries `body` on `topic`: hex(MAC) || " " || body.
def seal(mac, topic, body):
    return hexlify(mac_of(mac, topic, body)) + b" " + body


# The body of a payload received on `topic` (a memoryview into it, no copy), or the
# rejection reason: TOO_BIG, MALFORMED (not 64 lowercase hex digits and a space), BAD_MAC.
# The MAC is compared in constant time.
def open_payload(mac, topic, payload):
    if len(payload) > MAX_PAYLOAD:
        return TOO_BIG
    if len(payload) < 65 or payload[64] != 32:
        return MALFORMED
    for i in range(64):
        if payload[i] not in _HEX:
            return MALFORMED
    body = memoryview(payload)[65:]
    if not equal(unhexlify(payload[:64]), mac_of(mac, topic, body)):
        return BAD_MAC
    return body


# The body of event (seq, kind, comp, code_id, arg, t), byte for byte as section 6.
def event_body(box_id, seq, kind, comp, code_id, arg, t):
    name = events.NAMES[kind] if 0 < kind < len(events.NAMES) else "unknown"
    return ('{"v":1,"box":"%s","seq":%d,"type":"%s","comp":%d,"id":%d,"arg":%d,"t":%d}'
            % (box_id, seq, name, comp, code_id, arg, t)).encode()


# The state summary body, byte for byte as section 8 (digest: the 16-byte set digest).
def state_body(box_id, t, boots, codes, active, capacity, digest, pending, next_seq,
               cmd_seq, key_gen, occupied, failures, wait_s, faults, cmd_bits=None, slack=0,
               ref=0):
    return ('{"v":1,"box":"%s","t":%d,"boots":%d,"codes":%d,"active":%d,"capacity":%d,'
            '"digest":"%s","pending":%d,"next_seq":%d,"cmd_seq":%d,"key_gen":%d,'
            '"occupied":%d,"failures":%d,"wait_s":%d,"faults":%d%s%s%s}'
            % (box_id, t, boots, codes, active, capacity, hexlify(digest).decode(), pending,
               next_seq, cmd_seq, key_gen, occupied, failures, wait_s, faults,
               ',"cmd_bits":%d' % cmd_bits if cmd_bits is not None else "",
               ',"slack":%d' % slack if slack else "",
               ',"ref":%d' % ref if ref else "")).encode()


# The pad a new wire key is XORed with in `rotate` command `seq`:
# HMAC-SHA256(cmd key, "parcelbox/v1/wrap" || u32le(seq)).
def wrap_pad(cmd_key, seq):
    return hmac_sha256(cmd_key, _WRAP + struct.pack("<I", seq))


# The new wire key from the 32 wrapped bytes of `rotate` command `seq` (wrapping twice unwraps).
def unwrap(cmd_key, seq, wrapped):
    pad = wrap_pad(cmd_key, seq)
    out = bytearray(32)
    for i in range(32):
        out[i] = pad[i] ^ wrapped[i]
    return bytes(out)


# ---- checks on decoded JSON values (bools are not integers here) ------------------

# True if `v` is a JSON integer in lo..hi.
def is_int(v, lo=0, hi=0xFFFFFFFF):
    return type(v) is int and lo <= v <= hi


# The bytes of a hex string of exactly `n` bytes, or None.
def hex_bytes(v, n):
    if type(v) is not str or len(v) != 2 * n:
        return None
    try:
        return unhexlify(v)
    except ValueError:
        return None


# A code array [id, digest, role, comp, uses, not_before, not_after] as a CodeStore
# record tuple (digest as bytes), or None if anything is missing or out of range.
def parse_code(a):
    if type(a) is not list or len(a) != 7:
        return None
    i, d, role, comp, uses, nb, na = a
    d = hex_bytes(d, 16)
    if (d is None or not is_int(i, 1) or not is_int(role, 1, 4)
            or not is_int(comp, 0, MAX_CODE_COMP) or not is_int(uses, 1, 0xFFFF)
            or not is_int(nb) or not is_int(na) or 0 < na < nb):
        return None
    return (i, d, role, comp, uses, nb, na)


# The fields of op number `op` from command `c` (check 10 of section 5) as a tuple, or
# None if one is missing, of the wrong type or out of range. sync_part's codes stay JSON.
def op_fields(op, c):
    g = c.get
    if op == ADD:
        r = parse_code(g("code"))
        return None if r is None else (r,)
    if op == REVOKE or op == UNLOCK or op == TIME:
        v = g("id" if op == REVOKE else "comp" if op == UNLOCK else "t")
        ok = is_int(v, 1, MAX_CODE_COMP if op == UNLOCK else 0xFFFFFFFF)
        if op == TIME:  # and the summary it answers (`ref`, 0: none)
            r = g("ref", 0)
            return (v, r) if ok and is_int(r) else None
        return (v,) if ok else None
    if op == SYNC_BEGIN or op == SYNC_PART or op == SYNC_END:
        s = g("sync")
        k = g("count" if op == SYNC_BEGIN else "part" if op == SYNC_PART else "parts")
        if not (is_int(s) and is_int(k)):
            return None
        if op == SYNC_END:
            return (s, k)
        if op == SYNC_BEGIN:
            d = hex_bytes(g("digest"), 16)
            return None if d is None else (s, k, d)
        codes = g("codes")
        if type(codes) is not list:
            return None
        for a in codes:  # checked here; packed again while staging (no second list)
            if parse_code(a) is None:
                return None
        return (s, k, codes)
    if op == SETTINGS:
        s = g("set")
        ok = type(s) is dict and len(s) > 0
        for k in s if ok else ():
            ok = ok and (type(s[k]) is int or type(s[k]) is bool)
        return (s,) if ok else None
    if op == ROTATE:
        gen, key = g("gen"), hex_bytes(g("key"), 32)
        return (gen, key) if is_int(gen, 1) and key is not None else None
    return ()  # clear_throttle, state: no fields


# ---- the anti-replay window: the highest seq accepted and a bitmap of the 32 below
# (bit i: seq top - 1 - i seen) -----------------------------------------------------

# 0 if command `seq` may be accepted, else REPLAY (seen), STALE (more than 32 below) or
# SEQ_JUMP (more than MAX_SEQ_JUMP above: one command cannot use up the seq space).
def window_check(top, bits, seq):
    if seq > top:
        return SEQ_JUMP if seq - top > MAX_SEQ_JUMP else 0
    d = top - seq
    if d > WINDOW:
        return STALE
    return REPLAY if d == 0 or (bits >> (d - 1)) & 1 else 0


# The window (top, bits) after accepting `seq`.
def window_mark(top, bits, seq):
    if seq > top:
        d = seq - top
        return seq, ((bits << d) | (1 << (d - 1))) & 0xFFFFFFFF if d <= WINDOW else 0
    return top, bits | (1 << (top - seq - 1))
