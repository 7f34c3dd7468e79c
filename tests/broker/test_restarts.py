# The broker and the backend consumer are each restarted (or killed) in the middle of a
# stream of box events; afterwards every event is in the ledger exactly once.
import threading
import time

import pytest

from parcelbox import events
from host_tools.testing.wait import wait_for
from roundtrip_world import World

BOX = "box-1"
N = 200


@pytest.fixture
def world(mosquitto, tmp_path):
    w = World(mosquitto, tmp_path)
    yield w
    w.close()


def _stream(link, n, started, sent):
    for i in range(n):
        link.call(lambda box, r, now: box.event(events.EXPIRED, 0, 0, i, now))
        sent[0] = i + 1
        if i == 5:
            started.set()
        time.sleep(0.01)


def _start_stream(link):
    """N events (kind expired, arg 0..N-1) from the box, 10 ms apart, in a thread that
    has begun when this returns; with `sent`, how many the box has taken so far."""
    started, sent = threading.Event(), [0]
    t = threading.Thread(target=_stream, args=(link, N, started, sent))
    t.start()
    started.wait(10)
    return t, sent


def _until_sent(sent, part):
    """Mid-stream: wait until the box has taken this part of the N events."""
    wait_for(lambda: sent[0] >= N * part, what="%d of %d events taken" % (N * part, N))


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
    t, sent = _start_stream(link)
    _until_sent(sent, 0.25)
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
    t, sent = _start_stream(link)
    _until_sent(sent, 0.25)
    c1.stop()
    _until_sent(sent, 0.5)         # events go on while the consumer is away
    world.consumer("consumer-1")  # the same consumer, back with its persistent session
    t.join()
    _drained(world, link, list(range(N)))


def test_a_second_consumer_joining_and_the_first_leaving_mid_stream_split_the_rest(world):
    c1 = world.consumer("consumer-1")
    link = world.add_box(BOX)
    t, sent = _start_stream(link)
    c2 = world.consumer("consumer-2")
    _until_sent(sent, 0.25)
    c1.stop()
    t.join()
    _drained(world, link, list(range(N)))
    assert c2.stats["stored"] > 0
