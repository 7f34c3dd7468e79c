# What the box keeps across power cuts: the state file (occupancy, grants, clock floor, the
# throttle, command window, seq floor), a boot's repairs, the remote's calls. Mixed into Box.
import struct

from parcelbox import events, feedback, ticks
from parcelbox import lock as _lock
from parcelbox.codestore import (PROBLEM_CORRUPT, PROBLEM_OLD, PROBLEM_SNAPSHOT, ROLE_DRIVER,
                                 ROLE_OWNER, ROLE_RECIPIENT, ROLE_REMOTE, UNLIMITED)
from parcelbox.storage import frame, frame_at

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

# "PBS3" (the format), generation, occupancy bits, clock floor (epoch s), boots, seq of the
# charged attempt's wrong_code event (0: none), seq of the last event whose occupancy change
# is saved, the command anti-replay window (highest seq, bitmap of the 32 below), the event
# seq floor, then what the other files must hold at least (docs/storage.md section 3): the
# outbox's next seq, the code store's snapshot generation and journal bytes, the wire key
# (generation | fingerprint << 16); the highest seq of an add or revoke applied (no older
# sync, add or revoke may undo it); the clock's slack (seconds the floor may lag the time
# the box knew before its power cuts; _UNSURE: unknown).
_STATE_FMT = "<4sIIIIIIIIIIIIIII"
_STATE_LEN = const(64)
_MAGIC = b"PBS3"
# Every event seq handed out stays below the saved floor, raised this far ahead when
# reached: one state write per 256 events; a boot always continues from the floor, so a
# seq is never handed out twice whatever happened to events.log (docs/box.md section 7).
_SEQ_MARGIN = const(256)
_THROTTLE_LEN = const(16)  # throttle.STATE_LEN; then 7 bytes per compartment: grant
_GRANT = "<IBH"            # code id, role, the code's uses left once this grant's use is spent
_CMD_JUMP = const(4096)    # command seqs skipped when a state copy is found damaged
_SEQ_LIMIT = 0x7F000000    # a seq floor above is damage (2 billion events: never reached),
                           # leaving the outbox's seqs room below its own limit (2^31-1)

# The clock (docs/box.md section 7): every time source is held to this range; one that
# goes back more than _BACK_S below the newest trusted time is refused, and so is the
# network's time jumping more than _AHEAD_S ahead of a clock already trusted.
MIN_TIME = 1704067200      # 2024-01-01 (not const: above a small int on a 32-bit port)
MAX_TIME = 4102444800      # 2100-01-01, well below 2^32: every event's t fits its u32
_BACK_S = const(60)
_AHEAD_S = const(3600)
_REPORT_MS = const(600000)  # one time_refused event per 10 minutes; the rest counted
# Powered-on time can pass between two state saves (the hourly floor save, a late tick):
# the most a power cut can take from the clock. Each boot without a time source adds it to
# the slack; a time source takes the slack to 0. With a state copy lost, or a clock never
# trusted, the slack is unknown: every code with a not_after counts as ended.
_SAVE_GAP_S = const(3660)
_UNSURE = 0xFFFFFFFF


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

    # Seconds the clock may lag the time the box knew before its power cuts (0: none;
    # 0xFFFFFFFF: unknown); only the backend's sealed time ends it (docs/box.md section 7).
    def clock_slack(self):
        return self._slack

    # Persist the anti-replay window before a command applies; OSError: RAM as on flash.
    def save_window(self, top, bits):
        old = self.cmd_top, self.cmd_bits
        self.cmd_top, self.cmd_bits = top, bits
        try:
            self._save_state()
        except OSError:
            self.cmd_top, self.cmd_bits = old
            raise

    # Save the state file now (after a command changed codes.log or wirekey.bin, so the
    # boot can tell a file that went back). OSError escapes.
    def save(self):
        self._save_state()

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
        self.grant_uses[i] = UNLIMITED
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

    # A time source tells the wall-clock time as epoch seconds; `source`: events.TIME_NET
    # (SNTP), TIME_CMD (the backend's `time`), TIME_SHELL. True if taken; a time out of
    # range, going back, or (the network's, on a trusted clock) jumping far ahead is
    # refused and reported (time_refused). Never raises (a flash error is a fault).
    # `fresh`: for the backend's time, the seconds since the box published the summary the
    # command answers (its `ref`), or -1 if it answers none (then it may be stale, as SNTP).
    def set_time(self, epoch_s, now, source=events.TIME_SHELL, fresh=-1):
        try:
            return self._set_time(epoch_s, now, source, fresh)
        except OSError:
            self._fault(now)
            return False

    def _set_time(self, t, now, source, fresh=-1):
        w = self.wall(now)
        why = 0
        if type(t) is not int or not MIN_TIME <= t <= MAX_TIME:
            why = events.CLOCK_RANGE
        elif t < w - _BACK_S:
            why = events.CLOCK_BACK
        elif source == events.TIME_NET and self._trusted and t > w + _AHEAD_S:
            why = events.CLOCK_AHEAD
        if why:
            self._time_refused(source, t, why, now)
            return False
        if w > self._floor:
            self._floor = w  # a step back within the tolerance never lowers wall()
        # The slack keeps the latest time the box may have known: a time taken below it (a
        # spoofed SNTP answer after a reboot without time, a backend `time` the broker held
        # for a while) still refuses the codes that ended before it. The shell's time is
        # believed, and so is any when the slack is unknown. The backend's time answering
        # the box's latest summary (`fresh`) was made after that summary: the box can have
        # known at most `fresh` seconds more than it says.
        s = self._slack
        if s == _UNSURE or source == events.TIME_SHELL or w + s <= t:
            s = 0
        else:
            s = w + s - (t if t > w else w)
        if source == events.TIME_CMD and 0 <= fresh < s:
            s = fresh
        self._slack = s
        self._wall_base = t
        self._wall_tick = now
        self._trusted = True
        self._next_expire = now  # the clock may have jumped: raise the floor, sweep soon
        self._raise_floor(now)
        return True

    # A new core built in the same power-on (settings changed) takes over the old one's
    # clock: its time, whether it is trusted, and its slack. Nothing is lost, nothing
    # gained (a restart is not a time source).
    def take_clock(self, old, now):
        if old._floor > self._floor:
            self._floor = old._floor
        self._wall_base = old._wall_base  # exactly: a whole second taken now would lose
        self._wall_tick = old._wall_tick  # the part of a second already passed
        self._trusted = old._trusted
        self._slack = old._slack
        self._next_expire = now

    def _time_refused(self, source, t, why, now):
        self._tr_count += 1
        if self._tr_tick is not None and 0 <= ticks.diff(now, self._tr_tick) < _REPORT_MS:
            return
        self._tr_tick = now
        t = t if type(t) is int and 0 <= t <= 0xFFFFFFFF else 0
        self._event(events.TIME_REFUSED, source, t, why | min(self._tr_count - 1, 0xFFFFFF) << 8,
                    now)
        self._tr_count = 0

    # Current epoch seconds: trusted, or estimated from the newest time the box ever trusted
    # plus uptime (a lower bound of the true time); never below it, never above MAX_TIME.
    def wall(self, now):
        t = self._wall_base + ticks.diff(now, self._wall_tick) // 1000
        if t < self._floor:
            t = self._floor
        return t if t < MAX_TIME else MAX_TIME

    # True if a window ending at `na` (epoch s; 0: none) may have closed by wall time `w`:
    # past it, or, while the time lost in power cuts since the last time source is not
    # known (_slack), possibly past it. Such a code is refused, never removed (the sweep
    # goes by the clock alone): a time source lets it open again if it is still valid.
    def _ended(self, na, w):
        if not na:
            return False
        s = self._slack
        return w > na or s != 0 and (s == _UNSURE or w + s > na)

    # Persist the newest time as the floor (hourly and whenever a time source is taken),
    # so a reboot never turns the clock back further than that save. Expired codes do not
    # wait for it: the sweep removes each at its not_after (Box._tick).
    def _raise_floor(self, now):
        t = self.wall(now)
        if t > self._floor_saved:
            self._floor = t
            self._save_state()

    def _ungrant(self, i):
        self.opener_role[i] = 0
        self.grant_code[i] = 0
        self.grant_uses[i] = UNLIMITED
        self._shared &= ~(1 << i)


    # The first stable sample of a door after boot. Open with a saved grant: the
    # opening goes on (its close still makes the deposit or pickup), and its use is spent
    # if the journal lost it. Open without one: forced (arg 1: found open). Closed with a
    # grant: not_opened, arg 1: the use is spent (_spend_grants), whether or not the
    # journal held it (whether the door opened while the power was off is unknown, and a
    # journal that lost the use's record after the solenoid fired looks the same as a cut
    # before that record). A grant made in this boot before the door's first stable sample (a code or
    # an unlock in the first 50 ms) is not the power cut's: the lock's own events follow
    # it as usual.
    def _boot_door(self, comp, d, now):
        i = comp - 1
        restored = (self._restored >> i) & 1
        self._restored &= ~(1 << i)
        if self.opener_role[i] and not restored:
            return
        if d.door_open and self.opener_role[i]:
            d.authorised = True
            d.code_id = self.grant_code[i]
            self._event(events.OPENED, comp, d.code_id, self.opener_role[i] | self._left(i) << 8,
                        now)
        elif d.door_open:
            self._event(events.FORCED, comp, 0, 1, now)
        elif self.opener_role[i]:
            self._event(events.NOT_OPENED, comp, self.grant_code[i], 1 | self._left(i) << 8,
                        now)
            self._ungrant(i)
            self._save_state()

    # At boot, before anything can be typed: each saved grant's use is spent, also when
    # the journal does not hold it (the door, open or closed, then tells _boot_door what
    # to report).
    def _spend_grants(self):
        for i in range(len(self.doors)):
            s = self._unspent(i) if (self._restored >> i) & 1 else -1
            if s >= 0:
                self.codes.consume(s)

    # The uses compartment i's granted code has now, for the backend's mirror (the high
    # bits of opened and not_opened); UNLIMITED when there is no count to report: a remote
    # unlock or service mode (their id is no code's), an unlimited code, a code gone.
    def _left(self, i):
        if not 0 < self.opener_role[i] <= ROLE_OWNER:
            return UNLIMITED
        s = self.codes.slot_of(self.grant_code[i])
        return self.codes.fields(s)[3] if s >= 0 else UNLIMITED

    # The slot of compartment i's granted code if it still holds the use its grant spends
    # (the use was never written, or the journal lost it), else -1.
    def _unspent(self, i):
        left = self.grant_uses[i]
        if left == UNLIMITED or self.opener_role[i] == ROLE_REMOTE:
            return -1
        s = self.codes.slot_of(self.grant_code[i])
        return s if s >= 0 and self.codes.fields(s)[3] > left else -1

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

    # At boot: check the files against what the state file says they must hold, report
    # an attempt that was charged but never resolved, and apply the occupancy of deposits
    # and pickups recorded after the last saved state. Seqs always go on from the saved
    # floor (above every seq ever handed out), so nothing that happened to events.log can
    # make a seq repeat. Returns (outbox damage, code store damage) to report.
    def _recover(self, now, bad, bad_codes):
        ob = self.outbox
        unresolved = self._attempt and ob.next_seq <= self._attempt
        # Records the state file saw are gone (a tail lost at a record boundary, an older
        # version of the file), or nothing is on file but a floor (lost, or a cut before the
        # first event). The floor was saved as next_seq + 1 + _SEQ_MARGIN just before the
        # event taking next_seq was appended: a cut between leaves next_seq one below.
        f = self._seq_floor
        first = ob.file_next
        if first < self._ev_mark or first < f - _SEQ_MARGIN - 1 or (f > 0 and first == 1):
            bad |= 4
        ob.skip_to(f + self._skip)
        self._seq_floor = ob.next_seq + _SEQ_MARGIN
        g, j = self.codes.mark()
        if not bad_codes & (PROBLEM_SNAPSHOT | PROBLEM_CORRUPT) and (
                g < self._codes_gen or g == self._codes_gen and j < self._codes_jlen):
            bad_codes |= PROBLEM_OLD  # older or shorter than the state says: what went is unknown
        if bad_codes & (PROBLEM_SNAPSHOT | PROBLEM_CORRUPT | PROBLEM_OLD):
            self._codes_hold = True  # saves keep the old mark until the store is emptied
        self._save_state()  # the floor before any seq above the old one is handed out
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
        if bad & 4:
            self._lost = first  # the first seq that may be missing (store_corrupt's id)
        return bad, bad_codes

    # After the damage is reported (on flash first: a cut before this finds it again at the
    # next boot), the code store empties, as a generation above any the state file saw.
    def _fail_closed(self):
        self.codes.fail_closed(self._codes_gen)
        self._codes_hold = False

    # Two alternating state files; the newest valid one wins, so bit rot in one still
    # leaves the last good state. Returns damage flags: 1 a copy damaged (or of another
    # format), 2 a copy missing or older than the other's predecessor, or the state gone
    # while other files show the box has run (then the throttle starts at its strictest).
    def _load_state(self, now):
        best = None
        bad = 0
        gens = []
        for name in ("state.0", "state.1"):
            data = self.storage.read(name)
            if data is None:
                continue
            r = frame_at(data, 0)
            if r is None or r[1] - r[0] < _STATE_LEN or bytes(data[r[0]:r[0] + 4]) != _MAGIC:
                bad |= 1
                continue
            gen = struct.unpack_from("<I", data, r[0] + 4)[0]
            if struct.unpack_from("<I", data, r[0] + 36)[0] > _SEQ_LIMIT:  # the seq floor
                bad |= 1
                continue
            gens.append(gen)
            if best is None or gen > best[0]:
                best = (gen, data, r)
        self._slack = _UNSURE  # unless a sound state says how far the clock may lag
        if best is None:
            if bad or self.outbox.next_seq > 1 or self.codes.mark()[0]:
                bad |= 2 if not bad else 0
                self.throttle.load(b"", now)  # state lost: never grant free guesses
            return bad
        gen, data, r = best
        if gen > 1 and (len(gens) < 2 or min(gens) != gen - 1) and not bad:
            bad |= 2
        (_, self._gen, self.occupied, self._floor, self._boots, self._attempt, self._applied,
         self.cmd_top, self.cmd_bits, self._seq_floor, self._ev_mark, self._codes_gen,
         self._codes_jlen, key, self.codes_cmd, slack) = struct.unpack_from(
             _STATE_FMT, data, r[0])
        self.key_gen_saved, self.key_fp = key & 0xFFFF, key >> 16
        self._floor_saved = self._floor
        if not bad and self._floor >= MIN_TIME and slack != _UNSURE:
            # this boot lost the powered-on time since that save: at most _SAVE_GAP_S more
            self._slack = min(slack + _SAVE_GAP_S, _UNSURE)
        self.occupied &= (1 << len(self.doors)) - 1
        if self._floor > MAX_TIME:
            self._floor = MAX_TIME
        t = r[0] + _STATE_LEN
        ok = self.throttle.load(bytes(data[t:t + _THROTTLE_LEN]), now)
        if bad:
            # The damaged or missing copy may be the newer one, with one command's window
            # in it: jump the window past any seq it can have taken and mark the window
            # seen, so that command cannot run again. The backend's counter follows the
            # state summary's cmd_seq (docs/protocol.md section 5). It may also have held
            # one charged guess: charged again.
            self.cmd_top = min(self.cmd_top + _CMD_JUMP, 0xFFFFFFFF)
            self.cmd_bits = 0xFFFFFFFF
            # Its seq floor may have been one margin higher: seqs below that may be out
            # (_recover skips them after checking events.log against this copy).
            self._skip = _SEQ_MARGIN + 1
            self.throttle.failure(now, self.codes.count())
        if r[1] - t - _THROTTLE_LEN == 7 * len(self.doors):  # else: compartments changed
            for i in range(len(self.doors)):
                self.grant_code[i], self.opener_role[i], self.grant_uses[i] = struct.unpack_from(
                    _GRANT, data, t + _THROTTLE_LEN + 7 * i)
                if self.opener_role[i]:
                    self._restored |= 1 << i
        return bad | (0 if ok else 1)

    def _save_state(self):
        self._gen += 1
        w = self.wall(self._now)  # each save keeps the clock's newest time, not only hourly ones
        if w > self._floor:
            self._floor = w
        g, j = (self._codes_gen, self._codes_jlen) if self._codes_hold else self.codes.mark()
        head = struct.pack(_STATE_FMT, _MAGIC, self._gen, self.occupied, self._floor,
                           self._boots, self._attempt, self._applied, self.cmd_top,
                           self.cmd_bits, self._seq_floor, self.outbox.file_next, g, j,
                           self.key_gen_saved | self.key_fp << 16, self.codes_cmd,
                           self._slack)
        grants = bytearray(7 * len(self.doors))
        for i in range(len(self.doors)):
            struct.pack_into(_GRANT, grants, 7 * i, self.grant_code[i], self.opener_role[i],
                             self.grant_uses[i])
        self.storage.replace("state.%d" % (self._gen & 1),
                             frame(head + self.throttle.dump() + grants))
        self._floor_saved = self._floor
        self._codes_gen, self._codes_jlen = g, j
