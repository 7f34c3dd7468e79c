# Fuzz target "link": the box's MQTT client (parcelbox.link.Link) against a broker that
# answers with valid packets, mutated ones and garbage, over host_tools/virtual/fakenet.py's
# connection (partial writes, slow reads, resets, the network going down), ms by ms.
#
# Checked: step() and next_deadline() raise nothing (step turns OSError and MqttError into
# a dropped connection, as the superloop needs); the state is one of three, the queue's
# byte count matches its packets, no more than MAX_FLIGHT PUBLISHes wait for a PUBACK; a
# PUBLISH reaches the remote only on a subscribed topic, and only while connected; what
# the link sends is well-formed MQTT from the box's side.
from host_tools import virtual  # noqa: E402

virtual.install()
from fakenet import FakeNet, _split  # noqa: E402

from host_tools.fuzz.runner import Finding
from host_tools.fuzz.mqtt import _pkt
from host_tools.fuzz.mutate import mutate
from parcelbox import link as L
from parcelbox import ticks

BOX = "box-1"
TOPICS = ["parcelbox/v1/box-1/cmd", "parcelbox/v1/box-1/ack"]
CONF = {"box_id": BOX, "host": "broker.example", "port": 8883, "tls": True, "ca": "ca.pem",
        "password": "pw", "keepalive": 60}
_CLIENT_TYPES = (1, 3, 4, 8, 12, 14)  # CONNECT PUBLISH PUBACK SUBSCRIBE PINGREQ DISCONNECT


class _Remote:
    def __init__(self, link_of):
        self.link_of = link_of
        self.is_online = False
        self.got = 0
        self.pending = []

    def subscriptions(self):
        return list(TOPICS)

    def will(self):
        return "parcelbox/v1/box-1/status", b'{"v":1,"online":false}'

    def online(self):
        return "parcelbox/v1/box-1/status", b'{"v":1,"online":true}'

    def connected(self, now):
        self.is_online = True

    def receive(self, topic, payload, now):
        if topic not in TOPICS:
            raise Finding("the remote got a message on %r" % (topic,))
        if self.link_of().state != L.CONNECTED:
            raise Finding("the remote got a message before CONNACK")
        bytes(payload)
        self.got += 1

    def poll(self, now):
        if self.pending:
            return self.pending.pop(0)
        return None

    def next_deadline(self, now):
        return now if self.pending else None


def _broker_packet(rng, link):
    k = rng.randrange(8)
    if k == 0:
        return _pkt(0x20, bytes([rng.choice((0, 0, 1)), rng.choice((0, 0, 0, 1, 5, 6))]))
    if k == 1:
        pid = link._sub_pid or rng.randrange(1, 65536)
        return _pkt(0x90, pid.to_bytes(2, "big") + bytes(rng.choice((0, 1, 0x80)) for _ in range(2)))
    if k == 2 and link._flight:
        return _pkt(0x40, rng.choice(link._flight)[0].to_bytes(2, "big"))
    if k in (3, 4):
        t = rng.choice(TOPICS + ["parcelbox/v1/box-1/evt", "x", "parcelbox/v1/box-1/cm"]).encode()
        qos = rng.randrange(2)
        body = len(t).to_bytes(2, "big") + t + (rng.randrange(1, 65536).to_bytes(2, "big") if qos else b"")
        body += rng.randbytes(rng.choice((0, 10, 200, 4200)))
        return _pkt(0x30 | qos << 1 | rng.randrange(2), body)
    if k == 5:
        return b"\xd0\x00"
    if k == 6:
        return _pkt(0x40, rng.randrange(0, 65536).to_bytes(2, "big"))
    return rng.randbytes(rng.randrange(1, 8))


class Target:
    def __init__(self, rng):
        self.last_input = None

    def one(self, rng):
        net = FakeNet(recv_into=rng.random() < 0.5)
        net.send_max = rng.choice((None, None, 1, 7, 100))
        net.recv_max = rng.choice((None, None, 1, 3, 64))
        remote = _Remote(lambda: link)
        link = L.Link(remote, dict(CONF), net, rng.randbytes)
        now = rng.randrange(ticks.PERIOD)
        steps = []
        self.last_input = steps
        answered = set()  # connections a CONNACK was given on
        for _ in range(rng.randrange(5, 60)):
            c = net.conn
            k = rng.randrange(16)
            if c is not None and link._hello and id(c) not in answered and rng.random() < 0.8:
                answered.add(id(c))  # as a broker mostly does: CONNACK, then the rest
                p = _pkt(0x20, bytes([rng.randrange(2), rng.choice((0, 0, 0, 0, 5))]))
                c.give(p)
                steps.append(("give", p))
            elif k < 9 and c is not None:
                p = _broker_packet(rng, link)
                if rng.random() < 0.2:
                    p = mutate(rng, p)
                c.give(p)
                steps.append(("give", p))
            elif k == 9:
                net.is_up = not net.is_up if rng.random() < 0.3 else True
            elif k == 10 and c is not None:
                c.reset = rng.random() < 0.3
                c.peer_closed = rng.random() < 0.2
                c.blocks = rng.choice((0, 0, 3))
            elif k < 13:
                remote.pending.append(("parcelbox/v1/box-1/evt", rng.randbytes(rng.randrange(300)), False))
            ms = rng.choice((0, 1, 1, 10, 10, 50, 1000, 20000, 45000, 100000))
            now = ticks.add(now, ms)
            steps.append(("step", ms))
            link.step(now)
            link.next_deadline(now)
            self._check(link, net)

    def _check(self, link, net):
        if link.state not in (L.OFFLINE, L.CONNECTING, L.CONNECTED):
            raise Finding("link state %r" % (link.state,))
        if link._qbytes != sum(len(p) for p in link._q):
            raise Finding("queued bytes %d, packets of %d" % (link._qbytes, sum(len(p) for p in link._q)))
        if len(link._flight) > L.MAX_FLIGHT:
            raise Finding("%d PUBLISHes in flight, more than %d" % (len(link._flight), L.MAX_FLIGHT))
        if link.state == L.CONNECTED and link._conn is None:
            raise Finding("connected without a connection")
        c = net.conn
        if c is not None:
            while True:
                p = _split(c.sent)
                if p is None:
                    break
                kind, flags, body, size = p
                if kind not in _CLIENT_TYPES:
                    raise Finding("the link sent a packet of type %d" % kind)
                c.sent = c.sent[size:]
