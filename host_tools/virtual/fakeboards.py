# The shipped boards as the device reads them (board.json, made by host_tools/boards.py
# from boards/*.json; tests/ports/test_esp32_hw.py checks they match), and wire(): the circuit
# docs/boards.md prescribes, built in a fake world, for CPython and the VM.
import fakeworld

ESP32_4X3 = {
    "format": 1, "name": "esp32-devkitc-4x3", "chip": "esp32",
    "keypad": {"rows": [13, 14, 27, 26], "cols": [25, 33, 32], "layout": "123456789*0#",
               "pull": "internal"},
    "compartments": [{"solenoid": 23, "door": 22}],
    "solenoid_active": 1, "door_open_level": 1, "door_pull": "internal", "max_on_ms": 2000,
    "led": [21, 19, 18], "led_active": 1, "buzzer": 4,
    "tamper": 39, "tamper_open_level": 1, "tamper_pull": "external",
    "battery": 35, "battery_divider": [100, 18],
}

S3_4X4 = {
    "format": 1, "name": "esp32s3-devkitc-4x4", "chip": "esp32s3",
    "keypad": {"rows": [4, 5, 6, 7], "cols": [15, 16, 17, 18], "layout": "123A456B789C*0#D",
               "pull": "internal"},
    "compartments": [{"solenoid": 8, "door": 12}, {"solenoid": 9, "door": 13},
                     {"solenoid": 10, "door": 14}, {"solenoid": 11, "door": 21}],
    "solenoid_active": 1, "door_open_level": 1, "door_pull": "internal", "max_on_ms": 2000,
    "led": [39, 40, 41], "led_active": 1, "buzzer": 42,
    "tamper": 2, "tamper_open_level": 1, "tamper_pull": "internal",
    "battery": 1, "battery_divider": [100, 18],
}

BOARDS = (ESP32_4X3, S3_4X4)


class Wired:
    # A fresh fake world with `board`'s circuit: keypad matrix, door and tamper switches
    # to GND (closed = door shut), external pull-ups where the board says so, a
    # pull-down on every solenoid gate, the battery divider's level on its ADC pin.
    def __init__(self, board, bounce_ms=5, t0=0, battery_mv=12600):
        self.board = board
        w = fakeworld.new(board["chip"], t0)
        self.world = w
        kp = board["keypad"]
        self.keys = w.keypad(kp["rows"], kp["cols"], kp["layout"], bounce_ms)
        if kp["pull"] == "external":
            for p in kp["cols"]:
                w.resistor(p, 1)
        self.doors = []
        for c in board["compartments"]:
            w.resistor(c["solenoid"], 1 - board["solenoid_active"])
            self.doors.append(w.add_switch(c["door"], 0, True, bounce_ms))
            if board["door_pull"] == "external":
                w.resistor(c["door"], 1)
        self.tamper = None
        if board["tamper"] is not None:
            self.tamper = w.add_switch(board["tamper"], 0, True, bounce_ms)
            if board["tamper_pull"] == "external":
                w.resistor(board["tamper"], 1)
        if board["battery"] is not None:
            top, bottom = board["battery_divider"]
            w.set_mv(board["battery"], battery_mv * bottom // (top + bottom))

    # True while compartment comp's (1-based) solenoid is energised.
    def energised(self, comp):
        b = self.board
        return self.world.level(b["compartments"][comp - 1]["solenoid"]) == b["solenoid_active"]
