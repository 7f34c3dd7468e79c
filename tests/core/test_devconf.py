# The device configuration and board files as the firmware reads them at boot
# (firmware/parcelbox/devconf.py): complete and valid, or a clear error naming the field.
import json

import pytest

from parcelbox import devconf
from parcelbox.storage import Storage

KEY = "ab" * 32
GOOD = {"box_id": "box-17", "box_key": KEY, "wifi": {"ssid": "home", "password": "hunter22"},
        "broker": {"host": "mqtt.example", "port": 8883, "tls": True, "ca": "ca.pem"},
        "mqtt_password": "secret-pw"}
BOARD = {"name": "b", "keypad": {"rows": [1, 2, 3, 4], "cols": [5, 6, 7], "layout": "123456789*0#"},
         "compartments": [{"solenoid": 23, "door": 22}], "max_on_ms": 1500}


@pytest.fixture
def st(tmp_path):
    s = Storage(str(tmp_path))
    s.replace("ca.pem", b"-----BEGIN CERTIFICATE-----\n")
    return s


def put(st, name, obj):
    st.replace(name, json.dumps(obj).encode() if not isinstance(obj, bytes) else obj)


def test_a_good_config_loads_with_the_key_as_bytes(st):
    put(st, "config.json", GOOD)
    c = devconf.load_config(st)
    assert c["box_key"] == bytes.fromhex(KEY) and c["mqtt_username"] == "box-17"
    assert c["broker"]["tls"] is True and c["settings"] == {}


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("box_id"), "box_id"), (lambda d: d.update(box_id="a/b"), "box_id"),
    (lambda d: d.update(box_key="zz" * 32), "box_key"), (lambda d: d.update(box_key=KEY[:-2]), "box_key"),
    (lambda d: d.pop("wifi"), "wifi"), (lambda d: d["wifi"].update(ssid=""), "wifi.ssid"),
    (lambda d: d["wifi"].update(ssid="x" * 33), "wifi.ssid"),
    (lambda d: d["broker"].update(port=0), "broker.port"), (lambda d: d["broker"].update(port="1883"), "broker.port"),
    (lambda d: d["broker"].update(tls="yes"), "broker.tls"), (lambda d: d["broker"].pop("ca"), "broker.ca"),
    (lambda d: d["broker"].update(ca="other.pem"), "broker.ca"), (lambda d: d.pop("mqtt_password"), "mqtt_password"),
    (lambda d: d.update(settings=[1]), "settings")])
def test_a_bad_field_is_named_and_its_value_never_shown(st, change, field):
    d = json.loads(json.dumps(GOOD))
    change(d)
    put(st, "config.json", d)
    with pytest.raises(devconf.ConfigError) as e:
        devconf.load_config(st)
    assert e.value.why == devconf.BAD_CONFIG and field in str(e.value)
    for secret in (KEY, "hunter22", "secret-pw"):
        assert secret not in str(e.value)


def test_a_missing_or_broken_config_says_which(st):
    with pytest.raises(devconf.ConfigError) as e:
        devconf.load_config(st)
    assert e.value.why == devconf.NO_CONFIG
    put(st, "config.json", b'{"box_id": ')
    with pytest.raises(devconf.ConfigError) as e:
        devconf.load_config(st)
    assert e.value.why == devconf.BAD_CONFIG and "not valid JSON" in str(e.value)


def test_plain_mqtt_needs_no_ca(st):
    d = json.loads(json.dumps(GOOD))
    d["broker"] = {"host": "10.0.0.2", "port": 1883, "tls": False}
    put(st, "config.json", d)
    assert devconf.load_config(st)["broker"]["ca"] is None


def test_the_board_gives_the_core_its_keypad_and_compartments(st):
    put(st, "board.json", BOARD)
    b = devconf.load_board(st)
    s = devconf.core_settings(b, {"settings": {"free_tries": 3}})
    assert s == {"keypad_rows": 4, "keypad_cols": 3, "keypad_layout": "123456789*0#",
                 "compartments": 1, "max_on_ms": 1500, "free_tries": 3}


@pytest.mark.parametrize("board", [{}, {"keypad": {"rows": [1]}}, dict(BOARD, compartments=[])])
def test_an_incomplete_board_is_refused(st, board):
    put(st, "board.json", board)
    with pytest.raises(devconf.ConfigError) as e:
        devconf.load_board(st)
    assert e.value.why == devconf.BAD_BOARD


def test_the_boot_description_has_no_secret(st):
    put(st, "config.json", GOOD)
    put(st, "board.json", BOARD)
    text = devconf.describe(devconf.load_config(st), devconf.load_board(st))
    assert "box-17" in text and "mqtt.example:8883" in text
    for secret in (KEY, "hunter22", "secret-pw"):
        assert secret not in text


def test_a_client_certificate_needs_both_files_and_tls(st):
    st.replace("box.crt", b"cert")
    st.replace("box.key", b"key")
    d = json.loads(json.dumps(GOOD))
    d["broker"].update(cert="box.crt", key="box.key")
    put(st, "config.json", d)
    b = devconf.load_config(st)["broker"]
    assert (b["cert"], b["key"]) == ("box.crt", "box.key")
    for change in ({"key": None}, {"key": "missing.key"}, {"tls": False, "ca": None}):
        bad = json.loads(json.dumps(d))
        bad["broker"].update(change)
        bad["broker"] = {k: v for k, v in bad["broker"].items() if v is not None}
        put(st, "config.json", bad)
        with pytest.raises(devconf.ConfigError, match="broker.cert|broker.key"):
            devconf.load_config(st)


# ---- found by fuzzing (host_tools/fuzz/config.py) ----------------------------------------

@pytest.mark.parametrize("name, why", [("config.json", devconf.BAD_CONFIG), ("board.json", devconf.BAD_BOARD)])
def test_json_nested_too_deep_is_a_bad_file_not_a_recursion_error(st, name, why):
    # CPython's json raises RecursionError (a RuntimeError, as MicroPython's too deep
    # recursion is); it escaped the boot's checks
    deep = b'{"settings":' + b"[" * 3000 + b"]" * 3000 + b"}"  # under the 8 KB limit
    put(st, name, deep)
    load = devconf.load_config if name == "config.json" else devconf.load_board
    with pytest.raises(devconf.ConfigError) as e:
        load(st)
    assert e.value.why == why and "not valid JSON" in str(e.value)


def test_a_file_too_large_to_parse_at_boot_is_refused(st):
    put(st, "config.json", json.dumps(dict(GOOD, pad="x" * 9000)).encode())
    with pytest.raises(devconf.ConfigError) as e:
        devconf.load_config(st)
    assert e.value.why == devconf.BAD_CONFIG and "larger than 8192 bytes" in str(e.value)


@pytest.mark.parametrize("field", ["ca", "cert", "key"])
@pytest.mark.parametrize("name", ["ca.pem\x00", "\x00", "ca.pem\x00x", "/ca.pem", "../ca.pem",
                                  "certs/ca.pem", ".ca.pem", ".", "ca pem", "ça.pem", "\ud800",
                                  "ca.pem\n", "a" * 65, ""])
def test_a_broker_file_name_no_file_can_have_is_a_bad_field(st, field, name):
    # a NUL made os.stat raise ValueError (embedded null byte), a lone surrogate
    # UnicodeEncodeError, and "/ca.pem" named a file outside the flash root's own names
    for f in ("box.crt", "box.key"):
        st.replace(f, b"x")
    d = json.loads(json.dumps(GOOD))
    d["broker"].update(cert="box.crt", key="box.key")
    d["broker"][field] = name
    put(st, "config.json", json.dumps(d).encode("utf-8", "surrogatepass"))
    with pytest.raises(devconf.ConfigError) as e:
        devconf.load_config(st)
    assert e.value.why == devconf.BAD_CONFIG and "broker." + field in str(e.value)
    if len(name) > 3:
        assert name not in str(e.value)  # the field, never its value


def test_file_names_of_letters_digits_dots_dashes_and_underscores_load(st):
    for f in ("CA_2024-01.pem", "box-17.crt", "k.e.y"):
        st.replace(f, b"x")
    d = json.loads(json.dumps(GOOD))
    d["broker"].update(ca="CA_2024-01.pem", cert="box-17.crt", key="k.e.y")
    put(st, "config.json", d)
    b = devconf.load_config(st)["broker"]
    assert (b["ca"], b["cert"], b["key"]) == ("CA_2024-01.pem", "box-17.crt", "k.e.y")


@pytest.mark.parametrize("layout, what", [("123A456B789C*0#1", "the key 1 twice"),
                                          ("123A456B789C*0# ", "not printable")])
def test_a_board_keypad_layout_the_keypad_cannot_use_is_a_bad_config_at_boot(st, layout, what):
    # it passed check_settings and raised ValueError from keypad.Keypad when the core was built
    put(st, "board.json", dict(BOARD, keypad={"rows": [1, 2, 3, 4], "cols": [5, 6, 7, 8], "layout": layout}))
    put(st, "config.json", GOOD)
    with pytest.raises(devconf.ConfigError) as e:
        devconf.check_settings(devconf.load_board(st), devconf.load_config(st))
    assert e.value.why == devconf.BAD_CONFIG and "keypad_layout" in str(e.value) and what in str(e.value)
