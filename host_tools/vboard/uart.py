"""The virtual board's UART (docs/vboard.md section 2): a TCP endpoint that mpremote opens as
`socket://HOST:PORT` through pyserial. One client at a time: a new connection takes the
UART over and the previous one is closed. What the board prints goes to the client (if
any) and into `output`; what the client sends is offered byte by byte to `on_byte`
(Ctrl-C while code runs) and otherwise queued in `inbuf`, under the board's condition.

On POSIX the same UART is also a pty (`pty`, /dev/pts/N), a serial device as a USB adapter is:
`mpremote connect /dev/pts/N repl` needs one (its console waits on the port's `fd`, which
pyserial's socket:// has not), and an exclusive open of it locks out the next, as a tty does."""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time
from typing import Callable

SEND_TIMEOUT_S = 5.0   # a client that does not read for this long is dropped


class Uart:
    def __init__(self, host: str, port: int, cv: threading.Condition,
                 on_byte: Callable[[int], bool], echo: bool = False):
        self.host, self.port, self.cv, self.on_byte, self.echo = host, port, cv, on_byte, echo
        self.inbuf = bytearray()          # received, not yet read by the REPL (under cv)
        self._output = bytearray()
        self._out_lock = threading.Lock()
        self._client: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.pty: str | None = None        # the pty's device path, once listening (POSIX)
        self._master: int | None = None
        self._slave: int | None = None
        self._pty_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return "socket://%s:%d" % (self.host, self.port)

    def listen(self) -> None:
        """Bind (OSError if the port is taken) and serve from a thread."""
        self._listener = socket.create_server((self.host, self.port))
        self.port = self._listener.getsockname()[1]
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name="vboard-accept", daemon=True)
        self._thread.start()
        if hasattr(os, "openpty"):
            self._open_pty()

    def _open_pty(self) -> None:
        import tty
        self._master, self._slave = os.openpty()
        # raw (no echo, no line editing), and the slave held open here: the line stays up
        # between the programs that open it, and the master never reads EIO
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.pty = os.ttyname(self._slave)
        self._pty_thread = threading.Thread(target=self._pty_loop, name="vboard-pty", daemon=True)
        self._pty_thread.start()

    def _pty_loop(self) -> None:
        master = self._master
        while not self._stopping:
            try:
                ready, _, _ = select.select([master], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except (OSError, ValueError):   # closed by close()
                return
            if not data:
                continue
            with self.cv:
                for b in data:
                    if not self.on_byte(b):
                        self.inbuf.append(b)
                self.cv.notify_all()

    def close(self) -> None:
        self._stopping = True
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        with self.cv:
            c, self._client = self._client, None
        if c is not None:
            c.close()
        if self._thread is not None:
            self._thread.join(10)
        if self._pty_thread is not None:
            self._pty_thread.join(10)
        with self._out_lock:      # emit() writes to the master under this lock
            fds, self._master, self._slave = (self._master, self._slave), None, None
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    # ---- out ----------------------------------------------------------------------------

    def emit(self, data: bytes) -> None:
        if not data:
            return
        with self._out_lock:
            self._output += data
            c = self._client
            if self.echo:
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
            if c is not None:
                try:
                    c.sendall(data)
                except OSError:       # a client gone or not reading: the UART drops it
                    self._drop(c)
            if self._master is not None:
                try:
                    os.write(self._master, data)
                except OSError:       # nobody reads the pty and its buffer is full: dropped, as a UART's
                    pass

    @property
    def output(self) -> str:
        with self._out_lock:
            return self._output.decode("utf-8", "replace")

    def wait_output(self, text: str, timeout: float = 30.0, start: int = 0) -> str:
        end = time.monotonic() + timeout
        while True:
            out = self.output
            if text in out[start:]:
                return out
            if time.monotonic() > end:
                raise TimeoutError("the board did not print %r within %s s; last output:\n%s"
                                   % (text, timeout, out[-2000:]))
            time.sleep(0.02)

    # ---- in -----------------------------------------------------------------------------

    def _drop(self, c: socket.socket) -> None:
        with self.cv:
            if self._client is c:
                self._client = None
        try:
            c.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(SEND_TIMEOUT_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.cv:
                old, self._client = self._client, conn
            if old is not None:
                self._drop(old)
            threading.Thread(target=self._read_loop, args=(conn,), name="vboard-rx",
                             daemon=True).start()

    def _read_loop(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(4096)
                # acknowledge at once: mpremote writes a command in pieces without reading
                # in between, and a delayed ACK would hold each next piece back (Nagle)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except socket.timeout:
                if self._client is not conn:
                    break
                continue
            except OSError:
                break
            if not data:
                break
            with self.cv:
                if self._client is not conn:
                    break
                for b in data:
                    if not self.on_byte(b):
                        self.inbuf.append(b)
                self.cv.notify_all()
        self._drop(conn)
