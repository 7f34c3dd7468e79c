"""`parcelbox board`: check a board file before it ships (docs/boards.md).

`parcelbox board check FILE...` lists every error and warning of each file and exits
1 if any file has an error; `--json` prints one object per file, with the board.json
the device would read. `--out FILE` writes that board.json (one input file only).
"""

from __future__ import annotations

import json
import sys

import click

from host_tools import boards as _boards


def register(main: click.Group) -> None:
    @main.group()
    def board() -> None:
        """Board files: roles to pins for one chip (boards/*.json)."""

    @board.command("check")
    @click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per file, for scripts.")
    @click.option("--out", type=click.Path(dir_okay=False),
                  help="Write the device's board.json here (one input file, only when it is valid).")
    def check(files: tuple[str, ...], as_json: bool, out: str | None) -> None:
        """Check board FILES against their chip; exit 1 listing every error."""
        if out and len(files) != 1:
            raise click.UsageError("--out takes exactly one board file")
        failed = False
        for path in files:
            r = _boards.check_file(path)
            failed |= not r.ok
            if as_json:
                click.echo(json.dumps(r.as_json(), sort_keys=True))
            else:
                _print(r)
            if out and r.ok:
                with open(out, "w", encoding="utf-8") as f:
                    json.dump(r.board, f, separators=(",", ":"), sort_keys=True)
                    f.write("\n")
        sys.exit(1 if failed else 0)


def _print(r: _boards.Result) -> None:
    if r.ok:
        b = r.board
        kp = b["keypad"]
        click.echo(f"{r.path}: ok: {b['name']} for the {b['chip']}, {len(kp['rows'])}x{len(kp['cols'])} "
                   f"keypad, {len(b['compartments'])} compartment{'s' if len(b['compartments']) > 1 else ''}")
    else:
        n = len(r.errors)
        click.echo(f"{r.path}: {n} error{'s' if n > 1 else ''}, the board must not ship:")
    for e in r.errors:
        click.echo(f"  error: {e}")
    for w in r.warnings:
        click.echo(f"  warning: {w}")
