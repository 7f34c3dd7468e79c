"""The port network of docs/runtime.md section 4 on CPython: non-blocking TCP and TLS.

For tests and the Linux port, so that the firmware's own MQTT link
(firmware/parcelbox/link.py) runs unchanged on a host. Nothing here blocks but the
name lookup in `open()` (getaddrinfo; an IP literal or /etc/hosts name answers at
once): the TCP connect and the TLS handshake advance a little on each `ready()`.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl
import time

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class HostNet:
    """The host's network: always up; `open()` starts a connection without waiting."""

    def __init__(self):
        self.opened = 0

    def step(self, now: int) -> None:
        pass

    def up(self) -> bool:
        return True

    def time(self) -> int | None:
        return int(time.time())

    def open(self, host: str, port: int, tls: bool, ca: str | None, cert: str | None = None,
             key: str | None = None) -> "HostConn":
        self.opened += 1
        return HostConn(host, port, tls, ca, cert, key)


class HostConn:
    """One connection: `ready()` until True, then `send`/`recv`/`recv_into`, never blocking.

    send(data) -> bytes taken (0: would block); recv(n) -> bytes, b"" once the peer has
    closed, None would block; recv_into(buf) -> count, 0 closed, None would block.
    OSError (ssl.SSLError is one) for anything else: refused, reset, a bad certificate.
    """

    def __init__(self, host: str, port: int, tls: bool, ca: str | None, cert: str | None = None,
                 key: str | None = None):
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        raw = socket.socket(family, kind, proto)
        try:
            raw.setblocking(False)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = raw.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                raise OSError(err, os.strerror(err))
        except BaseException:
            raw.close()
            raise
        self._raw = raw
        self._host = host
        self._tls = tls
        self._ca = ca
        self._cert, self._key = cert, key
        self._sock: socket.socket | None = None  # the TLS (or plain) socket once TCP is up
        self._ready = False

    def ready(self) -> bool:
        if self._ready:
            return True
        if self._sock is None:
            p = select.poll()
            p.register(self._raw, select.POLLOUT)
            if not p.poll(0):
                return False  # TCP handshake still going
            err = self._raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            if not self._tls:
                self._sock = self._raw
                self._ready = True
                return True
            ctx = ssl.create_default_context(cafile=self._ca)
            if self._cert:
                ctx.load_cert_chain(self._cert, self._key)
            self._sock = ctx.wrap_socket(self._raw, server_hostname=self._host,
                                         do_handshake_on_connect=False)
        try:
            self._sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        self._ready = True
        return True

    def send(self, data) -> int:
        try:
            return self._sock.send(data)
        except _WOULD_BLOCK:
            return 0

    def recv(self, n: int) -> bytes | None:
        try:
            return self._sock.recv(n)
        except ssl.SSLZeroReturnError:
            return b""
        except _WOULD_BLOCK:
            return None

    def recv_into(self, buf) -> int | None:
        try:
            return self._sock.recv_into(buf)
        except ssl.SSLZeroReturnError:
            return 0
        except _WOULD_BLOCK:
            return None

    def pollable(self):
        """The socket a port's idle waits on for data (select.poll), once ready(); its
        `pending()` (TLS) counts bytes already decrypted, which poll cannot see."""
        return self._sock if self._ready else None

    def close(self) -> None:
        (self._sock or self._raw).close()
