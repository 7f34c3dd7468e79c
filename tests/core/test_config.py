# The core's settings (firmware/parcelbox/config.py): config.make refuses, with a ValueError
# naming the setting, every keypad the core's Keypad would refuse later (found by fuzzing).
import pytest

from memflash import MemStorage
from parcelbox import config
from parcelbox.box import Box
from parcelbox.keypad import Keypad

KEY = bytes(range(32))
L4X4 = "123A456B789C*0#D"


@pytest.mark.parametrize("layout, what", [
    ("123A456B789C*0#1", "has the key 1 twice"),
    ("123A456B789C*0##", "has the key # twice"),
    ("123A456B789C*0# ", "has a key that is not printable ASCII"),
    ("123A456B789C*0#\x00", "has a key that is not printable ASCII"),
    ("123A456B789C*0#\x7f", "has a key that is not printable ASCII"),
])
def test_a_layout_with_a_key_twice_or_unprintable_is_refused_naming_keypad_layout(layout, what):
    with pytest.raises(ValueError, match="keypad_layout " + what):
        config.make({"keypad_rows": 4, "keypad_cols": 4, "keypad_layout": layout})


def test_a_matrix_of_more_than_30_keys_is_refused_though_each_side_is_in_range():
    layout = "0123456789*#ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!$"[:36]
    with pytest.raises(ValueError, match="keypad_rows \\* keypad_cols must be at most 30"):
        config.make({"keypad_rows": 6, "keypad_cols": 6, "keypad_layout": layout})


def test_every_layout_config_make_takes_builds_the_box():
    # 5 x 6 = 30 keys: the largest matrix, and the shipped layouts
    big = "0123456789*#ABCDEFGHIJKLMNOPQR"
    for rows, cols, layout in ((5, 6, big), (4, 4, L4X4), (4, 3, "123456789*0#")):
        cfg = config.make({"keypad_rows": rows, "keypad_cols": cols, "keypad_layout": layout})
        Keypad(rows, cols, cfg["keypad_layout"])
        Box(MemStorage(), KEY, {"keypad_rows": rows, "keypad_cols": cols, "keypad_layout": layout})
