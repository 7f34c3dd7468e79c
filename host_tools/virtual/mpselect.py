# MicroPython 1.28's `select.poll` on CPython (extmod/modselect.c), for the ESP32 port's
# tests: each registered object is asked itself, as MicroPython asks a stream's ioctl.
"""A fake of MicroPython 1.28's `select` module: `poll()` only.

Install it for a test with `monkeypatch.setattr(pb_esp32.port, "select", mpselect)`.
Never name it select.py: this folder's modules are importable by name, and CPython's own is needed.

What it does as MicroPython does, where CPython's select.poll differs:

- Objects, not file descriptors, are registered; `poll()` hands back the object.
  `register(obj, mask)` of an object already registered replaces its mask;
  `unregister(obj)` of one that is not registered does nothing (MicroPython's "TODO
  raise KeyError"); `modify(obj, mask)` of one that is not raises OSError(ENOENT).
- An object is asked through its stream ioctl (MP_STREAM_POLL): here its
  `mp_poll(mask)` if it has one (the fakes: host_tools/virtual/mpssl.py's SSLSocket, fake
  connections in tests), else a CPython socket is asked through its descriptor at once.
- A closed object answers POLLNVAL, whatever was asked (the ESP32 socket's fd -1; a
  closed TLS socket, or one whose last call failed): a poll returns at once with it,
  where CPython's would refuse to register it or watch a descriptor number reused by
  the next socket. A peer that closed or reset shows as readable (lwIP's select).
- `ipoll(timeout, flags)` returns the poll object itself, iterating over one (obj,
  events) tuple that it reuses (no allocation per call on the device); flags 1 (one
  shot) clears an object's mask once it is reported. `poll()` returns a new list.
- A timeout other than 0: asked again every ms until one answers or the timeout is
  over (the ESP32's build asks again at each FreeRTOS tick: 10 ms). Only the ESP32's
  real select blocks the device; here the wait is real time (`time.sleep`).
"""
import errno
import select as _select
import time

POLLIN = 0x0001
POLLOUT = 0x0004
POLLERR = 0x0008
POLLHUP = 0x0010
POLLNVAL = 0x0020
_ONESHOT = 1


# MP_STREAM_POLL on a CPython socket: what the ESP32's socket_stream_ioctl answers.
def ask_socket(sock, mask):
    fd = sock.fileno()
    if fd < 0:
        return POLLNVAL
    p = _select.poll()
    p.register(fd, (_select.POLLIN if mask & POLLIN else 0) |
               (_select.POLLOUT if mask & POLLOUT else 0))
    ev = 0
    for _, e in p.poll(0):
        ev = e
    ret = 0
    # lwIP's select marks a socket with an error or an end of stream readable
    if mask & POLLIN and ev & (_select.POLLIN | _select.POLLHUP | _select.POLLERR):
        ret |= POLLIN
    if mask & POLLOUT and ev & (_select.POLLOUT | _select.POLLERR):
        ret |= POLLOUT
    if mask & POLLHUP and ev & _select.POLLHUP:
        ret |= POLLHUP
    return ret


def _ask(obj, mask):
    f = getattr(obj, "mp_poll", None)
    if f is not None:
        return f(mask)
    return ask_socket(obj, mask)


class Poll:
    def __init__(self):
        self._objs = {}        # id(obj): [obj, mask, revents], in registration order
        self._tuple = None
        self._iter = []
        self.registrations = 0  # register() calls that added an object (the test's count)

    def register(self, obj, mask=POLLIN | POLLOUT):
        e = self._objs.get(id(obj))
        if e is None:
            self._objs[id(obj)] = [obj, mask, 0]
            self.registrations += 1
        else:
            e[1] = mask

    def unregister(self, obj):
        self._objs.pop(id(obj), None)

    def modify(self, obj, mask):
        e = self._objs.get(id(obj))
        if e is None:
            raise OSError(errno.ENOENT)
        e[1] = mask

    def registered(self):
        return [e[0] for e in self._objs.values()]

    def _once(self):
        n = 0
        for e in self._objs.values():
            r = _ask(e[0], e[1])
            e[2] = r
            if r:
                n += 1
        return n

    def _wait(self, timeout):
        start = time.monotonic()
        while True:
            if self._once() or timeout == 0:
                return
            if timeout is not None and timeout >= 0 and \
                    (time.monotonic() - start) * 1000 >= timeout:
                return
            time.sleep(0.001)

    def poll(self, timeout=-1):
        self._wait(timeout)
        return [(e[0], e[2]) for e in self._objs.values() if e[2]]

    def ipoll(self, timeout=-1, flags=0):
        if self._tuple is None:
            self._tuple = [None, 0]
        self._wait(timeout)
        self._iter = [e for e in self._objs.values() if e[2]]
        self._flags = flags
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if not self._iter:
            raise StopIteration
        e = self._iter.pop(0)
        if self._flags & _ONESHOT:
            e[1] = 0
        t = self._tuple
        t[0], t[1] = e[0], e[2]
        return t


def poll():
    return Poll()
