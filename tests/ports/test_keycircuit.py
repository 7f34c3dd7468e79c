# The virtual keypad circuit (host_tools/virtual/keycircuit.py): the real adafruit_matrixkeypad
# on its digitalio pins and the firmware's own scanner (pb_esp32.hw scan + parcelbox.keypad)
# on its machine.Pin-style pins see the same keys, for every key of both layouts, through
# contact bounce, two-key presses and a three-key ghost; on CPython and in the VM.
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "host_tools" / "virtual", ROOT / "firmware" / "esp32"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import keyrig  # noqa: E402  (sets sys.modules["digitalio"] to the circuit's)
from host_tools.virtual import keycircuit as kc  # noqa: E402
from host_tools.vm.runner import FIRMWARE_DIR, VM, VMLIB_DIR  # noqa: E402

BOARD_FILES = sorted((ROOT / "boards").glob("*.json"))


def _boards():
    out = []
    for f in BOARD_FILES:
        b = json.loads(f.read_text())
        out.append(pytest.param(b, id=f.stem))
    return out


LAYOUTS = {len(json.loads(f.read_text())["keypad"]["layout"]) for f in BOARD_FILES}


def test_the_shipped_boards_cover_both_layouts():
    assert {12, 16} <= LAYOUTS


@pytest.mark.parametrize("board", _boards())
@pytest.mark.parametrize("seed", [1, 7])
def test_every_key_reads_the_same_through_matrix_keypad_and_the_firmware_scan(board, seed):
    rig = keyrig.Rig(board, bounce_ms=8, seed=seed)
    layout = board["keypad"]["layout"]
    for ch in layout:
        rig.press(ch)
        a1, b1 = rig.run(60)
        rig.release(ch)
        a2, b2 = rig.run(60)
        assert (a1 + a2, b1 + b2) == (ch.encode(), ch.encode()), ch
    assert rig.mismatches == 0
    assert rig.ca.shorts == rig.cb.shorts == 0


@pytest.mark.parametrize("board", _boards())
def test_bounce_shows_in_raw_frames_and_never_becomes_a_second_key(board):
    rig = keyrig.Rig(board, bounce_ms=15, seed=3)
    ch = board["keypad"]["layout"][4]
    bit = 1 << 4
    rig.press(ch)
    raw = []
    for _ in range(20):
        fa, fb, ka, kb = rig.scan()
        raw.append(fa)
        assert fa == fb
        rig.clock.advance(1)
    assert 0 in raw[:15] and bit in raw[:15]       # chatter during the bounce
    assert set(raw[15:]) == {bit}                  # settled after bounce_ms
    rig.release(ch)
    a, b = rig.run(100, step_ms=1)
    assert rig.kpa.held() == rig.kpb.held() == 0
    assert a == b == b""                           # the press counted before, once


@pytest.mark.parametrize("board", _boards())
def test_two_keys_together_are_rejected_by_both_and_the_pad_recovers(board):
    layout = board["keypad"]["layout"]
    rig = keyrig.Rig(board, bounce_ms=8, seed=5)
    for i in range(len(layout) - 1):
        j = (i + 5) % len(layout)
        rig.press(layout[i])
        rig.press(layout[j])
        assert rig.run(60) == (b"", b"")
        f1, f2, _, _ = rig.scan()
        assert f1 == f2
        assert f1 & (1 << i) and f1 & (1 << j)
        rig.release_all()
        rig.run(60)
        rig.press(layout[j])
        a, b = rig.run(60)
        rig.release_all()
        rig.run(60)
        assert a == b == layout[j].encode()
    assert rig.kpa.rejected == rig.kpb.rejected == len(layout) - 1
    assert rig.mismatches == 0


@pytest.mark.parametrize("board", _boards())
def test_three_keys_on_a_rectangle_ghost_the_fourth_for_both(board):
    kp = board["keypad"]
    nc = len(kp["cols"])
    layout = kp["layout"]
    rig = keyrig.Rig(board, bounce_ms=8, seed=9)
    # rows 0 and 2, columns 0 and 2: press three corners
    corners = [0 * nc + 0, 0 * nc + 2, 2 * nc + 0]
    ghost = 2 * nc + 2
    for k in corners:
        rig.press(layout[k])
    a, b = rig.run(60)
    assert a == b == b""
    fa, fb, _, _ = rig.scan()
    want = sum(1 << k for k in corners) | (1 << ghost)
    assert fa == fb == want
    assert sorted(rig.a.mk.pressed_keys) == sorted(layout[k] for k in corners + [ghost])
    assert rig.kpa.rejected == rig.kpb.rejected == 1
    assert rig.ca.shorts == rig.cb.shorts == 0


def test_external_pullups_read_keys_without_internal_ones():
    board = {"keypad": {"rows": [1, 2, 3, 4], "cols": [5, 6, 7], "layout": "123456789*0#",
                        "pull": "external"}}
    rig = keyrig.Rig(board)
    rig.press("8")
    assert rig.run(60) == (b"8", b"8")


def test_a_column_without_any_pull_floats_and_reads_float_level():
    clock = kc.Clock()
    c = kc.Circuit([1], [2], "1", clock, float_level=0)
    col = kc.Pin(2, kc.Pin.IN)
    assert col() == 0
    col.init(pull=kc.Pin.PULL_UP)
    assert col() == 1


def test_the_circuit_is_deterministic_per_seed_and_varies_across_seeds():
    def trace(seed):
        clock = kc.Clock()
        c = kc.Circuit(["R"], ["C"], "x", clock, bounce_ms=30, seed=seed)
        c.press("x")
        out = []
        for _ in range(30):
            out.append(c.closed())
            clock.advance(1)
        return out
    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


def test_reading_a_pin_often_does_not_change_what_it_reads():
    clock = kc.Clock()
    c = kc.Circuit(["R"], ["C"], "x", clock, bounce_ms=10, seed=2)
    c.press("x")
    clock.advance(3)
    first = c.closed()
    for _ in range(50):
        c.level(0)
    assert c.closed() == first


def test_a_press_across_the_tick_wrap_bounces_and_settles():
    clock = kc.Clock(0x3FFFFFFF - 3)
    c = kc.Circuit(["R"], ["C"], "x", clock, bounce_ms=8)
    c.press("x")
    clock.advance(20)
    assert clock() == 16
    assert c.closed() == 1


def test_push_pull_rows_against_each_other_count_a_short():
    clock = kc.Clock()
    c = kc.Circuit([1, 2], [3], "ab", clock, bounce_ms=0)
    r1 = kc.Pin(1, kc.Pin.OUT, value=0)
    r2 = kc.Pin(2, kc.Pin.OUT, value=1)
    c.press("a")
    c.press("b")
    assert r2() == 0 and c.shorts == 1


def test_digitalio_pins_behave_like_blinkas():
    clock = kc.Clock()
    c = kc.Circuit(["D5"], ["D6"], "1", clock)
    board = kc.board_module(c)
    pin = kc.DigitalInOut(board.D6)
    assert pin.direction is kc.Direction.INPUT and pin.pull is None
    with pytest.raises(AttributeError, match="Not an output"):
        pin.value = True
    with pytest.raises(AttributeError, match="Not an output"):
        pin.drive_mode
    pin.switch_to_input(pull=kc.Pull.UP)
    assert pin.value is True
    pin.switch_to_input(pull=kc.Pull.DOWN)
    assert pin.value is False
    pin.switch_to_output(value=True)
    assert pin.value is True and c.driven("D6") == 1
    with pytest.raises(AttributeError, match="Not an input"):
        pin.pull = kc.Pull.UP
    pin.drive_mode = kc.DriveMode.OPEN_DRAIN
    assert c.driven("D6") is None                  # open drain released at 1
    with pytest.raises(AttributeError, match="Not a Direction"):
        pin.direction = "out"
    pin.deinit()
    with pytest.raises(ValueError, match="deinitialized"):
        pin.value
    with pytest.raises(TypeError):
        kc.DigitalInOut("D6")


def test_machine_pins_reject_bad_modes_and_pulls_without_changing_the_pin():
    clock = kc.Clock()
    c = kc.Circuit([1], [2], "1", clock)
    p = kc.Pin(2, kc.Pin.IN, kc.Pin.PULL_UP)
    with pytest.raises(ValueError, match="invalid pin mode"):
        p.init(99)
    with pytest.raises(ValueError, match="invalid pull"):
        p.init(pull=42)
    assert p() == 1


def test_switches_outside_the_matrix_bounce_and_settle():
    clock = kc.Clock()
    c = kc.Circuit(["D5"], ["D6"], "1", clock, bounce_ms=6)
    c.add_switch("D22", closed=True)
    door = kc.DigitalInOut(kc.board_module(c, ["D22"]).D22)
    door.switch_to_input(pull=kc.Pull.UP)
    assert door.value is False                     # closed to GND
    c.set_switch("D22", False)
    seen = set()
    for _ in range(6):
        seen.add(door.value)
        clock.advance(1)
    assert seen == {False, True}
    assert door.value is True
    with pytest.raises(ValueError, match="no switch"):
        c.set_switch("D23", True)
    with pytest.raises(ValueError, match="keypad line"):
        c.add_switch("D5")


@pytest.mark.parametrize("bad", [dict(rows=[], cols=[1]), dict(rows=list(range(6)), cols=list(range(6))),
                                 dict(rows=[1], cols=[2], layout="ab"), dict(rows=[1], cols=[2], bounce_ms=-1)])
def test_a_bad_circuit_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="keycircuit"):
        kc.Circuit(**bad)


def test_releasing_a_key_that_is_not_held_changes_nothing():
    clock = kc.Clock()
    c = kc.Circuit(["R"], ["C1", "C2"], "xy", clock, bounce_ms=10)
    c.release("x")
    for _ in range(12):
        assert c.closed() == 0
        clock.advance(1)


def test_the_simulator_keypad_is_this_circuit():
    from host_tools.sim import world as simworld
    k = simworld.Keypad(4, 3, "123456789*0#", bounce_ms=0)
    assert isinstance(k, kc.Circuit)
    for key in "124":
        k.press(key, 0)
    assert k.scan(1) == 0b11011 and k.shorts == 0      # the ghost 5, through the same nets
    assert simworld.Keypad(0, 0, "").scan(5) == 0       # a board without a keypad


def test_unknown_keys_are_a_clear_error():
    c = kc.Circuit([1], [2], "1")
    for key in ("9", (1, 0), "12"):
        with pytest.raises(ValueError, match="keycircuit"):
            c.press(key)


VM_RIG = """
import json
import keyrig
boards = json.loads(%r)
for b in boards:
    rig = keyrig.Rig(b, bounce_ms=8, seed=3)
    got = bytearray()
    for ch in b["keypad"]["layout"]:
        rig.press(ch)
        a1, b1 = rig.run(60)
        rig.release(ch)
        a2, b2 = rig.run(60)
        if a1 + a2 != b1 + b2:
            raise AssertionError("scanners disagree on %%r" %% ch)
        got.extend(a1 + a2)
    rig.press(b["keypad"]["layout"][0])
    rig.press(b["keypad"]["layout"][5])
    rig.run(60)
    print(b["name"], bytes(got).decode(), rig.mismatches, rig.kpa.rejected, rig.kpb.rejected)
"""


@pytest.mark.vm
def test_circuit_and_both_scanners_run_inside_the_micropython_vm(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(sys.modules[keyrig.Matrix_Keypad.__module__].__file__, lib / "adafruit_matrixkeypad.py")
    boards = [json.loads(f.read_text()) for f in BOARD_FILES]
    for b in boards:
        b.pop("description", None)
    vm = VM(heap="256K", paths=(FIRMWARE_DIR, VMLIB_DIR, ROOT / "host_tools", ROOT / "firmware" / "esp32",
                                ROOT / "host_tools" / "virtual", lib))
    res = vm.run_code(VM_RIG % json.dumps(boards))
    assert res.ok, res.stderr
    lines = res.stdout.split("\n")
    for b in boards:
        assert "%s %s 0 1 1" % (b["name"], b["keypad"]["layout"]) in lines
