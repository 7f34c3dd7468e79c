# The VM tier: every scenario in tests/vm runs, unmodified, on CPython and inside the
# real MicroPython VM with a 96 KB heap (like an ESP32's free heap); MemoryError fails it.
# A scenario may name a larger heap in a `# vm-heap: 128K` line, and must say why.
import re
import runpy
from pathlib import Path

import pytest

from host_tools.vm import VM

SCENARIOS = sorted((Path(__file__).parent / "vm").glob("scn_*.py"))
HEAP = "96K"


def _expect_ok(path, stdout):
    assert stdout.rstrip().splitlines()[-1] == "OK " + path.stem[4:], stdout[-2000:]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_passes_on_cpython(path, capsys):
    runpy.run_path(str(path), run_name="__main__")
    _expect_ok(path, capsys.readouterr().out)


@pytest.mark.vm
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_passes_in_micropython_vm_with_96k_heap(path, tmp_path):
    m = re.search(r"^# vm-heap: (\S+)", path.read_text(), re.M)
    res = VM(heap=m.group(1) if m else HEAP, flash_dir=tmp_path).run_file(path)
    assert not res.memory_error, res.stderr
    assert res.ok, res.stderr + res.trap
    _expect_ok(path, res.stdout)
