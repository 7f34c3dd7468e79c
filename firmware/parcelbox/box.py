# The box core: joins keypad, code entry, code store, throttle, compartments, grants, clock,
# outbox and state file into one sans-I/O state machine. Inputs carry `now` (ms ticks).

from parcelbox import config, events, feedback, ticks
from parcelbox.clock import Clock
from parcelbox.codestore import (PROBLEM_OLD, ROLE_DRIVER, ROLE_OWNER, ROLE_RECIPIENT,
                                 ROLE_REMOTE, ROLE_TECH, UNLIMITED, CodeStore)
from parcelbox.entry import CodeEntry
from parcelbox import entry as _entry
from parcelbox.hmac256 import derive
from parcelbox.keypad import Keypad
from parcelbox import lock as _lock
from parcelbox.lock import Compartment
from parcelbox.grants import Grants
from parcelbox.outbox import Outbox
from parcelbox.statefile import SEQ_MARGIN, StateFile
from parcelbox.throttle import Throttle

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

_CMD_JUMP = const(4096)  # command seqs skipped when a state copy is found damaged
_ACT_SLICE = const(32)  # codes tick() counts at a time for the throttle (_count_active)


# The earlier of two ticks, either of which may be None.
def _earlier(a, b):
    if a is None or (b is not None and ticks.diff(b, a) < 0):
        return b
    return a


class Box:
    # storage: the Storage for all state; box_key: the box's 32-byte secret.
    # on_event(seq, kind, comp, code_id, arg, t) is called for every event, boot included.
    def __init__(self, storage, box_key, settings=None, now=0, on_event=None):
        if not isinstance(box_key, (bytes, bytearray)) or len(box_key) < 16:
            raise ValueError("box key must be at least 16 bytes")
        cfg = config.make(settings)
        self.cfg = cfg
        self.storage = storage
        self.on_event = on_event
        self.keypad = Keypad(cfg["keypad_rows"], cfg["keypad_cols"], cfg["keypad_layout"],
                             cfg["debounce_ms"])
        self.entry = CodeEntry(cfg["code_len"], cfg["submit_on_length"], cfg["entry_timeout_ms"])
        self.throttle = Throttle(cfg["code_len"], cfg["free_tries"], cfg["lockout_base_ms"],
                                 cfg["lockout_max_ms"], cfg["target_years"])
        self.player = feedback.Player()
        n = cfg["compartments"]
        self.doors = []
        for i in range(n):
            self.doors.append(Compartment(i + 1, cfg["pulse_ms"], cfg["max_on_ms"],
                                          cfg["cooldown_ms"], cfg["open_window_ms"],
                                          cfg["left_open_ms"], cfg["door_debounce_ms"]))
        # The unlock granted to each compartment, saved with the state before the solenoid
        # fires, so a power cut with the door open loses no deposit. Its arrays under their
        # old names too (parcelbox.remote, the simulator and tests read them).
        self.grants = Grants(n)
        self.opener_role = self.grants.role
        self.grant_code = self.grants.code
        self.grant_uses = self.grants.uses
        self.occupied = 0  # bit i: compartment i+1 holds a parcel
        self.service_code = -1  # code id of the technician while in service mode
        self.faults = 0  # flash errors survived since boot
        self._act_count = self._act_changes = self._act_minute = -1
        self._act_pos = -1  # next slot of the count in progress (-1: none running)
        self._act_sum = self._act_run = self._act_wall = 0  # its sum, store changes, time
        self._svc_num = 0
        self._svc_last = now
        self._boots = 0
        self._now = now  # the latest tick seen: every state save carries wall() as the floor
        self.clock = Clock(now)
        self.state = StateFile(storage)
        self.key_gen_saved = 0  # wire key generation, as the remote last told the state file
        self.key_fp = 0  # ...and its key's fingerprint (parcelbox.remote; 0: the box key)
        self.codes_cmd = 0  # highest seq of an add or revoke applied (parcelbox.remote)
        self._lost = 0  # first event seq that may be missing (boot)
        self._attempt = 0  # seq the charged attempt's wrong_code event takes (0: none)
        self._applied = 0  # occupancy includes every deposit/pickup up to this seq
        self.cmd_top = self.cmd_bits = 0  # command anti-replay window (parcelbox.remote)
        self.outbox = Outbox(storage, cfg["outbox_capacity"])
        bad_outbox = self.outbox.load(False)  # repaired only once its report is on flash
        self.codes = CodeStore(storage, derive(box_key, b"code"), cfg["max_codes"])
        bad_codes = self.codes.load()
        bad_state = self._load_state(now)
        if bad_state & 3:
            # A state copy damaged or missing: it may have been the newer one, whose marks
            # alone could tell whether the code files and events.log went back. What they
            # hold cannot be vouched for: the store empties (reported; the backend
            # resyncs), and events after the older copy's mark may be gone (reported).
            bad_codes |= PROBLEM_OLD
            bad_outbox |= 4
        self._boots += 1
        # first: it must see the outbox exactly as the cut left it; it saves the state
        bad_outbox, bad_codes = self._recover(now, bad_outbox, bad_codes)
        if bad_outbox:
            # appended after the damaged bytes: a cut before this finds them again
            self._event(events.STORE_CORRUPT, 0, self._lost, events.FILE_OUTBOX | bad_outbox << 8,
                        now)
            self.outbox.repair()
        if bad_codes:
            self._event(events.STORE_CORRUPT, 0, 0, events.FILE_CODES | bad_codes << 8, now)
        if self.state.hold:
            self.state.fail_closed(self.codes)
        self._spend_grants()
        if bad_state:
            self._event(events.STORE_CORRUPT, 0, 0, events.FILE_STATE | bad_state << 8, now)
        self._event(events.BOOT, 0, 0, self._boots, now)

    # ---- inputs ------------------------------------------------------------

    # One keypad scan frame (bitmap of pressed keys); allocation-free unless a key is accepted.
    def keypad_frame(self, bits, now):
        k = self.keypad.update(bits, now)
        if k >= 0:
            self.key(k, now)
        return k

    # The entry points below never let a flash error (OSError) escape into the
    # superloop: it is counted, ERROR is shown, and the solenoids stay safe because
    # their level is computed from time. Whatever was not written is not acted upon.

    # One accepted key press (ASCII code).
    def key(self, ch, now):
        self._now = now
        try:
            self._key(ch, now)
        except OSError:
            self._fault(now)

    # A raw door-sensor sample of compartment `comp` (1-based).
    def door(self, comp, is_open, now):
        self._now = now
        try:
            return self._door(comp, is_open, now)
        except OSError:
            self._fault(now)
            return _lock.NONE

    # Time passes: timeouts of entry, unlock windows, open doors, service mode.
    def tick(self, now):
        self._now = now
        try:
            self._tick(now)
        except OSError:
            self._fault(now)

    def _fault(self, now):
        self.faults += 1
        self.player.start(feedback.ERROR, now)

    def _key(self, ch, now):
        if self.service_code >= 0:
            self._service_key(ch, now)
            return
        r = self.entry.key(ch, now)
        if r == _entry.SUBMIT:
            code = self.entry.code()
            self.entry.clear()
            self._submit(code, now)
        elif r == _entry.DIGIT:
            self.player.start(feedback.KEY, now)
        elif r == _entry.CLEARED or r == _entry.CANCEL:
            self.player.start(feedback.CLEARED, now)
        elif r == _entry.SHORT or r == _entry.OVERFLOW:
            self.player.start(feedback.REJECTED, now)

    def _door(self, comp, is_open, now):
        d = self._compartment(comp)
        known = d.door_known
        ev = d.door(is_open, now)
        if not known and d.door_known:
            self._boot_door(comp, d, now)
        if ev == _lock.OPENED:
            g = self.grants
            self._event(events.OPENED, comp, d.code_id,
                        g.role[comp - 1] | g.left(comp - 1, self.codes) << 8, now)
        elif ev == _lock.FORCED:
            self.grants.role[comp - 1] = 0
            self._event(events.FORCED, comp, 0, 0, now)
            self.player.start(feedback.ERROR, now)
        elif ev == _lock.CLOSED:
            self._closed(comp, d, now)
        return ev

    def _tick(self, now):
        if self.entry.tick(now) == _entry.TIMEOUT:
            self.player.start(feedback.CLEARED, now)
        g = self.grants
        for i in range(len(self.doors)):
            d = self.doors[i]
            ev = d.tick(now)
            if ev == _lock.NOT_OPENED:
                # One use may have unlocked several compartments (an owner code for
                # all): it is not given back then, so it can never grow into two. A
                # remote unlock, a technician's service mode, an unlimited code: no use
                # was spent (grant_uses UNLIMITED), none is given back.
                back = not (g.shared >> i) & 1 and g.uses[i] != UNLIMITED
                if back:
                    self.codes.give_back(d.code_id)
                left = g.left(i, self.codes)
                g.clear(i)
                self._event(events.NOT_OPENED, i + 1, d.code_id, (0 if back else 4) | left << 8,
                            now)
                self._save_state()
            elif ev == _lock.LEFT_OPEN:
                self._event(events.LEFT_OPEN, i + 1, d.code_id, 0, now)
        if self.service_code >= 0 and ticks.diff(now, self._svc_last) > self.cfg["service_timeout_ms"]:
            self._leave_service(now)
        self._count_active(now)
        if self.clock.tick(now):  # hourly: the floor follows the clock
            self._raise_floor(now)
        end = self.codes.next_end
        if end and self.wall(now) > end:
            self._sweep(now)

    # A code's window closed (the earliest not_after passed): it goes from flash now, and
    # the floor with it, so neither a clock set back nor a reboot without time revives it.
    # The floor is on flash first: should the journal's expire record be lost later (the
    # file back at an older version), the codes it removed can never open again.
    def _sweep(self, now):
        w = self.wall(now)
        end = self.codes.find_end()  # the code that set next_end may have gone otherwise
        if not end or w <= end:
            return
        if self.clock.advance(w):
            self._save_state()
        n = self.codes.expire(w)
        if n:
            self._event(events.EXPIRED, 0, 0, n, now)

    # ---- outputs -----------------------------------------------------------

    # The level the shell drives compartment `comp`'s solenoid to, now.
    def solenoid(self, comp, now):
        return self._compartment(comp).energised(now)

    # Earliest tick at which tick() or an output needs attention (None: nothing pending):
    # entry timeout, lock and door timers, throttle, LED/buzzer steps, service timeout,
    # the hourly sweep.
    def next_deadline(self, now):
        best = _earlier(self.entry.deadline(), self.throttle.next_deadline(now))
        for d in self.doors:
            best = _earlier(best, d.next_deadline(now))
        best = _earlier(best, self.player.next_deadline(now))
        if self.service_code >= 0:
            best = _earlier(best, ticks.add(self._svc_last, self.cfg["service_timeout_ms"] + 1))
        best = _earlier(best, self.clock.next_save)
        end = self.codes.next_end
        if end:  # the next window to close, at most an hour ahead (ticks stay small)
            s = end + 1 - self.wall(now)
            best = _earlier(best, ticks.add(now, min(max(s, 0), 3600) * 1000))
        return best

    # ---- the decision ------------------------------------------------------

    def _submit(self, code, now):
        wait = self.throttle.check(now)
        if wait > 0:
            self.player.start(feedback.THROTTLED, now)
            return
        wall = self.wall(now)
        # The attempt is charged and on flash before the code is even looked up, so
        # cutting the power during the check never yields a free guess; a correct code
        # is refunded. The seq its wrong_code event will take is saved with the charge:
        # a boot that finds no such event reports it (_recover).
        lockout = self.throttle.failure(now, self._active(wall))
        self._attempt = self.outbox.next_seq
        self._save_state()
        slot = self.codes.find(code)
        reason = events.REASON_UNKNOWN
        if slot >= 0:
            code_id, role, comp, uses, nb, na = self.codes.fields(slot)
            if nb and wall < nb:
                reason = events.REASON_NOT_YET_VALID
            elif self.clock.ended(na, wall):  # or, after power cuts without time, it may be
                reason = events.REASON_EXPIRED
            elif uses == 0:
                reason = events.REASON_USED_UP
            else:
                self.throttle.refund(now)
                self._attempt = 0
                self._accept(slot, code_id, role, comp, now)  # saves the refund
                return
        # Every rejection counts alike, so the throttle leaks nothing about stored codes.
        self._wrong(reason, lockout, now)

    # Codes active at `wall`, for the throttle's cap. Counting them reads every stored code,
    # so it never happens between the final key and the unlock: tick() counts a slice at a
    # time (_count_active). The count holds until the store changes or its minute passes
    # (windows open and close by the second); while none holds, every stored code is taken
    # as active: never fewer than the truth, so the cap can only be stricter.
    def _active(self, wall):
        c = self.codes
        if c.changes == self._act_changes and wall // 60 == self._act_minute:
            return self._act_count
        return c.count()

    # One slice of the count _active() uses, begun when the last one no longer holds and
    # begun again when the store changes in the middle (slots move when codes go).
    def _count_active(self, now):
        c = self.codes
        if self._act_pos < 0 or c.changes != self._act_run:
            wall = self.wall(now)
            if c.changes == self._act_changes and wall // 60 == self._act_minute:
                return
            self._act_pos = self._act_sum = 0
            self._act_run = c.changes
            self._act_wall = wall
        end = self._act_pos + _ACT_SLICE
        self._act_sum += c.active_count(self._act_wall, self._act_pos, end)
        self._act_pos = end
        if end >= c.count():
            self._act_count = self._act_sum
            self._act_changes = self._act_run
            self._act_minute = self._act_wall // 60
            self._act_pos = -1

    def _wrong(self, reason, lockout, now):
        self._event(events.WRONG_CODE, 0, 0, reason | (self.throttle.failures << 8), now)
        if lockout:
            self._event(events.THROTTLED, 0, 0, (lockout + 999) // 1000, now)
            self.player.start(feedback.THROTTLED, now)
        else:
            self.player.start(feedback.REJECTED, now)

    def _accept(self, slot, code_id, role, comp, now):
        n = len(self.doors)
        if role == ROLE_TECH:
            self._save_state()
            self._enter_service(code_id, now)
            return
        if comp > n:
            self._save_state()
            self._refuse(comp, code_id, events.REFUSED_EMPTY, now)
            return
        if role == ROLE_OWNER:
            targets = ((1 << n) - 1) if comp == 0 else (1 << (comp - 1))
            # A compartment still unlocking or open keeps the grant it has (its role, its
            # shared use): granting it again would overwrite that and give a use back twice.
            for i in range(n):
                d = self.doors[i]
                if targets & (1 << i) and (d.state != _lock.LOCKED or d.door_open):
                    targets &= ~(1 << i)
            if targets == 0:
                targets = -1
        elif role == ROLE_DRIVER:
            targets = self._pick(comp, False)
        elif role == ROLE_RECIPIENT and (comp or n == 1):
            targets = self._pick(comp, True)
        else:  # a recipient code for "any" compartment on a bank could open another's parcel
            targets = 0
        if targets <= 0:
            self._save_state()
            why = events.REFUSED_BUSY if targets < 0 else (
                events.REFUSED_OCCUPIED if role == ROLE_DRIVER else events.REFUSED_EMPTY)
            self._refuse(comp, code_id, why, now)
            return
        # The grant, then the used-up use, are durable before any solenoid fires.
        uses = self.codes.fields(slot)[3]
        g = self.grants
        for i in range(n):
            if targets & (1 << i):  # a grant of this boot (see _boot_door)
                g.grant(i, role, code_id, uses - 1 if uses != UNLIMITED else UNLIMITED)
        self._save_state()
        self.codes.consume(slot)
        opened = 0
        for i in range(n):
            if targets & (1 << i):
                r = self.doors[i].unlock(now, code_id)
                if r == _lock.STARTED or r == _lock.QUEUED:
                    opened |= 1 << i
                else:
                    g.clear(i)
        if opened & (opened - 1):
            g.shared |= opened
        if opened != targets:
            self._save_state()
        if opened == 0:  # every target busy or cooling: nothing fired, the use comes back
            self.codes.give_back(code_id)
            self._refuse(comp, code_id, events.REFUSED_BUSY, now)
            return
        self.player.start(feedback.ACCEPTED, now)

    # The compartment a driver (want_full=False) or recipient may open, as a bit mask;
    # 0 if none has the right occupancy, -1 if one has but is busy (unlocking, open).
    def _pick(self, comp, want_full):
        busy = 0
        for i in range(len(self.doors)):
            if comp and i != comp - 1:
                continue
            if ((self.occupied >> i) & 1 == 1) == want_full:
                d = self.doors[i]
                if d.state == _lock.LOCKED and not d.door_open:
                    return 1 << i
                busy = -1
        return busy

    def _refuse(self, comp, code_id, reason, now):
        self._event(events.REFUSED, comp, code_id, reason, now)
        self.player.start(feedback.BUSY, now)

    # ---- service mode: digits then '#' open that compartment; '*' leaves -----

    def _enter_service(self, code_id, now):
        self.service_code = code_id
        self._svc_num = 0
        self._svc_last = now
        self._event(events.SERVICE, 0, code_id, 1, now)
        self.player.start(feedback.SERVICE, now)

    # The technician's code still stands: stored, and its window open now.
    def _service_valid(self, now):
        s = self.codes.slot_of(self.service_code)
        if s < 0:
            return False
        f = self.codes.fields(s)
        w = self.wall(now)
        return f[1] == ROLE_TECH and not (f[4] and w < f[4]) and not self.clock.ended(f[5], w)

    def _leave_service(self, now):
        self._event(events.SERVICE, 0, self.service_code, 0, now)
        self.service_code = -1
        self.player.start(feedback.CLEARED, now)

    def _service_key(self, ch, now):
        self._svc_last = now
        if 48 <= ch <= 57:
            self._svc_num = (self._svc_num * 10 + ch - 48) % 100
            self.player.start(feedback.KEY, now)
        elif ch == 35:  # '#'
            c = self._svc_num
            self._svc_num = 0
            r = -1
            if not self._service_valid(now):  # revoked or expired since it was typed
                self._leave_service(now)
                self.player.start(feedback.REJECTED, now)
                return
            if 1 <= c <= len(self.doors):
                r = self.doors[c - 1].unlock(now, self.service_code)
            if r == _lock.STARTED or r == _lock.QUEUED:
                self.grants.grant(c - 1, ROLE_TECH, self.service_code, UNLIMITED)
                self._save_state()
                self.player.start(feedback.ACCEPTED, now)
            else:
                self.player.start(feedback.REJECTED, now)
        elif ch == 42:  # '*'
            self._leave_service(now)

    # ---- for the remote (parcelbox.remote) ---------------------------------

    # Record an event (durable when it returns); its seq.
    def event(self, kind, comp, code_id, arg, now):
        return self._event(kind, comp, code_id, arg, now)

    # A flash error survived: counted, ERROR shown.
    def fault(self, now):
        self._fault(now)

    def boots(self):
        return self._boots

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
        self.grants.grant(i, ROLE_REMOTE, seq, UNLIMITED)
        try:
            self._save_state()
        except OSError:  # not on flash: no grant in RAM either (a later save would keep it)
            self.grants.clear(i)
            raise
        r = d.unlock(now, seq)
        if r != _lock.STARTED and r != _lock.QUEUED:
            self.grants.clear(i)
            self._save_state()
            return False
        self.player.start(feedback.ACCEPTED, now)
        return True

    # ---- the clock (parcelbox.clock; docs/box.md section 7) -----------------

    # Current epoch seconds: trusted, or the newest time ever trusted plus uptime.
    def wall(self, now):
        return self.clock.wall(now)

    def clock_trusted(self):
        return self.clock.trusted

    # Seconds the clock may lag the time the box knew before its power cuts (0: none;
    # 0xFFFFFFFF: unknown); only the backend's sealed time ends it (docs/box.md section 7).
    def clock_slack(self):
        return self.clock.slack

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

    def _set_time(self, t, now, source, fresh):
        c = self.clock
        w = c.wall(now)
        why = c.check(t, w, source)
        if why:
            n = c.refusal(now)  # at most one report per 10 minutes, with a count
            if n >= 0:
                t = t if type(t) is int and 0 <= t <= 0xFFFFFFFF else 0
                self._event(events.TIME_REFUSED, source, t, why | n << 8, now)
                c.reported()
            return False
        c.take(t, w, now, source, fresh)
        self._raise_floor(now)  # the clock may have jumped: the floor now, the sweep soon
        return True

    # A new core built in the same power-on (settings changed) takes over the old Box's
    # clock: its time, whether it is trusted, and its slack (Clock.take_over).
    def take_clock(self, old, now):
        self.clock.take_over(old.clock, now)

    # Persist the newest time as the floor (hourly and whenever a time source is taken),
    # so a reboot never turns the clock back further than that save. Expired codes do not
    # wait for it: the sweep removes each at its not_after (_tick).
    def _raise_floor(self, now):
        if self.clock.advance(self.clock.wall(now)):
            self._save_state()

    # ---- doors and grants across a power cut -------------------------------

    # The first stable sample of a door after boot. Open with a saved grant: the
    # opening goes on (its close still makes the deposit or pickup), and its use is spent
    # if the journal lost it. Open without one: forced (arg 1: found open). Closed with a
    # grant: not_opened, arg 1: the use is spent (_spend_grants), whether or not the
    # journal held it (whether the door opened while the power was off is unknown, and a
    # journal that lost the use's record after the solenoid fired looks the same as a cut
    # before that record). A grant made in this boot before the door's first stable sample
    # (a code or an unlock in the first 50 ms) is not the power cut's: the lock's own events
    # follow it as usual.
    def _boot_door(self, comp, d, now):
        i = comp - 1
        g = self.grants
        restored = g.take_restored(i)
        if g.role[i] and not restored:
            return
        if d.door_open and g.role[i]:
            d.authorised = True
            d.code_id = g.code[i]
            self._event(events.OPENED, comp, d.code_id, g.role[i] | g.left(i, self.codes) << 8,
                        now)
        elif d.door_open:
            self._event(events.FORCED, comp, 0, 1, now)
        elif g.role[i]:
            self._event(events.NOT_OPENED, comp, g.code[i], 1 | g.left(i, self.codes) << 8, now)
            g.clear(i)
            self._save_state()

    # At boot, before anything can be typed: each saved grant's use is spent, also when
    # the journal does not hold it (the door, open or closed, then tells _boot_door what
    # to report).
    def _spend_grants(self):
        g = self.grants
        for i in range(len(self.doors)):
            s = g.unspent(i, self.codes) if (g.restored >> i) & 1 else -1
            if s >= 0:
                self.codes.consume(s)

    # Events first, then the occupancy they imply: a power cut between the two is
    # repaired at boot from the events still in the outbox (_recover).
    def _closed(self, comp, d, now):
        g = self.grants
        role = g.role[comp - 1]
        self._event(events.CLOSED, comp, d.code_id, role, now)
        bit = 1 << (comp - 1)
        seq = 0
        if role == ROLE_DRIVER:
            seq = self._event(events.DEPOSIT, comp, d.code_id, 0, now)
        elif role == ROLE_RECIPIENT:
            seq = self._event(events.PICKUP, comp, d.code_id, 0, now)
        elif role == ROLE_OWNER and self.occupied & bit:
            seq = self.outbox.next_seq - 1  # the CLOSED event, arg = owner
        granted = role or g.code[comp - 1]
        g.clear(comp - 1)
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

    # At boot: check the files against what the state file says they must hold (it goes
    # on from its seq floor: StateFile.check), report an attempt that was charged but never
    # resolved, and apply the occupancy of deposits and pickups recorded after the last
    # saved state. Returns (outbox damage, code store damage) to report.
    def _recover(self, now, bad, bad_codes):
        ob = self.outbox
        unresolved = self._attempt and ob.next_seq <= self._attempt
        first = ob.file_next
        bad, bad_codes = self.state.check(ob, self.codes, bad, bad_codes)
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

    # ---- persistence -------------------------------------------------------

    def _compartment(self, comp):
        if not 1 <= comp <= len(self.doors):
            raise ValueError("no such compartment")
        return self.doors[comp - 1]

    def _event(self, kind, comp, code_id, arg, now):
        t = self.wall(now) if self.clock.trusted else 0  # 0: the box does not know the time
        self._seq_room()
        seq = self.outbox.add(kind, comp, code_id, arg, t)
        if self.on_event is not None:
            self.on_event(seq, kind, comp, code_id, arg, t)
        return seq

    # Before an event takes seq next_seq (or next_seq + 1 with an overflow summary): the
    # floor saved on flash must stay above it, so a lost events.log never repeats a seq.
    def _seq_room(self):
        st = self.state
        n = self.outbox.next_seq + 1
        if n >= st.seq_floor:
            old = st.seq_floor
            st.seq_floor = n + SEQ_MARGIN
            try:
                self._save_state()
            except OSError:
                st.seq_floor = old
                raise

    # Two alternating state files; the newest valid one wins, so bit rot in one still
    # leaves the last good state. Returns damage flags: 1 a copy damaged (or of another
    # format), 2 a copy missing or older than the other's predecessor, or the state gone
    # while other files show the box has run (then the throttle starts at its strictest).
    def _load_state(self, now):
        bad, head, throttle, grants = self.state.load()
        if head is None:
            if bad or self.outbox.next_seq > 1 or self.codes.mark()[0]:
                bad |= 2 if not bad else 0
                self.throttle.load(b"", now)  # state lost: never grant free guesses
            return bad
        (occupied, floor, self._boots, self._attempt, self._applied, self.cmd_top, self.cmd_bits,
         key, self.codes_cmd, slack) = head
        self.key_gen_saved, self.key_fp = key & 0xFFFF, key >> 16
        self.clock.restore(floor, slack, not bad)
        self.occupied = occupied & ((1 << len(self.doors)) - 1)
        ok = self.throttle.load(throttle, now)
        if bad:
            # The damaged or missing copy may be the newer one, with one command's window
            # in it: jump the window past any seq it can have taken and mark the window
            # seen, so that command cannot run again. The backend's counter follows the
            # state summary's cmd_seq (docs/protocol.md section 5). It may also have held
            # one charged guess: charged again.
            self.cmd_top = min(self.cmd_top + _CMD_JUMP, 0xFFFFFFFF)
            self.cmd_bits = 0xFFFFFFFF
            self.throttle.failure(now, self.codes.count())
        self.grants.unpack(grants)  # none if the compartments changed
        return bad | (0 if ok else 1)

    def _save_state(self):
        c = self.clock
        c.catch_up(self._now)  # each save keeps the clock's newest time, not only hourly ones
        self.state.save(self.occupied, c.floor, self._boots, self._attempt, self._applied,
                        self.cmd_top, self.cmd_bits, self.outbox, self.codes,
                        self.key_gen_saved | self.key_fp << 16, self.codes_cmd, c.slack,
                        self.throttle, self.grants.pack())
        c.saved = c.floor
