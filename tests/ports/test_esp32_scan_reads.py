# The ESP32 keypad scan (pb_esp32.hw.Hardware.scan) reads only what it needs: every row
# driven at once first, so an idle pad costs one read per column; a pressed pad is read
# row by row in its low columns only. Frames stay what a full row-by-row scan gives,
# ghosts included (tests/ports/test_keycircuit.py compares them with Matrix_Keypad's too).
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "host_tools" / "virtual", ROOT / "firmware" / "esp32"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import keyrig  # noqa: E402

B4X3 = {"keypad": {"rows": [13, 14, 27, 26], "cols": [25, 33, 32], "layout": "123456789*0#",
                   "pull": "internal"}}


def _full_scan(fw):
    # the plain scan: each row alone, every column read
    bits = 0
    for r, row in enumerate(fw._rows):
        row(0)
        for c, col in enumerate(fw._cols):
            if not col():
                bits |= 1 << (r * fw._nc + c)
        row(1)
    return bits


@pytest.fixture
def rig():
    return keyrig.Rig(B4X3, bounce_ms=0)


def _reads(rig):
    before = rig.cb.reads
    frame = rig.b.scan()
    return frame, rig.cb.reads - before


def test_an_idle_pad_costs_one_read_per_column(rig):
    assert _reads(rig) == (0, 3)


def test_one_held_key_is_read_in_its_column_only(rig):
    rig.press("5")
    frame, reads = _reads(rig)
    assert frame == 1 << 4 and reads == 3 + 4


@pytest.mark.parametrize("keys", [("1", "5"), ("1", "2", "4"), ("2", "5", "8", "0"),
                                  ("1", "3", "*", "#")])
def test_several_keys_and_ghosts_give_the_frame_of_a_full_scan(rig, keys):
    for k in keys:
        rig.press(k)
    frame, reads = _reads(rig)
    assert frame == _full_scan(rig.b)
    live = len({"123456789*0#".index(k) % 3 for k in keys})
    assert reads == 3 + 4 * live


def test_every_row_is_released_and_nothing_shorts(rig):
    rig.press("1")
    rig.press("4")
    rig.b.scan()
    assert rig.cb.shorts == 0
    for p in B4X3["keypad"]["rows"]:
        assert rig.cb.driven(p) is None   # open drain, released
