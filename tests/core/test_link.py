# The MQTT link's state machine over a fault-injecting fake network (host_tools/virtual/fakenet.py)
# with an injected clock: the test plays the broker, byte for byte.
import random

import pytest

from fakenet import FakeNet, parse_connect, parse_publish, parse_subscribe
from parcelbox import link as L
from parcelbox import mqtt, ticks
from parcelbox.link import Link

BOX = "box-1"
CMD = "parcelbox/v1/box-1/cmd"
ACK = "parcelbox/v1/box-1/ack"
STATUS = "parcelbox/v1/box-1/status"
OFF = b'{"v":1,"online":false}'
ON = b'{"v":1,"online":true}'
CONF = {"box_id": BOX, "host": "broker.example", "port": 8883, "tls": True, "ca": "/ca.pem",
        "password": "pw", "keepalive": 60}
T0 = ticks.PERIOD - 5000  # the tick counter wraps 5 s into every test

CONNACK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"

PUBLISH, PUBACK, SUBSCRIBE, PINGREQ, CONNECT, DISCONNECT = 3, 4, 8, 12, 1, 14


class FakeRemote:
    def __init__(self, net=None):
        self.net = net
        self.online_now = False
        self.outbox = []        # (topic, payload, retain) that poll() hands out, in order
        self.received = []      # (topic, payload, now, bytes the link had sent by then)
        self.connected_at = []
        self.polls = 0

    def subscriptions(self):
        return [CMD, ACK]

    def will(self):
        return STATUS, OFF

    def online(self):
        return STATUS, ON

    def connected(self, now):
        self.online_now = True
        self.connected_at.append(now)

    def receive(self, topic, payload, now):
        sent = bytes(self.net.conn.sent) if self.net else b""
        self.received.append((topic, bytes(payload), now, sent))

    def poll(self, now):
        self.polls += 1
        if self.online_now and self.outbox:
            return self.outbox.pop(0)
        return None

    def next_deadline(self, now):
        return now if self.online_now and self.outbox else None


def seeded_rand(seed):
    r = random.Random(seed)
    return lambda n: bytes(r.randrange(256) for _ in range(n))


class Rig:
    def __init__(self, conf=None, rand=None, **net):
        self.net = FakeNet(recv_into=net.pop("recv_into", False))
        for k, v in net.items():  # faults every connection starts with
            setattr(self.net, k, v)
        self.remote = FakeRemote(self.net)
        self.link = Link(self.remote, dict(CONF, **(conf or {})), self.net,
                         rand or seeded_rand(1))
        self.now = T0

    def step(self, ms=0):
        self.now = ticks.add(self.now, ms)
        self.link.step(self.now)

    def until(self, t):
        """Step to tick t as the superloop would: at each deadline (at most 10 ms apart)."""
        for _ in range(100000):
            if ticks.diff(t, self.now) <= 0:
                return
            d = ticks.diff(self.link.next_deadline(self.now), self.now)
            self.step(max(1, min(d, ticks.diff(t, self.now), 10)) if d > 0 else 0)
        raise AssertionError("until() did not reach the tick")

    def connect(self):
        """Open, CONNECT, CONNACK, and take the packets the link sent."""
        self.step()
        self.step()
        assert self.net.conn.take()[0][0] == CONNECT
        self.net.conn.give(CONNACK)
        self.step()
        assert self.link.state == L.CONNECTED
        return self.net.conn.take()

    def packets(self):
        return self.net.conn.take()


def publishes(pkts):
    return [(flags,) + parse_publish(flags, body) for kind, flags, body in pkts if kind == PUBLISH]


# ---- connecting ----------------------------------------------------------------

def test_connect_sequence_is_byte_exact():
    r = Rig()
    r.step()
    assert r.link.state == L.CONNECTING
    assert r.net.conn.where == ("broker.example", 8883, True, "/ca.pem")
    r.step()
    assert bytes(r.net.conn.sent) == (
        b"\x10\x4f\x00\x04MQTT\x04"
        b"\xec"                                    # user, password, will retain, QoS 1, will
        b"\x00\x3c"                                # keepalive 60 s; clean session 0
        b"\x00\x05box-1"                           # client id = box id
        b"\x00\x19parcelbox/v1/box-1/status"       # will topic
        b'\x00\x16{"v":1,"online":false}'          # will message
        b"\x00\x05box-1"                           # user name = box id
        b"\x00\x02pw")
    r.net.conn.sent.clear()
    r.net.conn.give(CONNACK)
    r.step()
    assert r.link.state == L.CONNECTED and r.link.connects == 1 and r.link.last_error is None
    assert bytes(r.net.conn.sent) == (
        b"\x82\x34\x00\x01"                        # SUBSCRIBE, pid 1
        b"\x00\x16parcelbox/v1/box-1/cmd\x01"
        b"\x00\x16parcelbox/v1/box-1/ack\x01"
        b"\x33\x32\x00\x19parcelbox/v1/box-1/status\x00\x02"  # QoS 1, retained, pid 2
        b'{"v":1,"online":true}')
    assert r.remote.connected_at == [r.now]


def test_connect_waits_for_the_handshake_without_blocking():
    r = Rig(ready_after=3)
    for _ in range(4):
        r.step(5)
        assert r.net.conn.sent == b"" and r.link.state == L.CONNECTING
    r.step(5)
    assert r.net.conn.take()[0][0] == CONNECT
    assert r.link.next_deadline(r.now) == ticks.add(r.now, 50)  # waiting for the CONNACK


def test_username_defaults_to_the_box_id_and_keepalive_is_configurable():
    r = Rig(conf={"password": None, "keepalive": 15})
    r.step()
    r.step()
    c = parse_connect(r.packets()[0][2])
    assert c["username"] == b"box-1" and "password" not in c and c["keepalive"] == 15
    assert c["name"] == b"MQTT" and c["level"] == 4 and not c["clean"]
    assert (c["will_topic"], c["will"], c["will_qos"], c["will_retain"]) == (
        STATUS.encode(), OFF, 1, True)


@pytest.mark.parametrize("conf, what", [
    ({"box_id": None}, "box_id"), ({"host": ""}, "host"), ({"port": 0}, "port"),
    ({"keepalive": 70000}, "keepalive"), ({"keepalive": "60"}, "keepalive")])
def test_a_bad_conf_fails_at_once(conf, what):
    with pytest.raises(ValueError, match=what):
        Link(FakeRemote(), dict(CONF, **conf), FakeNet(), seeded_rand(1))


def test_a_refused_connack_backs_off_and_says_why():
    r = Rig()
    r.step()
    r.step()
    r.net.conn.give(b"\x20\x02\x00\x05")
    r.step()
    assert r.link.state == L.OFFLINE and r.link.refused == 5
    assert r.link.last_error == "refused: not authorized" and r.net.conn.closed
    first = ticks.diff(r.link.next_deadline(r.now), r.now)
    assert 500 <= first < 1000
    r.until(ticks.add(r.now, first))
    assert len(r.net.conns) == 2 and r.link.state == L.CONNECTING
    r.step()
    r.net.conn.give(b"\x20\x02\x00\x04")
    r.step()
    assert r.link.last_error == "refused: bad user name or password"
    assert 1000 <= ticks.diff(r.link.next_deadline(r.now), r.now) < 2000  # it grows
    assert r.remote.connected_at == []


def test_no_connack_in_time_is_a_connect_timeout():
    r = Rig()
    r.step()
    r.step()
    r.until(ticks.add(r.now, L.CONNECT_MS - 1))
    assert r.link.state == L.CONNECTING
    r.step(1)
    assert r.link.state == L.OFFLINE and r.link.last_error == "connect timeout"


def test_a_failed_tls_handshake_backs_off():
    r = Rig(ready_error=OSError(5, "certificate verify failed"))
    r.step()
    r.step()
    assert r.link.state == L.OFFLINE and "certificate" in r.link.last_error


# MicroPython's tls raises ValueError for a bad key or certificate (CPython: ssl.SSLError,
# an OSError); before, it escaped step() and the box crash-looped instead of staying offline.
def test_a_client_key_micropython_cannot_read_keeps_the_box_offline_backing_off():
    r = Rig(ready_error=ValueError("invalid key"))
    r.step()
    r.step()  # no exception: the connection drops
    assert r.link.state == L.OFFLINE and r.link.last_error == "tls: invalid key"
    assert r.net.conn.closed and r.net.conn.sent == b""
    first = ticks.diff(r.link.next_deadline(r.now), r.now)
    assert 500 <= first < 1000
    r.until(ticks.add(r.now, first))
    r.step()
    assert len(r.net.conns) == 2 and r.link.last_error == "tls: invalid key"
    assert 1000 <= ticks.diff(r.link.next_deadline(r.now), r.now) < 2000  # it grows


@pytest.mark.parametrize("recv_into", [False, True])
def test_a_broker_certificate_that_does_not_verify_drops_at_the_first_write(recv_into):
    r = Rig(recv_into=recv_into, tls_error=ValueError(
        "The certificate is not correctly signed by the trusted CA"))
    r.step()
    r.step()  # CONNECT's write meets the verification
    assert r.link.state == L.OFFLINE and r.net.conn.closed and r.net.conn.sent == b""
    assert r.link.last_error == "tls: The certificate is not correctly signed by the trusted CA"
    r.until(r.link.next_deadline(r.now))
    assert len(r.net.conns) == 2 and r.link.state == L.CONNECTING  # it tries again later


@pytest.mark.parametrize("recv_into", [False, True])
def test_a_tls_value_error_on_a_read_drops_the_connection_too(recv_into):
    r = Rig(recv_into=recv_into)
    r.connect()
    sends = r.net.conn.sends
    r.net.conn.tls_error = ValueError("The certificate is not correctly signed by the trusted CA")
    r.step()  # nothing to write: the read meets it
    assert r.net.conn.sends == sends and r.net.conn.closed
    assert r.link.state == L.OFFLINE and r.link.last_error.startswith("tls: The certificate")


def test_close_survives_a_tls_value_error_on_its_last_write():
    r = Rig()
    r.connect()
    r.net.conn.tls_error = ValueError("The certificate is not correctly signed by the trusted CA")
    r.link.close()
    assert r.link.state == L.OFFLINE and r.net.conn.closed


def test_a_port_whose_open_sets_up_tls_and_raises_value_error_backs_off():
    r = Rig()

    def bad_open(*a):
        raise ValueError("invalid cert")
    r.net.open = bad_open
    r.step()
    assert r.link.state == L.OFFLINE and r.link.last_error == "tls: invalid cert"
    assert ticks.diff(r.link.next_deadline(r.now), r.now) >= 500


def test_a_value_error_from_the_remote_is_a_bug_not_a_tls_failure():
    r = Rig()
    r.connect()

    def bug(now):
        raise ValueError("a bug in the remote")
    r.remote.poll = bug
    r.remote.outbox = [("t", b"x", False)]  # makes poll due
    with pytest.raises(ValueError, match="a bug"):
        r.step()


def test_a_packet_before_connack_is_a_protocol_error():
    r = Rig()
    r.step()
    r.step()
    r.net.conn.give(PINGRESP)
    r.step()
    assert r.link.state == L.OFFLINE and r.link.last_error.startswith("protocol:")


def test_nothing_is_opened_while_the_network_is_down():
    r = Rig()
    r.net.is_up = False
    for _ in range(5):
        r.step(100)
    assert r.net.conns == [] and r.link.state == L.OFFLINE
    assert r.link.next_deadline(r.now) == ticks.add(r.now, 1000)
    r.net.is_up = True
    r.step()
    assert len(r.net.conns) == 1


def test_the_network_going_down_drops_the_connection():
    r = Rig()
    r.connect()
    r.net.is_up = False
    r.step()
    assert r.link.state == L.OFFLINE and r.link.last_error == "network down" and r.net.conn.closed


# ---- receiving -------------------------------------------------------------------

def test_a_command_is_acked_only_after_receive_returns():
    r = Rig()
    r.connect()
    r.net.conn.give(mqtt.publish(CMD, b"command-1", qos=1, pid=0x0102))
    r.step()
    (topic, payload, now, sent_by_then), = r.remote.received
    assert (topic, payload, now) == (CMD, b"command-1", r.now)
    assert b"\x40\x02\x01\x02" not in sent_by_then
    assert (PUBACK, 0, b"\x01\x02") in r.packets()


def test_an_ack_message_goes_to_the_remote_and_qos0_is_not_acked():
    r = Rig()
    r.connect()
    r.net.conn.give(bytes(mqtt.publish(ACK, b"acks", qos=0)) +
                    bytes(mqtt.publish(ACK, b"more", qos=1, pid=9)))
    r.step()
    assert [m[:2] for m in r.remote.received] == [(ACK, b"acks"), (ACK, b"more")]
    assert [p for p in r.packets() if p[0] == PUBACK] == [(PUBACK, 0, b"\x00\x09")]


def test_a_message_on_a_topic_not_subscribed_is_acked_not_delivered():
    r = Rig()
    r.connect()
    r.net.conn.give(mqtt.publish("parcelbox/v1/box-2/cmd", b"x", qos=1, pid=4))
    r.step()
    assert r.remote.received == [] and (PUBACK, 0, b"\x00\x04") in r.packets()


def test_an_oversized_command_reaches_the_remote_too_big_and_is_acked():
    # so the broker does not deliver it again on every reconnect (a poison message)
    r = Rig()
    r.connect()
    r.net.conn.give(mqtt.publish(CMD, b"x" * 6000, qos=1, pid=5))
    for _ in range(4):
        r.step(10)
    (topic, payload, _, _), = r.remote.received
    assert topic == CMD and 4096 < len(payload) < 6000
    assert (PUBACK, 0, b"\x00\x05") in r.packets() and r.link.state == L.CONNECTED


def test_a_slow_peer_one_byte_per_read_still_delivers():
    r = Rig(recv_max=1)
    r.connect()
    r.net.conn.give(mqtt.publish(CMD, b"c" * 40, qos=1, pid=3))
    for _ in range(10):
        r.step(10)
    assert [m[1] for m in r.remote.received] == [b"c" * 40]


def test_reads_are_bounded_per_step_and_the_deadline_says_more_is_waiting():
    r = Rig()
    r.connect()
    for i in range(20):
        r.net.conn.give(mqtt.publish(CMD, b"c%d" % i, qos=1, pid=i + 1))
    r.step()
    assert 0 < len(r.remote.received) < 20
    assert r.link.next_deadline(r.now) == r.now
    while r.link.next_deadline(r.now) == r.now:
        r.step()
    assert [m[1] for m in r.remote.received] == [b"c%d" % i for i in range(20)]


def test_recv_into_a_preallocated_buffer_when_the_conn_has_it():
    r = Rig(recv_into=True)
    r.connect()
    r.net.conn.give(mqtt.publish(CMD, b"into", qos=1, pid=8))
    r.step()
    assert r.remote.received[0][1] == b"into" and (PUBACK, 0, b"\x00\x08") in r.packets()


def test_garbage_from_the_broker_drops_the_connection():
    r = Rig()
    r.connect()
    r.net.conn.give(b"\x30\xff\xff\xff\xff\x01")
    r.step()
    assert r.link.state == L.OFFLINE and "longer than 4 bytes" in r.link.last_error


# ---- publishing ------------------------------------------------------------------

def test_the_outbox_is_drained_in_order_with_the_links_own_packet_ids():
    r = Rig()
    r.remote.outbox = [("parcelbox/v1/box-1/evt", b"e%d" % i, False) for i in range(5)]
    pubs = publishes(r.connect())  # the status is pid 2 (SUBSCRIBE 1), then the events
    assert [(p[1], p[2], p[3]) for p in pubs[1:]] == [
        (b"parcelbox/v1/box-1/evt", 3 + i, b"e%d" % i) for i in range(5)]
    assert all(p[0] == 0x02 for p in pubs[1:])  # QoS 1, not retained, not DUP


def test_in_flight_publishes_are_capped_until_pubacks_come():
    r = Rig()
    r.remote.outbox = [("parcelbox/v1/box-1/evt", b"e%d" % i, False) for i in range(15)]
    pubs = publishes(r.connect())
    assert len(pubs) == L.MAX_FLIGHT  # the status and 9 events
    assert r.link.next_deadline(r.now) != r.now  # nothing to do until a PUBACK
    r.net.conn.give(b"".join(mqtt.puback(p[2]) for p in pubs[:3]))
    r.step()
    more = publishes(r.packets())
    assert [p[3] for p in more] == [b"e9", b"e10"]  # one slot stays for the next status


def test_a_state_summary_is_published_retained():
    r = Rig()
    r.remote.outbox = [("parcelbox/v1/box-1/state", b"s", True)]
    assert publishes(r.connect())[-1][:2] == (0x03, b"parcelbox/v1/box-1/state")


def test_an_unacked_publish_goes_again_with_dup_after_the_timeout():
    r = Rig(conf={"keepalive": 0})
    r.remote.outbox = [("parcelbox/v1/box-1/evt", b"e0", False)]
    r.connect()
    r.net.conn.give(mqtt.puback(2))  # the status is acked, the event is not
    r.until(ticks.add(r.now, L.RETRY_MS - 1))
    assert publishes(r.packets()) == []
    r.until(ticks.add(r.now, 1))
    assert publishes(r.packets()) == [(0x0a, b"parcelbox/v1/box-1/evt", 3, b"e0")]  # DUP
    r.until(ticks.add(r.now, L.RETRY_MS - 1))
    assert publishes(r.packets()) == []
    r.net.conn.give(mqtt.puback(3))
    r.until(ticks.add(r.now, L.RETRY_MS * 3))
    assert publishes(r.packets()) == []


def test_partial_writes_resume_and_the_bytes_match_a_single_write():
    whole = Rig()
    whole.remote.outbox = [("parcelbox/v1/box-1/evt", b"e" * 300, False)]
    want = publishes(whole.connect())
    r = Rig(send_max=7)
    r.remote.outbox = [("parcelbox/v1/box-1/evt", b"e" * 300, False)]
    for _ in range(3):
        r.step()
    r.net.conn.give(CONNACK)
    for _ in range(60):
        r.step(1)
    pkts = r.packets()
    assert pkts[0][0] == CONNECT and publishes(pkts) == want
    assert r.net.conn.sends > 50  # 7 bytes at a time


def test_would_block_keeps_the_queue_bounded_and_stops_polling_and_reading():
    r = Rig()
    r.connect()
    c = r.net.conn
    c.stall = True
    r.remote.outbox = [("parcelbox/v1/box-1/evt", b"e" * 400, False) for _ in range(30)]
    for i in range(30):
        c.give(mqtt.publish(CMD, b"c%d" % i, qos=1, pid=100 + i))
    for _ in range(50):
        r.step(10)
    assert r.link._qbytes < L.OUT_MAX + 600
    assert len(r.remote.outbox) >= 30 - L.MAX_FLIGHT
    assert len(r.remote.received) < 30  # reading paused while the broker takes nothing
    c.stall = False
    for _ in range(200):
        r.step(10)
        c.give(b"".join(mqtt.puback(p[2]) for p in publishes(r.packets())))
    assert len(r.remote.received) == 30 and r.remote.outbox == []


def test_the_connection_to_wake_on_is_offered_only_while_the_link_would_read_it():
    r = Rig(ready_after=2)
    assert r.link.waitable() is None              # nothing open
    r.step()
    r.step(5)
    c = r.net.conn
    assert r.link.state == L.CONNECTING and r.link.waitable() is None  # TCP/TLS not up
    while not c.sent:
        r.step(5)
    assert r.link.waitable() is c                 # CONNECT sent: the CONNACK will wake it
    c.give(CONNACK)
    r.step()
    assert r.link.state == L.CONNECTED and r.link.waitable() is c
    # the broker takes nothing: the link stops reading, so its data must not wake the loop
    c.stall = True
    r.remote.outbox = [("parcelbox/v1/box-1/evt", b"e" * 400, False) for _ in range(12)]
    c.give(mqtt.publish(CMD, b"c", qos=1, pid=9))
    for _ in range(5):
        r.step(10)
    assert r.link._qbytes >= L.OUT_MAX and r.link.waitable() is None
    c.stall = False
    r.step(10)
    assert r.link._qbytes < L.OUT_MAX and r.link.waitable() is c
    c.peer_closed = True
    r.step(10)
    assert r.link.state == L.OFFLINE and r.link.waitable() is None


# ---- keepalive -------------------------------------------------------------------

def test_keepalive_ping_and_a_dead_peer_timeout():
    r = Rig()
    r.connect()
    r.net.conn.give(mqtt.puback(2))
    r.step()
    r.until(ticks.add(r.now, 60000 - 1))
    assert r.packets() == []
    r.until(ticks.add(r.now, 1))
    assert r.packets() == [(PINGREQ, 0, b"")]
    r.net.conn.give(PINGRESP)
    r.step(10)
    r.until(ticks.add(r.now, 60000))
    assert r.packets() == [(PINGREQ, 0, b"")]  # a minute after the last packet either way
    t_ping = r.now
    r.until(ticks.add(t_ping, 30000 - 20))     # no answer: 1.5 keepalives of silence...
    assert r.link.state == L.CONNECTED and r.packets() == []  # ...and only one ping
    r.until(ticks.add(t_ping, 30000))
    assert r.link.state == L.OFFLINE and r.link.last_error == "no answer from the broker"


def test_a_box_that_only_receives_still_pings():
    r = Rig(conf={"keepalive": 10})
    r.connect()
    for i in range(12):
        r.net.conn.give(mqtt.publish(ACK, b"a", qos=0))
        r.until(ticks.add(r.now, 1000))
    assert (PINGREQ, 0, b"") in r.packets()


# ---- reconnecting ----------------------------------------------------------------

def test_a_reset_reconnects_and_resends_unacked_publishes_with_their_ids_and_dup():
    r = Rig()
    r.remote.outbox = [("parcelbox/v1/box-1/evt", b"e0", False)]
    r.connect()
    r.net.conn.give(mqtt.puback(2))
    r.step()
    r.net.conn.reset = True
    r.step()
    assert r.link.state == L.OFFLINE and r.link.last_error.startswith("io:")
    r.until(r.link.next_deadline(r.now))
    pkts = r.connect()
    assert [p[0] for p in pkts[:3]] == [PUBLISH, SUBSCRIBE, PUBLISH]
    assert publishes(pkts)[0] == (0x0a, b"parcelbox/v1/box-1/evt", 3, b"e0")  # first, DUP
    assert parse_subscribe(pkts[1][2])[0] == 4  # new ids skip the one still in flight
    assert len(r.remote.connected_at) == 2


def test_reconnects_without_pubacks_send_the_unacked_status_again_not_a_new_one():
    # found by fuzzing: each reconnect added a new online status to the flight, which grew
    # past MAX_FLIGHT (and without bound) while the broker acked nothing
    r = Rig()
    r.remote.outbox = [("parcelbox/v1/box-1/evt", b"e%d" % i, False) for i in range(15)]
    first = publishes(r.connect())
    assert len(first) == L.MAX_FLIGHT and first[0][1] == b"parcelbox/v1/box-1/status"
    for _ in range(5):
        r.net.conn.reset = True
        r.step()
        r.until(r.link.next_deadline(r.now))
        again = publishes(r.connect())
        assert len(r.link._flight) == L.MAX_FLIGHT
        # the same ten PUBLISHes, DUP set, the status (retained) among them once
        assert [(p[0], p[2]) for p in again] == [(f[0] | 0x08, f[2]) for f in first]
    r.net.conn.give(mqtt.puback(first[0][2]))  # the status acked: the next connect sends one
    r.step()
    r.net.conn.reset = True
    r.step()
    r.until(r.link.next_deadline(r.now))
    pubs = publishes(r.connect())
    assert [p[1] for p in pubs].count(b"parcelbox/v1/box-1/status") == 1
    assert len(r.link._flight) == L.MAX_FLIGHT


def test_the_broker_closing_the_connection_reconnects():
    r = Rig()
    r.connect()
    r.net.conn.peer_closed = True
    r.step()
    assert r.link.last_error == "closed by the broker"
    r.until(r.link.next_deadline(r.now))
    assert len(r.net.conns) == 2


def test_backoff_grows_from_1s_to_5min_with_jitter_within_bounds():
    r = Rig(rand=seeded_rand(42))
    r.net.refuse = 10 ** 6
    r.step()
    waits = []
    for n in range(1, 40):
        at = r.link.next_deadline(r.now)
        waits.append(ticks.diff(at, r.now))
        r.until(at)
        assert len(r.net.conns) == n + 1
    for n, w in enumerate(waits, 1):
        step = min(1000 << min(n - 1, 9), 300000)
        assert step // 2 <= w < step, (n, w)
    assert waits[20:] != [waits[20]] * 19        # jittered...
    assert max(waits) < 300000 and min(waits[10:]) >= 150000
    assert r.link.last_error.startswith("open:")
    assert r.link.progress > 39


def test_backoff_uses_the_random_bytes_over_the_whole_half_step():
    lo = Link(FakeRemote(), CONF, FakeNet(), lambda n: b"\x00" * n)
    hi = Link(FakeRemote(), CONF, FakeNet(), lambda n: b"\xff" * n)
    assert [lo.backoff(n) for n in (1, 2, 9, 10, 50)] == [500, 1000, 128000, 150000, 150000]
    assert [hi.backoff(n) for n in (1, 2, 10)] == [999, 1999, 299963]


def test_a_fleet_back_from_a_broker_outage_reconnects_spread_out():
    # 300 boxes lose the broker at the same tick; it is back 10 minutes later. Their
    # reconnections spread over minutes, not one storm (docs/link.md section 4).
    back = 600000
    arrivals = []
    for seed in range(300):
        r = Rig(rand=seeded_rand(seed))
        r.net.refuse = 10 ** 6
        r.step()
        t = 0
        while True:
            w = ticks.diff(r.link.next_deadline(r.now), r.now)
            t += w
            r.now = ticks.add(r.now, w)
            if t >= back:
                arrivals.append(t - back)
                break
            r.link.step(r.now)
    arrivals.sort()
    assert arrivals[-1] < 300000
    busiest = max(sum(1 for a in arrivals if s <= a < s + 10000) for s in range(0, 300000, 1000))
    assert busiest < 40  # at most ~13% of the fleet in any 10 s
    assert arrivals[len(arrivals) // 2] > 60000  # half of them after a minute or more


def test_a_stable_connection_resets_the_backoff_and_a_flap_does_not():
    r = Rig(rand=lambda n: b"\x00" * n)
    r.net.refuse = 3
    r.step()
    for _ in range(3):
        r.until(r.link.next_deadline(r.now))
    r.connect()                       # after 3 failures
    r.net.conn.reset = True
    r.step(1000)                      # dropped a second after its CONNACK: a flap
    assert ticks.diff(r.link.next_deadline(r.now), r.now) == 4000  # 4th failure: half of 8 s
    r.until(r.link.next_deadline(r.now))
    r.connect()
    r.net.conn.give(PINGRESP)
    r.until(ticks.add(r.now, L.STABLE_MS))
    r.net.conn.reset = True
    r.step()
    assert ticks.diff(r.link.next_deadline(r.now), r.now) == 500  # back to the first step


# ---- the rest of the API ---------------------------------------------------------

def test_progress_counts_every_step_whatever_the_state():
    r = Rig()
    r.net.is_up = False
    for _ in range(7):
        r.step(1)
    assert r.link.progress == 7


def test_close_publishes_offline_and_disconnects():
    r = Rig()
    r.connect()
    r.link.close()
    pkts = r.net.conn.take()
    assert publishes(pkts) == [(0x01, STATUS.encode(), 0, OFF)] and pkts[-1][0] == DISCONNECT
    assert r.net.conn.closed and r.link.state == L.OFFLINE


def test_a_new_remote_takes_over_at_once():
    r = Rig()
    r.connect()
    new = FakeRemote(r.net)
    new.outbox = [("parcelbox/v1/box-1/state", b"s", True)]
    r.link.use(new, r.now)
    r.step()
    assert new.connected_at == [r.now] and publishes(r.packets())[-1][3] == b"s"


def test_next_deadline_while_connected_and_idle_is_at_most_the_poll_horizon():
    r = Rig()
    r.connect()
    d = ticks.diff(r.link.next_deadline(r.now), r.now)
    assert 0 < d <= 50
