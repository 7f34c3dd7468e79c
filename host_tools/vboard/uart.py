"""The virtual board's UART (docs/vboard.md section 2): a TCP endpoint that mpremote opens as
`socket://HOST:PORT` through pyserial. One client at a time: a new connection takes the
UART over and the previous one is closed. What the board prints goes to the client (if
any) and into `output`; what the client sends is offered byte by byte to `on_byte`
(Ctrl-C while code runs) and otherwise queued in `inbuf`, under the board's condition."""

from __future__ import annotations

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
