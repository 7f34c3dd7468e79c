# HMAC-SHA256 (RFC 2104) over hashlib.sha256, key derivation for the box's
# purpose keys, and a constant-time comparison. The ESP32 build has no hmac module.
import hashlib

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

DIGEST_LEN = const(32)
MIN_BOX_KEY = const(16)  # bytes; provisioning creates 32
_BLOCK = const(64)       # SHA-256 block size
_LABEL_PREFIX = b"parcelbox/v1/"

# Purpose labels for derive(); the backend derives the same keys from the box key.
LABEL_CODE = b"code"
LABEL_CMD = b"cmd"
LABEL_EVT = b"evt"


def _check_bytes(value, what):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(what + " must be bytes")


# A reusable HMAC-SHA256 for one key. The key is padded to one block and the
# ipad/opad blocks are computed once (MicroPython sha256 objects cannot copy()).
class Hmac:
    def __init__(self, key):
        _check_bytes(key, "key")
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        ipad = bytearray(_BLOCK)
        opad = bytearray(_BLOCK)
        for i in range(len(key)):
            ipad[i] = key[i]
            opad[i] = key[i]
        for i in range(_BLOCK):
            ipad[i] ^= 0x36
            opad[i] ^= 0x5C
        self._ipad = bytes(ipad)
        self._opad = bytes(opad)

    # The 32-byte MAC of `msg`, followed by `more` if given (no concatenated copy).
    def digest(self, msg, more=None):
        h = hashlib.sha256(self._ipad)
        h.update(msg)
        if more is not None:
            h.update(more)
        inner = h.digest()
        h = hashlib.sha256(self._opad)
        h.update(inner)
        return h.digest()


# One-shot HMAC-SHA256 of `msg` under `key`.
def hmac_sha256(key, msg):
    return Hmac(key).digest(msg)


# The 32-byte key for one purpose: HMAC(box_key, b"parcelbox/v1/" + label).
def derive(box_key, label):
    _check_bytes(box_key, "box key")
    _check_bytes(label, "label")
    if len(box_key) < MIN_BOX_KEY:
        raise ValueError("box key shorter than 16 bytes")
    if len(label) == 0:
        raise ValueError("empty label")
    return Hmac(box_key).digest(_LABEL_PREFIX + bytes(label))


# True when `a` and `b` hold the same bytes. For equal lengths the time taken
# does not depend on where they differ; different lengths return False at once.
def equal(a, b):
    n = len(a)
    if n != len(b):
        return False
    acc = 0
    for i in range(n):
        acc |= a[i] ^ b[i]
    return acc == 0
