"""Broker connection settings and paho-mqtt clients for the SDK and the box adapter."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from host_tools.backend import brokerurl


class BrokerError(ConnectionError):
    """The broker could not be reached, refused the credentials, or did not confirm."""


@dataclass
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None  # CA file: TLS on
    keepalive: int = 60

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @classmethod
    def from_url(cls, url: str, username: str | None = None, password: str | None = None,
                 ca: str | None = None) -> "MqttConfig":
        """mqtt://[user[:pass]@]host[:port] or mqtts://... (mqtts needs `ca`)."""
        u = brokerurl.parse(url)
        if u.tls and not ca:
            raise brokerurl.BrokerUrlError("mqtts:// needs the broker's CA file (--ca or PARCELBOX_CA)")
        return cls(u.host, u.port, username or u.username, password or u.password,
                   ca if u.tls else None)

    def as_dict(self) -> dict:
        """For a provisioning file (the caller adds what is secret)."""
        return {"host": self.host, "port": self.port, "tls": self.tls}


def client(cfg: MqttConfig, client_id: str, clean_session: bool = True,
           will: tuple[str, bytes] | None = None) -> mqtt.Client:
    """An unconnected paho client (MQTT 3.1.1) for `cfg`."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=clean_session, protocol=mqtt.MQTTv311)
    if cfg.username is not None:
        c.username_pw_set(cfg.username, cfg.password)
    if cfg.tls:
        if not os.path.exists(cfg.ca):
            raise ValueError("CA file %s does not exist" % cfg.ca)
        c.tls_set(ca_certs=cfg.ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c.reconnect_delay_set(0.2, 5)
    c.on_socket_open = _nodelay
    return c


def _nodelay(client, userdata, sock) -> None:
    """Every connection, the reconnects too, sends at once: paho leaves Nagle on, which held
    a small publish back for the peer's delayed ACK (about 30 ms at p50, docs/performance.md)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not TCP (a websocket or a unix socket): nothing to do
        pass


def connect(c: mqtt.Client, cfg: MqttConfig, timeout: float = 10) -> None:
    """Connect and start the network thread; BrokerError unless the broker accepts us."""
    done = threading.Event()
    result: list = []

    def on_connect(client, userdata, flags, rc, props=None):
        result.append(rc)
        done.set()

    prev = c.on_connect
    c.on_connect = on_connect
    try:
        c.connect(cfg.host, cfg.port, cfg.keepalive)
    except (OSError, ssl.SSLError) as e:
        raise BrokerError("cannot reach the broker at %s:%d: %s" % (cfg.host, cfg.port,
                                                                  unreachable(e))) from None
    c.loop_start()
    if not done.wait(timeout):
        c.loop_stop()
        raise BrokerError("the broker at %s:%d did not answer" % (cfg.host, cfg.port))
    c.on_connect = prev
    rc = result[0]
    if rc != 0:
        c.loop_stop()
        c.disconnect()
        # paho 2 maps MQTT 3.1.1 return codes to v5 reason codes with readable names
        raise BrokerError("the broker refused the connection: %s" % str(rc).lower())
    if prev is not None:
        prev(c, c._userdata, None, rc, None)


def unreachable(e: OSError) -> str:
    """Why a connection failed, in words (not `gaierror`, not `[Errno 111]`)."""
    if isinstance(e, socket.gaierror):
        return "unknown host (%s)" % (e.strerror or "the name does not resolve")
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the broker running, on that port?)"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "no answer (timed out)"
    if isinstance(e, ssl.SSLCertVerificationError):
        return "its TLS certificate is not trusted: %s (is --ca the broker's CA?)" % (
            e.verify_message or e.reason)
    if isinstance(e, ssl.SSLError):
        return "TLS failed: %s" % (e.reason or e.__class__.__name__)
    return e.strerror or str(e) or e.__class__.__name__


def publish(c: mqtt.Client, topic: str, payload: bytes, retain: bool = False,
            timeout: float = 10) -> None:
    """Publish at QoS 1 and wait for the broker's PUBACK."""
    info = c.publish(topic, payload, qos=1, retain=retain)
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError) as e:
        raise BrokerError("publish failed: %s" % e) from None
    if not info.is_published():
        raise BrokerError("the broker did not confirm the message within %g s" % timeout)
