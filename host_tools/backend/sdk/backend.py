"""The backend SDK: send authenticated commands to boxes, and consume their events.

`Backend` registers boxes, issues and revokes codes, syncs, unlocks; every command
is recorded in the ledger before it is published. `Consumer` receives events on a
shared subscription (any number of consumers split them), stores each once, and
acks it to the box only after it is stored.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as paho

from host_tools.backend import protocol as p
from host_tools.backend.sdk import mirror, mqtt
from host_tools.backend.sdk.ledger import MAX_AUTO_SYNCS, Ledger, LedgerError, mqtt_password

log = logging.getLogger("parcelbox.sdk")

GROUP = "parcelbox"
# A one-shot command (unlock, clear_throttle) acts when it arrives, so it carries a short
# expiry: one held back by the broker while the box is offline, or captured and replayed
# later, is refused (`expired`). The box refuses one without an expiry, or with one more
# than a day ahead of its clock (`no_exp`), and any time-bounded command while it has no
# trusted time (`no_clock`).
DEFAULT_ONESHOT_EXP = 120
# A box's clock slack (its summary's `slack`, docs/protocol.md section 8) above this is
# answered with a `time`; below, it is the few seconds such an answer leaves.
SLACK_ANSWERED = 60
MAX_ONESHOT_EXP = 86400


def oneshot_exp(expires_in: int | None, now: float | None = None) -> int:
    """The `exp` of a one-shot command: now + expires_in seconds (default
    DEFAULT_ONESHOT_EXP); ValueError unless 1..MAX_ONESHOT_EXP."""
    if expires_in is None:
        expires_in = DEFAULT_ONESHOT_EXP
    if type(expires_in) is not int or not 1 <= expires_in <= MAX_ONESHOT_EXP:
        raise ValueError("expires_in must be whole seconds, 1 to %d (a day)" % MAX_ONESHOT_EXP)
    return int(time.time() if now is None else now) + expires_in


@dataclass(frozen=True)
class Issued:
    """A freshly issued code: show `code` to its holder once; the ledger has only its digest."""

    box: str
    code_id: int
    code: str
    cmd_seq: int
    sent: bool

    def __repr__(self) -> str:  # never print the code by accident
        return "Issued(box=%r, code_id=%d, cmd_seq=%d, sent=%r)" % (
            self.box, self.code_id, self.cmd_seq, self.sent)


class Backend:
    def __init__(self, ledger: Ledger, cfg: mqtt.MqttConfig | None = None,
                 client_id: str | None = None):
        self.ledger = ledger
        self.cfg = cfg
        self._client_id = client_id or (cfg.username if cfg and cfg.username else
                                        "backend-" + secrets.token_hex(4))
        self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._c is not None:
            self._c.disconnect()
            self._c.loop_stop()
            self._c = None

    def connect(self) -> "Backend":
        """Connect now (else at the first command): BrokerError before anything is stored."""
        self._client()
        return self

    def _client(self):
        if self.cfg is None:
            raise mqtt.BrokerError("no broker configured")
        if self._c is None:
            c = mqtt.client(self.cfg, self._client_id, clean_session=True)
            mqtt.connect(c, self.cfg)
            self._c = c
        return self._c

    # ---- registry ----------------------------------------------------------

    def register(self, box_id: str, compartments: int = 1, code_len: int = 6) -> dict:
        """Register a box. Returns its provisioning record (box id, key, broker password):
        write it to the box and nowhere else."""
        key = self.ledger.add_box(box_id, compartments, code_len)
        rec = {"box_id": box_id, "box_key": key.hex(), "mqtt_username": box_id,
               "mqtt_password": mqtt_password(key), "compartments": compartments,
               "code_len": code_len}
        if self.cfg is not None:
            rec["broker"] = self.cfg.as_dict()
        return rec

    # ---- commands ----------------------------------------------------------

    def _send(self, box_id: str, op: str, prepare=None, **fields) -> int:
        with self.ledger.tx() as db:
            if prepare is not None:
                fields.update(prepare(db))
            seq, topic, payload = self.ledger.next_command(db, box_id, op, **fields)
        mqtt.publish(self._client(), topic, payload)
        return seq

    def issue(self, box_id: str, role: str = "recipient", comp: int = 0, uses: int = 1,
              not_before: int = 0, not_after: int = 0) -> Issued:
        """A new random code on `box_id`, never equal to another code the box may hold.
        If the broker cannot be reached the code stays in the ledger (sent=False) and
        reaches the box with the next sync."""
        if role not in p.ROLES:
            raise ValueError("role must be one of " + ", ".join(p.ROLES))
        now = time.time()
        with self.ledger.tx() as db:
            # a revoke the box has not confirmed goes again first (its publish may have
            # failed): the revoked code may still open; its value stays taken till then
            again = mirror.revokes_due(db, box_id, now, mirror.unconfirmed_revokes(db, box_id, now))
            msgs = [self.ledger.next_command(db, box_id, "revoke", id=cid) for cid in again]
            code, arr = self.ledger.new_code(db, box_id, p.ROLES[role], comp, uses,
                                             not_before, not_after, now)
            seq, topic, payload = self.ledger.next_command(db, box_id, "add", code=arr)
            db.execute("UPDATE codes SET cmd_seq=? WHERE box=? AND id=?", (seq, box_id, arr[0]))
        try:
            c = self._client()
            for _, t, pl in msgs:
                mqtt.publish(c, t, pl)
            mqtt.publish(c, topic, payload)
            sent = True
        except mqtt.BrokerError as e:
            log.warning("code %d for %s not sent: %s", arr[0], box_id, e)
            sent = False
        return Issued(box_id, arr[0], code, seq, sent)

    def revoke(self, box_id: str, code_id: int) -> int:
        """Revoke a code; an already revoked one is revoked again on the box (its first
        revoke may never have left: the broker was down), where that is harmless."""
        with self.ledger.tx() as db:
            cur = db.execute("UPDATE codes SET status='revoked' WHERE box=? AND id=?",
                             (box_id, code_id))
            if cur.rowcount == 0:
                raise LedgerError("box %s has no code %d to revoke" % (box_id, code_id))
            seq, topic, payload = self.ledger.next_command(db, box_id, "revoke", id=code_id)
        mqtt.publish(self._client(), topic, payload)
        return seq

    def sync(self, box_id: str) -> list[int]:
        """Replace the box's whole set with the ledger's; returns the command seqs
        (begin, parts..., end). The box applies it at the end, all or nothing."""
        with self.ledger.tx() as db:
            msgs = self.ledger.sync_commands(db, box_id, time.time())
        c = self._client()
        for _, topic, payload in msgs:
            mqtt.publish(c, topic, payload)
        return [m[0] for m in msgs]

    def unlock(self, box_id: str, comp: int, expires_in: int | None = None) -> int:
        """Unlock compartment `comp` remotely; the box refuses it after `expires_in`
        seconds (default DEFAULT_ONESHOT_EXP, at most a day): it must not open later."""
        exp = oneshot_exp(expires_in)
        n = self.ledger.box(box_id).compartments
        if not 1 <= comp <= n:
            raise LedgerError("box %s has compartments 1..%d" % (box_id, n))
        return self._send(box_id, "unlock", comp=comp, exp=exp)

    def clear_throttle(self, box_id: str, expires_in: int | None = None) -> int:
        """Forget the box's failed attempts and lockouts; refused after `expires_in`
        seconds, as unlock."""
        return self._send(box_id, "clear_throttle", exp=oneshot_exp(expires_in))

    def request_state(self, box_id: str) -> int:
        return self._send(box_id, "state")

    def set_time(self, box_id: str, t: int | None = None) -> int:
        """Tell the box the time (this machine's clock). It carries exp = t + 120 s: a box
        whose saved clock floor is already past that refuses it as expired, so a `time`
        the broker held while the box was offline does not set its clock far back."""
        t = int(t if t is not None else time.time())
        return self._send(box_id, "time", t=t, exp=t + DEFAULT_ONESHOT_EXP)

    def settings(self, box_id: str, values: dict) -> int:
        bad = [k for k in values if k not in p.REMOTE_SETTINGS]
        if bad:
            raise ValueError("not a remote setting: " + ", ".join(sorted(bad)))
        return self._send(box_id, "settings", set=values)

    def rotate(self, box_id: str) -> int:
        """New wire keys for a box; they take effect when its result arrives. While one
        rotation waits for its answer (its publish may have failed), another sends the
        same new key again: whichever command the box applies, it ends on that key, and
        the other then fails its MAC."""
        new = secrets.token_bytes(32)

        def prepare(db):
            r = db.execute("SELECT cmd_seq + 1, key_gen, pending_key FROM boxes WHERE id=?",
                           (box_id,)).fetchone()
            if r is None:
                raise LedgerError("no box %s in the registry" % box_id)
            key = new if r[2] is None else r[2]
            db.execute("UPDATE boxes SET pending_key=?, pending_seq=?, pending_first="
                       "CASE WHEN pending_key IS NULL THEN ? ELSE pending_first END WHERE id=?",
                       (key, r[0], r[0], box_id))
            return {"gen": r[1] + 1,
                    "key": p.wrap_key(self.ledger.current_keys(box_id).cmd, r[0], key)}

        return self._send(box_id, "rotate", prepare=prepare)

    def wait(self, box_id: str, seq: int, timeout: float = 10) -> tuple[int | None, int | None]:
        """Wait until a consumer has recorded the box's answer to command `seq`:
        (status, rejection reason), or (None, None) after `timeout`."""
        end = time.monotonic() + timeout
        while True:
            out = self.ledger.command_outcome(box_id, seq)
            if out != (None, None) or time.monotonic() > end:
                return out
            time.sleep(0.05)


class Consumer:
    """Receives events (shared subscription), state and status; stores each event once,
    then acks it. `handler(db, event)` runs inside the storing transaction."""

    # persistent=False for a consumer that leaves for good when it stops (the CLI's
    # --wait): mosquitto keeps routing a share of the events to the stored session of a
    # persistent member while it is away, and they reach the others only when the
    # box sends them again (30 s).
    def __init__(self, ledger_path: str, cfg: mqtt.MqttConfig, name: str | None = None,
                 group: str = GROUP, handler=None, persistent: bool = True, on_link=None):
        self.ledger_path = str(ledger_path)
        self.cfg = cfg
        self.name = name or cfg.username or "consumer"
        self.group = group
        self.handler = handler
        self.persistent = persistent
        # on_link(up, why): False when the connection to the broker is lost (paho reconnects),
        # True when it is back and subscribed again; called on paho's network thread
        self.on_link = on_link
        self._lost = False
        self.stats = {"received": 0, "stored": 0, "duplicates": 0, "refused": 0, "errors": 0,
                      "syncs": 0, "times": 0}
        self._ledger: Ledger | None = None
        self._c = None
        self.subscribed = threading.Event()

    def start(self) -> "Consumer":
        self._ledger = Ledger(self.ledger_path)  # used only on the network thread
        c = mqtt.client(self.cfg, self.cfg.username or self.name, clean_session=not self.persistent)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        mqtt.connect(c, self.cfg)
        self._c = c
        return self

    def stop(self) -> None:
        c, self._c = self._c, None   # first: the disconnect below is no loss to report
        if c is not None:
            c.disconnect()
            c.loop_stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _on_connect(self, c, userdata, flags, rc, props=None):
        if rc == 0:
            c.subscribe([("$share/%s/%s+/evt" % (self.group, p.PREFIX), 1),
                         (p.PREFIX + "+/state", 1), (p.PREFIX + "+/status", 1)])

    def _on_subscribe(self, *a) -> None:
        self.subscribed.set()
        if self._lost:
            self._lost = False
            if self.on_link:
                self.on_link(True, None)

    def _on_disconnect(self, c, userdata, flags, rc, props=None) -> None:
        if self._c is None or self._lost:   # stop() or already said
            return
        self._lost = True
        if self.on_link:
            self.on_link(False, str(rc).lower())

    def _on_message(self, c, userdata, msg: paho.MQTTMessage) -> None:
        try:
            box_id, kind = p.split_topic(msg.topic)
            keys = self._ledger.keys(box_id)
            if kind == "evt":
                self._event(c, box_id, keys, msg.payload)
            elif kind == "state":
                # a slack the box knows the size of: a time only the backend can vouch
                # for ends it (unknown, the box takes the next time of any source)
                st = self._state(box_id, keys, msg.payload)
                if SLACK_ANSWERED < st.get("slack", 0) < 0xFFFFFFFF:
                    self._send_time(c, box_id, st.get("ref", 0))
                self._resync(c, box_id)
            elif kind == "status":
                online = p.parse_status(msg.payload)
                if online is not None:
                    self._ledger.set_status(box_id, online)
        except (p.ProtocolError, LedgerError) as e:
            self.stats["refused"] += 1
            log.warning("refused a message on %s: %s", msg.topic, e)
        except Exception as e:
            # The handler or SQLite failed (a bug, a lock held past busy_timeout): the
            # transaction rolled back and nothing was acked, so the box sends the event
            # again. Raising here would end paho's network thread: no more events at all.
            self.stats["errors"] += 1
            log.error("could not store a message on %s: %s: %s", msg.topic,
                      e.__class__.__name__, e)

    def _send_time(self, c, box_id: str, ref: int) -> None:
        """The box's clock may lag the time it knew before a power cut (its summary's
        `slack`), and only a sealed time that answers that summary (its `ref`: made after
        it) ends that doubt, not SNTP nor a `time` the broker held: send ours."""
        t = int(time.time())
        with self._ledger.tx() as db:
            _, topic, payload = self._ledger.next_command(db, box_id, "time", t=t, ref=ref,
                                                          exp=t + DEFAULT_ONESHOT_EXP)
        c.publish(topic, payload, qos=1)
        self.stats["times"] += 1

    def _state(self, box_id, keys, payload) -> dict:
        try:
            state, i = p.parse_state(keys, box_id, payload)
            if not self._ledger.may_verify(box_id, keys[i], state["next_seq"] - 1):
                raise p.ProtocolError("state under the key before the last rotation")
        except p.ProtocolError:
            # a box that lost its wire key speaks under its box key again (key_gen 0)
            state = self._ledger.fall_back_to_box_key(box_id, payload)
            if state is None:
                raise
            log.warning("box %s lost its wire key: back to the box key; rotate again", box_id)
            self._ledger.set_state(box_id, state)
            return state
        self._ledger.confirm_key(box_id, keys[i], state["next_seq"])
        self._ledger.set_state(box_id, state)
        return state

    def _event(self, c, box_id, keys, payload) -> None:
        self.stats["received"] += 1
        ev, i = p.parse_event(keys, box_id, payload)
        if not self._ledger.may_verify(box_id, keys[i], ev.seq):
            raise p.ProtocolError("event %d under the key before the last rotation" % ev.seq)
        self._ledger.confirm_key(box_id, keys[i], ev.seq)
        if self._ledger.record_event(ev, self.name, self.handler):
            self.stats["stored"] += 1
        else:
            self.stats["duplicates"] += 1
        # stored (now or before): ack with the key the box now expects
        topic, ack = p.ack(self._ledger.current_keys(box_id), box_id, [ev.seq])
        c.publish(topic, ack, qos=1)
        if ev.type in ("result", "store_corrupt"):
            self._resync(c, box_id)

    def _resync(self, c, box_id: str) -> None:
        """Send the full sync the box needs (ledger.take_resync): after a sync answered
        sync_order, a sync that undid an add or revoke, or a code store that failed closed.
        Published without waiting (this is paho's thread); if it is lost, the sync's end
        stays unanswered and `box status` shows the codes out of sync."""
        msgs = self._ledger.take_resync(box_id)
        if msgs is None:
            log.error("box %s needs a full sync and %d automatic ones did not take: "
                      "run `parcelbox codes sync %s`", box_id, MAX_AUTO_SYNCS, box_id)
            return
        for _, topic, payload in msgs:
            c.publish(topic, payload, qos=1)
        if msgs:
            self.stats["syncs"] += 1
            log.warning("box %s: full sync sent again (commands %d..%d)", box_id, msgs[0][0],
                        msgs[-1][0])
