"""The `parcelbox` command: one entry point for the host tools."""

from __future__ import annotations

import sys

import click

from host_tools import vm as _vm


@click.group()
def main() -> None:
    """parcelbox host tools: the backend (boxes, codes, events), the MicroPython VM runner
    and the demo. Every command has --help."""


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
@click.option("--heap", default=_vm.DEFAULT_HEAP, show_default=True, help="GC heap size of the VM.")
@click.option("--keep", type=click.Path(file_okay=False), help="Keep the box's flash in this folder.")
def demo(heap: str, keep: str | None) -> None:
    """Run the scripted story of one box in the MicroPython VM and print its timeline."""
    from host_tools import demo as _demo

    sys.exit(_demo.run(heap=heap, keep=keep))


from host_tools import backend_cli as _backend_cli  # noqa: E402

_backend_cli.register(main)

from host_tools import board_cli as _board_cli  # noqa: E402

_board_cli.register(main)

from host_tools import hardware_cli as _hardware_cli  # noqa: E402

_hardware_cli.register(main)

if __name__ == "__main__":
    main()
