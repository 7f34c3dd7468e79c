# A user's mistake is one `Error:` line and an exit status, never a traceback: every command
# of `parcelbox` with a bad input (the list comes from the click tree), and each case named in docs/sdk.md section 4.
import json
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from host_tools.backend.sdk import Backend, Ledger
from host_tools.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "boards" / "esp32-devkitc-4x3.json"
DOWN = "mqtt://127.0.0.1:1"     # nothing listens on port 1: connection refused


def leaves(cmd=main, path=()):
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from leaves(sub, path + (name,))
    else:
        yield " ".join(path)


@pytest.fixture
def files(tmp_path):
    """What the bad inputs point at: a registry with box A, a file that is no registry, a
    truncated board, a board nested a thousand deep, a folder that is not a build."""
    f = {"tmp": tmp_path, "reg": tmp_path / "reg.db", "notdb": tmp_path / "notdb.db",
         "trunc": tmp_path / "trunc.json", "deep": tmp_path / "deep.json",
         "junk": tmp_path / "junk", "missing": tmp_path / "typo.db"}
    lg = Ledger(f["reg"])
    Backend(lg).register("A", compartments=2)
    lg.close()
    f["notdb"].write_text("not a registry\n")
    f["trunc"].write_bytes(BOARD.read_bytes()[:100])
    f["deep"].write_text("[" * 1000 + "]" * 1000)
    f["junk"].mkdir()
    (f["junk"] / "a.txt").write_text("x")
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "trunc.json").write_bytes(BOARD.read_bytes()[:100])
    (tmp_path / "hw").mkdir()
    return f


# One representative mistake per command: (arguments, the exit status documented for it).
def cases(f):
    reg, notdb, missing = str(f["reg"]), str(f["notdb"]), str(f["missing"])
    return {
        "vm": (["vm", str(f["trunc"]), "--heap", "lots"], 2),
        "demo": (["demo", "--broker", "broker.example:1883"], 2),
        "box add": (["box", "add", "B", "--db", str(f["tmp"] / "no-folder" / "x.db")], 1),
        "box list": (["box", "list", "--db", str(f["tmp"])], 1),
        "box status": (["box", "status", "A", "--db", missing], 1),
        "box rotate-key": (["box", "rotate-key", "A", "--db", reg, "--broker", DOWN], 1),
        "box clear-throttle": (["box", "clear-throttle", "A", "--db", reg, "--broker", "x:1"], 2),
        "box refresh": (["box", "refresh", "A", "--db", notdb, "--broker", DOWN], 1),
        "box set-time": (["box", "set-time", "A", "--db", reg, "--broker", "mqtts://h"], 2),
        "codes issue": (["codes", "issue", "A", "--db", reg, "--broker", DOWN], 1),
        "codes revoke": (["codes", "revoke", "A", "1", "--db", reg, "--broker", "http://h"], 2),
        "codes list": (["codes", "list", "A", "--db", notdb], 1),
        "codes sync": (["codes", "sync", "A", "--db", reg, "--broker", DOWN], 1),
        "unlock": (["unlock", "A", "9", "--db", reg, "--broker", DOWN], 1),
        "events": (["events", "--follow", "--db", reg, "--broker", DOWN], 1),
        "board check": (["board", "check", str(f["deep"])], 1),
        "hardware generate": (["hardware", "generate", "--check", "--boards", str(f["tmp"] / "boards"),
                               "--out", str(f["tmp"] / "hw")], 2),
        "sim": (["sim", "--board", str(f["trunc"])], 2),
        "build": (["build", "--target", "sim", "--out", str(f["junk"])], 1),
        "monitor": (["monitor", "--port", "/dev/no-such-port", "--save",
                     str(f["tmp"] / "no-folder" / "log.txt")], 1),
        "deploy": (["deploy", "--port", "/dev/no-such-port", "--build", str(f["junk"])], 1),
        "provision": (["provision", "--dry-run", "--box", "A", "--wifi-ssid", "home", "--open-wifi",
                       "--db", missing, "--broker", "mqtts://h:8883"], 1),
        "doctor": (["doctor", "--port", "/dev/no-such-port"], 2),
        "run": (["run", "--port", "/dev/no-such-port"], 1),
        "vboard": (["vboard", "--flash", str(f["tmp"] / "flash"), "--heap", "lots"], 1),
        "linux provision": (["linux", "provision", "--dry-run", "--box", "A", "--db", notdb,
                             "--broker", "mqtt://h"], 1),
        "linux unit": (["linux", "unit", "extra"], 2),
    }


_ENV = {k: None for k in ("PARCELBOX_DB", "PARCELBOX_BROKER", "PARCELBOX_CA", "PARCELBOX_USERNAME",
                          "PARCELBOX_PASSWORD", "PARCELBOX_DEBUG", "PARCELBOX_WIFI_PASSWORD",
                          "PARCELBOX_PORT")}


def invoke(args, **kw):
    """Through click, with exceptions let out: one that escapes fails the test that called."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return CliRunner(env=_ENV).invoke(main, args, catch_exceptions=False, **kw)
    finally:   # monitor and vboard install their own
        for s, h in handlers.items():
            signal.signal(s, h)


def test_every_command_has_a_case_in_the_sweep(files):
    assert set(leaves()) == set(cases(files)), "a command without a bad-input case below"


@pytest.mark.parametrize("command", sorted(leaves()))
def test_a_mistake_is_an_error_line_and_an_exit_status_never_a_traceback(files, command):
    args, status = cases(files)[command]
    r = invoke(args)
    assert "Traceback" not in r.output
    assert r.exit_code == status, r.output
    if command != "board check":    # which lists every error of the file, one per line
        assert "Error:" in r.output, r.output


def _one_error_line(r, status):
    assert "Traceback" not in r.output and r.exit_code == status, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, r.output
    return errors[0]


# ---- the cases as users met them -------------------------------------------------------

def test_sim_with_a_truncated_or_invalid_board_file_says_what_is_wrong(files, tmp_path):
    line = _one_error_line(invoke(["sim", "--board", str(files["trunc"])]), 2)
    assert "not valid JSON" in line
    bad = json.loads(BOARD.read_text())
    bad["keypad"]["rows"] = [13, 14, 27, 99]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert "GPIO99" in _one_error_line(invoke(["sim", "--board", str(tmp_path / "bad.json")]), 2)


@pytest.mark.parametrize("url, words", [("http://x:1", "must be mqtt:// or mqtts://, not http://"),
                                        ("mqtts://broker.example:8883", "needs the broker's CA file"),
                                        ("broker.example:1883", "needs its scheme")])
def test_sim_refuses_a_broker_address_it_cannot_use(url, words):
    assert words in _one_error_line(invoke(["sim", "--broker", url]), 2)


def test_sim_with_a_broker_that_is_down_says_so(tmp_path):
    line = _one_error_line(invoke(["sim", "--broker", DOWN, "--keep", str(tmp_path / "k")]), 1)
    assert "cannot reach the broker at 127.0.0.1:1: connection refused" in line


def test_a_registry_that_is_a_folder_or_in_a_missing_folder_is_an_error(tmp_path):
    assert "is a folder" in _one_error_line(invoke(["box", "list", "--db", str(tmp_path)]), 1)
    r = invoke(["box", "list", "--db", str(tmp_path / "nowhere" / "x.db")])
    assert "no registry at" in _one_error_line(r, 1)
    r = invoke(["box", "add", "A", "--db", str(tmp_path / "nowhere" / "x.db")])
    assert "no folder" in _one_error_line(r, 1)
    assert not (tmp_path / "nowhere").exists()


def test_sim_keep_with_a_box_already_registered_there_says_so(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    lg = Ledger(keep / "ledger.db")
    Backend(lg).register("box-1")
    lg.close()
    line = _one_error_line(invoke(["sim", "--keep", str(keep), "--broker", DOWN]), 1)
    assert "box box-1 is already registered in %s" % keep in line


def test_a_door_the_box_does_not_have_is_an_error_line_in_the_interactive_sim():
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", "sim", "--cpython"],
                       input="door 9 open\nbackend unlock 5\no 1\nquit\n", capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0 and "Traceback" not in p.stdout + p.stderr, p.stderr[-2000:]
    assert "error: door 9 open: the box has compartments 1 to 4" in p.stdout
    assert "error: backend unlock 5: the box has compartments 1 to 4" in p.stdout
    assert "door 1 open" in p.stdout     # and the box goes on


@pytest.mark.parametrize("content, words", [
    (b"wait 1s\n\xff\xfe door\n", "s.txt:2: not UTF-8 text (byte 8)"),
    (b"wait " + b"9" * 400 + b"s\n", "is more than a year of box time"),
    (b"wait " + b"9" * 400 + b"\n", "not a duration"),
    (b"door 99999999999999999999 open\n", "compartment must be a number 1 to 32"),
])
def test_a_bad_scenario_file_is_one_error_line_and_exit_2(tmp_path, content, words):
    (tmp_path / "s.txt").write_bytes(content)
    line = _one_error_line(invoke(["sim", "--script", str(tmp_path / "s.txt")]), 2)
    assert words in line and len(line) < 300


def _rpi_with_row(pin: str) -> str:
    b = json.loads((ROOT / "boards" / "rpi4-4x4.json").read_text())
    b["keypad"]["rows"][0] = pin
    return json.dumps(b, ensure_ascii=False)


@pytest.mark.parametrize("text, words", [
    (_rpi_with_row("D5\u00e9"), '"D5\\u00e9" is not one'),
    (_rpi_with_row("GPIO\u00b2"), '"GPIO\\u00b2" is not one'),
    (_rpi_with_row("\ud800").replace("\ud800", "\\ud800"), '"\\ud800" is not one'),
    ('{"name": ' + "[" * 1000 + "]" * 1000 + "}", "nested too deeply"),
])
def test_a_board_file_with_a_pin_name_outside_ascii_or_nested_deep_is_an_error(tmp_path, text, words):
    f = tmp_path / "b.json"
    f.write_text(text, encoding="utf-8")
    r = invoke(["board", "check", str(f)])
    assert r.exit_code == 1 and "Traceback" not in r.output and words in r.output, r.output
    assert words in _one_error_line(invoke(["sim", "--board", str(f)]), 2)


# ---- exit statuses and words (docs/sdk.md section 4) ------------------------------------

def test_a_broker_that_is_down_makes_codes_issue_exit_1_and_stores_no_code(files):
    reg = str(files["reg"])
    line = _one_error_line(invoke(["codes", "issue", "A", "--db", reg, "--broker", DOWN]), 1)
    assert "connection refused" in line and "ConnectionRefusedError" not in line
    assert json.loads(invoke(["codes", "list", "A", "--all", "--json", "--db", reg]).output) == []


def test_a_code_stored_but_not_taken_by_the_broker_is_shown_and_exits_1(files, monkeypatch):
    from host_tools.backend.sdk import BrokerError
    from host_tools.backend.sdk import mqtt as sdkmqtt

    monkeypatch.setattr(sdkmqtt, "connect", lambda c, cfg, timeout=10: None)

    def gone(*a, **kw):
        raise BrokerError("the broker did not confirm the message within 10 s")
    monkeypatch.setattr(sdkmqtt, "publish", gone)
    reg = str(files["reg"])
    r = invoke(["codes", "issue", "A", "--json", "--db", reg, "--broker", "mqtt://h"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    issued = json.loads(r.output.splitlines()[0])
    assert issued["sent"] is False and "codes sync A" in r.output
    assert json.loads(invoke(["codes", "list", "A", "--json", "--db", reg]).output)[0]["id"] == 1


def test_an_unknown_host_is_said_in_words(files):
    r = invoke(["unlock", "A", "1", "--db", str(files["reg"]), "--broker", "mqtt://no-such-host.invalid"])
    line = _one_error_line(r, 1)
    assert "unknown host" in line and "gaierror" not in line


@pytest.mark.parametrize("args", [["unlock", "A", "1"], ["codes", "sync", "A"],
                                  ["events", "--follow"]])
def test_a_broker_address_without_a_scheme_is_a_usage_error(files, args):
    r = invoke(args + ["--db", str(files["reg"]), "--broker", "127.0.0.1:1883"])
    assert "needs its scheme" in _one_error_line(r, 2)


@pytest.mark.parametrize("args", [
    ["box", "list"], ["box", "status", "A"], ["codes", "list", "A"], ["events"],
    ["codes", "issue", "A", "--broker", DOWN], ["unlock", "A", "1", "--broker", DOWN],
    ["box", "refresh", "A", "--broker", DOWN],
    ["provision", "--dry-run", "--box", "A", "--wifi-ssid", "s", "--open-wifi", "--broker", "mqtt://h"],
    ["linux", "provision", "--dry-run", "--box", "A", "--broker", "mqtt://h"]])
def test_only_box_add_makes_a_registry_where_parcelbox_db_points_at_nothing(tmp_path, args):
    typo = tmp_path / "parcelbx.db"
    r = CliRunner(env={**_ENV, "PARCELBOX_DB": str(typo)}).invoke(main, args, catch_exceptions=False)
    assert "no registry at %s" % typo in _one_error_line(r, 1)
    assert not typo.exists()
    r = CliRunner(env={**_ENV, "PARCELBOX_DB": str(typo)}).invoke(main, ["box", "add", "A"])
    assert r.exit_code == 0 and typo.exists()


def test_box_add_with_a_bad_broker_address_registers_no_box(tmp_path):
    db, prov = tmp_path / "reg.db", tmp_path / "prov.json"
    r = invoke(["box", "add", "A", "--db", str(db), "--broker", "broker.example:8883",
                "--provision-file", str(prov)])
    assert "needs its scheme" in _one_error_line(r, 2)
    assert not prov.exists() and not db.exists()


def test_a_registry_the_machine_will_not_write_is_an_error_line(files, monkeypatch):
    import sqlite3

    from host_tools.backend.sdk import ledger

    def readonly(self, *a, **kw):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    monkeypatch.setattr(ledger.Ledger, "add_box", readonly)
    r = invoke(["box", "add", "B", "--db", str(files["reg"])])
    assert "the registry: attempt to write a readonly database" in _one_error_line(r, 1)


def test_a_bug_keeps_its_traceback_and_a_mistake_shows_one_with_parcelbox_debug(files, monkeypatch):
    from host_tools.backend.sdk import ledger

    def bug(self):
        raise KeyError("a bug")
    monkeypatch.setattr(ledger.Ledger, "boxes", bug)
    with pytest.raises(KeyError):
        invoke(["box", "list", "--db", str(files["reg"])])
    r = CliRunner(env={**_ENV, "PARCELBOX_DEBUG": "1"}).invoke(
        main, ["box", "status", "B", "--db", str(files["reg"])], catch_exceptions=False)
    assert r.exit_code == 1 and "Traceback" in r.output and "Error: no box B" in r.output


# ---- the board's port: named, from PARCELBOX_PORT, or the one dev board attached ---------

class _Port:
    def __init__(self, device, vid=None, description="n/a"):
        self.device, self.vid, self.description = device, vid, description


@pytest.mark.parametrize("command, status", [(["deploy"], 1), (["doctor"], 2), (["run"], 1),
                                             (["provision", "--box", "A", "--wifi-ssid", "s", "--open-wifi",
                                               "--broker", "mqtt://h"], 1)])
def test_no_port_and_no_dev_board_attached_is_one_error_line_naming_the_ports_there(files, monkeypatch,
                                                                                   command, status):
    from host_tools.tech import ports
    monkeypatch.setattr(ports, "_comports", lambda: [_Port("/dev/ttyS0")])
    r = invoke(command + (["--db", str(files["reg"])] if command[0] == "provision" else []))
    line = _one_error_line(r, status)
    assert "no ESP32 dev board attached" in line and "serial ports here: /dev/ttyS0" in line


def test_two_dev_boards_attached_is_an_error_listing_both(monkeypatch):
    from host_tools.tech import ports
    monkeypatch.setattr(ports, "_comports", lambda: [_Port("/dev/ttyUSB0", 0x10C4, "CP2102 USB to UART"),
                                                     _Port("/dev/ttyACM0", 0x303A, "USB JTAG/serial debug unit"),
                                                     _Port("/dev/ttyS0")])
    line = _one_error_line(invoke(["deploy"]), 1)
    assert line == ("Error: several dev boards attached: /dev/ttyACM0 (Espressif USB, USB JTAG/serial debug "
                    "unit), /dev/ttyUSB0 (CP210x, CP2102 USB to UART); choose one with --port or PARCELBOX_PORT")


def test_the_one_dev_board_attached_is_taken_and_parcelbox_port_wins_over_it(monkeypatch):
    from host_tools.tech import ports
    monkeypatch.setattr(ports, "_comports", lambda: [_Port("/dev/ttyUSB3", 0x1A86, "USB Serial"),
                                                     _Port("/dev/ttyS0")])
    # the port is the one tried: nothing answers there, so the error names it
    assert "/dev/ttyUSB3" in _one_error_line(invoke(["doctor"]), 2)
    r = CliRunner(env={**_ENV, "PARCELBOX_PORT": "/dev/from-env"}).invoke(main, ["doctor"],
                                                                          catch_exceptions=False)
    assert "cannot open /dev/from-env" in _one_error_line(r, 2)


def test_version_and_shell_completion_come_from_click():
    r = invoke(["--version"])
    assert r.exit_code == 0 and r.output == "parcelbox, version 0.1.0\n"
    r = CliRunner(env={**_ENV, "_PARCELBOX_COMPLETE": "bash_source"}).invoke(main, [], prog_name="parcelbox")
    assert "_parcelbox_completion()" in r.output and r.exit_code == 0, r.output
    r = CliRunner(env={**_ENV, "_PARCELBOX_COMPLETE": "bash_complete", "COMP_WORDS": "parcelbox dep",
                       "COMP_CWORD": "1"}).invoke(main, [], prog_name="parcelbox")
    assert r.output.split() == ["plain,deploy"], r.output
