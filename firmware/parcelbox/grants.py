# The unlock granted to each compartment (docs/box.md section 4): role, code id and the
# code's uses once the grant's use is spent, saved in the state file before a solenoid fires.
import struct

from parcelbox.codestore import ROLE_OWNER, ROLE_REMOTE, UNLIMITED

_GRANT = "<IBH"  # per compartment in the state file: code id, role, uses left once spent


class Grants:
    # n compartments, none granted. Compartment i+1 is index i, bit i of the masks.
    def __init__(self, n):
        self.role = bytearray(n)  # 0: no grant; a code's role, or ROLE_REMOTE
        self.code = [0] * n  # the code id (a remote unlock: the command's seq)
        self.uses = [UNLIMITED] * n  # the code's uses left once the grant's use is spent
        self.shared = 0  # bit i: compartment i+1 was unlocked with others by one use
        self.restored = 0  # bit i: compartment i+1's grant came from the state file at boot

    # Grant compartment index i to code `code_id` of `role`, whose uses will be `uses`
    # once this grant's use is spent (UNLIMITED: nothing to spend). A grant of this boot.
    def grant(self, i, role, code_id, uses):
        self.role[i] = role
        self.code[i] = code_id
        self.uses[i] = uses
        self.restored &= ~(1 << i)

    def clear(self, i):
        self.role[i] = 0
        self.code[i] = 0
        self.uses[i] = UNLIMITED
        self.shared &= ~(1 << i)

    # The grants as the state file holds them, 7 bytes per compartment.
    def pack(self):
        n = len(self.role)
        b = bytearray(7 * n)
        for i in range(n):
            struct.pack_into(_GRANT, b, 7 * i, self.code[i], self.role[i], self.uses[i])
        return b

    # At boot, the grants the state file held (ignored if the number of compartments
    # changed); each one found is marked restored.
    def unpack(self, data):
        n = len(self.role)
        if len(data) != 7 * n:
            return
        for i in range(n):
            self.code[i], self.role[i], self.uses[i] = struct.unpack_from(_GRANT, data, 7 * i)
            if self.role[i]:
                self.restored |= 1 << i

    # True once for a grant read from the state file: the first stable door sample of
    # compartment index i settles it (Box._boot_door).
    def take_restored(self, i):
        r = (self.restored >> i) & 1
        self.restored &= ~(1 << i)
        return r

    # The uses compartment i's granted code has now, for the backend's mirror (the high
    # bits of opened and not_opened); UNLIMITED when there is no count to report: a remote
    # unlock or service mode (their id is no code's), an unlimited code, a code gone.
    def left(self, i, codes):
        if not 0 < self.role[i] <= ROLE_OWNER:
            return UNLIMITED
        s = codes.slot_of(self.code[i])
        return codes.fields(s)[3] if s >= 0 else UNLIMITED

    # The slot of compartment i's granted code if it still holds the use its grant spends
    # (the use was never written, or the journal lost it), else -1.
    def unspent(self, i, codes):
        left = self.uses[i]
        if left == UNLIMITED or self.role[i] == ROLE_REMOTE:
            return -1
        s = codes.slot_of(self.code[i])
        return s if s >= 0 and codes.fields(s)[3] > left else -1
