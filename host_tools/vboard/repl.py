"""The virtual board's REPL: MicroPython's pyexec (friendly REPL, raw REPL, raw-paste) on
the host side of the UART (docs/vboard.md section 2).

One `Session` is one soft-reboot session of a board: boot.py, then main.py (friendly mode
only), then the REPL. It is a generator of commands for the VM's agent
(host_tools/vboard/vbagent.py): it reads the UART's input bytes with `getc()`, writes what the
board prints with `out()`, writes a command's source with `put_cmd()` and yields what to
run, `(kind, name)`; the agent's answer comes back through `send((status, err))`.
`SoftReboot` leaves the session (Ctrl-D, `sys.exit()`, `machine.soft_reset()`).
"""

from __future__ import annotations

import re
import struct
from typing import Callable, Generator

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
EXEC_FILE, EXEC_LINE, RUN_FILE = 0, 1, 2          # what the agent runs (vbagent.py)
ST_OK, ST_ERROR, ST_EXIT = 0, 1, 2                # how it went
FRIENDLY, RAW = "friendly", "raw"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
PASTE_BANNER = b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== "
RAW_PASTE_WINDOW = 256        # MICROPY_REPL_STDIN_BUFFER_MAX, as on the ESP32
KBD_TRACEBACK = b"Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n"
_COMPOUND = re.compile(r"\s*(if|while|for|try|with|def|class|async|@|elif|else|except|finally)\b|\s*@")

Command = tuple[int, str]
Result = tuple[int, bytes]


class SoftReboot(Exception):
    """The session ends: the board soft-reboots (a new VM, boot.py, ...)."""


def _needs_more(text: str) -> bool:
    """MicroPython's mp_repl_continue_with_input, in short: open brackets or strings, a
    trailing backslash, or a compound statement not yet ended by an empty line."""
    depth, quote, i = 0, None, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = None
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote) - 1
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "\n" and quote and len(quote) == 1:
            quote = None
        i += 1
    if depth > 0 or (quote and len(quote) == 3) or text.endswith("\\"):
        return True
    lines = text.split("\n")
    if _COMPOUND.match(lines[0]):
        return lines[-1].strip() != "" or len(lines) == 1
    return False


class Session:
    """pyexec for one soft-reboot session. mode: FRIENDLY or RAW (kept by the caller across
    soft reboots, as pyexec_mode_kind); boot: run boot.py/main.py first."""

    def __init__(self, getc: Callable[[], int], out: Callable[[bytes], None],
                 put_cmd: Callable[[bytes], None], exists: Callable[[str], bool],
                 banner: bytes, mode: str = FRIENDLY, raw_paste: bool = True,
                 boot: bool = True, interrupted: str | None = None):
        self.getc, self.out, self.put_cmd, self.exists = getc, out, put_cmd, exists
        self.banner, self.mode, self.raw_paste = banner, mode, raw_paste
        self.boot, self.interrupted = boot, interrupted

    def run(self) -> Generator[Command, Result, None]:
        if self.interrupted is not None:      # the VM was stopped by a Ctrl-C (see vboard.py)
            if self.interrupted == RAW:
                self.out(b"\x04" + KBD_TRACEBACK + b"\x04")
            else:
                self.out(KBD_TRACEBACK)
        elif self.boot:
            for name in ("boot.py", "main.py"):
                if name == "main.py" and self.mode != FRIENDLY:
                    break
                if self.exists(name):
                    st, err = yield (RUN_FILE, name)
                    self.out(err)
                    if st == ST_EXIT:
                        raise SoftReboot()
        while True:
            if self.mode == RAW:
                yield from self._raw()
            else:
                yield from self._friendly()

    # ---- the raw REPL (pyexec_raw_repl) ---------------------------------------------

    def _raw(self):
        self.out(RAW_BANNER)
        line = bytearray()
        self.out(b">")
        while True:
            c = self.getc()
            if c == CTRL_A:
                if self.raw_paste and len(line) == 2 and line[0] == CTRL_E:
                    line.clear()
                    yield from self._raw_paste_or_refuse(line)
                    self.out(b">")
                    continue
                self.out(RAW_BANNER + b">")
                line.clear()
            elif c == CTRL_B:
                self.out(b"\r\n")
                self.mode = FRIENDLY
                return
            elif c == CTRL_C:
                line.clear()
            elif c == CTRL_D:
                self.out(b"OK")
                if not line:
                    self.out(b"\r\n")
                    raise SoftReboot()
                self.put_cmd(bytes(line))
                line.clear()
                st, err = yield (EXEC_FILE, "<stdin>")
                self.out(b"\x04" + err + b"\x04")
                if st == ST_EXIT:
                    raise SoftReboot()
                self.out(b">")
            else:
                line.append(c)

    def _raw_paste_or_refuse(self, line: bytearray):
        # the host sent Ctrl-E, 'A', Ctrl-A; `line` held them and is now empty
        self.out(b"R\x01" + struct.pack("<H", RAW_PASTE_WINDOW))
        data = bytearray()
        remain = RAW_PASTE_WINDOW
        while True:
            c = self.getc()
            if c in (CTRL_C, CTRL_D):
                self.out(b"\x04")     # end of data, acknowledged
                if c == CTRL_C:
                    self.out(KBD_TRACEBACK + b"\x04")
                    return
                break
            data.append(c)
            remain -= 1
            if remain == 0:
                self.out(b"\x01")     # room for another window
                remain = RAW_PASTE_WINDOW
        self.put_cmd(bytes(data))
        st, err = yield (EXEC_FILE, "<stdin>")
        self.out(b"\x04" + err + b"\x04")
        if st == ST_EXIT:
            raise SoftReboot()

    # ---- the friendly REPL (pyexec_friendly_repl) --------------------------------------

    def _friendly(self):
        self.out(self.banner)
        while True:
            r = self._readline(b">>> ", "")
            if r == CTRL_A:
                self.out(b"\r\n")
                self.mode = RAW
                return
            if r == CTRL_B:
                self.out(b"\r\n" + self.banner)
                continue
            if r == CTRL_C:
                self.out(b"\r\n")
                continue
            if r == CTRL_D:
                self.out(b"\r\n")
                raise SoftReboot()
            if r == CTRL_E:
                text = self._paste()
                if text is None:
                    continue
                self.put_cmd(text.encode())
                st, err = yield (EXEC_FILE, "<stdin>")
            else:
                text = r
                if not text.strip():
                    continue
                while _needs_more(text):
                    last = text.split("\n")[-1]
                    indent = re.match(r"\s*", last).group(0)
                    if last.rstrip().endswith(":"):
                        indent += "    "
                    more = self._readline(b"... ", indent if last.strip() else "")
                    if more == CTRL_C:
                        self.out(b"\r\n")
                        text = None
                        break
                    if isinstance(more, int):
                        continue
                    text += "\n" + (more if more.strip() else "")
                if text is None:
                    continue
                self.put_cmd(text.encode())
                st, err = yield (EXEC_LINE, "<stdin>")
            self.out(err)
            if st == ST_EXIT:
                raise SoftReboot()

    # One line with echo and backspace; a control character returns alone (as readline.c:
    # Ctrl-A, -B, -D and -E only on an empty line, Ctrl-C always). Escape sequences (arrow
    # keys) are swallowed: no history, no cursor movement.
    def _readline(self, prompt: bytes, indent: str):
        self.out(prompt + indent.encode())
        buf = bytearray(indent.encode())
        esc = 0
        while True:
            c = self.getc()
            if esc:
                esc = 0 if (esc == 2 and (0x40 <= c <= 0x7E)) or (esc == 1 and c != ord("[")) else 2
                continue
            if c == 0x1B:
                esc = 1
            elif c == CTRL_C:
                return CTRL_C
            elif c in (CTRL_A, CTRL_B, CTRL_D, CTRL_E):
                if len(buf) == len(indent):
                    return c
            elif c == ord("\r"):
                self.out(b"\r\n")
                return buf.decode("utf-8", "replace")
            elif c in (0x08, 0x7F):
                if buf:
                    buf.pop()
                    self.out(b"\x08 \x08")
            elif c >= 0x20 or c == 0x09:
                buf.append(c)
                self.out(bytes([c]))

    def _paste(self) -> str | None:
        self.out(PASTE_BANNER)
        buf = bytearray()
        while True:
            c = self.getc()
            if c == CTRL_C:
                self.out(b"\r\n")
                return None
            if c == CTRL_D:
                self.out(b"\r\n")
                return buf.decode("utf-8", "replace")
            if c == ord("\r"):
                buf.append(ord("\n"))
                self.out(b"\r\n=== ")
            elif c != ord("\n"):
                buf.append(c)
                self.out(bytes([c]))
