"""The virtual board's world from the command line: `parcelbox vboard` reads these lines on
its standard input while it serves mpremote, and acts on the running firmware's keypad,
doors and tamper switch, as a person at the box would (docs/vboard.md)."""

from __future__ import annotations

import re

from host_tools.sim.simbox import SimError

HELP = ("482915#  (or: press 4 8 2 9 1 5 #)  type keys on the keypad\n"
        "door N open | door N close             a compartment's door\n"
        "tamper open | tamper close             the enclosure's lid\n"
        "status                                 LED, buzzer, doors, network\n"
        "help")
_KEYS = re.compile(r"^[0-9*#A-D ]+$")


def handle(vb, line: str) -> str:
    """The answer to one line (an `error: ...` line for a mistake; nothing changes then)."""
    w = line.split()
    if not w:
        return ""
    if w[0] == "help":
        return HELP
    box = vb.sim if vb.sim is not None and vb._sim_called.is_set() else None
    if box is None:
        return "error: no firmware is running on the board yet (deploy, provision, reset)"
    if w[0] == "press":
        w = w[1:]
    if w and _KEYS.match(" ".join(w)) and w[0] not in ("door", "tamper"):
        keys = "".join(w)
        box.type(keys)
        return "typed %d key%s; LED %s" % (len(keys), "s" * (len(keys) != 1), box.led)
    n = len(box.circuit.doors)
    if len(w) == 3 and w[0] == "door" and w[2] in ("open", "close"):
        if not (w[1].isascii() and w[1].isdigit() and 1 <= int(w[1]) <= n):
            return "error: %s: the box has compartment%s 1%s" % (
                line.strip(), "s" if n > 1 else "", " to %d" % n if n > 1 else " only")
        box.set_door(int(w[1]), w[2] == "open")
        return "door %s %s" % (w[1], "open" if w[2] == "open" else "closed")
    if len(w) == 2 and w[0] == "tamper" and w[1] in ("open", "close"):
        try:
            box.set_tamper(w[1] == "open")
        except SimError as e:
            return "error: %s" % e
        return "tamper %s" % ("open" if w[1] == "open" else "closed")
    if w == ["status"]:
        doors = " ".join("%d:%s%s" % (c, "shut" if box.circuit.doors[c - 1].state else "open",
                                      ",UNLOCKED" if box.energised(c) else "")
                         for c in range(1, n + 1))
        return "LED %s, buzzer %s, %s | %s" % (box.led, "%d Hz" % box.hz if box.hz else "off",
                                               "online" if box.online else "offline", doors)
    return "error: %s: not a command here (help)" % line.strip()
