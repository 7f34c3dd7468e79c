# A faithful fake of MicroPython's `machine` module on the ESP32 and ESP32-S3, for
# CPython and the MicroPython VM: Pin, PWM, ADC, WDT, Timer, reset and friends.
#
# What each class does mirrors ports/esp32 of MicroPython (machine_pin.c,
# machine_timer.c, machine_pwm.c, machine_adc.c, the WDT): same constants, same
# errors for the same misuse. Levels, time and resets come from fakeworld.World,
# which tests drive (press keys, open doors, advance the clock). Notable real
# behaviours kept:
# - Pin(n, Pin.OUT) on GPIO34-39 of the ESP32 raises ValueError("pin can only be
#   input"); PULL_UP there is accepted and does nothing (the pad has no resistor),
#   so the pin floats. A pin the chip lacks raises ValueError("invalid pin").
# - Pin(n, mode, value=v) sets the level before the direction: no glitch.
# - Timer callbacks are soft on the ESP32 (scheduled, not run in the ISR), and
#   `hard=True` raises ValueError; here they run inside World.advance() at their time.
# - WDT(timeout) resets the chip when not fed for `timeout` ms of fake time.
import fakeworld

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

PWRON_RESET = fakeworld.PWRON_RESET
HARD_RESET = fakeworld.HARD_RESET
WDT_RESET = fakeworld.WDT_RESET
DEEPSLEEP_RESET = fakeworld.DEEPSLEEP_RESET
SOFT_RESET = fakeworld.SOFT_RESET

_OUTBIT = const(2)


class Pin:
    IN = 1               # GPIO_MODE_INPUT
    OUT = 3              # GPIO_MODE_INPUT_OUTPUT
    OPEN_DRAIN = 7       # GPIO_MODE_INPUT_OUTPUT_OD
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    # Pin(id, mode=None, pull=-1, *, value=None, drive=None, hold=None)
    def __init__(self, id, mode=None, pull=-1, value=None, drive=None, hold=None):
        w = fakeworld.get()
        if isinstance(id, Pin):
            id = id.id
        w.check_pin(id)
        self.w = w
        self.id = id
        self._irq = None
        if mode is not None or pull != -1 or value is not None:
            self.init(mode, pull, value=value, drive=drive, hold=hold)

    def init(self, mode=None, pull=-1, value=None, drive=None, hold=None):
        w = self.w
        p = self.id
        if value is not None:
            w.out[p] = 1 if value else 0        # level first, then direction
        if mode is not None:
            if mode not in (Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
                raise ValueError("invalid pin mode")
            if mode & _OUTBIT and w.no_out[p]:
                raise ValueError("pin can only be input")
            w.mode[p] = mode
        if pull != -1:
            if pull is not None and pull not in (Pin.PULL_UP, Pin.PULL_DOWN, 3):
                raise ValueError("invalid pull")
            w.pull[p] = pull or 0             # kept even where the pad has no resistor

    # Read the pad (as gpio_get_level does, also for outputs), or set the output latch.
    def value(self, v=None):
        if v is None:
            return self.w.level(self.id)
        self.w.out[self.id] = 1 if v else 0

    def __call__(self, v=None):
        if v is None:
            return self.w.level(self.id)
        self.w.out[self.id] = 1 if v else 0

    def on(self):
        self.w.out[self.id] = 1

    def off(self):
        self.w.out[self.id] = 0

    def toggle(self):
        self.w.out[self.id] ^= 1

    # Stored, not fired: interrupts are optional in this fake.
    def irq(self, handler=None, trigger=3, wake=None):
        self._irq = (handler, trigger)
        return self._irq

    def __repr__(self):
        return "Pin(%d)" % self.id


class PWM:
    # PWM(dest, *, freq, duty_u16, duty_ns, duty, invert): LEDC on the ESP32.
    def __init__(self, dest, freq=None, duty_u16=None, duty_ns=None, duty=None, invert=0):
        if not isinstance(dest, Pin):
            dest = Pin(dest)
        w = dest.w
        if w.no_out[dest.id]:
            raise ValueError("pin can only be input")
        self.w = w
        self.pin = dest.id
        self._freq = 5000
        self._duty = 32768
        w.mode[self.pin] = Pin.OUT
        self.init(freq, duty_u16, duty_ns, duty, invert)

    def init(self, freq=None, duty_u16=None, duty_ns=None, duty=None, invert=0):
        if freq is not None:
            self.freq(freq)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        elif duty is not None:
            self.duty(duty)
        self.w.pwm[self.pin] = self

    def freq(self, f=None):
        if f is None:
            return self._freq
        if not 1 <= f <= 40000000:
            raise ValueError("frequency must be from 1Hz to 40MHz")
        self._freq = f

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 must be from 0 to 65535")
        self._duty = d

    def duty(self, d=None):
        if d is None:
            return self._duty >> 6
        if not 0 <= d <= 1023:
            raise ValueError("duty must be from 0 to 1023")
        self._duty = d << 6

    def deinit(self):
        self._duty = 0
        w = self.w
        if w.pwm[self.pin] is self:
            w.pwm[self.pin] = None
        w.out[self.pin] = 0


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    # full scale per attenuation, microvolts (ESP32 datasheet, approximate)
    _FULL = (950000, 1250000, 1750000, 3100000)

    def __init__(self, pin, atten=0):
        if isinstance(pin, Pin):
            pin = pin.id
        w = fakeworld.get()
        w.check_pin(pin)
        if not w.adc[pin]:
            raise ValueError("invalid pin for ADC")
        self.w = w
        self.pin = pin
        self._atten = atten
        self._width = 12

    def atten(self, a):
        self._atten = a

    def width(self, b):
        self._width = b

    # Calibrated reading in microvolts. ADC2 cannot read while Wi-Fi runs.
    def read_uv(self):
        w = self.w
        if w.adc[self.pin] == 2 and w.wifi_active:
            raise OSError(116)          # ETIMEDOUT: ADC2 is the Wi-Fi driver's
        return max(0, min(w.uv[self.pin], ADC._FULL[self._atten]))

    def read_u16(self):
        return self.read_uv() * 65535 // ADC._FULL[self._atten]

    def read(self):
        return self.read_u16() >> (16 - self._width)


class WDT:
    # WDT(id=0, timeout=5000): starts at once and cannot be stopped.
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("invalid WDT id")
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        w = fakeworld.get()
        self.w = w
        w.wdt_timeout = timeout
        w.wdt_fed = w.now

    def feed(self):
        w = self.w
        w.wdt_fed = w.now
        w.wdt_feeds += 1


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    # Timer(id, ...): hardware timers 0..3 (one object per id), -1 a virtual timer.
    def __init__(self, id, mode=1, period=-1, callback=None, freq=None, tick_hz=1000, hard=False):
        w = fakeworld.get()
        if id < -1 or id >= w.ntimers:
            raise ValueError("invalid Timer number, max %d" % w.ntimers)
        self.w = w
        self.id = id
        self._due = -1
        self._period = 0
        self._mode = mode
        self._cb = None
        self.fired = 0
        if period != -1 or callback is not None or freq is not None:
            self.init(mode=mode, period=period, callback=callback, freq=freq,
                      tick_hz=tick_hz, hard=hard)

    def init(self, mode=1, period=-1, callback=None, freq=None, tick_hz=1000, hard=False):
        w = self.w
        self._disarm()
        if self.id >= 0:
            for t in list(w.timers):     # one hardware timer per id, as on the chip
                if t.id == self.id:
                    t._disarm()
        if hard:
            raise ValueError("hard Timers are not implemented")
        if freq is not None:
            ms = 1000 // freq
        else:
            ms = period * 1000 // tick_hz
        if ms < 0:
            ms = 0
        self._period = ms
        self._mode = mode
        self._cb = callback
        self._due = w.now + ms
        w.timers.append(self)

    def deinit(self):
        self._disarm()

    def _disarm(self):
        w = self.w
        if self in w.timers:
            w.timers.remove(self)
        self._due = -1

    def _fire(self):
        w = self.w
        if self._mode == Timer.PERIODIC and self._period > 0:
            self._due += self._period
        else:
            self._disarm()
        self.fired += 1
        if self._cb is not None:
            self._cb(self)

    def armed(self):
        return self._due >= 0


def reset():
    fakeworld.get().reset(SOFT_RESET)


def soft_reset():
    fakeworld.get().reset(SOFT_RESET)


def reset_cause():
    return fakeworld.get().cause


def unique_id():
    return fakeworld.get().mac


def freq(hz=None):
    if hz is None:
        return 160000000


def idle():
    pass


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
