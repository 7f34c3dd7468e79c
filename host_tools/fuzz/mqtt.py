# Fuzz target "mqtt": server byte streams (valid packets, then mutated) into parcelbox.mqtt's
# Decoder, fed in random chunks through feed() and space()/filled(), as the link does.
#
# Checked: only MqttError and its subclasses come out, and an error sticks until reset();
# the packets and the error do not depend on how the stream was cut into chunks; a full
# buffer always yields a packet or an error (never a stall); every field is in range; a
# packet stream left intact decodes to exactly the fields it was built from.
from host_tools.fuzz.runner import Finding
from host_tools.fuzz.mutate import mutate
from parcelbox import mqtt

_MAXES = (mqtt.MAX_REMAINING, 2, 3, 5, 16, 64, 130, 300)


def _varint(n, pad=0):
    out = []
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            break
    if len(out) + pad <= 4:  # a longer encoding of the same length: still MQTT
        out += [0] * pad
    return bytes([b | 0x80 for b in out[:-1]] + [out[-1]])


def _pkt(first, body, pad=0):
    return bytes([first]) + _varint(len(body), pad) + body


# One server packet: (bytes, the fields a decoder must report for it).
def server_packet(rng, big):
    k = rng.randrange(6)
    if k == 0:
        sp, code = rng.randrange(2), rng.randrange(6)
        return _pkt(0x20, bytes([sp, code])), (mqtt.CONNACK, {"session_present": bool(sp), "code": code})
    if k in (1, 2):
        qos = rng.randrange(2)
        tl = rng.choice((1, 2, 20, 58, rng.randrange(1, 300)))
        topic = bytes(rng.randrange(33, 127) for _ in range(tl))
        pl = rng.choice((0, 1, 100, big - tl - 4, big - tl - 3, big - tl - 2, big, big + 1,
                         rng.randrange(0, 2 * big + 2)))
        payload = rng.randbytes(max(0, pl))
        pid = rng.choice((1, 255, 256, 65535, rng.randrange(1, 65536)))
        dup = bool(qos and rng.randrange(2))
        retain = bool(rng.randrange(2))
        body = len(topic).to_bytes(2, "big") + topic + (pid.to_bytes(2, "big") if qos else b"") + payload
        first = 0x30 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
        f = {"qos": qos, "dup": dup, "retain": retain, "topic": topic, "payload": payload,
             "length": len(payload), "pid": pid if qos else 0}
        return _pkt(first, body, rng.choice((0, 0, 0, 1))), (mqtt.PUBLISH, f)
    if k == 3:
        pid = rng.randrange(1, 65536)
        return _pkt(0x40, pid.to_bytes(2, "big")), (mqtt.PUBACK, {"pid": pid})
    if k == 4:
        pid = rng.randrange(1, 65536)
        codes = bytes(rng.choice((0, 1, 2, 0x80)) for _ in range(rng.randrange(1, 4)))
        return _pkt(0x90, pid.to_bytes(2, "big") + codes), (mqtt.SUBACK, {"pid": pid, "granted": codes})
    return b"\xd0\x00", (mqtt.PINGRESP, {})


def _fields(d, kind):
    f = {"kind": kind, "pid": d.pid, "code": d.code, "qos": d.qos, "length": d.length,
         "session_present": d.session_present, "dup": d.dup, "retain": d.retain,
         "truncated": d.truncated}
    for a in ("topic", "payload", "granted"):
        v = getattr(d, a)
        f[a] = None if v is None else bytes(v)
    return f


def _check(d, kind, f):
    if kind not in (mqtt.CONNACK, mqtt.PUBLISH, mqtt.PUBACK, mqtt.SUBACK, mqtt.PINGRESP):
        raise Finding("next() returned packet type %r" % (kind,))
    if kind == mqtt.PUBLISH:
        if not f["topic"] or f["qos"] not in (0, 1) or (f["qos"] and not 0 < f["pid"] <= 65535):
            raise Finding("a PUBLISH with an empty topic, QoS %r or pid %r" % (f["qos"], f["pid"]))
        n = len(f["payload"])
        if (n < f["length"]) != f["truncated"] or n > f["length"] or n > d.max:
            raise Finding("PUBLISH payload %d bytes, length %d, truncated %r, max %d"
                          % (n, f["length"], f["truncated"], d.max))
    elif kind == mqtt.CONNACK and not 0 <= f["code"] <= 5:
        raise Finding("CONNACK code %r" % f["code"])
    elif kind == mqtt.SUBACK and (not f["granted"] or any(g not in (0, 1, 2, 0x80) for g in f["granted"])):
        raise Finding("SUBACK granted %r" % (f["granted"],))
    elif kind in (mqtt.PUBACK, mqtt.SUBACK) and not 0 < f["pid"] <= 65535:
        raise Finding("packet id %r" % f["pid"])


# Decode `data` with a Decoder of `max_rem`, cut into chunks by `rng` (None: as much as fits
# at a time): (list of field dicts, the error's class or None).
def decode(data, max_rem, rng=None):
    d = mqtt.Decoder(max_rem)
    out = []
    pos = 0
    while True:
        try:
            kind = d.next()
        except mqtt.MqttError as e:
            try:
                d.next()
            except mqtt.MqttError as again:
                if again is not e:
                    raise Finding("after %s next() raised another error" % type(e).__name__)
            else:
                raise Finding("after %s next() went on decoding" % type(e).__name__)
            return out, type(e)
        if kind is not None:
            f = _fields(d, kind)
            _check(d, kind, f)
            out.append(f)
            continue
        if pos >= len(data):
            return out, None
        room = d.room()
        if room <= 0:
            raise Finding("the decoder's buffer is full and next() returns None: a stall")
        n = room if rng is None else min(room, rng.choice((1, 2, 3, 7, 64, 512, room)))
        piece = data[pos:pos + n]
        if rng is not None and rng.random() < 0.5:
            v = d.space(len(piece))
            v[:len(piece)] = piece[:len(v)]
            d.filled(min(len(v), len(piece)))
            n = min(len(v), len(piece))
            if n == 0:
                raise Finding("space() offered no room while room() said %d" % room)
        else:
            n = d.feed(piece)
        pos += n


class Target:
    def __init__(self, rng):
        self.last_input = None

    def one(self, rng):
        max_rem = rng.choice(_MAXES)
        big = min(max_rem, 5000)
        pkts = [server_packet(rng, big) for _ in range(rng.randrange(1, 5))]
        data = b"".join(p for p, _ in pkts)
        intact = rng.random() < 0.25
        if not intact:
            if rng.random() < 0.1:
                data = rng.randbytes(rng.randrange(1, 40))
            data = mutate(rng, data)
        self.last_input = (max_rem, data)
        whole, err = decode(data, max_rem)
        cut, err2 = decode(data, max_rem, rng)
        if whole != cut or err != err2:
            raise Finding("chunking changed the result: %d packets then %s, or %d then %s"
                          % (len(whole), err, len(cut), err2))
        if intact:
            self._expect(pkts, whole, err, max_rem)

    # An unmutated stream: each packet decodes to the fields it was built with, until the
    # first one the decoder must refuse for its size.
    def _expect(self, pkts, got, err, max_rem):
        for i, (raw, (kind, want)) in enumerate(pkts):
            n = want.get("length", 0) + (2 + len(want["topic"]) + 2 * want["qos"]
                                         if kind == mqtt.PUBLISH else 0)
            if kind != mqtt.PUBLISH:
                n = len(raw) - 2  # every other packet here is shorter than 128 bytes
            if kind != mqtt.PUBLISH and n > max_rem:
                if len(got) != i or err is not mqtt.PacketTooLarge:
                    raise Finding("packet %d (%d bytes > %d) decoded or failed wrongly: %r"
                                  % (i, n, max_rem, err))
                return
            if kind == mqtt.PUBLISH and 2 + len(want["topic"]) + (2 if want["qos"] else 0) > max_rem:
                if len(got) != i or err is None:
                    raise Finding("a PUBLISH whose topic does not fit %d was accepted" % max_rem)
                return
            if i >= len(got):
                raise Finding("valid packet %d (type %d) was not decoded: %r" % (i, kind, err))
            g = got[i]
            if g["kind"] != kind:
                raise Finding("packet %d decoded as type %d, not %d" % (i, g["kind"], kind))
            for k, v in want.items():
                gv = g[k]
                if k == "payload" and g["truncated"]:
                    ok = v.startswith(gv)
                else:
                    ok = gv == v
                if not ok:
                    if k == "payload":
                        gv, v = len(gv), len(v)
                    raise Finding("packet %d (type %d) field %s: %r, built as %r" % (i, kind, k, gv, v))
        if err is not None or len(got) != len(pkts):
            raise Finding("a valid stream of %d packets gave %d and %r" % (len(pkts), len(got), err))
