# MQTT 3.1.1 packet codec for a client, sans-I/O (the h11 model): encoders return a packet's
# bytes; a Decoder takes bytes in and gives the server's packets out. docs/link.md section 2.
import sys

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

# Packet types a client receives, as Decoder.next() returns them (the fixed header's type).
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBACK = const(9)
PINGRESP = const(13)

# A packet's largest remaining length by default: a 4096-byte payload (the protocol's
# largest command) plus its topic (up to 58 bytes), their lengths and a packet id.
MAX_REMAINING = const(4160)
_VARINT_MAX = const(268435455)  # 4 bytes of remaining length
_MP = sys.implementation.name == "micropython"

# CONNACK return codes 1 to 5, for logs.
REFUSED = ("accepted", "unacceptable protocol version", "identifier rejected",
           "server unavailable", "bad user name or password", "not authorized")

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


class MqttError(Exception):
    pass


# We were asked to encode something MQTT 3.1.1 forbids a client to send.
class LocalProtocolError(MqttError):
    pass


# The server sent bytes that are not MQTT 3.1.1, or not something a client may receive.
class RemoteProtocolError(MqttError):
    pass


# A packet longer than the decoder's maximum (and not a PUBLISH it can truncate).
class PacketTooLarge(RemoteProtocolError):
    pass


# ---- encoders --------------------------------------------------------------

def _b(s):
    return s.encode() if type(s) is str else s


# Bytes the remaining length n takes (1 to 4).
def _varint_len(n):
    if n > _VARINT_MAX:
        raise LocalProtocolError("packet too long")
    return 1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4


# A buffer for a packet of type byte `first` and remaining length n, its header written;
# (buffer, offset of the variable header).
def _packet(first, n):
    k = _varint_len(n)
    pkt = bytearray(1 + k + n)
    pkt[0] = first
    i = 1
    while True:
        b = n & 0x7F
        n >>= 7
        pkt[i] = b | 0x80 if n else b
        i += 1
        if not n:
            return pkt, i


# Write a two-byte length and the bytes s at i; the offset after them.
def _put(pkt, i, s):
    n = len(s)
    pkt[i] = n >> 8
    pkt[i + 1] = n & 0xFF
    pkt[i + 2:i + 2 + n] = s
    return i + 2 + n


def _check_str(s, what):
    if len(s) > 65535:
        raise LocalProtocolError(what + " longer than 65535 bytes")


# CONNECT. A zero-length client id needs clean=True [MQTT-3.1.3-7]; a password needs a
# user name [MQTT-3.1.2-22]. The will is sent when will_topic is given.
def connect(client_id, clean=True, keepalive=60, username=None, password=None,
            will_topic=None, will_payload=b"", will_qos=0, will_retain=False):
    cid = _b(client_id)
    if not cid and not clean:
        raise LocalProtocolError("an empty client id needs a clean session")
    if password is not None and username is None:
        raise LocalProtocolError("a password needs a user name")
    if not 0 <= keepalive <= 65535:
        raise LocalProtocolError("keepalive must be 0..65535 s")
    if not 0 <= will_qos <= 2:
        raise LocalProtocolError("will QoS must be 0..2")
    flags = 0x02 if clean else 0
    parts = [cid]
    if will_topic is not None:
        flags |= 0x04 | will_qos << 3 | (0x20 if will_retain else 0)
        parts.append(_b(will_topic))
        parts.append(will_payload)
    if username is not None:
        flags |= 0x80
        parts.append(_b(username))
    if password is not None:
        flags |= 0x40
        parts.append(_b(password))
    n = 10
    for p in parts:
        _check_str(p, "a CONNECT field")
        n += 2 + len(p)
    pkt, i = _packet(0x10, n)
    pkt[i:i + 7] = b"\x00\x04MQTT\x04"   # protocol name, level 4
    pkt[i + 7] = flags
    pkt[i + 8] = keepalive >> 8
    pkt[i + 9] = keepalive & 0xFF
    i += 10
    for p in parts:
        i = _put(pkt, i, p)
    return pkt


# PUBLISH at QoS 0 or 1 (pid 1..65535 for QoS 1). A bytearray, so that mark_dup can set DUP.
def publish(topic, payload, qos=0, retain=False, dup=False, pid=0):
    t = _b(topic)
    if not t or b"+" in t or b"#" in t:
        raise LocalProtocolError("a PUBLISH topic is not empty and has no wildcard")
    _check_str(t, "topic")
    if qos == 1:
        if not 0 < pid <= 65535:
            raise LocalProtocolError("QoS 1 needs a packet id 1..65535")
    elif qos == 0:
        if dup:
            raise LocalProtocolError("DUP must be 0 at QoS 0")
    else:
        raise LocalProtocolError("QoS 0 or 1 only")
    n = 2 + len(t) + (2 if qos else 0) + len(payload)
    pkt, i = _packet(0x30 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0), n)
    i = _put(pkt, i, t)
    if qos:
        pkt[i] = pid >> 8
        pkt[i + 1] = pid & 0xFF
        i += 2
    pkt[i:] = payload
    return pkt


# Set DUP on a QoS 1 PUBLISH built by publish(), for sending it again.
def mark_dup(pkt):
    pkt[0] |= 0x08


def _pid_packet(first, pid):
    if not 0 < pid <= 65535:
        raise LocalProtocolError("packet id must be 1..65535")
    pkt = bytearray(4)  # no tuple on the way: half the allocation of bytes((...))
    pkt[0] = first
    pkt[1] = 2
    pkt[2] = pid >> 8
    pkt[3] = pid & 0xFF
    return pkt


def puback(pid):
    return _pid_packet(0x40, pid)


# SUBSCRIBE to [(topic filter, qos), ...].
def subscribe(pid, filters):
    if not filters:
        raise LocalProtocolError("SUBSCRIBE needs a topic filter")
    n = 2
    for f, q in filters:
        if not 0 <= q <= 2 or not f:
            raise LocalProtocolError("a topic filter is not empty; QoS 0..2")
        _check_str(_b(f), "topic filter")
        n += 3 + len(_b(f))
    pkt, i = _packet(0x82, n)
    pkt[i:i + 2] = _pid_packet(0x82, pid)[2:]
    i += 2
    for f, q in filters:
        i = _put(pkt, i, _b(f))
        pkt[i] = q
        i += 1
    return pkt


def pingreq():
    return PINGREQ_PACKET


def disconnect():
    return DISCONNECT_PACKET


# ---- decoder ---------------------------------------------------------------

class Decoder:
    # max_remaining: the largest packet accepted (at least 2: a PUBLISH's topic length must
    # fit, else it would be read from past the data). The buffer is allocated once, here.
    def __init__(self, max_remaining=MAX_REMAINING):
        if max_remaining < 2:
            raise ValueError("max_remaining must be at least 2")
        self.max = max_remaining
        self._buf = bytearray(max_remaining + 5)  # + the fixed header
        self._mv = memoryview(self._buf)
        self._first = None  # space()'s view of the buffer's start
        self.reset()

    # Forget everything buffered and any error: for a new connection.
    def reset(self):
        self._start = self._end = self._skip = 0
        self._error = None
        self._clear()

    # The fields of the packet next() last returned; views into the buffer, valid until
    # the next call of next(), feed() or space().
    def _clear(self):
        self.pid = self.code = self.qos = self.length = 0
        self.session_present = self.dup = self.retain = self.truncated = False
        self.topic = self.payload = self.granted = None

    # Bytes that feed() can take now.
    def room(self):
        return len(self._buf) - self._end + self._start

    # Move unread bytes to the front of the buffer (memmove: may overlap).
    def _compact(self):
        s, e = self._start, self._end
        if s:
            if e > s:
                # MicroPython's slice assignment is a memmove (py/sequence.h); CPython's
                # may be a memcpy, so there an overlapping move goes through a copy.
                self._buf[0:e - s] = self._mv[s:e] if _MP or e - s <= s else bytes(self._mv[s:e])
            self._start, self._end = 0, e - s

    # Take bytes from the stream; returns how many it took (up to room()).
    def feed(self, data):
        n = len(data)
        if n > self.room():
            n = self.room()
        if self._end + n > len(self._buf):
            self._compact()
        e = self._end
        self._buf[e:e + n] = data if n == len(data) else memoryview(data)[:n]
        self._end = e + n
        return n

    # A view of up to n free bytes to receive into directly; then filled(count). With the
    # buffer empty (the usual case between packets) the same view comes back: no allocation.
    def space(self, n):
        self._compact()
        e = self._end
        if e:
            return self._mv[e:min(e + n, len(self._buf))]
        v = self._first
        if v is None or len(v) != min(n, len(self._buf)):
            v = self._first = self._mv[:n]
        return v

    def filled(self, n):
        self._end += n

    def _fail(self, msg, cls=RemoteProtocolError):
        self._error = cls(msg)
        raise self._error

    # The next complete packet's type (fields in the attributes above), or None until more
    # bytes come. After a RemoteProtocolError it raises that again until reset().
    def next(self):
        if self._error is not None:
            raise self._error
        self._clear()
        buf = self._buf
        if self._skip:  # the rest of a truncated PUBLISH
            k = min(self._skip, self._end - self._start)
            self._skip -= k
            self._start += k
            if self._skip:
                return None
        s, e = self._start, self._end
        if s == e:
            self._start = self._end = 0  # empty: the next feed needs no move
            return None
        if e - s < 2:
            return None
        n = shift = 0
        i = s + 1
        while True:
            if i >= e:
                return None
            b = buf[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
            if shift == 28:
                self._fail("remaining length longer than 4 bytes")
        kind, flags = buf[s] >> 4, buf[s] & 0x0F
        if kind == PUBLISH:
            return self._publish(flags, i, n)
        if flags:
            self._fail("reserved flags set in a packet of type %d" % kind)
        if n > self.max:
            self._fail("packet of %d bytes, more than %d" % (n, self.max), PacketTooLarge)
        if kind == CONNACK or kind == PUBACK:
            bad = n != 2
        elif kind == PINGRESP:
            bad = n != 0
        elif kind == SUBACK:
            bad = n < 3
        else:
            self._fail("a client does not receive packets of type %d" % kind)
        if bad:
            self._fail("remaining length %d in a packet of type %d" % (n, kind))
        if e - i < n:
            return None
        self._start = i + n
        if kind == CONNACK:
            if buf[i] & 0xFE or buf[i + 1] > 5:
                self._fail("malformed CONNACK")
            self.session_present = bool(buf[i])
            self.code = buf[i + 1]
        elif kind != PINGRESP:
            self.pid = buf[i] << 8 | buf[i + 1]
            if not self.pid:
                self._fail("packet id 0")
            if kind == SUBACK:
                for j in range(i + 2, i + n):
                    if buf[j] > 2 and buf[j] != 0x80:
                        self._fail("SUBACK return code %d" % buf[j])
                self.granted = self._mv[i + 2:i + n]
        return kind

    # A PUBLISH whose remaining length n starts at i. One longer than max keeps its first
    # max bytes (payload truncated, truncated=True, length the whole payload's) and
    # discards the rest as it arrives: the receiver can still refuse and acknowledge it.
    def _publish(self, flags, i, n):
        qos = flags >> 1 & 3
        if qos == 3 or (qos == 0 and flags & 0x08):
            self._fail("malformed PUBLISH flags")
        if qos == 2:
            self._fail("a QoS 2 PUBLISH (never subscribed to)")
        head = 4 if qos else 2
        if n < head + 1:
            self._fail("PUBLISH too short")
        keep = min(n, self.max)  # at least 2 (__init__)
        buf = self._buf
        have = self._end - i
        if have < 2:
            return None
        # judged as soon as the topic length is in, the same however the bytes came
        tl = buf[i] << 8 | buf[i + 1]
        if tl == 0 or head + tl > keep:
            self._fail("PUBLISH topic empty or longer than the packet or the maximum",
                       PacketTooLarge if n > self.max and tl else RemoteProtocolError)
        if have < keep:
            return None
        p = i + 2 + tl
        if qos:
            self.pid = buf[p] << 8 | buf[p + 1]
            if not self.pid:
                self._fail("packet id 0")
            p += 2
        self.qos = qos
        self.dup = bool(flags & 0x08)
        self.retain = bool(flags & 1)
        self.topic = self._mv[i + 2:i + 2 + tl]
        self.payload = self._mv[p:i + keep]
        self.length = n - (p - i)
        self.truncated = keep < n
        self._start = i + keep
        self._skip = n - keep
        return PUBLISH

    # True if the last PUBLISH's topic is t (bytes), compared without allocating.
    def topic_is(self, t):
        v = self.topic
        if v is None or len(v) != len(t):
            return False
        for j in range(len(t)):
            if v[j] != t[j]:
                return False
        return True
