# The ESP32 port's network layer (firmware/esp32/pb_esp32/net.py) on CPython: Wi-Fi
# retries back off with jitter, SNTP never blocks the loop, the time comes in once; and
# with MicroPython's ssl a bad key or certificate keeps the link offline, saying why.
import select
import socket
import ssl as _cpython_ssl
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware" / "esp32"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "host_tools" / "virtual"))
import mpssl  # noqa: E402  (MicroPython's ssl, installed per test: TlsBox)
from parcelbox import link as L  # noqa: E402
from pb_esp32 import net as _net  # noqa: E402


class Wlan:
    """An access point that answers after `join_ms`, or never (join_ms=None)."""

    def __init__(self, join_ms=None):
        self.join_ms = join_ms
        self.connects = []
        self.now = 0
        self.on = False

    def active(self, on=None):
        self.on = bool(on)

    def connect(self, ssid, key):
        self.connects.append(self.now)

    def isconnected(self):
        return (self.join_ms is not None and self.connects
                and self.now - self.connects[-1] >= self.join_ms)


def rand_seq(values):
    it = iter(values)
    return lambda n: bytes([next(it), next(it)])


def run(net, wlan, until_ms, step=10):
    for now in range(0, until_ms, step):
        wlan.now = now
        net.step(now)


def test_wifi_retries_back_off_with_jitter_up_to_two_minutes():
    wlan = Wlan(None)
    net = _net.Net({"ssid": "s", "password": "p"}, lambda n: b"\xff\xff", lambda l, t: None,
                   wlan=wlan)
    run(net, wlan, 30 * 60 * 1000, step=100)
    gaps = [b - a for a, b in zip(wlan.connects, wlan.connects[1:])]
    waits = [g - _net._WIFI_JOIN_MS for g in gaps]
    # rand = max: each wait is the full delay: 2, 4, 8, ... s, capped at 120 s
    assert waits[:7] == pytest.approx([2000, 4000, 8000, 16000, 32000, 64000, 120000], abs=200)
    assert max(waits) <= 120000 + 200


def test_the_jitter_spreads_a_retry_over_half_to_all_of_the_delay():
    lows, highs = [], []
    for r in (b"\x00\x00", b"\xff\xff"):
        d, w = _net.backoff(60000, 2000, 120000, lambda n: r)
        (lows if r == b"\x00\x00" else highs).append((d, w))
    assert lows == [(120000, 60000)] and highs == [(120000, 120000)]


def test_a_wifi_that_comes_up_resets_the_backoff():
    wlan = Wlan(500)
    logs = []
    net = _net.Net({"ssid": "s", "password": "p"}, lambda n: b"\x80\x00",
                   lambda l, t: logs.append(t), wlan=wlan, ntp_host="127.0.0.1", ntp_port=9)
    run(net, wlan, 2000)
    assert net.up() and len(wlan.connects) == 1 and "wifi up" in logs


@pytest.fixture
def sntp_server():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    seen = []

    def serve():
        try:
            data, addr = s.recvfrom(48)
        except OSError:
            return
        seen.append(data)
        reply = bytearray(48)
        reply[0] = 0x24  # version 4, mode 4 (server)
        struct.pack_into("!I", reply, 40, 1795600000 + _net._NTP_DELTA)
        s.sendto(reply, addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield s.getsockname()[1], seen
    s.close()


def test_sntp_asks_once_and_takes_the_answer_on_a_later_step(sntp_server):
    port, seen = sntp_server
    wlan = Wlan(0)
    net = _net.Net({"ssid": "s", "password": ""}, lambda n: b"\x00\x00", lambda l, t: None,
                   wlan=wlan, ntp_host="127.0.0.1", ntp_port=port)
    wlan.connect("s", "")
    net.step(0)  # sends the request and returns
    assert net.time() is None
    for now in range(10, 2000, 10):
        time.sleep(0.005)  # real time for the server thread; the box's clock is `now`
        net.step(now)
        if net.time():
            break
    assert seen and seen[0][0] == 0x1B
    assert net.time() == 1795600000
    net.step(now + 5000)
    assert net.time() == 1795600005


def test_an_unanswered_sntp_request_is_dropped_and_retried_later():
    wlan = Wlan(0)
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))
    net = _net.Net({"ssid": "s", "password": ""}, lambda n: b"\x00\x00", lambda l, t: None,
                   wlan=wlan, ntp_host="127.0.0.1", ntp_port=quiet.getsockname()[1])
    wlan.connect("s", "")
    for now in range(0, 70000, 100):
        net.step(now)
    quiet.settimeout(0.5)
    asks = 0
    try:
        while True:
            quiet.recvfrom(48)
            asks += 1
    except OSError:
        pass
    quiet.close()
    assert net.time() is None and 2 <= asks <= 3  # at 0, 30 s, 60 s


class _Esp32Socket:
    """A socket as the ESP32 port has it: lwIP with newlib's errno numbers, so a
    non-blocking connect in progress raises OSError(119), not Linux's 115."""

    closed = 0

    def __init__(self, *a):
        pass

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        raise OSError(119)  # newlib EINPROGRESS

    def close(self):
        _Esp32Socket.closed += 1


class _Esp32SocketModule:
    SOCK_STREAM = 1
    socket = _Esp32Socket

    @staticmethod
    def getaddrinfo(host, port, af=0, kind=0):
        return [(2, 1, 0, "", ("192.0.2.7", port))]


class _Esp32Errno:
    EINPROGRESS = 119  # newlib's values, which the ESP32 port's errno module exposes
    EAGAIN = 11


class _Poll:
    def register(self, s, ev):
        pass

    def poll(self, ms):
        return []


class _Select:
    POLLOUT, POLLERR, POLLHUP = 4, 8, 16

    @staticmethod
    def poll():
        return _Poll()


def test_a_connect_in_progress_with_the_esp32_errno_numbers_is_not_a_failure(monkeypatch):
    monkeypatch.setattr(_net, "socket", _Esp32SocketModule)
    monkeypatch.setattr(_net, "select", _Select)
    monkeypatch.setattr(_net, "errno", _Esp32Errno, raising=False)
    _Esp32Socket.closed = 0
    c = _net.Conn("broker.example", 8883, True, "ca.pem")
    assert _Esp32Socket.closed == 0 and c.ready() is False  # connecting, not refused


def test_an_address_is_looked_up_once_and_again_only_after_a_connection_fails(monkeypatch):
    calls = []
    real = socket.getaddrinfo

    def counting(*a, **kw):
        calls.append(a[:2])
        return real(*a, **kw)

    monkeypatch.setattr(_net.socket, "getaddrinfo", counting)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    net = _net.Net({"ssid": "s", "password": ""}, lambda n: b"\x00\x00", lambda l, t: None,
                   wlan=Wlan(0))

    def connect():
        c = net.open("localhost", port, False, None)
        for _ in range(100):
            try:
                if c.ready():
                    break
            except OSError:
                break
            time.sleep(0.01)
        c.close()
        return c.was_ready

    assert connect() and connect() and len(calls) == 1  # cached while connections come up
    srv.close()
    assert not connect()          # the cached address no longer answers...
    assert len(calls) == 1
    connect()                     # ...so the next attempt looks the name up again
    assert len(calls) == 2


def test_the_time_server_is_looked_up_once(monkeypatch, sntp_server):
    port, seen = sntp_server
    calls = []
    real = socket.getaddrinfo
    monkeypatch.setattr(_net.socket, "getaddrinfo", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    wlan = Wlan(0)
    net = _net.Net({"ssid": "s", "password": ""}, lambda n: b"\x00\x00", lambda l, t: None,
                   wlan=wlan, ntp_host="127.0.0.1", ntp_port=port)
    wlan.connect("s", "")
    for now in range(0, 5000, 10):
        time.sleep(0.002)
        net.step(now)
    net.step(_net._NTP_EVERY_MS + 10000)  # the next sync, six hours later
    assert net.time() and len(calls) == 1


def test_an_sntp_answer_older_than_two_days_is_no_longer_the_time(sntp_server):
    port, seen = sntp_server
    wlan = Wlan(0)
    net = _net.Net({"ssid": "s", "password": ""}, lambda n: b"\x00\x00", lambda l, t: None,
                   wlan=wlan, ntp_host="127.0.0.1", ntp_port=port)
    wlan.connect("s", "")
    now = 0
    while not net.time() and now < 2000:
        net.step(now)
        time.sleep(0.005)
        now += 10
    assert net.time() == 1795600000
    wlan.join_ms = None          # the access point is gone: no new answer can come
    net.step(now + 47 * 3600 * 1000)
    assert net.time() == 1795600000 + 47 * 3600
    net.step(now + 49 * 3600 * 1000)
    assert net.time() is None    # the box's own clock carries on (parcelbox.box)


# ---- TLS as MicroPython 1.28 does it (host_tools/virtual/mpssl.py), against the private mosquitto
# Its tls raises ValueError for a bad key or certificate where CPython raises an OSError.

BOX = "box-1"


class _Remote:
    """Just enough of a Remote for the link to connect."""

    def subscriptions(self):
        return ["parcelbox/v1/box-1/cmd"]

    def will(self):
        return "parcelbox/v1/box-1/status", b'{"v":1,"online":false}'

    def online(self):
        return "parcelbox/v1/box-1/status", b'{"v":1,"online":true}'

    def connected(self, now):
        pass

    def poll(self, now):
        return None

    def next_deadline(self, now):
        return None


class TlsBox:
    """A Link over the ESP32 port's Net with MicroPython's ssl, on a clock of its own."""

    def __init__(self, broker, monkeypatch, ca, cert=None, key=None):
        monkeypatch.setitem(sys.modules, "ssl", mpssl)
        broker.add_user(BOX, "pw")
        wlan = Wlan(0)
        wlan.connect("s", "")
        self.net = _net.Net({"ssid": "s", "password": ""}, lambda n: b"\x00\x00",
                            lambda l, t: None, wlan=wlan)
        self.opens = 0
        real = self.net.open

        def counting(*a):
            self.opens += 1
            return real(*a)
        self.net.open = counting
        conf = {"box_id": BOX, "host": broker.host, "port": broker.port, "tls": True,
                "ca": str(ca), "password": "pw"}
        if cert:
            conf.update(cert=str(cert), key=str(key))
        self.link = L.Link(_Remote(), conf, self.net, lambda n: b"\x00" * n)
        self.now = 0

    def until(self, cond, what, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.link.step(self.now)  # no exception may escape
            if cond():
                return
            time.sleep(0.002)
            self.now += 5
        raise AssertionError("timed out: %s (last error %r)" % (what, self.link.last_error))

    def wait(self):
        """Step the clock to the next planned attempt; its wait in ms."""
        w = L.ticks.diff(self.link.next_deadline(self.now), self.now)
        self.now = L.ticks.add(self.now, w)
        return w


@pytest.fixture
def cert_broker(mosquitto, tmp_path):
    from host_tools.testing import broker as brokerlib
    with brokerlib.Broker("mosquitto", workdir=tmp_path / "cert-broker",
                          require_client_cert=True) as b:
        yield b


def test_micropython_tls_connects_with_the_boxs_client_certificate(cert_broker, monkeypatch):
    c, k = cert_broker.client_cert_files(BOX)
    b = TlsBox(cert_broker, monkeypatch, cert_broker.ca_path, c, k)
    b.until(lambda: b.link.state == L.CONNECTED, "connected")
    assert b.link.last_error is None and b.opens == 1
    assert " as box-1 " in cert_broker.log_text()  # mosquitto's line for a CONNECT taken


def test_an_unreadable_client_key_keeps_the_box_offline_says_why_and_backs_off(
        cert_broker, monkeypatch, tmp_path):
    c, _ = cert_broker.client_cert_files(BOX)
    key = tmp_path / "box.key"
    key.write_bytes(b"-----BEGIN EC PRIVATE KEY-----\nbm90IGEga2V5\n-----END EC PRIVATE KEY-----\n")
    b = TlsBox(cert_broker, monkeypatch, cert_broker.ca_path, c, key)
    b.until(lambda: b.link.last_error, "the first attempt fails")
    assert b.link.state == L.OFFLINE and b.link.last_error == "tls: invalid key"
    assert 500 <= b.wait() < 1000 and b.opens == 1  # nothing tried before the backoff...
    b.until(lambda: b.opens == 2 and b.link.state == L.OFFLINE, "the second attempt fails")
    assert b.link.last_error == "tls: invalid key" and 1000 <= b.wait() < 2000  # ...which grows


def test_a_corrupt_ca_keeps_the_box_offline_says_why_and_backs_off(
        mosquitto, monkeypatch, tmp_path):
    import base64
    der = base64.b64decode(b"".join(mosquitto.ca_path.read_bytes().splitlines()[1:-1]))
    ca = tmp_path / "ca.pem"  # valid base64, a certificate cut in half
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der[:len(der) // 2])
                   + b"-----END CERTIFICATE-----\n")
    b = TlsBox(mosquitto, monkeypatch, ca)
    b.until(lambda: b.link.last_error, "the first attempt fails")
    assert b.link.state == L.OFFLINE and b.link.last_error == "tls: invalid cert"
    assert 500 <= b.wait() < 1000 and b.opens == 1
    b.until(lambda: b.opens == 2 and b.link.state == L.OFFLINE, "the second attempt fails")
    assert b.link.last_error == "tls: invalid cert"


def test_a_wrong_ca_drops_the_connection_at_the_write_that_meets_it_and_retries_later(
        mosquitto, monkeypatch, tmp_path):
    # The first write sends the ClientHello and would block; the next one meets the
    # broker's certificate: ValueError, and the CONNECT never goes out.
    from host_tools.testing import broker as brokerlib
    ca = tmp_path / "other-ca.pem"
    ca.write_bytes(brokerlib._make_certificates()[0])  # a CA of its own: it signed nothing here
    b = TlsBox(mosquitto, monkeypatch, ca)
    b.until(lambda: b.link.last_error, "the handshake fails")
    assert b.link.state == L.OFFLINE and b.link.connects == 0
    assert b.link.last_error == "tls: " + mpssl.NOT_TRUSTED
    assert " as box-1 " not in mosquitto.log_text()
    assert 500 <= b.wait() < 1000 and b.opens == 1
    b.until(lambda: b.opens == 2 and b.link.state == L.OFFLINE, "the second attempt fails")
    assert b.link.last_error == "tls: " + mpssl.NOT_TRUSTED


def test_the_fake_ssl_fails_as_micropython_does_value_error_then_oserror_9984(
        mosquitto, tmp_path):
    from host_tools.testing import broker as brokerlib
    ctx = mpssl.SSLContext(mpssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ValueError, match="^invalid cert$"):
        ctx.load_verify_locations(cadata=b"\x30\x82\x01")
    with pytest.raises(ValueError, match="^invalid key$"):
        ctx.load_cert_chain(mosquitto.client_cert_files(BOX)[0], mosquitto.ca_path.read_bytes())
    ctx.verify_mode = mpssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=brokerlib._make_certificates()[0])  # not the broker's CA
    s = socket.create_connection((mosquitto.host, mosquitto.port))
    s.setblocking(False)
    t = ctx.wrap_socket(s, server_hostname=mosquitto.host, do_handshake_on_connect=False)
    with pytest.raises(ValueError) as e:
        for _ in range(500):  # the handshake runs inside the reads and writes
            t.write(b"\x10")
            t.readinto(bytearray(16))
            time.sleep(0.01)
    assert str(e.value) == mpssl.NOT_TRUSTED
    with pytest.raises(OSError) as e:  # the next step on that socket
        t.read(16)
    assert e.value.args == (-9984,)
    t.close()


# ---- the port's wait on the link's socket (pb_esp32.port.Port.idle), MicroPython's poll

class _Hw:
    def __getattr__(self, name):   # scan, door, solenoid...: not used by idle
        return lambda *a: None


class WaitRig:
    """pb_esp32's Port on a scripted clock, with MicroPython 1.28's select.poll
    (host_tools/virtual/mpselect.py): what each idle slept, in ms."""

    def __init__(self, monkeypatch):
        import mpselect
        from pb_esp32 import port as eport
        monkeypatch.setattr(eport, "select", mpselect)
        self.now = 0
        self.sleeps = []
        self.port = eport.Port(_Hw(), None, None, lambda l, t: None, lambda: self.now,
                               self._sleep, lambda n: bytes(n))

    def _sleep(self, ms):
        self.sleeps.append(ms)
        self.now += ms

    def idle(self, ms, conn):
        self.sleeps = []
        self.port.idle(ms, conn)
        return self.sleeps


def _plain_conn(srv):
    c = _net.Conn(srv.getsockname(), "127.0.0.1", False, None)
    peer, _ = srv.accept()         # the handshake is done: ready() sees it at once
    assert c.ready()
    return c, peer


def _readable(sock):
    select.select([sock], [], [], 5)   # the kernel's wait for the bytes, not a guess


def test_the_port_registers_a_connections_socket_once_and_returns_as_soon_as_it_has_data(
        monkeypatch):
    r = WaitRig(monkeypatch)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(2)
    c, peer = _plain_conn(srv)
    assert r.idle(10, c) == [1] * 10      # nothing to read: the whole 10 ms, looking each ms
    assert r.idle(3, c) == [1] * 3
    poll = r.port._poll
    assert poll.registrations == 1 and poll.registered() == [c.pollable()]
    peer.sendall(b"\x20")
    _readable(c.pollable())
    assert r.idle(10, c) == []            # the first look sees it: no sleep at all
    # the next connection takes the last one's place; the closed one is never polled
    # (MicroPython answers a closed socket POLLNVAL at once: the loop would never sleep)
    c.close()
    assert r.idle(10, None) == [10]       # the link offers nothing: one plain sleep
    c2, peer2 = _plain_conn(srv)
    assert r.idle(10, c2) == [1] * 10
    assert poll.registrations == 2 and poll.registered() == [c2.pollable()]
    for s in (c2, peer, peer2, srv):
        s.close()


def test_bytes_tls_holds_decrypted_wake_the_port_though_the_raw_socket_is_quiet(
        monkeypatch, tmp_path):
    # mbedTLS reads a record whole and hands it out in the link's 512-byte reads; the rest
    # is in the library, not on the socket. MicroPython 1.28's poll of the TLS socket
    # counts it (modtls_mbedtls.c: mbedtls_ssl_check_pending), so the port polls that one.
    from host_tools.testing import broker as brokerlib
    import mpselect
    monkeypatch.setitem(sys.modules, "ssl", mpssl)
    ca, cert, key = brokerlib.test_certificates()
    (tmp_path / "ca.pem").write_bytes(ca)
    (tmp_path / "srv.pem").write_bytes(cert + key)
    sctx = _cpython_ssl.SSLContext(_cpython_ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(str(tmp_path / "srv.pem"))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve():
        s, _ = srv.accept()
        t = sctx.wrap_socket(s, server_side=True)
        t.recv(1)
        t.sendall(b"y" * 3000)         # one record
        done.wait(10)
        t.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    c = _net.Conn(srv.getsockname(), "localhost", True, str(tmp_path / "ca.pem"))
    while not c.ready():
        select.select([], [c._raw], [], 5)
    raw = c.pollable()._s   # CPython's socket under mpssl: the descriptor, as lwIP's socket
    while not c.send(b"g"):            # the handshake runs inside the first writes
        _readable(raw)
    buf = bytearray(16)
    while not c.recv_into(buf):        # session tickets first, then the record
        _readable(raw)
    assert bytes(buf) == b"y" * 16
    assert mpselect.ask_socket(raw, mpselect.POLLIN) == 0       # the socket is quiet...
    r = WaitRig(monkeypatch)
    assert r.idle(10, c) == []                                   # ...the TLS socket is not
    done.set()
    th.join(5)
    c.close()
    srv.close()
