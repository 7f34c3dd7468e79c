"""A private MQTT broker for the tests (docs/testing.md).

`Broker()` starts a mosquitto of its own on a free port of 127.0.0.1, in a
temporary folder, configured as docs/protocol.md section 9 asks: TLS with a
CA made here, one username and password per box plus the backend's, the
client id tied to the username, the section 9 ACL, persistence on. Without a
mosquitto on the machine it falls back to the embedded amqtt broker (plain
TCP, same users and ACL, no client id binding, no persistence, no shared
subscriptions), unless CI=true, where that is an error.

    with Broker() as broker:
        broker.add_user("box1", "pw1")
        box = broker.paho_client("box1")
        backend = broker.paho_client("backend")
"""

from __future__ import annotations

import atexit
import base64
import datetime
import hashlib
import hmac
import ipaddress
import os
import queue
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"
BACKEND = "backend"
PROBE_USER = "brokerlib-probe"      # the library's own user; its password proves a reload
START_TIMEOUT = 10.0

# docs/protocol.md section 9, line for line. Pattern lines hold for every user;
# `%u` is the username, which is the box id.
BOX_PATTERNS = (
    ("read", "parcelbox/v1/%u/cmd"),
    ("read", "parcelbox/v1/%u/ack"),
    ("write", "parcelbox/v1/%u/evt"),
    ("write", "parcelbox/v1/%u/state"),
    ("write", "parcelbox/v1/%u/status"),
)
BACKEND_TOPICS = (("readwrite", "parcelbox/v1/#"),)


class BrokerUnavailable(RuntimeError):
    """No broker of the kind asked for can run on this machine."""


class ConnectRefused(ConnectionError):
    """The broker answered CONNECT with a non-zero return code."""

    def __init__(self, rc):
        super().__init__(f"CONNACK refused the connection: {rc}")
        self.rc = rc


def find_mosquitto():
    """Path of the mosquitto binary, or None. $PARCELBOX_MOSQUITTO wins;
    /usr/sbin is searched too, as it is not on every user's PATH."""
    env = os.environ.get("PARCELBOX_MOSQUITTO")
    if env:
        return env if os.access(env, os.X_OK) else None
    return (shutil.which("mosquitto")
            or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin:/opt/homebrew/sbin"))


def in_ci():
    return os.environ.get("CI", "").lower() == "true"


def choose_kind():
    """"mosquitto" when it is installed, else "amqtt"; $PARCELBOX_TEST_BROKER
    forces one. Raises BrokerUnavailable under CI=true without mosquitto:
    CI must run every broker test against the real thing."""
    forced = os.environ.get("PARCELBOX_TEST_BROKER", "").strip().lower()
    if forced not in ("", "mosquitto", "amqtt"):
        raise BrokerUnavailable(f"PARCELBOX_TEST_BROKER={forced!r}: use mosquitto or amqtt")
    have = find_mosquitto() is not None
    if in_ci() and (forced == "amqtt" or not have):
        raise BrokerUnavailable(
            "CI=true needs mosquitto (apt-get install mosquitto, as .ci/run does); "
            "the amqtt fallback is for developer machines only")
    if forced == "mosquitto" and not have:
        raise BrokerUnavailable("PARCELBOX_TEST_BROKER=mosquitto but no mosquitto binary found")
    if forced:
        return forced
    return "mosquitto" if have else "amqtt"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- certificates

_CERTS = None
_CERTS_LOCK = threading.Lock()


def test_certificates():
    """(ca_pem, server_cert_pem, server_key_pem) made once per process:
    a CA and a server certificate for localhost, 127.0.0.1 and ::1. EC P-256
    keeps it to a few milliseconds; the extensions satisfy strict X.509
    checking (Python 3.13's default)."""
    global _CERTS
    with _CERTS_LOCK:
        if _CERTS is None:
            _CERTS = _make_certificates()
        return _CERTS[:3]


def client_certificate(common_name):
    """(cert_pem, key_pem) of a client certificate for `common_name`, signed by the
    test CA, for brokers made with require_client_cert=True."""
    import datetime as _dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    test_certificates()
    ca_pem, ca_key = _CERTS[0], _CERTS[3]
    ca = x509.load_pem_x509_certificate(ca_pem)
    now = _dt.datetime.now(_dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1)).not_valid_after(now + _dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (cert.public_bytes(pem), key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))


def _make_certificates():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parcelbox test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem), cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()), ca_key)


# ---------------------------------------------------------------- mosquitto files

def mosquitto_password_hash(password, salt=None, iterations=101):
    """mosquitto 2.0's `$7$` password file hash (PBKDF2-HMAC-SHA512, 64 bytes,
    12-byte salt, 101 iterations as mosquitto_passwd writes it)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return "$7$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(),
                            base64.b64encode(digest).decode())


def acl_text(backends):
    """The ACL file: section 9, with one `user` block per backend username."""
    lines = ["# docs/protocol.md section 9: each box (username = box id) in its own subtree"]
    lines += [f"pattern {access} {topic}" for access, topic in BOX_PATTERNS]
    for name in sorted(backends):
        lines += ["", f"user {name}"]
        lines += [f"topic {access} {topic}" for access, topic in BACKEND_TOPICS]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- raw MQTT probe

def _mqtt_str(b):
    return len(b).to_bytes(2, "big") + b


def connect_packet(client_id, username=None, password=None, clean=True, keepalive=10):
    """An MQTT 3.1.1 CONNECT packet (bytes)."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (
        0x40 if password is not None else 0)
    body = _mqtt_str(b"MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
    body += _mqtt_str(client_id.encode())
    if username is not None:
        body += _mqtt_str(username.encode())
    if password is not None:
        body += _mqtt_str(password.encode())
    n, length = len(body), b""
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return b"\x10" + length + body


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


# ---------------------------------------------------------------- the client for tests

class TestClient(mqtt.Client):
    """A paho-mqtt 2.x client (callback API 2, MQTT 3.1.1) with blocking
    helpers. Received messages go to `self.messages` (a queue.Queue) unless
    `on_message` is replaced. It does not reconnect unless asked to
    (Broker.paho_client says why)."""

    __test__ = False    # not a pytest class

    def __init__(self, client_id="", clean_session=True, reconnect=False):
        super().__init__(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean_session, protocol=mqtt.MQTTv311,
                         reconnect_on_failure=reconnect)
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.disconnects = queue.Queue()    # reason codes, one per lost or closed connection
        self._cond = threading.Condition()
        self._subacks = {}
        self.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.on_connect = self._cb_connect
        self.on_subscribe = self._cb_subscribe
        self.on_disconnect = lambda _c, _u, _flags, rc, _p: self.disconnects.put(rc)
        self.reconnect_delay_set(0.1, 1)

    def _cb_connect(self, _c, _u, flags, reason_code, _props):
        self.connacks.put((reason_code, flags))

    def _cb_subscribe(self, _c, _u, mid, reason_codes, _props):
        with self._cond:
            self._subacks[mid] = [rc.value for rc in reason_codes]
            self._cond.notify_all()

    def wait_connack(self, timeout=5.0):
        """The next CONNACK's (reason code, flags); raises ConnectRefused if it failed."""
        try:
            rc, flags = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no CONNACK") from None
        if rc.is_failure:
            raise ConnectRefused(rc)
        return rc, flags

    def subscribe_wait(self, topic, qos=1, timeout=5.0):
        """Subscribe and wait for the SUBACK; returns its return codes
        (the granted QoS per filter, 0x80 for a refused one)."""
        rc, mid = self.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"subscribe failed locally: {rc}")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, timeout):
                raise TimeoutError(f"no SUBACK for {topic!r}")
            return self._subacks.pop(mid)

    def publish_wait(self, topic, payload, qos=1, retain=False, timeout=5.0):
        """Publish and wait until it is sent (QoS 0) or PUBACKed (QoS 1)."""
        info = self.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic!r} not acknowledged")
        return info

    def expect(self, timeout=5.0):
        """The next received message; AssertionError after `timeout` without one."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def until(self, marker, timeout=5.0):
        """(topic, payload) of every message received before the one whose
        payload is `marker`. Publish the marker after the messages in
        question (and after their PUBACK): the broker routes in order, so
        anything they were going to deliver here is already queued ahead."""
        got = []
        while True:
            msg = self.expect(timeout)
            if msg.payload == marker:
                return got
            got.append((msg.topic, msg.payload))

    def drain(self, timeout=0.3):
        """Every message that arrives within `timeout` seconds (after the last one)."""
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=timeout))
            except queue.Empty:
                return got

    def close(self):
        """Clean DISCONNECT (no will), stop the network thread."""
        try:
            self.disconnect()
        finally:
            self.loop_stop()

    def drop(self):
        """Lose the connection without a DISCONNECT, as a box losing power or
        network does: the broker publishes the will."""
        sock = self.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)     # wakes the network thread,
            except OSError:
                pass
        self.loop_stop()        # which ends (or would reconnect 0.1 s later at the earliest)
        if sock is not None:
            sock.close()


# ---------------------------------------------------------------- the broker

@dataclass
class _User:
    password: str
    backend: bool


class Broker:
    """A private MQTT broker. kind: "mosquitto", "amqtt" or None (choose_kind()).

    Attributes: kind, secure (TLS), host, port, ca_path (None without TLS),
    workdir, log_path, users {name: password}, backend_password.
    """

    def __init__(self, kind=None, *, workdir=None, port=None, autosave_interval=None,
                 backend_password=None, require_client_cert=False):
        self.kind = kind or choose_kind()
        if self.kind == "mosquitto":
            self._mosquitto = find_mosquitto()
            if self._mosquitto is None:
                raise BrokerUnavailable("no mosquitto binary found")
        elif self.kind != "amqtt":
            raise ValueError(f"unknown broker kind {self.kind!r}")
        self.secure = self.kind == "mosquitto"
        self.require_client_cert = require_client_cert  # TLS clients must show a cert of the CA
        self.host = HOST
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="parcelbox-broker-")) if workdir is None \
            else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.autosave_interval = autosave_interval
        self.conf_path = self.workdir / "mosquitto.conf"
        self.passwd_path = self.workdir / "passwd"
        self.acl_path = self.workdir / "acl"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "broker.log"
        self.ca_path = self.workdir / "ca.crt" if self.secure else None
        self._users = {}
        self._probe_password = secrets.token_hex(8)
        self._proc = None
        self._amqtt = None
        self._clients = []
        self.backend_password = backend_password or secrets.token_hex(8)
        self._users[BACKEND] = _User(self.backend_password, True)
        self.start_seconds = None   # how long the last start() took

    # ---- users

    @property
    def users(self):
        return {name: u.password for name, u in self._users.items()}

    def add_user(self, name, password=None, *, backend=False):
        """Add (or re-password) a user; a box's username is its box id.
        backend=True gives it the backend's ACL (readwrite parcelbox/v1/#).
        Takes effect before it returns, also while the broker runs.
        Returns the password (generated when None)."""
        if not name or ":" in name or name == PROBE_USER:
            raise ValueError(f"bad username {name!r}")
        password = password if password is not None else secrets.token_hex(8)
        self._users[name] = _User(password, backend)
        if self.running:
            self._reload()
        return password

    def remove_user(self, name):
        del self._users[name]
        if self.running:
            self._reload()

    # ---- life cycle

    @property
    def running(self):
        if self.kind == "mosquitto":
            return self._proc is not None and self._proc.poll() is None
        return self._amqtt is not None

    def start(self):
        """Start on self.port (the same one after a stop) and return once a
        client can connect; the persistence of a previous run is kept."""
        if self.running:
            return self
        t0 = time.monotonic()
        if self.kind == "mosquitto":
            self._start_mosquitto()
        else:
            self._start_amqtt()
        self.start_seconds = time.monotonic() - t0
        _LIVE.add(self)
        return self

    def stop(self):
        """Stop gracefully (mosquitto saves its persistence file)."""
        if self.kind == "mosquitto":
            self._end_process(signal.SIGTERM)
        else:
            self._stop_amqtt()

    def kill(self):
        """Crash: SIGKILL, nothing saved since the last autosave."""
        if self.kind == "mosquitto":
            self._end_process(signal.SIGKILL)
        else:
            self._stop_amqtt()

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        """Close the clients made by paho_client(), end the broker (SIGKILL:
        a test broker's persistence dies with it; stop() first to keep it),
        remove the folder when the broker made it."""
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients.clear()
        self.kill()
        _LIVE.discard(self)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ---- for clients

    @property
    def url(self):
        """For the CLI's --broker (with --ca ca_path when secure)."""
        return f"{'mqtts' if self.secure else 'mqtt'}://{self.host}:{self.port}"

    def connect_args(self, username, password=None):
        """What a client needs: host, port, username, password, tls, and the
        CA file as both ca_path and ca (None without TLS). The password
        defaults to the user's."""
        if password is None:
            password = self._users[username].password
        ca = str(self.ca_path) if self.ca_path else None
        return {"host": self.host, "port": self.port, "username": username,
                "password": password, "tls": self.secure, "ca_path": ca, "ca": ca}

    def client_cert_files(self, name):
        """(cert path, key path) of a client certificate for `name` in the broker's folder
        (made once), signed by the CA the broker trusts."""
        cert, key = self.workdir / ("client-%s.crt" % name), self.workdir / ("client-%s.key" % name)
        if not cert.exists():
            c, k = client_certificate(name)
            cert.write_bytes(c)
            _write_private(key, k)
        return str(cert), str(key)

    def sdk_config(self, username, password=None):
        """The backend SDK's MqttConfig (host_tools.backend.sdk.mqtt) for this user."""
        from host_tools.backend.sdk.mqtt import MqttConfig

        a = self.connect_args(username, password)
        return MqttConfig(a["host"], a["port"], a["username"], a["password"], a["ca"])

    def paho_client(self, username, password=None, client_id=None, clean_session=True, *,
                    will=None, keepalive=60, timeout=5.0, connect=True, reconnect=False):
        """A connected TestClient with its network thread running. The password
        defaults to the user's; client_id to the username (as a box does).
        will: (topic, payload, qos, retain). reconnect: after a lost
        connection, as paho does by default; off, because the client id is
        the username: a client of a stopped broker, or one taken over by a
        newer connection of the same user, would reconnect and take over in
        turn, back and forth. Raises ConnectRefused when the
        broker refuses it. Its `session_present` is the CONNACK's flag.
        Broker.close() closes it."""
        args = self.connect_args(username, password)
        c = TestClient(client_id if client_id is not None else username, clean_session, reconnect)
        c.username_pw_set(args["username"], args["password"])
        if args["tls"]:
            c.tls_set(ca_certs=args["ca_path"])
        if will is not None:
            c.will_set(*will)
        self._clients.append(c)
        if connect:
            c.connect(self.host, self.port, keepalive)
            c.loop_start()
            try:
                _rc, flags = c.wait_connack(timeout)
            except (ConnectRefused, TimeoutError):
                c.loop_stop()
                raise
            c.session_present = flags.session_present
        return c

    def probe(self, username, password, client_id=None, timeout=3.0):
        """One raw CONNECT (clean session); returns the CONNACK return code.
        Careful: with a box's username it takes over that box's connection."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            if self.secure:
                ctx = ssl.create_default_context(cafile=str(self.ca_path))
                if self.require_client_cert:
                    ctx.load_cert_chain(*self.client_cert_files(PROBE_USER))
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            sock.sendall(connect_packet(client_id or username, username, password))
            head = _recv_exact(sock, 4)
            if head[0] != 0x20:
                raise ConnectionError(f"not a CONNACK: {head!r}")
            if head[3] == 0:
                sock.sendall(b"\xe0\x00")
            return head[3]
        finally:
            sock.close()

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text, timeout=5.0, since=0):
        """Wait until `text` appears in the log after character `since`; returns its index."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.log_text().find(text, since)
            if i >= 0:
                return i
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in {self.log_path}")
            time.sleep(0.02)

    # ---- mosquitto

    def _write_files(self):
        ca, cert, key = test_certificates()
        (self.workdir / "ca.crt").write_bytes(ca)
        (self.workdir / "server.crt").write_bytes(cert)
        _write_private(self.workdir / "server.key", key)
        self.data_dir.mkdir(exist_ok=True)
        self._write_users()
        lines = [
            "# written by host_tools/testing/broker.py",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwd_path}",
            f"acl_file {self.acl_path}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp true",
            "log_timestamp_format %H:%M:%S",
            "connection_messages true",
            "max_queued_messages 10000",
            "set_tcp_nodelay true",   # else Nagle holds each CONNACK ~40 ms behind the handshake
        ]
        if self.autosave_interval is not None:
            lines += [f"autosave_interval {self.autosave_interval}"]
        if os.geteuid() == 0:
            # as root, mosquitto would switch to the user "mosquitto", who
            # cannot read this private folder
            lines += ["user root"]
        lines += [
            "",
            f"listener {self.port} {self.host}",
            "use_username_as_clientid true",
            f"cafile {self.workdir / 'ca.crt'}",
            f"certfile {self.workdir / 'server.crt'}",
            f"keyfile {self.workdir / 'server.key'}",
            "require_certificate %s" % ("true" if self.require_client_cert else "false"),
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _write_users(self):
        self._probe_password = secrets.token_hex(8)
        users = dict(self.users)
        users[PROBE_USER] = self._probe_password
        text = "".join(f"{name}:{mosquitto_password_hash(pw)}\n" for name, pw in users.items())
        _write_private(self.passwd_path, text.encode())
        self.acl_path.write_text(acl_text(n for n, u in self._users.items() if u.backend))

    def _start_mosquitto(self):
        for attempt in range(3):
            self._write_files()
            err = open(self.workdir / "mosquitto.stderr", "ab")
            self._proc = subprocess.Popen([self._mosquitto, "-c", str(self.conf_path)],
                                          stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                          start_new_session=True)
            err.close()
            try:
                self._wait_probe()
                return
            except BrokerUnavailable:
                self._end_process(signal.SIGKILL)
                if self._fixed_port or "Address already in use" not in self.log_text():
                    raise
                self.port = free_port()     # lost the race for the port: try another
        raise BrokerUnavailable(f"mosquitto did not start; see {self.log_path}")

    def _wait_probe(self, timeout=START_TIMEOUT):
        """Until the broker accepts the probe user's current password."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerUnavailable(
                    f"mosquitto exited with {self._proc.returncode}; see {self.log_path} and "
                    f"{self.workdir / 'mosquitto.stderr'}:\n{self._tail()}")
            try:
                rc = self.probe(PROBE_USER, self._probe_password)
                if rc == 0:
                    return
                last = f"CONNACK {rc}"
            except (OSError, ConnectionError) as e:
                last = repr(e)
            time.sleep(0.01)
        raise BrokerUnavailable(f"broker not ready after {timeout} s ({last}):\n{self._tail()}")

    def _tail(self):
        text = self.log_text()
        try:
            text += (self.workdir / "mosquitto.stderr").read_text(errors="replace")
        except FileNotFoundError:
            pass
        return "\n".join(text.splitlines()[-15:])

    def _reload(self):
        if self.kind == "amqtt":
            return      # the plugins read self._users directly
        self._write_users()
        self._proc.send_signal(signal.SIGHUP)
        self._wait_probe()

    def _end_process(self, sig):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---- amqtt

    def _start_amqtt(self):
        import asyncio
        import logging

        from amqtt.broker import Broker as AmqttBroker

        _AMQTT_OWNERS[id(self)] = self
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                f"{__name__}.AmqttAuthPlugin": {"owner": id(self)},
                f"{__name__}.AmqttAclPlugin": {"owner": id(self)},
            },
        }
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        box = {}

        def run():
            asyncio.set_event_loop(loop)

            async def main():
                try:
                    b = AmqttBroker(config, loop=loop)
                    await b.start()
                    box["broker"] = b
                except Exception as e:    # reported to start()
                    box["error"] = e
                finally:
                    ready.set()

            loop.run_until_complete(main())
            if "broker" in box:
                loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        amqtt_log = logging.getLogger("amqtt")
        amqtt_log.addHandler(handler)
        self._amqtt_level = amqtt_log.level
        if amqtt_log.getEffectiveLevel() > logging.INFO:
            amqtt_log.setLevel(logging.INFO)     # connections and refusals, as mosquitto logs them
        thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        thread.start()
        ready.wait(START_TIMEOUT)
        if "broker" not in box:
            amqtt_log.removeHandler(handler)
            raise BrokerUnavailable(f"amqtt did not start: {box.get('error')!r}")
        self._amqtt = (box["broker"], loop, thread, handler)
        self._wait_probe()

    def _stop_amqtt(self):
        if self._amqtt is None:
            return
        import asyncio
        import logging

        broker, loop, thread, handler = self._amqtt
        self._amqtt = None

        async def shutdown():
            try:
                await broker.shutdown()
            finally:
                # amqtt leaves connection tasks behind; end them before the loop closes
                rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in rest:
                    t.cancel()
                await asyncio.gather(*rest, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            amqtt_log = logging.getLogger("amqtt")
            amqtt_log.removeHandler(handler)
            amqtt_log.setLevel(self._amqtt_level)
            handler.close()

    # amqtt's ACL: the same rules as the mosquitto ACL file

    def allowed(self, username, topic, access):
        """Whether the section 9 ACL lets `username` read or write `topic`
        (access "read" or "write"; for "subscribe" topic is a filter)."""
        user = self._users.get(username)
        if user is None:
            return False
        rules = [(a, t.replace("%u", username)) for a, t in BOX_PATTERNS]
        if user.backend:
            rules += list(BACKEND_TOPICS)
        want = "read" if access == "subscribe" else access
        match = _filter_within if access == "subscribe" else mqtt.topic_matches_sub
        return any(want in a and match(t, topic) for a, t in rules)


def _filter_within(acl, sub):
    """Every topic `sub` can match is matched by `acl` (both filters)."""
    a, s = acl.split("/"), sub.split("/")
    for i, part in enumerate(s):
        if i >= len(a):
            return False
        if a[i] == "#":
            return True
        if part == "#" or (part == "+" and a[i] != "+") or (a[i] not in ("+", part)):
            return False
    return len(a) == len(s) or (len(a) == len(s) + 1 and a[-1] == "#")


def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# brokers still running at exit (a test run killed half way) are stopped
_LIVE = set()
_AMQTT_OWNERS = {}


@atexit.register
def _stop_all():
    for b in list(_LIVE):
        try:
            b.kill()
        except Exception:
            pass


# ---------------------------------------------------------------- amqtt plugins
# Made on first use (amqtt loads them by dotted name through the module
# __getattr__ below), so that importing this module does not import amqtt.

_PLUGINS = {}


def _amqtt_plugins():
    if _PLUGINS:
        return _PLUGINS
    from amqtt.contexts import Action
    from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

    @dataclass
    class OwnerConfig:
        owner: int = 0

    class AmqttAuthPlugin(BaseAuthPlugin):
        """Username and password from the owning Broker's users."""

        Config = OwnerConfig

        async def authenticate(self, *, session):
            owner = _AMQTT_OWNERS.get(self.context.config.owner)
            if owner is None or not session.username:
                return False
            if session.username == PROBE_USER:
                return hmac.compare_digest(session.password or "", owner._probe_password)
            user = owner._users.get(session.username)
            return user is not None and hmac.compare_digest(session.password or "", user.password)

    class AmqttAclPlugin(BaseTopicPlugin):
        """The section 9 ACL (Broker.allowed)."""

        Config = OwnerConfig

        async def topic_filtering(self, *, session=None, topic=None, action=None):
            owner = _AMQTT_OWNERS.get(self.context.config.owner)
            if owner is None or session is None or not topic:
                return False
            access = {Action.PUBLISH: "write", Action.SUBSCRIBE: "subscribe",
                      Action.RECEIVE: "read"}[action]
            return owner.allowed(session.username, topic, access)

    _PLUGINS.update(AmqttAuthPlugin=AmqttAuthPlugin, AmqttAclPlugin=AmqttAclPlugin)
    return _PLUGINS


def __getattr__(name):
    if name in ("AmqttAuthPlugin", "AmqttAclPlugin"):
        return _amqtt_plugins()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
