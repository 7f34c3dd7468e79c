# The ESP32 port's network (docs/runtime.md section 4): Wi-Fi with backoff, the time
# from SNTP over a non-blocking UDP socket, and non-blocking TCP/TLS connections.
import errno
import struct

import select
import socket

from parcelbox import ticks

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

_WIFI_FIRST_MS = const(2000)     # first retry of a failed or lost association
_WIFI_MAX_MS = const(120000)     # backoff ceiling
_WIFI_JOIN_MS = const(20000)     # an association not up by then counts as failed
_NTP_RETRY_MS = const(30000)     # until the first answer
_NTP_EVERY_MS = const(21600000)  # then every 6 h
_NTP_STALE_MS = const(172800000)  # an answer older than 2 days is not the time any more
_NTP_WAIT_MS = const(3000)       # an unanswered request is dropped after this
_NTP_DELTA = const(2208988800)   # 1900-01-01 to 1970-01-01 in seconds


# Backoff with jitter: delay doubles from `first` to `most`; each wait is uniform in
# [delay/2, delay] so boxes that lost the network together do not come back together.
def backoff(delay, first, most, rand):
    d = first if delay <= 0 else min(delay * 2, most)
    r = rand(2)
    return d, d // 2 + (r[0] << 8 | r[1]) * (d // 2) // 65535


class Net:
    # wifi: {"ssid", "password"}; rand(n): random bytes; log(level, text).
    def __init__(self, wifi, rand, log, ntp_host="pool.ntp.org", wlan=None, ntp_port=123):
        if wlan is None:
            import network
            wlan = network.WLAN(network.STA_IF)
        self.wlan = wlan
        self._wifi = wifi
        self._rand = rand
        self._log = log
        self._ntp_host = ntp_host
        self._ntp_port = ntp_port
        self._now = 0
        self._delay = 0
        self._retry_at = None   # None: try now
        self._joining = None    # tick an association was started
        self._was_up = False
        self._epoch = 0         # Unix seconds at _epoch_tick, 0: unknown
        self._epoch_tick = 0
        self._ntp_at = None
        self._udp = None
        self._udp_sent = 0
        self._ntp_addr = None   # the time server's address, looked up once (DNS blocks)
        self._ntp_misses = 0
        self._dns = {}          # (host, port): address of the last connection that came up
        self._conns = {}        # (host, port): the last Conn opened
        self.wlan.active(True)

    def up(self):
        return self.wlan.isconnected()

    # Unix seconds (as of the last step) once SNTP answered, else None; None again when
    # the last answer is over 2 days old (tick differences are exact up to about 6 days,
    # and the box's own clock is as good as a stale answer).
    def time(self):
        if not self._epoch:
            return None
        d = ticks.diff(self._now, self._epoch_tick)
        if d < 0 or d > _NTP_STALE_MS:
            return None
        return self._epoch + d // 1000

    def step(self, now):
        self._now = now
        if self.wlan.isconnected():
            if not self._was_up:
                self._was_up = True
                self._delay = 0
                self._joining = None
                self._log(20, "wifi up")
            self._ntp(now)
            return
        if self._was_up:
            self._was_up = False
            self._log(30, "wifi lost")
            self._close_udp()
        if self._joining is not None and ticks.diff(now, self._joining) < _WIFI_JOIN_MS:
            return
        if self._retry_at is None or ticks.diff(now, self._retry_at) >= 0:
            if self._joining is not None:  # the last try failed: back off
                self._delay, wait = backoff(self._delay, _WIFI_FIRST_MS, _WIFI_MAX_MS, self._rand)
                self._retry_at = ticks.add(now, wait)
                self._joining = None
                self._log(30, "wifi: no association, next try in %d s" % (wait // 1000))
                return
            self._joining = now
            try:
                self.wlan.connect(self._wifi["ssid"], self._wifi["password"])  # returns at once
            except OSError as e:
                self._log(40, "wifi connect failed: %s" % e)

    # SNTP, one request at a time, never waiting: send, then look for the answer on
    # later steps. DNS (getaddrinfo) is the one call that may block, bounded by lwIP.
    def _ntp(self, now):
        if self._udp is not None:
            if select.select([self._udp], [], [], 0)[0]:
                try:
                    data = self._udp.recv(48)
                except OSError:
                    data = b""
                if len(data) >= 48 and data[0] & 7 == 4:
                    secs = struct.unpack_from("!I", data, 40)[0]
                    if secs > _NTP_DELTA:
                        self._epoch = secs - _NTP_DELTA
                        self._epoch_tick = now
                        self._ntp_at = ticks.add(now, _NTP_EVERY_MS)
                        self._ntp_misses = 0
                        self._log(20, "time from sntp")
                self._close_udp()
            elif ticks.diff(now, self._udp_sent) > _NTP_WAIT_MS:
                self._close_udp()
                self._ntp_misses += 1
                if self._ntp_misses >= 3:  # perhaps the server moved: look it up again
                    self._ntp_addr = None
                    self._ntp_misses = 0
            return
        if self._ntp_at is not None and ticks.diff(now, self._ntp_at) < 0:
            return
        self._ntp_at = ticks.add(now, _NTP_RETRY_MS)
        try:
            if self._ntp_addr is None:
                self._ntp_addr = socket.getaddrinfo(self._ntp_host, self._ntp_port)[0][-1]
            addr = self._ntp_addr
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            req = bytearray(48)
            req[0] = 0x1B  # LI 0, version 3, mode 3 (client)
            s.sendto(req, addr)
            self._udp = s
            self._udp_sent = now
        except OSError as e:
            self._log(30, "sntp: %s" % e)

    def _close_udp(self):
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    # A non-blocking connection to host:port (TLS with the CA file's certificate, and the
    # box's client certificate and key files if it has them). DNS blocks (lwIP: seconds
    # per unanswering server), so an address is looked up once and kept until a
    # connection to it fails to come up; then the next attempt looks it up again.
    def open(self, host, port, tls, ca, cert=None, key=None):
        k = (host, port)
        last = self._conns.get(k)
        if last is not None and not last.was_ready:
            self._dns.pop(k, None)
        addr = self._dns.get(k)
        if addr is None:
            addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
            self._dns[k] = addr
        c = Conn(addr, host, tls, ca, cert, key)
        self._conns[k] = c
        return c


class Conn:
    def __init__(self, addr, host, tls, ca, cert=None, key=None):
        self.was_ready = False
        self._host = host
        self._ca = ca if tls else None
        self._cert, self._key = cert, key
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(addr)
        except OSError as e:
            # errno's own numbers: the ESP32 port's are newlib's (EINPROGRESS 119), not Linux's
            if e.args[0] not in (errno.EINPROGRESS, errno.EAGAIN):
                s.close()
                raise
        self._raw = s
        self._s = None
        self._poll = select.poll()
        self._poll.register(s, select.POLLOUT)

    # True once TCP is connected (and the TLS session set up to finish its handshake
    # during the first reads and writes, as MicroPython's ssl does without blocking).
    # A key or CA file ssl cannot parse is a ValueError, as a peer certificate that does
    # not verify is at a read or write: the link takes either as a failed connection.
    def ready(self):
        if self._s is not None:
            return True
        ev = self._poll.poll(0)
        if not ev:
            return False
        if ev[0][1] & (select.POLLERR | select.POLLHUP):
            raise OSError(104, "connection refused")
        s = self._raw
        if self._ca is not None:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # tls.SSLContext's stub (ssl's) lists what dir() shows, not verify_mode, a C attribute
            ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # stub: it has one
            ctx.load_verify_locations(cadata=_der(self._ca))
            if self._cert:
                ctx.load_cert_chain(self._cert, self._key)
            s = ctx.wrap_socket(s, server_hostname=self._host, do_handshake_on_connect=False)
        self._s = s
        self.was_ready = True
        return True

    def send(self, data):
        n = self._s.write(data)
        return 0 if n is None else n

    def recv(self, n):
        return self._s.read(n)  # None: would block; b"": closed

    # Into the link's buffer, allocating nothing: bytes read, 0 closed, None would block.
    def recv_into(self, buf):
        return self._s.readinto(buf)

    # What the port's idle polls for data (pb_esp32.port), once ready(): the TLS socket,
    # not the raw one, as its poll also counts what mbedTLS holds (a record read whole,
    # handed out 512 bytes at a time) and what its handshake waits for.
    def pollable(self):
        return self._s

    def close(self):
        try:
            (self._s or self._raw).close()
        except OSError:
            pass


# The CA certificate as DER: a PEM file's base64 body decoded, or a DER file as is.
def _der(path):
    from binascii import a2b_base64
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"-----BEGIN"):
        return data
    body = b"".join(ln for ln in data.split(b"\n") if ln and not ln.startswith(b"-----"))
    return a2b_base64(body)
