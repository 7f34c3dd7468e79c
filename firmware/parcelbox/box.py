# The box core: joins keypad, code entry, code store, throttle, compartments and
# outbox into one sans-I/O state machine. Inputs carry `now` (ms ticks); no I/O but Storage.

from parcelbox import config, events, feedback, ticks
from parcelbox.codestore import (PROBLEM_OLD, ROLE_DRIVER, ROLE_OWNER, ROLE_RECIPIENT,
                                 ROLE_TECH, UNLIMITED, CodeStore)
from parcelbox.entry import CodeEntry
from parcelbox import entry as _entry
from parcelbox.hmac256 import derive
from parcelbox.keypad import Keypad
from parcelbox import lock as _lock
from parcelbox.lock import Compartment
from parcelbox.outbox import Outbox
from parcelbox.boxstate import BoxState
from parcelbox.throttle import Throttle

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

_DAY_MS = const(86400000)
_EXPIRE_EVERY_MS = const(3600000)
_ACT_SLICE = const(32)  # codes tick() counts at a time for the throttle (_count_active)


# The earlier of two ticks, either of which may be None.
def _earlier(a, b):
    if a is None or (b is not None and ticks.diff(b, a) < 0):
        return b
    return a


class Box(BoxState):
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
        # The unlock granted to each compartment: role and code id, saved with the state
        # before the solenoid fires, so a power cut with the door open loses no deposit.
        self.opener_role = bytearray(n)
        self.grant_code = [0] * n
        self.grant_uses = [UNLIMITED] * n  # the code's uses left once the grant's use is spent
        self._shared = 0  # bit i: compartment i+1 was unlocked with others by one use
        self._restored = 0  # bit i: compartment i+1's grant came from the state file at boot
        self.occupied = 0  # bit i: compartment i+1 holds a parcel
        self.service_code = -1  # code id of the technician while in service mode
        self.faults = 0  # flash errors survived since boot
        self._act_count = self._act_changes = self._act_minute = -1
        self._act_pos = -1  # next slot of the count in progress (-1: none running)
        self._act_sum = self._act_run = self._act_wall = 0  # its sum, store changes, time
        self._svc_num = 0
        self._svc_last = now
        self._gen = 0
        self._boots = 0
        self._floor = 0  # newest wall-clock time ever trusted, epoch seconds
        self._floor_saved = 0  # the floor as on flash
        self._now = now  # the latest tick seen: every state save carries wall() as the floor
        self._tr_tick = None  # time_refused: last report, refusals since
        self._tr_count = 0
        self._ev_mark = self._codes_gen = self._codes_jlen = 0  # what the files held at the save
        self.key_gen_saved = 0  # wire key generation, as the remote last told the state file
        self.key_fp = 0  # ...and its key's fingerprint (parcelbox.remote; 0: the box key)
        self._slack = 0  # seconds wall() may lag the time known before power cuts (_load_state)
        self.codes_cmd = 0  # highest seq of an add or revoke applied (parcelbox.remote)
        self._lost = 0  # first event seq that may be missing (boot)
        self._codes_hold = False  # code files damaged, not yet emptied: keep the saved mark
        self._attempt = 0  # seq the charged attempt's wrong_code event takes (0: none)
        self._applied = 0  # occupancy includes every deposit/pickup up to this seq
        self.cmd_top = self.cmd_bits = 0  # command anti-replay window (parcelbox.remote)
        self._seq_floor = 0  # every event seq ever handed out is below this saved value
        self._skip = 0  # seqs the boot skips above the floor (a state copy lost: its floor)
        self._wall_base = 0
        self._wall_tick = now
        self._trusted = False
        self._next_expire = now
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
        self._wall_base = self._floor
        # first: it must see the outbox exactly as the cut left it; it saves the state
        bad_outbox, bad_codes = self._recover(now, bad_outbox, bad_codes)
        if bad_outbox:
            # appended after the damaged bytes: a cut before this finds them again
            self._event(events.STORE_CORRUPT, 0, self._lost, events.FILE_OUTBOX | bad_outbox << 8,
                        now)
            self.outbox.repair()
        if bad_codes:
            self._event(events.STORE_CORRUPT, 0, 0, events.FILE_CODES | bad_codes << 8, now)
        if self._codes_hold:
            self._fail_closed()
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
            self._event(events.OPENED, comp, d.code_id,
                        self.opener_role[comp - 1] | self._left(comp - 1) << 8, now)
        elif ev == _lock.FORCED:
            self.opener_role[comp - 1] = 0
            self._event(events.FORCED, comp, 0, 0, now)
            self.player.start(feedback.ERROR, now)
        elif ev == _lock.CLOSED:
            self._closed(comp, d, now)
        return ev

    def _tick(self, now):
        if self.entry.tick(now) == _entry.TIMEOUT:
            self.player.start(feedback.CLEARED, now)
        for i in range(len(self.doors)):
            d = self.doors[i]
            ev = d.tick(now)
            if ev == _lock.NOT_OPENED:
                # One use may have unlocked several compartments (an owner code for
                # all): it is not given back then, so it can never grow into two. A
                # remote unlock, a technician's service mode, an unlimited code: no use
                # was spent (grant_uses UNLIMITED), none is given back.
                back = not (self._shared >> i) & 1 and self.grant_uses[i] != UNLIMITED
                if back:
                    self.codes.give_back(d.code_id)
                left = self._left(i)
                self._ungrant(i)
                self._event(events.NOT_OPENED, i + 1, d.code_id, (0 if back else 4) | left << 8,
                            now)
                self._save_state()
            elif ev == _lock.LEFT_OPEN:
                self._event(events.LEFT_OPEN, i + 1, d.code_id, 0, now)
        if self.service_code >= 0 and ticks.diff(now, self._svc_last) > self.cfg["service_timeout_ms"]:
            self._leave_service(now)
        self._count_active(now)
        if ticks.diff(now, self._wall_tick) > _DAY_MS:  # keep tick differences small
            self._wall_base = self.wall(now)
            self._wall_tick = now
        if ticks.reached(now, self._next_expire):  # hourly: the floor follows the clock
            self._next_expire = ticks.add(now, _EXPIRE_EVERY_MS)
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
        if self._floor_saved < w:
            self._floor = w
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
        best = _earlier(best, self._next_expire)
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
            elif self._ended(na, wall):  # or, after power cuts without time, it may be
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
        for i in range(n):
            if targets & (1 << i):
                self.opener_role[i] = role
                self.grant_code[i] = code_id
                self.grant_uses[i] = uses - 1 if uses != UNLIMITED else UNLIMITED
        self._restored &= ~targets   # a grant of this boot (see _boot_door)
        self._save_state()
        self.codes.consume(slot)
        opened = 0
        for i in range(n):
            if targets & (1 << i):
                r = self.doors[i].unlock(now, code_id)
                if r == _lock.STARTED or r == _lock.QUEUED:
                    opened |= 1 << i
                else:
                    self._ungrant(i)
        if opened & (opened - 1):
            self._shared |= opened
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
        return f[1] == ROLE_TECH and not (f[4] and w < f[4]) and not self._ended(f[5], w)

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
                self.opener_role[c - 1] = ROLE_TECH
                self.grant_code[c - 1] = self.service_code
                self.grant_uses[c - 1] = UNLIMITED
                self._restored &= ~(1 << (c - 1))
                self._save_state()
                self.player.start(feedback.ACCEPTED, now)
            else:
                self.player.start(feedback.REJECTED, now)
        elif ch == 42:  # '*'
            self._leave_service(now)

    # ---- persistence -------------------------------------------------------

    def _compartment(self, comp):
        if not 1 <= comp <= len(self.doors):
            raise ValueError("no such compartment")
        return self.doors[comp - 1]

    def _event(self, kind, comp, code_id, arg, now):
        t = self.wall(now) if self._trusted else 0  # 0: the box does not know the time
        self._seq_room()
        seq = self.outbox.add(kind, comp, code_id, arg, t)
        if self.on_event is not None:
            self.on_event(seq, kind, comp, code_id, arg, t)
        return seq
