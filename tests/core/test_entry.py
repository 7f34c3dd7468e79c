# Tests for parcelbox.entry: digits, submit on length or '#', clear/cancel with '*',
# overflow, timeout across the tick wrap, wiping of digits, bad arguments.
import pytest

from parcelbox import entry
from parcelbox.entry import CodeEntry

WRAP = 1 << 30


def typed(e, keys, now=0):
    # Feed keys (bytes) at 1 s spacing; return the outcome list.
    return [e.key(k, now + i * 1000) for i, k in enumerate(keys)]


def test_sixth_digit_submits_by_itself():
    e = CodeEntry()
    assert typed(e, b"48151") == [entry.DIGIT] * 5
    assert e.key(ord("6"), 5000) == entry.SUBMIT
    assert e.code() == b"481516"
    assert e.length == e.count == 6


def test_clear_after_submit_wipes_buffer():
    e = CodeEntry()
    typed(e, b"123456")
    e.clear()
    assert e.count == 0 and not e.submitted
    assert bytes(e._buf) == bytes(8)
    with pytest.raises(ValueError):
        e.code()


def test_hash_submits_early_and_short_entry_is_discarded():
    e = CodeEntry()
    assert typed(e, b"123#") == [entry.DIGIT] * 3 + [entry.SHORT]
    assert e.count == 0
    assert bytes(e._buf) == bytes(8)


def test_hash_on_empty_entry_is_ignored():
    e = CodeEntry()
    assert e.key(ord("#"), 0) == entry.NONE


def test_star_clears_non_empty_entry_then_cancels_empty_one():
    e = CodeEntry()
    assert typed(e, b"12*") == [entry.DIGIT, entry.DIGIT, entry.CLEARED]
    assert e.count == 0
    assert e.key(ord("*"), 9000) == entry.CANCEL


def test_letters_and_other_keys_are_ignored():
    e = CodeEntry()
    assert typed(e, b"1ABCD2") == [entry.DIGIT] + [entry.NONE] * 4 + [entry.DIGIT]
    assert e.count == 2


def test_without_submit_on_length_only_hash_submits():
    e = CodeEntry(code_len=4, submit_on_length=False)
    assert typed(e, b"9876") == [entry.DIGIT] * 4
    assert not e.submitted
    assert e.key(ord("#"), 5000) == entry.SUBMIT
    assert e.code() == b"9876"


def test_one_digit_too_many_is_overflow_and_discarded():
    e = CodeEntry(code_len=4, submit_on_length=False)
    assert typed(e, b"98765") == [entry.DIGIT] * 4 + [entry.OVERFLOW]
    assert e.count == 0
    assert bytes(e._buf) == bytes(8)
    # Typing goes on into a fresh entry.
    assert typed(e, b"1234#", 10000)[-1] == entry.SUBMIT
    assert e.code() == b"1234"


def test_eight_digit_codes_fill_the_buffer():
    e = CodeEntry(code_len=8)
    assert typed(e, b"12345678")[-1] == entry.SUBMIT
    assert e.code() == b"12345678"


def test_key_after_submit_without_clear_starts_a_new_entry():
    e = CodeEntry(code_len=4)
    typed(e, b"1111")
    assert e.key(ord("2"), 9000) == entry.DIGIT
    assert e.count == 1 and not e.submitted


def test_partial_entry_times_out_after_more_than_timeout_ms():
    e = CodeEntry(timeout_ms=10000)
    e.key(ord("1"), 500)
    assert e.deadline() == 10501
    assert e.tick(10500) == entry.NONE
    assert e.tick(10501) == entry.TIMEOUT
    assert e.count == 0 and e.deadline() is None
    assert e.tick(20000) == entry.NONE


def test_each_digit_extends_the_timeout_but_letters_do_not():
    e = CodeEntry(timeout_ms=1000)
    e.key(ord("1"), 0)
    e.key(ord("2"), 900)
    e.key(ord("A"), 1800)
    assert e.tick(1900) == entry.NONE
    assert e.tick(1901) == entry.TIMEOUT


def test_timeout_across_tick_wrap():
    e = CodeEntry(timeout_ms=1000)
    e.key(ord("5"), WRAP - 300)
    assert e.deadline() == 701
    assert e.tick(700) == entry.NONE
    assert e.tick(701) == entry.TIMEOUT


def test_no_timeout_when_empty_or_submitted():
    e = CodeEntry(code_len=4, timeout_ms=1000)
    assert e.tick(50000) == entry.NONE
    typed(e, b"1234")
    assert e.deadline() is None
    assert e.tick(1000000) == entry.NONE
    assert e.code() == b"1234"


@pytest.mark.parametrize("kw", [
    {"code_len": 3}, {"code_len": 9}, {"code_len": "6"},
    {"timeout_ms": 0}, {"timeout_ms": -1}, {"timeout_ms": 1 << 29}, {"timeout_ms": 1.5},
])
def test_bad_configuration_raises_value_error(kw):
    with pytest.raises(ValueError):
        CodeEntry(**kw)


@pytest.mark.parametrize("ch", [-1, 256, "1", b"1", None])
def test_impossible_key_raises_value_error(ch):
    e = CodeEntry()
    with pytest.raises(ValueError):
        e.key(ch, 0)


def test_code_before_submit_raises():
    e = CodeEntry()
    typed(e, b"12")
    with pytest.raises(ValueError):
        e.code()
