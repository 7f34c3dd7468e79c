# A fault-injecting fake of the port's network (docs/runtime.md section 4) for the link's
# tests, on CPython and in the MicroPython VM: the test plays the broker byte by byte.
ECONNREFUSED = 111
ECONNRESET = 104
POLLIN = 0x0001    # MicroPython's select constants (host_tools/virtual/mpselect.py asks mp_poll)
POLLNVAL = 0x0020


class FakeConn:
    def __init__(self, net, host, port, tls, ca):
        self.net = net
        self.where = (host, port, tls, ca)
        self.ready_after = net.ready_after  # ready() answers False this many times first
        self.ready_error = net.ready_error  # what ready() raises: a failed TLS handshake is an
                                            # OSError, a bad key or CA on MicroPython ValueError
        self.tls_error = net.tls_error      # what the first send or recv raises, then each
                                            # OSError(-9984): MicroPython's tls, a peer
                                            # certificate that does not verify
        self.send_max = net.send_max        # bytes taken per send (partial writes); None: all
        self.recv_max = net.recv_max        # bytes given per recv (a slow peer); None: all asked
        self.stall = False                  # every send would block (the peer reads nothing)
        self.blocks = 0                     # the next this many sends would block
        self.reset = False                  # the next send or recv fails: connection reset
        self.peer_closed = False            # recv gives b"" once the inbox is read
        self.closed = False                 # the link closed it
        self.sent = bytearray()             # every byte the link sent, not yet taken
        self.inbox = bytearray()            # bytes from the broker, not yet read
        self.later = []                     # [tick, bytes]: arriving at net.clock() = tick
        self.reads = []                     # net.clock() of every recv that gave bytes
        self.sends = self.recvs = 0

    def ready(self):
        if self.ready_error is not None:
            raise self.ready_error
        if self.ready_after:
            self.ready_after -= 1
            return False
        return True

    def _check(self):
        if self.closed:
            raise OSError(9, "closed")
        if self.reset:
            raise OSError(ECONNRESET, "reset")
        if self.tls_error is not None:
            e, self.tls_error = self.tls_error, OSError(-9984)
            raise e

    def send(self, data):
        self._check()
        self.sends += 1
        if self.stall or self.blocks:
            self.blocks = max(0, self.blocks - 1)
            return 0
        n = len(data)
        if self.send_max is not None and n > self.send_max:
            n = self.send_max
        self.sent.extend(memoryview(data)[:n])
        return n

    def recv(self, n):
        self._check()
        self._arrive()
        self.recvs += 1
        if not self.inbox:
            return b"" if self.peer_closed else None
        if self.recv_max is not None and n > self.recv_max:
            n = self.recv_max
        data = bytes(self.inbox[:n])
        self.inbox = self.inbox[n:]
        if self.net.clock is not None:
            self.reads.append(self.net.clock())
        return data

    def close(self):
        self.closed = True

    # What a port's idle polls (pb_esp32.port): the connection itself, asked as
    # MicroPython's select.poll asks a socket: POLLNVAL once closed, whatever was asked;
    # POLLIN with bytes to read, or at the peer's close or a reset (lwIP's select).
    def pollable(self):
        return self

    def mp_poll(self, mask):
        if self.closed:
            return POLLNVAL
        self._arrive()
        if self.inbox or self.peer_closed or self.reset:
            return mask & POLLIN
        return 0

    # ---- the broker's side ----

    def give(self, data):
        self.inbox.extend(data)

    # data arrives once net.clock() reaches tick (a clock the test moves)
    def give_at(self, tick, data):
        self.later.append([tick, data])

    def _arrive(self):
        while self.later and self.net.clock() - self.later[0][0] >= 0:
            self.inbox.extend(self.later.pop(0)[1])

    # The complete packets sent since the last take: [(type, flags, body), ...].
    def take(self):
        out = []
        while True:
            p = _split(self.sent)
            if p is None:
                return out
            kind, flags, body, size = p
            out.append((kind, flags, body))
            self.sent = self.sent[size:]


# A conn that also has recv_into(buf) -> n, 0 when closed, None would block.
class FakeConnInto(FakeConn):
    def recv_into(self, buf):
        data = self.recv(len(buf))
        if data is None:
            return None
        buf[:len(data)] = data
        return len(data)


class FakeNet:
    def __init__(self, recv_into=False):
        self.is_up = True
        self.refuse = 0       # the next this many open() calls fail: connection refused
        self.ready_after = 0
        self.ready_error = None
        self.tls_error = None
        self.send_max = None
        self.recv_max = None
        self.recv_into = recv_into
        self.clock = None     # () -> tick: when give_at's bytes arrive, and reads are stamped
        self.conns = []

    def up(self):
        return self.is_up

    def open(self, host, port, tls, ca):
        if self.refuse:
            self.refuse -= 1
            self.conns.append(None)
            raise OSError(ECONNREFUSED, "refused")
        c = (FakeConnInto if self.recv_into else FakeConn)(self, host, port, tls, ca)
        self.conns.append(c)
        return c

    @property
    def conn(self):
        return self.conns[-1] if self.conns else None


# (type, flags, body, total size) of the first whole packet in data, or None.
def _split(data):
    if len(data) < 2:
        return None
    n = shift = 0
    i = 1
    while True:
        if i >= len(data):
            return None
        b = data[i]
        n |= (b & 0x7F) << shift
        shift += 7
        i += 1
        if not b & 0x80:
            break
    if len(data) < i + n:
        return None
    return data[0] >> 4, data[0] & 0x0F, bytes(data[i:i + n]), i + n


def _str(body, i):
    n = body[i] << 8 | body[i + 1]
    return bytes(body[i + 2:i + 2 + n]), i + 2 + n


# A client's PUBLISH body: (topic, pid, payload); pid 0 at QoS 0.
def parse_publish(flags, body):
    topic, i = _str(body, 0)
    pid = 0
    if flags & 6:
        pid = body[i] << 8 | body[i + 1]
        i += 2
    return topic, pid, bytes(body[i:])


# A client's CONNECT body: dict of its fields.
def parse_connect(body):
    name, i = _str(body, 0)
    level, flags = body[i], body[i + 1]
    ka = body[i + 2] << 8 | body[i + 3]
    i += 4
    cid, i = _str(body, i)
    out = {"name": name, "level": level, "flags": flags, "keepalive": ka, "client_id": cid,
           "clean": bool(flags & 2)}
    if flags & 4:
        out["will_topic"], i = _str(body, i)
        out["will"], i = _str(body, i)
        out["will_qos"] = flags >> 3 & 3
        out["will_retain"] = bool(flags & 0x20)
    if flags & 0x80:
        out["username"], i = _str(body, i)
    if flags & 0x40:
        out["password"], i = _str(body, i)
    return out


# A client's SUBSCRIBE body: (pid, [(filter, qos), ...]).
def parse_subscribe(body):
    pid = body[0] << 8 | body[1]
    i = 2
    subs = []
    while i < len(body):
        f, i = _str(body, i)
        subs.append((f, body[i]))
        i += 1
    return pid, subs
