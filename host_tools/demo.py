"""`parcelbox demo`: one box's story, run unattended in the MicroPython VM.

The unmodified firmware core runs in the WASI MicroPython VM with a 96 KB heap
and a flash folder. The host plays the backend (it issues codes and pushes
their keyed digests), the people at the keypad and the doors. Every step has
expectations; the demo prints a readable timeline and exits non-zero if any
step did not go as expected.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from host_tools import crypto
from host_tools.vm import FIRMWARE_DIR, VM, VMLIB_DIR

APP_DIR = Path(__file__).resolve().parent / "vmapps"
ROLE = {"recipient": 1, "driver": 2, "owner": 3, "technician": 4}
START_EPOCH = 1795600000  # 2026-11-24, the wall clock the box is told
FEEDBACK_TEXT = {
    "accepted": "ACCEPTED  (green, rising two-tone)",
    "rejected": "REJECTED  (red, low buzz)",
    "throttled": "THROTTLED (amber blink, three low beeps)",
    "busy": "BUSY      (amber, two beeps)",
    "error": "ERROR     (red fast blink)",
    "cleared": "cleared",
    "service": "SERVICE   (blue)",
}


@dataclass
class Step:
    op: str
    say: str
    expect: list[str] = field(default_factory=list)
    args: dict = field(default_factory=dict)


def _wrong(avoid: set[str], near: str | None = None) -> str:
    if near:  # one digit mistyped
        d = str((int(near[2]) + 1) % 10)
        code = near[:2] + d + near[3:]
        if code not in avoid:
            return code
    return crypto.new_code(6, avoid)


def build_story(key: bytes) -> tuple[list[Step], dict[str, str]]:
    codes: dict[str, str] = {}
    taken: set[str] = set()
    for who in ("owner", "driver", "recipient"):
        codes[who] = crypto.new_code(6, taken)
        taken.add(codes[who])
    records = [
        {"id": 1, "role": ROLE["owner"], "comp": 1, "uses": 0xFFFF},
        {"id": 2, "role": ROLE["driver"], "comp": 0, "uses": 1,
         "not_before": START_EPOCH - 3600, "not_after": START_EPOCH + 7 * 86400},
        {"id": 3, "role": ROLE["recipient"], "comp": 1, "uses": 1,
         "not_before": START_EPOCH - 3600, "not_after": START_EPOCH + 14 * 86400},
    ]
    for r, who in zip(records, ("owner", "driver", "recipient")):
        r["digest"] = crypto.code_digest(key, codes[who]).hex()
    typo = _wrong(taken, codes["recipient"])
    attack = []
    for _ in range(5):
        c = _wrong(taken | {typo} | set(attack))
        attack.append(c)
    s = [
        Step("set_time", "The box learns the time", [], {"epoch": START_EPOCH}),
        Step("push_codes", "Backend pushes digests: owner PIN #1, deposit code #2, one-time code #3",
             [], {"codes": records}),
        Step("type", "Driver types the deposit code", ["fb:accepted", "sol:1"], {"keys": codes["driver"]}),
        Step("door", "Driver opens compartment 1", ["ev:opened"], {"comp": 1, "open": True}),
        Step("door", "Driver puts the parcel in and closes the door", ["ev:closed", "ev:deposit"],
             {"comp": 1, "open": False}),
        Step("type", "Recipient mistypes the one-time code", ["fb:rejected", "ev:wrong_code", "!sol:1"],
             {"keys": typo}),
        Step("type", "Recipient mistypes it again", ["fb:rejected", "ev:wrong_code", "!sol:1"], {"keys": typo}),
        Step("type", "Recipient types the one-time code", ["fb:accepted", "sol:1"],
             {"keys": codes["recipient"]}),
        Step("door", "Recipient opens the door", ["ev:opened"], {"comp": 1, "open": True}),
        Step("door", "Recipient takes the parcel and closes the door", ["ev:closed", "ev:pickup"],
             {"comp": 1, "open": False}),
        Step("type", "Someone replays the used one-time code", ["fb:rejected", "!sol:1"],
             {"keys": codes["recipient"]}),
    ]
    for i, c in enumerate(attack):
        last = i == len(attack) - 1
        s.append(Step("type", f"Attacker guesses a code ({i + 1}/5)",
                      ["fb:throttled", "ev:throttled"] if last else ["fb:rejected", "!sol:1"], {"keys": c}))
    s += [
        Step("type", "Owner types the PIN during the lockout: not even checked",
             ["fb:throttled", "!sol:1"], {"keys": codes["owner"]}),
        Step("power_cut", "Power cut for 5 s, then power returns", ["ev:boot"], {"ms": 5000}),
        Step("type", "Owner tries again right after the reboot: the lockout survived",
             ["fb:throttled", "!sol:1"], {"keys": codes["owner"]}),
        Step("wait", "Everyone waits out the 30 s lockout", [], {"ms": 31000}),
        Step("type", "Owner types the PIN", ["fb:accepted", "sol:1"], {"keys": codes["owner"]}),
        Step("wait", "Owner never opens the door: it relocks and the use is given back",
             ["ev:not_opened"], {"ms": 11000}),
        Step("door", "Someone pries compartment 1 open", ["ev:forced"], {"comp": 1, "open": True}),
        Step("door", "...and pushes it shut", ["ev:closed"], {"comp": 1, "open": False}),
        Step("ack_all", "The backend acknowledges every event", [], {}),
    ]
    return s, codes


def _story_json(key: bytes, steps: list[Step]) -> str:
    return json.dumps({"box_key": key.hex(), "settings": {},
                       "steps": [dict(op=st.op, say=st.say, **st.args) for st in steps]})


def _clock(ms: int) -> str:
    return f"{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def run(heap: str = "96K", keep: str | None = None, out=sys.stdout) -> int:
    key = crypto.new_box_key()
    steps, codes = build_story(key)
    flash = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="parcelbox-demo-"))
    if flash.exists():
        shutil.rmtree(flash)
    flash.mkdir(parents=True)
    try:
        (flash / "story.json").write_text(_story_json(key, steps))
        w = out.write
        w("parcelbox demo: one box, in the MicroPython VM (heap %s)\n" % heap)
        w("Codes issued by the backend (the one place a fresh code is shown):\n")
        w(f"  owner PIN {codes['owner']}   deposit code {codes['driver']}   "
          f"one-time code {codes['recipient']}\n\n")
        res = VM(heap=heap, flash_dir=flash, paths=(FIRMWARE_DIR, VMLIB_DIR, APP_DIR)).run_code(
            "import story\n")
        (flash / "story.json").unlink()  # holds the key: never left behind
        trace = []
        for line in res.stdout.splitlines():
            try:
                trace.append(json.loads(line))
            except ValueError:
                w(f"  (box printed) {line}\n")
        failures = _print_and_check(trace, steps, w)
        end = next((t for t in trace if t.get("end")), None)
        if not res.ok:
            w(f"\nThe VM failed: {res.stderr.strip() or res.trap}\n")
            failures += 1
        elif end is None:
            w("\nThe story did not reach its end.\n")
            failures += 1
        else:
            w(f"\n{sum(1 for t in trace if 'ev' in t)} events recorded, {end['pending']} unacknowledged; "
              f"heap free at the end {end['heap_free']} bytes; {res.fuel_used:,} VM instructions.\n")
        w("demo: %s\n" % ("all steps as expected" if failures == 0 else f"{failures} step(s) FAILED"))
        return 0 if failures == 0 else 1
    finally:
        if not keep:
            shutil.rmtree(flash, ignore_errors=True)


def _print_and_check(trace: list[dict], steps: list[Step], w) -> int:
    by_step: dict[int, list[dict]] = {}
    cur = -1
    for t in trace:
        if "step" in t:
            cur = t["step"]
        by_step.setdefault(cur, []).append(t)
    failures = 0
    for i, st in enumerate(steps):
        lines = by_step.get(i, [])
        seen = set()
        start = lines[0]["t"] if lines else 0
        w(f"{_clock(start)}  {st.say}\n")
        for t in lines[1:]:
            if "fb" in t:
                seen.add("fb:" + t["fb"])
                if t["fb"] != "cleared":
                    w(f"           box   {FEEDBACK_TEXT.get(t['fb'], t['fb'])}\n")
            elif "ev" in t:
                seen.add("ev:" + t["ev"])
                who = f" code #{t['code_id']}" if t["code_id"] else ""
                comp = f" compartment {t['comp']}" if t["comp"] else ""
                w(f"           event #{t['seq']} {t['ev']}{comp}{who}\n")
            elif "solenoid" in t:
                if t["on"]:
                    seen.add(f"sol:{t['solenoid']}")
                w(f"           lock {t['solenoid']} solenoid {'ON' if t['on'] else 'off'}"
                  f" at {_clock(t['t'])}\n")
            elif "power" in t:
                w(f"           power {t['power']}" +
                  (f", heap free {t['heap_free']} B" if t["power"] == "on" else "") + "\n")
        for e in st.expect:
            neg = e.startswith("!")
            hit = e.lstrip("!") in seen
            if hit == neg:
                failures += 1
                w(f"           !! expected {'no ' if neg else ''}{e.lstrip('!')}\n")
    return failures
