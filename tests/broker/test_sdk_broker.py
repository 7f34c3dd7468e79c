# The backend SDK against the private mosquitto, with a scripted box made of the host
# codec: consumers store each event once and ack it, forged events are refused, any
# number of consumers split the stream, status and state are tracked.
import json
import time

import pytest

from host_tools.testing.wait import wait_for
from host_tools.backend import protocol as p
from host_tools.backend.sdk import Backend, BrokerError, Consumer, Ledger, mqtt_password


class ScriptedBox:
    """Publishes sealed events as a box would; records the acks it receives."""

    def __init__(self, broker, ledger, box_id):
        self.id = box_id
        self.keys = ledger.keys(box_id)[-1]
        broker.add_user(box_id, mqtt_password(ledger.box_key(box_id)))
        self.c = broker.paho_client(box_id, clean_session=False, will=(
            p.topic(box_id, "status"), b'{"v":1,"online":false}', 1, True))
        self.c.subscribe_wait(p.topic(box_id, "ack"))

    def event(self, seq, kind="boot", comp=0, code_id=0, arg=0, keys=None):
        t = p.topic(self.id, "evt")
        body = p.event_body(self.id, seq, p.EVENTS.index(kind), comp, code_id, arg, 0)
        self.c.publish_wait(t, p.seal((keys or self.keys).evt, t, body))

    def acks(self, want, timeout=10):
        got = set()
        end = time.monotonic() + timeout
        while not want <= got and time.monotonic() < end:
            try:
                m = self.c.messages.get(timeout=0.1)
            except Exception:
                continue
            body = p.open_envelope(self.keys.cmd, m.topic, m.payload)
            got |= set(json.loads(body)["acks"])
        return got


@pytest.fixture
def world(mosquitto, tmp_path):
    db = tmp_path / "ledger.db"
    lg = Ledger(db)
    Backend(lg).register("box-a")

    def consumer(name, **kw):
        mosquitto.add_user(name, backend=True)
        return Consumer(db, mosquitto.sdk_config(name), name=name, **kw)

    yield mosquitto, lg, db, consumer
    lg.close()


def test_each_event_is_stored_once_and_acked_even_when_sent_twice(world):
    broker, lg, db, consumer = world
    box = ScriptedBox(broker, lg, "box-a")
    with consumer("consumer-1") as c:
        wait_for(c.subscribed.is_set)
        for seq in (1, 2, 2, 3, 1):
            box.event(seq)
        assert box.acks({1, 2, 3}) >= {1, 2, 3}
        wait_for(lambda: c.stats["received"] == 5, what="5 deliveries")
    assert [e.seq for e in lg.events("box-a")] == [1, 2, 3]
    assert c.stats["duplicates"] == 2


def test_a_forged_event_is_refused_and_not_acked(world):
    broker, lg, db, consumer = world
    box = ScriptedBox(broker, lg, "box-a")
    forger = p.WireKeys.of(b"\x01" * 32)
    with consumer("consumer-1") as c:
        wait_for(c.subscribed.is_set)
        box.event(1, keys=forger)
        box.event(2)
        assert box.acks({2}) == {2}
    assert [e.seq for e in lg.events("box-a")] == [2] and c.stats["refused"] == 1


def test_two_consumers_on_a_shared_subscription_split_the_stream_without_loss(world):
    broker, lg, db, consumer = world
    box = ScriptedBox(broker, lg, "box-a")
    c1, c2 = consumer("consumer-1").start(), consumer("consumer-2").start()
    try:
        wait_for(lambda: c1.subscribed.is_set() and c2.subscribed.is_set())
        for seq in range(1, 201):
            box.event(seq, "wrong_code", arg=seq << 8)
        assert box.acks(set(range(1, 201))) >= set(range(1, 201))
    finally:
        c1.stop()
        c2.stop()
    assert sorted(e.seq for e in lg.events("box-a", limit=1000)) == list(range(1, 201))
    assert c1.stats["stored"] > 0 and c2.stats["stored"] > 0
    assert c1.stats["stored"] + c2.stats["stored"] == 200


def test_status_and_state_of_a_box_are_tracked(world):
    broker, lg, db, consumer = world
    box = ScriptedBox(broker, lg, "box-a")
    with consumer("consumer-1") as c:
        wait_for(c.subscribed.is_set)
        box.c.publish_wait(p.topic("box-a", "status"), b'{"v":1,"online":true}', retain=True)
        wait_for(lambda: lg.box("box-a").online is True, what="online")
        st = {"t": 0, "boots": 1, "codes": 0, "active": 0, "capacity": 256,
              "digest": p.set_digest([]).hex(), "pending": 0, "next_seq": 1, "cmd_seq": 0,
              "key_gen": 0, "occupied": 0, "failures": 0, "wait_s": 0, "faults": 0}
        body = json.dumps(dict(v=1, box="box-a", **st)).encode()
        t = p.topic("box-a", "state")
        box.c.publish_wait(t, p.seal(box.keys.evt, t, body), retain=True)
        wait_for(lambda: lg.box("box-a").state is not None, what="state")
        assert lg.in_sync("box-a") is True
        box.c.drop()  # the will: offline
        wait_for(lambda: lg.box("box-a").online is False, what="offline")


def test_a_backend_with_a_wrong_password_gets_a_clear_error(world):
    broker, lg, db, consumer = world
    cfg = broker.sdk_config("backend")
    cfg.password = "wrong"
    with pytest.raises(BrokerError, match="refused the connection"):
        Backend(lg, cfg).unlock("box-a", 1)


# ---- the consumer's decisions without a broker: messages handed to it directly ----------

class FakeClient:
    def __init__(self):
        self.published = []

    def publish(self, topic, payload, qos=0, retain=False):
        self.published.append((topic, payload))


class Msg:
    def __init__(self, topic, payload):
        self.topic, self.payload = topic, payload


def offline_consumer(tmp_path, handler=None):
    from host_tools.backend.sdk.mqtt import MqttConfig
    c = Consumer(tmp_path / "ledger.db", MqttConfig(username="consumer-1"), handler=handler)
    c._ledger = Ledger(tmp_path / "ledger.db")  # what start() opens, minus the broker
    return c, FakeClient()


def sealed_event(keys, seq, kind="boot", comp=0, code_id=0, arg=0, box_id="box-a"):
    t = p.topic(box_id, "evt")
    return Msg(t, p.seal(keys.evt, t, p.event_body(box_id, seq, p.EVENTS.index(kind), comp,
                                                       code_id, arg, 0)))


def test_after_a_rotation_an_event_under_the_old_key_is_refused_unless_sealed_before(tmp_path):
    lg = Ledger(tmp_path / "ledger.db")
    be = Backend(lg)
    be.register("box-a")
    old = lg.current_keys("box-a")
    with pytest.raises(BrokerError):
        be.rotate("box-a")
    rot = lg.box("box-a").cmd_seq
    new = lg.keys("box-a")[-1]
    c, cl = offline_consumer(tmp_path)
    c._on_message(cl, None, sealed_event(new, 10, "result", p.OPS.index("rotate"), rot, 0))
    assert lg.current_keys("box-a") == new
    c._on_message(cl, None, sealed_event(old, 9))    # in flight before the change: stored
    c._on_message(cl, None, sealed_event(old, 11))   # after it: only the old key's holder
    assert [e.seq for e in lg.events("box-a")] == [10, 9] and c.stats["refused"] == 1
    assert len(cl.published) == 2  # the refused one is not acked


def test_a_failing_handler_leaves_the_event_unacked_and_the_consumer_running(tmp_path):
    lg = Ledger(tmp_path / "ledger.db")
    Backend(lg).register("box-a")
    keys = lg.current_keys("box-a")
    fail = [True]

    def handler(db, ev):
        if fail[0]:
            raise RuntimeError("handler bug")  # or SQLite busy past its timeout
    c, cl = offline_consumer(tmp_path, handler)
    c._on_message(cl, None, sealed_event(keys, 1))  # must not raise into paho's thread
    assert lg.events("box-a") == [] and cl.published == []  # rolled back, not acked
    fail[0] = False
    c._on_message(cl, None, sealed_event(keys, 1))  # the box sends it again
    assert [e.seq for e in lg.events("box-a")] == [1] and len(cl.published) == 1
    assert c.stats["errors"] == 1


def test_sdk_connections_send_at_once_with_nagle_off_also_after_a_reconnect(world):
    import socket

    from host_tools.backend.sdk import mqtt as sdkmqtt
    broker, lg, db, consumer = world
    broker.add_user("issuer-1", backend=True)
    c = sdkmqtt.client(broker.sdk_config("issuer-1"), "issuer-1")
    sdkmqtt.connect(c, broker.sdk_config("issuer-1"))
    try:
        first = c.socket()
        assert first.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        first.shutdown(socket.SHUT_RDWR)   # the connection drops: paho reconnects by itself
        wait_for(lambda: c.socket() is not None and c.socket() is not first and c.is_connected(),
                 what="a reconnect")
        assert c.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        c.loop_stop()
        c.disconnect()


def test_a_consumer_sends_a_fresh_sync_when_the_box_answers_sync_order(tmp_path):
    lg = Ledger(tmp_path / "ledger.db")
    be = Backend(lg)
    be.register("box-a")
    be.issue("box-a", comp=1)
    with pytest.raises(BrokerError):
        be.sync("box-a")  # recorded; say it reached the box and an add overtook it
    end = lg.box("box-a").cmd_seq
    keys = lg.current_keys("box-a")
    c, cl = offline_consumer(tmp_path)
    c._on_message(cl, None, sealed_event(keys, 1, "result", p.OPS.index("sync_end"), end,
                                         p.STATUS.index("sync_order")))
    topics = [t for t, _ in cl.published]
    assert topics == [p.topic("box-a", "ack")] + [p.topic("box-a", "cmd")] * 3
    ops = [json.loads(pl[65:])["op"] for _, pl in cl.published[1:]]
    assert ops == ["sync_begin", "sync_part", "sync_end"] and c.stats["syncs"] == 1
    first = json.loads(cl.published[1][1][65:])
    assert first["seq"] == first["sync"] == end + 1 and first["count"] == 1
    # the same event again (a duplicate) sends nothing more
    c._on_message(cl, None, sealed_event(keys, 1, "result", p.OPS.index("sync_end"), end,
                                         p.STATUS.index("sync_order")))
    assert len(cl.published) == 5 and c.stats["syncs"] == 1



def test_a_summary_with_a_slack_gets_a_sealed_time_back(tmp_path):
    # after a reboot the box's clock may lag the time it knew by uptime its last save did
    # not see; SNTP (unauthenticated) cannot end that doubt, the backend's sealed time can
    import json
    lg = Ledger(tmp_path / "ledger.db")
    Backend(lg).register("box-a")
    keys = lg.current_keys("box-a")
    c, cl = offline_consumer(tmp_path)
    t = p.topic("box-a", "state")
    st = {"t": 0, "boots": 2, "codes": 0, "active": 0, "capacity": 256,
          "digest": p.set_digest([]).hex(), "pending": 0, "next_seq": 5, "cmd_seq": 0,
          "key_gen": 0, "occupied": 0, "failures": 0, "wait_s": 0, "faults": 0}
    for slack in (0, 3660):
        body = json.dumps(dict(v=1, box="box-a", **st,
                               **({"slack": slack, "ref": 77} if slack else {})))
        c._on_message(cl, None, Msg(t, p.seal(keys.evt, t, body.encode())))
    cmds = [m for m in cl.published if m[0].endswith("/cmd")]
    assert len(cmds) == 1  # only for the summary with a slack
    body = json.loads(cmds[0][1].split(b" ", 1)[1])
    assert body["op"] == "time" and body["exp"] == body["t"] + 120 and body["ref"] == 77
