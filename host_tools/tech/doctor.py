"""`parcelbox doctor`: what a technician needs to know about a board, and what to do about it.

Reads through mpremote's raw REPL (docs/tooling.md section 6): MicroPython and mpy version, heap,
flash, the active slot's firmware and every file's hash against that slot's manifest.json, the
configuration checked on the board by its own firmware (a field name, never a value), the last
crash, Wi-Fi and broker reachability where the board has them. Exit 0 healthy, 1 problems,
2 the board cannot be reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from host_tools.tech import heapneed
from host_tools.tech.conn import SLOTS, BoardConn, BoardConnectionError
from host_tools.tech.deploy import board_memory, fit, intact, scan, slot_manifests, stop_app

OK, WARN, FAIL, NA = "ok", "warn", "FAIL", "n/a"
HEAP_LOW = 8 * 1024        # a margin below this: the network or a large command may not fit
FLASH_LOW = 64 * 1024      # a box writes its event log and state files: keep room
FLASH_FULL = 16 * 1024

# Runs on the board after boardconn's helpers; prints one JSON object, never a secret.
_PROBE = """\
import sys
d = {}
try:
    d['uname'] = list(os.uname())
except Exception:
    d['uname'] = None
d['impl'] = [sys.implementation.name, list(sys.implementation.version)[:3],
             getattr(sys.implementation, '_mpy', 0)]
gc.collect()
d['heap'] = [gc.mem_free(), gc.mem_alloc()]
try:
    s = os.statvfs('/')
    d['flash'] = [s[0] * s[3], s[0] * s[2]]
except Exception:
    d['flash'] = None
try:
    with open('crash.n') as f:
        d['crash.n'] = int(f.read() or '0')
except (OSError, ValueError):
    d['crash.n'] = 0
for n in ('crash.txt', 'crash.last'):
    try:
        with open(n, 'rb') as f:
            t = f.read()
        t = bytes(c if 31 < c < 127 or c == 10 else 63 for c in t).decode()  # '?' for non-ASCII
        d[n] = [len(t), [x for x in t.strip().split('\\n') if x][-1:]]
    except OSError:
        d[n] = None
try:
    import parcelbox
    d['fw'] = [parcelbox.VERSION, parcelbox.__file__]
except Exception:  # ImportError, or a damaged .mpy (ValueError): the slot's hashes tell which
    d['fw'] = None
d['files'] = {}
for e in os.ilistdir('/'):
    if e[1] == 0x8000:
        d['files'][e[0]] = os.stat('/' + e[0])[6]
try:
    import network
    w = network.WLAN(network.STA_IF)
    d['wifi'] = [w.active(), w.isconnected(), w.config('essid') if w.isconnected() else None,
                 w.status('rssi') if w.isconnected() else None]
except ImportError:
    d['wifi'] = 'none'
except Exception as e:
    d['wifi'] = ['error', str(e)]
print(json.dumps(d))
"""

# The broker from the board's side: a TCP connection (DNS included), 3 s at most.
_BROKER = """\
try:
    import socket
    k = socket.socket()
    try:
        k.settimeout(3)
        k.connect(socket.getaddrinfo(%r, %d)[0][-1])
        r = 'ok'
    finally:
        k.close()
except ImportError:
    r = 'none'
except Exception as e:
    r = ['error', '%%s %%s' %% (e.__class__.__name__, e)]
print(json.dumps(r))
"""


# config.json with its secrets replaced on the board by stand-ins of the same shape (a key of
# 64 hex digits stays one, a password keeps its length), so that they never cross the cable:
# the host judges the rest with the firmware's own rules.
_REDACTED = """\
def _pbred():
    try:
        with open('/config.json') as f:
            c = json.loads(f.read())
    except OSError:
        return None
    except ValueError:
        return '{'
    if type(c) is dict:
        k = c.get('box_key')
        if type(k) is str:
            try:
                ok = len(k) == 64 and len(binascii.unhexlify(k)) == 32
            except ValueError:
                ok = False
            c['box_key'] = '0' * 64 if ok else 'not hex'
        if type(c.get('mqtt_password')) is str:
            c['mqtt_password'] = 'x' * len(c['mqtt_password'])
        w = c.get('wifi')
        if type(w) is dict and type(w.get('password')) is str:
            w['password'] = 'x' * len(w['password'])
    return json.dumps(c)
def _pbtxt(p):
    try:
        return open(p).read() if _pbx(p) else None
    except ValueError:   # not UTF-8 (UnicodeError): not JSON either
        return '{'
print(json.dumps([_pbred(), _pbtxt('/board.json')]))
"""


class _BoardFiles:
    """The board's root as parcelbox.storage.Storage looks to devconf: the two JSON files
    (config.json redacted on the board), every other file by its size."""

    def __init__(self, texts: dict, sizes: dict):
        self.texts, self.sizes = texts, sizes

    def read(self, name):
        t = self.texts.get(name)
        return None if t is None else t.encode()

    def size(self, name):
        return self.sizes.get(name.lstrip("/"), -1)


def check_config(conn: BoardConn, sizes: dict) -> list:
    """The firmware's own rules (parcelbox.devconf, on the host: the same source) over the
    board's board.json and redacted config.json: [None, box, board, host, port, tls, ssid] or
    [the error, which names a field, never its value]."""
    from host_tools.tech.provision import _firmware
    devconf, _ = _firmware()
    st = _BoardFiles(dict(zip(("config.json", "board.json"), conn.json(_REDACTED))), sizes)
    try:
        b = devconf.load_board(st)
        c = devconf.load_config(st)
        devconf.check_settings(b, c)
    except devconf.ConfigError as e:
        return [str(e)]
    return [None, c["box_id"], b.get("name"), c["broker"]["host"], c["broker"]["port"], c["broker"]["tls"],
            c["wifi"]["ssid"]]


class Unreachable(BoardConnectionError):
    """The board cannot be reached or stopped answering: doctor's exit 2."""


@dataclass
class Check:
    name: str
    status: str
    detail: str
    action: str = ""


def _kb(n: int) -> str:
    return "%.1f KB" % (n / 1024)


def examine(conn: BoardConn, running: bool = False, say=print) -> tuple[list[Check], dict]:
    """Read the board. What the application leaves behind (heap, Wi-Fi, the broker) first,
    right after Ctrl-C stopped it; then, if it was running, a reset into safe mode (its
    watchdog would reset the board during the long part), and the slots' hashes."""
    d = conn.json(_PROBE)
    mem = board_memory(conn)
    d["config"] = check_config(conn, d["files"])
    d["broker"] = "none"
    if d["config"][0] is None and d.get("wifi") != "none":
        d["broker"] = conn.json(_BROKER % (d["config"][3], d["config"][4]))
    if running:
        stop_app(conn, say)
    state = scan(conn)
    checks: list[Check] = []
    impl = d["impl"]
    ver = ".".join(str(x) for x in impl[1])
    mpy = impl[2] or 0
    release = " (%s)" % d["uname"][3] if d.get("uname") else ""
    # the slot boot.py takes: the pointer's while it has a manifest (files checked by size there,
    # by hash here), else the other one
    manifests = slot_manifests(conn, state)
    active = next((s for s in (state.get("ptr"),) + SLOTS if s in SLOTS and s in manifests), None)
    manifest = manifests.get(active)
    mpy_ok = mpy & 0xFF == 6
    checks.append(Check("MicroPython", OK if mpy_ok else FAIL, "%s %s, mpy v%d.%d%s"
                        % (impl[0], ver, mpy & 0xFF, (mpy >> 8) & 3, release),
                        "" if mpy_ok else "flash MicroPython 1.23 or later (the build is mpy v6.3)"))
    free, used = d["heap"]
    frozen = d.get("fw") and ".frozen" in d["fw"][1]
    checks.append(Check("heap", OK, "%s free of %s, %s" % (_kb(free), _kb(free + used),
                                                         "PSRAM" if mem["psram"] else "no PSRAM")))
    checks.append(_margin(manifest, mem, "frozen" if frozen else "mpy"))
    if d.get("flash"):
        ffree, fsize = d["flash"]
        st = FAIL if ffree < FLASH_FULL else WARN if ffree < FLASH_LOW else OK
        checks.append(Check("flash", st, "%s free of %s" % (_kb(ffree), _kb(fsize)),
                            "" if st == OK else "remove what the box does not need (old files, the idle slot)"))
    else:
        checks.append(Check("flash", NA, "os.statvfs not available"))
    checks.append(_firmware(state, active, manifests, d, frozen))
    if "safe_mode" in d["files"]:   # pb_esp32.safe.FLAG, main.py's flag on other ports
        checks.append(Check("safe mode", FAIL, "a safe_mode file is on the flash: the application never starts",
                            "mpremote fs rm :safe_mode, then reset the board"))
    elif not running and (active is not None or frozen):
        checks.append(Check("application", WARN, "not running: the board sits at its REPL (a safe-mode boot, "
                            "a deploy or provision with --no-reset, or a failed start)",
                            "reset the board; parcelbox monitor shows what it prints"))
    checks.append(_config(d))
    checks.append(_crash(d))
    checks.extend(_network(d))
    return checks, d


def _margin(manifest: dict | None, mem: dict, mode: str) -> Check:
    """The heap left when the firmware that runs (or a deploy's .mpy files, on a bare board)
    has room for the board's max_codes: the need of its manifest, else of heap_need.json."""
    try:
        f = fit(manifest or {}, mem, mode)
    except heapneed.HeapNeedError as e:
        return Check("heap margin", NA, "cannot judge: %s" % e,
                     "build again; make bench writes heap_need.json")
    what = "the firmware %s with %d codes (%s) needs %s, the board has %s" % (
        heapneed.HOW[mode], f["codes"], f["codes_from"], heapneed.kb(f["need"]), heapneed.kb(f["heap"]))
    fits = "; ".join(heapneed.what_fits(mode, f["heap"], f["psram"], f["codes"], f["table"], f["most"]))
    if f["margin"] < 0:
        return Check("heap margin", FAIL, "short by %s: %s" % (heapneed.kb(-f["margin"]), what),
                     "what fits: " + (fits or "nothing this board has room for"))
    if f["margin"] < HEAP_LOW:
        return Check("heap margin", WARN, "%s to spare: %s" % (heapneed.kb(f["margin"]), what),
                     "little room for the network and a large command; fewer codes, a frozen image "
                     "or a board with PSRAM (docs/tooling.md section 3)")
    return Check("heap margin", OK, "%s to spare: %s" % (heapneed.kb(f["margin"]), what))


def _firmware(state: dict, active: str | None, manifests: dict, d: dict, frozen) -> Check:
    manifest = manifests.get(active)
    if active is None:
        if frozen:
            return Check("firmware", OK, "parcelbox %s frozen into the image" % d["fw"][0])
        return Check("firmware", FAIL, "no complete app slot (app.ptr %s)" % (state.get("ptr") or "missing"),
                     "parcelbox build, then parcelbox deploy --port ...")
    if manifest is None or not isinstance(manifest.get("files"), list):
        return Check("firmware", FAIL, "%s/manifest.json is unreadable" % active, "deploy again")
    have = state.get(active) or {}
    want = {f["path"][4:]: f["sha256"] for f in manifest["files"] if f["path"].startswith("app/")}
    bad = sorted(p for p, h in want.items() if have.get(p) != h)
    fallback = [s for s in SLOTS if s != active and intact(state, s, manifests.get(s))]
    extra = "" if state.get("ptr") == active else " (app.ptr says %s: fell back)" % (state.get("ptr") or "nothing")
    detail = "parcelbox %s (%s) in %s%s, %d files%s" % (
        manifest["firmware"], manifest["target"], active, extra, len(want),
        "; fallback %s" % fallback[0] if fallback else "")
    if bad:
        return Check("firmware", FAIL, detail + "; differ from the manifest: " + ", ".join(bad[:6]),
                     "deploy again (only the damaged files travel)")
    boot = [n for n in ("boot.py", "main.py")
            if state["root"].get(n) != next((f["sha256"] for f in manifest["files"] if f["path"] == n), None)]
    if boot:
        return Check("firmware", WARN, detail + "; %s differ from the build" % ", ".join(boot),
                     "deploy again to restore the boot files")
    return Check("firmware", OK, detail + ", every hash matches")


def _config(d: dict) -> Check:
    c = d["config"]
    if c[0] is not None:
        act = ("parcelbox provision --port ... --box ID" if "missing" in c[0]
               else "parcelbox provision again, or fix the field named")
        return Check("configuration", FAIL, c[0], act)
    return Check("configuration", OK, "box %s, board %s, broker %s:%d TLS %s, wifi %s (secrets not shown)"
                 % (c[1], c[2], c[3], c[4], "on" if c[5] else "off", c[6]))


CRASH_LOOP = 3   # parcelbox.crash.LOOP_AFTER: from the third crash in a row the boot waits


def _crash(d: dict) -> Check:
    new, last, n = d.get("crash.txt"), d.get("crash.last"), d.get("crash.n", 0)
    if n >= CRASH_LOOP:
        report = new or last
        return Check("last crash", FAIL, "a crash loop: %d crashes in a row, each soon after its boot; "
                     "the boot waits before it starts%s" % (n, ": " + (report[1] or ["?"])[0] if report else ""),
                     "mpremote fs cat :crash.txt; fix the cause, or deploy the previous build")
    if new:
        return Check("last crash", WARN, "not yet reported (crash.txt, %d bytes): %s"
                     % (new[0], (new[1] or ["?"])[0]), "the next boot reports it; parcelbox monitor shows it")
    if last:
        return Check("last crash", WARN, "crash.last (%d bytes): %s" % (last[0], (last[1] or ["?"])[0]),
                     "look at crash.last (mpremote fs cat :crash.last); remove it once handled")
    return Check("last crash", OK, "none recorded")


def _network(d: dict) -> list[Check]:
    w = d.get("wifi")
    if w == "none":
        return [Check("wifi", NA, "not available: this board has no Wi-Fi (network module)"),
                Check("broker", NA, "not available: the board cannot open a socket")]
    if isinstance(w, list) and w and w[0] == "error":
        wifi = Check("wifi", FAIL, "the Wi-Fi driver failed: %s" % w[1], "reset the board")
    elif w[1]:
        wifi = Check("wifi", OK, "connected to %s, RSSI %s dBm" % (w[2], w[3]))
    else:
        wifi = Check("wifi", FAIL, "not connected (station %s)" % ("active" if w[0] else "off"),
                     "check the SSID and password (provision again) and the signal at the box")
    b = d.get("broker")
    if b == "ok":
        broker = Check("broker", OK, "TCP connection to the broker opened from the board")
    elif b == "none":
        broker = Check("broker", NA, "not checked (no valid configuration or no socket)")
    else:
        broker = Check("broker", FAIL, "cannot reach the broker: %s" % b[1],
                       "check the broker address, the firewall and the box's network")
    return [wifi, broker]


def run_cli(port: str, console: Console | None = None, as_json: bool = False) -> int:
    import json
    console = console or Console(highlight=False, stderr=as_json)   # --json: stdout is the JSON
    try:
        conn = BoardConn(port)
    except BoardConnectionError as e:
        raise Unreachable("cannot reach the board: %s (check the cable and the port, that no other "
                          "program holds it (a monitor), and that the board is powered)" % e) from None
    try:
        running = conn.app_running()
        checks, _ = examine(conn, running, console.print)
        if running:
            conn.reset()   # it was stopped to be read (a watchdog would reset it anyway)
    except BoardConnectionError as e:
        raise Unreachable("the board stopped answering: %s" % e) from None
    finally:
        conn.close()
    problems = [c for c in checks if c.status in (FAIL, WARN)]
    if as_json:
        print(json.dumps({"port": port, "healthy": not problems, "restarted": running,
                          "checks": [{"name": c.name, "status": c.status, "detail": c.detail,
                                      "action": c.action} for c in checks]}))
        return 1 if problems else 0
    table = Table(title="parcelbox doctor: %s" % port)
    for col in ("check", "status", "detail", "what to do"):
        table.add_column(col)
    style = {OK: "green", WARN: "yellow", FAIL: "bold red", NA: "dim"}
    for c in checks:
        table.add_row(c.name, "[%s]%s[/]" % (style[c.status], c.status), c.detail, c.action)
    console.print(table)
    if running:
        console.print("the application was stopped to read the board, then the board was reset")
    if problems:
        console.print("[bold red]verdict: %d problem%s[/]" % (len(problems), "s" if len(problems) > 1 else ""))
        for c in problems:
            console.print("  - %s: %s" % (c.name, c.action or c.detail))
        return 1
    console.print("[green]verdict: healthy[/]")
    return 0
