"""`parcelbox demo`: the whole story of one box, unattended (docs/demo.md).

An MQTT broker (the embedded amqtt broker, in this process, on a free port of
127.0.0.1, unless `broker=` names one), a ledger in a temporary folder, a box
registered with the backend SDK, its flash provisioned, and the unmodified firmware
superloop started in the MicroPython VM by `host_tools.sim.simbox.SimBox`, talking MQTT to
that broker; a `Consumer` stores its events. Then the story: a driver's deposit code
and a recipient's one-time code are issued through the SDK, the driver deposits, the
recipient mistypes twice and collects, an attacker is locked out, the power is cut and
comes back (the lockout survives), and every event is in the ledger exactly once.

The box runs on the simulator's virtual clock: the people's typing, the doors and the
waits cost only the VM's passes, so the story takes seconds. The timeline shows that
clock. Every step checks what it expects; the first that fails ends the demo with
its name and exit status 1. Nothing printed holds a key or a password; the freshly
issued codes are shown, as the driver and the recipient would receive them.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from host_tools import boards, devlog, paths
from host_tools.backend import protocol as p
from host_tools.backend.embedded import EmbeddedBroker, plain_consumer
from host_tools.backend.sdk import Backend, Consumer, Ledger, MqttConfig
from host_tools.sim.simbox import _EVENT, CAUSES, SimBox, SimError, provision

BOX = "demo-box"
BOARD = "esp32-devkitc-4x3"
WAIT_MS = 20000            # the longest a step waits (virtual ms) for what it expects
KEPT = ("ledger.db", "ledger.db-wal", "ledger.db-shm", "flash")   # what --keep DIR holds
ATTACK = 6                 # free_tries (5) wrong codes, then the one that locks the keypad
# what the LED and buzzer do first for each feedback pattern (firmware/parcelbox/feedback.py)
PATTERN = {("green", 800): "ACCEPTED: green, rising two-tone",
           ("red", 300): "REJECTED: red, low buzz",
           ("amber", 300): "THROTTLED: amber blinking, three low beeps",
           ("amber", 800): "BUSY: amber, two beeps",
           ("red", 1200): "ERROR: red fast blinking",
           ("blue", 800): "SERVICE: blue"}


class StepFailed(Exception):
    """A step did not go as expected."""


# ---- the story ----------------------------------------------------------------------

def _clock(ms: int) -> str:
    return "%02d:%02d.%03d" % (ms // 60000, ms // 1000 % 60, ms % 1000)


class Demo:
    def __init__(self, out, *, vm: bool = True, heap: str | None = None, broker: str | None = None,
                 ca: str | None = None, username: str | None = None, password: str | None = None,
                 issuer_username: str | None = None, keep: str | None = None,
                 on_register=None):
        self.out = out
        self.vm, self.heap = vm, heap
        self.broker_url, self.ca = broker, ca
        self.username, self.password = username, password
        self.issuer_username = issuer_username
        self.keep = keep
        self.on_register = on_register   # (box id, its broker password): a broker with users
        self.arrived: list[tuple[int, p.Event]] = []   # (world ms, event) as stored
        self.box: SimBox | None = None
        self._seen = {"fb": 0, "pulse": 0, "lines": 0, "ledger": 0, "boots": 0}
        self._last_fb: tuple | None = None
        self.ledger: Ledger | None = None
        self.steps_done = 0
        self.current = "start"

    # -- printing

    def w(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def at(self, who: str, text: str) -> None:
        if self.box is not None:
            self.observe()   # what happened before, first
        self.w("%s  %-10s %s" % (_clock(self.box.now if self.box else 0), who, text))

    def poll_ledger(self) -> None:
        """Note the events committed to the ledger since the last look, at the box's time."""
        if self.ledger is None:
            return
        have = {e.seq for _, e in self.arrived}
        for e in self.ledger.events(BOX):
            if e.seq not in have:
                self.arrived.append((self.box.now, e))
                have.add(e.seq)

    def observe(self) -> None:
        """Print what happened since the last look, in the order of world time."""
        box, seen, rows = self.box, self._seen, []
        self.poll_ledger()
        fb = box.feedback
        for t, led, hz in fb[seen["fb"]:]:
            what = PATTERN.get((led, hz))
            if what is None:
                continue   # key clicks, the silent part of a pattern, off
            if self._last_fb and self._last_fb[1] == what and t - self._last_fb[0] < 1500:
                continue   # the same pattern going on (the throttle's blinks)
            self._last_fb = (t, what)
            rows.append((t, 0, "box", what))
        seen["fb"] = len(fb)
        for pl in box.pulses[seen["pulse"]:]:
            if pl.end is None:
                break
            rows.append((pl.start, 1, "lock", "solenoid %d energised for %d ms: the door is unlocked"
                         % (pl.comp, pl.end - pl.start)))
            seen["pulse"] += 1
        for t, cause in box.boots[seen["boots"]:]:
            rows.append((t, 0, "box", "powers on (boot %d, %s)" % (seen["boots"] + 1, CAUSES[cause])))
            seen["boots"] += 1
        lines = box.lines
        boots = [t for t, _ in box.boots]
        for ln in lines[seen["lines"]:]:
            m = _EVENT.search(ln)
            ticks = int(ln.split()[2])
            t = next((b + ticks for b in reversed(boots) if b + ticks <= box.now), box.now)
            if not m:
                if " link: " in ln:   # the box's MQTT link: connected, lost, refused
                    text = devlog.words("link: " + ln.split(" link: ", 1)[1])
                    rows.append((t, 2, "box", "MQTT " + text))
                continue
            what = devlog.event_line(int(m[1]), m[2], int(m[3]), int(m[4]), int(m[5]))
            rows.append((t, 2, "box", "%s (on flash, to send)" % what))
        seen["lines"] = len(lines)
        for t, e in self.arrived[seen["ledger"]:]:
            rows.append((t, 3, "ledger", "stored event #%d %s" % (e.seq, e.type)))
        seen["ledger"] = len(self.arrived)
        for t, _, who, text in sorted(rows, key=lambda r: (r[0], r[1])):
            self.w("%s  %-10s %s" % (_clock(t), who, text))

    # -- waiting and checking

    def until(self, cond, what: str, ms: int = WAIT_MS, real: bool = True) -> None:
        """Run the box until cond(); a StepFailed after ms of the box's time (and, with
        real, as much real time: a loaded machine's broker may lag the virtual clock)."""
        end = self.box.now + ms
        start = time.monotonic()
        real_end = start + (ms / 1000 if real else 0)
        while not cond():
            if not self.box.running and self.box.halted:
                raise StepFailed("the firmware stopped (%s) waiting for %s" % (self.box.halted, what))
            now = time.monotonic()
            if (self.box.now >= end and now >= real_end) or now > start + 60:
                raise StepFailed("no %s within %d s of the box's time" % (what, ms // 1000))
            self.pace(10)
        self.observe()

    def pace(self, ms: int) -> None:
        """Let ms of the box's time pass, 10 ms at a time with a breath of real time
        between, so that the broker and the consumer (on real time) keep up with it."""
        for i in range(max(1, ms // 10)):
            self.box.run(10)
            time.sleep(0.0005)
            if i % 5 == 4:
                self.poll_ledger()   # arrivals noted at (about) the box's time they happened

    def events_since(self, n: int, name: str) -> list:
        return [e for e in self.box.events()[n:] if e[1] == name]

    def ledger_has(self, seq: int) -> bool:
        self.poll_ledger()
        return any(e.seq == seq for _, e in self.arrived)

    def step(self, name: str, fn) -> None:
        self.w("")
        self.w("--- %s" % name)
        self.current = name
        try:
            fn()
        except SimError as e:
            raise StepFailed(str(e).splitlines()[0]) from e
        finally:
            if self.box is not None:
                self.observe()
        self.steps_done += 1

    # -- the run

    # The story, step by step: (the title printed, the method that plays it).
    STEPS = (("setup: broker, ledger, box registered, firmware booted", "setup"),
             ("the backend issues two codes", "issue"),
             ("the driver deposits a parcel", "deposit"),
             ("the recipient collects it", "pickup"),
             ("an attacker guesses codes", "attack"),
             ("a power cut", "power"),
             ("every event in the ledger exactly once", "ledger_check"))

    def run(self) -> int:
        folder = self._folder()
        if folder is None:
            return 2
        self.folder = folder
        self.embedded = self.consumer = self.be = None
        self.issued: dict = {}
        failed = None
        t0 = time.monotonic()
        try:
            self._connect()
            for title, name in self.STEPS:
                self.step(title, getattr(self, name))
        except StepFailed as e:
            failed = str(e)
        except Exception as e:  # noqa: BLE001 - a step that broke is a step that failed
            failed = "%s: %s" % (type(e).__name__, e)
        finally:
            self._close()
        return self._verdict(failed, time.monotonic() - t0)

    def _folder(self) -> Path | None:
        """The folder for the ledger and the flash: --keep's (emptied of a previous demo's
        files), else a temporary one; None, said why, if --keep names another folder."""
        folder = Path(self.keep) if self.keep else Path(tempfile.mkdtemp(prefix="parcelbox-demo-"))
        if self.keep and folder.exists():
            other = sorted(p.name for p in folder.iterdir() if p.name not in KEPT)
            if other:   # never empty a folder that is not a previous demo's
                self.w("Error: --keep %s holds %s: give an empty folder or a previous demo's"
                       % (folder, ", ".join(other[:3])))
                return None
            for name in KEPT:
                old = folder / name
                if old.is_dir():
                    shutil.rmtree(old)
                elif old.exists():
                    old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _connect(self) -> None:
        """The broker (given, or embedded), the ledger and the backend that issues commands."""
        if self.broker_url:
            cfg = MqttConfig.from_url(self.broker_url, self.username, self.password, self.ca)
            where = "the broker at %s:%d%s" % (cfg.host, cfg.port, " (TLS)" if cfg.tls else "")
        else:
            self.embedded = EmbeddedBroker().start()
            cfg = MqttConfig(self.embedded.host, self.embedded.port, "demo-consumer")
            where = ("the embedded amqtt broker on %s:%d (plain TCP, open to this machine only)"
                     % (self.embedded.host, self.embedded.port))
        self.cfg = cfg
        issuer = MqttConfig(cfg.host, cfg.port, self.issuer_username or
                            ("demo-issuer" if self.embedded else cfg.username), cfg.password, cfg.ca)
        self.w("parcelbox demo: one box's story, the firmware in %s, MQTT to %s"
               % ("the MicroPython VM" if self.vm else "CPython", where))
        self.w("ledger and flash in %s%s" % (self.folder, "" if self.keep else " (removed at the end)"))
        self.w("the clock is simulated: the timeline shows the box's own time (mm:ss.ms), and "
               "its typing, doors and waits take no real time")
        self.ledger = Ledger(self.folder / "ledger.db")
        self.be = Backend(self.ledger, issuer)

    def _close(self) -> None:
        if self.box is not None:
            self.box.close()
        if self.consumer is not None:
            self.consumer.stop()
        if self.be is not None:
            self.be.close()
        if self.embedded is not None:
            self.embedded.stop()
        if self.ledger is not None:
            self.ledger.close()
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _verdict(self, failed: str | None, took: float) -> int:
        self.w("")
        if failed is not None:
            if self.box is not None and self.box.lines:
                self.w("the box's last log lines:")
                for ln in self.box.lines[-8:]:
                    self.w("  " + ln)
            self.w("demo: FAILED at step %d (%s): %s" % (self.steps_done + 1, self.current, failed))
            return 1
        self.w("demo: all %d steps as expected (%.1f s of the box's simulated time in %.1f s)"
               % (self.steps_done, self.box.now / 1000 if self.box else 0, took))
        return 0

    # -- the steps

    def setup(self) -> None:
        cfg, ledger = self.cfg, self.ledger
        rec = self.be.register(BOX, compartments=1)
        if self.on_register:
            self.on_register(BOX, rec["mqtt_password"])
        broker = {"host": cfg.host, "port": cfg.port, "tls": cfg.tls}
        files = {}
        if cfg.tls:
            broker["ca"] = "ca.pem"
            files["ca.pem"] = cfg.ca
        provision(self.folder / "flash", boards.device_board(paths.BOARDS / (BOARD + ".json")),
                  {"box_id": BOX, "box_key": rec["box_key"], "wifi": {"ssid": "demo", "password": ""},
                   "broker": broker, "mqtt_password": rec["mqtt_password"]}, files)
        self.at("backend", "registered %s (1 compartment); its key and broker password are "
                "on its flash only" % BOX)
        cls = plain_consumer(BOX) if self.embedded else Consumer
        self.consumer = cls(self.folder / "ledger.db", cfg).start()
        if not self.consumer.subscribed.wait(10):
            raise StepFailed("the consumer did not subscribe")
        self.at("backend", "the consumer listens for %s's events" % BOX)
        kw = {"heap": self.heap} if self.heap else {}
        self.box = SimBox(self.folder / "flash", vm=self.vm, clock="virtual", bounce_ms=3,
                          epoch=int(time.time()), **kw)
        self.until(lambda: self.box.online, "connection to the broker")
        self.until(lambda: ledger.box(BOX).online, "online status in the ledger")

    def issue(self) -> None:
        ledger = self.ledger
        for role, who in (("driver", "driver"), ("recipient", "recipient")):
            kw = {"not_after": int(time.time()) + 14 * 86400} if role == "recipient" else {}
            issued = self.be.issue(BOX, role, comp=1 if role == "recipient" else 0, uses=1, **kw)
            self.issued[who] = issued
            self.at("backend", "issued the %s's %s code #%d: %s (shown once, sent to the %s)" % (
                who, "deposit" if role == "driver" else "one-time", issued.code_id,
                issued.code, who))
            self.until(lambda: ledger.command_outcome(BOX, issued.cmd_seq)[0] == 0,
                       "confirmation that the box stored code #%d" % issued.code_id)
            self.at("backend", "the box confirmed code #%d (stored as a keyed digest)"
                    % issued.code_id)

    def deposit(self) -> None:
        self.type_code("driver", self.issued["driver"].code, "accepted", "the deposit code")
        self.door("driver", ["closed", "deposit"],
                  ("opens compartment 1", "puts the parcel in and closes the door"))

    def pickup(self) -> None:
        self.pace(5000)   # later that day: past the solenoid's cool-down
        code = self.issued["recipient"].code
        typo = code[:2] + str((int(code[2]) + 1) % 10) + code[3:]
        for k in range(2):
            n = self.type_code("recipient", typo, "rejected", "the one-time code with a digit "
                               "wrong (%s)" % typo)
            self.until(lambda: self.events_since(n, "wrong_code"), "wrong_code event")
        self.type_code("recipient", code, "accepted", "the one-time code")
        self.door("recipient", ["closed", "pickup"],
                  ("opens compartment 1", "takes the parcel and closes the door"))
        codes = {c["id"]: c for c in self.ledger.codes(BOX, include_revoked=True)}
        rid = self.issued["recipient"].code_id
        if codes[rid]["status"] != "used":
            raise StepFailed("the one-time code is %s in the ledger, not used"
                             % codes[rid]["status"])
        self.at("ledger", "code #%d is used up" % rid)

    def attack(self) -> None:
        self.pace(3000)
        taken = {self.issued["driver"].code, self.issued["recipient"].code}
        guesses = []
        while len(guesses) < ATTACK:
            g = "%06d" % secrets.randbelow(10 ** 6)
            if g not in taken and g not in guesses:
                guesses.append(g)
        n = len(self.box.events())
        for i, g in enumerate(guesses):
            self.type_code("attacker", g, "throttled" if i == ATTACK - 1 else "rejected",
                           "a guess, %s (%d of %d)" % (g, i + 1, ATTACK))
        self.until(lambda: self.events_since(n, "throttled"), "throttled event")
        seq, _, _, _, arg = self.events_since(n, "throttled")[0]
        self.until(lambda: self.ledger_has(seq), "throttled (#%d) in the ledger" % seq)
        self.at("box", "the keypad is locked for %d s" % arg)
        n = self.type_code("attacker", guesses[0], "throttled", "another guess at once")
        if self.events_since(n, "wrong_code"):
            raise StepFailed("a guess during the lockout was checked")

    def power(self) -> None:
        self.at("power", "the power is cut")
        self.box.cut_power()
        self.observe()
        self.box.run(3000)
        self.at("power", "the power is back, 3 s later")
        self.box.boot()
        self.until(lambda: self.box.online, "connection to the broker again")
        n = self.type_code("attacker", "%06d" % secrets.randbelow(10 ** 6), "throttled",
                           "a guess right after the reboot")
        if self.events_since(n, "wrong_code"):
            raise StepFailed("the lockout did not survive the power cut")
        st = self.box_state(lambda st: st["boots"] == 2, "state summary after the reboot")
        if not st["wait_s"]:
            raise StepFailed("the box's state says the keypad is not locked")
        self.at("ledger", "the box's state summary: boot 2, %d wrong codes in a row, keypad "
                "locked for %d s more" % (st["failures"], st["wait_s"]))
        self.at("box", "the lockout survived the power cut")

    def ledger_check(self) -> None:
        ledger = self.ledger
        self.until(self.ledger_matches_box, "every event in the ledger", ms=60000)
        last = self.made()[-1]
        # the box's own count of unacknowledged events, from a fresh state summary
        # (its answer to the request is an event of its own, the one pending then)
        self.pace(500)
        st = self.box_state(lambda st: st["pending"] <= 1 and st["next_seq"] - 1 >= last,
                            "a state summary with every earlier event acknowledged")
        self.at("ledger", "the box's state summary: events up to #%d, %d unacknowledged "
                "(its answer to this very request)" % (st["next_seq"] - 1, st["pending"]))
        self.until(self.ledger_matches_box, "every event in the ledger", ms=60000)
        self.pace(1000)   # the consumer's ack of the last one reaches the box
        self.at("power", "the demo is over: the box is switched off")
        self.box.cut_power()
        want = self.made()
        seqs = sorted(e.seq for e in ledger.events(BOX))
        if seqs != want:
            raise StepFailed("the ledger holds seqs %s, not the box's %s once each"
                             % (seqs, want))
        left = _outbox_pending(self.folder / "flash")
        if left:
            raise StepFailed("the box's flash still holds %d unacknowledged events" % left)
        self.at("ledger", "all %d events (#%d..#%d; each boot goes on from the box's "
                "saved seq floor), each exactly once (the consumer ignored %d "
                "duplicates); the box's outbox on flash: empty" % (
                    len(want), want[0], want[-1], self.consumer.stats["duplicates"]))

    # -- what the steps share

    def type_code(self, who, code, expect, what) -> int:
        n, pulses = len(self.box.events()), len(self.box.pulses)
        self.at(who, "types %s" % what)
        start = self.box.now
        self.box.type(code)
        want = {"accepted": ("green", 800), "rejected": ("red", 300),
                "throttled": ("amber", 300)}[expect]
        self.until(lambda: any((led, hz) == want for t, led, hz in self.box.feedback
                               if t >= start), "%s feedback" % expect, ms=3000)
        if expect == "accepted":
            self.until(lambda: len(self.box.pulses) > pulses and self.box.pulses[-1].end,
                       "unlock pulse", ms=3000)
        else:
            self.pace(1500)
            self.observe()
            if len(self.box.pulses) > pulses:
                raise StepFailed("the lock opened for %s" % what)
        return n

    def door(self, who, comp_events, action) -> None:
        n = len(self.box.events())
        self.at(who, action[0])
        self.box.set_door(1, True)
        self.until(lambda: self.events_since(n, "opened"), "opened event")
        self.pace(2000)
        self.at(who, action[1])
        self.box.set_door(1, False)
        for ev in comp_events:
            self.until(lambda: self.events_since(n, ev), "%s event" % ev)
        for ev in ["opened"] + comp_events:
            seq = self.events_since(n, ev)[0][0]
            self.until(lambda: self.ledger_has(seq), "%s (#%d) in the ledger" % (ev, seq))

    # The seqs the box made, from its log: each boot goes on from the seq floor
    # it saved (docs/box.md section 7), so they have gaps after a boot.
    def made(self) -> list:
        return sorted({e[0] for e in self.box.events()})

    def ledger_matches_box(self) -> bool:
        """The ledger holds exactly the seqs the box made, read together: the box may make
        one more (a command's result) while the ledger is read."""
        want = self.made()
        if not all(self.ledger_has(s) for s in want):
            return False
        return sorted(e.seq for e in self.ledger.events(BOX)) == want == self.made()

    def box_state(self, cond, what):
        """Ask the box for its state summary until one satisfies cond (a command can
        be lost in a broker's session takeover after the power cut: asked again)."""
        ledger = self.ledger
        for _ in range(4):
            seq = self.be.request_state(BOX)
            try:
                self.until(lambda: (ledger.box(BOX).state or {}).get("cmd_seq", 0) >= seq
                           and cond(ledger.box(BOX).state), what, ms=5000, real=False)
                return ledger.box(BOX).state
            except StepFailed:
                continue
        raise StepFailed("no %s" % what)


def _outbox_pending(flash: Path) -> int:
    """Events the box's outbox on flash still holds unacknowledged (read on the host with
    the firmware's own Outbox, the box switched off)."""
    from parcelbox.outbox import Outbox
    from parcelbox.storage import Storage

    ob = Outbox(Storage(str(flash)), 4096)
    ob.load()
    return ob.pending()


def run(out=sys.stdout, **kw) -> int:
    return Demo(out, **kw).run()
