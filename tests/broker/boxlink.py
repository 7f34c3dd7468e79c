"""A firmware box core on CPython, joined to a real broker through paho-mqtt.

A test helper, from before the firmware had its own MQTT link (the round-trip
tests still drive the core through it): every protocol decision is in
firmware/parcelbox/remote.py; this file only moves bytes and time. One lock guards the core, which is
single-threaded by design; the paho thread applies commands under it, so a
command is on flash before paho sends its PUBACK. A pump thread plays the
superloop: door samples, ticks, solenoid edges, and publishing what the core
hands out.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from host_tools.backend.sdk import mqtt
from parcelbox import events
from parcelbox import remote as _remote
from parcelbox.box import Box
from parcelbox.storage import Storage

_WRAP = (1 << 30) - 1


class BoxLink:
    def __init__(self, flash_dir: str | Path, box_id: str, box_key: bytes,
                 cfg: mqtt.MqttConfig, settings: dict | None = None, period_ms: int = 10):
        Path(flash_dir).mkdir(parents=True, exist_ok=True)
        self.flash_dir = str(flash_dir)
        self.box_id = box_id
        self._key = box_key
        self.cfg = cfg
        self.settings = dict(settings or {})
        self.period = period_ms / 1000
        self.lock = threading.RLock()
        self.skew_ms = 0  # added to the clock: tests jump time forward with skip()
        self.unlocks: list[tuple[int, int]] = []  # (compartment, tick) at each solenoid rise
        self.published: list[tuple[str, bytes]] = []  # every payload the box sent
        self.doors: dict[int, bool] = {}
        self._level: dict[int, bool] = {}
        self._c = None
        self._stop = threading.Event()
        self._thread = None
        self._online = False
        self._boot()

    def now(self) -> int:
        return (int(time.monotonic() * 1000) + self.skew_ms) & _WRAP

    def skip(self, ms: int) -> None:
        """Move the box's clock forward (resend timers, lockouts) without waiting."""
        with self.lock:
            self.skew_ms += ms

    def _boot(self) -> None:
        storage = Storage(self.flash_dir)
        settings = _remote.stored_settings(storage, self.settings)
        now = self.now()
        self.box = Box(storage, self._key, settings, now)
        # as an ESP32 takes SNTP's answer at boot: the host's clock (network time)
        self.box.set_time(int(time.time()), now, events.TIME_NET)
        self.remote = _remote.Remote(self.box, self.box_id, self._key)
        n = self.box.cfg["compartments"]
        for i in range(1, n + 1):
            self.doors.setdefault(i, False)
            self._level[i] = False

    # ---- network -----------------------------------------------------------

    def start(self) -> "BoxLink":
        c = mqtt.client(self.cfg, self.box_id, clean_session=False, will=self.remote.will())
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        mqtt.connect(c, self.cfg)
        self._c = c
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="box-" + self.box_id, daemon=True)
        self._thread.start()
        return self

    def stop(self, clean: bool = True) -> None:
        """Disconnect; clean=False drops the socket like a power cut (the will fires)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        c, self._c = self._c, None
        if c is not None:
            if clean:
                with self.lock:
                    t, off = self.remote.will()
                mqtt.publish(c, t, off, retain=True)
                c.disconnect()
            else:
                sock = c.socket()
                if sock is not None:
                    sock.close()
            c.loop_stop()

    def power_cut(self) -> None:
        """The power goes: the connection drops, RAM is lost; boot() brings the box back."""
        self.stop(clean=False)
        with self.lock:
            self.box = self.remote = None

    def boot(self) -> "BoxLink":
        with self.lock:
            self._boot()
        return self.start()

    def _on_connect(self, c, userdata, flags, rc, props=None):
        if rc != 0:
            return
        with self.lock:
            c.subscribe([(t, 1) for t in self.remote.subscriptions()])
            t, on = self.remote.online()
            c.publish(t, on, qos=1, retain=True)
            self.remote.connected(self.now())
            self._online = True

    def _on_disconnect(self, *a):
        self._online = False

    def _on_message(self, c, userdata, msg) -> None:
        with self.lock:
            if self.remote is not None:
                self.remote.receive(msg.topic, msg.payload, self.now())

    # ---- the superloop -----------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pump()
            self._stop.wait(self.period)

    def pump(self) -> None:
        with self.lock:
            if self.box is None:
                return
            now = self.now()
            for comp, is_open in self.doors.items():
                self.box.door(comp, is_open, now)
            self.box.tick(now)
            for comp in self._level:
                level = bool(self.box.solenoid(comp, now))
                if level and not self._level[comp]:
                    self.unlocks.append((comp, now))
                self._level[comp] = level
            if self.remote.restart_pending and self._idle():
                self._boot()  # stored settings take effect: the core restarts
                self.remote.connected(now)
            c = self._c
            if c is None or not self._online:
                return
            while True:
                m = self.remote.poll(now)
                if m is None:
                    break
                t, payload, retain = m
                self.published.append((t, payload))
                c.publish(t, payload, qos=1, retain=retain)

    def _idle(self) -> bool:
        return all(not self._level[i] and not self.doors[i] for i in self._level)

    # ---- the person at the box ---------------------------------------------

    def type(self, keys: str) -> None:
        """Keys pressed one after another (digits, '*', '#')."""
        with self.lock:
            for ch in keys:
                self.box.key(ord(ch), self.now())

    def set_door(self, comp: int, is_open: bool) -> None:
        with self.lock:
            self.doors[comp] = is_open

    def call(self, fn):
        """Run fn(box, remote, now) on the core, under its lock."""
        with self.lock:
            return fn(self.box, self.remote, self.now())
