"""`parcelbox deploy`: a build onto a board, staged in the idle app slot, then switched.

The board's flash (docs/tooling.md section 3):

    boot.py, main.py        pick the slot that app.ptr names; start its port
    app.ptr                 "app_a" or "app_b": the active slot (replaced by rename)
    app_a/, app_b/          two application slots; one is complete once its manifest.json is there
    config.json, board.json, ca.pem, state files: never touched by deploy

Steps: read the board's heap and refuse a build that will not fit it (host_tools/tech/heapneed.py;
nothing is written then), stop the application (a watchdog may run: a reset into safe mode
once, `safe_once`), hash what the board has, empty the idle slot's manifest.json (the slot is
incomplete from now on), copy into it only what differs (from the active slot on the board
when it has the same file, else over the wire), read every hash back, write its
manifest.json, update boot files that changed (each by rename), rename app.ptr to the new
slot, reset. Killed at any point, the board boots the slot app.ptr names, which nothing
touched.
"""

from __future__ import annotations

import binascii
import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from host_tools.tech import build as _build
from host_tools.tech import heapneed
from host_tools.tech.conn import POINTER, SAFE_ONCE, SLOTS, BoardConn, BoardConnectionError

BOOT_LINE = " firmware "    # main.py: "PB I <ms> firmware <version> from /app_X"


@dataclass
class Report:
    slot: str = ""
    previous: str | None = None
    sent: list[tuple[str, int]] = field(default_factory=list)      # (path, bytes) over the wire
    copied: list[str] = field(default_factory=list)                # active slot -> new slot, on the board
    unchanged: list[str] = field(default_factory=list)             # already right in the new slot
    removed: list[str] = field(default_factory=list)
    boot_files: list[str] = field(default_factory=list)
    booted: str | None = None
    fit: dict | None = None        # the board's heap against the build's need (fit())
    build: _build.Build | None = None
    serial: tuple | None = None    # (keep_port) the port left open after the boot line, and what followed it
    identical: bool = False        # the board already runs this very build: nothing was written
    restarted: bool = False        # (identical) its application, stopped to look, was reset

    @property
    def bytes_sent(self) -> int:
        return sum(n for _, n in self.sent)


_SCAN = """\
r = {'ptr': None, 'root': {}}
try:
    with open(%(ptr)r) as f:
        r['ptr'] = f.read().strip()
except (OSError, ValueError):   # missing, or not UTF-8 (UnicodeError): boot.py takes it as none
    pass
for s in %(slots)r:
    o = {}
    try:
        _pbwalk('/' + s, '', o)
    except OSError:
        o = None
    r[s] = o
for n in %(boot)r:
    r['root'][n] = _pbh('/' + n) if _pbx('/' + n) else None
r['safe_once'] = _pbx(%(once)r)
print(json.dumps(r))
"""

# The board's memory, read before anything is written. First the heap as gc counts it (on
# the ESP32, mem_free() includes the largest block the heap can still grow by), in a script
# small enough to compile on a board whose heap a failed start filled. Then PSRAM (an IDF data
# region of 1 MB or more, or SPIRAM in the board's name: "Generic ESP32 module with SPIRAM
# with ESP32"), the firmware that runs (".frozen" in its file: frozen into the image) and the
# max_codes of config.json's settings (that number only: the file holds secrets).
_HEAP = "gc.collect()\nprint(gc.mem_free() + gc.mem_alloc())"
_MEMORY = """\
import sys
r = {'psram': False, 'fw': None, 'max_codes': None}
try:
    import esp32
    r['psram'] = max([h[0] for h in esp32.idf_heap_info(esp32.HEAP_DATA)] + [0]) >= 1048576
except (ImportError, AttributeError):   # not an ESP32 port (the virtual board)
    pass
r['psram'] = r['psram'] or 'SPIRAM' in os.uname().machine + getattr(sys.implementation, '_build', '')
try:
    import parcelbox
    r['fw'] = [parcelbox.VERSION, parcelbox.__file__]
except Exception:   # none, or a damaged .mpy (ValueError)
    pass
try:
    with open('/config.json') as f:
        c = json.loads(f.read())['settings']['max_codes']
    r['max_codes'] = c if type(c) is int else None
except Exception:   # no config.json, not JSON, no such setting
    pass
c = None
print(json.dumps(r))
"""

# The active slot's manifest.json hash: equal to the build's, the board may hold this very build.
_ACTIVE = """\
r = None
try:
    with open(%(ptr)r) as f:
        s = f.read().strip()
    if s in %(slots)r and _pbx('/' + s + '/manifest.json'):
        r = [s, _pbh('/' + s + '/manifest.json')]
except (OSError, ValueError):
    pass
print(json.dumps(r))
"""

_COPY = """\
def _pbcp(a, b):
    buf = bytearray(512)
    with open(a, 'rb') as f:
        with open(b, 'wb') as g:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                g.write(memoryview(buf)[:n])
def _pbmk(p):
    try:
        os.mkdir(p)
    except OSError:
        pass
"""


def scan(conn: BoardConn) -> dict:
    return conn.json(_SCAN % {"ptr": POINTER, "slots": SLOTS, "boot": _build.BOOT_FILES, "once": SAFE_ONCE})


def board_memory(conn: BoardConn) -> dict:
    """{'heap': bytes, 'psram': bool, 'fw': [version, file] or None, 'frozen': bool,
    'max_codes': config.json's setting or None}. A heap too full to run the second script
    leaves the rest unknown (no PSRAM, the default max_codes)."""
    heap = conn.json(_HEAP)
    try:
        m = conn.json(_MEMORY)
    except BoardConnectionError as e:
        if "MemoryError" not in str(e):
            raise
        m = {"psram": False, "fw": None, "max_codes": None}
    m["heap"] = heap
    m["frozen"] = bool(m.get("fw") and ".frozen" in str(m["fw"][1]))
    return m


def fit(manifest: dict, mem: dict, mode: str = "mpy") -> dict:
    """The board's heap against the need of the firmware of `manifest` in `mode` with the
    board's max_codes: {heap, need, margin, mode, codes, codes_from, psram, table, most}.
    A manifest from before the need was recorded is judged by host_tools/tech/heap_need.json."""
    table = manifest.get("heap_need")
    table = heapneed.check(table, "the build's manifest.json") if table is not None else heapneed.load()
    default = manifest.get("max_codes_default")
    most = manifest.get("max_codes_most")
    if type(default) is not int or type(most) is not int:
        default, most = heapneed.firmware_settings()
    codes = mem.get("max_codes")
    own = type(codes) is int and 1 <= codes <= most
    codes = codes if own else default
    need = heapneed.need(mode, codes, table)
    return {"heap": mem["heap"], "need": need, "margin": mem["heap"] - need, "mode": mode,
            "codes": codes, "psram": bool(mem.get("psram")), "table": table, "most": most,
            "codes_from": "settings.max_codes in config.json" if own else "the firmware's default max_codes"}


def refusal(f: dict, mem: dict, firmware: str) -> str | None:
    """Why the build must not go to this board (its heap is too small), with what would fit;
    None when it fits."""
    if f["margin"] >= 0:
        return None
    t = f["table"]
    text = ("parcelbox %s does not fit this board: %s with %d codes (%s) it needs %s of heap, the board "
            "has %s (%s). Nothing on the board was changed. What fits:\n"
            % (firmware, heapneed.HOW[f["mode"]], f["codes"], f["codes_from"], heapneed.kb(f["need"]),
               heapneed.kb(f["heap"]), "with PSRAM" if f["psram"] else "no PSRAM"))
    fits = heapneed.what_fits(f["mode"], f["heap"], f["psram"], f["codes"], t, f["most"])
    text += "".join("  - %s\n" % x for x in fits) or "  - nothing this board has room for\n"
    if mem.get("frozen"):
        text += ("This board runs parcelbox %s frozen into its image: update it by flashing a new image "
                 "(docs/tooling.md section 2), not with deploy.\n" % mem["fw"][0])
    return text + "(figures: %s, measured %s)" % (heapneed.PATH.name, t["measured"])


def slot_manifests(conn: BoardConn, state: dict) -> dict:
    """The manifest.json of every slot that has one (None where it does not parse)."""
    out = {}
    for s in SLOTS:
        if state.get(s) and "manifest.json" in state[s]:
            # read as bytes: a text read of bytes that are not UTF-8 raises on the board
            raw = conn.json("print(json.dumps(binascii.b2a_base64(open('/%s/manifest.json', 'rb').read())"
                            ".decode()))" % s)
            try:
                m = json.loads(binascii.a2b_base64(raw).decode("utf-8"))
            except ValueError:
                m = None
            out[s] = m if _well_formed(m) else None
    return out


def _well_formed(m) -> bool:
    """A manifest as build() writes it, as far as deploy and doctor read it."""
    return (isinstance(m, dict) and isinstance(m.get("files"), list) and "firmware" in m and "target" in m
            and all(isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                    for f in m["files"]))


def intact(state: dict, slot: str, manifest: dict | None) -> bool:
    """Every app file of the slot's manifest there with its hash (what boot.py checks by size)."""
    if not manifest or not isinstance(manifest.get("files"), list):
        return False
    have = state.get(slot) or {}
    return all(have.get(f["path"][4:]) == f["sha256"] for f in manifest["files"] if f["path"].startswith("app/"))


def active_slot(state: dict, manifests: dict) -> str | None:
    """The slot that runs: the pointer's if intact, else the first intact one."""
    for s in (state.get("ptr"),) + SLOTS:
        if s in SLOTS and intact(state, s, manifests.get(s)):
            return s
    return None


def wrong_board(target: str, virtual: bool) -> str | None:
    """Why a build for `target` must not go to this board (the virtual board has a `host`
    module, an ESP32 none), or None."""
    if target == "sim" and not virtual:
        return ("this build is for the virtual board (target sim), the board is an ESP32: "
                "parcelbox build --target esp32, then deploy build/esp32")
    if target != "sim" and virtual:
        return ("this is a build for %s, the board is the virtual board: parcelbox build "
                "--target sim, then deploy --build build/sim" % target)
    return None


def default_build(virtual: bool) -> Path:
    """The folder `parcelbox build` writes for this kind of board, from wherever it is run."""
    return _build.default_out("sim" if virtual else "esp32")


def already_there(conn: BoardConn, b: _build.Build) -> str | None:
    """The slot that runs this very build (its manifest, every file's hash and the boot files
    as built), or None. Cheap when it is not: one hash of one manifest."""
    got = conn.json(_ACTIVE % {"ptr": POINTER, "slots": SLOTS})
    if not got or got[1] != _build.sha256_file(b.out / _build.MANIFEST):
        return None
    state = scan(conn)
    manifests = slot_manifests(conn, state)
    if active_slot(state, manifests) != got[0]:
        return None
    for name in _build.BOOT_FILES:
        f = next(x for x in b.files if x["path"] == name)
        if state["root"].get(name) != f["sha256"]:
            return None
    return got[0]


def stop_app(conn: BoardConn, say) -> BoardConn:
    """Stop a running application for good: a board with an armed watchdog would reset in
    the middle of the deploy, so it is reset once into safe mode (main.py removes the flag)."""
    if not conn.app_running():
        return conn
    say("the application was running: resetting once into safe mode (no watchdog)")
    conn.write_file("/" + SAFE_ONCE, b"deploy\n")
    conn.reset("safe mode", timeout=20)
    conn.reconnect(wait=20)
    # a main.py older than safe_once would have left it for the next boot
    conn.exec("if _pbx(%r):\n    os.remove(%r)" % ("/" + SAFE_ONCE, "/" + SAFE_ONCE))
    return conn


def is_virtual(conn: BoardConn) -> bool:
    """The virtual board has a `host` module, an ESP32 none."""
    return conn.json("try:\n    import host\n    print('true')\nexcept ImportError:\n    print('false')")


def deploy(port: str, build_dir: Path | str | None, console: Console | None = None, reset: bool = True,
           boot_timeout: float = 30.0, keep_port: bool = False) -> Report:
    """`build_dir` None: the build for this kind of board where `parcelbox build` puts it."""
    console = console or Console(highlight=False)
    b = _build.load(build_dir) if build_dir is not None else None
    rep = Report()
    conn = BoardConn(port)
    running = False
    try:
        running = conn.app_running()
        virtual = is_virtual(conn)
        if b is None:
            b = _build.load(default_build(virtual))
        rep.build = b
        why = wrong_board(b.manifest.get("target"), virtual)
        if why:
            raise BoardConnectionError(why)
        slot = already_there(conn, b)
        if slot is not None:
            rep.identical, rep.slot = True, slot
            if running:   # stopped by the raw REPL's Ctrl-C: back into service
                kept: list = []
                rep.booted = _booted(conn.reset(BOOT_LINE, timeout=boot_timeout, keep=kept if keep_port else None))
                rep.serial = kept[0] if kept else None
                rep.restarted = True
            return rep
        # before anything is written (safe_once included): a build that does not fit is refused
        mem = board_memory(conn)
        try:
            rep.fit = fit(b.manifest, mem)
        except heapneed.HeapNeedError as e:
            raise BoardConnectionError("%s; build again" % e) from None
        why = refusal(rep.fit, mem, b.manifest["firmware"])
        if why:
            raise BoardConnectionError(why)
        app_files = [f for f in b.files if f["path"].startswith(_build.APP + "/")]
        conn = stop_app(conn, console.print)
        state = scan(conn)
        manifests = slot_manifests(conn, state)
        active = active_slot(state, manifests)
        rep.previous = active
        # no slot intact: still never stage into the one boot.py takes (every listed file there)
        booting = active or next((s for s in (state.get("ptr"),) + SLOTS if s in SLOTS and manifests.get(s)
                                  and all(f["path"][4:] in (state.get(s) or {}) for f in manifests[s]["files"]
                                          if f["path"].startswith("app/"))), None)
        target = SLOTS[1] if booting == SLOTS[0] else SLOTS[0]
        rep.slot = target
        have_t = state.get(target) or {}
        have_a = (state.get(active) or {}) if active else {}
        conn.exec(_COPY)
        # from here on the target slot is incomplete until its manifest.json is written again
        if "manifest.json" in have_t:
            conn.exec("os.remove(%r)" % ("/%s/manifest.json" % target))
        want = {f["path"][len(_build.APP) + 1:]: f for f in app_files}
        for rel in sorted(set(have_t) - set(want) - {"manifest.json"}):
            conn.exec("os.remove(%r)" % ("/%s/%s" % (target, rel)))
            rep.removed.append(rel)
        dirs = sorted({posixpath.dirname(r) for r in want} - {""})
        conn.exec("_pbmk(%r)\n" % ("/" + target) + "".join(
            "_pbmk(%r)\n" % ("/%s/%s" % (target, d)) for d in dirs))
        to_send = []
        for rel, f in sorted(want.items()):
            dest = "/%s/%s" % (target, rel)
            if have_t.get(rel) == f["sha256"]:
                rep.unchanged.append(rel)
            elif have_a.get(rel) == f["sha256"]:
                conn.exec("_pbcp(%r, %r)" % ("/%s/%s" % (active, rel), dest))
                rep.copied.append(rel)
            else:
                to_send.append((rel, f))
        total = sum(f["size"] for _, f in to_send)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TimeRemainingColumn(), console=console, transient=False) as bar:
            task = bar.add_task("sending %d files to %s" % (len(to_send), target), total=total or 1)
            done = 0
            for rel, f in to_send:
                data = (b.out / _build.APP / rel).read_bytes()
                bar.update(task, description=rel)
                conn.write_file("/%s/%s" % (target, rel), data,
                                progress=lambda n, _t, d=done: bar.update(task, completed=d + n))
                done += len(data)
                rep.sent.append((rel, len(data)))
            bar.update(task, completed=total or 1, description="sent %d files" % len(to_send))
        # verification: every hash read back from the board
        got = conn.json("o = {}\n_pbwalk(%r, '', o)\nprint(json.dumps(o))" % ("/" + target))
        bad = [rel for rel, f in want.items() if got.get(rel) != f["sha256"]]
        extra = sorted(set(got) - set(want))
        if bad or extra:
            raise BoardConnectionError("verification failed in %s: %s differ from the build; the board still "
                             "boots %s" % (target, ", ".join(sorted(bad) + extra), active or "nothing new"))
        conn.write_atomic("/%s/manifest.json" % target, (b.out / _build.MANIFEST).read_bytes())
        for name in _build.BOOT_FILES:
            f = next(x for x in b.files if x["path"] == name)
            if state["root"].get(name) != f["sha256"]:
                conn.write_atomic("/" + name, (b.out / name).read_bytes())
                if conn.hash("/" + name) != f["sha256"]:
                    raise BoardConnectionError("verification of /%s failed" % name)
                rep.boot_files.append(name)
        conn.write_atomic("/" + POINTER, (target + "\n").encode())      # the switch
        if conn.json("print(json.dumps(open(%r).read().strip()))" % ("/" + POINTER)) != target:
            raise BoardConnectionError("the pointer did not switch to %s" % target)
        if reset:
            kept: list = []
            rep.booted = _booted(conn.reset(BOOT_LINE, timeout=boot_timeout, keep=kept if keep_port else None))
            rep.serial = kept[0] if kept else None
    except (BoardConnectionError, _build.BuildError):
        if running and conn.t is not None:   # stopped into safe mode: back into service
            conn.reset()
        raise
    finally:
        conn.close()
    return rep


def _booted(lines: list[str]) -> str | None:
    """'0.1.0 from /app_a' of main.py's boot line, or None."""
    booted = [ln for ln in lines if BOOT_LINE in ln and ln.startswith("PB ")]
    return booted[-1].split(BOOT_LINE, 1)[1] if booted else None


def print_report(rep: Report, manifest: dict, console: Console) -> None:
    if rep.identical:
        console.print("already deployed: the board runs parcelbox %s (%s) from slot %s, every file's "
                      "sha256 as built; nothing written%s" % (manifest["firmware"], manifest["target"], rep.slot,
                                                              " (the application was reset back into service)"
                                                              if rep.restarted else ""))
        return
    console.print("deployed parcelbox %s (%s) to slot %s%s" % (
        manifest["firmware"], manifest["target"], rep.slot,
        " (previous: %s, kept as the fallback)" % rep.previous if rep.previous else ""))
    console.print("  sent over the wire: %d files, %d bytes%s" % (
        len(rep.sent), rep.bytes_sent, (": " + ", ".join(p for p, _ in rep.sent)) if 0 < len(rep.sent) <= 8 else ""))
    console.print("  copied on the board from %s: %d files; already in place: %d; removed: %d"
                  % (rep.previous or "-", len(rep.copied), len(rep.unchanged), len(rep.removed)))
    if rep.boot_files:
        console.print("  boot files updated: %s" % ", ".join(rep.boot_files))
    console.print("  verified: every file's sha256 read back from the board")
    f = rep.fit
    if f is not None:
        console.print("  heap: the board has %s, the firmware %s with %d codes needs %s: %s to spare"
                      % (heapneed.kb(f["heap"]), heapneed.HOW[f["mode"]], f["codes"], heapneed.kb(f["need"]),
                         heapneed.kb(f["margin"])))


def as_json(rep: Report) -> dict:
    """The report for --json: what a script needs to know, in the words of the text report."""
    m = rep.build.manifest if rep.build else {}
    f = rep.fit
    return {"firmware": m.get("firmware"), "target": m.get("target"), "build": str(rep.build.out) if rep.build else None,
            "identical": rep.identical, "slot": rep.slot, "previous": rep.previous,
            "sent": [{"path": p, "bytes": n} for p, n in rep.sent], "bytes_sent": rep.bytes_sent,
            "copied": rep.copied, "unchanged": rep.unchanged, "removed": rep.removed,
            "boot_files": rep.boot_files, "booted": rep.booted,
            "heap": None if f is None else {k: f[k] for k in ("heap", "need", "margin", "mode", "codes")}}


def run_cli(port: str, build_dir: str | None, no_reset: bool, as_json_out: bool = False,
            keep: list | None = None) -> int:
    """The command: errors are raised (BuildError, BoardConnectionError) for the CLI's one error
    path. `keep` (a list): the port stays open after the boot line, appended to it (for run's monitor)."""
    import json
    console = Console(highlight=False, soft_wrap=True, stderr=as_json_out)   # --json: stdout is the JSON
    rep = deploy(port, build_dir, console, reset=not no_reset, keep_port=keep is not None)
    if keep is not None and rep.serial is not None:
        keep.append(rep.serial)
    if as_json_out:
        print(json.dumps(as_json(rep)))
    else:
        print_report(rep, rep.build.manifest, console)
    if rep.identical:
        return 0
    if no_reset:
        if not as_json_out:
            console.print("  not reset (--no-reset): the new slot runs from the next reset")
        return 0
    if rep.booted:
        if not as_json_out:
            console.print("  reset: the board booted firmware %s" % rep.booted)
        return 0
    raise BoardConnectionError("reset, but the board did not say which firmware it booted "
                               "(parcelbox monitor shows what it prints)")
