# `parcelbox codes`: issue, revoke, list and sync a box's codes.
# The shared options, the ledger and the broker come from host_tools.cli.backend (Ctx).
import time

import click

from host_tools.backend import protocol as p
from host_tools.backend.sdk import Backend
from host_tools.cli.backend import (Ctx, _command, _fail_if_refused, _out, _table, _time_arg,
                                    _wait, _when, with_ctx)


@click.group()
def codes():
    """Issue, revoke, list and sync codes."""


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
def codes_issue(c: Ctx, box_id, role, comp, uses, valid_from, valid_until, wait, as_json):
    """Issue a new random code; it is printed here once and stored nowhere in plain."""
    now = time.time()
    if uses == "unlimited":
        n = p.UNLIMITED
    elif uses.isascii() and uses.isdigit() and len(uses) < 6 and 1 <= int(uses) < p.UNLIMITED:
        n = int(uses)
    else:
        raise click.BadParameter("a number 1..65534 or 'unlimited'", param_hint="--uses")
    nb = _time_arg(valid_from, "--valid-from", now)
    na = _time_arg(valid_until, "--valid-until", now)
    if na and na < max(nb, now):
        raise click.BadParameter("the code would never be valid", param_hint="--valid-until")
    c.ledger.box(box_id)
    cfg = c.mqtt()
    with Backend(c.ledger, cfg) as be:
        issued = be.connect().issue(box_id, role, comp, n, nb, na)
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
        if status is not None:
            click.echo("The box answered: " + status)
    _out(data, as_json, human)
    if not issued.sent:   # the broker went away after the code was stored: it is valid
        raise click.ClickException("the broker did not take the command: code %d is in the "
                                   "ledger and reaches the box with the next `parcelbox codes "
                                   "sync %s`" % (issued.code_id, box_id))
    _fail_if_refused(out, box_id, issued.cmd_seq, "add")

@codes.command("revoke")
@click.argument("box_id")
@click.argument("code_id", type=click.IntRange(1, 0xFFFFFFFF))
@click.option("--wait", type=float, default=0, help="Seconds to wait for the box's result.")
@click.option("--json", "as_json", is_flag=True)
@with_ctx
def codes_revoke(c: Ctx, box_id, code_id, wait, as_json):
    """Revoke a code by its id."""
    _command(c, box_id, lambda be: be.revoke(box_id, code_id), wait, as_json,
             "Revoke of code %d" % code_id, code_id=code_id)

@codes.command("list")
@click.argument("box_id")
@click.option("--all", "show_all", is_flag=True, help="Include revoked codes.")
@click.option("--json", "as_json", is_flag=True)
@with_ctx
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
def codes_sync(c: Ctx, box_id, wait, as_json):
    """Replace the box's whole code set with the ledger's (all or nothing on the box)."""
    c.ledger.box(box_id)
    cfg = c.mqtt()
    with Backend(c.ledger, cfg) as be:
        seqs = be.connect().sync(box_id)
    out = _wait(c, cfg, box_id, seqs[-1], wait) if wait else None
    status = out.text if out else None
    n = len(c.ledger.box_set(c.ledger.db, box_id, int(time.time())))
    _out({"box": box_id, "codes": n, "commands": seqs, "result": status}, as_json,
         lambda: click.echo("Sync of %d codes sent to %s in %d commands%s." % (
             n, box_id, len(seqs), ": " + status if status else "")))
    _fail_if_refused(out, box_id, seqs[-1], "sync_end")


def register(main: click.Group) -> None:
    main.add_command(codes)
