# A minimal fake of MicroPython's `network` module (ESP32 station only), for CPython and
# the VM: WLAN joins an access point of the fake world after wifi_connect_ms of fake time.
import fakeworld

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

_hostname = "espressif"


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


class WLAN:
    def __init__(self, interface=STA_IF):
        if interface != STA_IF:
            raise ValueError("fake network: station interface only")
        self.w = fakeworld.get()
        self._ssid = None
        self._key = None
        self._at = -1
        self._status = STAT_IDLE
        self.connects = 0

    def active(self, on=None):
        if on is None:
            return self.w.wifi_active
        self.w.wifi_active = bool(on)
        if not on:
            self._status = STAT_IDLE
            self._ssid = None

    def connect(self, ssid=None, key=None, bssid=None):
        if not self.w.wifi_active:
            raise OSError("Wifi Not Started")
        self._ssid = ssid
        self._key = key or ""
        self._at = self.w.now
        self._status = STAT_CONNECTING
        self.connects += 1

    def disconnect(self):
        self._ssid = None
        self._status = STAT_IDLE

    def status(self, param=None):
        if param == "rssi":
            return -60
        if self._status == STAT_CONNECTING and self.w.now - self._at >= self.w.wifi_connect_ms:
            aps = self.w.wifi_aps
            if self._ssid not in aps:
                self._status = STAT_NO_AP_FOUND
            elif aps[self._ssid] != self._key:
                self._status = STAT_WRONG_PASSWORD
            else:
                self._status = STAT_GOT_IP
        if self._status == STAT_GOT_IP and self._ssid not in self.w.wifi_aps:
            self._status = STAT_BEACON_TIMEOUT      # the access point went away
        return self._status

    def isconnected(self):
        return self.w.wifi_active and self.status() == STAT_GOT_IP

    def ifconfig(self, cfg=None):
        if self.isconnected():
            return ("192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if args and args[0] == "mac":
            return self.w.mac
        if args:
            raise ValueError("unknown config param")
        return None
