"""`parcelbox hardware`: the reference design's pages, generated from the board files.

`parcelbox hardware generate` rewrites what is out of date under hardware/ (the wiring
tables and diagrams, each board's page, the index's tables); `--check` changes nothing
and exits 1 listing what is out of date (hardware/README.md section 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from host_tools import paths
from host_tools import boards as _boards
from host_tools.hardware import wiring as _wiring


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def register(main: click.Group) -> None:
    @main.group()
    def hardware() -> None:
        """The reference design under hardware/, generated from boards/*.json."""

    @hardware.command("generate")
    @click.option("--check", is_flag=True, help="Change nothing; exit 1 listing what is out of date.")
    @click.option("--boards", "boards_dir", type=click.Path(file_okay=False, exists=True),
                  default=str(paths.BOARDS), show_default=True, help="The board files.")
    @click.option("--out", "out_dir", type=click.Path(file_okay=False, exists=True),
                  default=str(paths.work_dir() / "hardware"), show_default=True,
                  help="The hardware folder (its README.md holds the generated blocks).")
    def generate(check: bool, boards_dir: str, out_dir: str) -> None:
        """Write the wiring tables, diagrams and pages of every board file."""
        try:
            files, skipped = _wiring.outputs(Path(boards_dir), Path(out_dir))
        except (_boards.BoardFileError, ValueError) as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)
        for s in skipped:
            click.echo(f"skipped: {s}")
        orphans = _wiring.orphans(files, Path(out_dir))
        for o in orphans:
            click.echo(f"no board file for {_rel(o)}/: delete it or restore boards/{o.name}.json")
        if check:
            stale = _wiring.stale(files)
            for p in stale:
                click.echo(f"out of date: {_rel(p)}")
            if stale or orphans:
                click.echo(f"{len(stale)} file(s) out of date: {_wiring.REGENERATE}")
                sys.exit(1)
            click.echo(f"up to date: {len(files)} files")
            return
        changed = _wiring.write(files)
        for p in changed:
            click.echo(f"wrote {_rel(p)}")
        click.echo(f"{len(changed)} of {len(files)} files rewritten")
