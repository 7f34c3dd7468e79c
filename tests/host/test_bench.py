# The benchmarks (bench/, docs/performance.md) still run and keep the row contract of
# bench/common.py; the runner's table, results file and errors; the flash-wear model.
# Each benchmark runs with quick=True: that proves it works, it judges no figure.
import json
import sys
import types

import pytest

from bench import run as R
from bench.common import Row
from bench.flashcount import BLOCK, CountingStorage, LittleFSModel, years

# Benchmarks whose quick run still takes more than a few seconds: memory boots the VM
# a dozen times; latency and fleet need mosquitto and run at quick size in the default
# suite already (tests/broker/test_bench_network.py), so here only with the slow ones.
SLOW = {"bench_memory", "bench_latency", "bench_fleet"}


def _params():
    return [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in R.discover()]


@pytest.mark.parametrize("mod", _params())
def test_every_benchmark_runs_quick_and_returns_well_formed_rows(mod):
    e = R.run_module(mod, quick=True)
    assert "error" not in e, e.get("error")
    assert e["title"] != mod and e["rows"]
    for r in e["rows"]:
        assert r["name"] and r["unit"]
        assert isinstance(r["value"], (int, float, str)) and not isinstance(r["value"], bool)
        assert (r["met"] is None) == (r["target"] == "")
        if isinstance(r["value"], (int, float)):
            assert r["value"] == r["value"]  # not NaN
    json.dumps(e)


def test_the_runner_prints_one_table_and_merges_results_by_module(tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"benches": [{"module": "bench_zzz_old", "rows": []}]}))
    assert R.main(["--only", "flash", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "whole box, per event" in text and "B/event" in text and "<= 64 B/event" in text
    data = json.loads(out.read_text())
    assert [b["module"] for b in data["benches"]] == ["bench_flash", "bench_zzz_old"]
    flash = data["benches"][0]
    assert flash["quick"] is True and flash["rows"][0]["unit"] == "B/event"


def test_an_unknown_benchmark_name_is_refused_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert R.main(["--only", "nosuch", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no benchmark named 'nosuch'" in err and "flash" in err
    assert not out.exists()


def test_a_benchmark_that_raises_gives_one_failed_row_and_the_others_still_run(monkeypatch):
    broken = types.ModuleType("bench.bench_broken")
    broken.TITLE = "broken on purpose"

    def run(quick=False):
        raise RuntimeError("the VM trapped")
    broken.run = run
    monkeypatch.setitem(sys.modules, "bench.bench_broken", broken)
    e = R.run_module("bench_broken", quick=True)
    assert e["rows"] == [{"name": "bench_broken failed", "value": "error", "unit": "-",
                          "target": "runs", "met": False,
                          "note": "RuntimeError: the VM trapped"}]
    assert "Traceback" in e["error"]


@pytest.mark.parametrize("rows, why", [
    ([], "non-empty list"),
    ([("a", 1, "B")], "not Row"),
    ([Row("a", True, "B")], "no measured figure"),
    ([Row("a", 1, "B", target="<= 2 B")], "a target needs met"),
    ([Row("a", 1, "B", met=True)], "a target needs met"),
    ([Row("", 1, "B")], "without a name"),
])
def test_rows_that_break_the_contract_are_refused(rows, why):
    with pytest.raises(R.BenchError, match=why):
        R.check_rows("bench_x", rows)


def test_figures_are_shown_with_separators_and_three_digits():
    assert R.fmt(1234567) == "1,234,567"
    assert R.fmt(36.44) == "36.4"
    assert R.fmt(0.00123) == "0.00123"
    assert R.fmt(2.5e7) == "2.5e+07"
    assert R.fmt("error") == "error"


# ---- the flash-wear model (bench/flashcount.py) ----------------------------------------

def test_an_inline_file_append_costs_one_metadata_commit_of_the_whole_file():
    m = LittleFSModel()
    m.append(100, 25)                      # 125 B: still inline (<= 128)
    assert m.programmed == 125 + 24
    assert m.erases == pytest.approx(149 / BLOCK)


def test_an_append_to_a_big_file_rewrites_its_tail_block():
    m = LittleFSModel()
    m.append(5000, 25)                     # tail block holds bytes 4096..5024
    assert m.erases == pytest.approx(1 + 24 / BLOCK)
    assert m.programmed == 5025 - 4096 + 24
    m = LittleFSModel()
    m.append(4090, 25)                     # crosses into a second block
    assert m.erases == pytest.approx(2 + 24 / BLOCK)


def test_a_replace_writes_a_new_file_then_renames():
    m = LittleFSModel()
    m.replace(32_016)                      # 8 blocks of data, a commit, the rename
    assert m.erases == pytest.approx(8 + (24 + 40) / BLOCK)


def test_the_counting_storage_counts_what_the_firmware_writes(tmp_path):
    st = CountingStorage(str(tmp_path))
    st.append("events.log", b"x" * 25)
    st.replace("state.0", [b"ab", b"cde"])
    st.remove("state.0")
    st.remove("never-there")
    assert st.total.bytes == 30 and st.files["events.log"].appends == 1
    assert st.files["state.0"].replaces == 1 and st.files["state.0"].removes == 1
    assert "never-there" not in st.files
    assert st.bytes_written == 30          # the firmware's own counter agrees
    assert (tmp_path / "events.log").read_bytes() == b"x" * 25


def test_flash_life_arithmetic():
    # 1.5 MB x 100,000 cycles at 64 B x 200 events a day
    assert years(per_day_bytes=64 * 200) == pytest.approx(1536 * 1024 * 100_000 / 12_800 / 365.25)
    assert years(per_day_erases=384) == pytest.approx(100_000 / 365.25)


# ---- fuel marks in the VM (bench/vmbench.py) ------------------------------------------

MARKED = """
from benchprobe import measure


def f():
    x = 0
    for i in range(50):
        x += i
    return x


print("alloc=%d %d %d" % (measure(f, 0), measure(f, 10), measure(f, 20)))
"""


@pytest.mark.vm
def test_fuel_marks_count_exactly_the_instructions_between_them_and_repeat_exactly():
    from bench.vmbench import probe
    a = probe(MARKED, heap="128K")
    b = probe(MARKED, heap="128K")
    s0, s10, s20 = a.spans()[0], a.spans()[2], a.spans()[4]
    assert a.spans() == b.spans()              # fuel is deterministic
    # linear in the calls: the marks' own cost is the same each time, so it cancels (the
    # allocator's search for a free block varies by a few instructions between calls)
    assert s10 - s0 > 10 * 50
    assert abs((s20 - s10) - (s10 - s0)) < 0.001 * (s10 - s0)
    a0, a10, a20 = map(int, a.value("alloc").split())
    assert a0 == a10 == a20 > 0                # the marks allocate the same each time (f: 0)


# ---- the memory sweep's logic (bench/bench_memory.py) ---------------------------------

def test_the_heap_search_finds_the_smallest_size_where_every_run_passed():
    from bench.bench_memory import smallest_heap
    calls = []

    def run_at(k):
        calls.append(k)
        flaky = k == 224 and calls.count(224) == 2      # the second of three runs fails there
        return (None, "trap") if k < 220 or flaky else (f"probe@{k}", "")
    best, runs, probe_ = smallest_heap(run_at, 512, 4, 3)
    assert best == 228 and probe_ == "probe@228"       # 224 failed once: it does not count
    assert (224, 2, ["trap"]) in runs and all(n == 3 for k, n, _ in runs if k >= 228)
    assert len(set(calls)) <= 9                         # bisection, not every 4 KB step


def test_a_run_the_vm_corrupted_is_run_again_and_does_not_make_a_size_too_small():
    from bench.bench_memory import smallest_heap
    calls = []

    def run_at(k):
        calls.append(k)
        if k < 220:
            return None, "MemoryError"
        return (None, "corrupt") if k == 264 and calls.count(264) == 1 else (f"p{k}", "")
    best, runs, _ = smallest_heap(run_at, 512, 4, 3)
    assert best == 220 and calls.count(264) == 4 and (264, 3, ["corrupt"]) in runs


def test_a_size_where_the_vm_only_corrupts_its_heap_is_not_taken_as_too_small():
    from bench.bench_memory import smallest_heap

    def run_at(k):
        if k < 220:
            return None, "MemoryError"
        return (None, "corrupt") if k == 264 else (f"p{k}", "")
    best, runs, probe_ = smallest_heap(run_at, 512, 4, 3)
    assert best == 220 and probe_ == "p220" and (264, 0, ["corrupt"]) in runs


def test_failures_are_told_apart_from_the_vms_own_corruption():
    from bench.bench_memory import failure_kind
    assert failure_kind("MemoryError: memory allocation failed") == "MemoryError"
    assert failure_kind("AssertionError: commands taken (after a MemoryError)") == "MemoryError"
    assert failure_kind("TypeError: 'Remote' object isn't subscriptable") == "corrupt"
    assert failure_kind("wasm trap: out of bounds memory access") == "corrupt"
    assert failure_kind("AssertionError: the code opened the lock") == "error"
    assert failure_kind("AssertionError: no loop errors (after a TypeError in the loop)") == "corrupt"


def test_larger_heaps_that_fail_are_named():
    from bench.bench_memory import larger_heaps_fail
    got = larger_heaps_fail(lambda k: (None, "MemoryError") if k == 176 else ("p", ""), 152, 64, 4)
    assert got == [(176, "MemoryError")]


def test_a_heap_sweep_that_fails_at_its_start_is_an_error():
    from bench.bench_memory import smallest_heap
    with pytest.raises(RuntimeError, match="does not run even in a 256 KB heap"):
        smallest_heap(lambda k: (None, "MemoryError"), 256, 4, 3)


def test_the_frozen_image_runs_each_module_after_the_modules_its_body_imports(tmp_path):
    from bench.bench_memory import frozen_order
    files = ["/lib0/parcelbox/box.py", "/lib0/parcelbox/codestore.py", "/lib5/benchcfg.py",
             "/lib0/parcelbox/__init__.py", "/lib0/parcelbox/codefile.py",
             "/lib0/parcelbox/hmac256.py", "/lib4/fakeboards.py", "/lib4/fakeworld.py",
             "/lib2/vm_memory.py"]
    order = [name for name, host, root in frozen_order(files, tmp_path)]
    assert "vm_memory" not in order and "benchcfg" not in order   # the program, its config
    assert order.index("parcelbox") < order.index("parcelbox.codestore")
    assert order.index("parcelbox.codefile") < order.index("parcelbox.codestore")
    assert order.index("parcelbox.hmac256") < order.index("parcelbox.codestore")
    assert order.index("parcelbox.codestore") < order.index("parcelbox.box")
    assert order.index("fakeworld") < order.index("fakeboards")
