# The state file (docs/storage.md section 2): two alternating copies of one frame, a "PBS3"
# head, the throttle, a grant per compartment; and the marks it keeps on the other files.
import struct

from parcelbox.codestore import PROBLEM_CORRUPT, PROBLEM_OLD, PROBLEM_SNAPSHOT
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
# the box knew before its power cuts; clock.UNSURE: unknown).
_STATE_FMT = "<4sIIIIIIIIIIIIIII"
_STATE_LEN = const(64)
_MAGIC = b"PBS3"
# Every event seq handed out stays below the saved floor, raised this far ahead when
# reached: one state write per 256 events; a boot always continues from the floor, so a
# seq is never handed out twice whatever happened to events.log (docs/box.md section 7).
SEQ_MARGIN = const(256)
_THROTTLE_LEN = const(16)  # throttle.STATE_LEN; then 7 bytes per compartment: grant
_SEQ_LIMIT = 0x7F000000    # a seq floor above is damage (2 billion events: never reached),
                           # leaving the outbox's seqs room below its own limit (2^31-1)


class StateFile:
    # Its own state: the generation of the newest copy, the event seq floor, and the marks
    # the newest save recorded (events.log's next seq, the code store's generation and
    # journal length), against which the boot checks the other files (check).
    def __init__(self, storage):
        self._st = storage
        self.gen = 0
        self.seq_floor = 0  # every event seq ever handed out is below this saved value
        self.skip = 0  # seqs the boot skips above the floor (a state copy lost: its floor)
        self._ev_mark = self._codes_gen = self._codes_jlen = 0
        self.hold = False  # code files damaged, not yet emptied: saves keep the saved mark

    # The newest valid copy: (bad, head, throttle, grants). bad: 1 a copy damaged (or of
    # another format), 2 a copy missing or older than the other's predecessor. head: None
    # if no copy is valid, else (occupied, floor, boots, attempt, applied, cmd_top,
    # cmd_bits, key, codes_cmd, slack); throttle its saved state, grants the bytes after it.
    def load(self):
        best = None
        bad = 0
        gens = []
        for name in ("state.0", "state.1"):
            data = self._st.read(name)
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
        if best is None:
            return bad, None, None, None
        gen, data, r = best
        if gen > 1 and (len(gens) < 2 or min(gens) != gen - 1) and not bad:
            bad |= 2
        (_, self.gen, occupied, floor, boots, attempt, applied, top, bits, self.seq_floor,
         self._ev_mark, self._codes_gen, self._codes_jlen, key, codes_cmd,
         slack) = struct.unpack_from(_STATE_FMT, data, r[0])
        if bad:
            # The damaged or missing copy may have held a seq floor one margin higher:
            # seqs below that may be out (check skips them).
            self.skip = SEQ_MARGIN + 1
        t = r[0] + _STATE_LEN
        return (bad, (occupied, floor, boots, attempt, applied, top, bits, key, codes_cmd, slack),
                bytes(data[t:t + _THROTTLE_LEN]), data[t + _THROTTLE_LEN:r[1]])

    # At boot: the outbox and the code store against the marks of the newest save. Seqs go
    # on from the saved floor (above every seq ever handed out), so nothing that happened to
    # events.log can make a seq repeat. Returns the damage flags `bad` (the outbox's) and
    # `bad_codes` with what the marks show added. The caller saves next.
    def check(self, outbox, codes, bad, bad_codes):
        # Records the state file saw are gone (a tail lost at a record boundary, an older
        # version of the file), or nothing is on file but a floor (lost, or a cut before the
        # first event). The floor was saved as next_seq + 1 + SEQ_MARGIN just before the
        # event taking next_seq was appended: a cut between leaves next_seq one below.
        f = self.seq_floor
        first = outbox.file_next
        if first < self._ev_mark or first < f - SEQ_MARGIN - 1 or (f > 0 and first == 1):
            bad |= 4
        outbox.skip_to(f + self.skip)
        self.seq_floor = outbox.next_seq + SEQ_MARGIN
        g, j = codes.mark()
        if not bad_codes & (PROBLEM_SNAPSHOT | PROBLEM_CORRUPT) and (
                g < self._codes_gen or g == self._codes_gen and j < self._codes_jlen):
            bad_codes |= PROBLEM_OLD  # older or shorter than the state says: what went is unknown
        if bad_codes & (PROBLEM_SNAPSHOT | PROBLEM_CORRUPT | PROBLEM_OLD):
            self.hold = True  # saves keep the old mark until the store is emptied
        return bad, bad_codes

    # After the damage is reported (on flash first: a cut before this finds it again at the
    # next boot), the code store empties, as a generation above any the state file saw.
    def fail_closed(self, codes):
        codes.fail_closed(self._codes_gen)
        self.hold = False

    # Write the next copy: the head with the values given (occupied .. codes_cmd, slack as
    # load returns them) and the marks of the outbox and the code store, then the throttle's
    # state and the grants. OSError escapes (the generation is spent, never reused).
    def save(self, occupied, floor, boots, attempt, applied, top, bits, outbox, codes, key,
             codes_cmd, slack, throttle, grants):
        self.gen += 1
        g, j = (self._codes_gen, self._codes_jlen) if self.hold else codes.mark()
        head = struct.pack(_STATE_FMT, _MAGIC, self.gen, occupied, floor, boots, attempt,
                           applied, top, bits, self.seq_floor, outbox.file_next, g, j, key,
                           codes_cmd, slack)
        self._st.replace("state.%d" % (self.gen & 1), frame(head + throttle.dump() + grants))
        self._codes_gen, self._codes_jlen = g, j
