# The count of active codes that the throttle's cap needs (Box._active, _count_active):
# taken a slice per tick, never between the final key and the unlock, and while no count
# holds, every stored code counts as active (the cap is only ever stricter).
from host_tools.backend.crypto import code_digest
from memflash import MemStorage
from parcelbox import feedback
from parcelbox.box import Box
from parcelbox.throttle import daily_cap

KEY = bytes(range(32))
T0 = 1_795_600_000
DRIVER = "22222222"


def _records(n, used=0):
    # code 1 the driver's; then n-1 recipients, the first `used` of them used up
    yield (1, code_digest(KEY, DRIVER), 2, 0, 50, 0, 0)
    for i in range(2, n + 1):
        d = code_digest(KEY, "%08d" % (30_000_000 + i))
        yield (i, d, 1, 1, 0 if i - 2 < used else 1, 0, 0)


class Rig:
    def __init__(self, n, used=0):
        self.now = 0
        self.box = Box(MemStorage(), KEY, {"code_len": 8, "max_codes": max(n, 16)}, self.now)
        self.box.set_time(T0, self.now)
        self.box.door(1, False, self.now)
        self.advance(200)
        self.box.codes.replace_all(_records(n, used))

    def advance(self, ms, step=10):
        end = self.now + ms
        while self.now < end:
            self.now += step
            self.box.tick(self.now)

    def type(self, code, tick=True):
        for ch in code.encode():
            self.box.key(ch, self.now)
            self.now += 150
            if tick:
                self.box.tick(self.now)
        return self.box.player.take()


def _spy(box):
    calls = []
    real = box.codes.active_count

    def counting(now_s, start=0, stop=-1):
        calls.append((start, stop))
        return real(now_s, start, stop)
    box.codes.active_count = counting
    return calls


def test_no_active_count_runs_between_the_final_key_and_the_unlock():
    r = Rig(300)
    calls = _spy(r.box)
    for ch in DRIVER[:-1].encode():
        r.box.key(ch, r.now)
        r.now += 150
    del calls[:]
    r.box.key(ord(DRIVER[-1]), r.now)
    assert r.box.player.take() == feedback.ACCEPTED and r.box.solenoid(1, r.now)
    assert calls == []


def test_tick_counts_32_codes_at_a_time_until_the_whole_store_is_counted():
    r = Rig(100, used=30)
    calls = _spy(r.box)
    for _ in range(4):
        r.box.tick(r.now)
    assert calls == [(0, 32), (32, 64), (64, 96), (96, 128)]
    del calls[:]
    r.box.tick(r.now)
    assert calls == []                      # the count holds: nothing more to do
    assert r.box._active(T0) == 70          # 100 stored, 30 used up


def test_until_a_count_holds_every_stored_code_counts_as_active():
    r = Rig(100, used=60)                   # 100 stored, 40 active
    # a wrong code typed at once, no tick since the sync: the cap for all 100 stored
    assert r.type("99999999", tick=False) == feedback.REJECTED
    assert r.box.throttle.cap == daily_cap(100, 8)
    r.advance(200)                          # the ticks count the store
    r.type("99999998")
    assert r.box.throttle.cap == daily_cap(40, 8)


def test_a_store_change_during_a_count_starts_it_again():
    r = Rig(100)
    calls = _spy(r.box)
    r.box.tick(r.now)
    r.box.tick(r.now)
    r.box.codes.revoke(50)                  # slots move: the slices so far are void
    r.box.tick(r.now)
    assert calls[-1] == (0, 32)
    r.advance(100)
    assert r.box._active(T0) == 99


def test_a_new_minute_takes_a_new_count():
    r = Rig(10)
    assert T0 % 60 == 40                    # minutes begin at T0 + 20, T0 + 80
    r.box.codes.add(20, code_digest(KEY, "44444444"), 1, 1, 1, T0 + 50, 0)  # opens later
    r.advance(100)
    assert r.box._active(r.box.wall(r.now)) == 10
    r.advance(59_000)                       # T0 + 59: open, but the minute's count holds
    assert r.box._active(r.box.wall(r.now)) == 10
    r.advance(25_000)                       # T0 + 84: the new minute's count sees it
    assert r.box._active(r.box.wall(r.now)) == 11
