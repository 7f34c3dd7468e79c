# The virtual board's agent (docs/vboard.md): MicroPython code that runs INSIDE the VM,
# never imported by CPython. It plays the part of MicroPython's C main loop and pyexec.
#
# The REPL itself (line editing, raw REPL, raw-paste, soft reboot) runs on the host, in
# the `vb_next` host call: it answers with the next thing to run ([kind, name]: kind 0 the
# command in /__vboard__/cmd compiled as a file, 1 the same as one REPL line, 2 the flash
# file `name`). The agent runs it in the persistent __main__ globals and reports the
# status with its next `vb_next` (0 ok, 1 an exception, printed to stderr, 2 SystemExit:
# a soft reboot). `host`, `os`, `time`, `machine` and `sys` are replaced in sys.modules by
# the board's versions: an ESP32's names, Ctrl-C delivered at host calls and sleeps.
# (Module-level names only: methods of a class nested in a function see no closure here.)
import sys
import json
from binascii import unhexlify
import host as _h
import os as _os
import time as _time
import machine as _machine

_call = _h.call
_KBD = '{"ok":false,"error":"VBKbd'


def _vb(name, *args):
    r = _call(name, json.dumps({"args": args}))
    if r.startswith(_KBD):
        raise KeyboardInterrupt
    return json.loads(r).get("value")


_info = _vb("vb_info")


class _Host:
    # host.call as the board's programs see it: a pending Ctrl-C lands here
    def call(self, name, payload):
        r = _call(name, payload)
        if r.startswith(_KBD):
            raise KeyboardInterrupt
        return r


class _Delegate:
    def __init__(self, mod):
        self._m = mod

    def __getattr__(self, name):
        return getattr(self._m, name)


class _Uname:
    def __init__(self, t):
        self.sysname, self.nodename, self.release, self.version, self.machine = t
        self._t = tuple(t)

    def __getitem__(self, i):
        return self._t[i]

    def __len__(self):
        return 5

    def __repr__(self):
        return "(sysname=%r, nodename=%r, release=%r, version=%r, machine=%r)" % self._t


_uname = _Uname(_info["uname"])


class _Os(_Delegate):
    def uname(self):
        return _uname

    def statvfs(self, path):
        return tuple(_vb("vb_statvfs", path))

    def ilistdir(self, path="."):
        # (name, type, inode, size) as on LittleFS; the VM gives three fields
        base = path.rstrip("/")
        for e in _os.ilistdir(path):
            size = 0
            if e[1] == 0x8000:
                try:
                    size = _os.stat(base + "/" + e[0])[6]
                except OSError:
                    pass
            yield (e[0], e[1], 0, size)

    def sync(self):
        pass


class _Time(_Delegate):
    # sleeps go through the host, so that Ctrl-C interrupts them as on a board
    def sleep(self, s):
        _vb("vb_sleep", int(s * 1000))

    def sleep_ms(self, ms):
        _vb("vb_sleep", int(ms))


class _Machine(_Delegate):
    PWRON_RESET = 1
    HARD_RESET = 2
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5

    def reset(self):
        _vb("vb_reset")

    def soft_reset(self):
        raise SystemExit

    def reset_cause(self):
        return _info["cause"]

    def unique_id(self):
        return unhexlify(_info["uid"])

    def freq(self, *a):
        return 160000000


class _Impl:
    def __init__(self, t):
        self.name, self.version, self._machine, self._mpy, self._build = t
        self._t = t

    def __repr__(self):
        return "(name=%r, version=%r, _machine=%r, _mpy=%r, _build=%r)" % self._t


class _Sys(_Delegate):
    implementation = _Impl((sys.implementation.name, sys.implementation.version,
                            _info["machine"], sys.implementation._mpy, _info["build"]))
    platform = "esp32"


def _vb_main():
    mods = sys.modules
    mods["host"] = _Host()
    mods["os"] = _Os(_os)
    mods["time"] = _Time(_time)
    mods["machine"] = _Machine(_machine)
    mods["sys"] = _Sys(sys)
    sys.path[:] = ["", "/lib"]
    g = {"__name__": "__main__"}
    st = 0
    while True:
        k, name = json.loads(_call("vb_next", '{"args":[%d]}' % st))["value"]
        st = 0
        f = code = src = None
        try:
            f = open(name if k == 2 else "/__vboard__/cmd")
            src = f.read()
            f.close()
            code = compile(src, name, "single" if k == 1 else "exec")
            src = None
            exec(code, g)
        except SystemExit:
            st = 2
        except BaseException as e:  # noqa - the board prints every error and goes on
            sys.print_exception(e, sys.stderr)
            st = 1
        f = code = src = None


_vb_main()
