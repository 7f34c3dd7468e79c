"""`parcelbox provision`: config.json and board.json for one box, from the backend's registry,
validated by the firmware's own rules, written to the board atomically (docs/tooling.md 4).

Secrets (the box key, its broker password, the Wi-Fi password) come from the registry or from
a hidden prompt, an environment variable or a file, never from an argument; they travel to the
board's config.json and nowhere else: not the terminal, not an exception, not a log.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from host_tools import boards as _boards
from host_tools import paths
from host_tools.backend import brokerurl
from host_tools.tech import clientcert
from host_tools.backend.sdk import Ledger, LedgerError, mqtt_password

CA_NAME = "ca.pem"


class ProvisionError(Exception):
    """Bad input or a configuration the firmware would refuse; nothing was written."""


@dataclass
class Plan:
    box_id: str
    config: dict        # holds secrets: goes to the board only
    board: dict | None  # None: keep the board's board.json
    ca: bytes | None
    client: clientcert.ClientCert | None = None   # the box's certificate and key, as DER

    def files(self) -> list[tuple[str, bytes]]:
        """(name on the flash, content), in the order they are written: config.json last."""
        out = []
        if self.ca is not None:
            out.append((CA_NAME, self.ca))
        if self.client is not None:
            out += [(clientcert.CERT_NAME, self.client.cert_der),
                    (clientcert.KEY_NAME, self.client.key_der)]
        if self.board is not None:
            out.append(("board.json", json.dumps(self.board, separators=(",", ":"), sort_keys=True).encode()))
        out.append(("config.json", json.dumps(self.config, separators=(",", ":"), sort_keys=True).encode()))
        return out

    def summary(self) -> list[str]:
        c, b = self.config, self.config["broker"]
        lines = ["box %s: config.json for broker %s:%d (TLS %s%s), mqtt user %s"
                 % (self.box_id, b["host"], b["port"], "on" if b["tls"] else "off",
                    ", CA %s sha256 %s" % (CA_NAME, hashlib.sha256(self.ca).hexdigest()[:16])
                    if self.ca else "", c["mqtt_username"]),
                 "wifi %s (password %s); box key and broker password: set, from the registry"
                 % (c["wifi"]["ssid"], "set" if c["wifi"]["password"] else "none: an open network")]
        if self.client is not None:
            lines.append(self.client.summary())
        if c["settings"]:
            lines.append("settings: %s" % ", ".join("%s %s" % kv for kv in sorted(c["settings"].items())))
        if self.board is not None:
            lines.append("board %s (%s, %d compartment%s), checked by parcelbox board check"
                         % (self.board["name"], self.board["chip"], len(self.board["compartments"]),
                            "s" if len(self.board["compartments"]) > 1 else ""))
        return lines


def board_file(name: str) -> Path:
    """--board NAME (a file in boards/) or a path to a board file."""
    p = Path(name)
    if p.suffix == ".json" and p.is_file():
        return p
    p = paths.BOARDS / (name + ".json")
    if p.is_file():
        return p
    known = ", ".join(q.stem for q in _boards.shipped())
    raise ProvisionError("no board %r: give a board file or one of %s" % (name, known))


def broker_address(url: str) -> dict:
    """mqtt://host[:port] or mqtts://host[:port] -> the config's broker (no credentials)."""
    try:
        u = brokerurl.parse(url)
    except ValueError as e:
        raise ProvisionError(str(e)) from None
    if u.username or u.password:
        raise ProvisionError("the broker URL must not carry a user or password (the box's come "
                             "from the registry)")
    return {"host": u.host, "port": u.port, "tls": u.tls}


def _firmware():
    from parcelbox import devconf, storage
    return devconf, storage


class _Scratch:
    """A flash in memory, read as parcelbox.storage.Storage reads one: the secrets never touch
    the host's disk (a scratch file outlives a killed tool)."""

    def __init__(self, files: dict):
        self.files = files

    def read(self, name):
        return self.files.get(name.lstrip("/"))

    def size(self, name):
        data = self.files.get(name.lstrip("/"))
        return -1 if data is None else len(data)


def validate(config: dict, board: dict, ca: bytes | None,
             client: clientcert.ClientCert | None = None) -> None:
    """The firmware's own checks (parcelbox.devconf), run on the host over a flash in memory."""
    devconf, _ = _firmware()
    files = {"config.json": json.dumps(config).encode(), "board.json": json.dumps(board).encode()}
    if ca is not None:
        files[CA_NAME] = ca
    if client is not None:
        files[clientcert.CERT_NAME] = client.cert_der
        files[clientcert.KEY_NAME] = client.key_der
    st = _Scratch(files)
    try:
        b = devconf.load_board(st)
        conf = devconf.load_config(st)
        devconf.check_settings(b, conf)
    except devconf.ConfigError as e:   # names the field, never its value
        raise ProvisionError("the firmware would refuse this configuration: %s" % e) from None


def plan(db: str, box_id: str, broker: str, ssid: str, wifi_password: str, board: str | None,
         ca: str | None, existing_board: dict | None = None, settings: dict | None = None,
         client_cert: str | None = None, client_key: str | None = None) -> Plan:
    """Everything checked, nothing written. `client_cert` and `client_key`: the box's TLS client
    certificate and key, PEM files, converted to DER for the box (host_tools/tech/clientcert.py)."""
    row, key, addr, ca_data, client = _host_parts(db, box_id, broker, ssid, wifi_password, ca,
                                                  client_cert, client_key)
    dev_board = None
    if board is not None:
        r = _boards.check_file(board_file(board))
        if not r.ok:
            raise ProvisionError("board %s must not ship (parcelbox board check):\n  %s"
                                 % (board, "\n  ".join(r.errors)))
        dev_board = r.board
    check_board = dev_board or existing_board
    if check_board is None:
        raise ProvisionError("the board has no board.json: give --board NAME")
    if len(check_board["compartments"]) != row.compartments:
        n = len(check_board["compartments"])
        fits = [q.stem for q in _boards.shipped() if _compartments(q) == row.compartments]
        raise ProvisionError("box %s is registered with %d compartment(s), board %s has %d%s"
                             % (box_id, row.compartments, check_board.get("name", "?"), n,
                                ": give a board with %d (%s)" % (row.compartments, ", ".join(fits))
                                if fits else ""))
    config = {"box_id": box_id, "box_key": key.hex(), "wifi": {"ssid": ssid, "password": wifi_password},
              "broker": addr, "mqtt_username": box_id, "mqtt_password": mqtt_password(key),
              "settings": settings or {}}
    validate(config, check_board, ca_data, client)
    return Plan(box_id, config, dev_board, ca_data, client)


def precheck(db: str, box_id: str, broker: str, ssid: str, wifi_password: str, board: str | None,
             ca: str | None, settings: dict, client_cert: str | None = None,
             client_key: str | None = None) -> None:
    """What the host can check before the board is touched (connecting stops its application
    and resets it into safe mode): all of plan() with --board, else all but the board."""
    if board is None:
        _host_parts(db, box_id, broker, ssid, wifi_password, ca, client_cert, client_key)
        return
    _mcu_board(plan(db, box_id, broker, ssid, wifi_password, board, ca, settings=settings,
                    client_cert=client_cert, client_key=client_key))


def _compartments(path: Path) -> int | None:
    """A shipped microcontroller board's compartments; None for a linux board (or no board)."""
    try:
        b = json.loads(path.read_text())
        chip = _boards.CHIPS.get(b["chip"])
        return None if chip is None or chip.named else len(b["compartments"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _host_parts(db: str, box_id: str, broker: str, ssid: str, wifi_password: str, ca: str | None,
                client_cert: str | None, client_key: str | None) -> tuple:
    """What needs no board: the box and its key from the registry, the broker's address, the
    CA, the client certificate, the Wi-Fi settings; ProvisionError at the first wrong one."""
    try:
        ledger = Ledger(db, create=False)
    except LedgerError as e:
        raise ProvisionError(str(e)) from None
    try:
        try:
            row = ledger.box(box_id)
            key = ledger.box_key(box_id)
        except LedgerError as e:
            raise ProvisionError(str(e)) from None
    finally:
        ledger.close()
    addr = broker_address(broker)
    ca_data = None
    if addr["tls"]:
        if not ca:
            raise ProvisionError("mqtts:// needs the broker's CA file (--ca or PARCELBOX_CA)")
        try:
            ca_data = Path(ca).read_bytes()
        except OSError as e:
            raise ProvisionError("cannot read the CA file %s: %s" % (ca, e.strerror)) from None
        if b"-----BEGIN CERTIFICATE-----" not in ca_data:
            raise ProvisionError("%s is not a PEM certificate" % ca)
        if b"PRIVATE KEY-----" in ca_data:   # the broker's key would go to every box
            raise ProvisionError("%s holds a private key: give the CA certificate alone" % ca)
        addr["ca"] = CA_NAME
    client = _client(client_cert, client_key, addr)
    if not 1 <= len(ssid.encode()) <= 32:
        raise ProvisionError("the Wi-Fi SSID must be 1 to 32 bytes")
    if len(wifi_password.encode()) > 64 or (wifi_password and len(wifi_password) < 8):
        raise ProvisionError("a WPA2 Wi-Fi password has 8 to 64 characters (none: an open network)")
    return row, key, addr, ca_data, client


def _client(cert: str | None, key: str | None, addr: dict) -> clientcert.ClientCert | None:
    """The client certificate and key files, both or neither, only with TLS; names in addr."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ProvisionError("--cert and --key go together: the box's client certificate needs its "
                             "key, and the key its certificate")
    if not addr["tls"]:
        raise ProvisionError("a client certificate needs TLS: give the broker as mqtts://")
    try:
        client = clientcert.load(cert, key)
    except clientcert.ClientCertError as e:   # names the files, never the key's content
        raise ProvisionError(str(e)) from None
    addr["cert"], addr["key"] = clientcert.CERT_NAME, clientcert.KEY_NAME
    return client


def write(conn, p: Plan) -> list[str]:
    """Each file to name.tmp, then renamed over name; every hash read back. Returns the names."""
    from host_tools.tech.conn import BoardConnectionError
    written = []
    for name, data in p.files():
        conn.write_atomic("/" + name, data)
        if conn.hash("/" + name) != hashlib.sha256(data).hexdigest():
            raise BoardConnectionError("%s did not arrive intact on the board" % name)
        written.append(name)
    return written


def board_check(conn) -> str | None:
    """The installed firmware's own check of the written files, on the board: None when it
    passes, else its message (a field name, never a value); 'no firmware' without one."""
    r = conn.json(
        "try:\n"
        " from parcelbox import devconf\n"
        " from parcelbox.storage import Storage\n"
        " _s = Storage('/')\n"
        " _b = devconf.load_board(_s)\n"
        " devconf.check_settings(_b, devconf.load_config(_s))\n"
        " _r = None\n"
        "except ImportError:\n"
        " _r = 'no firmware'\n"
        "except ValueError as e:\n"
        " _r = str(e)\n"
        "_s = _b = None\n"
        "print(json.dumps(_r))")
    return r


def existing_board(conn) -> dict | None:
    raw = conn.json("try:\n    _r = open('/board.json').read() if _pbx('/board.json') else None\n"
                    "except ValueError:\n    _r = None\nprint(json.dumps(_r))")   # not UTF-8: unusable
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def existing_max_codes(conn) -> dict:
    """{"max_codes": N} from the board's config.json, kept when the box is provisioned again so
    a value set before is not lost; {} if there is none or it is no whole number in
    1..16384 (a damaged value is dropped, not carried on). Only that number is read: the
    rest of the file holds secrets."""
    n = conn.json("try:\n    _r = json.loads(open('/config.json').read())['settings']['max_codes']\n"
                  "except Exception:\n    _r = None\nprint(json.dumps(_r))")
    return {"max_codes": n} if type(n) is int and 1 <= n <= 16384 else {}


def _mcu_board(p: Plan, existing: dict | None = None) -> None:
    """`parcelbox provision` writes a microcontroller's flash: a linux board (Blinka pin
    names) is provisioned into its state directory with `parcelbox linux provision`."""
    b = p.board or existing or {}
    chip = _boards.CHIPS.get(b.get("chip"))
    if chip is not None and chip.named:
        raise ProvisionError("board %s is a linux board (chip %s): use parcelbox linux provision"
                             % (b.get("name", "?"), b.get("chip")))


def run_cli(port: str | None, box_id: str, board: str | None, ssid: str, wifi_password: str, db: str,
            broker: str, ca: str | None, dry_run: bool, no_reset: bool, cert: str | None = None,
            key: str | None = None, max_codes: int | None = None, as_json: bool = False) -> int:
    """The command. Its errors (ProvisionError, BoardConnectionError) are raised for the CLI's one
    error path. --json: one JSON object on stdout (the summary's lines, never a secret)."""
    import json

    import click

    from host_tools.tech.conn import BoardConn, BoardConnectionError
    from host_tools.tech.deploy import stop_app
    out = {"box": box_id, "dry_run": dry_run, "summary": [], "written": [], "checked_on_board": False,
           "boot": None}
    say = (lambda text: click.echo(text, err=True)) if as_json else click.echo

    def done() -> int:
        if as_json:
            click.echo(json.dumps(out))
        return 0

    given = {"max_codes": max_codes} if max_codes is not None else {}
    if dry_run:
        p = plan(db, box_id, broker, ssid, wifi_password, board, ca, client_cert=cert,
                 client_key=key, settings=given)
        _mcu_board(p)
        out["summary"] = p.summary()
        for line in out["summary"]:
            say(line)
        say("dry run: checked by the firmware's rules, nothing written")
        return done()
    precheck(db, box_id, broker, ssid, wifi_password, board, ca, given, cert, key)
    with BoardConn(port) as conn:
        running = conn.app_running()
        conn = stop_app(conn, say)
        try:
            existing = None if board else existing_board(conn)
            kept = {} if given else existing_max_codes(conn)   # --max-codes over the board's
            try:
                p = plan(db, box_id, broker, ssid, wifi_password, board, ca, existing_board=existing,
                         client_cert=cert, client_key=key, settings=given or kept)
            except ProvisionError as e:
                if kept and "settings" in str(e):
                    raise ProvisionError("%s (max_codes %d was kept from the board's config.json: "
                                         "give --max-codes)" % (e, kept["max_codes"])) from None
                raise
            _mcu_board(p, existing)
        except ProvisionError:
            if running:   # nothing written: back into service rather than left in safe mode
                conn.reset()
            raise
        names = write(conn, p)
        verdict = board_check(conn)
        if verdict not in (None, "no firmware"):
            raise BoardConnectionError("the board's firmware refuses the written configuration: %s" % verdict)
        out["summary"], out["written"], out["checked_on_board"] = p.summary(), names, verdict is None
        for line in out["summary"]:
            say(line)
        say("written to the board (each by rename, hashes read back): %s" % ", ".join(names))
        say("checked on the board by its firmware" if verdict is None else
            "no firmware on the board yet: checked on the host only (parcelbox deploy next)")
        if no_reset:
            return done()
        lines = conn.reset((" boot box ", " config: ", " board: "), timeout=30)
    boot = [ln for ln in lines if " boot box " in ln or " config: " in ln or " board: " in ln]
    if boot:
        out["boot"] = boot[-1]
        say("reset: " + boot[-1])
    elif verdict is None:
        say("reset: the board did not log its boot within 30 s (parcelbox monitor)")
    return done()