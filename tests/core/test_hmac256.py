# Tests for parcelbox.hmac256: RFC 4231 vectors, agreement with CPython's hmac on
# random keys and messages, key derivation, and the constant-time comparison.
import hashlib
import hmac
import random

import pytest

from parcelbox import hmac256
from parcelbox.hmac256 import Hmac, derive, equal, hmac_sha256

# RFC 4231 section 4: (key, data, HMAC-SHA-256); case 5 is truncated to 128 bits.
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation",
     "a3b6167473100ee06e0c796c2955552b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


@pytest.mark.parametrize("case", range(1, 8))
def test_rfc4231_vector_matches(case):
    key, data, want = RFC4231[case - 1]
    got = hmac_sha256(key, data)
    assert len(got) == 32
    assert got.hex()[:len(want)] == want
    assert got == hmac.new(key, data, hashlib.sha256).digest()


def test_reused_hmac_object_gives_same_mac_every_time():
    mac = Hmac(b"\xaa" * 131)
    first = mac.digest(b"one")
    mac.digest(b"something else in between")
    assert mac.digest(b"one") == first


@pytest.mark.parametrize("seed", range(4))
def test_random_keys_and_messages_match_cpython_hmac(seed):
    rng = random.Random(seed)
    for key_len in (0, 1, 31, 32, 63, 64, 65, 127, 128, 200):
        key = bytes(rng.getrandbits(8) for _ in range(key_len))
        mac = Hmac(key)
        for msg_len in (0, 1, 6, 55, 56, 63, 64, 65, 300):
            msg = bytes(rng.getrandbits(8) for _ in range(msg_len))
            want = hmac.new(key, msg, hashlib.sha256).digest()
            assert mac.digest(msg) == want
            assert hmac_sha256(key, msg) == want


def test_key_and_message_may_be_bytearray_or_memoryview():
    key = bytearray(b"k" * 40)
    msg = b"xx123456yy"
    want = hmac.new(bytes(key), b"123456", hashlib.sha256).digest()
    assert Hmac(memoryview(key)).digest(memoryview(msg)[2:8]) == want


def test_digest_of_two_parts_is_the_digest_of_their_concatenation():
    mac = Hmac(b"k" * 32)
    body = bytearray(b"xx{\"v\":1}")
    want = hmac.new(b"k" * 32, b"parcelbox/v1/a/cmd\n{\"v\":1}", hashlib.sha256).digest()
    assert mac.digest(b"parcelbox/v1/a/cmd\n", memoryview(body)[2:]) == want


def test_derive_is_hmac_of_box_key_over_prefixed_label():
    box_key = bytes(range(32))
    for label in (b"code", b"cmd", b"evt"):
        want = hmac.new(box_key, b"parcelbox/v1/" + label, hashlib.sha256).digest()
        assert derive(box_key, label) == want


def test_derived_keys_differ_per_label_and_per_box():
    a = bytes(32)
    b = bytes(31) + b"\x01"
    keys = {derive(a, hmac256.LABEL_CODE), derive(a, hmac256.LABEL_CMD),
            derive(a, hmac256.LABEL_EVT), derive(b, hmac256.LABEL_CODE)}
    assert len(keys) == 4


def test_derive_rejects_short_box_key_and_empty_label():
    with pytest.raises(ValueError):
        derive(b"short key", b"code")
    with pytest.raises(ValueError):
        derive(bytes(32), b"")


def test_str_key_or_label_is_refused():
    with pytest.raises(TypeError):
        Hmac("secret")
    with pytest.raises(TypeError):
        derive(bytes(32), "code")
    with pytest.raises(TypeError):
        Hmac(None)


def test_equal_compares_bytes():
    assert equal(b"", b"")
    assert equal(b"\x00" * 16, bytearray(16))
    assert equal(b"abc", memoryview(b"xabcx")[1:4])
    assert not equal(b"abc", b"abd")
    assert not equal(b"\x80bc", b"abc")


def test_equal_is_false_for_different_lengths():
    assert not equal(b"abc", b"abcd")
    assert not equal(b"", b"\x00")


def test_equal_finds_a_difference_at_every_position_and_bit():
    base = bytes(range(16))
    for pos in range(16):
        for bit in range(8):
            other = bytearray(base)
            other[pos] ^= 1 << bit
            assert not equal(base, other)


class _CountingBytes(bytes):
    reads = 0

    def __getitem__(self, i):
        _CountingBytes.reads += 1
        return bytes.__getitem__(self, i)


def test_equal_reads_every_byte_wherever_the_first_difference_is():
    # No early exit: the work done is the same for a mismatch at byte 0 and a match.
    for other in (b"X" + bytes(15), bytes(16)):
        _CountingBytes.reads = 0
        equal(_CountingBytes(bytes(16)), other)
        assert _CountingBytes.reads == 16
