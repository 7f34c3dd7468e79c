# `parcelbox box`: register boxes, see their state, and the commands about a box.
# The shared options, the ledger and the broker come from host_tools.cli.backend (Ctx).
import json
import os

import click

from host_tools.backend import brokerurl
from host_tools.backend.sdk.backend import DEFAULT_ONESHOT_EXP
from host_tools.cli.backend import (_EXPIRES, Ctx, _command, _duration_arg, _out, _table,
                                    _when, with_ctx)


@click.group()
def box():
    """Register boxes and see their state."""


@box.command("add")
@click.argument("box_id")
@click.option("--compartments", type=click.IntRange(1, 32), default=1, show_default=True)
@click.option("--code-len", type=click.IntRange(4, 8), default=6, show_default=True)
@click.option("--provision-file", type=click.Path(dir_okay=False, writable=True),
              help="Write the box's key and broker password here (mode 0600) instead of "
                   "showing them.")
@click.option("--json", "as_json", is_flag=True)
@with_ctx
def box_add(c: Ctx, box_id, compartments, code_len, provision_file, as_json):
    """Register BOX_ID and create its key (shown once, or written to --provision-file)."""
    c.creates = True
    # before registering, as the file below: a bad --broker must not leave a box behind
    broker = brokerurl.parse(c.broker).public() if c.broker else None   # never our credentials
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
    if broker:
        rec["broker"] = broker
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


def register(main: click.Group) -> None:
    main.add_command(box)
