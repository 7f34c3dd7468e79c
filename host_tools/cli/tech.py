"""The technician's commands (docs/tooling.md): build, deploy, provision, monitor, doctor."""

from __future__ import annotations

import sys

import click
from host_tools.cli import options


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--target", type=click.Choice(["esp32", "sim"]), default="esp32", show_default=True,
                  help="esp32: .mpy for -march=xtensawin; sim: for the MicroPython VM (virtual board).")
    @click.option("--out", type=click.Path(file_okay=False), help="Build folder (default build/TARGET).")
    def build(target: str, out: str | None) -> None:
        """Compile the firmware with mpy-cross into a build folder with manifest.json and
        manifest.py (for freezing)."""
        from host_tools.tech import build as _build
        b = _build.build(target, out)
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
        from host_tools.tech import monitor as _monitor
        sys.exit(_monitor.run_cli(port, baud, save, raw))

    @main.command()
    @click.option("--port", required=True, help="Serial port (/dev/ttyUSB0) or socket://host:port.")
    @click.option("--build", "build_dir", default="build/esp32", show_default=True,
                  type=click.Path(file_okay=False), help="A folder made by parcelbox build.")
    @click.option("--no-reset", is_flag=True, help="Switch the slot but do not reset the board.")
    def deploy(port: str, build_dir: str, no_reset: bool) -> None:
        """Copy a build to the board through mpremote: only files whose hash differs, into the
        idle app slot, verified, then switched (app.ptr) and reset. A build that will not fit
        the board's heap is refused first, saying what would."""
        from host_tools.tech import deploy as _deploy
        sys.exit(_deploy.run_cli(port, build_dir, no_reset))

    @main.command()
    @click.option("--port", help="Serial port or socket://host:port (not needed with --dry-run).")
    @click.option("--box", "box_id", required=True, help="The box id in the registry.")
    @click.option("--board", help="Board file name in boards/ or a path (default: keep the board's board.json).")
    @click.option("--wifi-ssid", required=True, help="The Wi-Fi network's name.")
    @click.option("--wifi-password-file", type=click.Path(exists=True, dir_okay=False),
                  help="File holding the Wi-Fi password (else PARCELBOX_WIFI_PASSWORD, else a hidden prompt).")
    @click.option("--open-wifi", is_flag=True, help="The network has no password.")
    @options.DB
    @options.BOX_BROKER
    @options.CA
    # the box's own: no environment variable, which would follow the technician to the next box
    @click.option("--cert", type=click.Path(exists=True, dir_okay=False),
                  help="The box's TLS client certificate, a PEM file (with --key; mqtts:// only).")
    @click.option("--key", type=click.Path(exists=True, dir_okay=False),
                  help="The client certificate's private key, an unencrypted PEM file (with --cert).")
    @click.option("--max-codes", type=click.IntRange(1, 16384),
                  help="Codes the box can hold (settings.max_codes; default: the board's own, else "
                       "the firmware's 256). Each takes heap: parcelbox deploy says what fits.")
    @click.option("--dry-run", is_flag=True, help="Build and check the configuration; write nothing.")
    @click.option("--no-reset", is_flag=True, help="Do not reset the board afterwards.")
    def provision(port, box_id, board, wifi_ssid, wifi_password_file, open_wifi, db, broker, ca,
                  cert, key, max_codes, dry_run, no_reset) -> None:
        """Write config.json (and board.json, ca.pem, and with --cert/--key cert.der and key.der)
        for BOX from the registry: validated by the firmware's own rules first, each file replaced
        atomically. No secret is shown."""
        import os

        from host_tools.tech import provision as _prov
        if not dry_run and not port:
            raise click.UsageError("--port is needed (or --dry-run)")
        options.need_registry(db)
        if open_wifi:
            wifi_password = ""
        elif wifi_password_file:
            try:
                with open(wifi_password_file, encoding="utf-8") as f:
                    wifi_password = f.read().rstrip("\r\n")
            except UnicodeDecodeError:   # its message quotes a byte of the password
                raise click.ClickException("%s is not UTF-8 text" % wifi_password_file) from None
        elif os.environ.get("PARCELBOX_WIFI_PASSWORD") is not None:
            wifi_password = os.environ["PARCELBOX_WIFI_PASSWORD"]
        else:
            wifi_password = click.prompt("Wi-Fi password for %s" % wifi_ssid, hide_input=True,
                                         default="", show_default=False)
        sys.exit(_prov.run_cli(port, box_id, board, wifi_ssid, wifi_password, db, broker, ca,
                               dry_run, no_reset, cert=cert, key=key, max_codes=max_codes))

    @main.command()
    @click.option("--port", required=True, help="Serial port (/dev/ttyUSB0) or socket://host:port.")
    def doctor(port: str) -> None:
        """Read the board (MicroPython, heap, flash, firmware and file hashes, configuration,
        last crash, Wi-Fi, broker) and print a verdict. Exit 0 healthy, 1 problems, 2 no board."""
        from host_tools.tech import doctor as _doctor
        sys.exit(_doctor.run_cli(port))
