# systemd's watchdog and readiness protocol (sd_notify): datagrams "READY=1",
# "WATCHDOG=1", "STATUS=..." to $NOTIFY_SOCKET; no dependency beyond the socket module.
import os
import socket


class Notifier:
    # path: the socket ($NOTIFY_SOCKET by default; "@name" is the abstract namespace).
    # Without one (not started by systemd, or no Type=notify) every call does nothing.
    def __init__(self, path=None, environ=None):
        env = os.environ if environ is None else environ
        if path is None:
            path = env.get("NOTIFY_SOCKET")
        self.sent = 0
        self._sock = None
        self._addr = None
        if path:
            if path[0] == "@":
                path = "\0" + path[1:]
            self._addr = path
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # WatchdogSec from the unit, as systemd passes it (0: no watchdog configured)
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_ms = 0
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_ms = int(usec) // 1000

    # Send one state line; a service manager that went away is not our error.
    def __call__(self, state):
        if self._sock is None:
            return False
        try:
            self._sock.sendto(state.encode(), self._addr)
        except OSError:
            return False
        self.sent += 1
        return True

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
