# Tests for parcelbox.keypad: debounce, one event per press, ghost rejection,
# tick wrap-around, layouts and configuration errors.
import pytest

from parcelbox.keypad import Keypad, NONE, LAYOUT_4X3, LAYOUT_4X4

WRAP = 1 << 30


def feed(kp, frames, t0=0, step=5):
    # Feed frames every `step` ms from t0; return the accepted keys as bytes.
    out = bytearray()
    t = t0
    for f in frames:
        k = kp.update(f, t % WRAP)
        if k != NONE:
            out.append(k)
        t += step
    return bytes(out)


def press(kp, ch, hold=8, up=8):
    # A clean press of key `ch`: `hold` samples down, `up` samples released.
    b = kp.bit(ord(ch))
    return [b] * hold + [0] * up


def test_layout_constants_are_phone_and_4x4_order():
    assert LAYOUT_4X3 == b"123456789*0#"
    assert LAYOUT_4X4 == b"123A456B789C*0#D"


def test_key_counts_once_frame_stable_for_debounce_ms():
    kp = Keypad(4, 3, LAYOUT_4X3)
    b = kp.bit(ord("5"))
    assert kp.update(b, 100) == NONE
    assert kp.update(b, 119) == NONE
    assert kp.update(b, 120) == ord("5")


def test_held_key_never_repeats():
    kp = Keypad(4, 3, LAYOUT_4X3)
    assert feed(kp, [kp.bit(ord("7"))] * 2000) == b"7"
    assert kp.held() == kp.bit(ord("7"))


def test_same_key_counts_again_after_stable_release():
    kp = Keypad(4, 3, LAYOUT_4X3)
    frames = press(kp, "1") + press(kp, "1") + press(kp, "1")
    assert feed(kp, frames) == b"111"


def test_short_release_within_debounce_is_not_a_new_press():
    kp = Keypad(4, 3, LAYOUT_4X3)
    b = kp.bit(ord("1"))
    # 0 for 15 ms (< 20 ms) between two holds: one press.
    assert feed(kp, [b] * 8 + [0] * 3 + [b] * 8 + [0] * 8) == b"1"


def test_chatter_within_debounce_gives_exactly_one_event():
    kp = Keypad(4, 3, LAYOUT_4X3)
    b = kp.bit(ord("9"))
    bounce = [b, 0, b, 0, 0, b, 0, b]
    frames = bounce + [b] * 10 + [0, b, 0, b, 0] + [0] * 10
    assert feed(kp, frames, step=2) == b"9"


def test_glitch_shorter_than_debounce_is_ignored():
    kp = Keypad(4, 3, LAYOUT_4X3)
    b = kp.bit(ord("3"))
    assert feed(kp, [0] * 5 + [b] * 3 + [0] * 20) == b""


def test_two_keys_at_once_are_rejected_until_all_up():
    kp = Keypad(4, 3, LAYOUT_4X3)
    a, b = kp.bit(ord("1")), kp.bit(ord("2"))
    # 1 and 2 together, then 1 released while 2 is still held: nothing, ever.
    frames = [a | b] * 10 + [b] * 10
    assert feed(kp, frames) == b""
    assert kp.blocked()
    assert kp.rejected == 1
    # Fully released, then 2 pressed alone: counts.
    assert feed(kp, [0] * 10 + [b] * 10, t0=100) == b"2"
    assert not kp.blocked()


def test_key_pressed_before_the_second_is_accepted_then_multi_press_blocks():
    kp = Keypad(4, 3, LAYOUT_4X3)
    a, b = kp.bit(ord("4")), kp.bit(ord("6"))
    frames = [a] * 10 + [a | b] * 10 + [a] * 10 + [b] * 10 + [0] * 10 + [b] * 10
    assert feed(kp, frames) == b"46"


def test_ghost_frame_of_three_keys_is_rejected_not_guessed():
    kp = Keypad(4, 4, LAYOUT_4X4)
    ghost = kp.bit_at(0, 0) | kp.bit_at(0, 1) | kp.bit_at(1, 0) | kp.bit_at(1, 1)
    assert feed(kp, [ghost] * 20 + [0] * 10) == b""
    assert kp.rejected == 1


def test_transient_two_key_roll_shorter_than_debounce_is_ignored():
    kp = Keypad(4, 3, LAYOUT_4X3)
    a, b = kp.bit(ord("1")), kp.bit(ord("2"))
    # Roll-over: 1, briefly 1+2 (10 ms), then 2 alone: both presses count.
    frames = [a] * 10 + [a | b] * 2 + [b] * 10 + [0] * 10
    assert feed(kp, frames) == b"12"
    assert kp.rejected == 0


def test_debounce_across_tick_wrap():
    kp = Keypad(4, 3, LAYOUT_4X3)
    b = kp.bit(ord("0"))
    start = WRAP - 10
    assert kp.update(b, start) == NONE
    assert kp.update(b, (start + 19) % WRAP) == NONE
    assert kp.update(b, (start + 20) % WRAP) == ord("0")
    assert feed(kp, press(kp, "8") * 3, t0=WRAP - 40) == b"888"


def test_zero_debounce_accepts_first_sample():
    kp = Keypad(1, 2, b"AB", debounce_ms=0)
    assert kp.update(1, 0) == ord("A")
    assert kp.update(1, 0) == NONE
    assert kp.update(0, 1) == NONE
    assert kp.update(2, 1) == ord("B")


@pytest.mark.parametrize("rows,cols,layout", [(4, 3, LAYOUT_4X3), (4, 4, LAYOUT_4X4)])
def test_every_key_of_layout_decodes_to_its_ascii_code(rows, cols, layout):
    kp = Keypad(rows, cols, layout)
    frames = []
    for r in range(rows):
        for c in range(cols):
            frames += [kp.bit_at(r, c)] * 6 + [0] * 6
    assert feed(kp, frames) == layout


def test_bit_and_bit_at_agree():
    kp = Keypad(4, 4, LAYOUT_4X4)
    assert kp.bit(ord("A")) == kp.bit_at(0, 3) == 1 << 3
    assert kp.bit(ord("D")) == kp.bit_at(3, 3) == 1 << 15
    with pytest.raises(ValueError):
        kp.bit(ord("E"))
    with pytest.raises(ValueError):
        kp.bit_at(4, 0)


@pytest.mark.parametrize("bits", [-1, 1 << 12, (1 << 12) | 1, 0xFFFFFFFF])
def test_impossible_frame_raises(bits):
    kp = Keypad(4, 3, LAYOUT_4X3)
    with pytest.raises(ValueError):
        kp.update(bits, 0)


def test_impossible_frame_does_not_change_state():
    kp = Keypad(4, 3, LAYOUT_4X3)
    b = kp.bit(ord("2"))
    kp.update(b, 0)
    with pytest.raises(ValueError):
        kp.update(-5, 10)
    assert kp.update(b, 20) == ord("2")


def test_reset_forgets_held_key():
    kp = Keypad(4, 3, LAYOUT_4X3)
    b = kp.bit(ord("2"))
    assert feed(kp, [b] * 10) == b"2"
    kp.reset()
    assert feed(kp, [b] * 10, t0=1000) == b"2"


@pytest.mark.parametrize("args", [
    (0, 3, b""),
    (9, 1, b"123456789"),
    (4, 0, b""),
    (6, 6, bytes(range(0x21, 0x21 + 36))),      # 36 keys > 30
    (4, 3, b"123456789*0"),                      # too short
    (4, 3, b"123456789*0#X"),                    # too long
    (4, 3, b"123456789*00"),                     # duplicate
    (4, 3, "123456789*0#"),                      # str, not bytes
    (1, 2, b"A "),                               # space not printable
    (4.0, 3, LAYOUT_4X3),
])
def test_bad_configuration_raises_value_error(args):
    with pytest.raises(ValueError):
        Keypad(*args)


@pytest.mark.parametrize("debounce", [-1, 1001, 2.5, None])
def test_bad_debounce_raises_value_error(debounce):
    with pytest.raises(ValueError):
        Keypad(4, 3, LAYOUT_4X3, debounce)


def test_largest_pad_of_30_keys_uses_top_bit():
    layout = bytes(range(0x41, 0x41 + 30))
    kp = Keypad(5, 6, layout, debounce_ms=0)
    assert kp.update(1 << 29, 0) == layout[29]
    with pytest.raises(ValueError):
        kp.update(1 << 30, 1)

