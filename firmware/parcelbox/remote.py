# The box's end of the wire protocol (docs/protocol.md), sans-I/O: commands and acks in,
# sealed events and state summaries out. A network link drives it (docs/box.md section 9).
import json

from parcelbox import events, ticks
from parcelbox import protocol as P
from parcelbox.hmac256 import Hmac
# stored_settings is the shell's, before it builds the Box (docs/box.md section 9)
from parcelbox.remotestore import (WIRE, Staging, change_settings, load_wire, save_wire,
                                   stored_settings, wire_fp)

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

_IN_FLIGHT = const(8)      # events published and not yet acked
_RESEND_MS = const(30000)  # an event not acked this long after publishing goes again
_BURST = const(5)          # rejected events written at once...
_REFILL_MS = const(60000)  # ...then one per minute; the rest are counted as suppressed

# json.loads of a memoryview saves copying a 4 KB body: MicroPython reads any buffer,
# CPython wants bytes.
try:
    json.loads(memoryview(b"0"))  # type: ignore[type-var]  # stub: CPython's signature
    _loads = json.loads
except TypeError:
    def _loads(body):
        return json.loads(bytes(body))


class Remote:
    # box: the Box; box_id: its id (str); box_key: its 32-byte key. The wire key comes from
    # flash if the backend has rotated it. ValueError or TypeError on a bad id or key.
    def __init__(self, box, box_id, box_key):
        (self.topic_cmd, self.topic_ack, self.topic_evt, self.topic_state,
         self.topic_status) = P.topics(box_id)
        self.box = box
        self.box_id = box_id
        self.restart_pending = False  # settings saved; in effect once the shell rebuilds the Box
        # The file's key is taken only if it is the one the state file names (generation
        # and fingerprint; a rotation saves the state first): an older or a newer one, or
        # none where the state names one, is void, and the box key is used (reported).
        w, bad = load_wire(box.storage)
        if w is not None and (w[0] != box.key_gen_saved or wire_fp(w[1]) != box.key_fp):
            w, bad = None, 4
        elif w is None and box.key_gen_saved and not bad:
            bad = 4  # the file is gone, yet the state file saw a rotation
        self._key_bad = bad  # reported at the first connect, when time is known
        self.key_gen, key = w if w else (0, box_key)
        self._set_key(key)
        self._stage = Staging(box.storage)
        self._online = self._state_due = False
        self._next_state = 0
        self._upto = 0    # highest event seq published since the last connect
        self._pub = 0     # highest event seq published since this Remote began
        self._boot_top = box.outbox.next_seq  # seqs from here on were made in this boot
        self._sent = {}   # seq: tick last published, for each event in flight
        self._tokens = _BURST
        self._rl_tick = 0
        self._suppressed = 0
        self._seq = 0     # the seq of the command being received, once read; else 0
        self._ref = 0     # the latest summary's ref (it showed a slack; 0: none)...
        self._ref_tick = 0  # ...and when it was made
        self._refs = 0    # summaries with a slack made in this boot

    # Every part allocated before any is taken: a MemoryError leaves the old key whole.
    def _set_key(self, wire_key):
        cmd_key, evt_key = P.wire_keys(wire_key)
        cmd, evt = Hmac(cmd_key), Hmac(evt_key)
        self._cmd_key, self._cmd, self._evt = cmd_key, cmd, evt

    # ---- the link's API ----------------------------------------------------

    # Topics to subscribe to, QoS 1.
    def subscriptions(self):
        return [self.topic_cmd, self.topic_ack]

    # (topic, payload) of the last will: offline, QoS 1, retained.
    def will(self):
        return self.topic_status, P.OFFLINE

    # (topic, payload) published retained right after each connect.
    def online(self):
        return self.topic_status, P.ONLINE

    # A new connection: a state summary is due, then every pending event goes (again).
    def connected(self, now):
        self._online = True
        self._state_due = True
        self._upto = 0
        self._sent = {}
        if self._key_bad:
            box = self.box
            try:
                box.event(events.STORE_CORRUPT, 0, 0, events.FILE_KEY | self._key_bad << 8, now)
                self._key_bad = 0
                if not self.key_gen:
                    # reported: from now on the box key is the one to expect (a cut before
                    # this save reports again)
                    box.storage.remove(WIRE)
                    box.key_gen_saved = box.key_fp = 0
                    box.save()
            except OSError:
                box.fault(now)

    # One message on cmd or ack, applied fully (on flash) before this returns. Never raises
    # on content: a bug inside is reported as malformed and never opens anything.
    def receive(self, topic, payload, now):
        self._seq = 0
        try:
            if topic == self.topic_cmd:
                self._command(payload, now)
            elif topic == self.topic_ack:
                self._acks(payload, now)
        except OSError:
            self.box.fault(now)
        except MemoryError:
            # Short of RAM, not a bad message: said so, so the backend sends it again. Up to
            # its window's save nothing is applied and its seq stays free (_command): the
            # same command again is taken. Its seq is named once read (0 before).
            self._refuse(P.NO_MEMORY, self._seq, now)
        except Exception:  # a bug: the state stays as on flash
            self._refuse(P.MALFORMED, 0, now)

    # The next (topic, payload, retain) to publish, or None: call until None.
    def poll(self, now):
        if not self._online:
            return None
        try:
            return self._poll(now)
        except OSError:
            self.box.fault(now)
            return None

    # Tick at which poll() next has something (now if at once), or None while offline.
    def next_deadline(self, now):
        if not self._online:
            return None
        n = self._in_flight(now)
        if self._state_due or n < min(_IN_FLIGHT, self.box.outbox.pending()):
            return now
        best = self._next_state
        for s in self._sent:
            t = ticks.add(self._sent[s], _RESEND_MS)
            if ticks.diff(t, best) < 0:
                best = t
        return best

    # ---- publishing --------------------------------------------------------

    def _poll(self, now):
        box = self.box
        if self._state_due or ticks.reached(now, self._next_state):
            self._state_due = False
            self._next_state = ticks.add(now, box.cfg["state_every_s"] * 1000)
            return self.topic_state, P.seal(self._evt, self.topic_state, self._summary(now)), True
        ob = box.outbox
        n = self._in_flight(now)
        for i in range(n):
            if ticks.reached(now, ticks.add(self._sent[ob.seq(i)], _RESEND_MS)):
                return self._publish(i, now)
        if n < _IN_FLIGHT and n < ob.pending():
            return self._publish(n, now)
        return None

    def _publish(self, i, now):
        ev = self.box.outbox.get(i)
        self._sent[ev[0]] = now
        if ev[0] > self._upto:
            self._upto = ev[0]
        if ev[0] > self._pub:
            self._pub = ev[0]
        body = P.event_body(self.box_id, *ev)
        return self.topic_evt, P.seal(self._evt, self.topic_evt, body), False

    # How many pending events are in flight: those published since the connect, always
    # the oldest pending ones. Resynced if the outbox dropped one (its full policy).
    def _in_flight(self, now):
        ob = self.box.outbox
        n = 0
        while n < ob.pending() and ob.seq(n) <= self._upto:
            n += 1
        if n != len(self._sent):
            old, self._sent = self._sent, {}
            for i in range(n):
                s = ob.seq(i)
                self._sent[s] = old.get(s, now)
        return n

    def _summary(self, now):
        box = self.box
        c, ob, th = box.codes, box.outbox, box.throttle
        wall = box.wall(now)
        # A summary that shows a slack names itself (boots and a count: unique on this
        # box): a `time` that echoes it was made after it, however late it comes.
        s = box.clock_slack()
        self._ref = 0
        if 0 < s < 0xFFFFFFFF:
            self._refs += 1
            self._ref = (box.boots() & 0xFFFF) << 16 | (self._refs & 0xFFFF) or 1
            self._ref_tick = now
        return P.state_body(self.box_id, wall if box.clock_trusted() else 0, box.boots(),
                            c.count(), c.active_count(wall), c.capacity(), c.set_digest(),
                            ob.pending(), ob.next_seq, box.cmd_top, self.key_gen, box.occupied,
                            th.failures, (th.check(now) + 999) // 1000, box.faults,
                            box.cmd_bits, s, self._ref)

    # ---- receiving ---------------------------------------------------------

    # A `rejected` event, at most _BURST at once and then one per _REFILL_MS. None.
    def _reject(self, why, seq, now):
        e = ticks.diff(now, self._rl_tick)
        n = e // _REFILL_MS if e > 0 else 0
        if e < 0 or self._tokens + n >= _BURST:
            self._tokens, self._rl_tick = _BURST, now
        elif n:
            self._tokens += n
            self._rl_tick = ticks.add(self._rl_tick, n * _REFILL_MS)
        if not self._tokens:
            self._suppressed += 1
            return
        self.box.event(events.REJECTED, 0, seq, why | min(self._suppressed, 0xFFFFFF) << 8, now)
        self._tokens -= 1
        self._suppressed = 0

    # _reject from a handler: a flash error is counted; with no RAM left to write it, the
    # backend hears nothing and its command times out (it sends it again).
    def _refuse(self, why, seq, now):
        try:
            self._reject(why, seq, now)
        except OSError:
            self.box.fault(now)
        except MemoryError:
            pass

    # Checks 1 to 6 of section 5 on a payload from `topic` whose body must hold `need`:
    # the JSON object, or None (rejected).
    def _open(self, topic, payload, need, now):
        body = P.open_payload(self._cmd, topic, payload)
        if type(body) is int:
            return self._reject(body, 0, now)
        try:
            m = _loads(body)
        except (ValueError, RuntimeError):  # UnicodeDecodeError; nesting too deep (CPython)
            m = None
        ok = type(m) is dict and "v" in m and "box" in m and need in m
        seq = m.get("seq") if ok and need == "op" else 0
        if need == "op" and not P.is_int(seq, 1):
            ok = False
        if not ok:
            return self._reject(P.MALFORMED, 0, now)
        v = m["v"]
        if type(v) is not int or v != P.VERSION:
            return self._reject(P.BAD_VERSION, seq, now)
        if m["box"] != self.box_id:
            return self._reject(P.WRONG_BOX, seq, now)
        return m

    def _acks(self, payload, now):
        m = self._open(self.topic_ack, payload, "acks", now)
        if m is None:
            return
        a = m["acks"]
        ok = type(a) is list and 1 <= len(a) <= P.MAX_ACKS
        for s in a if ok else ():
            ok = ok and P.is_int(s)
        if not ok:
            return self._reject(P.MALFORMED, 0, now)
        # Only a seq this Remote has published is taken. One from an earlier boot that is
        # not yet published again is ignored (it goes again, and its ack with it); one
        # made in this boot and never published, or never made, is reported.
        for s in a:
            if s <= self._pub:
                if self.box.outbox.ack(s):
                    self._sent.pop(s, None)
            elif s >= self._boot_top:
                self._reject(P.UNSENT_ACK, s, now)

    def _command(self, payload, now):
        c = self._open(self.topic_cmd, payload, "op", now)
        if c is None:
            return
        box = self.box
        seq = c["seq"]
        self._seq = seq
        why = P.window_check(box.cmd_top, box.cmd_bits, seq)
        op = c["op"]
        op = P.OPS.index(op) if type(op) is str and op in P.OPS else 0
        if not why and not op:
            why = P.UNKNOWN_OP
        # A time-bounded command runs only when the box can show it is inside its window:
        # an untrusted clock decides only "expired" (its floor is past exp). A one-shot
        # command (its effect is now) must be time-bounded, and shortly.
        args = None if why else P.op_fields(op, c)
        if args is None:
            return self._reject(why or P.MALFORMED, seq, now)
        exp = c.get("exp")
        once = op == P.UNLOCK or op == P.CLEAR_THROTTLE
        if exp is not None or once:
            w = box.wall(now)
            if exp is None:
                why = P.NO_EXP
            elif not P.is_int(exp):
                why = P.MALFORMED
            elif w > exp:
                why = P.EXPIRED
            elif not box.clock_trusted() and op != P.TIME:  # `time` is how it gets trusted
                why = P.NO_CLOCK
            elif once and exp - w > P.MAX_EXP_S:
                why = P.NO_EXP
            if why:
                return self._reject(why, seq, now)
        # The window is on flash before anything is applied: a power cut may lose this
        # command, never apply it twice. A flash error here applies nothing (receive).
        # Short of RAM here, the window in RAM goes back too (save_window restores it on
        # OSError only): the seq stays free, and the command, applied only after a save
        # that returned, never runs twice even if the new window reached flash.
        top, bits = box.cmd_top, box.cmd_bits
        try:
            box.save_window(*P.window_mark(top, bits, seq))
        except MemoryError:
            box.cmd_top, box.cmd_bits = top, bits
            raise
        self._seq = 0  # spent: a MemoryError from the result's event names no command
        try:
            st = self._apply(op, args, seq, now)
            if op == P.ADD or op == P.REVOKE or op == P.SYNC_END or op == P.ROTATE:
                box.save()  # what codes.log and wirekey.bin now hold, for the boot's check
        except OSError:
            st = P.FLASH
        except MemoryError:
            # After the window's save: this seq is spent (sent again, it is a replay); the
            # backend sends the command again under a new one. The op may have stopped part
            # way (a sync's store is put back from flash, docs/codestore.md section 7; a
            # rotation whose key file was written takes the new key at the next boot, which
            # the backend's pending rotation follows): not FLASH, which says none applied.
            return self._refuse(P.NO_MEMORY, seq, now)
        box.event(events.RESULT, op, seq, st, now)

    # Apply a checked command; its status. OSError escapes (status FLASH).
    def _apply(self, op, a, seq, now):
        box = self.box
        codes = box.codes
        if op == P.ADD or op == P.REVOKE:
            # Older than an add or revoke applied (delivered late): it could undo that one
            # (add back a code revoked since). Refused; the backend syncs the whole set.
            if seq < box.codes_cmd:
                return P.SYNC_ORDER
            # Issued after a staged sync's set was taken: that sync would undo it. It is
            # dropped (its sync_end answers sync_order: the backend syncs again), and no
            # sync begun before this seq is taken later (codes_cmd, saved after it).
            if self._stage.sync >= 0 and seq > self._stage.begin_seq:
                self._stage.drop()
            if seq > box.codes_cmd:
                box.codes_cmd = seq
        if op == P.ADD:
            if codes.count() >= codes.capacity() and codes.slot_of(a[0][0]) < 0:
                return P.FULL
            try:
                codes.add(*a[0])
            except ValueError:  # the digest belongs to another code
                return P.BAD_VALUE
        elif op == P.REVOKE:
            return P.OK if codes.revoke(a[0]) else P.UNKNOWN_CODE
        elif op == P.SYNC_BEGIN:
            if a[1] > codes.capacity():
                return P.FULL
            if seq < box.codes_cmd:  # older than an add or revoke applied: it would undo it
                return P.SYNC_ORDER
            self._stage.begin(*a)
            self._stage.begin_seq = seq
        elif op == P.SYNC_PART:
            return self._stage.part(*a)
        elif op == P.SYNC_END:
            self._state_due = True
            return self._stage.end(a[0], a[1], codes)
        elif op == P.UNLOCK:
            if a[0] > len(box.doors):
                return P.BAD_VALUE
            return P.OK if box.remote_unlock(a[0], seq, now) else P.BUSY
        elif op == P.CLEAR_THROTTLE:
            box.clear_throttle(now)
        elif op == P.SETTINGS:
            st = change_settings(box.storage, box.cfg, a[0])
            self.restart_pending = self.restart_pending or st != P.BAD_VALUE
            return st
        elif op == P.ROTATE:
            if a[0] != self.key_gen + 1 or a[0] > 0xFFFF:
                return P.BAD_VALUE
            key = P.unwrap(self._cmd_key, seq, a[1])
            # The state names the new key before the file holds it: a cut between leaves a
            # file the boot finds void (the box key then, reported), never an older key.
            old = box.key_gen_saved, box.key_fp
            box.key_gen_saved, box.key_fp = a[0], wire_fp(key)
            try:
                box.save()
                save_wire(box.storage, a[0], key)  # before the result, which the new key seals
            except (OSError, MemoryError):
                box.key_gen_saved, box.key_fp = old
                raise
            self._set_key(key)  # then the generation: short of RAM, both stay the old ones
            self.key_gen = a[0]
        elif op == P.STATE:
            self._state_due = True
        elif op == P.TIME:
            fresh = -1
            if a[1] and a[1] == self._ref:  # answers the latest summary: made after it
                fresh = (ticks.diff(now, self._ref_tick) + 999) // 1000
            return P.OK if box.set_time(a[0], now, events.TIME_CMD, fresh) else P.BAD_VALUE
        return P.OK
