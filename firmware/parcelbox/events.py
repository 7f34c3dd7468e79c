# Event types the box reports, and which of them are security events that the
# outbox may never drop silently. Numbers are stable: they are stored on flash.
try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

BOOT = const(1)          # arg: reset cause / boot count
OPENED = const(2)        # comp, code_id, arg: role
CLOSED = const(3)        # comp
DEPOSIT = const(4)       # comp, code_id of the driver's code
PICKUP = const(5)        # comp, code_id of the recipient's code
WRONG_CODE = const(6)    # arg: reason (see REASON_*), consecutive failures in high bits
THROTTLED = const(7)     # arg: lockout seconds
FORCED = const(8)        # comp: opened without an unlock
LEFT_OPEN = const(9)     # comp: open longer than the configured limit
NOT_OPENED = const(10)   # comp, code_id: unlocked, never opened, use given back
REFUSED = const(11)      # comp, code_id, arg: reason (occupied, empty, busy)
SERVICE = const(12)      # code_id, arg: 1 entered, 0 left service mode
STORE_CORRUPT = const(13)  # arg: which file (see FILE_*)
OVERFLOW = const(14)     # arg: events dropped; code_id: first dropped seq
EXPIRED = const(15)      # arg: number of codes removed by expiry
RESULT = const(16)       # comp: op number, code_id: command seq, arg: status (docs/protocol.md)
REJECTED = const(17)     # code_id: command seq (0: unknown), arg: reason + suppressed << 8
CRASH = const(18)        # the application crashed before this boot: code_id reset cause,
                         # arg crc32 of the crash report (crash.txt on the box)
TAMPER = const(19)       # arg: 1 the enclosure's tamper switch opened, 0 closed again
TIME_REFUSED = const(20)  # comp: source (TIME_*), code_id: the time refused (epoch s),
                          # arg: reason (CLOCK_*) + refusals not reported since << 8

# Names for logs and the wire, indexed by type (a tuple: cheaper in RAM than a dict).
NAMES = ("", "boot", "opened", "closed", "deposit", "pickup", "wrong_code", "throttled",
         "forced", "left_open", "not_opened", "refused", "service", "store_corrupt",
         "overflow", "expired", "result", "rejected", "crash", "tamper", "time_refused")

# Bit i set: event type i is a security event.
SECURITY = const((1 << 2) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8)
                 | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 18) | (1 << 19) | (1 << 20))

# WRONG_CODE reasons (low byte of arg)
REASON_UNKNOWN = const(0)
REASON_EXPIRED = const(1)
REASON_NOT_YET_VALID = const(2)
REASON_USED_UP = const(3)
REASON_UNRESOLVED = const(4)  # power lost while the code was being checked: counted as wrong

# REFUSED reasons
REFUSED_OCCUPIED = const(1)   # deposit code, compartment already holds a parcel
REFUSED_EMPTY = const(2)      # recipient code, compartment holds no parcel
REFUSED_BUSY = const(3)       # compartment unlocking, open or its solenoid cooling down

# STORE_CORRUPT files
FILE_CODES = const(1)
FILE_OUTBOX = const(2)
FILE_STATE = const(3)
FILE_KEY = const(4)    # the wire key file (docs/storage.md): both copies lost

# TIME_REFUSED sources and reasons
TIME_NET = const(1)     # the network's time (SNTP: unauthenticated)
TIME_CMD = const(2)     # the backend's `time` command
TIME_SHELL = const(3)   # anything else the shell passes to set_time
CLOCK_BACK = const(1)   # earlier than the newest trusted time less the tolerance
CLOCK_RANGE = const(2)  # outside MIN_TIME..MAX_TIME
CLOCK_AHEAD = const(3)  # the network's time, far ahead of a clock already trusted


def is_security(kind):
    return (SECURITY >> kind) & 1 == 1
