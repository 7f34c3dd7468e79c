"""Backend-side key derivation and code digests (CPython), matching firmware/parcelbox/hmac256.py."""

from __future__ import annotations

import hashlib
import hmac
import secrets

DIGEST_LEN = 16


def derive(box_key: bytes, label: bytes) -> bytes:
    """A purpose key from the box key: HMAC-SHA256(box_key, b"parcelbox/v1/" + label)."""
    return hmac.new(box_key, b"parcelbox/v1/" + label, hashlib.sha256).digest()


def code_digest(box_key: bytes, code: str) -> bytes:
    """The keyed digest the box stores for a code: HMAC(derive(key, "code"), code)[:16]."""
    if not code.isdigit():
        raise ValueError("a code is made of digits only")
    return hmac.new(derive(box_key, b"code"), code.encode(), hashlib.sha256).digest()[:DIGEST_LEN]


def new_box_key() -> bytes:
    return secrets.token_bytes(32)


def new_code(length: int = 6, avoid: set[str] | None = None) -> str:
    """A uniformly random code of `length` digits, different from every code in `avoid`."""
    if not 4 <= length <= 8:
        raise ValueError("code length must be 4..8")
    avoid = avoid or set()
    while True:
        code = "".join(str(secrets.randbelow(10)) for _ in range(length))
        if code not in avoid:
            return code
