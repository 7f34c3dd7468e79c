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
from host_tools.backend import brokerurl
from host_tools.backend import protocol as p
from host_tools.backend.sdk import Backend, BrokerError, Consumer, Ledger, LedgerError, MqttConfig
from host_tools.backend.sdk.backend import DEFAULT_ONESHOT_EXP, MAX_ONESHOT_EXP

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Ctx:
    def __init__(self, db, broker, username, password_file, ca):
        self.db_path = db
        self.broker = broker
        self.username = username
        self.password_file = password_file
        self.ca = ca
        self._ledger = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.db_path)
        return self._ledger

    def mqtt(self) -> MqttConfig:
        if not self.broker:
            raise click.UsageError("no broker: give --broker mqtts://host:port or set PARCELBOX_BROKER")
        password = os.environ.get("PARCELBOX_PASSWORD")
        if self.password_file:
            with open(self.password_file) as f:
                password = f.read().strip()
        try:
            return MqttConfig.from_url(self.broker, self.username, password, self.ca)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--broker") from None

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
        return int(now) + int(m.group(1)) * _UNIT[m.group(2)]
    if value.isdigit():
        return int(value)
    try:
        d = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use epoch seconds, an ISO date such as 2026-12-01T18:00, "
                                 "or a duration such as 3d", param_hint=name) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp())


def _duration_arg(value, name, default):
    """Seconds from a duration (90s, 5m, 2h, 1d; bare digits are seconds), 1 s to a day."""
    if value is None:
        return default
    m = _DURATION.match(value)
    n = int(m.group(1)) * _UNIT[m.group(2)] if m else int(value) if value.isdigit() else None
    if n is None or not 1 <= n <= MAX_ONESHOT_EXP:
        raise click.BadParameter("a duration of 1 s to 1 d, such as 90s, 5m or 2h",
                                 param_hint=name)
    return n


def _guard(fn):
    """Turn SDK errors into one clear line and exit status 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except (LedgerError, BrokerError, ValueError, OSError) as e:
            raise click.ClickException(str(e)) from None
    return wrapper


_EXPIRES = click.option(
    "--expires", metavar="DURATION",
    help="The box refuses the command after this long (90s, 5m, 2h; at most 1d; default "
         "%d s): it must not act later, after the broker held it for an offline box."
    % DEFAULT_ONESHOT_EXP)


def register(main: click.Group) -> None:
    opts = [options.DB, options.BACKEND_BROKER, options.USERNAME, options.PASSWORD_FILE, options.CA]

    def with_ctx(f):
        """Add the ledger and broker options to a command; it gets a Ctx first."""
        import functools

        @functools.wraps(f)
        def wrapper(db, broker, username, password_file, ca, **kw):
            return f(Ctx(db, broker, username, password_file, ca), **kw)
        for o in reversed(opts):
            wrapper = o(wrapper)
        return wrapper

    @main.group()
    def box():
        """Register boxes and see their state."""

    @main.group()
    def codes():
        """Issue, revoke, list and sync codes."""

    @box.command("add")
    @click.argument("box_id")
    @click.option("--compartments", type=click.IntRange(1, 32), default=1, show_default=True)
    @click.option("--code-len", type=click.IntRange(4, 8), default=6, show_default=True)
    @click.option("--provision-file", type=click.Path(dir_okay=False, writable=True),
                  help="Write the box's key and broker password here (mode 0600) instead of "
                       "showing them.")
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def box_add(c: Ctx, box_id, compartments, code_len, provision_file, as_json):
        """Register BOX_ID and create its key (shown once, or written to --provision-file)."""
        be = c.backend(need_broker=False)
        fd = None
        if provision_file:
            if os.path.exists(provision_file):
                raise click.ClickException("%s exists: not overwriting a provisioning file"
                                           % provision_file)
            # before registering: a file that cannot be made must not leave a box whose
            # key nobody has seen
            fd = os.open(provision_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            rec = be.register(box_id, compartments, code_len)
        except BaseException:
            if fd is not None:
                os.close(fd)
                os.remove(provision_file)
            raise
        if c.broker:
            rec["broker"] = brokerurl.parse(c.broker).public()  # never this backend's credentials
        if fd is not None:
            with os.fdopen(fd, "w") as f:
                json.dump(rec, f, indent=1)
            shown = {"box": box_id, "compartments": compartments, "provision_file": provision_file}
            _out(shown, as_json, lambda: click.echo(
                "Registered box %s (%d compartment%s). Its key is in %s: copy it to the box, "
                "then delete the file." % (box_id, compartments, "s" if compartments > 1 else "",
                                           provision_file)))
        else:
            _out(rec, as_json, lambda: click.echo(
                "Registered box %s. Its key and broker password are shown this once:\n"
                "  box key:       %s\n  mqtt password: %s"
                % (box_id, rec["box_key"], rec["mqtt_password"])))

    @box.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def box_list(c: Ctx, as_json):
        """All registered boxes."""
        rows = c.ledger.boxes()
        data = [{"box": b.id, "compartments": b.compartments, "online": b.online,
                 "key_gen": b.key_gen, "commands": b.cmd_seq} for b in rows]
        _out(data, as_json, lambda: _table("boxes", ["box", "compartments", "online", "key gen",
                                                     "commands sent"],
                                           [(d["box"], d["compartments"],
                                             {True: "online", False: "offline", None: "never seen"}[d["online"]],
                                             d["key_gen"], d["commands"]) for d in data]))

    @box.command("status")
    @click.argument("box_id")
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def box_status(c: Ctx, box_id, as_json):
        """Online state, the box's last state summary, and whether its codes are in sync."""
        b = c.ledger.box(box_id)
        codes_ = c.ledger.codes(box_id)
        data = {"box": b.id, "online": b.online, "compartments": b.compartments,
                "key_gen": b.key_gen, "commands": b.cmd_seq, "state": b.state,
                "codes_in_sync": c.ledger.in_sync(box_id),
                "codes_active": sum(1 for x in codes_ if x["status"] == "active"),
                "events": len(c.ledger.events(box_id, limit=10 ** 9)),
                "clock_trusted": None if not b.state else bool(b.state.get("t")),
                "sync_due": c.ledger.sync_due(box_id),
                "last_refused": c.ledger.last_refused(box_id)}

        def human():
            st = b.state or {}
            last = data["last_refused"]
            _table("box " + b.id, ["what", "value"], [
                ("online", {True: "yes", False: "no", None: "never seen"}[b.online]),
                ("clock", {True: "trusted (%s at the last summary)" % _when(st.get("t")),
                           False: "NOT trusted: it refuses unlock and clear-throttle (no_clock) "
                                  "until it gets the time (SNTP or `parcelbox box set-time %s`)"
                                  % box_id,
                           None: "unknown (no state summary yet)"}[data["clock_trusted"]]),
                ("codes active in ledger", data["codes_active"]),
                ("codes on the box", st.get("codes", "?")),
                ("codes in sync", {True: "yes", False: "no: run `parcelbox codes sync %s`" % box_id,
                                   None: "unknown (no state summary yet)"}[data["codes_in_sync"]]),
                ("full sync due", "yes: the consumers send it, or run `parcelbox codes sync %s`"
                 % box_id if data["sync_due"] else "no"),
                ("last refused command", "-" if last is None else "%d (%s): %s" % (
                    last["seq"], last["op"], last.get("status") or "rejected, "
                    + last["rejected"])),
                ("occupied", ", ".join(str(i + 1) for i in range(32) if st.get("occupied", 0) >> i & 1) or "none"),
                ("failed attempts", st.get("failures", "?")),
                ("events pending on the box", st.get("pending", "?")),
                ("events in ledger", data["events"]),
                ("boots", st.get("boots", "?")),
                ("key generation", b.key_gen)])
        _out(data, as_json, human)

    def _box_command(name, method, help_, done, oneshot=False):
        def cmd(c: Ctx, box_id, wait, as_json, expires=None):
            c.ledger.box(box_id)
            if oneshot:
                n = _duration_arg(expires, "--expires", DEFAULT_ONESHOT_EXP)
                _command(c, box_id, lambda be: getattr(be, method)(box_id, expires_in=n), wait,
                         as_json, done, expires_in=n)
            else:
                _command(c, box_id, lambda be: getattr(be, method)(box_id), wait, as_json, done)
        cmd = _guard(cmd)
        cmd = with_ctx(cmd)
        cmd = click.option("--json", "as_json", is_flag=True)(cmd)
        if oneshot:
            cmd = _EXPIRES(cmd)
        cmd = click.option("--wait", type=float, default=0,
                           help="Seconds to wait for the box's result.")(cmd)
        cmd = click.argument("box_id")(cmd)
        return box.command(name, help=help_)(cmd)

    _box_command("rotate-key", "rotate", "Give BOX_ID new wire keys (command and event MACs); "
                 "the old ones stay valid until the box confirms.", "Key rotation")
    _box_command("clear-throttle", "clear_throttle", "Forget BOX_ID's failed attempts and "
                 "lockouts.", "Clear throttle", oneshot=True)
    _box_command("refresh", "request_state", "Ask BOX_ID for a fresh state summary.",
                 "State request")
    _box_command("set-time", "set_time", "Tell BOX_ID the time (this machine's clock).",
                 "Time")

    @codes.command("issue")
    @click.argument("box_id")
    @click.option("--role", type=click.Choice(list(p.ROLES)), default="recipient", show_default=True)
    @click.option("--comp", type=click.IntRange(0, 32), default=0, show_default=True,
                  help="Compartment (0: any; a recipient code on a bank needs one).")
    @click.option("--uses", default="1", show_default=True, help="Number of uses, or 'unlimited'.")
    @click.option("--valid-from", help="Start: epoch s, ISO date/time (UTC) or a delay such as 2h.")
    @click.option("--valid-until", help="End: epoch s, ISO date/time (UTC) or a duration such as 3d.")
    @click.option("--wait", type=float, default=0, help="Seconds to wait for the box's result.")
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def codes_issue(c: Ctx, box_id, role, comp, uses, valid_from, valid_until, wait, as_json):
        """Issue a new random code; it is printed here once and stored nowhere in plain."""
        now = time.time()
        if uses == "unlimited":
            n = p.UNLIMITED
        elif uses.isdigit() and 1 <= int(uses) < p.UNLIMITED:
            n = int(uses)
        else:
            raise click.BadParameter("a number 1..65534 or 'unlimited'", param_hint="--uses")
        nb = _time_arg(valid_from, "--valid-from", now)
        na = _time_arg(valid_until, "--valid-until", now)
        if na and na < max(nb, now):
            raise click.BadParameter("the code would never be valid", param_hint="--valid-until")
        cfg = c.mqtt()
        with Backend(c.ledger, cfg) as be:
            c.ledger.box(box_id)
            issued = be.issue(box_id, role, comp, n, nb, na)
        out = _wait(c, cfg, box_id, issued.cmd_seq, wait) if wait and issued.sent else None
        status = out.text if out else None
        data = {"box": box_id, "code_id": issued.code_id, "code": issued.code, "role": role,
                "comp": comp, "uses": n, "not_before": nb, "not_after": na, "sent": issued.sent,
                "command": issued.cmd_seq, "result": status}

        def human():
            click.echo("Code %s for box %s (id %d, %s, compartment %s, %s, valid %s to %s)."
                       % (issued.code, box_id, issued.code_id, role, comp or "any",
                          "unlimited uses" if n == p.UNLIMITED else "%d use%s" % (n, "s" * (n > 1)),
                          _when(nb) if nb else "now", _when(na) if na else "no end"))
            click.echo("This is the only time the code is shown; give it to its holder now.")
            if not issued.sent:
                click.echo("The broker could not be reached: the code reaches the box with the "
                           "next `parcelbox codes sync %s`." % box_id, err=True)
            elif status is not None:
                click.echo("The box answered: " + status)
        _out(data, as_json, human)
        _fail_if_refused(out, box_id, issued.cmd_seq, "add")

    @codes.command("revoke")
    @click.argument("box_id")
    @click.argument("code_id", type=click.IntRange(1, 0xFFFFFFFF))
    @click.option("--wait", type=float, default=0, help="Seconds to wait for the box's result.")
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def codes_revoke(c: Ctx, box_id, code_id, wait, as_json):
        """Revoke a code by its id."""
        _command(c, box_id, lambda be: be.revoke(box_id, code_id), wait, as_json,
                 "Revoke of code %d" % code_id, code_id=code_id)

    @codes.command("list")
    @click.argument("box_id")
    @click.option("--all", "show_all", is_flag=True, help="Include revoked codes.")
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def codes_list(c: Ctx, box_id, show_all, as_json):
        """The codes of a box (ids, roles, windows; never the codes themselves)."""
        c.ledger.box(box_id)
        rows = c.ledger.codes(box_id, show_all)
        for r in rows:
            r["role"] = p.ROLE_NAMES[r["role"]]
        _out(rows, as_json, lambda: _table("codes of " + box_id,
                                           ["id", "role", "comp", "uses", "from", "until", "status"],
                                           [(r["id"], r["role"], r["comp"] or "any",
                                             "unlimited" if r["uses"] == p.UNLIMITED else r["uses"],
                                             _when(r["not_before"]), _when(r["not_after"]), r["status"])
                                            for r in rows]))

    @codes.command("sync")
    @click.argument("box_id")
    @click.option("--wait", type=float, default=0, help="Seconds to wait for the box's result.")
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def codes_sync(c: Ctx, box_id, wait, as_json):
        """Replace the box's whole code set with the ledger's (all or nothing on the box)."""
        cfg = c.mqtt()
        with Backend(c.ledger, cfg) as be:
            seqs = be.sync(box_id)
        out = _wait(c, cfg, box_id, seqs[-1], wait) if wait else None
        status = out.text if out else None
        n = len(c.ledger.box_set(c.ledger.db, box_id, int(time.time())))
        _out({"box": box_id, "codes": n, "commands": seqs, "result": status}, as_json,
             lambda: click.echo("Sync of %d codes sent to %s in %d commands%s." % (
                 n, box_id, len(seqs), ": " + status if status else "")))
        _fail_if_refused(out, box_id, seqs[-1], "sync_end")

    @main.command()
    @click.argument("box_id")
    @click.argument("comp", type=click.IntRange(1, 32))
    @click.option("--wait", type=float, default=0, help="Seconds to wait for the box's result.")
    @_EXPIRES
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def unlock(c: Ctx, box_id, comp, wait, expires, as_json):
        """Unlock compartment COMP of BOX_ID remotely (refused by the box after --expires)."""
        n = _duration_arg(expires, "--expires", DEFAULT_ONESHOT_EXP)
        _command(c, box_id, lambda be: be.unlock(box_id, comp, expires_in=n), wait, as_json,
                 "Unlock of compartment %d" % comp, expires_in=n, comp=comp)

    @main.command()
    @click.option("--box", "box_id", help="Only this box.")
    @click.option("--follow", is_flag=True, help="Consume events from the broker and print them "
                                                  "as they are stored, until interrupted.")
    @click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
    @click.option("--group", default="parcelbox", show_default=True,
                  help="Shared-subscription group of the consumers.")
    @click.option("--json", "as_json", is_flag=True)
    @with_ctx
    @_guard
    def events(c: Ctx, box_id, follow, limit, group, as_json):
        """Events in the ledger; with --follow, consume new ones (stored once, acked)."""
        if box_id:
            c.ledger.box(box_id)
        evs = c.ledger.events(box_id)[-limit:]
        for e in evs:
            _print_event(e, as_json)
        if not follow:
            if not evs and not as_json:
                click.echo("no events")
            return

        def show(db_, ev):
            if box_id is None or ev.box == box_id:
                _print_event(ev, as_json)

        with Consumer(c.db_path, c.mqtt(), group=group, handler=show):
            try:
                while True:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass


def _print_event(e: p.Event, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"box": e.box, "seq": e.seq, "type": e.type, "comp": e.comp,
                               "id": e.id, "arg": e.arg, "t": e.t}, sort_keys=True))
    else:
        click.echo("%s  %-10s #%-5d %-13s %s %s" % (_when(e.t) if e.t else "time unknown       ",
                                                   e.box, e.seq, e.type,
                                                   "comp %d" % e.comp if e.comp else "      ",
                                                   e.describe()))
    sys.stdout.flush()


def _command(c: Ctx, box_id: str, send, wait: float, as_json: bool, what: str,
             expires_in: int | None = None, **extra) -> None:
    """Send one command (send(backend) -> seq), optionally wait for the box's answer,
    and report both; exit 1 if the box refused it."""
    cfg = c.mqtt()
    with Backend(c.ledger, cfg) as be:
        seq = send(be)
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
