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
