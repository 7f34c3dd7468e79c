# The options several command groups share, declared once: the registry, the broker and its
# credentials. A password never comes from the command line (PARCELBOX_PASSWORD or a file).
import click

DB = click.option("--db", envvar="PARCELBOX_DB", default="parcelbox.db", show_default=True,
                  help="The backend's registry and ledger (SQLite; holds box keys: keep it "
                       "private) (PARCELBOX_DB).")
CA = click.option("--ca", envvar="PARCELBOX_CA", type=click.Path(exists=True, dir_okay=False),
                  help="The broker's CA file, for mqtts:// (PARCELBOX_CA).")
USERNAME = click.option("--username", envvar="PARCELBOX_USERNAME",
                        help="Broker user of this backend process (PARCELBOX_USERNAME).")
PASSWORD_FILE = click.option("--password-file", type=click.Path(exists=True, dir_okay=False),
                             help="File holding the broker password (or set PARCELBOX_PASSWORD).")
# The backend's broker: from the environment too, needed only by the commands that talk to boxes.
BACKEND_BROKER = click.option("--broker", envvar="PARCELBOX_BROKER",
                              help="mqtt://host:port or mqtts://host:port (PARCELBOX_BROKER).")
# The broker a box is provisioned to reach.
BOX_BROKER = click.option("--broker", envvar="PARCELBOX_BROKER", required=True,
                          help="The broker as the box reaches it: mqtts://host:8883 (PARCELBOX_BROKER).")


def own_broker(help: str):
    """--broker for a command that starts its own broker without one: never from the
    environment, so a backend's PARCELBOX_BROKER is not used by accident."""
    return click.option("--broker", help=help)


def need_registry(db: str) -> None:
    """A one-line error, not a new empty registry, when --db names none (before a prompt)."""
    from host_tools.backend.sdk import Ledger
    Ledger(db, create=False).close()
