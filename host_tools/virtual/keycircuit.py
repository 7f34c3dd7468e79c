# A virtual board circuit around a matrix keypad, with two pin interfaces over it:
# digitalio-style (Blinka, for adafruit_matrixkeypad) and machine.Pin-style (pb_esp32.hw).
#
# Written in the MicroPython subset, so the same file runs on CPython (tests, the linux
# port's tests, the simulator) and inside the MicroPython VM (host_tools/vm/runner.py), where
# instruction counts of a scan through it are measured. Plain classes only.
#
# The electrical model (docs/keycircuit.md). Every pin is a node. A key of the matrix is
# a contact between its row node and its column node; closed contacts join nodes into
# nets. The level of a pin is, strongest first:
#   1. a driver on its net: any output driving 0 (push-pull or open-drain) -> 0 (and a
#      push-pull output driving 1 on the same net is a short, counted in `shorts`);
#      else a push-pull output driving 1 -> 1;
#   2. a closed switch to a rail (door reed, tamper) on a pin outside the matrix;
#   3. resistors on the net: pull-ups only -> 1, pull-downs only -> 0 (external
#      resistors from the board count like the chip's internal ones);
#   4. nothing: the pin floats and reads `float_level`.
# So with one row driven low and the columns pulled up, a pressed key pulls its column
# low; three pressed keys on the corners of a rectangle join the fourth corner's row
# and column too: the ghost that every passive matrix without diodes has.
#
# Contacts bounce: for bounce_ms after each press and release a contact chatters
# between open and closed, ms by ms, in a pattern drawn from (seed, key, event number,
# ms since the event) by a small integer hash. So the circuit is deterministic: the
# same seed, presses and clock give the same levels however often pins are read, and
# two circuits built alike read alike. Time comes from the clock passed in (a callable
# returning ms; ticks_ms-style wrap at 2**30 is allowed).
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)
_MAX_KEYS = const(30)

# node driver modes
_M_IN = const(0)
_M_OUT = const(1)            # push-pull
_M_OD = const(2)             # open-drain: drives 0 or lets go
# node pulls (internal or external)
_P_NONE = const(0)
_P_UP = const(1)
_P_DOWN = const(2)

_active = None               # the circuit machine.Pin-style pins use by default


# Signed ms from tick a to tick b, wrap-safe like time.ticks_diff(b, a).
def _diff(b, a):
    return ((b - a + _HALF) & _MASK) - _HALF


class Clock:
    # A manual clock in ms: clock() is the time now; advance(ms) moves it.
    def __init__(self, t0=0):
        self.now = t0 & _MASK

    def __call__(self):
        return self.now

    def advance(self, ms):
        if ms < 0:
            raise ValueError("the clock does not go back")
        self.now = (self.now + ms) & _MASK
        return self.now


class Circuit:
    # rows, cols: pin ids (ints as machine.Pin numbers them, or names like "D17");
    # layout: the keys row-major (str or bytes), or None to name keys by (row, col) only;
    # clock: callable giving ms; pullups / pulldowns: pins with an external resistor.
    def __init__(self, rows, cols, layout=None, clock=None, bounce_ms=5, seed=1,
                 pullups=(), pulldowns=(), float_level=1):
        nr = len(rows)
        nc = len(cols)
        if nr < 1 or nc < 1 or nr * nc > _MAX_KEYS:
            raise ValueError("keycircuit: 1..30 keys in rows x cols")
        if layout is not None:
            if isinstance(layout, str):
                layout = layout.encode()
            if len(layout) != nr * nc:
                raise ValueError("keycircuit: layout must have rows*cols keys")
            layout = bytes(layout)
        if bounce_ms < 0:
            raise ValueError("keycircuit: bounce_ms must be >= 0")
        self.nr = nr
        self.nc = nc
        self.layout = layout
        self.clock = clock if clock is not None else Clock()
        self.bounce_ms = bounce_ms
        self.seed = seed & 0xFFFF
        self.float_level = 1 if float_level else 0
        self.shorts = 0
        self.reads = 0              # pin reads, for benchmarks that want the count
        # nodes: keypad rows 0..nr-1, columns nr..nr+nc-1, then other pins as used
        self._node = {}
        self.ids = []
        self.mode = []
        self.out = []
        self.pull = []
        self.ext = []
        self.switch = []            # -1 no switch, else the index into _sw
        for p in rows:
            self._add(p)
        for p in cols:
            self._add(p)
        n = nr * nc
        self._at = [0] * n          # tick of the contact's last event
        self._state = [0] * n       # 1 closed after the event
        self._prev = [0] * n        # the state before it
        self._ev = [0] * n          # events so far (varies the chatter)
        self._used = [0] * n        # 1 once the contact had an event
        self._k = 0                 # closed-contact bitmap cached at tick _k_at
        self._k_at = -1
        self._nets_k = -1           # the bitmap the nets below were computed for
        self._net = [0] * (nr + nc)  # node i's net as a bitmap of keypad nodes
        self._sw = []               # switches: [pin node, closed, prev, at, level]
        for p in pullups:
            self.ext[self._add(p)] = _P_UP
        for p in pulldowns:
            self.ext[self._add(p)] = _P_DOWN
        use(self)

    def _add(self, pin):
        i = self._node.get(pin)
        if i is not None:
            return i
        i = len(self.ids)
        self._node[pin] = i
        self.ids.append(pin)
        self.mode.append(_M_IN)
        self.out.append(0)
        self.pull.append(_P_NONE)
        self.ext.append(_P_NONE)
        self.switch.append(-1)
        return i

    # The node of pin id `pin` (created on first use: an unconnected pin).
    def node(self, pin):
        i = self._node.get(pin)
        if i is None:
            i = self._add(pin)
        return i

    # ---- keys -----------------------------------------------------------------

    def index(self, key):
        if isinstance(key, tuple):
            r, c = key
            if not (0 <= r < self.nr and 0 <= c < self.nc):
                raise ValueError("keycircuit: no key at %r" % (key,))
            return r * self.nc + c
        if isinstance(key, str):
            if len(key) != 1:
                raise ValueError("keycircuit: a key is one character")
            key = ord(key)
        if self.layout is not None:
            for i in range(len(self.layout)):
                if self.layout[i] == key:
                    return i
        raise ValueError("keycircuit: no key %r on this keypad" % (key,))

    def _event(self, k, closed, at):
        t = self.clock() if at is None else at
        self._prev[k] = self._contact(k, t)
        self._state[k] = closed
        self._at[k] = t
        self._ev[k] += 1
        self._used[k] = 1
        self._k_at = -1

    # Press `key` (layout char, ASCII int or (row, col)) now, or at tick `at`.
    def press(self, key, at=None):
        self._event(self.index(key), 1, at)

    # Let go of `key` (a key not held: nothing happens, as on a real pad).
    def release(self, key, at=None):
        k = self.index(key)
        if self._state[k]:
            self._event(k, 0, at)

    def release_all(self, at=None):
        for k in range(self.nr * self.nc):
            if self._state[k]:
                self._event(k, 0, at)

    # The keys held (settled state), row-major, as layout bytes.
    def held(self):
        out = bytearray()
        for k in range(self.nr * self.nc):
            if self._state[k]:
                out.append(self.layout[k] if self.layout is not None else k)
        return bytes(out)

    # Contact k at tick t: 1 closed. Chatter for bounce_ms after each event.
    def _contact(self, k, t):
        if not self._used[k]:
            return 0
        e = _diff(t, self._at[k])
        if e < 0:
            return self._prev[k]
        if e >= self.bounce_ms:
            return self._state[k]
        # a 16-bit mixing hash; every product stays below 2**30 (small ints in the VM)
        x = ((self.seed << 8) ^ (k * 37) ^ (self._ev[k] * 101) ^ (e * 7)) & 0xFFFF
        x = (x * 12829 + 6925) & 0xFFFF
        x ^= x >> 7
        x = (x * 12829 + 6925) & 0xFFFF
        return (x >> 9) & 1

    # Bitmap of closed contacts (bit r*cols+c) at the clock's time, once per tick.
    def closed(self):
        t = self.clock()
        if t == self._k_at:
            return self._k
        k = 0
        i = 0
        n = self.nr * self.nc
        while i < n:
            if self._used[i] and self._contact(i, t):
                k |= 1 << i
            i += 1
        self._k = k
        self._k_at = t
        return k

    # Each keypad node's net through the closed contacts k (bitmaps over nodes).
    def _nets(self, k):
        nr = self.nr
        nc = self.nc
        net = self._net
        i = 0
        while i < nr + nc:
            cur = 1 << i
            while True:
                grown = cur
                r = 0
                while r < nr:
                    c = 0
                    while c < nc:
                        if (k >> (r * nc + c)) & 1:
                            pair = (1 << r) | (1 << (nr + c))
                            if grown & pair:
                                grown |= pair
                        c += 1
                    r += 1
                if grown == cur:
                    break
                cur = grown
            net[i] = cur
            i += 1
        self._nets_k = k

    # ---- levels ---------------------------------------------------------------

    # The level (0/1) pin node i reads now.
    def level(self, i):
        self.reads += 1
        nk = self.nr + self.nc
        net = 0
        if i < nk:
            k = self.closed()
            if k != self._nets_k:
                self._nets(k)
            net = self._net[i]
            if net == 1 << i:
                net = 0             # alone on its net (the usual case): its own pin decides
        mode = self.mode
        out = self.out
        pull = self.pull
        ext = self.ext
        up = 0
        dn = 0
        if not net:
            m = mode[i]
            if m == _M_OUT:
                return out[i]
            if m == _M_OD and out[i] == 0:
                return 0
            s = self.switch[i]
            if s >= 0:
                sw = self._sw[s]
                if self._switch_closed(sw):
                    return sw[4]
            p = pull[i]
            e = ext[i]
            up = p == _P_UP or e == _P_UP
            dn = p == _P_DOWN or e == _P_DOWN
        else:
            lo = 0
            hi = 0
            j = 0
            while j < nk:
                if (net >> j) & 1:
                    m = mode[j]
                    if m != _M_IN:
                        if out[j] == 0:
                            lo = 1
                        elif m == _M_OUT:
                            hi = 1
                    p = pull[j]
                    e = ext[j]
                    if p == _P_UP or e == _P_UP:
                        up = 1
                    if p == _P_DOWN or e == _P_DOWN:
                        dn = 1
                j += 1
            if lo:
                if hi:
                    self.shorts += 1
                return 0
            if hi:
                return 1
        if up and not dn:
            return 1
        if dn and not up:
            return 0
        return self.float_level

    # ---- switches outside the matrix (doors, tamper) --------------------------

    # A switch from pin to a rail (level 0: GND, 1: 3V3), closed or open now.
    def add_switch(self, pin, closed=True, level=0):
        i = self.node(pin)
        if i < self.nr + self.nc:
            raise ValueError("keycircuit: a switch cannot sit on a keypad line")
        c = 1 if closed else 0
        self.switch[i] = len(self._sw)
        self._sw.append([i, c, c, -0x10000000, level])

    # Close or open the switch on pin (it bounces like a key for bounce_ms).
    def set_switch(self, pin, closed, at=None):
        i = self._node.get(pin)
        if i is None or self.switch[i] < 0:
            raise ValueError("keycircuit: no switch on pin %r" % (pin,))
        sw = self._sw[self.switch[i]]
        t = self.clock() if at is None else at
        sw[2] = self._switch_closed(sw)
        sw[1] = 1 if closed else 0
        sw[3] = t

    def _switch_closed(self, sw):
        e = _diff(self.clock(), sw[3])
        if e < 0:
            return sw[2]
        if e < self.bounce_ms and e % 2 == 1:
            return sw[2]
        return sw[1]

    # The level an output pin drives (None: not an output), for watching solenoids/LEDs.
    def driven(self, pin):
        i = self._node.get(pin)
        if i is None or self.mode[i] == _M_IN:
            return None
        if self.mode[i] == _M_OD and self.out[i]:
            return None
        return self.out[i]


def use(circuit):
    # Make `circuit` the one that machine.Pin-style Pin(id) objects wire into.
    global _active
    _active = circuit


def active():
    if _active is None:
        raise RuntimeError("keycircuit: no circuit built yet")
    return _active


# ---- the firmware's pin interface (what pb_esp32.hw uses of machine.Pin) ----------

class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1

    # Pin(id, mode=None, pull=-1, *, value=None) on the active circuit.
    def __init__(self, id, mode=None, pull=-1, value=None):
        c = active()
        self.circuit = c
        self.id = id
        self._i = c.node(id)
        if mode is not None or pull != -1 or value is not None:
            self.init(mode, pull, value=value)

    def init(self, mode=None, pull=-1, value=None):
        c = self.circuit
        i = self._i
        if value is not None:
            c.out[i] = 1 if value else 0        # level first, then direction
        if mode is not None:
            if mode == Pin.IN:
                c.mode[i] = _M_IN
            elif mode == Pin.OUT:
                c.mode[i] = _M_OUT
            elif mode == Pin.OPEN_DRAIN:
                c.mode[i] = _M_OD
            else:
                raise ValueError("invalid pin mode")
        if pull != -1:
            if pull is None:
                c.pull[i] = _P_NONE
            elif pull == Pin.PULL_UP:
                c.pull[i] = _P_UP
            elif pull == Pin.PULL_DOWN:
                c.pull[i] = _P_DOWN
            else:
                raise ValueError("invalid pull")

    # Read the pad (also for outputs), or set the output latch.
    def value(self, v=None):
        if v is None:
            return self.circuit.level(self._i)
        self.circuit.out[self._i] = 1 if v else 0

    def __call__(self, v=None):
        if v is None:
            return self.circuit.level(self._i)
        self.circuit.out[self._i] = 1 if v else 0

    def on(self):
        self.circuit.out[self._i] = 1

    def off(self):
        self.circuit.out[self._i] = 0

    def __repr__(self):
        return "Pin(%r)" % (self.id,)


# ---- the digitalio interface (what Blinka's digitalio offers, for Matrix_Keypad) ----

class Direction:
    pass


Direction.INPUT = Direction()
Direction.OUTPUT = Direction()


class Pull:
    pass


Pull.UP = Pull()
Pull.DOWN = Pull()


class DriveMode:
    pass


DriveMode.PUSH_PULL = DriveMode()
DriveMode.OPEN_DRAIN = DriveMode()


class BoardPin:
    # A pin as Blinka's `board` module hands it out: .id, tied to its circuit.
    def __init__(self, circuit, id):
        self.circuit = circuit
        self.id = id

    def __repr__(self):
        return "board.%s" % (self.id,)


class Board:
    # The `board` module of a circuit: board.D17 etc. for every pin id given.
    def __init__(self, circuit, names):
        for n in names:
            setattr(self, n, BoardPin(circuit, n))
            circuit.node(n)


class DigitalInOut:
    # Behaves as Blinka's digitalio.DigitalInOut: starts as an input without pull;
    # OUTPUT drives False push-pull; pull only on inputs, value= only on outputs.
    def __init__(self, pin):
        if not isinstance(pin, BoardPin):
            raise TypeError("DigitalInOut needs a board pin")
        self._c = pin.circuit
        self._i = pin.circuit.node(pin.id)
        self._dir = None
        self._pull = None
        self._drive = DriveMode.PUSH_PULL
        self.direction = Direction.INPUT

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.deinit()

    def switch_to_output(self, value=False, drive_mode=DriveMode.PUSH_PULL):
        self.direction = Direction.OUTPUT
        self.value = value
        self.drive_mode = drive_mode

    def switch_to_input(self, pull=None):
        self.direction = Direction.INPUT
        self.pull = pull

    def deinit(self):
        if self._c is not None:
            self._c.mode[self._i] = _M_IN
            self._c.pull[self._i] = _P_NONE
            self._c = None

    def _live(self):
        if self._c is None:
            raise ValueError("Object has been deinitialized and can no longer be used. "
                             "Create a new object.")
        return self._c

    @property
    def direction(self):
        return self._dir

    @direction.setter
    def direction(self, d):
        c = self._live()
        if d is Direction.OUTPUT:
            self._dir = d
            c.mode[self._i] = _M_OUT
            c.pull[self._i] = _P_NONE
            c.out[self._i] = 0
            self._drive = DriveMode.PUSH_PULL
        elif d is Direction.INPUT:
            self._dir = d
            c.mode[self._i] = _M_IN
            c.pull[self._i] = _P_NONE
            self._pull = None
        else:
            raise AttributeError("Not a Direction")

    @property
    def value(self):
        return self._live().level(self._i) == 1

    @value.setter
    def value(self, v):
        c = self._live()
        if self._dir is not Direction.OUTPUT:
            raise AttributeError("Not an output")
        c.out[self._i] = 1 if v else 0

    @property
    def pull(self):
        if self._dir is not Direction.INPUT:
            raise AttributeError("Not an input")
        return self._pull

    @pull.setter
    def pull(self, p):
        c = self._live()
        if self._dir is not Direction.INPUT:
            raise AttributeError("Not an input")
        if p is Pull.UP:
            c.pull[self._i] = _P_UP
        elif p is Pull.DOWN:
            c.pull[self._i] = _P_DOWN
        elif p is None:
            c.pull[self._i] = _P_NONE
        else:
            raise AttributeError("Not a Pull")
        self._pull = p

    @property
    def drive_mode(self):
        if self._dir is not Direction.OUTPUT:
            raise AttributeError("Not an output")
        return self._drive

    @drive_mode.setter
    def drive_mode(self, m):
        c = self._live()
        if self._dir is not Direction.OUTPUT:
            raise AttributeError("Not an output")
        if m is DriveMode.OPEN_DRAIN:
            c.mode[self._i] = _M_OD
        elif m is DriveMode.PUSH_PULL:
            c.mode[self._i] = _M_OUT
        else:
            raise AttributeError("Not a DriveMode")
        self._drive = m


# A board module (board.D17 ...) for the circuit, naming the given pins (default: its
# keypad pins and every pin used so far that has a str id).
def board_module(circuit, names=None):
    if names is None:
        names = [p for p in circuit.ids if isinstance(p, str)]
    return Board(circuit, names)
