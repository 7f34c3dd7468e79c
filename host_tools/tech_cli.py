"""The technician's commands (docs/tooling.md): build, deploy, provision, monitor, doctor."""

from __future__ import annotations

import sys

import click


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--target", type=click.Choice(["esp32", "sim"]), default="esp32", show_default=True,
                  help="esp32: .mpy for -march=xtensawin; sim: for the MicroPython VM (virtual board).")
    @click.option("--out", type=click.Path(file_okay=False), help="Build folder (default build/TARGET).")
    def build(target: str, out: str | None) -> None:
        """Compile the firmware with mpy-cross into a build folder with manifest.json and
        manifest.py (for freezing)."""
        from host_tools import build as _build
        try:
            b = _build.build(target, out)
        except _build.BuildError as e:
            raise click.ClickException(str(e)) from None
        for line in _build.summary(b):
            click.echo(line)

    @main.command()
    @click.option("--port", required=True, help="Serial port (/dev/ttyUSB0) or socket://host:port.")
    @click.option("--baud", default=115200, show_default=True)
    @click.option("--save", type=click.Path(dir_okay=False), help="Append the session to this file.")
    @click.option("--raw", is_flag=True, help="Show lines as they come, undecoded.")
    def monitor(port: str, baud: int, save: str | None, raw: bool) -> None:
        """Serial console: the firmware's log decoded (levels, event names); reconnects after a
        USB replug; Ctrl-C ends it."""
        from host_tools import monitor as _monitor
        sys.exit(_monitor.run_cli(port, baud, save, raw))
