# The MQTT link: drives a Remote over a port's non-blocking connection, with keepalive,
# QoS 1 in flight, and reconnection with exponential backoff and jitter (docs/link.md).
from parcelbox import mqtt, ticks
from parcelbox.mqtt import CONNACK, PINGRESP, PUBACK, PUBLISH, SUBACK

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

OFFLINE = "offline"
CONNECTING = "connecting"
CONNECTED = "connected"

BACKOFF_MIN_MS = const(1000)    # the first retry's step; doubles per failure...
BACKOFF_MAX_MS = const(300000)  # ...up to 5 min; the wait is half a step plus up to half
CONNECT_MS = const(30000)       # open to CONNACK, TLS handshake included
RETRY_MS = const(20000)         # a PUBLISH not PUBACKed this long goes again, DUP set
STABLE_MS = const(30000)        # a connection that lasted this long resets the backoff
MAX_FLIGHT = const(10)          # PUBLISHes awaiting PUBACK (8 events, state, status)
OUT_MAX = const(2048)           # queued bytes beyond which nothing new is polled or read
_CHUNK = const(512)             # bytes per read
_ROUNDS = const(8)              # reads, packets or writes per step
_POLL_MS = const(50)            # next_deadline's horizon while a connection is open


# MicroPython's tls raises ValueError where CPython's ssl raises an OSError: "invalid key",
# "invalid cert", and a peer's certificate that does not verify at the first read or write
# (then OSError(-9984) at the next). Taken from the connection's own calls only, so a bug
# elsewhere stays a bug; the connection drops and backs off like any I/O failure.
class TlsError(OSError):
    pass


class Link:
    # remote: a parcelbox.remote.Remote; conf: box_id, host, port (8883), tls (True), ca,
    # username (the box id), password, keepalive (60 s); net: the port's network; rand(n):
    # n random bytes; dec: the packet decoder (its 4 KB buffer) if the caller allocated it
    # early, before the heap fragments. ValueError on a bad conf, before anything is opened.
    def __init__(self, remote, conf, net, rand, dec=None):
        self.box_id = conf.get("box_id")
        self.host = conf.get("host")
        if not self.box_id or type(self.box_id) is not str:
            raise ValueError("link: box_id missing")
        if not self.host or type(self.host) is not str:
            raise ValueError("link: broker host missing")
        self.port = conf.get("port", 8883)
        ka = conf.get("keepalive", 60)
        if type(self.port) is not int or not 0 < self.port < 65536:
            raise ValueError("link: port must be 1..65535")
        if type(ka) is not int or not 0 <= ka <= 65535:
            raise ValueError("link: keepalive must be 0..65535 s")
        self.tls = conf.get("tls", True)
        self.ca = conf.get("ca")
        self.cert = conf.get("cert")  # optional client certificate and its key (files)
        self.key = conf.get("key")
        self.username = conf.get("username") or self.box_id
        self.password = conf.get("password")
        self.remote, self.net, self.rand = remote, net, rand
        self._ka = ka * 1000
        self.state = OFFLINE
        self.last_error = None  # why the last connection ended or failed (None after CONNACK)
        self.refused = 0        # the last CONNACK's refusal code (mqtt.REFUSED), 0 once accepted
        self.progress = 0       # steps taken: the watchdog's sign of life
        self.connects = 0       # CONNACKs accepted
        self._dec = dec if dec is not None else mqtt.Decoder()
        self._conn = None
        self._recv_into = None
        self._q = []            # packets to send, oldest first; _qoff bytes of the first sent
        self._qoff = self._qbytes = 0
        self._flight = []       # [pid, packet, tick sent] per PUBLISH awaiting PUBACK
        self._pid = 0
        self._sub_pid = 0
        self._status_pid = 0    # the online status PUBLISH last sent
        self._subs = []
        self._fails = 0         # connection attempts failed since the last stable connection
        self._retry = None      # tick of the next attempt; None: at once
        self._now = self._opened = self._up = self._rx = self._tx = 0
        self._hello = self._ping = self._more = self._blocked = self._poll = False

    # Do what can be done now without waiting; never blocks (but net.open's DNS).
    def step(self, now):
        self.progress += 1
        self._now = now
        self._more = False
        try:
            if self._conn is None:
                self._attempt(now)
            else:
                self._serve(now)
        except TlsError as e:
            self._drop(now, "tls: %s" % (e,))
        except OSError as e:
            self._drop(now, "io: %s" % (e,))
        except mqtt.MqttError as e:
            self._drop(now, "protocol: %s" % (e,))

    # Tick by which step() should run again.
    def next_deadline(self, now):
        if self._conn is None:
            if self._retry is None or ticks.reached(now, self._retry):
                return now if self.net.up() else ticks.add(now, 1000)
            return self._retry
        if self._more or (self._q and not self._blocked) or (self._poll and self._room()):
            return now
        best = ticks.add(now, _POLL_MS)  # data may come at any time
        if self.state == CONNECTING:
            best = _earlier(best, ticks.add(self._opened, CONNECT_MS))
            return best
        if self._ka:
            best = _earlier(best, ticks.add(self._rx, self._ka + self._ka // 2))
            if not self._ping:
                last = self._tx if ticks.diff(self._tx, self._rx) < 0 else self._rx
                best = _earlier(best, ticks.add(last, self._ka))
        for f in self._flight:
            best = _earlier(best, ticks.add(f[2], RETRY_MS))
        if self._room():
            d = self.remote.next_deadline(now)
            if d is not None:
                best = _earlier(best, d)
        return best

    # The connection whose data should end the loop's sleep (docs/link.md section 8, rule
    # 7): once it is up, and only while step() would read it (the broker taking our bytes).
    # None otherwise: then a port's idle just sleeps. Every read runs until it would block
    # or sets next_deadline to now, so no byte already received waits out a sleep.
    def waitable(self):
        if self._hello and self._qbytes < OUT_MAX:
            return self._conn
        return None

    # A new Remote (the shell rebuilt the Box): it takes over at once if connected.
    def use(self, remote, now):
        self.remote = remote
        if self.state == CONNECTED:
            remote.connected(now)
            self._poll = True

    # Shut the connection: with clean, publish the offline status and DISCONNECT (best
    # effort, one non-blocking try); without, drop it as a power cut does. A later step()
    # connects again at once.
    def close(self, clean=True):
        c = self._conn
        if c is not None and clean and self.state == CONNECTED:
            t, off = self.remote.will()
            self._queue(mqtt.publish(t, off, 0, True))
            self._queue(mqtt.DISCONNECT_PACKET)
            try:
                self._flush()
            except OSError:
                pass
        self._drop(self._now, "closed")
        self._retry = None

    # ---- connection --------------------------------------------------------

    def _attempt(self, now):
        if not self.net.up():
            return
        if self._retry is not None and not ticks.reached(now, self._retry):
            return
        self.state = CONNECTING
        self._opened = now
        self._hello = False
        try:
            if self.cert:
                c = self.net.open(self.host, self.port, self.tls, self.ca, self.cert, self.key)
            else:
                c = self.net.open(self.host, self.port, self.tls, self.ca)
        except OSError as e:
            return self._drop(now, "open: %s" % (e,))
        except ValueError as e:  # a port whose open sets up TLS (TlsError)
            return self._drop(now, "tls: %s" % (e,))
        self._conn = c
        self._recv_into = getattr(c, "recv_into", None)  # once: a bound method allocates

    def _serve(self, now):
        if not self.net.up():
            return self._drop(now, "network down")
        if self.state == CONNECTING:
            if ticks.diff(now, self._opened) >= CONNECT_MS:
                return self._drop(now, "connect timeout")
            if not self._hello:
                try:
                    if not self._conn.ready():
                        return
                except ValueError as e:
                    raise TlsError(e)
                will_topic, will = self.remote.will()
                self._queue(mqtt.connect(self.box_id, False, self._ka // 1000, self.username,
                                         self.password, will_topic, will, 1, True))
                self._hello = True
                self._rx = now
        self._flush()
        self._read(now)
        if self.state == CONNECTED:
            self._timers(now)
        if self.state == CONNECTED:
            self._publish(now)
            self._flush()

    # Close the connection and plan the next attempt.
    def _drop(self, now, why):
        c, self._conn = self._conn, None
        self._recv_into = None
        if c is not None:
            try:
                c.close()
            except OSError:
                pass
        if self.state == CONNECTED and ticks.diff(now, self._up) >= STABLE_MS:
            self._fails = 0
        self.state = OFFLINE
        self.last_error = why
        self._q.clear()
        self._qoff = self._qbytes = 0
        self._dec.reset()
        self._ping = self._poll = False
        self._fails += 1
        self._retry = ticks.add(now, self.backoff(self._fails))

    # Wait before attempt n+1 after n failures: half the step plus a random part of the
    # other half, the step being 1 s doubled per failure up to 5 min (docs/link.md 4).
    def backoff(self, n):
        step = BACKOFF_MAX_MS if n > 9 else min(BACKOFF_MIN_MS << (n - 1), BACKOFF_MAX_MS)
        half = step >> 1
        r = self.rand(2)
        return half + (half * ((r[0] << 8 | r[1]) >> 4) >> 12)  # < 2**30: no long int

    def _connack(self, now):
        self.state = CONNECTED
        self.refused = 0
        self.last_error = None
        self.connects += 1
        self._up = now
        # [MQTT-4.4.0-1] unacknowledged PUBLISHes go again first, same ids, DUP set
        for f in self._flight:
            mqtt.mark_dup(f[1])
            f[2] = now
            self._queue(f[1])
        subs = self.remote.subscriptions()
        self._subs = [(t.encode(), t) for t in subs]
        self._sub_pid = self._next_pid()
        self._queue(mqtt.subscribe(self._sub_pid, [(t, 1) for t in subs]))
        # The online status (in the slot _room keeps), unless the last one is still unacked:
        # it went again above, the same retained bytes. A new one each reconnect grew the
        # flight past MAX_FLIGHT, and on while the broker acked nothing (found by fuzzing).
        if not _flying(self._flight, self._status_pid):
            t, on = self.remote.online()
            self._send(t, on, True, now)
            self._status_pid = self._pid
        self.remote.connected(now)
        self._poll = True

    # ---- reading -----------------------------------------------------------

    def _read(self, now):
        d = self._dec
        for _ in range(_ROUNDS):
            t = d.next()
            if t is None:
                if self._qbytes >= OUT_MAX:
                    return  # the broker is not taking our bytes: no more PUBACKs for now
                into = self._recv_into
                try:
                    if into is not None:
                        n = into(d.space(_CHUNK))
                    else:
                        data = self._conn.recv(min(_CHUNK, d.room()))
                        n = None if data is None else len(data)
                except ValueError as e:
                    raise TlsError(e)
                if n is None:
                    return
                if into is not None:
                    d.filled(n)
                else:
                    d.feed(data)
                if not n:
                    return self._drop(now, "closed by the broker")
                continue
            self._rx = now
            self._ping = False  # the broker is alive
            self._packet(t, now)
            if self._conn is None:
                return
        self._more = True

    def _packet(self, t, now):
        d = self._dec
        if self.state == CONNECTING:
            if t != CONNACK:
                raise mqtt.RemoteProtocolError("packet type %d before CONNACK" % t)
            if d.code:
                self.refused = d.code
                return self._drop(now, "refused: %s" % mqtt.REFUSED[d.code])
            return self._connack(now)
        if t == PUBLISH:
            topic = None
            for tb, ts in self._subs:
                if d.topic_is(tb):
                    topic = ts
                    break
            if topic is not None:
                self.remote.receive(topic, d.payload, now)  # on flash when it returns...
            if d.qos:
                self._queue(mqtt.puback(d.pid))             # ...and only then acked
            self._poll = True
        elif t == PUBACK:
            for i in range(len(self._flight)):
                if self._flight[i][0] == d.pid:
                    self._flight.pop(i)
                    break
        elif t == SUBACK:
            if d.pid == self._sub_pid:
                for g in d.granted:
                    if g == 0x80:  # no commands will come: say so, for the logs
                        self.last_error = "subscription refused"
        elif t != PINGRESP:
            raise mqtt.RemoteProtocolError("a second CONNACK")

    # ---- writing -----------------------------------------------------------

    # Room to publish what the remote hands out. One slot stays free for the next connect's
    # online status while none is in flight, so the flight never passes MAX_FLIGHT.
    def _room(self):
        n = len(self._flight) + (0 if _flying(self._flight, self._status_pid) else 1)
        return n < MAX_FLIGHT and self._qbytes < OUT_MAX

    def _next_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            for f in self._flight:
                if f[0] == self._pid:
                    break
            else:
                return self._pid

    def _queue(self, pkt):
        self._q.append(pkt)
        self._qbytes += len(pkt)
        self._tx = self._now

    def _send(self, topic, payload, retain, now):
        pid = self._next_pid()
        pkt = mqtt.publish(topic, payload, 1, retain, False, pid)
        self._flight.append([pid, pkt, now])
        self._queue(pkt)

    # Write queued packets until the connection would block; a partial write resumes
    # where it stopped, with the same bytes (as TLS wants).
    def _flush(self):
        q = self._q
        self._blocked = False
        for _ in range(_ROUNDS * 2):
            if not q:
                return
            pkt = q[0]
            off = self._qoff
            try:
                n = self._conn.send(memoryview(pkt)[off:] if off else pkt)
            except ValueError as e:
                raise TlsError(e)
            if not n:
                self._blocked = True
                return
            off += n
            if off < len(pkt):
                self._qoff = off
            else:
                q.pop(0)
                self._qoff = 0
                self._qbytes -= len(pkt)

    def _timers(self, now):
        ka = self._ka
        if ka:
            if ticks.diff(now, self._rx) >= ka + ka // 2:
                return self._drop(now, "no answer from the broker")
            if not self._ping and (ticks.diff(now, self._tx) >= ka or
                                   ticks.diff(now, self._rx) >= ka):
                self._queue(mqtt.PINGREQ_PACKET)
                self._ping = True
        for f in self._flight:
            if ticks.diff(now, f[2]) >= RETRY_MS and not _holds(self._q, f[1]):
                mqtt.mark_dup(f[1])
                f[2] = now
                self._queue(f[1])

    # Publish what the remote hands out while there is room (rule 3 of docs/box.md 9).
    def _publish(self, now):
        if not self._poll:
            d = self.remote.next_deadline(now)
            if d is None or not ticks.reached(now, d):
                return
        self._poll = True
        while self._room():
            m = self.remote.poll(now)
            if m is None:
                self._poll = False
                return
            self._send(m[0], m[1], m[2], now)


def _earlier(a, b):
    return b if ticks.diff(b, a) < 0 else a


def _flying(flight, pid):
    for f in flight:
        if f[0] == pid:
            return True
    return False


def _holds(q, pkt):
    for p in q:
        if p is pkt:
            return True
    return False
