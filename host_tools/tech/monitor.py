"""`parcelbox monitor`: the board's serial console, its log lines decoded (docs/tooling.md section 5).

The firmware logs `PB <D|I|W|E> <ticks ms> <text>` (docs/runtime.md section 7) and its
events as `event <seq> <name> comp <n> id <code id> arg <n>`. The monitor colours the level,
names the event and says its fields in words (host_tools/devlog.py, the one decoding), passes
every other line through, and when the port vanishes (a USB replug) waits for it and reads on.
It only reads: type at the board with `mpremote repl`.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import serial
from rich.console import Console
from rich.text import Text

from host_tools import devlog
from host_tools.backend import protocol

LINE = re.compile(r"^PB ([DIWE]) (-?\d+) (.*)$")
EVENT = re.compile(r"^event (\d+) (\S+) comp (\d+) id (\d+) arg (-?\d+)$")
LEVELS = {"D": ("debug", "dim"), "I": ("info", "green"), "W": ("warn", "yellow"),
          "E": ("error", "bold red")}
ORDER = "DIWE"   # --level shows a log line at this level or above (other lines always)
RETRY_S = 0.5


def _event_names() -> tuple[tuple[str, ...], int]:
    """parcelbox.events' NAMES and SECURITY, read from the firmware (its numbers are stable)."""
    from parcelbox import events
    return events.NAMES, events.SECURITY


NAMES, SECURITY = _event_names()


@dataclass
class Decoded:
    level: str | None      # D I W E, None for a line that is not the firmware's log
    ms: int | None
    text: str
    event: dict | None = None


def decode(line: str) -> Decoded:
    m = LINE.match(line)
    if not m:
        return Decoded(None, None, line)
    level, ms, text = m.group(1), int(m.group(2)), m.group(3)
    e = EVENT.match(text)
    if not e:
        return Decoded(level, ms, text)
    seq, name, comp, code_id, arg = e.groups()
    kind = int(name) if name.isdecimal() else (NAMES.index(name) if name in NAMES else None)
    if kind is not None and 0 < kind < len(NAMES):
        name = NAMES[kind]
    ev = {"seq": int(seq), "type": kind, "name": name, "comp": int(comp), "id": int(code_id),
          "arg": int(arg), "security": kind is not None and (SECURITY >> kind) & 1 == 1}
    ev["detail"] = protocol.describe(name, ev["comp"], ev["id"], ev["arg"])
    return Decoded(level, ms, text, ev)


def render(d: Decoded) -> Text:
    if d.level is None:
        return Text(d.text)
    label, style = LEVELS[d.level]
    t = Text()
    t.append("%10.3f " % (d.ms / 1000.0), style="dim")
    t.append("%-5s " % label, style=style)
    if d.event is None:
        t.append(devlog.words(d.text), style=style if d.level in "WE" else "")
        return t
    e = d.event
    t.append("event #%d " % e["seq"])
    t.append(e["name"], style="bold magenta" if e["security"] else "bold cyan")
    if e["detail"]:
        t.append(": " + e["detail"], style=style)
    return t


class Monitor:
    """Read `port` line by line until stop() or Ctrl-C; reopen it whenever it vanishes."""

    def __init__(self, port: str, baud: int = 115200, save: TextIO | None = None, raw: bool = False,
                 console: Console | None = None, open_port: Callable[..., object] | None = None,
                 level: str = "debug"):
        self.port, self.baud, self.save, self.raw = port, baud, save, raw
        self.min_level = ORDER.index(level[0].upper())
        self.console = console or Console(highlight=False)
        # exclusive, as mpremote opens it: a deploy started meanwhile fails to open the port
        # instead of sharing it (two readers of a tty steal each other's bytes)
        self._open = open_port or (lambda: serial.serial_for_url(port, baudrate=baud, timeout=0.1,
                                                                 exclusive=True))
        self._stop = False
        self.lines = 0
        self.hidden = 0      # below --level: not shown (but saved)
        self.pending = b""   # read from the port before the monitor got it (run_cli's opened)
        self.reconnects = 0

    def stop(self) -> None:
        self._stop = True

    def _note(self, text: str) -> None:
        self.console.print(Text("-- %s" % text, style="bold blue"))
        if self.save:
            self.save.write("# parcelbox monitor: %s\n" % text)
            self.save.flush()

    def _connect(self):
        said = False
        while not self._stop:
            try:
                return self._open()
            except (serial.SerialException, OSError, ValueError) as e:
                if not said:
                    self._note(waiting(self.port, e))
                    said = True
            time.sleep(RETRY_S)
        return None

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.lines += 1
        if self.save:
            self.save.write(line + "\n")
            self.save.flush()
        d = decode(line)
        if d.level is not None and ORDER.index(d.level) < self.min_level:
            self.hidden += 1
            return
        self.console.print(Text(line) if self.raw else render(d))

    def run(self) -> int:
        first = True
        while not self._stop:
            ser = self._connect()
            if ser is None:
                break
            self._note(("connected to %s" if first else "%s is back: reading on") % self.port)
            if not first:
                self.reconnects += 1
            first = False
            buf, self.pending = self.pending, b""
            *lines, buf = buf.split(b"\n")
            for ln in lines:
                self._line(ln)
            try:
                while not self._stop:
                    chunk = ser.read(max(1, ser.in_waiting))
                    if not chunk:
                        continue
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for ln in lines:
                        self._line(ln)
            except (serial.SerialException, OSError) as e:
                if buf:
                    self._line(buf)
                self._note("%s vanished (%s): waiting for it to come back" % (self.port, _why(e)))
            finally:
                try:
                    ser.close()
                except (serial.SerialException, OSError):
                    pass
        return 0


def waiting(port: str, e: BaseException) -> str:
    """Why the port cannot be opened, in words: held by another program (mpremote and the
    tools lock it), or missing (then the ports that exist), and that the monitor waits."""
    why = _why(e)
    if "exclusively lock" in why or getattr(e, "errno", None) == 11:
        return ("%s is in use by another program (mpremote, a deploy): waiting until it lets go; "
                "Ctrl-C to quit" % port)
    text = "waiting for %s (%s)" % (port, why)
    if "://" not in port:
        from host_tools.tech import ports
        try:
            found = ports.existing()
        except (OSError, ImportError):
            found = []
        text += "; serial ports here: %s" % (", ".join(found) if found else "none")
    return text + "; Ctrl-C to quit"


def _why(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    return msg[:120]


def run_cli(port: str, baud: int, save: str | None, raw: bool, level: str = "debug", opened=None) -> int:
    """`opened`: (a serial port already open on `port`, bytes already read from it), read first:
    a deploy hands over the port right after the boot line, so no line of the boot is lost."""
    import signal
    # Ctrl-C ends the monitor even when it was started with SIGINT ignored (a background job
    # of a non-interactive shell), where Python would not install its handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        f = open(save, "a", encoding="utf-8") if save else None
    except OSError as e:
        print("Error: cannot open %s: %s" % (save, e.strerror or e), file=sys.stderr)
        return 1
    mon = Monitor(port, baud, f, raw, level=level)
    if opened is not None:
        first = [opened[0]]
        normal = mon._open
        mon._open = lambda: first.pop() if first else normal()
        mon.pending = opened[1]
    try:
        mon.run()
    except KeyboardInterrupt:
        pass
    finally:
        mon.console.print(Text("-- monitor ended: %d lines%s%s" % (
            mon.lines, " (%d below %s not shown)" % (mon.hidden, level) if mon.hidden else "",
            ", saved to %s" % save if save else ""), style="bold blue"))
        if f:
            f.close()
    return 0
