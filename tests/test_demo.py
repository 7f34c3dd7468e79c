# `parcelbox demo` (the README's first command) runs the story in the VM, every step
# as expected, and never prints the box key.
import io
import re
import subprocess
import sys

import pytest

from host_tools import demo

pytestmark = pytest.mark.vm


def test_demo_story_passes_every_step_in_the_vm(monkeypatch):
    keys = []
    real = demo.crypto.new_box_key
    monkeypatch.setattr(demo.crypto, "new_box_key", lambda: keys.append(real()) or keys[-1])
    out = io.StringIO()
    assert demo.run(out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "demo: all steps as expected" in text
    for phrase in ("deposit compartment 1", "pickup compartment 1", "throttled", "power off",
                   "lockout survived", "not_opened", "forced compartment 1"):
        assert phrase in text
    assert keys[0].hex() not in text and keys[0].hex().upper() not in text


def test_demo_command_exits_zero_and_leaves_no_key_file(tmp_path):
    keep = tmp_path / "flash"
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "demo", "--keep", str(keep)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (keep / "story.json").exists()
    assert {"codes.bin", "events.log"} <= {p.name for p in keep.iterdir()} or (keep / "codes.log").exists()
    assert re.search(r"\d+ events recorded, 0 unacknowledged", r.stdout)


def test_demo_fails_loudly_when_the_heap_is_too_small():
    out = io.StringIO()
    assert demo.run(heap="24K", out=out) == 1
    assert "FAILED" in out.getvalue() or "The VM failed" in out.getvalue()
