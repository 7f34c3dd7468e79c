"""`parcelbox linux`: set up the linux port on a Raspberry Pi (docs/linux.md section 10).

`parcelbox linux provision` writes board.json, config.json and ca.pem into the service's
state directory from the backend's registry, through the same plan and checks as
`parcelbox provision` (host_tools/tech/provision.py: the firmware's own devconf rules), each
file by rename with its data synced, mode 0600; no secret is shown. `parcelbox linux unit`
prints the systemd unit.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import click
from host_tools.cli import options
from host_tools import paths

UNIT = paths.FIRMWARE / "linux" / "parcelbox.service"
OS_NETWORK = "os"   # config.json's wifi.ssid on Linux: required by the format, unused (the OS's network)


class StateDir:
    """A state directory as `provision.write` writes to a board: atomic writes, hashes back."""

    def __init__(self, path: Path):
        from pb_linux.port import DurableStorage
        self.path = path
        self.storage = DurableStorage(str(path))

    def write_atomic(self, name: str, data: bytes) -> None:
        name = name.lstrip("/")
        old = os.umask(0o077)           # secrets: readable by the service user only
        try:
            self.storage.replace(name, data)
        finally:
            os.umask(old)
        os.chmod(self.path / name, 0o600)

    def hash(self, name: str) -> str:
        return hashlib.sha256((self.path / name.lstrip("/")).read_bytes()).hexdigest()


def provision(state: str, box_id: str, board: str | None, db: str, broker: str, ca: str | None,
              dry_run: bool = False, echo=click.echo) -> int:
    from host_tools import boards as _boards
    from host_tools.tech import provision as _prov
    path = Path(state)
    if not dry_run and not path.is_dir():
        raise click.ClickException("no state directory %s (StateDirectory= of the unit, or "
                                   "install -d -m 0700 it)" % state)
    existing = None
    if board is None and (path / "board.json").exists():
        import json
        try:
            existing = json.loads((path / "board.json").read_text())
        except ValueError:
            existing = None
    try:
        p = _prov.plan(db, box_id, broker, OS_NETWORK, "", board, ca, existing_board=existing)
    except _prov.ProvisionError as e:
        raise click.ClickException(str(e)) from None
    chip = (p.board or existing or {}).get("chip")
    if chip not in _boards.CHIPS or not _boards.CHIPS[chip].named:
        raise click.ClickException("board %s is for the %s, not a linux board (its pins must be Blinka "
                                   "names, chip \"rpi\"): use parcelbox provision for an ESP32"
                                   % ((p.board or existing or {}).get("name", "?"), chip))
    for line in p.summary():
        if not line.startswith("wifi "):
            echo(line)
    if dry_run:
        echo("dry run: checked by the firmware's rules, nothing written")
        return 0
    names = _prov.write(StateDir(path), p)
    echo("written to %s (each by rename, synced, mode 0600, hashes read back): %s"
         % (state, ", ".join(names)))
    echo("next: chown -R parcelbox:parcelbox %s; systemctl restart parcelbox" % state)
    return 0


def register(main: click.Group) -> None:
    @main.group()
    def linux() -> None:
        """The linux port on a Raspberry Pi (docs/linux.md)."""

    @linux.command("provision")
    @click.option("--box", "box_id", required=True, help="The box id in the registry.")
    @click.option("--state", default="/var/lib/parcelbox", show_default=True, type=click.Path(file_okay=False),
                  help="The service's state directory.")
    @click.option("--board", help="Board file name in boards/ or a path (default: keep the state "
                                  "directory's board.json).")
    @options.DB
    @options.BOX_BROKER
    @options.CA
    @click.option("--dry-run", is_flag=True, help="Build and check the configuration; write nothing.")
    def linux_provision(box_id, state, board, db, broker, ca, dry_run) -> None:
        """Write board.json, config.json and ca.pem for BOX into the state directory, from the
        registry, checked by the firmware's own rules. No secret is shown."""
        options.need_registry(db)
        sys.exit(provision(state, box_id, board, db, broker, ca, dry_run))

    @linux.command("unit")
    def linux_unit() -> None:
        """Print the systemd unit (parcelbox linux unit > /etc/systemd/system/parcelbox.service)."""
        click.echo(UNIT.read_text(), nl=False)
