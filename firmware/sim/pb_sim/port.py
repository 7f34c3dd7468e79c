# The sim port object (docs/runtime.md section 2, docs/sim.md): hardware, clock, network
# and randomness lent by the host through host calls; one `io` call per loop carries both ways.
#
# The superloop's inputs (time, keypad bitmap, doors, tamper, network) are read from the
# host once per pass, in port.idle(): the host applies the outputs the pass set (solenoids,
# LED, buzzer, watchdog feed), lets the time pass, samples its circuit and answers. So
# ticks_ms, scan, door, tamper, solenoid, indicate and feed cost no host call at all.
import json
from binascii import a2b_base64, b2a_base64

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# Indices into the io answer (docs/sim.md section 2)
_NOW = const(0)
_KEYS = const(1)
_DOORS = const(2)
_TAMPER = const(3)
_UP = const(4)
_EPOCH = const(5)
_READY = const(6)
_RX = const(7)
_ERR = const(8)
SOFT_RESET = const(5)     # machine.SOFT_RESET: what machine.reset() leaves on the ESP32


class HostError(Exception):
    # The host could not do a call (a bug on either side, not a network error)
    pass


class Bridge:
    # call(name, payload) -> answer: host.call of the VM, or the simulator's own on CPython.
    def __init__(self, call):
        self._call = call
        self.calls = 0

    # One host call: the arguments go as JSON {"args": [...]}, the answer comes back as
    # {"ok": true, "value": ...}; a failed call is a HostError.
    def __call__(self, name, *args):
        self.calls += 1
        return self.answer(self._call(name, json.dumps({"args": args})))

    def raw(self, name, payload):
        self.calls += 1
        return self.answer(self._call(name, payload))

    def answer(self, text):
        r = json.loads(text)
        if not r.get("ok"):
            raise HostError(r.get("error", "host call failed"))
        return r.get("value")


class Port:
    # bridge: a Bridge; storage: parcelbox.storage.Storage on the flash folder.
    def __init__(self, bridge, storage):
        self._h = bridge
        self.storage = storage
        self.net = Net(self)
        self._sol = 0          # bit comp-1: solenoid driven
        self._led = 0
        self._hz = 0
        self._fed = 0
        self._in = None        # the host's last answer
        self.sync(-1)

    # Outputs to the host, `ms` of idle (-1: none at all), inputs back: the loop's one
    # host call.
    def sync(self, ms):
        self._in = self._h.raw("io", '{"args":[%d,%d,%d,%d,%d]}' % (
            self._sol, self._led, self._hz, self._fed, ms))
        self._fed = 0
        return self._in

    def ticks_ms(self):
        return self._in[_NOW]

    def scan(self):
        return self._in[_KEYS]

    def door(self, comp):
        if comp < 1:
            raise IndexError("compartments count from 1")
        return (self._in[_DOORS] >> (comp - 1)) & 1 != 0

    def tamper(self):
        t = self._in[_TAMPER]
        return None if t < 0 else t == 1

    def solenoid(self, comp, on):
        if comp < 1:
            raise IndexError("compartments count from 1")
        if on:
            self._sol |= 1 << (comp - 1)
        else:
            self._sol &= ~(1 << (comp - 1))

    def indicate(self, led, hz):
        self._led = led
        self._hz = hz

    def feed(self):
        self._fed = 1

    # Sleep at most ms: the host lets the time pass (really, or on its virtual clock).
    # conn (the link's connection, to wake on) is ignored: the host sleeps the whole ms,
    # and its io answer carries every connection's state once per pass.
    def idle(self, ms, conn=None):
        self.sync(ms if ms > 0 else 0)

    def urandom(self, n):
        return a2b_base64(self._h("rand", n))

    # One log line; the host prefixes "PB <level> <ms>" as the ESP32's console does.
    def log(self, level, text):
        self._h("log", level, text)

    # Start the hardware watchdog: not fed for ms, the host resets the box.
    def watchdog(self, ms):
        self._h("wdt", ms)

    # Every output off, at once (a crash, a bad configuration).
    def all_off(self):
        self._sol = 0
        self._led = 0
        self._hz = 0
        self.sync(-1)

    # The reset cause the host booted this VM with (machine.reset_cause()).
    def reset_cause(self):
        return self._h("cause")

    def reset(self, cause=SOFT_RESET):
        self._sol = 0
        self._h("reset", cause)  # the host ends this VM here and boots a new one


class Net:
    # The host's network (docs/runtime.md section 4): up and the time as of the last io.
    def __init__(self, port):
        self._p = port

    def step(self, now):
        pass

    def up(self):
        return self._p._in[_UP] == 1

    def time(self):
        return self._p._in[_EPOCH] or None

    # A connection the host opens, without waiting, to a real host:port (TLS done by the
    # host with the CA file of the flash folder). DNS, if any, is the host's.
    def open(self, host, port, tls, ca, cert=None, key=None):
        r = self._p._h("open", host, port, tls, ca, cert, key)
        if r < 0:
            raise OSError(-r)
        return Conn(self._p, r)


class Conn:
    # One host connection: its state bits come with every io answer, so ready() and an
    # empty recv_into() cost no host call; send, a read with data, and close do.
    def __init__(self, port, cid):
        self._p = port
        self._id = cid
        self._bit = 1 << cid
        self._open = True

    def _error(self):
        r = self._p._h("error", self._id)
        raise OSError(r if r > 0 else 5)  # EIO when the host lost the errno

    def ready(self):
        i = self._p._in
        if i[_READY] & self._bit:
            return True
        if i[_ERR] & self._bit:
            self._error()
        return False

    def send(self, data):
        r = self._p._h("send", self._id, b2a_base64(data).decode())
        if r < 0:
            raise OSError(-r)
        return r

    # The next bytes (at most n): bytes, b"" closed by the peer, None would block.
    def recv(self, n):
        i = self._p._in
        if not i[_RX] & self._bit:
            if i[_ERR] & self._bit:
                self._error()
            return None
        r = self._p._h("recv", self._id, n)
        if r is None:
            i[_RX] &= ~self._bit  # nothing more until the host says so
            return None
        if type(r) is int:
            raise OSError(-r)
        if not r[1]:
            i[_RX] &= ~self._bit
        return a2b_base64(r[0])

    # Into buf: count, 0 closed by the peer, None would block.
    def recv_into(self, buf):
        data = self.recv(len(buf))
        if data is None:
            return None
        n = len(data)
        buf[:n] = data
        return n

    def close(self):
        if self._open:
            self._open = False
            self._p._h("close", self._id)
