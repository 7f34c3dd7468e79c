# The README's and docs/sdk.md's ```sh blocks, run as written through the installed `parcelbox`
# against a private mosquitto and the virtual board: each line exits 0 and prints no traceback.
# What is substituted is said here, in one place: the environment's values (the private
# broker's URL, user and password; the files stay as named, made in a scratch folder), the
# serial port (the virtual board), and the lines that cannot run here (INSTEAD).
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from host_tools.testing.wait import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.vm]
ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/sdk.md")
PORT = "/dev/ttyUSB0"            # a real board's serial port: the virtual board's URL instead
WIFI_PW = "garden-shed-2291"     # typed at provision's hidden prompt
FILE_PY = 'print("hello from the VM")\n'   # the README's FILE.py

# Lines that cannot run here as written, and what runs instead: never skipped silently.
INSTEAD = {
    # make demo is `make venv` and then this (the venv is the one running the test)
    "make demo": [["parcelbox", "demo"]],
    # make test runs every test, this one too
    "make test": [],
    # a real ESP32 takes the esp32 build; the virtual board runs the VM, which takes the sim
    # build (deploy refuses the other and says so)
    "parcelbox deploy --port /dev/ttyUSB0": [
        ["parcelbox", "build", "--target", "sim", "--out", "build/sim"],
        ["parcelbox", "deploy", "--port", PORT, "--build", "build/sim"]],
    # from a checkout, build writes into the checkout's build/: kept in the scratch folder
    "parcelbox build --target esp32": [["parcelbox", "build", "--target", "esp32", "--out", "build/esp32"]],
}
# Commands that run until Ctrl-C: what they print once they are at work, then SIGINT (exit 0).
UNTIL = {("events", "--follow"): "listening for events on", ("monitor",): "connected to"}


def sh_blocks(doc: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", (ROOT / doc).read_text(), re.M | re.S)


def commands(doc: str) -> list[list[str]]:
    """Each line of the doc's ```sh blocks as argv (comments dropped)."""
    out = []
    for block in sh_blocks(doc):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                out.append(argv)
    return out


def test_the_docs_have_command_blocks_and_every_stand_in_is_used():
    lines = [" ".join(a) for doc in DOCS for a in commands(doc)]
    assert all(commands(doc) for doc in DOCS)
    assert set(INSTEAD) <= set(lines), set(INSTEAD) - set(lines)   # a stale entry would hide nothing


class Shell:
    """The docs' lines, in order, in one scratch folder with one environment (exports carry)."""

    def __init__(self, cwd: Path, env: dict, values: dict, port: str):
        self.cwd, self.env, self.values, self.port = cwd, env, values, port
        self.bin = Path(sys.executable).parent
        self.ran: list[str] = []
        self.outputs: list[str] = []

    def line(self, argv: list[str]) -> None:
        if argv[0] == "export":
            for kv in argv[1:]:
                name, value = kv.split("=", 1)
                self.env[name] = self.values.get(name, value)
            return
        said = " ".join(argv)
        for cmd in INSTEAD.get(said, [argv]):
            self.run(cmd)

    def run(self, argv: list[str]) -> None:
        if argv[0] in ("parcelbox", ".venv/bin/parcelbox"):
            argv = [str(self.bin / "parcelbox")] + argv[1:]
        argv = [self.port if a == PORT else a for a in argv]
        self.ran.append(" ".join(argv[1:]))
        until = next((t for k, t in UNTIL.items() if tuple(argv[1:1 + len(k)]) == k), None)
        if until is None:
            p = subprocess.run(argv, cwd=self.cwd, env=self.env, input=WIFI_PW + "\n",
                               capture_output=True, text=True, timeout=300)
            out = p.stdout + p.stderr
            code = p.returncode
        else:
            out, code = self._until(argv, until)
        self.outputs.append(out)
        assert code == 0 and "Traceback" not in out, "%s\n%s" % (" ".join(argv[1:]), out[-3000:])

    def _until(self, argv: list[str], text: str) -> tuple[str, int]:
        p = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(p.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            wait_for(lambda: any(text in s for s in seen) or p.poll() is not None, timeout=60,
                     what="%r from %s" % (text, argv[1]))
        finally:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            reader.join(5)
        return "".join(seen), p.returncode


def test_the_readme_and_sdk_examples_run_as_written(mosquitto, vboard, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(mosquitto.ca_path, work / "ca.pem")     # PARCELBOX_CA=ca.pem, as written
    (work / "FILE.py").write_text(FILE_PY)              # the README's `parcelbox vm FILE.py`
    password = mosquitto.add_user("backend-1", backend=True)   # PARCELBOX_USERNAME=backend-1
    values = {"PARCELBOX_BROKER": mosquitto.url, "PARCELBOX_PASSWORD": password}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELBOX_")}
    sh = Shell(work, env, values, vboard.url)
    for argv in commands("README.md"):
        sh.line(argv)
        if argv[:3] == ["parcelbox", "box", "add"]:
            # the operator gives the box its broker user (docs/protocol.md section 9)
            rec = json.loads((work / "box-17.json").read_text())
            mosquitto.add_user(rec["box_id"], rec["mqtt_password"])
    for argv in commands("docs/sdk.md"):
        sh.line(argv)
    # what the lines did, seen from outside
    assert "boot box box-17 board esp32s3-n8r8-devkitc-4x4" in vboard.output
    assert (work / "box-17.log").is_file() and (work / "flash").is_dir()
    for secret in (rec["box_key"], rec["mqtt_password"], password, WIFI_PW):
        assert not any(secret in out for out in sh.outputs)
    assert len(sh.ran) == sum(len(INSTEAD.get(" ".join(a), [a])) for doc in DOCS
                              for a in commands(doc) if a[0] != "export")
