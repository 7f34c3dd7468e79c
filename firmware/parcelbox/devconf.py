# The device configuration (config.json, written by provisioning) and the board
# (board.json, validated on the host), checked at boot; docs/runtime.md section 6.
import json
from binascii import unhexlify

from parcelbox import config
from parcelbox.protocol import check_box_id

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

CONFIG = "config.json"
BOARD = "board.json"
_KEY_HEX = const(64)
_MAX_FILE = const(8192)  # bytes of config.json or board.json: both are well under 2 KB
_NAME_MAX = const(64)    # a file name on the flash (broker.ca, cert, key)

# Boot failures, shown on the LED as that many blinks (docs/runtime.md section 6).
NO_CONFIG = const(2)
BAD_CONFIG = const(3)
NO_BOARD = const(4)
BAD_BOARD = const(5)


class ConfigError(ValueError):
    # why: NO_CONFIG..BAD_BOARD; the message names the field, never its value
    def __init__(self, why, msg):
        super().__init__(msg)  # ValueError.__init__ does not exist in MicroPython
        self.why = why


def _read(storage, name, missing, bad):
    data = storage.read(name)
    if data is None:
        raise ConfigError(missing, name + " is missing")
    if len(data) > _MAX_FILE:  # its parse would take several times that in the heap
        raise ConfigError(bad, "%s is larger than %d bytes" % (name, _MAX_FILE))
    try:
        d = json.loads(data)
    except (ValueError, RuntimeError):
        # RuntimeError: nested too deep (CPython's RecursionError is one; MicroPython
        # raises RuntimeError for too deep a recursion)
        raise ConfigError(bad, name + " is not valid JSON")
    if type(d) is not dict:
        raise ConfigError(bad, name + " is not a JSON object")
    return d


def _str(d, key, where, lo=1, hi=255, need=True):
    v = d.get(key)
    if v is None and not need:
        return None
    if type(v) is not str or not lo <= len(v) <= hi:
        raise ConfigError(BAD_CONFIG, "%s%s must be text of %d to %d characters" % (where, key, lo, hi))
    return v


# A file on the flash named by the configuration: 1 to 64 of A-Z a-z 0-9 . _ -, not
# starting with "." (no folder, no NUL: os.stat raises ValueError on a NUL); None if absent.
def _file(d, key, where):
    v = _str(d, key, where, 1, _NAME_MAX, False)
    ok = v is None or v[0] != "."
    for ch in v if ok and v else "":
        if not ("a" <= ch <= "z" or "A" <= ch <= "Z" or "0" <= ch <= "9" or ch in "._-"):
            ok = False
    if not ok:
        raise ConfigError(BAD_CONFIG, "%s%s must name a file: 1 to %d of A-Z a-z 0-9 . _ -, "
                          "not starting with ." % (where, key, _NAME_MAX))
    return v


def _int(d, key, where, lo, hi):
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise ConfigError(BAD_CONFIG, "%s%s must be a whole number %d..%d" % (where, key, lo, hi))
    return v


# The checked configuration: box_id, box_key (32 bytes), wifi {ssid, password},
# broker {host, port, tls, ca, cert, key}, mqtt_username, mqtt_password, settings {}.
def load_config(storage):
    d = _read(storage, CONFIG, NO_CONFIG, BAD_CONFIG)
    box_id = d.get("box_id")
    try:
        check_box_id(box_id)
    except ValueError:
        raise ConfigError(BAD_CONFIG, "box_id must be 1 to 32 of A-Z a-z 0-9 _ -")
    k = d.get("box_key")
    key = None
    if type(k) is str and len(k) == _KEY_HEX:
        try:
            key = unhexlify(k)
        except ValueError:
            key = None
    if key is None:
        raise ConfigError(BAD_CONFIG, "box_key must be 64 hex digits")
    w = d.get("wifi")
    if type(w) is not dict:
        raise ConfigError(BAD_CONFIG, "wifi must be an object with ssid and password")
    wifi = {"ssid": _str(w, "ssid", "wifi.", 1, 32),
            "password": _str(w, "password", "wifi.", 0, 64, False) or ""}
    b = d.get("broker")
    if type(b) is not dict:
        raise ConfigError(BAD_CONFIG, "broker must be an object with host and port")
    tls = b.get("tls", True)
    if tls is not True and tls is not False:
        raise ConfigError(BAD_CONFIG, "broker.tls must be true or false")
    broker = {"host": _str(b, "host", "broker.", 1, 253), "port": _int(b, "port", "broker.", 1, 65535),
              "tls": tls, "ca": _file(b, "ca", "broker.")}
    if tls and broker["ca"] is None:
        raise ConfigError(BAD_CONFIG, "broker.ca must name the broker's CA file when tls is on")
    if tls and storage.size(broker["ca"]) <= 0:
        raise ConfigError(BAD_CONFIG, "broker.ca file is missing or empty")
    # an optional client certificate: both files or neither, and only with TLS
    broker["cert"] = _file(b, "cert", "broker.")
    broker["key"] = _file(b, "key", "broker.")
    if (broker["cert"] is None) != (broker["key"] is None) or (broker["cert"] and not tls):
        raise ConfigError(BAD_CONFIG, "broker.cert and broker.key go together, and only with tls")
    for f in ("cert", "key"):
        if broker[f] is not None and storage.size(broker[f]) <= 0:
            raise ConfigError(BAD_CONFIG, "broker.%s file is missing or empty" % f)
    s = d.get("settings", {})
    if type(s) is not dict:
        raise ConfigError(BAD_CONFIG, "settings must be an object")
    return {"box_id": box_id, "box_key": key, "wifi": wifi, "broker": broker,
            "mqtt_username": _str(d, "mqtt_username", "", 1, 64, False) or box_id,
            "mqtt_password": _str(d, "mqtt_password", "", 1, 128), "settings": s}


# The board (already validated on the host): checked only for completeness.
def load_board(storage):
    b = _read(storage, BOARD, NO_BOARD, BAD_BOARD)
    kp = b.get("keypad")
    comps = b.get("compartments")
    if (type(kp) is not dict or type(kp.get("rows")) is not list or type(kp.get("cols")) is not list
            or type(kp.get("layout")) is not str or type(comps) is not list or not comps):
        raise ConfigError(BAD_BOARD, "board.json lacks keypad rows, cols, layout or compartments")
    return b


# Core settings from the board and the provisioned settings (the backend's, stored on
# flash, are merged over these by remote.stored_settings).
def core_settings(board, conf):
    kp = board["keypad"]
    s = dict(conf.get("settings") or {})
    s["keypad_rows"] = len(kp["rows"])
    s["keypad_cols"] = len(kp["cols"])
    s["keypad_layout"] = kp["layout"]
    s["compartments"] = len(board["compartments"])
    if "max_on_ms" in board:
        s["max_on_ms"] = board["max_on_ms"]
    return s


# The provisioned settings must suit this board (a short max_on_ms rules out the
# default pulse_ms, say): a ConfigError naming the setting, before anything starts.
def check_settings(board, conf):
    try:
        config.make(core_settings(board, conf))
    except ValueError as e:
        raise ConfigError(BAD_CONFIG, "settings: %s" % e)


# What the boot log shows: the effective configuration without a secret.
def describe(conf, board):
    b = conf["broker"]
    return ("box %s board %s compartments %d broker %s:%d tls %s wifi %s key set, mqtt user %s"
            % (conf["box_id"], board.get("name", "?"), len(board["compartments"]), b["host"],
               b["port"], "on" if b["tls"] else "off", conf["wifi"]["ssid"],
               conf["mqtt_username"]))
