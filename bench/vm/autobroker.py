# A network with a broker that answers by itself, for the memory benchmark in the VM: the
# link connects, subscribes and publishes; CONNECT gets a CONNACK, SUBSCRIBE a SUBACK,
# a QoS 1 PUBLISH a PUBACK, PINGREQ a PINGRESP. No backend acks the events, so a full
# outbox stays full and the remote keeps resending it. `cmds`, (topic, payload) pairs,
# reach the box as QoS 1 PUBLISHes once it has subscribed (a 4 KB sync part among them).
# Their packets are built with the Net, before the device exists, and read from where they
# lie: the rig's own peak must not be what sets the smallest heap (on a real 32-bit build
# the first allocation to fail near the limit was this broker's 4 KB packet).
T0 = 1795600000


def _publish(topic, payload, pid):
    t = topic.encode()
    n = 2 + len(t) + 2 + len(payload)
    head = bytearray(b"\x32")
    while True:
        b = n & 0x7F
        n >>= 7
        head.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(head) + bytes((len(t) >> 8, len(t) & 0xFF)) + t + bytes((pid >> 8, pid & 0xFF)) + payload


class Conn:
    def __init__(self, cmds=()):
        self.inp = bytearray()   # bytes the link sent, not yet answered
        self.out = bytearray()   # answers, read up to `at`
        self.at = 0
        self.published = 0
        self.pubacks = 0         # PUBACKs the box sent for the commands
        self.cmds = cmds         # command packets, sent after the SUBACK
        self.closed = False

    def ready(self):
        return True

    def send(self, data):
        if self.closed:
            raise OSError(9, "closed")
        self.inp.extend(data)
        self._answer()
        return len(data)

    def _answer(self):
        b = self.inp
        while len(b) >= 2:
            n = 0
            shift = 0
            i = 1
            while True:
                if i >= len(b):
                    return
                n |= (b[i] & 0x7F) << shift
                shift += 7
                i += 1
                if not b[i - 1] & 0x80:
                    break
            if len(b) < i + n:
                return
            kind = b[0] >> 4
            if kind == 1:                            # CONNECT
                self.out.extend(b"\x20\x02\x00\x00")
            elif kind == 8:                          # SUBSCRIBE: id, then one grant per topic
                grants = 0
                j = i + 2
                while j < i + n:
                    tl = b[j] << 8 | b[j + 1]
                    j += 2 + tl + 1
                    grants += 1
                self.out.append(0x90)
                self.out.append(2 + grants)
                self.out.append(b[i])
                self.out.append(b[i + 1])
                for _ in range(grants):
                    self.out.append(1)
                if self.cmds:
                    self.queue = self.cmds   # read after `out`, each where it lies
                    self.cmds = ()
            elif kind == 4:                          # PUBACK of a command
                self.pubacks += 1
            elif kind == 3:                          # PUBLISH
                self.published += 1
                if (b[0] >> 1) & 3:
                    tl = b[i] << 8 | b[i + 1]
                    self.out.append(0x40)
                    self.out.append(2)
                    self.out.append(b[i + 2 + tl])
                    self.out.append(b[i + 3 + tl])
            elif kind == 12:                         # PINGREQ
                self.out.extend(b"\xd0\x00")
            b = self.inp = b[i + n:]   # (MicroPython's bytearray has no slice deletion)

    queue = ()   # command packets still to read, after the answers in `out`
    qat = 0      # bytes of queue[0] read

    def recv_into(self, buf):
        if self.closed:
            raise OSError(9, "closed")
        o, at = self.out, self.at
        if at >= len(o):
            if not self.queue:
                return None
            o, at = self.queue[0], self.qat   # the answers read: the next command packet
        n = min(len(o) - at, len(buf))
        for k in range(n):
            buf[k] = o[at + k]
        if o is self.out:
            self.at = at + n
            if self.at == len(o):   # all read: start over without copying the rest
                self.out = bytearray()
                self.at = 0
        else:
            self.qat = at + n
            if self.qat == len(o):
                self.queue = self.queue[1:]
                self.qat = 0
        return n

    def close(self):
        self.closed = True


class Net:
    def __init__(self, cmds=()):
        self.conn = None
        self.cmds = tuple(_publish(t, p, 100 + i) for i, (t, p) in enumerate(cmds))

    def step(self, now):
        pass

    def up(self):
        return True

    def time(self):
        return T0

    def open(self, host, port, tls, ca, cert=None, key=None):
        self.conn = Conn(self.cmds)
        self.cmds = ()
        return self.conn
