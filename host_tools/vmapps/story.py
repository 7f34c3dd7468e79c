# Runs a scripted story (/flash/story.json) against the unmodified box core in
# the MicroPython VM, with a virtual keypad circuit, doors and clock; prints a JSON-lines trace.
import gc
import json
from binascii import unhexlify

from parcelbox import events, feedback, ticks
from parcelbox.box import Box
from parcelbox.storage import Storage

_FB = {feedback.KEY: "key", feedback.ACCEPTED: "accepted", feedback.REJECTED: "rejected",
       feedback.THROTTLED: "throttled", feedback.BUSY: "busy", feedback.ERROR: "error",
       feedback.CLEARED: "cleared", feedback.SERVICE: "service"}
_SCAN_MS = 5


class Rig:
    def __init__(self, story):
        self.story = story
        self.key = unhexlify(story["box_key"])
        self.settings = story.get("settings") or {}
        if "keypad_layout" in self.settings:
            self.settings["keypad_layout"] = self.settings["keypad_layout"].encode()
        self.clock = 0  # timeline ms since the story began
        self.boot_at = 0  # timeline ms of the last power-on: device ticks restart there
        self.doors = {}
        self.sol = {}
        self.box = None
        self.power_on()

    def ticks(self):
        return (self.clock - self.boot_at) & 0x3FFFFFFF

    def out(self, obj):
        obj["t"] = self.clock
        print(json.dumps(obj))

    def power_on(self):
        self.boot_at = self.clock
        self.box = Box(Storage("/flash"), self.key, self.settings, self.ticks(), self.on_event)
        self.layout = self.box.cfg["keypad_layout"]
        for c in range(1, self.box.cfg["compartments"] + 1):
            self.sol[c] = False
            self.box.door(c, self.doors.get(c, False), self.ticks())
        gc.collect()
        self.out({"power": "on", "heap_free": gc.mem_free() if hasattr(gc, "mem_free") else 0})

    def on_event(self, seq, kind, comp, code_id, arg, t):
        self.out({"ev": events.NAMES[kind], "seq": seq, "comp": comp,
                  "code_id": code_id, "arg": arg})

    # One scan period: keypad frame, door samples, tick, outputs.
    def step(self, bits):
        now = self.ticks()
        self.box.keypad_frame(bits, now)
        for c in self.sol:
            self.box.door(c, self.doors.get(c, False), now)
        self.box.tick(now)
        for c in self.sol:
            on = self.box.solenoid(c, now)
            if on != self.sol[c]:
                self.sol[c] = on
                self.out({"solenoid": c, "on": on})
        self.clock += _SCAN_MS

    def feedback_seen(self):
        p = self.box.player.take()
        if p >= 0 and p != feedback.KEY:
            self.out({"fb": _FB.get(p, str(p))})

    def press(self, ch):
        idx = self.layout.find(bytes((ch,)))
        bit = 1 << idx
        for b in (bit, 0, bit, 0, bit):  # contact bounce
            self.clock += 1
            self.box.keypad_frame(b, self.ticks())
        for _ in range(16):  # held 80 ms
            self.step(bit)
            self.feedback_seen()
        for b in (0, bit, 0):
            self.clock += 1
            self.box.keypad_frame(b, self.ticks())
        for _ in range(24):  # released 120 ms
            self.step(0)
            self.feedback_seen()

    def wait(self, ms):
        end = self.clock + ms
        while self.clock < end:
            now = self.ticks()
            self.step(0)
            self.feedback_seen()
            dl = self.box.next_deadline(now)
            if dl is not None:
                gap = ticks.diff(dl, now)
            else:
                gap = end - self.clock
            if gap > _SCAN_MS * 2 and not any(self.sol.values()):
                self.clock += min(gap - _SCAN_MS, end - self.clock)

    def run(self):
        for i, s in enumerate(self.story["steps"]):
            op = s["op"]
            self.out({"step": i, "op": op, "say": s.get("say", "")})
            if op == "push_codes":
                for r in s["codes"]:
                    self.box.codes.add(r["id"], unhexlify(r["digest"]), r["role"], r["comp"],
                                       r["uses"], r.get("not_before", 0), r.get("not_after", 0))
            elif op == "set_time":
                self.box.set_time(s["epoch"], self.ticks())
            elif op == "type":
                for ch in s["keys"].encode():
                    self.press(ch)
            elif op == "door":
                self.doors[s["comp"]] = s["open"]
                self.out({"door": s["comp"], "open": s["open"]})
                self.wait(200)
            elif op == "wait":
                self.wait(s["ms"])
            elif op == "power_cut":
                self.box = None
                for c in self.sol:
                    self.sol[c] = False
                self.out({"power": "off"})
                gc.collect()
                self.clock += s.get("ms", 1000)
                self.power_on()
            elif op == "ack_all":
                ob = self.box.outbox
                while ob.pending():
                    ob.ack(ob.first()[0])
                self.out({"acked": True, "pending": ob.pending()})
            else:
                raise ValueError("unknown story step " + op)
        gc.collect()
        self.out({"end": True, "pending": self.box.outbox.pending(),
                  "heap_free": gc.mem_free() if hasattr(gc, "mem_free") else 0})


Rig(json.load(open("/flash/story.json"))).run()
