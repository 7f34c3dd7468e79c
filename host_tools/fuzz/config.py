# Fuzz target "config": config.json and board.json (the shipped boards and good configs,
# mutated; deep nesting, NUL and non-ASCII in names, huge numbers, repeated keys, keypad
# layouts with a key twice) through devconf's boot checks, then what the boot builds.
#
# Checked: load_board, load_config and check_settings raise nothing but ConfigError (and
# config.make nothing but ValueError); whatever passes them builds the core (Box, Remote),
# describe()s itself for the boot log, builds the App with its Link and runs a few steps
# without an error. On an ESP32 board, pb_esp32.main.boot on the fake machine (one input
# in _BOOT_EVERY, and every one that passed): a bad file ends in the error blink or the
# free REPL, (None, why); a good one runs; it never raises, and never crashes its boot.
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path

from host_tools import boards
from host_tools.fuzz.runner import Finding, where
from host_tools.fuzz.mutate import BOUNDARY_INTS, STRINGS, Pairs, dumps, mutate, mutate_value, nested, value
from host_tools import virtual  # noqa: E402

virtual.install()
from memflash import MemStorage  # noqa: E402
from parcelbox import config, devconf
from parcelbox import remote as _remote
from parcelbox.box import Box
from parcelbox.link import Link

KEY = "ab" * 32
FILES = {"ca.pem": b"-----BEGIN CERTIFICATE-----\n", "box.crt": b"cert", "box.key": b"key"}
_BROKERS = ({"host": "mqtt.example", "port": 8883, "tls": True, "ca": "ca.pem"},
            {"host": "10.0.0.2", "port": 1883, "tls": False},
            {"host": "mqtt.example", "port": 8883, "ca": "ca.pem", "cert": "box.crt", "key": "box.key"})
_SETTINGS = ({}, {"free_tries": 3}, {"pulse_ms": 500, "cooldown_ms": 1500},
             {"code_len": 8, "max_codes": 1000, "outbox_capacity": 4096})
_CONF_KEYS = ("box_id", "box_key", "wifi", "ssid", "password", "broker", "host", "port", "tls",
              "ca", "cert", "key", "mqtt_username", "mqtt_password", "settings")
_BOARD_KEYS = ("keypad", "rows", "cols", "layout", "pull", "compartments", "solenoid", "door",
               "max_on_ms", "format", "name", "chip", "led", "buzzer", "tamper", "battery")
_NAMES = ("ca.pem\x00", "ca.pem\x00x", "\x00", "", ".", "..", "../ca.pem", "/ca.pem", "ca/pem",
          "çà.pem", "ca.pem ", " ca.pem", "a" * 64, "a" * 65, "ca.pem\n", "\ud800", ".hidden")
_BOOT_EVERY = 8


def _good_conf(rng):
    d = {"box_id": rng.choice(("box-17", "b", "B_1-x" * 6)), "box_key": KEY,
         "wifi": {"ssid": "home", "password": rng.choice(("", "hunter22"))},
         "broker": dict(rng.choice(_BROKERS)), "mqtt_password": "secret-pw",
         "settings": dict(rng.choice(_SETTINGS))}
    if rng.random() < 0.3:
        d["mqtt_username"] = "user-1"
    return d


def _layout(rng, lay):
    k = rng.randrange(6)
    if not lay or k == 5:
        return rng.choice(("", "0123456789*#ABCDEFGHIJKLMNOPQRS", "0123456789*#" * 2))
    i = rng.randrange(len(lay))
    if k == 0:  # a key twice
        return lay[:i] + lay[rng.randrange(len(lay))] + lay[i + 1:]
    if k == 1:  # a key no one can type
        return lay[:i] + rng.choice(("\x00", " ", "\x7f", "é", "\n", "日")) + lay[i + 1:]
    if k == 2:
        return lay[:i] + lay[i + 1:]
    if k == 3:
        return lay + rng.choice(("E", "1", "EF"))
    return "".join(rng.sample(lay, len(lay)))


_POOL = "0123456789*#ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!$%&"


def _board(rng, base):
    b = json.loads(json.dumps(base))
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        if not isinstance(b, dict):
            return b
        kp = b.get("keypad")
        kp = kp if isinstance(kp, dict) else None
        k = rng.randrange(7)
        if k == 0 and kp is not None and isinstance(kp.get("layout"), str):
            kp["layout"] = _layout(rng, kp["layout"])
        elif k == 1 and kp is not None:  # another matrix: 1 to 8 rows and columns
            kp["rows"] = rng.sample(range(40), rng.randrange(1, 9))
            kp["cols"] = rng.sample(range(40), rng.randrange(1, 9))
            kp["layout"] = _POOL[:len(kp["rows"]) * len(kp["cols"])]
        elif k == 2 and isinstance(b.get("compartments"), list):
            b["compartments"] = b["compartments"] * rng.choice((0, 2, 8, 9, 40))
        elif k == 3:
            b["max_on_ms"] = rng.choice(BOUNDARY_INTS + (49, 50, 699, 700, 5000, 5001, 1.5, "2000", None))
        else:
            b = mutate_value(rng, b, _BOARD_KEYS)
    return b


def _conf(rng):
    d = _good_conf(rng)
    k = rng.randrange(10)
    if k < 2:  # a file name no file can have
        d["broker"][rng.choice(("ca", "cert", "key"))] = rng.choice(_NAMES)
    elif k < 4:  # settings at and past their edges, of every type
        s = d["settings"]
        for _ in range(rng.randrange(1, 5)):
            n = rng.choice(tuple(config.DEFAULTS) + ("nope", ""))
            lo, hi = config._RANGES.get(n, (0, 1))
            s[n] = rng.choice((lo, hi, lo - 1, hi + 1, rng.choice(BOUNDARY_INTS), True, None,
                               "1", 1.0, [lo], {"v": lo}, config.DEFAULTS.get(n)))
            if isinstance(s[n], bytes):
                s[n] = s[n].decode()
    elif k < 6:
        for _ in range(rng.randint(1, 4)):
            d = mutate_value(rng, d, _CONF_KEYS)
    elif k == 6:  # a value replaced by something nested deep
        return None, rng
    elif k == 7:
        d["box_id"] = rng.choice(STRINGS)
    elif k == 8:
        d = Pairs(list(d.items()) + [("broker", value(rng))])
    return d, None


def _text(rng, obj, deep_rng=None):
    if deep_rng is not None:  # a field holding deeply nested JSON
        t = dumps(_good_conf(rng))
        i = t.index(rng.choice(('"settings": ', '"wifi": ', '"broker": ', '"box_id": ')).replace(" ", ""))
        i = t.index(":", i) + 1
        return (t[:i] + nested(rng) + "}").encode()
    raw = dumps(obj, rng.random() < 0.3).encode("utf-8", "surrogatepass")
    return mutate(rng, raw) if rng.random() < 0.15 else raw


# MemStorage with the file names CPython's os.stat and open refuse (ValueError: embedded
# null byte), as parcelbox.storage.Storage meets them on the linux port and the host.
class _Flash(MemStorage):
    def _name(self, name):
        if "\x00" in name:
            raise ValueError("embedded null byte")
        return name

    def read(self, name):
        return MemStorage.read(self, self._name(name))

    def open(self, name):
        return MemStorage.open(self, self._name(name))

    def size(self, name):
        return MemStorage.size(self, self._name(name))


class _Net:
    def step(self, now):
        pass

    def up(self):
        return False

    def time(self):
        return None


class _Port:
    def __init__(self, storage, n):
        self.storage, self.net, self.t = storage, _Net(), 0
        self.lines = []

    def ticks_ms(self):
        return self.t

    def urandom(self, n):
        return bytes(n)

    def log(self, level, text):
        self.lines.append(text)

    def scan(self):
        return 0

    def door(self, c):
        return False

    def tamper(self):
        return None

    def solenoid(self, c, on):
        pass

    def indicate(self, led, hz):
        pass

    def feed(self):
        pass

    def idle(self, ms, conn=None):
        self.t += max(ms, 1)


class Target:
    def __init__(self, rng):
        self.boards = [boards.device_board(p) for p in boards.shipped()]
        self.last_input = None
        self.n = 0
        self._dir = None

    def one(self, rng):
        self.n += 1
        base = rng.choice(self.boards)
        board = _board(rng, base) if rng.random() < 0.6 else base
        btext = nested(rng).encode() if rng.random() < 0.03 else _text(rng, board)
        conf, deep = _conf(rng)
        ctext = _text(rng, conf, deep)
        self.last_input = {"board.json": btext, "config.json": ctext}
        st = _Flash({k: bytearray(v) for k, v in FILES.items()})
        st.files["board.json"] = bytearray(btext)
        st.files["config.json"] = bytearray(ctext)
        ok = self._checks(st)
        if base.get("chip", "").startswith("esp32") and (ok or self.n % _BOOT_EVERY == 0):
            self._esp32_boot(st, ok)

    # The boot checks, then what a good configuration must build; True if it passed.
    def _checks(self, st):
        try:
            board = devconf.load_board(st)
            conf = devconf.load_config(st)
            devconf.check_settings(board, conf)
        except devconf.ConfigError:
            return False
        s = devconf.core_settings(board, conf)
        config.make(s)  # check_settings said it is good: a ValueError now is a finding
        box = Box(st, conf["box_key"], _remote.stored_settings(st, s), 0)
        _remote.Remote(box, conf["box_id"], conf["box_key"])
        devconf.describe(conf, board)
        port = _Port(st, len(board["compartments"]))
        from parcelbox.app import App
        app = App(port, board, conf, make_link=Link)
        app.run(5)
        if app.errors:
            raise Finding("the App's loop failed on a good configuration: %r" % port.lines[-3:])
        return True

    # pb_esp32.main.boot on the fake machine, from a flash folder holding these files.
    def _esp32_boot(self, st, ok):
        import fakeworld
        from pb_esp32 import main as pbmain
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="pb-fuzz-")
            weakref.finalize(self, shutil.rmtree, self._dir, True)
        shutil.rmtree(self._dir)
        os.mkdir(self._dir)
        for k, v in st.files.items():
            if k in FILES or k.endswith(".json"):
                Path(self._dir, k).write_bytes(bytes(v))
        chip = "esp32"
        try:
            b = json.loads(st.files["board.json"])
            chip = b.get("chip") if b.get("chip") in ("esp32", "esp32s3") else "esp32"
        except Exception:  # noqa: BLE001 - any board text: the world only needs a chip
            pass
        w = fakeworld.new(chip)
        w.on_reset = "flag"
        lines, resets = [], []
        try:
            r = pbmain.boot(self._dir, net=_Net(), clock=w.ticks_ms, sleep=w.advance, reset_cause=1,
                            out=lines.append, blink_rounds=1, reset=lambda: resets.append(1))
        except BaseException as e:  # noqa: BLE001 - fakeworld.Reset is one
            raise Finding("pb_esp32.main.boot raised %s: %s (the box is left at its REPL, "
                          "or resets)" % (type(e).__name__, e),
                          "boot raised %s in %s" % (type(e).__name__, where(e))) from e
        app, why = r
        if app is None and why is None:
            raise Finding("a boot with %s configuration crashed and reset: %s"
                          % ("a good" if ok else "a bad", [x for x in lines if " E " in x][-1:]))
        if app is None and why not in (devconf.NO_CONFIG, devconf.BAD_CONFIG, devconf.NO_BOARD,
                                       devconf.BAD_BOARD):
            raise Finding("boot gave up with %r" % (why,))
        if app is not None and not ok:
            raise Finding("the boot ran a configuration the checks refused")
        if app is None and ok and why != devconf.BAD_BOARD:  # pins are the hardware's to refuse
            raise Finding("the boot refused a configuration the checks passed: %r" % lines[-1:])
