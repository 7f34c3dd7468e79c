# The MQTT codec in the VM: byte-exact packets, a stream decoded across chunk boundaries
# (the buffer's overlapping compaction), and what the decoder allocates in steady state.
import gc

from parcelbox import mqtt
from parcelbox.mqtt import PINGRESP, PUBACK, PUBLISH, Decoder


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# ---- bytes on the wire, as in tests/core/test_mqtt.py --------------------------------------
pkt = mqtt.connect("box-1", False, 60, "box-1", "pw", "s", b"off", 1, True)
check(bytes(pkt) == b"\x10\x24\x00\x04MQTT\x04\xec\x00\x3c\x00\x05box-1\x00\x01s\x00\x03off"
      b"\x00\x05box-1\x00\x02pw", "CONNECT")
check(bytes(mqtt.publish("a/b", b"hi", 1, True, True, 10)) == b"\x3b\x09\x00\x03a/b\x00\x0ahi",
      "PUBLISH")
check(bytes(mqtt.subscribe(10, [("p/b/cmd", 1), ("p/b/ack", 0)])) ==
      b"\x82\x16\x00\x0a\x00\x07p/b/cmd\x01\x00\x07p/b/ack\x00", "SUBSCRIBE")
check(bytes(mqtt.puback(7)) == b"\x40\x02\x00\x07", "PUBACK")
# (16383/16384 only on CPython, tests/core/test_mqtt.py: a 16 KB block rarely fits a 96 KB heap)
for n, head in ((127, b"\x30\x7f"), (128, b"\x30\x80\x01"), (4000, b"\x30\xa0\x1f")):
    p = mqtt.publish("t", bytes(n - 3))
    check(bytes(p[:len(head)]) == head and len(p) == len(head) + n, "length %d" % n)
    del p
print("encode: CONNECT, PUBLISH, SUBSCRIBE, PUBACK, lengths 127, 128, 4000 byte-exact")

d = Decoder()
d.feed(b"\x30\xff\xff\xff\xff\x01")
try:
    d.next()
    check(False, "malformed length accepted")
except mqtt.RemoteProtocolError:
    pass
d.reset()

# ---- a stream in odd chunks: compaction moves overlapping bytes (memmove) ---------------
stream = bytearray()
want = []
for i in range(60):
    topic = "t/" + "abcdefghij"[:1 + i % 10]
    payload = bytes((i + j) & 0xFF for j in range(i * 3))
    stream.extend(mqtt.publish(topic, payload, 1, False, False, i + 1))
    stream.extend(mqtt.puback(1000 + i))
    want.append(i + 1)
    want.append(1000 + i)
d = Decoder(200)
got = []
i = 0
step = 1
while i < len(stream):
    i += d.feed(memoryview(stream)[i:i + step])
    step = step % 97 + 13
    while True:
        t = d.next()
        if t is None:
            break
        if t == PUBLISH:
            k = d.pid - 1
            ok = len(d.payload) == k * 3
            for j in range(len(d.payload)):
                ok = ok and d.payload[j] == (k + j) & 0xFF
            check(ok and d.topic_is(("t/" + "abcdefghij"[:1 + k % 10]).encode()), "publish %d" % k)
        got.append(d.pid)
check(got == want, "every packet once, in order")
print("decode: 120 packets in chunks of 1..109 bytes, payloads intact")


# ---- steady-state allocation --------------------------------------------------------
# Inside functions, so that the loop's locals live on the stack (docs/vm.md). Each loop
# feeds prebuilt bytes and takes the packets out; the difference between a run of 2n and
# one of n packets is the cost per packet, free of the measuring's own fixed cost.
ACKS = mqtt.puback(0x1234) + b"\xd0\x00"
CMD = bytes(mqtt.publish("parcelbox/v1/box-1/cmd", b"x" * 300, 1, False, False, 9))
CMD_TOPIC = b"parcelbox/v1/box-1/cmd"


def acks(d, n):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(n):
        d.feed(ACKS)
        if d.next() != PUBACK or d.next() != PINGRESP or d.next() is not None:
            raise AssertionError("ack stream")
    used = gc.mem_alloc() - a
    gc.enable()
    return used


def commands(d, n):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(n):
        d.feed(CMD)
        if d.next() != PUBLISH or not d.topic_is(CMD_TOPIC) or len(d.payload) != 300:
            raise AssertionError("command stream")
        d.next()
    used = gc.mem_alloc() - a
    gc.enable()
    return used


if hasattr(gc, "mem_alloc"):
    d = Decoder()
    per_ack = (acks(d, 200) - acks(d, 100)) / 100
    per_cmd = (commands(d, 100) - commands(d, 50)) / 50
    print("alloc: %d bytes per PUBACK+PINGRESP decoded, %d per 300-byte PUBLISH "
          "(its topic and payload views)" % (per_ack, per_cmd))
    check(per_ack == 0, "PUBACK/PINGRESP decoding allocates %d bytes" % per_ack)
    check(per_cmd <= 64, "PUBLISH decoding allocates %d bytes" % per_cmd)
else:
    print("alloc: gc.mem_alloc unavailable (CPython), skipped")
print("OK mqtt")
