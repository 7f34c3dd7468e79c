"""`parcelbox sim`: a simulated box in the terminal, or a scenario run (docs/scenarios.md).

Interactive mode is line based: each line is a scenario command (`door 1 open`,
`backend issue c1 recipient comp 1`, `expect event pickup`, ...) or a shortcut: a line
of keys (`482915`, `1 2 #`) presses them, `o N` / `c N` open and close door N, `t NAME`
types a code issued as NAME, `s` shows the status, `help`, `quit`. The box runs on in
real time between lines; what it does (feedback, unlocks, events made and stored) is
printed as it happens.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from host_tools import devlog
from host_tools.backend import protocol as p
from host_tools.cli import errors, options
from host_tools.sim import narrate
from host_tools.sim import scenario as sc
from host_tools.backend.embedded import EmbeddedBroker

HELP = """commands: any scenario line (docs/scenarios.md), e.g.
  backend issue c1 recipient comp 1 uses 1 valid 3d    backend unlock 2    backend sync
  door 1 open | door 1 close    tamper open    network down|up    power cut|on
  wait 2s    clock +2h    expect event pickup comp 1
shortcuts: 482915 (keys; also 1 2 #)   t NAME (type code NAME)   o N / c N (door N open/close)
           s (status)   help   quit"""


# ---- the embedded broker ---------------------------------------------------------------

class ExternalBroker:
    """A broker given with --broker. It must let the box in (its id as user name, any
    password: a development broker); the backend uses --username and PARCELBOX_PASSWORD.
    The simulator cannot stop or restart it."""

    def __init__(self, url: str, ca: str | None, username: str | None, password: str | None):
        from host_tools.backend.sdk.mqtt import MqttConfig
        self.cfg = MqttConfig.from_url(url, username, password, ca)
        self.host, self.port, self.ca_path = self.cfg.host, self.cfg.port, ca
        self.shared_subscriptions = True

    def add_user(self, name, password=None, *, backend=False):
        return password

    def sdk_config(self, username, password=None):
        from dataclasses import replace
        return self.cfg if self.cfg.username else replace(self.cfg, username=username)

    def _cannot(self, *a):
        raise sc.ExpectationFailed("the simulator cannot stop or start a broker given with --broker")
    stop = start = restart = _cannot

    def close(self):
        pass


# ---- printing ----------------------------------------------------------------------------

class Narrator:
    """One readable line per trace record worth one (None: not worth a line)."""

    def __init__(self):
        self.feedback = narrate.Feedback()

    def __call__(self, r: dict) -> str | None:
        k, t = r["kind"], "%8.3fs " % (r["t"] / 1000)
        if k == "feedback":
            text = self.feedback.line(r["led"], r["hz"])
            return t + text if text else None
        if k == "unlock":
            return t + "LOCK %d unlocked" % r["comp"]
        if k == "relock":
            return t + "LOCK %d locked after %d ms%s" % (r["comp"], r["ms"], " (failsafe)" if r["failsafe"] else "")
        if k == "event":
            return t + "%s (on flash)" % devlog.event_line(r["seq"], r["name"], r["comp"], r["id"], r["arg"])
        if k == "stored":
            return t + "  -> sent: %s (seq %d) is in the backend's ledger" % (r["name"], r["seq"])
        if k == "command":
            extra = " %s: code id %d" % (r["code"], r["code_id"]) if r["op"] == "issue" else ""
            return t + "backend: %s%s" % (r["op"], extra)
        if k == "applied":
            said = ("ok" if r["status"] == 0 else
                    "rejected: %s" % _name(p.REJECT, r["rejected"]) if r["status"] is None else
                    _name(p.STATUS, r["status"] & 0xFF))
            return t + "backend: the box answered %s (seq %d): %s" % (r["op"], r["seq"], said)
        if k == "expect":
            return t + ("ok: " if r["ok"] else "NOT MET: ") + r["text"]
        if k in ("door", "tamper"):
            return t + "%s%s %s" % (k, " %d" % r["comp"] if k == "door" else "", "open" if r["open"] else "closed")
        if k in ("network", "power", "broker", "clock"):
            return t + "%s %s" % (k, {"network": lambda: "up" if r["up"] else "down",
                                     "power": lambda: "on" if r["on"] else "cut",
                                     "broker": lambda: r["action"],
                                     "clock": lambda: "+%d s" % (r["jump_ms"] // 1000)}[k]())
        return None


def _name(names: tuple, n) -> str:
    return names[n] if isinstance(n, int) and 0 <= n < len(names) and names[n] else "%s" % n


def status(runner: sc.Runner) -> str:
    box = runner.box
    n = len(box.circuit.doors)
    occupied = set()
    for _, name, comp, _, arg in box.events():
        if name == "deposit":
            occupied.add(comp)
        elif name == "pickup" or (name == "closed" and arg == 3):
            occupied.discard(comp)
    doors = " ".join("%d:%s%s%s" % (c, "shut" if box.circuit.doors[c - 1].state else "open",
                                     ",UNLOCKED" if box.energised(c) else "",
                                     ",parcel" if c in occupied else "") for c in range(1, n + 1))
    left = narrate.lockout_left(runner.records, box.now)
    return "[%s] LED %s, buzzer %s, %s, %s%s | %s" % (
        "%.1fs" % (box.now / 1000), box.led, "%d Hz" % box.hz if box.hz else "off",
        "on" if box.running else "POWER OFF", "online" if box.online else "offline",
        ", keypad LOCKED OUT for %s more" % _span(left) if left else "", doors)


def _span(ms: int) -> str:
    s = (ms + 999) // 1000
    return "%d s" % s if s < 120 else "%d min %02d s" % (s // 60, s % 60)


_KEYS = re.compile(r"^[0-9*#A-D ]+$")


def translate(line: str) -> str:
    """Shortcuts to scenario lines."""
    w = line.split()
    if _KEYS.match(line):
        return "press " + line
    if len(w) == 2 and w[0] in ("o", "c"):
        return "door %s %s" % (w[1], "open" if w[0] == "o" else "close")
    if len(w) == 2 and w[0] == "t":
        return "type " + w[1]
    return line


def interactive(runner: sc.Runner, inp, out) -> int:
    lock = threading.Lock()
    stop = threading.Event()
    known: set[str] = set()

    def ticker():   # the box lives on between lines, at real pace
        while not stop.is_set():
            with lock:
                runner.box.run(20)
                runner.collect()
            time.sleep(0.02)

    th = threading.Thread(target=ticker, name="sim-ticker", daemon=True)
    th.start()
    out.write("parcelbox sim: box %s, %d compartments. Type 'help'.\n" % (
        runner.box_id, len(runner.box.circuit.doors)))
    with lock:
        out.write("the box is online\n" if runner.wait_online() else
                  "the box did not connect yet: backend commands wait for it\n")
    out.flush()
    try:
        while True:
            with lock:
                out.write(status(runner) + "\n> ")
            out.flush()
            line = inp.readline()
            if not line:
                break
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line in ("quit", "exit", "q"):
                break
            if line == "help":
                out.write(HELP + "\n")
                continue
            if line == "s":
                continue
            text = translate(line)
            try:
                steps = sc.parse(text, "input", names=known)
                runner.check(steps)
            except sc.ScenarioError as e:
                out.write("error: %s\n" % re.sub(r"^(input:1|line 1): ", "", str(e)))
                continue
            with lock:
                try:
                    runner.run_steps(steps)
                except sc.ExpectationFailed as e:
                    out.write("%s\n" % e)
                except Exception as e:  # noqa: BLE001 - ours: say it and keep the box going
                    err = errors.as_user_error(e)
                    if err is None:   # a bug: its traceback, as anywhere else
                        raise
                    out.write("error: %s\n" % err.message)
            for s in steps:
                if s.verb == "backend" and s.args["op"] == "issue":
                    known.add(s.args["name"])
                    code = runner.codes[s.args["name"]].code
                    out.write("code %s is %s (shown once, as the backend would)\n" % (s.args["name"], code))
    finally:
        stop.set()
        th.join(5)
    out.write("bye\n")
    return 0


# ---- the command ---------------------------------------------------------------------

def _attached(box_id: str | None, prov_file: str | None, db: str):
    """(provisioning record, registry path or None, folder for the box's flash) of the
    operator's box: from the registry (--attach) or its provisioning file."""
    import json
    from host_tools.backend import protocol as p
    from host_tools.backend.sdk import Ledger, mqtt_password
    if box_id and prov_file:
        raise click.UsageError("--attach or --provision-file, not both")
    if prov_file:
        try:
            rec = json.loads(Path(prov_file).read_text(encoding="utf-8"))
            rec = {k: rec[k] for k in ("box_id", "box_key", "compartments")}
            bytes.fromhex(rec["box_key"])
            p.check_box_id(rec["box_id"])   # it names the flash folder: no path in it
            if type(rec["compartments"]) is not int or not 1 <= rec["compartments"] <= 32:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise click.UsageError("%s is not a provisioning file (`parcelbox box add "
                                   "--provision-file` writes one)" % prov_file) from None
        rec["mqtt_password"] = mqtt_password(bytes.fromhex(rec["box_key"]))
        return rec, None, Path(prov_file).resolve().parent
    led = Ledger(db, create=False)
    try:
        row = led.box(box_id)
        if row.key_gen:
            raise click.ClickException(
                "box %s's key was rotated (generation %d): a simulated box starts from the box "
                "key, so register a box for the simulator" % (box_id, row.key_gen))
        key = led.box_key(box_id)
    finally:
        led.close()
    rec = {"box_id": box_id, "box_key": key.hex(), "mqtt_password": mqtt_password(key),
           "compartments": row.compartments}
    return rec, db, Path(db).resolve().parent


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--board", "board_file", type=click.Path(exists=True, dir_okay=False),
                  help="Board file (boards/*.json; default: the 4-compartment ESP32-S3 board).")
    @options.own_broker("mqtt[s]://host:port: a broker that lets the box in (default: an "
                        "embedded amqtt broker in this process).")
    @options.CA
    @options.USERNAME
    @click.option("--box-id", default="box-1", show_default=True, help="The box's identity.")
    @click.option("--heap", help="GC heap size of the VM (default 192K).")
    @click.option("--vm/--cpython", default=False, show_default=True,
                  help="Run the firmware in the MicroPython VM or on CPython.")
    @click.option("--script", type=click.Path(exists=True, dir_okay=False),
                  help="Run this scenario file (docs/scenarios.md) and exit: 0 every expectation "
                       "met, 1 one was not, 2 the file is bad.")
    @click.option("--trace", "trace_file", type=click.Path(dir_okay=False),
                  help="With --script: write the JSON-lines trace here (else it goes to stdout).")
    @click.option("--keep", type=click.Path(file_okay=False), help="Keep the ledger and flash here.")
    @click.option("--attach", "attach_id", metavar="BOX_ID",
                  help="Be the box the operator registered in --db (its key, its compartments), "
                       "on the operator's broker (--broker or PARCELBOX_BROKER): no box or "
                       "consumer of the sim's own; its flash stays beside the registry.")
    @click.option("--provision-file", "prov_file", type=click.Path(exists=True, dir_okay=False),
                  help="Be the box of this provisioning record (`box add --provision-file`), as "
                       "--attach does, without a registry.")
    @click.option("--consume", is_flag=True,
                  help="With --attach: store the box's events in the registry too (else the "
                       "operator's `parcelbox events --follow` does).")
    @options.DB
    def sim(board_file, broker, ca, username, box_id, heap, vm, script, trace_file, keep,
            attach_id, prov_file, consume, db):
        """A simulated box: interactive in the terminal (line based), or --script FILE."""
        # a bad file or --broker is a ScenarioError or BrokerUrlError: exit 2 (cli/errors.py)
        steps = sc.load(script) if script else None
        board = sc.board_from_file(board_file) if board_file else None
        attach, ledger = None, None
        if attach_id or prov_file:
            attach, ledger, where = _attached(attach_id, prov_file, db)
            box_id = attach["box_id"]
            broker = broker or os.environ.get("PARCELBOX_BROKER")
            if not broker:
                raise click.UsageError("an attached box needs the broker the backend uses: "
                                       "--broker or PARCELBOX_BROKER")
            keep = keep or str(where / ("sim-" + box_id))
        if broker:
            b = ExternalBroker(broker, ca, username, os.environ.get("PARCELBOX_PASSWORD"))
        else:
            try:
                b = EmbeddedBroker().start()
            except RuntimeError as e:
                raise click.ClickException(str(e)) from None
        work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="pb-sim-"))
        trace = open(trace_file, "w", encoding="utf-8") if trace_file else None
        rc = 0
        try:
            if steps is not None:
                out = trace if trace is not None else sys.stdout
                runner = sc.Runner(b, work, board=board, vm=vm, heap=heap, box_id=box_id, trace=out,
                                   attach=attach, ledger=ledger, consume=consume)
                try:
                    runner.check(steps, script)
                    runner.run(steps)
                except sc.ExpectationFailed as e:
                    click.echo("FAILED: %s" % e, err=True)
                    rc = 1
                else:
                    if trace is not None:
                        n = sum(r["kind"] == "expect" for r in runner.records)
                        click.echo("ok: %s, %d expectations met, %.1f s of box time"
                                   % (script, n, runner.box.now / 1000))
                finally:
                    runner.close()
            else:
                narrator = Narrator()
                echo = lambda r: (lambda s: s and click.echo(s))(narrator(r))  # noqa: E731
                runner = sc.Runner(b, work, board=board, vm=vm, heap=heap, box_id=box_id,
                                   trace=trace, echo=echo, attach=attach, ledger=ledger,
                                   consume=consume)
                try:
                    rc = interactive(runner, sys.stdin, sys.stdout)
                finally:
                    runner.close()
        finally:
            if trace is not None:
                trace.close()
            b.close()
        sys.exit(rc)
