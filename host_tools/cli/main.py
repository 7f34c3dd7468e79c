"""The `parcelbox` command: one entry point for the host tools."""

from __future__ import annotations

import sys

import click

from host_tools.cli import errors, options
from host_tools.vm import runner as _vm


@click.group(cls=errors.Group)
@click.version_option(package_name="parcelbox-host-tools", prog_name="parcelbox")
def main() -> None:
    """parcelbox host tools: the backend (boxes, codes, events), the MicroPython VM runner
    and the demo. Every command has --help.

    Exit status: 0 done, 1 refused or failed, 2 bad arguments or a bad input file; a
    mistake is one `Error:` line (PARCELBOX_DEBUG=1 adds its traceback).

    Shell completion (click's): eval "$(_PARCELBOX_COMPLETE=bash_source parcelbox)" in
    ~/.bashrc (zsh_source, fish_source for those shells)."""


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--heap", default=_vm.DEFAULT_HEAP, show_default=True, help="GC heap size (96K like an ESP32).")
@click.option("--flash", type=click.Path(file_okay=False), help="Host folder mounted writable at /flash.")
@click.option("--mpy", is_flag=True, help="Run the firmware compiled to .mpy by mpy-cross.")
@click.option("--fuel", type=int, default=_vm.DEFAULT_FUEL, help="Instruction budget.")
@click.option("--stats", is_flag=True, help="Print the instructions used (wasmtime fuel).")
def vm(file: str, heap: str, flash: str | None, mpy: bool, fuel: int, stats: bool) -> None:
    """Run a MicroPython FILE in the MicroPython VM with the firmware on its path."""
    sys.exit(_vm.run_cli(file, heap, flash, mpy, fuel, stats))


@main.command()
@click.option("--heap", help="GC heap size of the VM (default: the simulator's, 192K).")
@click.option("--cpython", is_flag=True, help="Run the firmware on CPython instead of the VM.")
@click.option("--keep", type=click.Path(file_okay=False),
              help="Keep the ledger and the box's flash in this folder (empty, or a previous demo's).")
@options.own_broker("mqtt://host:port or mqtts://host:port: use this broker, not the embedded "
                    "one. It must let the new box (user demo-box) in.")
@options.CA
@options.USERNAME
@click.option("--issuer-username", help="Broker user of the demo's command sender (default: "
              "--username; a broker that ties the client id to the username needs a second one).")
@options.PASSWORD_FILE
def demo(heap: str | None, cpython: bool, keep: str | None, broker: str | None, ca: str | None,
         username: str | None, issuer_username: str | None, password_file: str | None) -> None:
    """The whole story of one box, unattended: a broker, a ledger, a box registered and running
    in the MicroPython VM; a deposit, a pickup after two typos, an attacker locked out, a power
    cut; every event in the ledger exactly once. Prints the timeline; exit 1 if a step fails."""
    import os

    from host_tools.sim import demo as _demo

    password = None
    if broker:
        from host_tools.backend.sdk.mqtt import MqttConfig
        MqttConfig.from_url(broker, ca=ca)   # a bad address is a usage error, before anything runs
        password = os.environ.get("PARCELBOX_PASSWORD")
        if password_file:
            with open(password_file) as f:
                password = f.read().strip()
    sys.exit(_demo.run(vm=not cpython, heap=heap, keep=keep, broker=broker, ca=ca if broker else None,
                       username=username if broker else None, password=password,
                       issuer_username=issuer_username if broker else None))


from host_tools.cli import backend as _backend_cli  # noqa: E402

_backend_cli.register(main)

from host_tools.cli import board as _board_cli  # noqa: E402

_board_cli.register(main)

from host_tools.cli import hardware as _hardware_cli  # noqa: E402

_hardware_cli.register(main)

from host_tools.cli import sim as _sim_cli  # noqa: E402

_sim_cli.register(main)

from host_tools.cli import tech as _tech_cli  # noqa: E402

_tech_cli.register(main)

from host_tools.cli import vboard as _vboard_cli  # noqa: E402

_vboard_cli.register(main)

from host_tools.cli import linux as _linux_cli  # noqa: E402

_linux_cli.register(main)

if __name__ == "__main__":
    main()
