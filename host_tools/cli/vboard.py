"""`parcelbox vboard`: a virtual ESP32 for mpremote and the technician's commands, on a
socket:// endpoint, with a host folder as its flash (docs/vboard.md)."""

from __future__ import annotations

import signal
import sys
import threading

import click


def register(main: click.Group) -> None:
    @main.command("vboard")
    @click.option("--flash", "flash", required=True, type=click.Path(file_okay=False),
                  help="Host folder that is the board's flash (created if missing).")
    @click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
                  help="TCP port on 127.0.0.1 (0: a free one).")
    @click.option("--heap", default="256K", show_default=True,
                  help="The VM's GC heap: the board's free RAM (96K: a small ESP32, too small for "
                       "the .mpy firmware).")
    @click.option("--psram", is_flag=True,
                  help="Name the board as MicroPython's SPIRAM build does (a WROVER module); "
                       "its heap stays --heap.")
    @click.option("--broker", type=click.Choice(["none", "embedded"]), default="none",
                  show_default=True,
                  help="embedded: also run an MQTT broker (amqtt, anonymous, this machine "
                       "only) and print its address, for a box provisioned against it.")
    @click.option("--echo/--no-echo", default=False,
                  help="Also print what the board prints (its UART) here.")
    def vboard(flash: str, port: int, heap: str, psram: bool, broker: str, echo: bool) -> None:
        """Serve a virtual board until Ctrl-C: `mpremote connect URL ...` reaches it. A reset
        boots main.py from the flash; the sim port's firmware runs with its keypad, doors
        and network."""
        from host_tools.vboard.board import VirtualBoard

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        mqtt = None
        vb = VirtualBoard(flash, port=port, heap=heap, psram=psram, echo=echo)
        try:
            if broker == "embedded":
                from host_tools.backend.embedded import EmbeddedBroker
                mqtt = EmbeddedBroker().start()
                click.echo("broker mqtt://%s:%d (no TLS, anonymous)" % (mqtt.host, mqtt.port))
            click.echo("virtual board %s (flash %s); Ctrl-C to stop" % (vb.url, vb.flash))
            if vb.pty:
                click.echo("the same UART as a serial device: %s (for mpremote connect %s repl)"
                           % (vb.pty, vb.pty))
            click.echo("type keys and door commands here, as at the box ('help')")
            sys.stdout.flush()
            threading.Thread(target=_console, args=(vb,), name="vboard-keys", daemon=True).start()
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
        finally:
            vb.stop()
            if mqtt is not None:
                mqtt.stop()
        click.echo("stopped")


def _console(vb) -> None:
    """The box's world from standard input, a line at a time, until it ends (the board is
    served on until Ctrl-C either way)."""
    from host_tools.sim.simbox import Reboot, SimError
    from host_tools.vboard.keys import handle
    for line in sys.stdin:
        try:
            answer = handle(vb, line)
        except (SimError, Reboot) as e:   # the firmware reset or stopped while keys went in
            answer = "error: %s: %s" % (line.strip(), "the board reset" if isinstance(
                e, Reboot) else e)
        if answer:
            click.echo(answer)
