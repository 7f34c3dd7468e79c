"""The wire protocol, backend side (CPython): docs/protocol.md made code.

Topics, key derivation, the MAC envelope, command bodies, event and state
parsing, the set digest and the key-rotation wrap. No I/O: the SDK's client
publishes what this builds and hands over what it receives.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass, field

from host_tools.backend.crypto import derive

PREFIX = "parcelbox/v1/"
MAX_COMMAND = 4096
MAX_ACKS = 64
BOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

ROLES = {"recipient": 1, "driver": 2, "owner": 3, "tech": 4}
ROLE_NAMES = {v: k for k, v in ROLES.items()} | {5: "remote"}
UNLIMITED = 0xFFFF

OPS = ("", "add", "revoke", "sync_begin", "sync_part", "sync_end", "unlock",
       "clear_throttle", "settings", "rotate", "state", "time")
STATUS = ("ok", "unknown_code", "full", "bad_value", "busy", "sync_mismatch",
          "sync_order", "flash")
REJECT = ("", "bad_mac", "replay", "stale", "malformed", "too_big", "unknown_op",
          "wrong_box", "expired", "bad_version", "no_clock", "no_exp", "unsent_ack", "seq_jump",
          "no_memory")
# A rejection reason in words, for an operator (the CLI adds what to do about it).
REJECT_WORDS = {
    "bad_mac": "its MAC is not valid under the box's command key",
    "replay": "its seq was already used",
    "stale": "its seq is too far below the newest the box accepted",
    "malformed": "the box could not read it",
    "too_big": "it is over 4096 bytes",
    "unknown_op": "the box does not know its op",
    "wrong_box": "it names another box",
    "expired": "it arrived after its expiry",
    "bad_version": "another protocol version",
    "no_clock": "the box has no trusted time to check its expiry",
    "no_exp": "a one-shot command needs an expiry at most a day ahead",
    "unsent_ack": "an ack named an event the box never published",
    "seq_jump": "its seq jumps too far above the newest the box accepted",
    "no_memory": "the box ran short of memory handling it",
}
EVENTS = ("", "boot", "opened", "closed", "deposit", "pickup", "wrong_code", "throttled",
          "forced", "left_open", "not_opened", "refused", "service", "store_corrupt",
          "overflow", "expired", "result", "rejected", "crash", "tamper", "time_refused")
# time_refused: comp is the source, the low byte of arg the reason
TIME_SOURCES = ("", "network", "backend", "other")
TIME_REFUSALS = ("", "earlier than trusted time", "outside 2024..2100",
                 "far ahead of trusted time")
# not_opened's outcome (arg's low byte): 0 never opened, the use given back; 4 never opened,
# nothing given back (a shared use, a remote unlock, service mode, an unlimited code); 1
# found closed at boot (the use stays spent); 3 found closed at boot, the use never spent.
# opened and not_opened carry the code's uses left in arg bits 8-23 (UNLIMITED: none to count).
NOT_OPENED_WORDS = {0: "never opened, the use given back",
                    4: "never opened, nothing given back",
                    1: "found closed after a power cut, the use spent",
                    3: "found closed after a power cut, the use never spent"}
# store_corrupt: arg = file + flags << 8
STORE_FILES = ("", "codes", "events", "state", "wire key")
STORE_FLAGS = {
    1: ("snapshot bad", "torn journal tail dropped", "journal corrupt", "older than the state"),
    2: ("torn tail dropped", "damaged bytes skipped", "events lost"),
    3: ("a copy damaged", "a copy missing"),
    4: ("both copies lost: box key in use", "a copy repaired", "gone after a rotation"),
}
# code-store flags that leave the box's codes EMPTY until the backend's next full sync
CODES_FAILED_CLOSED = 1 | 4 | 8
WRONG_REASONS = ("unknown", "expired", "not_yet_valid", "used_up", "unresolved")
WRONG_WORDS = ("unknown code", "expired", "not yet valid", "used up", "power lost while checking")
REFUSED_REASONS = ("", "occupied", "empty", "busy")
REMOTE_SETTINGS = ("entry_timeout_ms", "submit_on_length", "pulse_ms", "open_window_ms",
                   "left_open_ms", "free_tries", "lockout_base_ms", "lockout_max_ms",
                   "target_years", "service_timeout_ms", "state_every_s")
# codes per sync_part: 7 fields of at most ~75 bytes of JSON each keeps a part
# well under MAX_COMMAND
SYNC_PART = 40


class ProtocolError(ValueError):
    """A message that does not follow docs/protocol.md (bad MAC, shape, field)."""


def check_box_id(box_id: str) -> str:
    if not isinstance(box_id, str) or not BOX_ID.match(box_id):
        raise ValueError("box id must be 1 to 32 characters from A-Z a-z 0-9 _ -")
    return box_id


def topic(box_id: str, kind: str) -> str:
    """The topic of `kind` (cmd, ack, evt, state, status) for one box."""
    if kind not in ("cmd", "ack", "evt", "state", "status"):
        raise ValueError("no such topic kind: " + kind)
    return PREFIX + check_box_id(box_id) + "/" + kind


def split_topic(t: str) -> tuple[str, str]:
    """(box id, kind) of a protocol topic; ProtocolError for anything else."""
    parts = t.split("/")
    if len(parts) != 4 or parts[0] + "/" + parts[1] + "/" != PREFIX or not BOX_ID.match(parts[2]):
        raise ProtocolError("not a parcelbox v1 topic")
    return parts[2], parts[3]


@dataclass(frozen=True)
class WireKeys:
    """The keys of one box: the code key (from the box key) and the wire keys. Their
    repr shows none of them (tracebacks, logs, pytest's diffs)."""

    code: bytes = field(repr=False)
    cmd: bytes = field(repr=False)
    evt: bytes = field(repr=False)

    @classmethod
    def of(cls, box_key: bytes, wire_key: bytes | None = None) -> "WireKeys":
        w = wire_key or box_key
        return cls(derive(box_key, b"code"), derive(w, b"cmd"), derive(w, b"evt"))


def mac(key: bytes, topic_: str, body: bytes) -> bytes:
    return hmac.new(key, topic_.encode() + b"\n" + body, hashlib.sha256).digest()


def seal(key: bytes, topic_: str, body: bytes) -> bytes:
    """payload = hex(MAC) || " " || body."""
    return mac(key, topic_, body).hex().encode() + b" " + body


def open_envelope(key: bytes, topic_: str, payload: bytes) -> bytes:
    """The body of a sealed payload; ProtocolError unless its MAC is valid under `key`."""
    if len(payload) < 66 or payload[64:65] != b" ":
        raise ProtocolError("malformed envelope")
    try:
        tag = bytes.fromhex(payload[:64].decode("ascii"))
    except ValueError:
        raise ProtocolError("malformed envelope") from None
    body = payload[65:]
    if not hmac.compare_digest(tag, mac(key, topic_, body)):
        raise ProtocolError("bad MAC")
    return body


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def code_digest(code_key: bytes, code: str) -> bytes:
    return hmac.new(code_key, code.encode(), hashlib.sha256).digest()[:16]


def code_array(code_id: int, digest: bytes, role: int, comp: int, uses: int,
               not_before: int = 0, not_after: int = 0) -> list:
    """The wire form of a code (section 5), checked."""
    if not 1 <= code_id <= 0xFFFFFFFF or len(digest) != 16 or role not in (1, 2, 3, 4):
        raise ValueError("bad code id, digest or role")
    if not 0 <= comp <= 32 or not 1 <= uses <= UNLIMITED:
        raise ValueError("bad compartment or uses")
    if not (0 <= not_before <= 0xFFFFFFFF and 0 <= not_after <= 0xFFFFFFFF):
        raise ValueError("bad validity window")
    if not_after and not_after < not_before:
        raise ValueError("validity window ends before it starts")
    return [code_id, digest.hex(), role, comp, uses, not_before, not_after]


def set_digest(codes) -> bytes:
    """Set digest of code arrays (section 5): order-free, `uses` left out."""
    acc = 0
    n = 0
    for c in codes:
        rec = struct.pack("<I16sBBII", c[0], bytes.fromhex(c[1]), c[2], c[3], c[5], c[6])
        acc ^= int.from_bytes(hashlib.sha256(rec).digest(), "little")
        n += 1
    return hashlib.sha256(struct.pack("<I", n) + acc.to_bytes(32, "little")).digest()[:16]


def wrap_pad(cmd_key: bytes, seq: int) -> bytes:
    return hmac.new(cmd_key, b"parcelbox/v1/wrap" + struct.pack("<I", seq), hashlib.sha256).digest()


def wrap_key(cmd_key: bytes, seq: int, new_wire_key: bytes) -> str:
    if len(new_wire_key) != 32:
        raise ValueError("a wire key is 32 bytes")
    return bytes(a ^ b for a, b in zip(new_wire_key, wrap_pad(cmd_key, seq))).hex()


def command(keys: WireKeys, box_id: str, seq: int, op: str, exp: int | None = None,
            **fields) -> tuple[str, bytes]:
    """(topic, payload) of a sealed command."""
    if op not in OPS[1:]:
        raise ValueError("unknown op: " + op)
    if not 1 <= seq <= 0xFFFFFFFF:
        raise ValueError("command seq must be 1..2^32-1")
    body = {"v": 1, "box": box_id, "seq": seq, "op": op}
    body.update(fields)
    if exp is not None:
        body["exp"] = exp
    t = topic(box_id, "cmd")
    payload = seal(keys.cmd, t, dumps(body))
    if len(payload) > MAX_COMMAND:
        raise ValueError("command of %d bytes exceeds %d" % (len(payload), MAX_COMMAND))
    return t, payload


def ack(keys: WireKeys, box_id: str, seqs) -> tuple[str, bytes]:
    seqs = list(seqs)
    if not 1 <= len(seqs) <= MAX_ACKS:
        raise ValueError("an ack names 1 to %d seqs" % MAX_ACKS)
    t = topic(box_id, "ack")
    return t, seal(keys.cmd, t, dumps({"v": 1, "box": box_id, "acks": seqs}))


@dataclass(frozen=True)
class Event:
    box: str
    seq: int
    type: str
    comp: int
    id: int
    arg: int
    t: int

    def describe(self) -> str:
        """Readable detail of the event's fields (no secrets: codes are ids)."""
        return details(self.type, self.comp, self.id, self.arg)


# Kinds whose comp field is a compartment (in result it is an op, in time_refused a source).
IN_COMPARTMENT = ("opened", "closed", "deposit", "pickup", "forced", "left_open", "not_opened",
                  "refused")
FORCED_WORDS = ("opened without an unlock", "found open at boot")


def describe(kind: str, comp: int, code_id: int, arg: int) -> str:
    """An event's fields in words, its compartment first where comp is one: the one decoding
    of events for the events command, the simulator and the monitor."""
    d = details(kind, comp, code_id, arg)
    if kind in IN_COMPARTMENT and comp:
        return "compartment %d%s" % (comp, ", " + d if d else "")
    return d


def details(kind: str, comp: int, code_id: int, arg: int) -> str:
    """The fields of an event but its compartment, in words (docs/protocol.md section 6)."""
    k, a = kind, arg
    if k == "wrong_code":
        r, n = a & 0xFF, a >> 8
        return "%s, %d failure%s in a row" % (WRONG_WORDS[r] if r < len(WRONG_WORDS) else
                                              "reason %d" % r, n, "" if n == 1 else "s")
    if k == "refused":
        return "code %d: %s" % (code_id, REFUSED_REASONS[a] if 0 < a < 4 else "reason %d" % a)
    if k == "result":
        op = OPS[comp] if 0 < comp < len(OPS) else "op %d" % comp
        st = STATUS[a & 0xFF] if (a & 0xFF) < len(STATUS) else "status %d" % (a & 0xFF)
        return "command %d (%s): %s%s" % (code_id, op, st, ", restart pending" if a & 0x100 else "")
    if k == "rejected":
        r = REJECT[a & 0xFF] if (a & 0xFF) < len(REJECT) else str(a & 0xFF)
        more = ", %d more suppressed" % (a >> 8) if a >> 8 else ""
        what = ("ack of event %d" % code_id if r == "unsent_ack" else
                "command %d" % code_id if code_id else "a command")
        words = REJECT_WORDS.get(r)
        return "%s: %s%s%s" % (what, r, " (%s)" % words if words else "", more)
    if k == "time_refused":
        r = a & 0xFF
        why = TIME_REFUSALS[r] if 0 < r < len(TIME_REFUSALS) else "reason %d" % r
        src = TIME_SOURCES[comp] if 0 < comp < len(TIME_SOURCES) else "source %d" % comp
        more = ", %d more refused since" % (a >> 8) if a >> 8 else ""
        return "time refused: %s (%s): %s%s" % (why, src, _utc(code_id), more)
    if k == "store_corrupt":
        return _store_corrupt(code_id, a)
    if k == "closed" and not code_id and not a:
        return ""   # after a forced opening: no code, no role
    if k in ("opened", "closed"):
        # closed: the role alone (its arg never carries a count)
        return "code %d, %s%s" % (code_id, ROLE_NAMES.get(a & 0xFF, "none"),
                                  _uses_left(a) if k == "opened" else "")
    if k == "throttled":
        return "keypad locked out for %d s" % a
    if k == "not_opened":
        r = a & 0xFF
        return "code %d: %s%s" % (code_id, NOT_OPENED_WORDS.get(r, "outcome %d" % r), _uses_left(a))
    if k in ("deposit", "pickup", "left_open"):
        return "code %d" % code_id
    if k == "boot":
        return "boot %d" % a
    if k == "forced":
        return FORCED_WORDS[a] if a < len(FORCED_WORDS) else "arg %d" % a
    if k == "service":
        return "code %d: %s service mode" % (code_id, "entered" if a else "left")
    if k == "overflow":
        return "outbox full: %d event%s dropped from seq %d" % (a, "" if a == 1 else "s", code_id)
    if k == "expired":
        return "%d code%s removed, their window ended" % (a, "" if a == 1 else "s")
    if k == "crash":
        return "the application crashed (reset cause %d); report crc32 %08x on the box" % (code_id, a)
    if k == "tamper":
        return "enclosure opened" if a else "enclosure closed again"
    return "arg %d" % a if a else ""


def _uses_left(a: int) -> str:
    """", n uses left" from an opened or not_opened arg; "" when it has none to count."""
    left = (a >> 8) & 0xFFFF
    if left == UNLIMITED:
        return ""
    return ", %d use%s left" % (left, "" if left == 1 else "s")


def _utc(t: int) -> str:
    try:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "epoch %d" % t


def _store_corrupt(first: int, a: int) -> str:
    f, flags = a & 0xFF, a >> 8
    names = STORE_FLAGS.get(f, ())
    said = [n for i, n in enumerate(names) if flags >> i & 1]
    said += ["flag %d" % (1 << i) for i in range(len(names), 24) if flags >> i & 1]
    out = "%s%s" % (STORE_FILES[f] if 0 < f < len(STORE_FILES) else "file %d" % f,
                    ": " + ", ".join(said) if said else "")
    if f == 1 and flags & CODES_FAILED_CLOSED:
        out += "; the box holds NO codes until a full sync"
    if f == 2 and flags & 4 and first:
        out += "; events from seq %d may be missing" % first
    return out


def _u32(d: dict, name: str) -> int:
    v = d.get(name)
    if type(v) is not int or not 0 <= v <= 0xFFFFFFFF:
        raise ProtocolError("field %s missing or not a u32" % name)
    return v


def _open_json(keys_to_try, box_id: str, kind: str, payload: bytes) -> tuple[dict, int]:
    """(body as a dict, index of the evt key that verified it) of a box's message."""
    t = topic(box_id, kind)
    for i, keys in enumerate(keys_to_try):
        try:
            body = open_envelope(keys.evt, t, payload)
        except ProtocolError:
            continue
        try:
            d = json.loads(body)
        except ValueError:
            raise ProtocolError("%s body is not JSON" % kind) from None
        if not isinstance(d, dict) or d.get("v") != 1 or d.get("box") != box_id:
            raise ProtocolError("%s of another version or box" % kind)
        return d, i
    raise ProtocolError("%s from %s has no valid MAC" % (kind, box_id))


def parse_event(keys_to_try, box_id: str, payload: bytes) -> tuple[Event, int]:
    """(event, index of the key that verified it) of an evt payload; ProtocolError if no
    key in `keys_to_try` (WireKeys, newest last) verifies it or the body is malformed."""
    d, i = _open_json(keys_to_try, box_id, "evt", payload)
    kind = d.get("type")
    # A type this backend does not know yet (a newer firmware) is stored as it came: the
    # MAC says the box sent it, and refusing it would leave it unacked for ever, filling
    # the box's window of events in flight.
    if not isinstance(kind, str) or not re.fullmatch(r"[a-z_]{1,24}", kind):
        raise ProtocolError("bad event type")
    comp = d.get("comp")
    if type(comp) is not int or not 0 <= comp <= 255:
        raise ProtocolError("bad compartment")
    seq = _u32(d, "seq")
    if seq == 0:
        raise ProtocolError("event seq 0")
    return Event(box_id, seq, kind, comp, _u32(d, "id"), _u32(d, "arg"), _u32(d, "t")), i


def event_body(box_id: str, seq: int, kind: int, comp: int, code_id: int, arg: int, t: int) -> bytes:
    """The exact bytes a box emits for an event (section 6), for vectors and tests."""
    return ('{"v":1,"box":"%s","seq":%d,"type":"%s","comp":%d,"id":%d,"arg":%d,"t":%d}'
            % (box_id, seq, EVENTS[kind], comp, code_id, arg, t)).encode()


STATE_FIELDS = ("t", "boots", "codes", "active", "capacity", "digest", "pending", "next_seq",
                "cmd_seq", "key_gen", "occupied", "failures", "wait_s", "faults")


def window_saw(state: dict, seq: int) -> bool | None:
    """Whether the box that sealed this summary had accepted command `seq`, by its window
    (cmd_seq and the cmd_bits of the 32 below); None when the summary cannot tell (no
    cmd_bits, or seq more than 32 below)."""
    top, bits = state["cmd_seq"], state.get("cmd_bits")
    d = top - seq
    if d < 0:
        return False
    if d == 0:
        return True
    if not isinstance(bits, int) or d > 32:
        return None
    return bool(bits >> (d - 1) & 1)


def parse_state(keys_to_try, box_id: str, payload: bytes) -> tuple[dict, int]:
    """(state summary as a dict, index of the key that verified it); ProtocolError if
    unverified or malformed."""
    d, i = _open_json(keys_to_try, box_id, "state", payload)
    for f in STATE_FIELDS:
        if f == "digest":
            if not isinstance(d.get(f), str) or not re.fullmatch(r"[0-9a-f]{32}", d[f]):
                raise ProtocolError("bad set digest")
        else:
            _u32(d, f)
    return d, i


def parse_status(payload: bytes) -> bool | None:
    """True/False from a status payload; None if it is not one."""
    try:
        d = json.loads(payload)
    except ValueError:
        return None
    if isinstance(d, dict) and d.get("v") == 1 and isinstance(d.get("online"), bool):
        return d["online"]
    return None
