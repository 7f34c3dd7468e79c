# Scenario: the guess throttle on CPython and in the MicroPython VM: lockouts, the daily
# budget, its arithmetic in integers, persistence through power cuts, corrupt state, wrap.
from parcelbox import ticks
from parcelbox.storage import frame, frame_at
from parcelbox.throttle import (DAY_MS, Throttle, daily_cap, expected_days_to_hit,
                                expected_tenth_years, table_rows)
from memflash import MemStorage, PowerCut


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# What the Box does: the throttle record in a checksummed frame, replaced atomically.
def save(st, t):
    st.replace("thr", frame(t.dump()))


def restore(st, t, now):
    data = st.read("thr")
    r = None if data is None else frame_at(data, 0)
    if r is None:
        return t.load(b"", now)
    return t.load(data[r[0]:r[1]], now)


def scenario_lockouts():
    t = Throttle()
    got = []
    now = 0
    for i in range(12):
        now = ticks.add(now, t.check(now))
        got.append(t.failure(now, 1) // 1000)
    check(got == [0, 0, 0, 0, 0, 30, 60, 120, 240, 480, 900, 900], "lockouts %r" % got)
    now = ticks.add(now, t.check(now))
    t.success(now)
    check(t.failures == 0 and t.failure(now, 1) == 0, "a correct code ends the run")
    print("lockouts (s): %r" % got)


def scenario_arithmetic():
    cap = daily_cap(10, 6)
    check(cap == 24, "cap for K=10, L=6")
    # 10 years with the full bucket: (N+1)/((K+1)cap) - 1 >= 3652.5, in integers
    check(4 * 1000001 >= 11 * cap * (4 * 3652 + 2 + 4), "meets 10 years")
    check(4 * 1000001 < 11 * (cap + 1) * (4 * 3652 + 2 + 4), "largest such cap")
    check(expected_days_to_hit(10, 6, cap) == 3786, "days")
    check(expected_tenth_years(10, 6, cap) == 103, "years")
    rows = table_rows((1, 10, 500), (6, 8))
    check(rows[2] == (500, [(1, 54), (54, 101)]), "table row %r" % (rows[2],))
    print("K=10 L=6: %d a day, %d days" % (cap, expected_days_to_hit(10, 6, cap)))


def scenario_budget_and_wrap():
    t = Throttle(free_tries=255)
    now = ticks.PERIOD - 1000000
    for i in range(24):
        t.failure(now, 10)
    check(t.tokens == 0 and t.check(now) == 3600000, "empty bucket: one hour a token")
    now = ticks.add(now, 3600000)  # across the wrap
    check(now < 3600000 and t.check(now) == 0 and t.tokens == 1, "token after the wrap")
    print("budget: 24 then 1 an hour, across the wrap")


def scenario_three_days_of_an_attacker():
    t = Throttle()
    now = ticks.PERIOD - 5000
    elapsed = 0
    days = [0, 0, 0]
    while True:
        w = t.check(now)
        if w:
            elapsed += w
            now = ticks.add(now, w)
            continue
        d = elapsed // DAY_MS
        if d >= 3:
            break
        t.failure(now, 10)
        t.success(now)  # even with a valid code of their own
        days[d] += 1
    check(days[0] <= 48 and days[1] <= 24 and days[2] <= 24, "rate bound %r" % days)
    print("attacker guesses per day: %r" % days)


def scenario_power_cuts():
    st = MemStorage()
    t = Throttle()
    for i in range(7):
        t.failure(1000, 10)
    save(st, t)
    st.cut_after(5)  # the next save is torn: the last good record survives
    t.failure(ticks.add(1000, 60000), 10)
    try:
        save(st, t)
        check(False, "power cut expected")
    except PowerCut:
        pass
    st = st.reboot()
    u = Throttle()
    check(restore(st, u, 42), "restored")
    check(u.failures == 7 and u.tokens == 17, "counters as saved")
    check(u.check(42) == 60000, "lockout restarts in full from boot")
    st.corrupt("thr", 4)
    v = Throttle()
    check(not restore(st, v, 42), "corrupt refused")
    check(v.check(42) == DAY_MS and v.tokens == 0 and v.dirty, "corrupt grants nothing")
    v.clear(42)
    check(v.check(42) == 0, "backend clear")
    print("power cut: 7 failures, 17 tokens kept; corrupt: locked a day")


scenario_lockouts()
scenario_arithmetic()
scenario_budget_and_wrap()
scenario_three_days_of_an_attacker()
scenario_power_cuts()
print("OK throttle")
