"""The technician's commands (docs/tooling.md): build, deploy, provision, monitor, doctor, run."""

from __future__ import annotations

import sys

import click
from host_tools.cli import options

# The board's port, declared once: --port, else PARCELBOX_PORT, else the one dev board attached.
def _complete_port(ctx, param, incomplete):
    from serial.tools import list_ports
    return [p.device for p in list_ports.comports() if p.device.startswith(incomplete)]


PORT = click.option("--port", envvar="PARCELBOX_PORT", shell_complete=_complete_port,
                    help="Serial port (/dev/ttyUSB0) or socket://host:port (PARCELBOX_PORT; default: "
                         "the one ESP32 dev board attached).")
JSON = click.option("--json", "as_json", is_flag=True,
                    help="One JSON object on stdout (progress and notes go to stderr).")
LEVEL = click.option("--level", type=click.Choice(["debug", "info", "warn", "error"]), default="debug",
                     show_default=True, help="Show the firmware's log lines at this level and above "
                                             "(--save keeps them all).")


def _port(port: str | None) -> str:
    from host_tools.tech import ports
    return ports.resolve(port)


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
    @PORT
    @click.option("--baud", default=115200, show_default=True)
    @click.option("--save", type=click.Path(dir_okay=False), help="Append the session to this file.")
    @click.option("--raw", is_flag=True, help="Show lines as they come, undecoded.")
    @LEVEL
    def monitor(port: str | None, baud: int, save: str | None, raw: bool, level: str) -> None:
        """Serial console: the firmware's log decoded (levels, event names); reconnects after a
        USB replug; waits while another program (mpremote) holds the port; Ctrl-C ends it."""
        from host_tools.tech import monitor as _monitor
        sys.exit(_monitor.run_cli(_port(port), baud, save, raw, level))

    @main.command()
    @PORT
    @click.option("--build", "build_dir", type=click.Path(file_okay=False),
                  help="A folder made by parcelbox build (default: where build puts it, build/esp32, "
                       "or build/sim for the virtual board).")
    @click.option("--no-reset", is_flag=True, help="Switch the slot but do not reset the board.")
    @JSON
    def deploy(port: str | None, build_dir: str | None, no_reset: bool, as_json: bool) -> None:
        """Copy a build to the board through mpremote: only files whose hash differs, into the
        idle app slot, verified, then switched (app.ptr) and reset. A board that already runs
        this build is left alone. A build that will not fit the board's heap is refused first,
        saying what would."""
        from host_tools.tech import deploy as _deploy
        sys.exit(_deploy.run_cli(_port(port), build_dir, no_reset, as_json))

    @main.command()
    @PORT
    @click.option("--target", type=click.Choice(["esp32", "sim", "auto"]), default="auto", show_default=True,
                  help="auto: sim for the virtual board, esp32 for any other.")
    @click.option("--out", type=click.Path(file_okay=False), help="Build folder (default build/TARGET).")
    @LEVEL
    def run(port: str | None, target: str, out: str | None, level: str) -> None:
        """The technician's loop in one command: build, deploy (nothing if the board already runs
        this build), then monitor until Ctrl-C."""
        from host_tools.tech import build as _build
        from host_tools.tech import deploy as _deploy
        from host_tools.tech import monitor as _monitor
        from host_tools.tech.conn import BoardConn
        port = _port(port)
        if target == "auto":
            with BoardConn(port) as conn:
                running = conn.app_running()
                target = "sim" if _deploy.is_virtual(conn) else "esp32"
                if running:   # stopped by the raw REPL's Ctrl-C to ask: back into service
                    conn.reset()
        b = _build.build(target, out)
        for line in _build.summary(b):
            click.echo(line)
        kept: list = []   # the port, left open after the boot line: the monitor reads on from there
        rc = _deploy.run_cli(port, str(b.out), False, keep=kept)
        if rc:
            sys.exit(rc)
        sys.exit(_monitor.run_cli(port, 115200, None, False, level, opened=kept[0] if kept else None))

    @main.command()
    @click.option("--port", envvar="PARCELBOX_PORT",
                  help="Serial port or socket://host:port (PARCELBOX_PORT; default: the one ESP32 dev "
                       "board attached; not needed with --dry-run).")
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
    @JSON
    def provision(port, box_id, board, wifi_ssid, wifi_password_file, open_wifi, db, broker, ca,
                  cert, key, max_codes, dry_run, no_reset, as_json) -> None:
        """Write config.json (and board.json, ca.pem, and with --cert/--key cert.der and key.der)
        for BOX from the registry: validated by the firmware's own rules first, each file replaced
        atomically. No secret is shown."""
        import os

        from host_tools.tech import provision as _prov
        options.need_registry(db)
        if not dry_run:
            port = _port(port)
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
                               dry_run, no_reset, cert=cert, key=key, max_codes=max_codes, as_json=as_json))

    @main.command()
    @PORT
    @JSON
    def doctor(port: str | None, as_json: bool) -> None:
        """Read the board (MicroPython, heap, flash, firmware and file hashes, configuration,
        last crash, Wi-Fi, broker) and print a verdict. Exit 0 healthy, 1 problems, 2 no board."""
        from host_tools.tech import doctor as _doctor
        from host_tools.tech.ports import PortError
        try:
            port = _port(port)
        except PortError as e:    # no board: doctor's exit 2
            raise _doctor.Unreachable(str(e)) from None
        sys.exit(_doctor.run_cli(port, as_json=as_json))
