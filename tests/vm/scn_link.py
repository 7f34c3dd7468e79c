# The MQTT link in the VM over the fake network: connect, a command acked after receive,
# a refused CONNACK and backoff; then what a connected link allocates per step.
import gc

from fakenet import FakeNet
from parcelbox import mqtt, ticks
from parcelbox.link import CONNECTED, OFFLINE, Link

CMD = "parcelbox/v1/box-vm/cmd"
ACK = "parcelbox/v1/box-vm/ack"
STATUS = "parcelbox/v1/box-vm/status"
CONF = {"box_id": "box-vm", "host": "broker", "password": "pw"}


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Remote:
    def __init__(self):
        self.got = []
        self.up = 0
        self.out = []

    def subscriptions(self):
        return [CMD, ACK]

    def will(self):
        return STATUS, b'{"v":1,"online":false}'

    def online(self):
        return STATUS, b'{"v":1,"online":true}'

    def connected(self, now):
        self.up += 1

    def receive(self, topic, payload, now):
        self.got.append((topic, bytes(payload)))

    def poll(self, now):
        return self.out.pop(0) if self.out else None

    def next_deadline(self, now):
        return now if self.out else None


def rand(n):
    return b"\x80" * n


# ---- the state machine, as tests/core/test_link.py checks it on CPython --------------------
net = FakeNet()
rem = Remote()
link = Link(rem, CONF, net, rand)
now = ticks.PERIOD - 100
link.step(now)
link.step(now)
c = net.conn
first = c.take()
check(first[0][0] == 1 and len(first) == 1, "CONNECT first")
c.give(b"\x20\x02\x00\x05")
link.step(now)
check(link.state == OFFLINE and link.refused == 5, "refused CONNACK")
wait = ticks.diff(link.next_deadline(now), now)
check(wait == 750, "backoff of the first failure with rand 0x80: %d" % wait)
now = ticks.add(now, wait)
link.step(now)
link.step(now)
c = net.conn
c.take()
c.give(b"\x20\x02\x00\x00")
rem.out.append(("parcelbox/v1/box-vm/evt", b"event", False))
link.step(now)
check(link.state == CONNECTED and rem.up == 1, "connected across the tick wrap")
kinds = [p[0] for p in c.take()]
check(kinds == [8, 3, 3], "SUBSCRIBE, online, the event: %r" % (kinds,))
c.give(mqtt.publish(CMD, b"cmd", 1, False, False, 77))
link.step(now)
check(rem.got == [(CMD, b"cmd")] and c.take() == [(4, 0, b"\x00\x4d")], "PUBACK after receive")
print("link: refused, backed off 750 ms, connected, published, command acked")


# ---- allocation per step ----------------------------------------------------------
# A conn that allocates nothing itself: it counts what is sent and answers CONNECT with a
# CONNACK and PINGREQ with a PINGRESP, copied byte by byte. So whatever the heap grows by
# is the link's (and the decoder's).
class QuietConn:
    def __init__(self):
        self.sent = 0
        self.pings = 0
        self.answer = None
        self.commands = 0  # this many commands to deliver, one per read

    def ready(self):
        return True

    def send(self, data):
        if data[0] == 0x10:
            self.answer = b"\x20\x02\x00\x00"
        elif data[0] == 0xC0:
            self.pings += 1
            self.answer = b"\xd0\x00"
        self.sent += len(data)
        return len(data)

    def recv_into(self, buf):
        a = self.answer
        if a is None and self.commands:
            self.commands -= 1
            a = COMMAND
        if a is None:
            return None
        self.answer = None
        for i in range(len(a)):
            buf[i] = a[i]
        return len(a)

    def close(self):
        pass


class QuietNet:
    def __init__(self):
        self.conn = QuietConn()

    def up(self):
        return True

    def open(self, host, port, tls, ca):
        return self.conn


COMMAND = bytes(mqtt.publish(CMD, b"x" * 300, 1, False, False, 5))


class QuietRemote(Remote):
    def receive(self, topic, payload, now):
        self.up += 1


def run(lk, t, n):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(n):
        t = ticks.add(t, 10)
        lk.step(t)
    used = gc.mem_alloc() - a
    gc.enable()
    return used, t


if hasattr(gc, "mem_alloc"):
    qn = QuietNet()
    qr = QuietRemote()
    lk = Link(qr, CONF, qn, rand)
    t = 1000
    for _ in range(3):
        lk.step(t)
    check(lk.state == CONNECTED, "quiet link connected")
    t = ticks.add(t, 10)
    lk.step(t)
    # Steady state at 10 ms a step: 1 then 2 simulated minutes, a keepalive ping and its
    # answer each minute; the difference is the cost of one more minute of steps.
    used1, t = run(lk, t, 6000)
    used2, t = run(lk, t, 12000)
    per = (used2 - used1) / 6000
    print("alloc: %d bytes in 6000 steps, %d in 12000 (10 ms each, %d pings answered): "
          "%d bytes per step" % (used1, used2, qn.conn.pings, per))
    check(qn.conn.pings >= 2 and lk.state == CONNECTED, "pings answered, still connected")
    check(per < 1, "a connected link allocates %d bytes per step" % per)
    # Commands: one 300-byte PUBLISH every step, each handed to the remote and acked.
    qn.conn.commands = 100
    n0 = qr.up
    used1, t = run(lk, t, 100)
    qn.conn.commands = 200
    used2, t = run(lk, t, 200)
    per = (used2 - used1) / 100
    check(qr.up - n0 == 300, "every command received")
    print("alloc: %d bytes per command received and acked (views, the PUBACK)" % per)
    check(per <= 64, "a command costs the link %d bytes" % per)
else:
    print("alloc: gc.mem_alloc unavailable (CPython), skipped")
print("OK link")
