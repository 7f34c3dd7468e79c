# The linux port object the superloop drives (docs/runtime.md section 2): Blinka pins,
# the host's sockets, a state directory as flash, systemd's watchdog, a log on stdout.
import os
import select
import time

from pb_linux.net import HostNet
from parcelbox.storage import Storage, parts

_LEVELS = {10: "D", 20: "I", 30: "W", 40: "E"}
_MASK = 0x3FFFFFFF
# systemd-timesyncd creates this once the system clock is synchronised (systemd >= 239)
TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"


# ticks_ms on CPython: monotonic ms, wrapping at 2**30 as MicroPython's does.
def ticks_ms():
    return int(time.monotonic() * 1000) & _MASK


# One log line per record, "PB <level> <ms> <text>", as on the ESP32's console; under
# systemd stdout goes to the journal. Callers never pass a secret.
def logger(clock, out=print):
    def log(level, text):
        out("PB %s %d %s" % (_LEVELS.get(level, "I"), clock(), text))
    return log


class DurableStorage(Storage):
    # Storage on a Linux filesystem (an SD card): a replaced file is on the disk before
    # it takes the old one's name, and the rename is on the disk before replace()
    # returns; appends are synced too, and the folder when an append creates the file. LittleFS on the ESP32 gives this by design.
    def replace(self, name, data):
        tmp = self._path(name + ".tmp")
        f = open(tmp, "wb")
        try:
            for part in parts(data):
                self.bytes_written += len(part)
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        os.rename(tmp, self._path(name))
        self._sync_dir()

    # A file the append creates has its name synced too (the folder), as replace's has.
    def append(self, name, data):
        new = self.size(name) < 0
        f = open(self._path(name), "ab")
        try:
            self.bytes_written += len(data)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        if new:
            self._sync_dir()

    def _sync_dir(self):
        fd = os.open(self.root or "/", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LinuxNet(HostNet):
    # The host's network (firmware/linux/pb_linux/net.py): the OS keeps it up. Files named in the
    # configuration (CA, client certificate) live in the state directory. The time is
    # given only once the system clock is synchronised (a Pi has no RTC: before NTP it
    # counts from a saved or a 1970 time, which the box must not trust).
    def __init__(self, root, synced=TIMESYNC_FLAG):
        HostNet.__init__(self)
        self.root = root
        self.synced = synced    # a flag file's path; True: always trusted (an RTC, chrony)

    def time(self):
        if self.synced is not True and not os.path.exists(self.synced):
            return None
        return int(time.time())

    def _file(self, name):
        if not name:
            return None
        return name if name.startswith("/") else os.path.join(self.root, name)

    def open(self, host, port, tls, ca, cert=None, key=None):
        return HostNet.open(self, host, port, tls, self._file(ca), self._file(cert), self._file(key))


class Port:
    # hw: pb_linux.hw.Hardware; storage: DurableStorage; net: LinuxNet (or any net of
    # docs/runtime.md section 4); notify: a pb_linux.watchdog.Notifier.
    def __init__(self, hw, storage, net, log, notify, clock=None, sleep=None, rand=None):
        self.hw = hw
        self.storage = storage
        self.net = net
        self.log = log
        self.notify = notify
        self.ticks_ms = clock or ticks_ms
        self._sleep = sleep or (lambda ms: time.sleep(ms / 1000))
        # on the real clock idle waits on the link's socket; a lent sleep (a virtual
        # clock: tests, host_tools/sim/linuxbox.py) cannot, so it just sleeps
        self._poll = select.poll() if sleep is None else None
        self._conn = None       # the connection whose socket is registered
        self._fd = -1
        self._pending = None    # its TLS socket's pending(), if it has one
        self.urandom = rand or os.urandom
        self.scan = hw.scan
        self.door = hw.door
        self.tamper = hw.tamper
        self.solenoid = hw.solenoid
        self.indicate = hw.indicate
        self.failsafe_tripped = hw.failsafe_tripped
        self.feeds = 0

    # systemd's watchdog: WatchdogSec without a WATCHDOG=1 and it kills and restarts us.
    def feed(self):
        self.feeds += 1
        self.notify("WATCHDOG=1")

    # Sleep ms, or less once conn (the link's connection, or None) has data to read.
    def idle(self, ms, conn=None):
        if ms <= 0:
            return
        if conn is not None and self._poll is not None:
            if conn is not self._conn:
                self._watch(conn)
            if self._fd >= 0:
                if self._pending is None or not self._pending():
                    self._poll.poll(ms)
                return
        self._sleep(ms)

    # Register conn's socket in place of the last one: once per connection.
    def _watch(self, conn):
        if self._fd >= 0:
            self._poll.unregister(self._fd)
        self._conn = conn
        self._fd = -1
        self._pending = None
        f = getattr(conn, "pollable", None)
        s = f() if f is not None else None
        if s is not None:
            self._fd = s.fileno()
            self._pending = getattr(s, "pending", None)
            self._poll.register(self._fd, select.POLLIN)
