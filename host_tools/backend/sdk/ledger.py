"""The backend's key registry and code ledger: one SQLite file.

Boxes and their keys, the codes issued (as keyed digests: a plain code is never
stored), the commands sent with their results, and every event received,
deduplicated on (box, seq). Several processes may share the file: every
read-modify-write runs in a BEGIN IMMEDIATE transaction, which SQLite
serialises across processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass

from host_tools.backend import crypto
from host_tools.backend import protocol as p
from host_tools.backend.sdk import mirror

SCHEMA = """
CREATE TABLE IF NOT EXISTS boxes (
    id TEXT PRIMARY KEY,
    box_key BLOB NOT NULL,
    wire_key BLOB,              -- NULL: the box key (no rotation yet)
    key_gen INTEGER NOT NULL DEFAULT 0,
    pending_key BLOB,           -- a rotation sent, its result not yet seen
    pending_seq INTEGER,
    rot_seq INTEGER,            -- the rotate command that made wire_key (its seq)...
    rot_first INTEGER,          -- ...and the first that carried that key (all between did)
    pending_first INTEGER,      -- the first rotate command that carried pending_key
    prev_key BLOB,              -- the wire key before the last rotation (late events)
    prev_below INTEGER,         -- ...which verifies only event seqs below this one
    compartments INTEGER NOT NULL,
    code_len INTEGER NOT NULL,
    cmd_seq INTEGER NOT NULL DEFAULT 0,
    next_code_id INTEGER NOT NULL DEFAULT 1,
    online INTEGER,
    status_at REAL,
    state TEXT,
    state_at REAL,
    created REAL NOT NULL,
    sync_id INTEGER,            -- the latest full sync sent (its sync_begin's seq)
    resync INTEGER NOT NULL DEFAULT 0,   -- 1: the box needs a full sync (mirror.note_result)
    resyncs INTEGER NOT NULL DEFAULT 0   -- automatic syncs sent since one took
);
CREATE TABLE IF NOT EXISTS codes (
    box TEXT NOT NULL REFERENCES boxes(id),
    id INTEGER NOT NULL,
    digest BLOB NOT NULL,
    role INTEGER NOT NULL,
    comp INTEGER NOT NULL,
    uses INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    status TEXT NOT NULL,       -- active, used, revoked
    issued REAL NOT NULL,
    cmd_seq INTEGER,            -- the add command that carried it (NULL: only by sync)
    uses_seq INTEGER NOT NULL DEFAULT 0,  -- seq of the event whose count set uses (mirror.py)
    gone INTEGER NOT NULL DEFAULT 0,   -- revoked, and the box confirmed it holds it no more
    PRIMARY KEY (box, id)
);
CREATE TABLE IF NOT EXISTS commands (
    box TEXT NOT NULL,
    seq INTEGER NOT NULL,
    op TEXT NOT NULL,
    body TEXT NOT NULL,
    sent REAL NOT NULL,
    status INTEGER,             -- result status (protocol section 5), NULL: none yet
    rejected INTEGER,           -- rejection reason, if the box refused it
    done REAL,
    PRIMARY KEY (box, seq)
);
CREATE TABLE IF NOT EXISTS events (
    box TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    comp INTEGER NOT NULL,
    code_id INTEGER NOT NULL,
    arg INTEGER NOT NULL,
    t INTEGER NOT NULL,
    received REAL NOT NULL,
    consumer TEXT NOT NULL,
    PRIMARY KEY (box, seq)
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (received);
-- a code's events, a command's result (mirror.py): not a scan of the box's whole history
CREATE INDEX IF NOT EXISTS events_by_code ON events (box, code_id);
CREATE INDEX IF NOT EXISTS commands_by_op ON commands (box, op, seq);
"""


# Columns added since the first ledgers: (table, column, declaration).
_ADDED = (("boxes", "prev_below", "INTEGER"), ("boxes", "sync_id", "INTEGER"),
          ("boxes", "rot_seq", "INTEGER"), ("boxes", "rot_first", "INTEGER"),
          ("boxes", "pending_first", "INTEGER"),
          ("boxes", "resync", "INTEGER NOT NULL DEFAULT 0"),
          ("boxes", "resyncs", "INTEGER NOT NULL DEFAULT 0"),
          ("codes", "gone", "INTEGER NOT NULL DEFAULT 0"),
          ("codes", "uses_seq", "INTEGER NOT NULL DEFAULT 0"))
# (A ledger made while owner uses were counted from events has a `spent` column in codes:
# nothing reads or writes it any more, and its default fills it on insert.)
# Automatic full syncs (after a sync_order, a sync undone, a code store failed closed) in a
# row without one taking; then the operator decides (`parcelbox codes sync`).
MAX_AUTO_SYNCS = 3


class LedgerError(ValueError):
    """A request the ledger refuses: unknown box, box exists, no such code, ..."""


@dataclass(frozen=True)
class BoxRow:
    id: str
    compartments: int
    code_len: int
    key_gen: int
    cmd_seq: int
    online: bool | None
    state: dict | None
    created: float


def mqtt_password(box_key: bytes) -> str:
    """The box's broker password, derived from its key (docs/protocol.md section 9)."""
    return crypto.derive(box_key, b"mqtt").hex()[:32]


class Ledger:
    def __init__(self, path: str | os.PathLike, create: bool = True):
        """Open the ledger at `path`; create=False: LedgerError if there is none (a reader
        with a mistyped path is told so, and no empty registry is left behind)."""
        self.path = str(path)
        new = not os.path.exists(self.path)
        if new and not create:
            raise LedgerError("no registry at %s (register a box with `parcelbox box add`, or "
                              "give --db or PARCELBOX_DB)" % self.path)
        if os.path.isdir(self.path):
            raise LedgerError("the registry %s is a folder: give a file (--db or PARCELBOX_DB)"
                              % self.path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if new and not os.path.isdir(folder):
            raise LedgerError("no folder %s for the registry %s" % (folder, self.path))
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                      check_same_thread=False)
            if new:
                os.chmod(self.path, 0o600)  # it holds box keys
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self.db.executescript(SCHEMA)
        except sqlite3.OperationalError as e:   # unreadable, read-only, locked
            raise LedgerError("cannot open the registry %s: %s" % (self.path, e)) from None
        except sqlite3.DatabaseError as e:   # not SQLite
            raise LedgerError("%s is not a parcelbox registry (%s)" % (self.path, e)) from None
        for table, col, decl in _ADDED:
            cols = [r[1] for r in self.db.execute("PRAGMA table_info(%s)" % table)]
            if col not in cols:  # a ledger made before the column existed
                try:
                    self.db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, col, decl))
                except sqlite3.OperationalError:  # another process added it first
                    pass

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self):
        """One write transaction, serialised across processes."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full, I/O error) may leave the transaction open, and
            # then every later BEGIN on this connection fails: end it, nothing was stored.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    # ---- boxes -------------------------------------------------------------

    def add_box(self, box_id: str, compartments: int = 1, code_len: int = 6) -> bytes:
        """Register a box; returns its new key (the caller shows it once or writes it to
        a provisioning file; the ledger keeps it for digests and MACs)."""
        try:
            p.check_box_id(box_id)
        except ValueError as e:
            raise LedgerError(str(e)) from None
        if not 1 <= compartments <= 32 or not 4 <= code_len <= 8:
            raise LedgerError("compartments must be 1..32 and code length 4..8")
        key = crypto.new_box_key()
        with self.tx() as db:
            if db.execute("SELECT 1 FROM boxes WHERE id=?", (box_id,)).fetchone():
                raise LedgerError("box %s is already registered" % box_id)
            db.execute("INSERT INTO boxes (id, box_key, compartments, code_len, created) "
                       "VALUES (?,?,?,?,?)", (box_id, key, compartments, code_len, time.time()))
        return key

    def box(self, box_id: str) -> BoxRow:
        r = self.db.execute("SELECT id, compartments, code_len, key_gen, cmd_seq, online, state, "
                            "created FROM boxes WHERE id=?", (box_id,)).fetchone()
        if r is None:
            raise LedgerError("no box %s in the registry" % box_id)
        return BoxRow(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else bool(r[5]),
                      json.loads(r[6]) if r[6] else None, r[7])

    def boxes(self) -> list[BoxRow]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM boxes ORDER BY id")]
        return [self.box(i) for i in ids]

    def box_key(self, box_id: str) -> bytes:
        r = self.db.execute("SELECT box_key FROM boxes WHERE id=?", (box_id,)).fetchone()
        if r is None:
            raise LedgerError("no box %s in the registry" % box_id)
        return r[0]

    def keys(self, box_id: str) -> list[p.WireKeys]:
        """Keys to verify a box's messages with: previous, current, pending (current
        is the one commands are sealed with)."""
        r = self.db.execute("SELECT box_key, prev_key, wire_key, pending_key FROM boxes "
                            "WHERE id=?", (box_id,)).fetchone()
        if r is None:
            raise LedgerError("no box %s in the registry" % box_id)
        out = [p.WireKeys.of(r[0], r[2])]
        if r[1]:
            out.insert(0, p.WireKeys.of(r[0], r[1]))
        if r[3]:
            out.append(p.WireKeys.of(r[0], r[3]))
        return out

    def may_verify(self, box_id: str, used: p.WireKeys, seq: int) -> bool:
        """Whether a message verified under `used` with event seq `seq` (a state summary:
        its next_seq - 1) is the box's: the key before the last rotation only for what the
        box sealed before it changed keys, seqs below the one that confirmed the rotation."""
        r = self.db.execute("SELECT box_key, prev_key, prev_below FROM boxes WHERE id=?",
                            (box_id,)).fetchone()
        if r is None or r[1] is None or p.WireKeys.of(r[0], r[1]) != used:
            return True
        return r[2] is not None and seq < r[2]

    def current_keys(self, box_id: str) -> p.WireKeys:
        r = self.db.execute("SELECT box_key, wire_key FROM boxes WHERE id=?", (box_id,)).fetchone()
        if r is None:
            raise LedgerError("no box %s in the registry" % box_id)
        return p.WireKeys.of(r[0], r[1])

    # ---- commands ----------------------------------------------------------

    def next_command(self, db, box_id: str, op: str, **fields) -> tuple[int, str, bytes]:
        """Inside a tx: take the box's next command seq, record and seal the command."""
        r = db.execute("UPDATE boxes SET cmd_seq = cmd_seq + 1 WHERE id=? RETURNING cmd_seq",
                       (box_id,)).fetchone()
        if r is None:
            raise LedgerError("no box %s in the registry" % box_id)
        seq = r[0]
        t, payload = p.command(self.current_keys(box_id), box_id, seq, op, **fields)
        # the body holds digests and ids only, never a code; a rotation's wrapped key
        # is stored only as the pending key column, not in the body log
        body = "(wrapped key)" if op == "rotate" else payload[65:].decode()
        db.execute("INSERT INTO commands (box, seq, op, body, sent) VALUES (?,?,?,?,?)",
                   (box_id, seq, op, body, time.time()))
        return seq, t, payload

    def command_outcome(self, box_id: str, seq: int) -> tuple[int | None, int | None]:
        """(status, rejection reason) of a command; (None, None) while unanswered."""
        r = self.db.execute("SELECT status, rejected FROM commands WHERE box=? AND seq=?",
                            (box_id, seq)).fetchone()
        if r is None:
            raise LedgerError("no command %d for box %s" % (seq, box_id))
        return r[0], r[1]

    def command_body(self, box_id: str, seq: int) -> dict:
        """The body of a command as sent (digests and ids only; {} for a rotation)."""
        r = self.db.execute("SELECT body FROM commands WHERE box=? AND seq=?",
                            (box_id, seq)).fetchone()
        if r is None:
            raise LedgerError("no command %d for box %s" % (seq, box_id))
        return json.loads(r[0]) if r[0].startswith("{") else {}

    def last_refused(self, box_id: str) -> dict | None:
        """The newest command the box refused (rejected, or answered with a status other
        than ok; unknown_code, a revoke's 'not here', is no refusal): seq, op, and the
        status or rejection reason by name."""
        r = self.db.execute("SELECT seq, op, status, rejected FROM commands WHERE box=? AND "
                            "(rejected IS NOT NULL OR status&255 NOT IN (0, 1)) "
                            "ORDER BY seq DESC LIMIT 1",
                            (box_id,)).fetchone()
        if r is None:
            return None
        out = {"seq": r[0], "op": r[1]}
        if r[2] is not None:
            out["status"] = p.STATUS[r[2] & 0xFF] if (r[2] & 0xFF) < len(p.STATUS) else str(r[2])
        else:
            out["rejected"] = p.REJECT[r[3]] if r[3] < len(p.REJECT) else str(r[3])
        return out

    # ---- full syncs --------------------------------------------------------

    def sync_commands(self, db, box_id: str, now: float, auto: bool = False) -> list:
        """Inside a tx: record a full sync of the ledger's set, (seq, topic, payload) for
        sync_begin, its parts and sync_end. Its sync id is sync_begin's seq: the box drops a
        staged sync when an add or revoke with a higher seq comes before its end, since the
        set was taken before that command. `auto`: sent by a consumer (counted against
        MAX_AUTO_SYNCS); an operator's sync starts that count again."""
        codes = self.box_set(db, box_id, int(now))
        parts = [codes[i:i + p.SYNC_PART] for i in range(0, len(codes), p.SYNC_PART)]
        r = db.execute("SELECT cmd_seq + 1 FROM boxes WHERE id=?", (box_id,)).fetchone()
        if r is None:
            raise LedgerError("no box %s in the registry" % box_id)
        sid = r[0]
        msgs = [self.next_command(db, box_id, "sync_begin", sync=sid, count=len(codes),
                                  digest=p.set_digest(codes).hex())]
        for k, part in enumerate(parts):
            msgs.append(self.next_command(db, box_id, "sync_part", sync=sid, part=k, codes=part))
        msgs.append(self.next_command(db, box_id, "sync_end", sync=sid, parts=len(parts)))
        db.execute("UPDATE boxes SET sync_id=?, resync=0, resyncs=%s WHERE id=?"
                   % ("resyncs + 1" if auto else "0"), (sid, box_id))
        return msgs

    def take_resync(self, box_id: str, now: float | None = None) -> list | None:
        """A full sync the box needs (mirror.note_result flagged it), recorded now: its
        messages for the caller to publish; [] if none is due; None if MAX_AUTO_SYNCS in a
        row did not take (left to the operator, `box status` says so)."""
        r = self.db.execute("SELECT resync FROM boxes WHERE id=?", (box_id,)).fetchone()
        if r is None or not r[0]:
            return []  # nearly always: a read, not a write transaction
        with self.tx() as db:
            r = db.execute("SELECT resync, resyncs FROM boxes WHERE id=?", (box_id,)).fetchone()
            if not r[0]:
                return []
            if r[1] >= MAX_AUTO_SYNCS:
                return None
            return self.sync_commands(db, box_id, time.time() if now is None else now, auto=True)

    def sync_due(self, box_id: str) -> bool:
        r = self.db.execute("SELECT resync FROM boxes WHERE id=?", (box_id,)).fetchone()
        return bool(r and r[0])

    # ---- codes -------------------------------------------------------------

    def new_code(self, db, box_id: str, role: int, comp: int, uses: int, not_before: int,
                 not_after: int, now: float) -> tuple[str, list]:
        """Inside a tx: a fresh random code whose digest no code that may still be in the
        box has, recorded as active; returns (code, wire array). A revoked code may still be
        there until the box confirms it gone (mirror.may_hold): its value is not issued
        again before then. Its window over for a day also frees it (the box sweeps)."""
        b = self.box(box_id)
        if comp > b.compartments:
            raise LedgerError("box %s has %d compartments" % (box_id, b.compartments))
        keys = self.current_keys(box_id)
        taken = {r[0] for r in db.execute(
            "SELECT digest FROM codes WHERE box=? AND status!='revoked' "
            "AND (not_after=0 OR not_after>=?)", (box_id, int(now) - 86400))}
        taken |= {d for _, d in mirror.unconfirmed_revokes(db, box_id, now)}
        for _ in range(10000):  # all but hopeless within a few (10^code_len values)
            code = crypto.new_code(b.code_len)
            digest = p.code_digest(keys.code, code)
            if digest not in taken:
                break
        else:
            raise LedgerError("box %s: no free code value found (%d taken)" % (box_id, len(taken)))
        code_id = db.execute("UPDATE boxes SET next_code_id = next_code_id + 1 WHERE id=? "
                             "RETURNING next_code_id - 1", (box_id,)).fetchone()[0]
        arr = p.code_array(code_id, digest, role, comp, uses, not_before, not_after)
        db.execute("INSERT INTO codes (box, id, digest, role, comp, uses, not_before, not_after, "
                   "status, issued) VALUES (?,?,?,?,?,?,?,?,'active',?)",
                   (box_id, code_id, digest, role, comp, uses, not_before, not_after, now))
        return code, arr

    def codes(self, box_id: str, include_revoked: bool = False) -> list[dict]:
        q = ("SELECT id, role, comp, uses, not_before, not_after, status, issued FROM codes "
             "WHERE box=?" + ("" if include_revoked else " AND status!='revoked'") + " ORDER BY id")
        return [dict(zip(("id", "role", "comp", "uses", "not_before", "not_after", "status",
                          "issued"), r)) for r in self.db.execute(q, (box_id,))]

    def box_set(self, db, box_id: str, at: int | None = None, used: bool = False) -> list[list]:
        """Wire arrays of the codes a sync gives the box: not revoked, not used up (with
        `used`, also those: the box keeps a used-up code until it expires or is revoked,
        with uses 0, which a sync cannot carry) and, with `at`, not expired then."""
        q = ("SELECT id, digest, role, comp, uses, not_before, not_after FROM codes "
             "WHERE box=? AND status " + ("IN ('active', 'used')" if used else "= 'active'"))
        args: tuple = (box_id,)
        if at is not None:
            q += " AND (not_after=0 OR not_after>=?)"
            args += (at,)
        # the set digest leaves uses out, so a used-up code may stand with uses 1
        return [p.code_array(*r[:4], max(r[4], 1), *r[5:]) for r in db.execute(q + " ORDER BY id", args)]

    def in_sync(self, box_id: str) -> bool | None:
        """Whether the box's last state summary shows the set the ledger expects (None:
        no summary yet). The box sweeps expired codes hourly and keeps used-up codes
        until a sync, so the set with or without either matches."""
        st = self.box(box_id).state
        if not st:
            return None
        at = st["t"] or None
        return st["digest"] in {p.set_digest(self.box_set(self.db, box_id, t, used)).hex()
                                for t in (None, at) for used in (False, True)}

    # ---- events ------------------------------------------------------------

    def record_event(self, ev: p.Event, consumer: str, handler=None) -> bool:
        """Store an event once; False if (box, seq) was already stored. Its effects on
        the ledger (code used, command result, key promoted) and `handler(db, ev)` run
        in the same transaction, so they happen exactly once."""
        with self.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?)",
                             (ev.box, ev.seq, ev.type, ev.comp, ev.id, ev.arg, ev.t,
                              time.time(), consumer))
            if cur.rowcount == 0:
                return False
            self._apply(db, ev)
            if handler is not None:
                handler(db, ev)
        return True

    def _apply(self, db, ev: p.Event) -> None:
        if ev.type in ("opened", "not_opened"):
            mirror.mirror_use(db, ev)  # the uses left it carries; a pickup or deposit: none
        elif ev.type == "store_corrupt":
            if ev.arg & 0xFF == 1 and (ev.arg >> 8) & p.CODES_FAILED_CLOSED:
                mirror.flag_resync(db, ev.box)  # the box's code store is empty until then
        elif ev.type == "result":
            db.execute("UPDATE commands SET status=?, done=? WHERE box=? AND seq=?",
                       (ev.arg & 0xFF, time.time(), ev.box, ev.id))
            if ev.comp == p.OPS.index("rotate") and ev.arg & 0xFF == 0:
                # every event sealed under the old key was written before this result
                db.execute("UPDATE boxes SET prev_key=coalesce(wire_key, box_key), prev_below=?, "
                           "wire_key=pending_key, rot_seq=pending_seq, rot_first=pending_first, "
                           "pending_key=NULL, pending_seq=NULL, key_gen=key_gen+1 "
                           "WHERE id=? AND pending_seq=?",
                           (ev.seq, ev.box, ev.id))
            elif ev.comp == p.OPS.index("rotate"):
                # any other status: the box kept its key (bad_value, flash); the seq is
                # used, so that command can never apply: a new rotation may start
                db.execute("UPDATE boxes SET pending_key=NULL, pending_seq=NULL "
                           "WHERE id=? AND pending_seq=?", (ev.box, ev.id))
            mirror.note_result(db, ev)
        elif ev.type == "rejected" and ev.id:
            db.execute("UPDATE commands SET rejected=?, done=? WHERE box=? AND seq=? "
                       "AND status IS NULL", (ev.arg & 0xFF, time.time(), ev.box, ev.id))

    def confirm_key(self, box_id: str, used: p.WireKeys, below: int = 0) -> bool:
        """A message verified under the pending rotation's key: the box has that key
        (its result may have been lost to a power cut), so it becomes the current one.
        `below`: the message's event seq (a state summary: its next_seq); the old key
        then verifies only seqs below it (a late one above is refused, unacked, and
        comes again under the new key)."""
        # no rotation pending (nearly always): a read, not a write transaction per message
        r = self.db.execute("SELECT pending_key FROM boxes WHERE id=?", (box_id,)).fetchone()
        if r is None or r[0] is None:
            return False
        with self.tx() as db:
            r = db.execute("SELECT box_key, pending_key FROM boxes WHERE id=?", (box_id,)).fetchone()
            if r is None or r[1] is None or p.WireKeys.of(r[0], r[1]) != used:
                return False
            db.execute("UPDATE boxes SET prev_key=coalesce(wire_key, box_key), prev_below=?, "
                       "wire_key=pending_key, rot_seq=pending_seq, rot_first=pending_first, "
                       "pending_key=NULL, pending_seq=NULL, key_gen=key_gen+1 WHERE id=?",
                       (below, box_id))
        return True

    def fall_back_to_box_key(self, box_id: str, payload_state: bytes) -> dict | None:
        """A box that lost its saved wire key (both copies) falls back to its box key,
        key_gen 0 (docs/protocol.md section 5.9). If the ledger has rotated, nothing the
        box now sends verifies; its state summary does under the box key, says key_gen 0,
        and then the ledger falls back too, so the backend can talk to the box and rotate
        again. Only the box key verifies such a summary: holding it is owning the box.
        A summary the box sealed before it applied the rotation (late, or published
        again) says key_gen 0 too, but its cmd_seq is below that rotation's seq: a box that
        lost the key had applied the rotate command, so its window is at or above it.
        Taking such a summary would drop the key the box holds, and the two would never
        hear each other again. Returns the summary, or None when it does not verify that
        way."""
        with self.tx() as db:
            r = db.execute("SELECT box_key, key_gen, rot_seq, state, rot_first FROM boxes "
                           "WHERE id=?", (box_id,)).fetchone()
            if r is None or r[1] == 0:
                return None
            gen0 = p.WireKeys.of(r[0])
            try:
                state, _ = p.parse_state([gen0], box_id, payload_state)
            except p.ProtocolError:
                return None
            if state["key_gen"] != 0:
                return None
            # The box must have accepted one of the rotate commands that carried the key
            # (the SDK sends a pending key again under a new seq until one is answered).
            rots = [q[0] for q in db.execute(
                "SELECT seq FROM commands WHERE box=? AND op='rotate' AND seq BETWEEN ? AND ?",
                (box_id, r[4] or r[2] or 0, r[2] or 0))] if r[2] else []
            if rots and all(p.window_saw(state, q) is False for q in rots):
                return None
            # A box falls back at a boot, after every seq the ledger has heard of (its boot
            # event at least is newer); a summary at or below one is an old one, late (a
            # rotate delivered out of order can pass the cmd_seq test above).
            heard = db.execute("SELECT max(seq) FROM events WHERE box=?", (box_id,)).fetchone()[0]
            last = json.loads(r[3]).get("next_seq", 1) - 1 if r[3] else 0
            if state["next_seq"] - 1 <= max(heard or 0, last):
                return None
            db.execute("UPDATE boxes SET prev_key=NULL, prev_below=NULL, wire_key=NULL, "
                       "pending_key=NULL, pending_seq=NULL, rot_seq=NULL, rot_first=NULL, "
                       "pending_first=NULL, key_gen=0 "
                       "WHERE id=?", (box_id,))
        return state

    def events(self, box_id: str | None = None, after: float = 0, limit: int = 1000) -> list[p.Event]:
        q = "SELECT box, seq, type, comp, code_id, arg, t FROM events WHERE received>?"
        args: tuple = (after,)
        if box_id:
            q += " AND box=?"
            args += (box_id,)
        rows = self.db.execute(q + " ORDER BY received, box, seq LIMIT ?", args + (limit,))
        return [p.Event(*r) for r in rows]

    def latest_events(self, box_id: str | None = None, limit: int = 100) -> list[p.Event]:
        """The `limit` events stored last, in the boxes' own order: by box, then seq (events
        arrive in any order: after an outage the older ones come late)."""
        q = "SELECT box, seq, type, comp, code_id, arg, t FROM events"
        args: tuple = ()
        if box_id:
            q += " WHERE box=?"
            args = (box_id,)
        rows = self.db.execute("SELECT * FROM (%s ORDER BY received DESC, box DESC, seq DESC "
                               "LIMIT ?) ORDER BY box, seq" % q, args + (limit,))
        return [p.Event(*r) for r in rows]

    def set_status(self, box_id: str, online: bool) -> None:
        with self.tx() as db:
            db.execute("UPDATE boxes SET online=?, status_at=? WHERE id=?",
                       (int(online), time.time(), box_id))

    def set_state(self, box_id: str, state: dict) -> None:
        """Keep the box's summary; its cmd_seq (the highest command it accepted) moves a
        counter that lags (a ledger restored from a backup) past it, as protocol.md
        section 8 says: seqs at or below it would be refused as replayed."""
        with self.tx() as db:
            db.execute("UPDATE boxes SET state=?, state_at=?, cmd_seq=max(cmd_seq, ?) WHERE id=?",
                       (json.dumps(state), time.time(), int(state.get("cmd_seq", 0)), box_id))
