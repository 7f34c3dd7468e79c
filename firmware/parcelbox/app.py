# The superloop (docs/runtime.md section 5): one port, one Box, its Remote and Link.
# Reads inputs, feeds the core, drives outputs, feeds the watchdog only on progress.
from parcelbox import devconf, events, mqtt, ticks
from parcelbox import remote as _remote
from parcelbox.box import Box

try:
    from micropython import const
except ImportError:
    const = lambda x: x  # noqa: E731 - CPython; mypy rejects a def unlike the stub's const

SCAN_MS = const(10)        # keypad scan period: the longest the loop ever sleeps
MAX_FAILS = const(20)      # failing loop steps in a row before run() gives up
_STORAGE_CHECK_MS = const(1000)
_TAMPER_MS = const(100)    # the tamper switch must hold a new state this long
_RESYNC_MS = const(21600000)  # the network's time is taken again every 6 h (crystal drift)
_KEYPAD = const(1)
_LOCK = const(2)
_LINK = const(4)
_STORAGE = const(8)
_ALL = const(15)

# Log levels of port.log
DEBUG = const(10)
INFO = const(20)
WARNING = const(30)
ERROR = const(40)


class App:
    # port: docs/runtime.md section 2; board, conf: devconf.load_board / load_config.
    # make_link(remote, conf, net, rand) builds the link; None: the box runs offline.
    def __init__(self, port, board, conf, make_link=None):
        self.port = port
        self.board = board
        self.conf = conf
        self._make_link = make_link
        self.loops = 0
        self.errors = 0       # exceptions survived in a loop step
        self._seen = 0        # progress bits since the last watchdog feed
        self._link_progress = -1
        self._link_error = None   # the link's last_error as last logged
        self._link_connects = 0
        self._storage_at = None
        self._timed = None      # tick the network's time was last taken (None: never)
        self._tamper = None     # debounced tamper state (None: unknown yet, or no switch)
        self._tamper_raw = None
        self._tamper_since = 0
        self._energised = False  # a solenoid was on in the last step
        self.link = None
        self.box = None
        # optional port method: bits of solenoids the hardware failsafe has cut (clears)
        self._failsafe = getattr(port, "failsafe_tripped", None)
        # The link's 4 KB receive buffer first, while the heap is still whole: built after
        # the core it may find only fragments (a boot that repairs a damaged file churns).
        self._dec = mqtt.Decoder() if make_link is not None else None
        self._build(port.ticks_ms())

    def _build(self, now):
        port, conf = self.port, self.conf
        settings = _remote.stored_settings(port.storage, devconf.core_settings(self.board, conf))
        old = self.box
        self.box = Box(port.storage, conf["box_key"], settings, now, self._on_event)
        if old is not None:  # the new core knows the time too, as surely as the old one
            self.box.take_clock(old, now)
        self.remote = _remote.Remote(self.box, conf["box_id"], conf["box_key"])
        self.n = self.box.cfg["compartments"]
        if self._make_link is not None:
            b = conf["broker"]
            lc = {"box_id": conf["box_id"], "host": b["host"], "port": b["port"], "tls": b["tls"],
                  "ca": b["ca"], "cert": b.get("cert"), "key": b.get("key"),
                  "username": conf["mqtt_username"],
                  "password": conf["mqtt_password"], "keepalive": 60}
            if self.link is not None:
                self.link.use(self.remote, now)  # the connection stays; the core is new
            else:
                self.link = self._make_link(self.remote, lc, port.net, port.urandom, self._dec)
                self._link_progress = self.link.progress

    def _on_event(self, seq, kind, comp, code_id, arg, t):
        name = events.NAMES[kind] if kind < len(events.NAMES) else str(kind)
        self.port.log(WARNING if events.is_security(kind) else INFO,
                      "event %d %s comp %d id %d arg %d" % (seq, name, comp, code_id, arg))

    # One pass of the loop; returns the ms it may sleep before the next.
    def step(self):
        port, box = self.port, self.box
        now = port.ticks_ms()
        self.loops += 1
        box.keypad_frame(port.scan(), now)
        self._seen |= _KEYPAD
        for c in range(1, self.n + 1):
            box.door(c, port.door(c), now)
        self._tamper_sample(port.tamper(), now)
        box.tick(now)
        on = False
        for c in range(1, self.n + 1):
            s = box.solenoid(c, now)
            port.solenoid(c, s)
            on = on or s
        self._energised = on
        p = box.player
        port.indicate(p.led(now), p.hz(now))
        if self._failsafe is not None:
            cut = self._failsafe()
            if cut:  # a solenoid outlived max_on_ms: the loop was stuck; say so, show ERROR
                port.log(ERROR, "failsafe cut solenoids 0x%x" % cut)
                box.fault(now)
        self._seen |= _LOCK
        # Nothing that may block runs while a solenoid is on: a DNS lookup or a TLS
        # handshake step holds the loop in C for up to seconds, and the failsafe's timer
        # callback with it, which would stretch the pulse. The network waits (<= 5 s).
        if not on:
            self._network(now)
        # storage shows progress by answering a stat of the state files once a second,
        # so the watchdog is fed at most once a second
        if self._storage_at is None or ticks.diff(now, self._storage_at) >= _STORAGE_CHECK_MS:
            self._storage_at = now
            if port.storage.size("state.0") >= 0 or port.storage.size("state.1") >= 0:
                self._seen |= _STORAGE
        if self.remote.restart_pending and self._idle(now):
            self.port.log(INFO, "settings changed: restarting the core")
            self._build(now)
        if self._seen == _ALL:
            port.feed()
            self._seen = 0
        return self._sleep(now)

    # The enclosure's tamper switch: a change that holds for _TAMPER_MS is an event; the
    # state at boot is only reported if it is open.
    def _tamper_sample(self, raw, now):
        if raw is None:
            return
        if raw != self._tamper_raw:
            self._tamper_raw = raw
            self._tamper_since = now
        if raw != self._tamper and ticks.diff(now, self._tamper_since) >= _TAMPER_MS:
            first = self._tamper is None
            self._tamper = raw
            if raw or not first:
                if raw:
                    self.port.log(WARNING, "tamper switch open")
                try:
                    self.box.event(events.TAMPER, 0, 0, 1 if raw else 0, now)
                except OSError:  # as the core's own entry points: counted, ERROR shown
                    self.box.fault(now)

    def _network(self, now):
        net = self.port.net
        if net is None:
            self._seen |= _LINK
            return
        net.step(now)
        if self._timed is None or ticks.diff(now, self._timed) >= _RESYNC_MS:
            t = net.time()
            if t:  # unauthenticated: the core refuses one that goes back (time_refused)
                self.box.set_time(t, now, events.TIME_NET)
                self._timed = now
        link = self.link
        if link is None:
            self._seen |= _LINK
            return
        link.step(now)
        if link.progress != self._link_progress:
            self._link_progress = link.progress
            self._seen |= _LINK
        # docs/link.md section 8, rule 4: why the link is down, once per change (no secret)
        if link.connects != self._link_connects:
            self._link_connects = link.connects
            self.port.log(INFO, "link: connected")
        e = link.last_error
        if e != self._link_error:
            self._link_error = e
            if e is not None:
                self.port.log(WARNING, "link: " + e)

    # Nobody is using the box: every compartment at rest (no unlock under way, door
    # shut, cool-down over), no code being typed, no technician in service mode.
    def _idle(self, now):
        box = self.box
        for c in range(1, self.n + 1):
            if not box.doors[c - 1].at_rest(now) or self.port.door(c):
                return False
        return box.entry.count == 0 and box.service_code < 0

    def _sleep(self, now):
        best = SCAN_MS
        d = self.box.next_deadline(now)
        if d is not None:
            best = min(best, max(0, ticks.diff(d, now)))
        if self.link is not None and not self._energised:
            d = self.link.next_deadline(now)
            if d is not None:
                best = min(best, max(0, ticks.diff(d, now)))
        return best

    # What may end the sleep early: the link's connection, when data on it should be read
    # at once (a code the backend pushed). None while a solenoid is on: the network waits
    # for the pulse's end, so its data must not wake the loop (it would spin).
    def _waitable(self):
        link = self.link
        if link is None or self._energised:
            return None
        return link.waitable()

    # Forever (or `loops` passes): a step, then sleep. An exception in a step is logged
    # and survived; a part that fails keeps its progress bit clear, so the watchdog
    # resets the box, and MAX_FAILS failing steps in a row end run() with the exception
    # (main.py logs it as a crash and resets).
    def run(self, loops=-1):
        fails = 0
        while loops != 0:
            loops -= 1
            try:
                ms = self.step()
                fails = 0
            except Exception as e:  # noqa: BLE001 - logged; the watchdog and MAX_FAILS decide
                self.errors += 1
                fails += 1
                self.port.log(ERROR, "loop error: %s" % e.__class__.__name__)
                if fails >= MAX_FAILS:
                    raise
                ms = SCAN_MS
            self.port.idle(ms, self._waitable())
