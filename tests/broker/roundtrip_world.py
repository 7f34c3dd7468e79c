# A whole system on one machine for the broker tests: the private mosquitto, a ledger,
# a consumer, the CLI as a backend user, and firmware box cores joined to the broker
# by tests/broker/boxlink.py.
import json
import time
from pathlib import Path

from click.testing import CliRunner

from boxlink import BoxLink
from host_tools.testing.wait import wait_for
from host_tools.cli.main import main
from host_tools.backend.sdk import Backend, Consumer, Ledger, mqtt_password


def diagnose(world, link):
    """What a timed-out wait reports: what the box published, what the consumers saw."""
    return "box online %s, published %s; consumers %s" % (
        link._online, [(t.rsplit("/", 1)[-1], pl[65:140]) for t, pl in link.published],
        [c.stats for c in world.consumers])


class World:
    def __init__(self, broker, tmp: Path):
        self.broker = broker
        self.tmp = tmp
        self.db = tmp / "ledger.db"
        self.ledger = Ledger(self.db)
        self.backend_pw = broker.add_user("cli", backend=True)
        self.links = {}
        self.consumers = []

    def env(self):
        return {"PARCELBOX_DB": str(self.db), "PARCELBOX_BROKER": "%s://%s:%d" % (
            "mqtts" if self.broker.secure else "mqtt", self.broker.host, self.broker.port),
            "PARCELBOX_USERNAME": "cli", "PARCELBOX_PASSWORD": self.backend_pw,
            "PARCELBOX_CA": str(self.broker.ca_path) if self.broker.ca_path else None}

    def cli(self, *args, code=0):
        r = CliRunner().invoke(main, list(args), env=self.env(), catch_exceptions=False)
        assert r.exit_code == code, r.output
        return r.output

    def cli_json(self, *args):
        return json.loads(self.cli(*args, "--json").strip().splitlines()[-1])

    def add_box(self, box_id, compartments=1, start=True):
        rec = Backend(self.ledger).register(box_id, compartments)
        key = bytes.fromhex(rec["box_key"])
        self.broker.add_user(box_id, mqtt_password(key))
        link = BoxLink(self.tmp / ("flash-" + box_id), box_id, key,
                       self.broker.sdk_config(box_id, mqtt_password(key)),
                       settings={"compartments": compartments})
        self.links[box_id] = link
        if start:
            link.start()
        return link

    def consumer(self, name="consumer-1", **kw):
        if name not in self.broker.users:
            self.broker.add_user(name, backend=True)
        c = Consumer(self.db, self.broker.sdk_config(name), name=name, **kw).start()
        wait_for(c.subscribed.is_set, what="consumer subscribed")
        self.consumers.append(c)
        return c

    def outcome(self, box_id, seq, timeout=15):
        return wait_for(lambda: (lambda o: o if o != (None, None) else None)(
            self.ledger.command_outcome(box_id, seq)), timeout, "answer to command %d" % seq)

    def events(self, box_id, kind=None):
        return [e for e in self.ledger.events(box_id, limit=10 ** 6) if kind is None or e.type == kind]

    def flash(self, box_id):
        d = Path(self.links[box_id].flash_dir)
        return {f.name: f.read_bytes() for f in sorted(d.iterdir())}

    def close(self):
        for c in self.consumers:
            c.stop()
        for link in self.links.values():
            link.stop(clean=False)
        self.ledger.close()


def open_and_close(world, link, comp, box_id):
    """The person opens the unlocked door, then closes it; waits for both events."""
    n_opened = len(world.events(box_id, "opened"))
    n_closed = len(world.events(box_id, "closed"))
    link.set_door(comp, True)
    wait_for(lambda: len(world.events(box_id, "opened")) > n_opened, what="opened event")
    assert world.events(box_id, "opened")[-1].comp == comp
    link.set_door(comp, False)
    wait_for(lambda: len(world.events(box_id, "closed")) > n_closed, what="closed event")
