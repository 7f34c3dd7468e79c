# Two keypad scanners on two identical virtual circuits (host_tools/virtual/keycircuit.py), for
# CPython and the MicroPython VM: adafruit_matrixkeypad.Matrix_Keypad on digitalio pins,
# and the firmware's own scan (pb_esp32.hw.Hardware.scan) on machine.Pin-style pins.
#
# Both circuits get the same seed, the same presses and one clock, so their contacts
# close and chatter alike, ms for ms. Each scanner's raw frame goes through its own
# parcelbox.keypad.Keypad (debounce, one event per press, multi-key rejection), which
# is how the linux port and the ESP32 port each feed the core.
# Needs on the path: keycircuit (host_tools), the firmware, firmware/esp32, a `machine`
# module for pb_esp32.hw's import (tests/fakes), and adafruit_matrixkeypad.
import sys

try:
    from host_tools.virtual import keycircuit       # CPython: the package
except ImportError:
    import keycircuit                       # the VM: this folder is on the path

# adafruit_matrixkeypad does `from digitalio import Direction, Pull`: it must get the
# circuit's digitalio, so that its Direction/Pull values are the ones our pins know.
sys.modules["digitalio"] = keycircuit
_m = sys.modules.get("adafruit_matrixkeypad")
if _m is not None and getattr(_m, "Direction", None) is not keycircuit.Direction:
    del sys.modules["adafruit_matrixkeypad"]    # imported before with another digitalio

from adafruit_matrixkeypad import Matrix_Keypad  # noqa: E402
from parcelbox.keypad import NONE, Keypad  # noqa: E402
from pb_esp32.hw import Hardware  # noqa: E402


def pin_name(p):
    # a board pin's name for the digitalio side: Blinka names as they are, GPIO n -> "Dn"
    return p if isinstance(p, str) else "D%d" % p


class FirmwareScan:
    # The keypad pins exactly as pb_esp32.hw.Hardware.__init__ builds them, and its scan.
    scan = Hardware.scan

    def __init__(self, rows, cols, internal_pull):
        Pin = keycircuit.Pin
        self._rows = tuple(Pin(p, Pin.OPEN_DRAIN, value=1) for p in rows)
        pull = Pin.PULL_UP if internal_pull else None
        self._cols = tuple(Pin(p, Pin.IN, pull) for p in cols)
        self._nr = len(self._rows)
        self._nc = len(self._cols)


class MatrixScan:
    # Matrix_Keypad on the circuit's digitalio pins; scan() is its pressed_keys as a frame.
    def __init__(self, circuit, rows, cols, layout):
        brd = keycircuit.board_module(circuit)
        DIO = keycircuit.DigitalInOut
        nc = len(cols)
        keys = []
        self.bit = {}
        for r in range(len(rows)):
            keys.append([layout[r * nc + c] for c in range(nc)])
            for c in range(nc):
                self.bit[layout[r * nc + c]] = 1 << (r * nc + c)
        self.mk = Matrix_Keypad([DIO(getattr(brd, pin_name(p))) for p in rows],
                                [DIO(getattr(brd, pin_name(p))) for p in cols], keys)

    def scan(self):
        bits = 0
        for k in self.mk.pressed_keys:
            bits |= self.bit[k]
        return bits


class Rig:
    # board: a board dict (boards/*.json or board.json shape: keypad rows, cols, layout, pull)
    def __init__(self, board, bounce_ms=5, seed=1, debounce_ms=20, t0=0):
        kp = board["keypad"]
        rows = kp["rows"]
        cols = kp["cols"]
        layout = kp["layout"]
        internal = kp.get("pull", "internal") == "internal"
        ext = () if internal else cols
        self.layout = layout
        self.clock = keycircuit.Clock(t0)
        names_r = [pin_name(p) for p in rows]
        names_c = [pin_name(p) for p in cols]
        self.ca = keycircuit.Circuit(names_r, names_c, layout, self.clock, bounce_ms, seed,
                                     pullups=[pin_name(p) for p in ext])
        self.a = MatrixScan(self.ca, rows, cols, layout)
        self.cb = keycircuit.Circuit(rows, cols, layout, self.clock, bounce_ms, seed,
                                     pullups=ext)
        self.b = FirmwareScan(rows, cols, internal)
        n = len(rows)
        m = len(cols)
        lb = layout.encode()
        self.kpa = Keypad(n, m, lb, debounce_ms)
        self.kpb = Keypad(n, m, lb, debounce_ms)
        self.mismatches = 0         # scans where the two raw frames differed

    def press(self, key):
        self.ca.press(key)
        self.cb.press(key)

    def release(self, key):
        self.ca.release(key)
        self.cb.release(key)

    def release_all(self):
        self.ca.release_all()
        self.cb.release_all()

    # One scan by each at the clock's time: (frame_a, frame_b, key_a, key_b); keys are
    # ASCII ints or NONE.
    def scan(self):
        now = self.clock()
        fa = self.a.scan()
        fb = self.b.scan()
        if fa != fb:
            self.mismatches += 1
        return fa, fb, self.kpa.update(fa, now), self.kpb.update(fb, now)

    # Scan every step_ms for ms; the keys each side accepted, as bytes.
    def run(self, ms, step_ms=5):
        ga = bytearray()
        gb = bytearray()
        t = 0
        while t < ms:
            fa, fb, ka, kb = self.scan()
            if ka != NONE:
                ga.append(ka)
            if kb != NONE:
                gb.append(kb)
            self.clock.advance(step_ms)
            t += step_ms
        return bytes(ga), bytes(gb)
