"""How the ledger follows what a box holds, from its events: the uses its codes have left,
whether a revoked code may still be on it, and when it needs a full sync again.

Rules over the ledger's tables (events, commands, codes, boxes), each run inside the
caller's transaction. Events reach the ledger in any order (consumers share them, the box
sends again), so every rule reads what is stored, by the box's own event order (seq), and
gives the same answer whatever order they came in. docs/sdk.md section 5.
"""

from __future__ import annotations

import json

from host_tools.backend import protocol as p

REMOTE = 5  # an `opened` by a remote unlock: its id is the command's seq, not a code's
UNLIMITED = p.UNLIMITED
ADD, REVOKE, SYNC_END = p.OPS.index("add"), p.OPS.index("revoke"), p.OPS.index("sync_end")
OK, UNKNOWN_CODE, SYNC_ORDER = 0, 1, p.STATUS.index("sync_order")
# A command seq more than this below the box's newest accepted one is refused (stale):
# a command that far behind can never apply any more (docs/protocol.md section 5).
WINDOW = 32
# A revoke not yet confirmed goes again before the next add, at most this often (doubling
# with each try): the box may be offline with its commands queued on the broker.
RESEND_S = 60
DAY = 86400


# ---- uses --------------------------------------------------------------------------------

def uses_left(ev: p.Event) -> int | None:
    """The uses the event's code has on the box right after it, as the box reports them in
    arg bits 8-23 of `opened` and `not_opened` (docs/protocol.md section 6, "Uses left");
    None when there is nothing to count (0xFFFF: an unlimited code, a remote unlock,
    service mode, a code no longer stored) or the event carries no count."""
    if ev.type not in ("opened", "not_opened"):
        return None
    if ev.type == "opened" and ev.arg & 0xFF == REMOTE:
        return None  # its id is a command seq, which may equal a code's id
    left = (ev.arg >> 8) & 0xFFFF
    return None if left == UNLIMITED else left


def mirror_use(db, ev: p.Event) -> None:
    """A code's uses in the ledger are the box's: the count of its `opened` or `not_opened`
    event with the highest seq that carries one (uses_seq keeps that seq, so an older event
    arriving later changes nothing). Its status follows (used at 0, active above) unless
    it is revoked: a count never brings a revoked code back. Pickups and deposits change
    nothing: the `opened` before them carried the count after the use was spent."""
    left = uses_left(ev)
    if left is None:
        return
    db.execute("UPDATE codes SET uses=?, uses_seq=?, status=CASE WHEN status IN ('active', "
               "'used') THEN (CASE WHEN ?=0 THEN 'used' ELSE 'active' END) ELSE status END "
               "WHERE box=? AND id=? AND uses_seq<?", (left, ev.seq, left, ev.box, ev.id, ev.seq))


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
    sync counts: a newer one carries whatever an older one missed. An add or revoke
    delivered after a newer one was applied is refused with sync_order (it could undo
    that one): sync too."""
    st = ev.arg & 0xFF
    if ev.comp in (ADD, REVOKE) and st == SYNC_ORDER:
        flag_resync(db, ev.box)  # delivered after a newer add or revoke: the box refused it
        return
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
