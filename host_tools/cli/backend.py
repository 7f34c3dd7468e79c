"""The backend commands of `parcelbox`: box, codes, unlock, events.

Every command reads the ledger from --db (or PARCELBOX_DB) and, where it talks to
boxes, the broker from --broker/--username/--ca and a password from
PARCELBOX_PASSWORD or --password-file (never from the command line, so it stays
out of the shell history). Each has --json for scripts; people get tables.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from host_tools.cli import options
from host_tools.backend import protocol as p
from host_tools.backend.sdk import Backend, Consumer, Ledger, MqttConfig
from host_tools.backend.sdk.backend import DEFAULT_ONESHOT_EXP, MAX_ONESHOT_EXP

_DURATION = re.compile(r"^([0-9]{1,9})([smhdw])$")
_SECONDS = re.compile(r"^[0-9]{1,12}$")
_LAST_TIME = 0xFFFFFFFF   # the protocol's times are 32-bit epoch seconds (until 2106)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Ctx:
    def __init__(self, db, broker, username, password_file, ca):
        self.db_path = db
        self.broker = broker
        self.username = username
        self.password_file = password_file
        self.ca = ca
        self.creates = False   # only `box add` makes a registry where there is none
        self._ledger = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.db_path, create=self.creates)
        return self._ledger

    def mqtt(self) -> MqttConfig:
        if not self.broker:
            raise click.UsageError("no broker: give --broker mqtts://host:port or set PARCELBOX_BROKER")
        password = os.environ.get("PARCELBOX_PASSWORD")
        if self.password_file:
            with open(self.password_file) as f:
                password = f.read().strip()
        return MqttConfig.from_url(self.broker, self.username, password, self.ca)

    def backend(self, need_broker=True) -> Backend:
        return Backend(self.ledger, self.mqtt() if need_broker else None)


def _out(obj, as_json, human):
    if as_json:
        click.echo(json.dumps(obj, indent=None, sort_keys=True))
    else:
        human()


def _table(title, cols, rows):
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    Console().print(t)


def _when(t):
    if not t:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _time_arg(value, name, now):
    """An epoch second, an ISO date/time (UTC unless given) or a duration from now (3d)."""
    if value is None:
        return 0
    m = _DURATION.match(value)
    if m:
        t = int(now) + int(m.group(1)) * _UNIT[m.group(2)]
    elif _SECONDS.match(value):
        t = int(value)
    else:
        try:
            d = dt.datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter("use epoch seconds, an ISO date such as 2026-12-01T18:00, "
                                     "or a duration such as 3d", param_hint=name) from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.timezone.utc)
        t = int(d.timestamp())
    if not 0 <= t <= _LAST_TIME:
        raise click.BadParameter("a time from 1970 to 2106", param_hint=name)
    return t


def _duration_arg(value, name, default):
    """Seconds from a duration (90s, 5m, 2h, 1d; bare digits are seconds), 1 s to a day."""
    if value is None:
        return default
    m = _DURATION.match(value)
    n = int(m.group(1)) * _UNIT[m.group(2)] if m else int(value) if _SECONDS.match(value) else None
    if n is None or not 1 <= n <= MAX_ONESHOT_EXP:
        raise click.BadParameter("a duration of 1 s to 1 d, such as 90s, 5m or 2h",
                                 param_hint=name)
    return n


_EXPIRES = click.option(
    "--expires", metavar="DURATION",
    help="The box refuses the command after this long (90s, 5m, 2h; at most 1d; default "
         "%d s): it must not act later, after the broker held it for an offline box."
    % DEFAULT_ONESHOT_EXP)


_OPTS = [options.DB, options.BACKEND_BROKER, options.USERNAME, options.PASSWORD_FILE, options.CA]


def with_ctx(f):
    """Add the ledger and broker options to a command; it gets a Ctx first."""
    import functools

    @functools.wraps(f)
    def wrapper(db, broker, username, password_file, ca, **kw):
        return f(Ctx(db, broker, username, password_file, ca), **kw)
    for o in reversed(_OPTS):
        wrapper = o(wrapper)
    return wrapper


@click.command()
@click.argument("box_id")
@click.argument("comp", type=click.IntRange(1, 32))
@click.option("--wait", type=float, default=0, help="Seconds to wait for the box's result.")
@_EXPIRES
@click.option("--json", "as_json", is_flag=True)
@with_ctx
def unlock(c: Ctx, box_id, comp, wait, expires, as_json):
    """Unlock compartment COMP of BOX_ID remotely (refused by the box after --expires)."""
    n = _duration_arg(expires, "--expires", DEFAULT_ONESHOT_EXP)
    _command(c, box_id, lambda be: be.unlock(box_id, comp, expires_in=n), wait, as_json,
             "Unlock of compartment %d" % comp, expires_in=n, comp=comp)

@click.command()
@click.option("--box", "box_id", help="Only this box.")
@click.option("--follow", is_flag=True, help="Consume events from the broker and print them "
                                              "as they are stored, until interrupted.")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True,
              help="Show the events stored last, this many.")
@click.option("--group", default="parcelbox", show_default=True,
              help="Shared-subscription group of the consumers.")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array; with --follow, one JSON object per line.")
@with_ctx
def events(c: Ctx, box_id, follow, limit, group, as_json):
    """Events in the ledger, by box and seq; with --follow, consume new ones (stored once,
    acked) and print them as they are stored."""
    if box_id:
        c.ledger.box(box_id)
    evs = c.ledger.latest_events(box_id, limit)
    if as_json and not follow:
        click.echo(json.dumps([_event_dict(e) for e in evs], sort_keys=True))
        return
    for e in evs:
        _print_event(e, as_json)
    if not follow:
        if not evs:
            click.echo("no events")
        return

    def show(db_, ev):
        if box_id is None or ev.box == box_id:
            _print_event(ev, as_json)

    cfg = c.mqtt()
    where = "%s:%d" % (cfg.host, cfg.port)

    def link(up, why):   # to stderr: stdout holds the events (JSON lines with --json)
        click.echo("the broker at %s is back: listening again" % where if up else
                   "lost the broker at %s (%s): trying again; the boxes keep their events "
                   "until they are stored" % (where, why), err=True)

    with Consumer(c.db_path, cfg, group=group, handler=show, on_link=link) as consumer:
        consumer.subscribed.wait(10)
        click.echo("listening for events on %s (group %s); Ctrl-C to stop" % (where, group), err=True)
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


def register(main: click.Group) -> None:
    from host_tools.cli import box, codes

    box.register(main)
    codes.register(main)
    main.add_command(unlock)
    main.add_command(events)


def _event_dict(e: p.Event) -> dict:
    return {"box": e.box, "seq": e.seq, "type": e.type, "comp": e.comp, "id": e.id,
            "arg": e.arg, "t": e.t, "text": p.describe(e.type, e.comp, e.id, e.arg)}


def _print_event(e: p.Event, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_event_dict(e), sort_keys=True))
    else:
        click.echo("%s  %-10s #%-5d %-13s %s" % (_when(e.t) if e.t else "time unknown       ",
                                                e.box, e.seq, e.type,
                                                p.describe(e.type, e.comp, e.id, e.arg)))
    sys.stdout.flush()


def _command(c: Ctx, box_id: str, send, wait: float, as_json: bool, what: str,
             expires_in: int | None = None, **extra) -> None:
    """Send one command (send(backend) -> seq), optionally wait for the box's answer,
    and report both; exit 1 if the box refused it."""
    c.ledger.box(box_id)
    cfg = c.mqtt()
    with Backend(c.ledger, cfg) as be:
        seq = send(be.connect())
    body = c.ledger.command_body(box_id, seq)
    out = _wait(c, cfg, box_id, seq, wait) if wait else None
    data = dict(box=box_id, command=seq, result=out.text if out else None, **extra)
    if "exp" in body and expires_in is not None:  # a one-shot's expiry (time's is its own)
        data.update(exp=body["exp"], expires_in=expires_in)
    if out and out.refused:
        data.update(reason=out.reason, hint=out.hint)
    when = ""
    if "exp" in body and expires_in is not None:
        when = "; expires in %d s, at %s UTC" % (expires_in, dt.datetime.fromtimestamp(
            body["exp"], dt.timezone.utc).strftime("%H:%M:%S"))
    _out(data, as_json, lambda: click.echo("%s sent to %s (command %d%s)%s." % (
        what, box_id, seq, when, ": " + out.text if out else "")))
    _fail_if_refused(out, box_id, seq, body.get("op", "rotate"))


# What to do about a refusal, by rejection reason or result status.
_REJECT_HINTS = {
    "no_clock": "the box has no trusted time; it refuses time-bounded commands until it gets "
                "the time (SNTP or `parcelbox box set-time {box}`)",
    "no_exp": "a one-shot command needs an expiry at most a day ahead of the box's clock: "
              "this machine's clock or the box's is far off (`parcelbox box status {box}`, "
              "`parcelbox box set-time {box}`)",
    "expired": "the box was offline? send it again if it is still wanted",
    "seq_jump": "its seq is far above the box's newest: is this the box's own ledger? "
                "(`parcelbox box refresh {box}` brings the box's counter)",
    "replay": "another process used that seq, or this ledger is behind the box "
              "(`parcelbox box refresh {box}` brings the box's counter)",
    "stale": "another process used that seq, or this ledger is behind the box "
             "(`parcelbox box refresh {box}` brings the box's counter)",
    "bad_mac": "the box holds another key (provisioned again? a rotation not confirmed?)",
    "no_memory": "the box ran short of memory, the command is not at fault: send it again",
}
_STATUS_HINTS = {
    "busy": "the compartment is unlocking, open or cooling down; try again shortly",
    "full": "the box's code store is full: revoke codes it no longer needs",
    "flash": "the box's flash failed; nothing was applied",
    "sync_order": "the sync did not take (an add or revoke came in between); the consumers "
                  "send a new one, or run `parcelbox codes sync {box}`",
    "sync_mismatch": "the sync did not take; run `parcelbox codes sync {box}`",
}


class _Outcome:
    """The box's answer to one command, for people and scripts."""

    def __init__(self, status, rejected, timeout, box_id, op):
        self.reason = self.hint = None
        if status is not None:
            self.reason = p.STATUS[status & 0xFF] if (status & 0xFF) < len(p.STATUS) else str(status)
            # unknown_code answers only a revoke: the code is not on the box, as wanted
            self.refused = status & 0xFF not in (0, p.STATUS.index("unknown_code"))
            self.text = self.reason
            hint = _STATUS_HINTS.get(self.reason)
            if self.reason == "bad_value" and op == "time":
                hint = ("the box refused the time (earlier than its trusted time, or out of "
                        "range): see its time_refused event (`parcelbox events --box {box}`)")
            elif self.reason == "bad_value":
                hint = "a value the box cannot take (a code's value held by another, a setting)"
        elif rejected is not None:
            self.reason = p.REJECT[rejected] if rejected < len(p.REJECT) else str(rejected)
            self.refused = True
            words = p.REJECT_WORDS.get(self.reason)
            self.text = "rejected: %s%s" % (self.reason, " (%s)" % words if words else "")
            hint = _REJECT_HINTS.get(self.reason)
        else:
            self.refused = False
            self.text = ("no answer within %g s (the box may be offline; it applies the command "
                         "when it is back, unless it has expired by then)" % timeout)
            hint = None
        self.hint = hint.format(box=box_id) if hint else None


def _fail_if_refused(out, box_id: str, seq: int, op: str) -> None:
    if out is not None and out.refused:
        raise click.ClickException("box %s refused command %d (%s): %s%s" % (
            box_id, seq, op, out.text, "; " + out.hint if out.hint else ""))


def _wait(c: Ctx, cfg: MqttConfig, box_id: str, seq: int, timeout: float) -> _Outcome:
    """Consume events until the box answers command `seq` (or timeout): its outcome.
    Called after the command's own connection is closed: the client id is the username,
    so a second connection under it would push the first one out."""
    be = Backend(c.ledger)
    with Consumer(c.db_path, cfg, persistent=False):
        status, rejected = be.wait(box_id, seq, timeout)
    op = c.ledger.command_body(box_id, seq).get("op", "rotate")
    return _Outcome(status, rejected, timeout, box_id, op)
