# The VM tier: every scenario in tests/vm runs, unmodified, on CPython and inside the
# real MicroPython VM with a 96 KB heap (like an ESP32's free heap); MemoryError fails it.
# A scenario may name a larger heap in a `# vm-heap: 128K` line, and must say why, and
# more folders for its imports in a `# vm-paths: firmware/esp32 host_tools/virtual` line
# (relative to the repository; on CPython they are on sys.path for that scenario only).
import re
import runpy
import sys
from pathlib import Path

import pytest

from host_tools.vm.runner import FIRMWARE_DIR, VM, VMLIB_DIR

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((Path(__file__).parent).glob("scn_*.py"))
HEAP = "96K"


def _extra_paths(path):
    m = re.search(r"^# vm-paths: (.+)$", path.read_text(), re.M)
    return [ROOT / p for p in m.group(1).split()] if m else []


def _expect_ok(path, stdout):
    assert stdout.rstrip().splitlines()[-1] == "OK " + path.stem[4:], stdout[-2000:]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_passes_on_cpython(path, capsys):
    extra = [str(p) for p in _extra_paths(path)]
    before = set(sys.modules)
    sys.path[0:0] = extra
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        del sys.path[:len(extra)]
        if extra:  # forget what came from the extra folders (a fake `machine`, say)
            for name in set(sys.modules) - before:
                f = getattr(sys.modules[name], "__file__", None) or ""
                if any(f.startswith(p) for p in extra):
                    del sys.modules[name]
    _expect_ok(path, capsys.readouterr().out)


@pytest.mark.vm
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_passes_in_micropython_vm_with_96k_heap(path, tmp_path):
    m = re.search(r"^# vm-heap: (\S+)", path.read_text(), re.M)
    paths = (FIRMWARE_DIR, VMLIB_DIR, *_extra_paths(path))
    res = VM(heap=m.group(1) if m else HEAP, flash_dir=tmp_path, paths=paths).run_file(path)
    assert not res.memory_error, res.stderr
    assert res.ok, res.stderr + res.trap
    _expect_ok(path, res.stdout)
