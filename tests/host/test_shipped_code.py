# What shipped code (host_tools, bench, firmware) may not do: edit sys.path, or import or read
# the test tree; and the firmware, with its ports, imports nothing of host_tools.
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("host_tools", "bench", "firmware")
# Code that runs on a device, or as one, where sys.path is how a slot or the agent is chosen.
DEVICE_PATH_EDITS = {
    "firmware/esp32/boot.py",            # puts the app slot app.ptr names on the path
    "firmware/esp32/main.py",            # falls back to the other slot
    "host_tools/vboard/vbagent.py",      # the virtual board's boot, inside the VM
}


def problems(source: str, rel: str) -> list[str]:
    """Each place in one file's source that breaks the rules above, as 'file:line: what'."""
    tree = ast.parse(source, rel)
    docstrings = {id(n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    out = []
    for n in ast.walk(tree):
        where = "%s:%d: " % (rel, getattr(n, "lineno", 0))
        if (isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name)
                and n.value.id == "sys" and rel not in DEVICE_PATH_EDITS):
            out.append(where + "touches sys.path")
        names = []
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            names = [n.module]
        for name in names:
            top = name.split(".")[0]
            if top in ("tests", "conftest"):
                out.append(where + "imports the test tree (%s)" % name)
            if top == "host_tools" and rel.startswith("firmware/"):
                out.append(where + "firmware imports host_tools (%s)" % name)
        if (isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
                and (n.value == "tests" or n.value.startswith("tests/"))):
            out.append(where + "names the test tree (%r)" % n.value)
    return out


def test_shipped_code_leaves_sys_path_alone_and_the_test_tree_unread():
    found = []
    for top in SHIPPED:
        for f in sorted((ROOT / top).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            found += problems(f.read_text(), rel)
    assert found == []


@pytest.mark.parametrize("source, what", [
    ("import sys\nsys.path.insert(0, 'x')\n", "touches sys.path"),
    ("import sys\nsys.path[0:0] = ['x']\n", "touches sys.path"),
    ("from sys import path\n", None),
    ("import tests.brokerlib\n", "imports the test tree"),
    ("from tests.vmlib.memflash import MemStorage\n", "imports the test tree"),
    ("from pathlib import Path\nP = Path('.') / 'tests' / 'fakes'\n", "names the test tree"),
    ("'''tests/test_x.py checks this.'''\n", None),
    ("VM_BOOT = 'import sys\\nsys.path[:] = []'\n", None),   # code for the VM, not this process
])
def test_the_check_sees_each_kind_of_breach(source, what):
    found = problems(source, "host_tools/example.py")
    if what is None:
        assert found == []
    else:
        assert len(found) == 1 and what in found[0]


def test_the_check_sees_firmware_importing_host_tools():
    found = problems("from host_tools.backend import protocol\n", "firmware/linux/pb_linux/x.py")
    assert found == ["firmware/linux/pb_linux/x.py:1: firmware imports host_tools "
                     "(host_tools.backend)"]
