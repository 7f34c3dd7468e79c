"""The firmware type-checks as the ESP32 runs it: mypy with MicroPython 1.28's ESP32 stubs
in place of CPython's standard library (docs/testing.md, "The type check").

What it catches: an import of a module the ESP32 build lacks, a function or attribute its
module lacks (time.monotonic), a call with the wrong number or kind of arguments, inside
every function body too (check_untyped_defs: the firmware carries no annotations). What it
leaves out, since the firmware has no annotations to say otherwise: attributes that start as
None (union-attr) and types mypy cannot infer (var-annotated). It is only as good as the
stubs: they come from the board's own modules (machine, time, network...) but keep CPython's
os and struct, so os.fsync passes. A finding that is the stubs' error is suppressed on its
line (`# type: ignore[code]  # stub: why`); the settings are [tool.mypy] in pyproject.toml.
"""
import os
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "build" / "mypy"  # the typeshed made from the stubs, and mypy's cache


# micropython-stdlib-stubs is laid out as a typeshed: stdlib/ holds the modules MicroPython
# has (its VERSIONS lists all of CPython's; one without a file is missing), stubs/ the rest.
# The ESP32's own modules (machine, time, socket...) join stdlib/ and VERSIONS, so mypy takes
# them for the standard library. One folder per pair of stub versions, made once, then moved
# into place (another run may be making it too).
def _typeshed():
    std, esp = distribution("micropython-stdlib-stubs"), distribution("micropython-esp32-stubs")
    dest = WORK / ("typeshed-%s-%s" % (std.version, esp.version))
    if dest.is_dir():
        return dest
    tmp = WORK / ("tmp-%d" % os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    base = Path(std.locate_file(""))
    lib = tmp / "stdlib"
    shutil.copytree(base / "stdlib", lib)
    shutil.copytree(base / "stubs", tmp / "stubs")
    shutil.copytree(base / "_mpy_shed", lib / "_mpy_shed")
    names = {"_mpy_shed"}
    for f in esp.files:
        if f.suffix == ".pyi":
            (lib / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f.locate(), lib / f)
            names.add(f.parts[0].removesuffix(".pyi"))
    versions = lib / "VERSIONS"
    listed = {line.split(":")[0] for line in versions.read_text().splitlines()}
    with open(versions, "a") as v:
        v.writelines("%s: 3.0-\n" % n for n in sorted(names - listed))
    try:
        tmp.rename(dest)
    except OSError:  # another run made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@pytest.fixture(scope="module")
def mypy():
    typeshed = _typeshed()

    def run(*files):
        r = subprocess.run([sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(typeshed),
                            "--cache-dir", str(WORK / "cache"), *map(str, files)],
                           cwd=ROOT, capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr
    return run


def test_the_firmware_type_checks_against_the_esp32_stubs(mypy):
    n = len(list((ROOT / "firmware" / "parcelbox").glob("*.py")))
    n += len(list((ROOT / "firmware" / "esp32" / "pb_esp32").glob("*.py"))) + 2  # boot, main
    code, out = mypy()
    assert code == 0, "mypy on the firmware (pyproject.toml [tool.mypy]):\n" + out
    assert "Success: no issues found in %d source files" % n in out, out


# What the ESP32 build lacks, each caught inside a function, as the firmware's code is.
@pytest.mark.parametrize("body, finding", [
    ("import time\n\ndef f():\n    return time.monotonic()\n",
     'Module has no attribute "monotonic"'),
    ("import threading\n", 'Cannot find implementation or library stub for module named "threading"'),
    ("import time\n\ndef f(t):\n    return time.ticks_diff(t)\n",
     'No overload variant of "ticks_diff" matches argument type'),
    ("import machine\n\ndef f():\n    return machine.Pin(4).high()\n", '"Pin" has no attribute "high"'),
    ("import socket\n\ndef f():\n    return socket.create_connection(('h', 1))\n",
     'Module has no attribute "create_connection"'),
    ("import json\n\ndef f(v):\n    return json.dumps(v, indent=2)\n",
     'Unexpected keyword argument "indent" for overloaded function "dumps"'),
], ids=["time.monotonic", "threading", "ticks_diff arity", "Pin.high", "create_connection",
        "json indent"])
def test_the_check_flags_what_the_esp32_build_lacks(mypy, tmp_path, body, finding):
    sample = tmp_path / "sample.py"
    sample.write_text(body)
    code, out = mypy(sample)
    assert code == 1 and finding in out, out


def test_the_same_calls_as_the_esp32_has_them_pass(mypy, tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import machine\nimport network\nimport time\n\n"
                      "def f(t):\n"
                      "    machine.Pin(4, machine.Pin.OUT, value=0).value(1)\n"
                      "    network.WLAN(network.STA_IF).connect('shed', 'pw')\n"
                      "    return time.ticks_diff(time.ticks_ms(), t)\n")
    code, out = mypy(sample)
    assert code == 0, out
