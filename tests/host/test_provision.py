# parcelbox provision (host_tools/tech/provision.py): config.json from the backend's registry,
# validated by the firmware's own rules (parcelbox.devconf) and `parcelbox board check`
# before anything is written; secrets never in the output. The board side is in
# tests/e2e/test_tech_e2e.py (the real mpremote against the virtual board).
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from host_tools.tech import provision
from host_tools.cli.main import main
from host_tools.backend.sdk import Backend, Ledger, mqtt_password

ROOT = Path(__file__).resolve().parents[2]
WIFI_PW = "correct-horse-7731"


@pytest.fixture
def registry(tmp_path):
    db = tmp_path / "ledger.db"
    led = Ledger(db)
    rec = Backend(led).register("box-17", compartments=1)
    led.close()
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return db, rec, ca


def test_the_configuration_comes_from_the_registry(registry):
    db, rec, ca = registry
    p = provision.plan(str(db), "box-17", "mqtts://broker.example:8883", "home", WIFI_PW,
                       "esp32-devkitc-4x3", str(ca))
    c = p.config
    assert c["box_key"] == rec["box_key"] and c["mqtt_username"] == "box-17"
    assert c["mqtt_password"] == mqtt_password(bytes.fromhex(rec["box_key"])) == rec["mqtt_password"]
    assert c["broker"] == {"host": "broker.example", "port": 8883, "tls": True, "ca": "ca.pem"}
    assert c["wifi"] == {"ssid": "home", "password": WIFI_PW}
    assert [n for n, _ in p.files()] == ["ca.pem", "board.json", "config.json"]   # config last
    assert p.board["name"] == "esp32-devkitc-4x3" and p.board["format"] == 1


def test_the_summary_names_everything_but_shows_no_secret(registry):
    db, rec, ca = registry
    p = provision.plan(str(db), "box-17", "mqtts://broker.example:8883", "home", WIFI_PW,
                       "esp32-devkitc-4x3", str(ca))
    text = "\n".join(p.summary())
    assert "box-17" in text and "broker.example:8883" in text and "wifi home (password set)" in text
    for secret in (rec["box_key"], rec["mqtt_password"], WIFI_PW):
        assert secret not in text


@pytest.mark.parametrize("url, msg", [
    ("mqtts://backend:hunter2@broker:8883", "must not carry a user or password"),
    ("http://broker", "must be mqtt:// or mqtts://"),
    ("broker:8883", "needs its scheme"),
    ("mqtt://broker:99999", "port must be a number"),
])
def test_a_bad_broker_url_is_refused(registry, url, msg):
    db, _, ca = registry
    with pytest.raises(provision.ProvisionError, match=msg) as e:
        provision.plan(str(db), "box-17", url, "home", WIFI_PW, "esp32-devkitc-4x3", str(ca))
    assert "hunter2" not in str(e.value)


def test_an_unknown_box_a_wrong_board_and_a_short_password_are_refused(registry, tmp_path):
    db, _, ca = registry
    args = dict(db=str(db), box_id="box-17", broker="mqtt://b:1883", ssid="home",
                wifi_password=WIFI_PW, board="esp32-devkitc-4x3", ca=None)
    with pytest.raises(provision.ProvisionError, match="no box box-99"):
        provision.plan(**{**args, "box_id": "box-99"})
    with pytest.raises(provision.ProvisionError, match="registered with 1 compartment.*has 4"):
        provision.plan(**{**args, "board": "esp32s3-devkitc-4x4"})
    with pytest.raises(provision.ProvisionError, match="no board 'nope'"):
        provision.plan(**{**args, "board": "nope"})
    with pytest.raises(provision.ProvisionError, match="8 to 64 characters"):
        provision.plan(**{**args, "wifi_password": "short"})
    with pytest.raises(provision.ProvisionError, match="CA file"):
        provision.plan(**{**args, "broker": "mqtts://b:8883"})
    bad = tmp_path / "bad.json"
    board = json.loads((ROOT / "boards" / "esp32-devkitc-4x3.json").read_text())
    board["compartments"][0]["solenoid"] = 5      # pulled high at reset: the board check refuses
    bad.write_text(json.dumps(board))
    with pytest.raises(provision.ProvisionError, match="(?s)must not ship.*GPIO5"):
        provision.plan(**{**args, "board": str(bad)})


def test_the_firmware_s_own_rules_judge_the_settings(registry):
    db, _, _ = registry
    with pytest.raises(provision.ProvisionError, match="firmware would refuse.*settings"):
        provision.plan(str(db), "box-17", "mqtt://b:1883", "home", WIFI_PW, "esp32-devkitc-4x3", None,
                       settings={"pulse_ms": 60000})


def test_the_wifi_password_is_never_an_argument(registry):
    db, _, _ = registry
    r = CliRunner().invoke(main, ["provision", "--dry-run", "--box", "box-17", "--db", str(db),
                                  "--broker", "mqtt://b:1883", "--wifi-ssid", "home", "--board",
                                  "esp32-devkitc-4x3", "--wifi-password", WIFI_PW])
    assert r.exit_code == 2 and "No such option" in r.output


def test_a_dry_run_reads_the_password_from_a_hidden_prompt_and_shows_no_secret(registry):
    db, rec, _ = registry
    env = {k: v for k, v in os.environ.items() if k != "PARCELBOX_WIFI_PASSWORD"}
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "provision", "--dry-run", "--box", "box-17",
                        "--db", str(db), "--broker", "mqtt://10.0.0.2:1883", "--wifi-ssid", "home",
                        "--board", "esp32-devkitc-4x3"], input=WIFI_PW + "\n", capture_output=True,
                       text=True, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    assert "Wi-Fi password for home" in p.stderr and "(password set)" in p.stdout and "dry run" in p.stdout
    for secret in (rec["box_key"], rec["mqtt_password"], WIFI_PW):
        assert secret not in p.stdout + p.stderr


def test_the_password_can_come_from_the_environment_or_a_file(registry, tmp_path, monkeypatch):
    db, _, _ = registry
    base = ["provision", "--dry-run", "--box", "box-17", "--db", str(db), "--broker", "mqtt://b:1883",
            "--wifi-ssid", "home", "--board", "esp32-devkitc-4x3"]
    monkeypatch.setenv("PARCELBOX_WIFI_PASSWORD", "short")
    r = CliRunner().invoke(main, base)
    assert r.exit_code == 1 and "8 to 64 characters" in r.output      # the env's value was used
    monkeypatch.delenv("PARCELBOX_WIFI_PASSWORD")
    f = tmp_path / "pw"
    f.write_text(WIFI_PW + "\n")
    r = CliRunner().invoke(main, base + ["--wifi-password-file", str(f)])
    assert r.exit_code == 0 and WIFI_PW not in r.output


@pytest.mark.parametrize("extra, said", [
    ({"--board": "esp32s3-devkitc-4x4"}, "registered with 1 compartment(s), board esp32s3-devkitc-4x4 "
                                         "has 4: give a board with 1 (esp32-devkitc-4x3, "),
    ({"--board": "nonesuch"}, "no board 'nonesuch'"),
    ({"--box": "box-99"}, "no box box-99"),
    ({"--broker": "mqtts://b:8883"}, "mqtts:// needs the broker's CA file"),
    ({"--wifi-ssid": "x" * 33}, "the Wi-Fi SSID must be 1 to 32 bytes"),
])
def test_what_the_host_can_check_is_refused_before_the_board_is_touched(registry, extra, said):
    # the port has no board behind it: a refusal that names the port came too late (connecting
    # stops the board's application and resets it into safe mode)
    db, _, _ = registry
    opts = {"--port": "socket://127.0.0.1:1", "--box": "box-17", "--db": str(db),
            "--broker": "mqtt://b:1883", "--wifi-ssid": "home", **extra}
    r = CliRunner(env={"PARCELBOX_WIFI_PASSWORD": WIFI_PW}).invoke(
        main, ["provision"] + [x for kv in opts.items() for x in kv])
    assert r.exit_code == 1 and said in r.output, r.output
    assert "127.0.0.1:1" not in r.output


# ---- on the virtual board, with the real mpremote ------------------------------------------

def _prov(url, db, *extra, env_pw=WIFI_PW):
    env = dict(os.environ, PARCELBOX_WIFI_PASSWORD=env_pw)
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "provision", "--port", url, "--box", "box-17",
                        "--db", str(db), "--broker", "mqtt://10.0.0.2:1883", "--wifi-ssid", "home", *extra],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.vm
def test_a_bare_board_gets_its_files_checked_on_the_host_and_no_secret_is_shown(vboard, registry):
    db, rec, _ = registry
    rc, out = _prov(vboard.url, db, "--board", "esp32-devkitc-4x3", "--no-reset")
    assert rc == 0, out
    assert "written to the board (each by rename, hashes read back): board.json, config.json" in out
    assert "no firmware on the board yet: checked on the host only" in out
    conf = json.loads((vboard.flash / "config.json").read_text())
    assert conf["box_key"] == rec["box_key"] and conf["wifi"]["password"] == WIFI_PW
    assert conf["broker"] == {"host": "10.0.0.2", "port": 1883, "tls": False}
    assert json.loads((vboard.flash / "board.json").read_text())["name"] == "esp32-devkitc-4x3"
    assert not list(vboard.flash.glob("*.tmp"))
    for secret in (rec["box_key"], rec["mqtt_password"], WIFI_PW):
        assert secret not in out and secret not in vboard.output


@pytest.mark.vm
def test_provision_json_is_one_object_on_stdout_without_a_secret(vboard, registry):
    db, rec, _ = registry
    env = dict(os.environ, PARCELBOX_WIFI_PASSWORD=WIFI_PW, PARCELBOX_PORT=vboard.url)
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "provision", "--box", "box-17", "--db", str(db),
                        "--broker", "mqtt://10.0.0.2:1883", "--wifi-ssid", "home", "--board", "esp32-devkitc-4x3",
                        "--no-reset", "--json"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert (out["box"], out["written"], out["checked_on_board"]) == ("box-17", ["board.json", "config.json"], False)
    assert out["summary"][1] == "wifi home (password set); box key and broker password: set, from the registry"
    assert "checked on the host only" in p.stderr
    for secret in (rec["box_key"], rec["mqtt_password"], WIFI_PW):
        assert secret not in p.stdout + p.stderr


@pytest.mark.vm
def test_a_configuration_the_firmware_would_refuse_is_never_written(vboard, registry):
    db, _, _ = registry
    (vboard.flash / "config.json").write_text('{"old": true}')
    before = {p.name: p.read_bytes() for p in vboard.flash.iterdir() if p.is_file()}
    rc, out = _prov(vboard.url, db, "--board", "esp32s3-devkitc-4x4")     # 4 compartments, box has 1
    assert rc == 1 and "registered with 1 compartment(s), board esp32s3-devkitc-4x4 has 4" in out
    rc, out = _prov(vboard.url, db, "--board", "esp32-devkitc-4x3", env_pw="short")
    assert rc == 1 and "8 to 64 characters" in out
    rc, out = _prov(vboard.url, db)                       # no --board, and the board has none
    assert rc == 1 and "the board has no board.json: give --board NAME" in out
    assert {p.name: p.read_bytes() for p in vboard.flash.iterdir() if p.is_file()} == before


@pytest.mark.vm
def test_max_codes_is_set_by_provision_and_kept_when_the_box_is_provisioned_again(vboard, registry):
    # deploy's advice when a build does not fit ("at most N codes") is this option
    db, _, _ = registry
    rc, out = _prov(vboard.url, db, "--board", "esp32-devkitc-4x3", "--max-codes", "120", "--no-reset")
    assert rc == 0, out
    assert "settings: max_codes 120" in out
    assert json.loads((vboard.flash / "config.json").read_text())["settings"] == {"max_codes": 120}
    rc, out = _prov(vboard.url, db, "--no-reset")          # again, without the option: kept
    assert rc == 0, out
    assert json.loads((vboard.flash / "config.json").read_text())["settings"] == {"max_codes": 120}
    rc, out = _prov(vboard.url, db, "--max-codes", "300", "--no-reset")     # the option wins
    assert rc == 0, out
    assert json.loads((vboard.flash / "config.json").read_text())["settings"] == {"max_codes": 300}


@pytest.mark.vm
def test_a_damaged_max_codes_on_the_board_is_dropped_not_carried_on(vboard, registry):
    # only a whole max_codes in range is kept; nothing else of the old settings, so a box
    # whose config.json holds a bad value can always be provisioned again
    db, _, _ = registry
    (vboard.flash / "config.json").write_text('{"settings": {"max_codes": "lots", "pulse_ms": 60000}}')
    rc, out = _prov(vboard.url, db, "--board", "esp32-devkitc-4x3", "--no-reset")
    assert rc == 0, out
    assert json.loads((vboard.flash / "config.json").read_text())["settings"] == {}


def test_max_codes_out_of_the_firmware_s_range_is_refused_before_anything(registry):
    db, _, _ = registry
    r = CliRunner().invoke(main, ["provision", "--dry-run", "--box", "box-17", "--db", str(db),
                                  "--broker", "mqtt://b:1883", "--wifi-ssid", "home", "--open-wifi",
                                  "--board", "esp32-devkitc-4x3", "--max-codes", "0"])
    assert r.exit_code == 2 and "--max-codes" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["provision", "--dry-run", "--box", "box-17", "--db", str(db),
                                  "--broker", "mqtt://b:1883", "--wifi-ssid", "home", "--open-wifi",
                                  "--board", "esp32-devkitc-4x3", "--max-codes", "500"])
    assert r.exit_code == 0, r.output
    assert "settings: max_codes 500" in r.output


@pytest.mark.vm
def test_without_board_the_board_s_own_board_json_is_kept(vboard, registry):
    db, _, _ = registry
    import techlib
    techlib.provision_offline(vboard.flash)
    board = (vboard.flash / "board.json").read_bytes()
    rc, out = _prov(vboard.url, db, "--no-reset")
    assert rc == 0, out
    assert "written to the board (each by rename, hashes read back): config.json" in out
    assert (vboard.flash / "board.json").read_bytes() == board
    assert json.loads((vboard.flash / "config.json").read_text())["box_id"] == "box-17"


def test_a_linux_board_is_refused_and_pointed_to_linux_provision(registry, monkeypatch):
    db, _, _ = registry
    led = Ledger(db)
    Backend(led).register("box-pi", compartments=4)
    led.close()
    monkeypatch.setenv("PARCELBOX_WIFI_PASSWORD", WIFI_PW)
    r = CliRunner().invoke(main, ["provision", "--dry-run", "--box", "box-pi", "--db", str(db),
                                  "--broker", "mqtt://b:1883", "--wifi-ssid", "home", "--board",
                                  "rpi4-4x4"])
    assert r.exit_code == 1 and "parcelbox linux provision" in r.output
    assert WIFI_PW not in r.output


def test_a_ca_file_holding_a_private_key_is_refused_and_the_key_not_shown(registry, tmp_path):
    # a server.pem with the broker's key beside its certificate: it would go to every box
    db, _, ca = registry
    both = tmp_path / "server.pem"
    both.write_text(ca.read_text() + "-----BEGIN PRIVATE KEY-----\nSECRETKEYBODY\n-----END PRIVATE KEY-----\n")
    with pytest.raises(provision.ProvisionError, match="holds a private key") as e:
        provision.plan(str(db), "box-17", "mqtts://b:8883", "home", WIFI_PW, "esp32-devkitc-4x3", str(both))
    assert "SECRETKEYBODY" not in str(e.value)


@pytest.mark.vm
def test_a_refused_provision_leaves_a_running_box_in_service(vboard, registry):
    # what the host can check is checked before the board is touched; what only the board
    # can tell (its board.json, without --board) is refused after connecting stopped the
    # application (a reset into safe mode): the box must not be left at its REPL until
    # someone power-cycles it
    import io

    from rich.console import Console

    import techlib
    from host_tools.tech import build
    from host_tools.tech import deploy
    db, _, _ = registry
    led = Ledger(db)
    Backend(led).register("box-4", compartments=4)
    led.close()
    techlib.provision_offline(vboard.flash)
    deploy.deploy(vboard.url, build.build("sim", db.parent / "sim").out, Console(file=io.StringIO()))
    vboard.wait_output("boot box box-1", timeout=30)
    config = (vboard.flash / "config.json").read_bytes()
    mark = len(vboard.output)
    rc, out = _prov(vboard.url, db, "--box", "box-99")
    assert rc == 1 and "no box box-99" in out, out
    assert vboard.output[mark:] == ""                  # not touched: no REPL, no reset
    rc, out = _prov(vboard.url, db, "--box", "box-4")   # the board's board.json has 1
    assert rc == 1 and "registered with 4 compartment(s), board esp32-devkitc-4x3 has 1" in out, out
    assert (vboard.flash / "config.json").read_bytes() == config
    vboard.wait_output("boot box box-1", timeout=30, start=mark)


def spy_disk_writes(monkeypatch):
    """From now on, the paths anything opens for writing or writes through Path (which then
    writes nothing): a list the test reads."""
    import builtins
    written = []
    real_open = builtins.open

    def spy_open(file, mode="r", *a, **kw):
        if any(c in mode for c in "wax+"):
            written.append(str(file))
        return real_open(file, mode, *a, **kw)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **kw: written.append(str(self)))
    monkeypatch.setattr(Path, "write_bytes", lambda self, *a, **kw: written.append(str(self)))
    return written


def test_checking_the_configuration_writes_no_secret_to_the_host_s_disk(registry, monkeypatch):
    # a scratch config.json in /tmp stays there when the tool is killed (SIGKILL, a flat laptop)
    db, rec, ca = registry
    written = spy_disk_writes(monkeypatch)
    p = provision.plan(str(db), "box-17", "mqtts://b:8883", "home", WIFI_PW, "esp32-devkitc-4x3", str(ca))
    assert p.config["box_key"] == rec["box_key"] and written == []
    with pytest.raises(provision.ProvisionError, match="box_key must be 64 hex digits"):
        provision.validate({**p.config, "box_key": "zz"}, p.board, p.ca)
    assert written == []


def test_a_registry_that_is_not_a_database_is_a_clear_error(registry, tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"not a database " * 20)
    r = CliRunner().invoke(main, ["provision", "--dry-run", "--box", "box-17", "--db", str(bad),
                                  "--broker", "mqtt://b:1883", "--wifi-ssid", "home", "--open-wifi"])
    assert r.exit_code == 1 and "is not a parcelbox registry" in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_a_password_file_that_is_not_utf8_is_refused_without_showing_its_bytes(registry, tmp_path):
    db, _, _ = registry
    pw = tmp_path / "pw"
    pw.write_bytes(b"pa\xe9ssword-1")
    r = CliRunner().invoke(main, ["provision", "--dry-run", "--box", "box-17", "--db", str(db),
                                  "--broker", "mqtt://b:1883", "--wifi-ssid", "home",
                                  "--wifi-password-file", str(pw)])
    assert r.exit_code == 1 and "is not UTF-8 text" in r.output, r.output
    assert "0xe9" not in r.output and isinstance(r.exception, SystemExit)


@pytest.mark.vm
def test_a_board_json_that_is_not_utf8_asks_for_a_board_file(vboard, registry):
    db, _, _ = registry
    (vboard.flash / "board.json").write_bytes(b'{"name": "\xff"}')
    rc, out = _prov(vboard.url, db, "--no-reset")
    assert rc == 1 and "give --board NAME" in out, out


def test_the_default_registry_and_its_wal_files_are_kept_out_of_git():
    # --db defaults to parcelbox.db in the working folder: every box key is in it
    for name in ("parcelbox.db", "parcelbox.db-wal", "parcelbox.db-shm"):
        r = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT)
        assert r.returncode == 0, name


# ---- the box's TLS client certificate and key (host_tools/tech/clientcert.py) ----------------------

def _pem_pair(folder, kind="ec", key_format="pkcs8", days=30, cn="box-17", key=None):
    """A certificate and its key as PEM files, made now (no private key is committed)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else \
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=days)) if days > 0 else \
        (now - datetime.timedelta(days=10), now + datetime.timedelta(days=days))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256() if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
                  else None))
    fmt = {"pkcs8": ser.PrivateFormat.PKCS8, "traditional": ser.PrivateFormat.TraditionalOpenSSL}[key_format]
    cert_path, key_path = folder / (cn + ".crt"), folder / (cn + ".key")
    cert_path.write_bytes(cert.public_bytes(ser.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption()))
    return cert_path, key_path, cert, key


def _key_lines(key_path):
    """The base64 lines of a PEM key: none may appear in any message."""
    return [ln for ln in key_path.read_text().splitlines() if ln and not ln.startswith("-----")]


def _plan_tls(db, ca, cert=None, key=None, broker="mqtts://broker.example:8883"):
    return provision.plan(str(db), "box-17", broker, "home", WIFI_PW, "esp32-devkitc-4x3",
                          str(ca), client_cert=None if cert is None else str(cert),
                          client_key=None if key is None else str(key))


@pytest.mark.parametrize("kind, key_format, begins", [
    ("ec", "pkcs8", "BEGIN PRIVATE KEY"), ("ec", "traditional", "BEGIN EC PRIVATE KEY"),
    ("rsa", "pkcs8", "BEGIN PRIVATE KEY"), ("rsa", "traditional", "BEGIN RSA PRIVATE KEY")])
def test_a_client_certificate_and_key_go_to_the_board_as_der_named_in_config(registry, tmp_path, kind,
                                                                            key_format, begins):
    from cryptography.hazmat.primitives import serialization as ser
    db, rec, ca = registry
    cert_path, key_path, cert, key = _pem_pair(tmp_path, kind, key_format)
    assert begins in key_path.read_text()
    p = _plan_tls(db, ca, cert_path, key_path)
    assert p.config["broker"] == {"host": "broker.example", "port": 8883, "tls": True, "ca": "ca.pem",
                                  "cert": "cert.der", "key": "key.der"}
    files = dict(p.files())
    assert [n for n, _ in p.files()] == ["ca.pem", "cert.der", "key.der", "board.json", "config.json"]
    assert files["cert.der"] == cert.public_bytes(ser.Encoding.DER)
    # PKCS#1 (RSA) or SEC1 (EC) DER, whatever form the PEM had: the form every MicroPython
    # from 1.23 on hands to mbedTLS intact (host_tools/tech/clientcert.py)
    assert files["key.der"] == key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL,
                                                 ser.NoEncryption())
    assert not files["key.der"].startswith(b"-----") and not files["cert.der"].startswith(b"-----")
    text = "\n".join(p.summary())
    assert "client certificate cert.der (CN=box-17" in text and ("EC P-256" if kind == "ec" else "RSA 2048") in text
    for line in _key_lines(key_path) + [rec["box_key"], WIFI_PW]:
        assert line not in text and line not in repr(p.client)


def test_the_der_files_load_in_micropython_s_ssl_as_the_box_loads_them(registry, tmp_path):
    # host_tools/virtual/mpssl.py: MicroPython 1.28's ssl.load_cert_chain(certfile, keyfile), file paths
    sys.path.insert(0, str(ROOT / "host_tools" / "virtual"))
    import mpssl
    db, _, ca = registry
    cert_path, key_path, _, _ = _pem_pair(tmp_path, "ec", "pkcs8")
    files = dict(_plan_tls(db, ca, cert_path, key_path).files())
    flash = tmp_path / "flash"
    flash.mkdir()
    for name in ("cert.der", "key.der"):
        (flash / name).write_bytes(files[name])
    mpssl.SSLContext(mpssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(flash / "cert.der"),
                                                                str(flash / "key.der"))


def _refused(registry, match, cert=None, key=None, broker="mqtts://broker.example:8883", secret=None):
    db, _, ca = registry
    with pytest.raises(provision.ProvisionError, match=match) as e:
        _plan_tls(db, ca, cert, key, broker)
    for line in _key_lines(secret) if secret else []:
        assert line not in str(e.value)
    return str(e.value)


def test_a_certificate_without_its_key_and_a_key_without_its_certificate_are_refused(registry, tmp_path):
    cert_path, key_path, _, _ = _pem_pair(tmp_path)
    _refused(registry, "--cert and --key go together", cert=cert_path)
    _refused(registry, "--cert and --key go together", key=key_path, secret=key_path)


def test_a_client_certificate_without_tls_is_refused(registry, tmp_path):
    cert_path, key_path, _, _ = _pem_pair(tmp_path)
    _refused(registry, "needs TLS: give the broker as mqtts://", cert_path, key_path, broker="mqtt://b:1883",
             secret=key_path)


def test_files_that_are_not_a_pem_certificate_or_key_are_refused(registry, tmp_path):
    cert_path, key_path, _, _ = _pem_pair(tmp_path)
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\n")
    _refused(registry, "notes.txt is not a PEM certificate", junk, key_path, secret=key_path)
    _refused(registry, "box-17.key is not a PEM certificate", key_path, key_path, secret=key_path)
    _refused(registry, "box-17.crt is not a PEM private key", cert_path, cert_path)
    broken = tmp_path / "broken.key"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nSECRETKEYBODY\n-----END PRIVATE KEY-----\n")
    msg = _refused(registry, "broken.key is not a PEM private key: its PRIVATE KEY block does not parse",
                   cert_path, broken)
    assert "SECRETKEYBODY" not in msg
    bad_cert = tmp_path / "bad.crt"
    bad_cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    _refused(registry, "bad.crt is not a PEM certificate: its CERTIFICATE block does not parse", bad_cert,
             key_path, secret=key_path)


def test_a_key_that_does_not_belong_to_the_certificate_is_refused(registry, tmp_path):
    cert_path, _, _, _ = _pem_pair(tmp_path, cn="box-17")
    _, other_key, _, _ = _pem_pair(tmp_path, cn="box-18")
    _refused(registry, "the key .*box-18.key does not belong to the certificate .*box-17.crt", cert_path,
             other_key, secret=other_key)


@pytest.mark.parametrize("key_format", ["pkcs8", "traditional"])
def test_an_encrypted_key_is_refused_with_how_to_decrypt_it(registry, tmp_path, key_format):
    from cryptography.hazmat.primitives import serialization as ser
    cert_path, key_path, _, key = _pem_pair(tmp_path)
    fmt = {"pkcs8": ser.PrivateFormat.PKCS8, "traditional": ser.PrivateFormat.TraditionalOpenSSL}[key_format]
    key_path.write_bytes(key.private_bytes(ser.Encoding.PEM, fmt, ser.BestAvailableEncryption(b"passphrase")))
    msg = _refused(registry, "is an encrypted key: the box has no passphrase", cert_path, key_path,
                   secret=key_path)
    assert "openssl pkey -in KEY" in msg and "passphrase" in msg


def test_a_key_the_box_s_tls_cannot_sign_with_is_refused(registry, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    cert_path, key_path, _, _ = _pem_pair(tmp_path, key=ed25519.Ed25519PrivateKey.generate())
    _refused(registry, "is an Ed25519 key: the box's TLS \\(mbedTLS\\) signs with RSA or EC keys only",
             cert_path, key_path, secret=key_path)


def test_an_expired_certificate_and_a_chain_are_refused(registry, tmp_path):
    cert_path, key_path, _, _ = _pem_pair(tmp_path, days=-1)
    _refused(registry, "box-17.crt expired on .*: the broker would refuse it", cert_path, key_path,
             secret=key_path)
    cert_path, key_path, _, _ = _pem_pair(tmp_path)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(cert_path.read_bytes() * 2)
    _refused(registry, "chain.pem holds 2 certificates: give the box's own certificate alone", chain,
             key_path, secret=key_path)


def test_the_certificate_and_key_may_share_one_pem_file(registry, tmp_path):
    db, _, ca = registry
    cert_path, key_path, cert, _ = _pem_pair(tmp_path)
    both = tmp_path / "box.pem"
    both.write_bytes(cert_path.read_bytes() + key_path.read_bytes())
    p = _plan_tls(db, ca, both, both)
    assert p.client.cert_der == dict(p.files())["cert.der"]


def test_the_cli_takes_cert_and_key_and_shows_neither_the_key_nor_a_secret(registry, tmp_path, monkeypatch):
    db, rec, ca = registry
    cert_path, key_path, _, _ = _pem_pair(tmp_path)
    monkeypatch.setenv("PARCELBOX_WIFI_PASSWORD", WIFI_PW)
    base = ["provision", "--dry-run", "--box", "box-17", "--db", str(db), "--broker", "mqtts://b:8883",
            "--ca", str(ca), "--wifi-ssid", "home", "--board", "esp32-devkitc-4x3"]
    r = CliRunner().invoke(main, base + ["--cert", str(cert_path), "--key", str(key_path)])
    assert r.exit_code == 0, r.output
    assert "client certificate cert.der (CN=box-17" in r.output and "dry run" in r.output
    r2 = CliRunner().invoke(main, base + ["--cert", str(cert_path)])
    assert r2.exit_code == 1 and "--cert and --key go together" in r2.output
    r3 = CliRunner().invoke(main, base + ["--cert", str(cert_path), "--key", str(cert_path)])
    assert r3.exit_code == 1 and "is not a PEM private key" in r3.output
    assert isinstance(r3.exception, SystemExit)           # a message, not a traceback
    for out in (r.output, r2.output, r3.output):
        for secret in _key_lines(key_path) + [rec["box_key"], rec["mqtt_password"], WIFI_PW]:
            assert secret not in out


def test_checking_a_client_key_writes_nothing_to_the_host_s_disk(registry, tmp_path, monkeypatch):
    db, _, ca = registry
    cert_path, key_path, _, _ = _pem_pair(tmp_path)
    written = spy_disk_writes(monkeypatch)
    p = _plan_tls(db, ca, cert_path, key_path)
    assert p.client is not None and written == []


@pytest.mark.vm
def test_a_client_certificate_reaches_the_board_as_der_and_a_bad_one_changes_nothing(vboard, registry,
                                                                                     tmp_path):
    from cryptography.hazmat.primitives import serialization as ser
    db, rec, ca = registry
    cert_path, key_path, cert, key = _pem_pair(tmp_path)
    _, other_key, _, _ = _pem_pair(tmp_path, cn="box-18")
    tls = ("--broker", "mqtts://10.0.0.2:8883", "--ca", str(ca), "--board", "esp32-devkitc-4x3", "--no-reset")
    (vboard.flash / "config.json").write_text('{"old": true}')
    before = {p.name: p.read_bytes() for p in vboard.flash.iterdir() if p.is_file()}
    rc, out = _prov(vboard.url, db, *tls, "--cert", str(cert_path), "--key", str(other_key))
    assert rc == 1 and "does not belong to the certificate" in out, out
    assert {p.name: p.read_bytes() for p in vboard.flash.iterdir() if p.is_file()} == before
    rc, out = _prov(vboard.url, db, *tls, "--cert", str(cert_path), "--key", str(key_path))
    assert rc == 0, out
    assert "ca.pem, cert.der, key.der, board.json, config.json" in out
    assert (vboard.flash / "cert.der").read_bytes() == cert.public_bytes(ser.Encoding.DER)
    assert ser.load_der_private_key((vboard.flash / "key.der").read_bytes(), None).private_numbers() == \
        key.private_numbers()
    conf = json.loads((vboard.flash / "config.json").read_text())
    assert conf["broker"]["cert"] == "cert.der" and conf["broker"]["key"] == "key.der"
    for secret in _key_lines(key_path) + _key_lines(other_key) + [rec["box_key"], WIFI_PW]:
        assert secret not in out and secret not in vboard.output
