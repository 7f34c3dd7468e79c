# Which serial port a technician's command talks to: the one named (--port or PARCELBOX_PORT), else
# the single attached dev board, found with pyserial's list_ports by its USB-serial chip.
from __future__ import annotations

ENV = "PARCELBOX_PORT"
# USB vendor ids of the bridges on ESP32 dev boards: Silicon Labs CP210x, WCH CH340/CH9102,
# Espressif's own USB (ESP32-S3/C3 native USB-Serial/JTAG)
BOARD_VIDS = {0x10C4: "CP210x", 0x1A86: "CH340", 0x303A: "Espressif USB"}


class PortError(Exception):
    """No port named and none, or several, dev boards attached."""


def _comports():
    from serial.tools import list_ports
    return list_ports.comports()


def describe(p) -> str:
    chip = BOARD_VIDS.get(p.vid)
    what = p.description if p.description and p.description != "n/a" else ""
    extra = ", ".join(x for x in (chip, what) if x)
    return "%s (%s)" % (p.device, extra) if extra else p.device


def boards(comports=None) -> list:
    """The attached ports whose USB vendor is a dev board's bridge."""
    return [p for p in (comports if comports is not None else _comports()) if p.vid in BOARD_VIDS]


def existing(comports=None) -> list[str]:
    """Every serial port this machine has, described, for a message."""
    return [describe(p) for p in sorted(comports if comports is not None else _comports(),
                                        key=lambda p: p.device)]


def resolve(port: str | None, comports=None) -> str:
    """`port` if given; else the one attached dev board; else PortError saying what there is."""
    if port:
        return port
    found = boards(comports)
    if len(found) == 1:
        return found[0].device
    if not found:
        others = existing(comports)
        raise PortError("no --port given (nor %s) and no ESP32 dev board attached (a CP210x, CH340 or "
                        "Espressif USB serial port)%s" % (ENV, "; serial ports here: " + ", ".join(others)
                                                         if others else ""))
    raise PortError("several dev boards attached: %s; choose one with --port or %s"
                    % (", ".join(describe(p) for p in sorted(found, key=lambda p: p.device)), ENV))
