# Settings of the box core: defaults and the checks that turn a bad setting into
# a clear ValueError at start. The host validates first; the device checks again.
DEFAULTS = {  # type: dict
    "keypad_rows": 4,
    "keypad_cols": 3,
    "keypad_layout": b"123456789*0#",
    "debounce_ms": 20,
    "code_len": 6,
    "submit_on_length": True,
    "entry_timeout_ms": 10000,
    "compartments": 1,
    "pulse_ms": 700,
    "max_on_ms": 2000,
    "cooldown_ms": 3000,
    "open_window_ms": 10000,
    "left_open_ms": 120000,
    "door_debounce_ms": 50,
    "free_tries": 5,
    "lockout_base_ms": 30000,
    "lockout_max_ms": 900000,
    "target_years": 10,
    "outbox_capacity": 256,
    "max_codes": 256,
    "service_timeout_ms": 120000,
    "state_every_s": 3600,  # the remote's periodic state summary (docs/protocol.md section 8)
}

_MAX_KEYS = 30  # keypad.Keypad's limit: a scan frame stays a small int

# name: (low, high) for every integer setting
_RANGES = {
    "keypad_rows": (1, 8),
    "keypad_cols": (1, 8),
    "debounce_ms": (0, 1000),
    "code_len": (4, 8),
    "entry_timeout_ms": (1000, 600000),
    "compartments": (1, 32),
    "pulse_ms": (50, 5000),
    "max_on_ms": (50, 5000),
    "cooldown_ms": (0, 600000),
    "open_window_ms": (1000, 600000),
    "left_open_ms": (1000, 86400000),
    "door_debounce_ms": (0, 2000),
    "free_tries": (1, 20),
    "lockout_base_ms": (1000, 3600000),
    "lockout_max_ms": (1000, 86400000),
    "target_years": (1, 100),
    "outbox_capacity": (8, 4096),
    "max_codes": (1, 16384),
    "service_timeout_ms": (10000, 3600000),
    "state_every_s": (60, 86400),
}


# The defaults overlaid with `settings`; ValueError names the first bad setting.
def make(settings=None):
    cfg = dict(DEFAULTS)
    if settings:
        for k in settings:
            if k not in DEFAULTS:
                raise ValueError("unknown setting: " + str(k))
            cfg[k] = settings[k]
    for k in _RANGES:
        v = cfg[k]
        lo, hi = _RANGES[k]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("setting %s must be an integer" % k)
        if v < lo or v > hi:
            raise ValueError("setting %s=%d is outside %d..%d" % (k, v, lo, hi))
    if not isinstance(cfg["submit_on_length"], bool):
        raise ValueError("setting submit_on_length must be true or false")
    layout = cfg["keypad_layout"]
    if isinstance(layout, str):
        layout = layout.encode()
        cfg["keypad_layout"] = layout
    n = cfg["keypad_rows"] * cfg["keypad_cols"]
    if n > _MAX_KEYS:
        raise ValueError("settings keypad_rows * keypad_cols must be at most %d keys" % _MAX_KEYS)
    if not isinstance(layout, bytes) or len(layout) != n:
        raise ValueError("setting keypad_layout must have keypad_rows * keypad_cols keys")
    # as keypad.Keypad requires: each key printable ASCII and on one button only
    for i in range(n):
        ch = layout[i]
        if ch < 0x21 or ch > 0x7E:
            raise ValueError("setting keypad_layout has a key that is not printable ASCII")
        for j in range(i + 1, n):
            if layout[j] == ch:
                raise ValueError("setting keypad_layout has the key %s twice" % chr(ch))
    for ch in b"0123456789*#":
        if ch not in layout:
            raise ValueError("setting keypad_layout lacks the key " + chr(ch))
    if cfg["pulse_ms"] > cfg["max_on_ms"]:
        raise ValueError("setting pulse_ms must not exceed max_on_ms")
    if cfg["cooldown_ms"] < 3 * cfg["pulse_ms"]:  # as lock.Compartment requires
        raise ValueError("setting cooldown_ms must be at least 3 * pulse_ms")
    if cfg["lockout_base_ms"] > cfg["lockout_max_ms"]:
        raise ValueError("setting lockout_base_ms must not exceed lockout_max_ms")
    return cfg
