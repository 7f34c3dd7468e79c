# The deterministic simulation (host_tools/detsim.py, docs/detsim.md): fixed seeds in the
# default run, many in the slow one, and planted bugs it must find within the CI budget.
import pytest

from host_tools import detsim
from parcelbox import codestore, throttle

FIXED = range(12)  # about 1 box-day each: ~6 s on CPython


@pytest.mark.parametrize("seed", FIXED)
def test_a_seeded_box_day_keeps_every_invariant(seed):
    w = detsim.run_seed(seed, days=1)
    assert w.steps > 100 and w.checks > w.steps and w.created


@pytest.mark.slow
def test_many_seeds_keep_every_invariant():
    for seed in range(1000, 1200):
        detsim.run_seed(seed, days=2)


def first_failing_seed(seeds, days=1):
    for seed in seeds:
        try:
            detsim.run_seed(seed, days)
        except detsim.InvariantError as e:
            return seed, str(e)
    return None, ""


def test_a_seed_replays_identically():
    a, b = detsim.run_seed(3, days=0.5), detsim.run_seed(3, days=0.5)
    assert (a.created, a.checks, list(a.trace)) == (b.created, b.checks, list(b.trace))


def test_it_finds_a_throttle_that_forgets_its_count_on_power_loss(monkeypatch):
    orig = throttle.Throttle.load

    def forgetful(self, data, now):
        orig(self, data, now)
        self.clear(now)
        return True

    monkeypatch.setattr(throttle.Throttle, "load", forgetful)
    seed, msg = first_failing_seed(range(20))
    assert seed is not None, "the planted bug went unnoticed"
    assert "reset the throttle" in msg and "replay:" in msg and "last steps:" in msg


def test_it_finds_a_code_store_that_never_spends_a_use(monkeypatch):
    monkeypatch.setattr(codestore.CodeStore, "consume", lambda self, slot: self.fields(slot)[3])
    seed, msg = first_failing_seed(range(20))
    assert seed is not None, "the planted bug went unnoticed"
    assert "no use left" in msg or "opened" in msg


def test_an_owner_code_retyped_while_its_doors_are_unlocked_spends_no_extra_use():
    # found by detsim (seed 5353 of its first version): the second use refused every busy
    # compartment and ungranted them, so the first use's unopened doors gave it back
    from test_remote import Rig, code
    r = Rig(settings={"compartments": 3})
    r.send("add", code=code(1, role=3, comp=0, uses=3))

    def type_code():
        for ch in "%06d" % 100001:
            r.box.key(ord(ch), r.now)
            r.advance(200)

    type_code()
    r.advance(1000)
    r.door(1, True)          # door 1 opened: the use is spent
    type_code()              # every compartment busy: refused, use given back
    r.advance(20000)         # doors 2 and 3 were never opened
    slot = r.box.codes.slot_of(1)
    assert r.box.codes.fields(slot)[3] == 2
