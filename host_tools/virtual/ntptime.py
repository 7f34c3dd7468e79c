# A minimal fake of micropython-lib's `ntptime`: time() answers the fake world's UTC
# clock in the port's epoch (2000 on the ESP32), or raises OSError when unreachable.
import fakeworld

host = "pool.ntp.org"
timeout = 1

_EPOCH_2000 = 946684800         # 2000-01-01 in Unix seconds


def time():
    w = fakeworld.get()
    if w.utc is None or not w.wifi_active:
        raise OSError(116)      # ETIMEDOUT: no answer
    if w.epoch_year == 2000:
        return w.utc - _EPOCH_2000
    return w.utc


def settime():
    w = fakeworld.get()
    w.rtc = time()
