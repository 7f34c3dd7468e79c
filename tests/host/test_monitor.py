# parcelbox monitor (host_tools/tech/monitor.py): the firmware's log lines decoded, other lines
# passed through, a USB replug survived. The serial port is a real pty pair (os.openpty) read
# through pyserial; a writer replays a log recorded from the sim port (tests/host/monitor_session.log:
# the box's lines of a SimBox session, and a MicroPython traceback from the VM).
import io
import os
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest
from rich.console import Console

from host_tools.testing.wait import wait_for
from host_tools.tech import monitor

ROOT = Path(__file__).resolve().parents[2]
RECORDED = (ROOT / "tests" / "host" / "monitor_session.log").read_text().splitlines()


def test_a_log_line_is_decoded_into_level_time_and_text():
    d = monitor.decode("PB W 18089 tamper switch open")
    assert (d.level, d.ms, d.text, d.event) == ("W", 18089, "tamper switch open", None)


def test_an_event_line_gets_its_name_type_and_security_flag():
    e = monitor.decode("PB W 17039 event 6 forced comp 1 id 0 arg 0").event
    assert (e["seq"], e["name"], e["type"], e["security"], e["comp"]) == (6, "forced", 8, True, 1)
    e = monitor.decode("PB I 17539 event 7 closed comp 1 id 0 arg 0").event
    assert (e["name"], e["type"], e["security"]) == ("closed", 3, False)


def test_an_event_logged_by_number_is_shown_with_its_name():
    # a firmware that logs the type number (an event newer than its NAMES, or a raw dump)
    e = monitor.decode("PB W 5 event 9 19 comp 0 id 0 arg 1").event
    assert (e["name"], e["type"]) == ("tamper", 19)


def test_an_events_fields_are_explained_in_the_backends_words():
    e = monitor.decode("PB W 5446 event 3 wrong_code comp 0 id 0 arg 513").event
    assert e["detail"] == "expired, 2 failures in a row"
    e = monitor.decode("PB W 5 event 4 rejected comp 0 id 12 arg 770").event
    assert e["detail"] == "command 12: replay (its seq was already used), 3 more suppressed"
    e = monitor.decode("PB I 5 event 5 result comp 1 id 3 arg 0").event
    assert e["detail"] == "command 3 (add): ok"
    e = monitor.decode("PB W 5 event 6 opened comp 2 id 7 arg 257").event
    assert e["detail"] == "compartment 2, code 7, recipient, 1 use left"


def test_lines_that_are_not_the_firmware_log_pass_through_unchanged():
    for line in RECORDED[5:9]:
        d = monitor.decode(line)
        assert d.level is None and monitor.render(d).plain == line


def test_a_garbled_event_name_that_looks_like_a_digit_does_not_stop_the_monitor():
    # "²" (line noise as UTF-8) passes str.isdigit() but int() refuses it
    d = monitor.decode("PB I 5 event 1 \u00b2 comp 1 id 2 arg 3")
    assert d.event["name"] == "\u00b2" and d.event["type"] is None


def test_the_rendered_line_shows_the_event_in_words_not_numbers():
    text = monitor.render(monitor.decode(RECORDED[3])).plain
    assert text == "     1.328 warn  event #2 wrong_code: unknown code, 1 failure in a row"
    text = monitor.render(monitor.decode("PB I 5 event 9 result comp 1 id 3 arg 0")).plain
    assert text == "     0.005 info  event #9 result: command 3 (add): ok"


def test_a_link_error_number_is_said_in_words():
    # the VM logs a bare errno (this host's); MicroPython with an errno module names it
    text = monitor.render(monitor.decode(RECORDED[2])).plain
    assert text == "     0.001 warn  link: io: connection refused (errno 111)"
    text = monitor.render(monitor.decode("PB W 7 link: io: [Errno 113] ECONNABORTED")).plain
    assert text.endswith("link: io: software caused connection abort (ECONNABORTED, errno 113)")
    text = monitor.render(monitor.decode("PB W 7 link: io: 4242")).plain
    assert text.endswith("link: io: errno 4242")


# ---- over a pty pair, with a replug ---------------------------------------------------

class Usb:
    """A USB serial adapter as the host sees it: a pty pair behind a stable symlink (as
    /dev/serial/by-id/... is), unplugged by closing the pty and plugged in as a new one."""

    def __init__(self, link: Path):
        self.link = link
        self.master = None

    def plug(self):
        master, slave = os.openpty()
        tty.setraw(slave)          # no line discipline between the writer and pyserial
        name = os.ttyname(slave)
        os.close(slave)            # the node lives while the master is open
        tmp = self.link.with_suffix(".new")
        os.symlink(name, tmp)
        os.replace(tmp, self.link)  # re-pointed atomically, as udev does
        self.master = master
        return name

    def unplug(self):
        os.close(self.master)
        self.master = None

    def write(self, lines):
        os.write(self.master, "".join(ln + "\r\n" for ln in lines).encode())


def test_the_monitor_reads_on_after_a_replug_and_saves_the_whole_session(tmp_path):
    usb = Usb(tmp_path / "ttyUSB-parcelbox")
    usb.plug()
    out, saved = io.StringIO(), io.StringIO()
    mon = monitor.Monitor(str(usb.link), save=saved,
                          console=Console(file=out, width=200, highlight=False))
    t = threading.Thread(target=mon.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: "connected to" in out.getvalue(), what="the monitor to open the port")
        usb.write(RECORDED[:6])
        wait_for(lambda: mon.lines == 6, what="the first half")
        usb.unplug()                                   # the cable comes out
        wait_for(lambda: "vanished" in out.getvalue(), what="the monitor to notice")
        time.sleep(0.3)                                # it keeps retrying meanwhile
        usb.plug()                                     # back in, as another pty
        wait_for(lambda: "is back" in out.getvalue(), what="the monitor to reopen the port")
        usb.write(RECORDED[6:])
        wait_for(lambda: mon.lines == len(RECORDED), what="the second half")
    finally:
        mon.stop()
        t.join(5)
        if usb.master is not None:
            usb.unplug()
    assert not t.is_alive() and mon.reconnects == 1
    device_lines = [ln for ln in saved.getvalue().splitlines() if not ln.startswith("# ")]
    assert device_lines == RECORDED                       # every line once, none torn
    notes = [ln for ln in saved.getvalue().splitlines() if ln.startswith("# ")]
    kinds = [next(k for k in ("connected to", "vanished", "waiting for", "is back") if k in n)
             for n in notes]
    assert kinds == ["connected to", "vanished", "waiting for", "is back"]
    shown = out.getvalue()
    assert "event #6 forced: compartment 1, opened without an unlock" in shown
    assert "event #8 tamper" in shown and "ValueError: syntax error in JSON" in shown


def test_raw_mode_shows_the_lines_as_they_came(tmp_path):
    usb = Usb(tmp_path / "tty")
    usb.plug()
    out = io.StringIO()
    mon = monitor.Monitor(str(usb.link), raw=True, console=Console(file=out, width=300))
    t = threading.Thread(target=mon.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: "connected to" in out.getvalue(), what="the port")
        usb.write(RECORDED[:4])
        wait_for(lambda: mon.lines == 4, what="four lines")
    finally:
        mon.stop()
        t.join(5)
        usb.unplug()
    assert out.getvalue().splitlines()[1:5] == RECORDED[:4]


def test_the_command_waits_for_a_missing_port_and_ends_cleanly_on_ctrl_c(tmp_path):
    usb = Usb(tmp_path / "tty")
    save = tmp_path / "session.log"
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli.main", "monitor", "--port", str(usb.link),
                          "--save", str(save)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: save.exists() and "waiting for" in save.read_text(), what="the wait", timeout=20)
        usb.plug()                                     # plugged in after the start
        wait_for(lambda: "connected to" in save.read_text(), what="the connection", timeout=10)
        usb.write(RECORDED[:2])
        wait_for(lambda: RECORDED[1] in save.read_text(), what="the lines", timeout=10)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            out = "did not end on Ctrl-C within 30 s:\n" + p.communicate()[0]
        usb.unplug()
    assert p.returncode == 0, out
    assert "event #1 boot" in out and "monitor ended: 2 lines" in out and "Traceback" not in out


def test_a_save_file_that_cannot_be_opened_is_a_clear_error(tmp_path):
    from click.testing import CliRunner
    from host_tools.cli.main import main
    r = CliRunner().invoke(main, ["monitor", "--port", str(tmp_path / "tty"),
                                  "--save", str(tmp_path / "no" / "such" / "session.log")])
    assert r.exit_code == 1 and "cannot open" in r.output and "session.log" in r.output, r.output
    assert isinstance(r.exception, SystemExit)


def test_the_monitor_holds_the_port_as_mpremote_does_so_a_deploy_cannot_share_it(tmp_path):
    # two readers on one tty steal each other's bytes: a deploy's raw REPL answers would go to
    # the monitor. mpremote locks the port (exclusive=True); the monitor must too.
    import serial
    usb = Usb(tmp_path / "tty")
    usb.plug()
    out = io.StringIO()
    mon = monitor.Monitor(str(usb.link), console=Console(file=out, width=200))
    t = threading.Thread(target=mon.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: "connected to" in out.getvalue(), what="the monitor to open the port")
        with pytest.raises(serial.SerialException, match="exclusively lock"):
            serial.Serial(str(usb.link), exclusive=True)
    finally:
        mon.stop()
        t.join(5)
        usb.unplug()


def test_the_level_filter_shows_warnings_and_errors_only_but_saves_every_line(tmp_path):
    usb = Usb(tmp_path / "tty")
    usb.plug()
    out, saved = io.StringIO(), io.StringIO()
    mon = monitor.Monitor(str(usb.link), save=saved, level="warn", console=Console(file=out, width=300))
    t = threading.Thread(target=mon.run, daemon=True)
    t.start()
    lines = ["PB D 10 scan", "PB I 20 boot box box-1", "PB W 30 link: down", "PB E 40 lock: stuck",
             "rst:0x1 (POWERON_RESET)"]
    try:
        wait_for(lambda: "connected to" in out.getvalue(), what="the port")
        usb.write(lines)
        wait_for(lambda: mon.lines == 5, what="five lines")
    finally:
        mon.stop()
        t.join(5)
        usb.unplug()
    shown = out.getvalue()
    assert "link: down" in shown and "lock: stuck" in shown and "POWERON_RESET" in shown
    assert "scan" not in shown and "boot box" not in shown and mon.hidden == 2
    assert [ln for ln in saved.getvalue().splitlines() if not ln.startswith("# ")] == lines


def test_a_missing_port_is_waited_for_naming_the_ports_that_exist(tmp_path, monkeypatch):
    from host_tools.tech import ports

    class P:
        device, vid, description = "/dev/ttyUSB1", 0x10C4, "CP2102 USB to UART"
    monkeypatch.setattr(ports, "_comports", lambda: [P()])
    out = io.StringIO()
    mon = monitor.Monitor(str(tmp_path / "ttyUSB0"), console=Console(file=out, width=300))
    t = threading.Thread(target=mon.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: "waiting for" in out.getvalue(), what="the note")
    finally:
        mon.stop()
        t.join(5)
    assert "; serial ports here: /dev/ttyUSB1 (CP210x, CP2102 USB to UART); Ctrl-C to quit" in out.getvalue()


def test_a_port_mpremote_holds_is_left_to_it_until_it_lets_go(tmp_path):
    # mpremote opens the port exclusively: the monitor says so and waits, never sharing the
    # line (two readers of a tty steal each other's bytes), then reads once it is free
    import serial
    usb = Usb(tmp_path / "tty")
    usb.plug()
    held = serial.Serial(str(usb.link), exclusive=True)     # as mpremote's SerialTransport opens it
    out = io.StringIO()
    mon = monitor.Monitor(str(usb.link), console=Console(file=out, width=300))
    t = threading.Thread(target=mon.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: "in use by another program" in out.getvalue(), what="the note")
        usb.write(["PB I 5 for mpremote"])
        wait_for(lambda: held.in_waiting, what="the line to reach the holder")
        assert held.read(held.in_waiting).startswith(b"PB I 5") and "connected" not in out.getvalue()
        held.close()                                        # mpremote ends
        wait_for(lambda: "connected to" in out.getvalue(), what="the monitor to take the free port")
        usb.write(["PB I 6 for the monitor"])
        wait_for(lambda: mon.lines == 1, what="the line")
    finally:
        mon.stop()
        t.join(5)
        usb.unplug()
    assert "for the monitor" in out.getvalue() and "for mpremote" not in out.getvalue()
