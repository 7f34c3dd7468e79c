# A technician's whole job on the virtual board, each step the real command with the real
# mpremote: build the sim target, deploy it, provision the box from the backend's registry
# for the private mosquitto (TLS, the box's own user), watch it with the monitor; the box
# boots from its app slot, connects, and opens for a code the backend SDK issued, and the
# event lands in the ledger. No secret (box key, broker password, Wi-Fi password, the code)
# appears in any output, log or file captured, except config.json on the board's flash.
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import techlib
from host_tools.testing.wait import wait_for
from host_tools.backend.sdk import Backend, Consumer, Ledger, mqtt_password

pytestmark = pytest.mark.vm
BOX = "box-e2e"
WIFI_PW = "garden-shed-2291"


def cli(*args, env=None, timeout=120):
    p = subprocess.run([sys.executable, "-m", "host_tools.cli.main", *args], capture_output=True, text=True,
                       cwd=techlib.ROOT, timeout=timeout, env=env)
    return p.returncode, p.stdout + p.stderr


def test_a_deployed_and_provisioned_box_connects_and_opens_for_a_backend_code(vboard, mosquitto, tmp_path):
    db = tmp_path / "ledger.db"
    ledger = Ledger(db)
    rec = Backend(ledger).register(BOX, compartments=1)
    mosquitto.add_user(BOX, mqtt_password(bytes.fromhex(rec["box_key"])))
    mosquitto.add_user("consumer", backend=True)
    mosquitto.add_user("issuer", backend=True)
    outputs = []

    rc, out = cli("build", "--target", "sim", "--out", str(tmp_path / "build"))
    assert rc == 0, out
    outputs.append(out)
    rc, out = cli("deploy", "--port", vboard.url, "--build", str(tmp_path / "build"))
    assert rc == 0 and "sent over the wire: 29 files" in out, out
    outputs.append(out)

    with Consumer(db, mosquitto.sdk_config("consumer")) as consumer:
        consumer.subscribed.wait(10)
        env = dict(os.environ, PARCELBOX_DB=str(db), PARCELBOX_WIFI_PASSWORD=WIFI_PW,
                   PARCELBOX_BROKER="mqtts://%s:%d" % (mosquitto.host, mosquitto.port),
                   PARCELBOX_CA=str(mosquitto.ca_path))
        mark = len(vboard.output)
        rc, out = cli("provision", "--port", vboard.url, "--box", BOX, "--board", "esp32-devkitc-4x3",
                      "--wifi-ssid", "shed", env=env)
        assert rc == 0, out
        outputs.append(out)
        assert "checked on the board by its firmware" in out
        assert "written to the board (each by rename, hashes read back): ca.pem, board.json, config.json" in out
        assert "reset: PB I " in out and "boot box box-e2e board esp32-devkitc-4x3" in out
        vboard.wait_output(" firmware 0.1.0 from /app_a", timeout=30, start=mark)

        # the serial console on the board's UART, saving the session
        save = tmp_path / "session.log"
        mon = subprocess.Popen([sys.executable, "-m", "host_tools.cli.main", "monitor", "--port", vboard.url,
                                "--save", str(save)], cwd=techlib.ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            box = vboard.wait_sim(30)
            wait_for(lambda: box.online, what="the box to connect to mosquitto", timeout=60, every=0.05)
            with Backend(ledger, mosquitto.sdk_config("issuer")) as be:
                issued = be.issue(BOX, "owner", uses=1)
                wait_for(lambda: ledger.command_outcome(BOX, issued.cmd_seq)[0] == 0, what="the code to reach the box", timeout=60, every=0.05)
            box.type(issued.code)
            wait_for(lambda: box.pulses, what="the lock to open", timeout=60, every=0.05)
            box.set_door(1, True)
            wait_for(lambda: [e for e in ledger.events(BOX) if e.type == "opened"], what="opened in the ledger", timeout=60, every=0.05)
            box.set_door(1, False)
            wait_for(lambda: [e for e in ledger.events(BOX) if e.type == "closed"], what="closed in the ledger", timeout=60, every=0.05)
            wait_for(lambda: save.exists() and " closed " in save.read_text(), what="the monitor to see it", timeout=60, every=0.05)
        finally:
            mon.send_signal(signal.SIGINT)
            mon_out, _ = mon.communicate(timeout=15)
        assert mon.returncode == 0, mon_out
        outputs.append(mon_out)
    opened = [e for e in ledger.events(BOX) if e.type == "opened"]
    assert len(opened) == 1 and opened[0].comp == 1 and opened[0].id == issued.code_id
    assert "opened: compartment 1, code %d, owner, 0 uses left" % issued.code_id in mon_out
    assert [p.comp for p in box.pulses] == [1]

    secrets = [rec["box_key"], rec["mqtt_password"], WIFI_PW, issued.code]
    captured = outputs + [vboard.output, "\n".join(box.lines), save.read_text()]
    for text in captured:
        for s in secrets:
            assert s not in text
    config = vboard.flash / "config.json"
    assert rec["box_key"] in config.read_text() and WIFI_PW in config.read_text()
    for f in vboard.flash.rglob("*"):          # the board's flash: only config.json holds them
        if f.is_file() and f != config:
            data = f.read_bytes()
            assert not any(s.encode() in data for s in secrets[:3]), f
    for f in Path(tmp_path / "build").rglob("*"):
        if f.is_file():
            assert not any(s.encode() in f.read_bytes() for s in secrets), f
    ledger.close()
