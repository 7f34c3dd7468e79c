# The broker and the backend consumer are each restarted (or killed) in the middle of a
# stream of box events; afterwards every event is in the ledger exactly once.
import threading
import time

import pytest

from parcelbox import events
from roundtrip_world import World, wait_for

BOX = "box-1"
N = 200


@pytest.fixture
def world(mosquitto, tmp_path):
    w = World(mosquitto, tmp_path)
    yield w
    w.close()


def _stream(link, n, started):
    for i in range(n):
        link.call(lambda box, r, now: box.event(events.EXPIRED, 0, 0, i, now))
        if i == 5:
            started.set()
        time.sleep(0.01)


def _start_stream(link):
    """N events (kind expired, arg 0..N-1) from the box, 10 ms apart, in a thread that
    has begun when this returns."""
    started = threading.Event()
    t = threading.Thread(target=_stream, args=(link, N, started))
    t.start()
    started.wait(10)
    return t


def _drained(world, link, want_args):
    """Wait until the box has every event acked (nudging its resend timer), then check
    the ledger holds each of them exactly once, with no seq missing."""
    def done():
        link.skip(31000)  # anything not acked goes again now
        return link.call(lambda box, r, now: box.outbox.pending() == 0)
    wait_for(done, timeout=60, what="every event acked")
    evs = world.events(BOX)
    seqs = [e.seq for e in evs]
    assert sorted(seqs) == list(range(1, max(seqs) + 1))  # each once, none missing
    args = sorted(e.arg for e in evs if e.type == "expired")
    assert args == want_args


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_a_broker_restart_mid_stream_loses_and_doubles_nothing(world, how):
    world.consumer()
    link = world.add_box(BOX)
    t = _start_stream(link)
    time.sleep(0.5)
    if how == "restart":
        world.broker.restart()
    else:
        world.broker.kill()
        world.broker.start()
    t.join()
    _drained(world, link, list(range(N)))


def test_a_consumer_restart_mid_stream_loses_and_doubles_nothing(world):
    c1 = world.consumer("consumer-1")
    link = world.add_box(BOX)
    t = _start_stream(link)
    time.sleep(0.5)
    c1.stop()
    time.sleep(0.5)
    world.consumer("consumer-1")  # the same consumer, back with its persistent session
    t.join()
    _drained(world, link, list(range(N)))


def test_a_second_consumer_joining_and_the_first_leaving_mid_stream_split_the_rest(world):
    c1 = world.consumer("consumer-1")
    link = world.add_box(BOX)
    t = _start_stream(link)
    c2 = world.consumer("consumer-2")
    time.sleep(0.5)
    c1.stop()
    t.join()
    _drained(world, link, list(range(N)))
    assert c2.stats["stored"] > 0
