"""The firmware's log lines in words, for the monitor, the simulator and the demo: an event as
its name and decoded fields (host_tools.backend.protocol.describe), an OS error as its name.

The box logs `event <seq> <name> comp <n> id <n> arg <n>` and its link's errors as
`link: io: <OSError>`. MicroPython with an errno module writes `[Errno 113] ECONNABORTED`
(named by the board's own numbering: newlib's on an ESP32); a build without one, the VM of
the simulator and the virtual board, writes the bare number, which there is this host's
errno (the sim port raises the host's). So a name is read as a name and a bare number as
this host's errno; the number stays in the line.
"""

from __future__ import annotations

import errno
import os
import re

from host_tools.backend import protocol

_ERROR = re.compile(r"^(link: (?:io|open|tls): )(?:\[Errno (\d+)\] ([A-Z][A-Z0-9]*)|(\d+))$")


def event_line(seq: int, name: str, comp: int, code_id: int, arg: int) -> str:
    """`event #7 wrong_code: unknown code, 1 failure in a row`."""
    words = protocol.describe(name, comp, code_id, arg)
    return "event #%d %s%s" % (seq, name, ": " + words if words else "")


def error_words(number: int, name: str | None = None) -> str:
    """`connection refused (errno 111)` from a bare number, `... (ECONNABORTED, errno 113)`
    from a named one; the number alone when this host does not know it."""
    n = getattr(errno, name, None) if name else number
    said = "%s, errno %d" % (name, number) if name else "errno %d" % number
    if not isinstance(n, int) or n not in errno.errorcode:
        return said
    text = os.strerror(n)
    return "%s (%s)" % (text[:1].lower() + text[1:], said)


def words(text: str) -> str:
    """A log line's text with its numbers said in words; other text as it came."""
    m = _ERROR.match(text)
    if m:
        return m[1] + error_words(int(m[2] or m[4]), m[3])
    return text
