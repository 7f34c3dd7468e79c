"""How the ledger follows what a box holds, from its events: the uses its codes spend,
whether a revoked code may still be on it, and when it needs a full sync again.

Rules over the ledger's tables (events, commands, codes, boxes), each run inside the
caller's transaction. Events reach the ledger in any order (consumers share them, the box
sends again), so every rule reads what is stored, by the box's own event order (seq), and
gives the same answer whatever order they came in. docs/sdk.md section 5.
"""

from __future__ import annotations

import json

from host_tools import protocol as p

OWNER, REMOTE = p.ROLES["owner"], 5
UNLIMITED = p.UNLIMITED
ADD, REVOKE, SYNC_END = p.OPS.index("add"), p.OPS.index("revoke"), p.OPS.index("sync_end")
OK, UNKNOWN_CODE, SYNC_ORDER = 0, 1, p.STATUS.index("sync_order")
# Every compartment one use unlocks opens (or is given up) within one open window of the
# accept, two when its pulse waits for a cool-down; the box allows a window of 600 s at most.
USE_SPAN_S = 1200
# A command seq more than this below the box's newest accepted one is refused (stale):
# a command that far behind can never apply any more (docs/protocol.md section 5).
WINDOW = 32
# A revoke not yet confirmed goes again before the next add, at most this often (doubling
# with each try): the box may be offline with its commands queued on the broker.
RESEND_S = 60
DAY = 86400


# ---- uses --------------------------------------------------------------------------------

def owner_uses_spent(rows) -> int:
    """The uses an owner code has spent on the box, from its events (seq, type, comp, arg,
    t) in seq order: opened and closed with arg owner, and its not_opened.

    The box spends one use when it accepts the code (box.py _accept), for every compartment
    it unlocks at once: one for its own compartment, all those locked at that moment for
    an owner code for all doors. No event marks the accept. Each compartment then tells
    how its grant ended: `opened` (and `closed`), or `not_opened` (arg 0: the window
    passed; the use comes back only if it unlocked that compartment alone, never when
    shared; arg 1: found closed at boot, spent; arg 3: the cut came before it was spent).

    So, per compartment, a grant is one opened..closed (an `opened` repeated at boot for a
    door found open, or a `not_opened` arg 1 at boot after the door had opened, is the same
    grant), or one not_opened. Grants are gathered into uses in seq order: one use never
    grants a compartment twice, so a grant on a compartment the current use already has
    begins the next use, and so does one more than USE_SPAN_S after the use's first. A use
    counts once if any of its compartments opened or stayed spent, or if two or more were
    given up (a shared use is not given back); a lone grant that was not opened (arg 0)
    was given back by the box. Where it can be wrong: a use that could not unlock every
    compartment (one was busy), followed within USE_SPAN_S by another that opened only
    the others, counts as one: a use the box spent that the ledger does not show."""
    live = set()   # compartments whose grant opened and has not closed yet
    use: dict = {}  # compartment: how its grant in the use being gathered went
    first_t = 0
    spent = 0
    for _seq, kind, comp, arg, t in rows:
        if kind == "opened":
            if comp in live:
                continue
            live.add(comp)
            how = "opened"
        elif kind == "closed":
            if comp in live:
                live.discard(comp)
                continue
            how = "opened"  # its `opened` was lost (an outbox overflow): the door did open
        else:  # not_opened
            if comp in live:
                live.discard(comp)
                continue
            if arg & 2:
                continue  # cut before the use was spent: the code still has it
            how = "spent" if arg & 1 else "back"
        if comp in use or (t and first_t and abs(t - first_t) > USE_SPAN_S):
            spent += _counts(use)
            use, first_t = {}, 0
        use[comp] = how
        first_t = first_t or t
    return spent + _counts(use)


def _counts(use: dict) -> int:
    hows = list(use.values())
    return int("opened" in hows or "spent" in hows or hows.count("back") >= 2)


def _code(db, box_id, code_id):
    return db.execute("SELECT role, comp, uses, spent, status FROM codes WHERE box=? AND id=?",
                      (box_id, code_id)).fetchone()


def _remote_grant(db, ev: p.Event) -> bool:
    """Whether a not_opened is a remote unlock's (its id is then the command's seq, which
    may equal a code id): an `unlock` of that compartment with that seq whose result is
    not yet stored, or was ok with no other grant of the compartment ended between."""
    k = db.execute("SELECT 1 FROM commands WHERE box=? AND seq=? AND op='unlock' "
                   "AND json_extract(body, '$.comp')=?", (ev.box, ev.id, ev.comp)).fetchone()
    if k is None:
        return False
    r = db.execute("SELECT seq, arg FROM events WHERE box=? AND type='result' AND code_id=? "
                   "AND comp=?", (ev.box, ev.id, p.OPS.index("unlock"))).fetchone()
    if r is None:
        return True
    if r[1] & 0xFF != OK or r[0] > ev.seq:
        return False
    between = db.execute("SELECT 1 FROM events WHERE box=? AND comp=? AND seq>? AND seq<? AND "
                         "type IN ('closed', 'not_opened')", (ev.box, ev.comp, r[0], ev.seq))
    return between.fetchone() is None


def mirror_use(db, ev: p.Event) -> None:
    """A use the box spent, in the ledger. Recipients and drivers spend theirs with the
    pickup or deposit that ends their grant (the caller's), or with a not_opened arg 1
    (found closed at boot: no deposit or pickup follows, the use stays spent). Owner codes
    are recounted from all their events (owner_uses_spent). A remote unlock has no use;
    a technician's service mode spends none."""
    if ev.type in ("opened", "closed") and ev.arg != OWNER:
        return
    row = _code(db, ev.box, ev.id)
    if row is None or row[0] not in (1, 2, OWNER) or row[1] not in (0, ev.comp):
        return
    if ev.type == "not_opened" and _remote_grant(db, ev):
        return
    if row[0] != OWNER:
        if ev.type == "not_opened" and ev.arg & 3 == 1:
            spend(db, ev.box, ev.id)
        return
    if row[2] == UNLIMITED:
        return
    rows = []
    for r in db.execute("SELECT seq, type, comp, arg, t, code_id FROM events WHERE box=? AND "
                        "code_id=? AND ((type IN ('opened', 'closed') AND arg=?) OR "
                        "type='not_opened') ORDER BY seq", (ev.box, ev.id, OWNER)).fetchall():
        if r[1] == "not_opened" and (row[1] not in (0, r[2]) or _remote_grant(
                db, p.Event(ev.box, r[0], r[1], r[2], r[5], r[3], r[4]))):
            continue
        rows.append(r[:5])
    uses, was = row[2], row[3]
    issued = uses + was  # uses + spent stays what was issued: never count more than that
    now = min(owner_uses_spent(rows), issued)
    if now != was:
        db.execute("UPDATE codes SET uses=?, spent=?, status=CASE WHEN status IN ('active', "
                   "'used') THEN (CASE WHEN ?=0 THEN 'used' ELSE 'active' END) ELSE status END "
                   "WHERE box=? AND id=?", (issued - now, now, issued - now, ev.box, ev.id))


def spend(db, box_id: str, code_id: int) -> None:
    db.execute("UPDATE codes SET uses = CASE WHEN uses=65535 THEN uses ELSE max(uses-1,0) END "
               "WHERE box=? AND id=?", (box_id, code_id))
    db.execute("UPDATE codes SET status='used' WHERE box=? AND id=? AND uses=0 "
               "AND status='active'", (box_id, code_id))


# ---- revoked codes -----------------------------------------------------------------------

def _top(db, box_id) -> int:
    """The highest command seq the box accepted, as its last state summary said."""
    r = db.execute("SELECT state FROM boxes WHERE id=?", (box_id,)).fetchone()
    return int(json.loads(r[0]).get("cmd_seq", 0)) if r and r[0] else 0


def may_hold(db, box_id: str, code_id: int, add_seq: int | None, top: int) -> bool:
    """Whether a code revoked in the ledger may still be on the box. It is gone once the box
    confirmed a removal (a revoke answered ok or unknown_code, or a sync taken after the
    revoke ended ok) later, in the box's event order, than anything that put it there (its
    add answered ok, a sync taken between its add and the revoke ended ok), and nothing
    that could put it there again is still on its way: its add or such a sync's end
    unanswered and not yet beyond the box's window (`top`: the box's newest accepted seq)."""
    r0 = db.execute("SELECT min(seq) FROM commands WHERE box=? AND op='revoke' AND "
                    "json_extract(body, '$.id')=?", (box_id, code_id)).fetchone()[0]
    if r0 is None:
        return True  # revoked in the ledger, never told to the box
    low = add_seq or 0
    # the commands first (few), then each one's result by its seq (events_by_code)
    res = ("SELECT max(e.seq) FROM commands k CROSS JOIN events e ON e.box=k.box AND "
           "e.code_id=k.seq AND e.type='result' WHERE k.box=? AND ")
    removed = max(db.execute(res + "k.op='revoke' AND json_extract(k.body, '$.id')=? AND "
                             "(e.arg & 255) IN (0, 1)", (box_id, code_id)).fetchone()[0] or 0,
                  db.execute(res + "k.op='sync_end' AND k.seq>? AND (e.arg & 255)=0 AND "
                             "json_extract(k.body, '$.sync')>?", (box_id, r0, r0)).fetchone()[0] or 0)
    if not removed:
        return True
    put = max(db.execute(res + "k.op='add' AND k.seq=? AND (e.arg & 255)=0",
                         (box_id, add_seq or -1)).fetchone()[0] or 0,
              db.execute(res + "k.op='sync_end' AND k.seq>? AND (e.arg & 255)=0 AND "
                         "json_extract(k.body, '$.sync') BETWEEN ? AND ?",
                         (box_id, low, low, r0)).fetchone()[0] or 0) or None
    if put is not None and put > removed:
        return True
    coming = db.execute("SELECT 1 FROM commands WHERE box=? AND status IS NULL AND rejected IS NULL "
                        "AND seq>=? AND ((op='add' AND seq=?) OR (op='sync_end' AND seq>? AND "
                        "json_extract(body, '$.sync') BETWEEN ? AND ?)) LIMIT 1",
                        (box_id, top - WINDOW, add_seq or -1, low, low, r0)).fetchone()
    return coming is not None


def unconfirmed_revokes(db, box_id: str, now: float) -> list[tuple[int, bytes]]:
    """(id, digest) of the revoked codes that may still be on the box (may_hold), among
    those whose window has not been over for a day (the box sweeps expired codes). The
    others are marked gone: that holds for good, since nothing can bring them back."""
    top = _top(db, box_id)
    out = []
    for cid, digest, add_seq in db.execute(
            "SELECT id, digest, cmd_seq FROM codes WHERE box=? AND status='revoked' AND gone=0 "
            "AND (not_after=0 OR not_after>=?)", (box_id, int(now) - DAY)).fetchall():
        if may_hold(db, box_id, cid, add_seq, top):
            out.append((cid, digest))
        else:
            db.execute("UPDATE codes SET gone=1 WHERE box=? AND id=?", (box_id, cid))
    return out


def revokes_due(db, box_id: str, now: float, pending) -> list[int]:
    """Of `pending` (unconfirmed_revokes), the codes whose revoke should go again now: its
    last one was sent RESEND_S ago or more, doubled for each one sent before (at most a
    day), so a box that is offline for long does not get a queue of them."""
    out = []
    for cid, _ in pending:
        n, last = db.execute("SELECT count(*), max(sent) FROM commands WHERE box=? AND "
                             "op='revoke' AND json_extract(body, '$.id')=?",
                             (box_id, cid)).fetchone()
        if not n or now - last >= min(RESEND_S * 2 ** min(n - 1, 20), DAY):
            out.append(cid)
    return out


# ---- full syncs --------------------------------------------------------------------------

def _sync_of(db, box_id, seq):
    r = db.execute("SELECT json_extract(body, '$.sync') FROM commands WHERE box=? AND seq=? "
                   "AND op='sync_end'", (box_id, seq)).fetchone()
    return r[0] if r else None


def note_result(db, ev: p.Event) -> None:
    """After a command's result: flag the box for a full sync where the last one failed
    or did not take. The box drops a staged sync when an add or revoke newer than the
    sync arrives before its end, which then answers sync_order: sync again. An add or
    revoke newer than the sync that the box applied before the sync's end, yet answered
    ok (a box before that rule, or one that got the add before the sync_begin), was undone
    by the sync (the add wiped, the revoked code back): sync again too. Only the latest
    sync counts: a newer one carries whatever an older one missed."""
    st = ev.arg & 0xFF
    latest = db.execute("SELECT sync_id FROM boxes WHERE id=?", (ev.box,)).fetchone()
    latest = latest[0] if latest else None
    if latest is None:
        return
    if ev.comp == SYNC_END and _sync_of(db, ev.box, ev.id) == latest:
        if st == SYNC_ORDER:
            flag_resync(db, ev.box)
        elif st == OK:
            raced = db.execute(
                "SELECT 1 FROM commands k CROSS JOIN events e ON e.box=k.box AND e.code_id=k.seq "
                "AND e.type='result' WHERE k.box=? AND k.seq>? AND k.op IN ('add', 'revoke') "
                "AND e.comp IN (?, ?) AND (e.arg & 255)=0 AND e.seq<? LIMIT 1",
                (ev.box, latest, ADD, REVOKE, ev.seq)).fetchone()
            if raced:
                flag_resync(db, ev.box)
            else:
                db.execute("UPDATE boxes SET resyncs=0 WHERE id=?", (ev.box,))
    elif ev.comp in (ADD, REVOKE) and st == OK and ev.id > latest:
        undone = db.execute(
            "SELECT 1 FROM commands k CROSS JOIN events e ON e.box=k.box AND e.code_id=k.seq "
            "AND e.type='result' WHERE k.box=? AND k.seq>? AND k.op='sync_end' AND "
            "json_extract(k.body, '$.sync')=? AND e.comp=? AND (e.arg & 255)=0 AND e.seq>? "
            "LIMIT 1", (ev.box, latest, latest, SYNC_END, ev.seq)).fetchone()
        if undone:
            flag_resync(db, ev.box)


def flag_resync(db, box_id: str) -> None:
    db.execute("UPDATE boxes SET resync=1 WHERE id=?", (box_id,))
