# What the box keeps across power cuts: the state file (occupancy, grants, clock floor, the
# throttle, command window, seq floor), a boot's repairs, the remote's calls. Mixed into Box.
import struct

from parcelbox import events, feedback, ticks
from parcelbox import lock as _lock
from parcelbox.codestore import ROLE_DRIVER, ROLE_OWNER, ROLE_RECIPIENT, ROLE_REMOTE
from parcelbox.storage import frame, frame_at

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# generation, occupancy bits, clock floor (epoch s), boots, seq of the charged attempt's
# wrong_code event (0: none), seq of the last event whose occupancy change is saved,
# the command anti-replay window (highest seq, bitmap of the 32 below), the event seq floor
_STATE_FMT = "<IIIIIIIII"
_STATE_LEN = const(36)
# Every event seq handed out stays below the saved floor, raised this far ahead when
# reached: one state write per 256 events, and at most 256 seqs skipped after events.log
# is lost (docs/storage.md section 2).
_SEQ_MARGIN = const(256)
_THROTTLE_LEN = const(16)  # throttle.STATE_LEN; then 5 bytes per compartment: grant
_CMD_JUMP = const(4096)    # command seqs skipped when a state copy is found damaged


class BoxState:
    # ---- for the remote (parcelbox.remote) ---------------------------------

    # Record an event (durable when it returns); its seq.
    def event(self, kind, comp, code_id, arg, now):
        return self._event(kind, comp, code_id, arg, now)

    # A flash error survived: counted, ERROR shown.
    def fault(self, now):
        self._fault(now)

    def boots(self):
        return self._boots

    def clock_trusted(self):
        return self._trusted

    # Persist the anti-replay window before a command applies; OSError: RAM as on flash.
    def save_window(self, top, bits):
        old = self.cmd_top, self.cmd_bits
        self.cmd_top, self.cmd_bits = top, bits
        try:
            self._save_state()
        except OSError:
            self.cmd_top, self.cmd_bits = old
            raise

    # Forget failed attempts and lockouts (the backend's clear_throttle). OSError escapes.
    def clear_throttle(self, now):
        self.throttle.clear(now)
        self._save_state()

    # Remote unlock by backend command `seq` (docs/protocol.md section 5): opens as a code
    # of role REMOTE whose code_id is the seq; occupancy unchanged. The grant is durable
    # before the solenoid can fire. False: busy (unlocking, open, cooling down). OSError
    # escapes.
    def remote_unlock(self, comp, seq, now):
        d = self._compartment(comp)
        if d.state != _lock.LOCKED or d.door_open:
            return False
        i = comp - 1
        self.opener_role[i] = ROLE_REMOTE
        self.grant_code[i] = seq
        self._restored &= ~(1 << i)
        try:
            self._save_state()
        except OSError:  # not on flash: no grant in RAM either (a later save would keep it)
            self._ungrant(i)
            raise
        r = d.unlock(now, seq)
        if r != _lock.STARTED and r != _lock.QUEUED:
            self._ungrant(i)
            self._save_state()
            return False
        self.player.start(feedback.ACCEPTED, now)
        return True

    # Before an event takes seq next_seq (or next_seq + 1 with an overflow summary): the
    # floor saved on flash must stay above it, so a lost events.log never repeats a seq.
    def _seq_room(self):
        n = self.outbox.next_seq + 1
        if n >= self._seq_floor:
            old = self._seq_floor
            self._seq_floor = n + _SEQ_MARGIN
            try:
                self._save_state()
            except OSError:
                self._seq_floor = old
                raise

    # ---- clock -------------------------------------------------------------

    # The shell tells the wall-clock time (NTP, or the backend) as epoch seconds.
    def set_time(self, epoch_s, now):
        try:
            self._set_time(epoch_s, now)
        except OSError:
            self._fault(now)

    def _set_time(self, epoch_s, now):
        self._wall_base = epoch_s
        self._wall_tick = now
        self._trusted = True
        self._next_expire = now  # the clock may have jumped: sweep expired codes soon
        self._raise_floor(now)

    # Current epoch seconds: trusted, or estimated from the last trusted time plus
    # uptime; never earlier than the newest time the box has ever trusted.
    def wall(self, now):
        t = self._wall_base + ticks.diff(now, self._wall_tick) // 1000
        return t if t > self._floor else self._floor

    # Persist the trusted time as the floor, so a reboot never turns the clock back
    # further than the last save (hourly): an expired code stays expired offline.
    def _raise_floor(self, now):
        t = self._wall_base + ticks.diff(now, self._wall_tick) // 1000
        if self._trusted and t > self._floor:
            self._floor = t
            self._save_state()

    def _ungrant(self, i):
        self.opener_role[i] = 0
        self.grant_code[i] = 0
        self._shared &= ~(1 << i)


    # The first stable sample of a door after boot. Open with a saved grant: the
    # opening goes on (its close still makes the deposit or pickup). Open without one:
    # forced (arg 1: found open). Closed with a grant: whether it opened while the
    # power was off is unknown; not_opened (arg 1), and the use stays spent. A grant made in
    # this boot before the door's first stable sample (a code or an unlock in the first
    # 50 ms) is not the power cut's: the lock's own events follow it as usual.
    def _boot_door(self, comp, d, now):
        i = comp - 1
        restored = (self._restored >> i) & 1
        self._restored &= ~(1 << i)
        if self.opener_role[i] and not restored:
            return
        if d.door_open and self.opener_role[i]:
            d.authorised = True
            d.code_id = self.grant_code[i]
            self._event(events.OPENED, comp, d.code_id, self.opener_role[i], now)
        elif d.door_open:
            self._event(events.FORCED, comp, 0, 1, now)
        elif self.opener_role[i]:
            self._event(events.NOT_OPENED, comp, self.grant_code[i], 1, now)
            self._ungrant(i)
            self._save_state()

    # Events first, then the occupancy they imply: a power cut between the two is
    # repaired at boot from the events still in the outbox (_recover).
    def _closed(self, comp, d, now):
        role = self.opener_role[comp - 1]
        self._event(events.CLOSED, comp, d.code_id, role, now)
        bit = 1 << (comp - 1)
        seq = 0
        if role == ROLE_DRIVER:
            seq = self._event(events.DEPOSIT, comp, d.code_id, 0, now)
        elif role == ROLE_RECIPIENT:
            seq = self._event(events.PICKUP, comp, d.code_id, 0, now)
        elif role == ROLE_OWNER and self.occupied & bit:
            seq = self.outbox.next_seq - 1  # the CLOSED event, arg = owner
        granted = role or self.grant_code[comp - 1]
        self._ungrant(comp - 1)
        if seq:
            self._occupy(comp, role == ROLE_DRIVER)
            self._applied = seq
        if seq or granted:
            self._save_state()

    def _occupy(self, comp, full):
        if full:
            self.occupied |= 1 << (comp - 1)
        else:
            self.occupied &= ~(1 << (comp - 1))

    # At boot: report an attempt that was charged but never resolved, and apply the
    # occupancy of deposits and pickups recorded after the last saved state. If events.log
    # is damaged (`bad`: its load flags; even a torn tail, which rot of sent records can
    # look like) or lost (its next_seq below the last saved one), seqs go on above the floor
    # first: the backend dedups on (box, seq). Returns the damage to report (4: lost).
    def _recover(self, now, bad):
        ob = self.outbox
        unresolved = self._attempt and ob.next_seq <= self._attempt
        # The floor was saved as next_seq + 1 + _SEQ_MARGIN just before the event taking
        # next_seq was appended: a cut between the two leaves next_seq one below (not a
        # loss). Nothing at all on file but a floor: lost, or cut before the first event.
        f = self._seq_floor
        lost = ob.next_seq < f - _SEQ_MARGIN - 1 or (f > 0 and ob.next_seq == 1)
        if bad or lost:
            ob.skip_to(self._seq_floor)
        if unresolved:
            self._event(events.WRONG_CODE, 0, 0,
                        events.REASON_UNRESOLVED | (self.throttle.failures << 8), now)
        self._attempt = 0
        for i in range(ob.pending()):
            seq, kind, comp, code_id, arg, t = ob.get(i)
            if seq > self._applied and 1 <= comp <= len(self.doors):
                if kind == events.DEPOSIT or kind == events.PICKUP or (
                        kind == events.CLOSED and arg == ROLE_OWNER):
                    self._occupy(comp, kind == events.DEPOSIT)
                    self._applied = seq
        return bad | (4 if lost else 0)

    # Two alternating state files; the newest valid one wins, so bit rot in one
    # still leaves the last good state.
    def _load_state(self, now):
        best = None
        bad = False
        for name in ("state.0", "state.1"):
            data = self.storage.read(name)
            if data is None:
                continue
            r = frame_at(data, 0)
            if r is None or r[1] - r[0] < _STATE_LEN:
                bad = True
                continue
            gen = struct.unpack_from("<I", data, r[0])[0]
            if best is None or gen > best[0]:
                best = (gen, data, r)
        if best is None:
            if bad:  # state lost: never grant free guesses
                self.throttle.load(b"", now)
            return not bad
        gen, data, r = best
        (self._gen, self.occupied, self._floor, self._boots, self._attempt, self._applied,
         self.cmd_top, self.cmd_bits, self._seq_floor) = struct.unpack_from(_STATE_FMT, data, r[0])
        self.occupied &= (1 << len(self.doors)) - 1
        if bad:
            # The damaged copy may be the newer one, with one command's window in it:
            # jump the window past any seq it can have taken and mark the window seen,
            # so that command cannot run again. The backend's counter follows the state
            # summary's cmd_seq (docs/protocol.md section 5).
            self.cmd_top = min(self.cmd_top + _CMD_JUMP, 0xFFFFFFFF)
            self.cmd_bits = 0xFFFFFFFF
        t = r[0] + _STATE_LEN
        ok = self.throttle.load(bytes(data[t:t + _THROTTLE_LEN]), now)
        if r[1] - t - _THROTTLE_LEN == 5 * len(self.doors):  # else: compartments changed
            for i in range(len(self.doors)):
                self.grant_code[i], self.opener_role[i] = struct.unpack_from(
                    "<IB", data, t + _THROTTLE_LEN + 5 * i)
                if self.opener_role[i]:
                    self._restored |= 1 << i
        return ok and not bad

    def _save_state(self):
        self._gen += 1
        head = struct.pack(_STATE_FMT, self._gen, self.occupied, self._floor, self._boots,
                           self._attempt, self._applied, self.cmd_top, self.cmd_bits,
                           self._seq_floor)
        grants = bytearray(5 * len(self.doors))
        for i in range(len(self.doors)):
            struct.pack_into("<IB", grants, 5 * i, self.grant_code[i], self.opener_role[i])
        self.storage.replace("state.%d" % (self._gen & 1),
                             frame(head + self.throttle.dump() + grants))
