# The heap the firmware needs (host_tools/tech/heapneed.py over host_tools/tech/heap_need.json): the
# file as make bench writes it is valid, the arithmetic of need and codes_that_fit, a bad
# table refused naming its field, and what a board that is too small is told would fit.
import json

import pytest

from host_tools.tech import heapneed

# the figures from before bench_memory measured them: fixed here, so that the texts
# below do not move when make bench rewrites heap_need.json
TABLE = {"measured": "2026-12-07, bench_memory", "mpy": {"base_bytes": 212000, "per_code_bytes": 24},
         "frozen": {"base_bytes": 114000, "per_code_bytes": 24}, "psram_heap_bytes": 2097152}


def test_the_shipped_file_is_valid_and_has_every_key():
    t = heapneed.load()
    assert set(t) == {"measured", "mpy", "frozen", "psram_heap_bytes"}
    for mode in heapneed.MODES:
        assert set(t[mode]) == {"base_bytes", "per_code_bytes"}
    assert heapneed.need("mpy", 256) == t["mpy"]["base_bytes"] + 256 * t["mpy"]["per_code_bytes"]


def test_need_is_base_plus_per_code_times_max_codes():
    assert heapneed.need("mpy", 256, TABLE) == 218144
    assert heapneed.need("frozen", 1000, TABLE) == 138000


@pytest.mark.parametrize("heap", [0, 211999, 212000, 212023, 212024, 218144, 250000, 10 ** 7])
def test_codes_that_fit_is_the_most_whose_need_fits(heap):
    n = heapneed.codes_that_fit("mpy", heap, TABLE)
    if n == 0:
        assert heapneed.need("mpy", 1, TABLE) > heap
    elif n < 16384:
        assert heapneed.need("mpy", n, TABLE) <= heap < heapneed.need("mpy", n + 1, TABLE)
    else:
        assert n == 16384 and heapneed.need("mpy", n, TABLE) <= heap     # the setting's own limit


def test_the_firmware_s_default_and_limit_are_read_from_its_config():
    from parcelbox import config
    assert heapneed.firmware_settings() == (config.DEFAULTS["max_codes"], config._RANGES["max_codes"][1])


@pytest.mark.parametrize("change, field", [
    (lambda t: t.pop("measured"), "measured"),
    (lambda t: t.pop("frozen"), "frozen must be an object"),
    (lambda t: t["mpy"].update(base_bytes=0), "mpy.base_bytes"),
    (lambda t: t["mpy"].update(per_code_bytes=-1), "mpy.per_code_bytes"),
    (lambda t: t["frozen"].update(per_code_bytes=24.5), "frozen.per_code_bytes"),
    (lambda t: t["mpy"].update(base_bytes=True), "mpy.base_bytes"),
    (lambda t: t.update(psram_heap_bytes="2M"), "psram_heap_bytes"),
])
def test_a_bad_table_is_refused_naming_the_field(change, field):
    t = json.loads(json.dumps(TABLE))
    change(t)
    with pytest.raises(heapneed.HeapNeedError, match=field):
        heapneed.check(t)


def test_a_missing_or_broken_file_says_who_writes_it(tmp_path):
    with pytest.raises(heapneed.HeapNeedError, match="make bench"):
        heapneed.load(tmp_path / "heap_need.json")
    (tmp_path / "heap_need.json").write_text("{")
    with pytest.raises(heapneed.HeapNeedError, match="make bench"):
        heapneed.load(tmp_path / "heap_need.json")


def test_a_board_a_little_short_is_told_fewer_codes_a_frozen_image_or_psram():
    fits = heapneed.what_fits("mpy", 216064, False, 256, TABLE)
    assert fits == [
        "at most 169 codes as .mpy files: parcelbox provision ... --max-codes 169 (settings.max_codes "
        "in the board's config.json)",
        "a frozen image, which needs 117.3 KB with 256 codes (parcelbox build --target esp32 writes "
        "build/esp32/manifest.py to freeze into MicroPython; docs/tooling.md section 2)",
        "a board with PSRAM (about 2048 KB of heap): the ESP32-DevKitC-VE (ESP32-WROVER-E, "
        "boards/esp32-wrover-devkitc-4x3.json) or the ESP32-S3-DevKitC-1-N8R8 "
        "(boards/esp32s3-n8r8-devkitc-4x4.json), flashed with MicroPython's SPIRAM image; "
        "docs/boards.md sections 5 and 6"]


def test_a_small_board_is_told_only_what_fits_it():
    # 96 KB: not even one code as .mpy, nor the frozen image: PSRAM only
    assert [f.split(" (")[0] for f in heapneed.what_fits("mpy", 96000, False, 256, TABLE)] == [
        "a board with PSRAM"]
    # 118 KB: the frozen image with fewer codes
    assert heapneed.what_fits("mpy", 118000, False, 256, TABLE)[0].startswith(
        "a frozen image with at most 166 codes")
    # a board with PSRAM is not told to get one
    assert not any("PSRAM" in f for f in heapneed.what_fits("mpy", 216064, True, 256, TABLE))
    # the frozen firmware is told fewer codes, never a frozen image
    assert heapneed.what_fits("frozen", 118000, True, 256, TABLE) == [
        "at most 166 codes frozen into the image: parcelbox provision ... --max-codes 166 "
        "(settings.max_codes in the board's config.json)"]


# ---- the figures are true: the whole device runs in the heap the file says it needs ----
# (bench/bench_memory.py's scenario: full outbox, a 4 KB command, the link connected, a
# typed code opening the door; in the MicroPython VM). deploy accepts a board on these
# figures, so a build that passes deploy's check must boot: if a change makes the device
# bigger, this fails until `make bench ARGS="--only memory"` measures it again.

def _scenario(tmp_path, codes):
    import bench.bench_memory as bm
    flash0 = tmp_path / "flash0"
    flash0.mkdir()
    bm.prepare_flash(flash0, codes)
    return bm, flash0, bm._cfg(tmp_path, codes)


# Whether the device runs at heap_k KB: (passed, why each other run failed). deploy takes
# a board whose heap is at least the need, so every heap from the need up must do. A run
# the VM's own collector bug corrupted (docs/vm.md section 3: at some heap sizes every run,
# at others some, moving with the flash folder's inode numbers) says nothing about
# fitting: it is run again, 4 times at the need, then at the need + 1, 2 and 3 KB (within
# the 4 KB margin). Running out of memory, or any other failure, anywhere, fails.
def _passes(bm, heap_k, *args, **kw):
    failed = []
    for k in (heap_k, heap_k + 1, heap_k + 2, heap_k + 3):
        for _ in range(4):
            p, why = bm.attempt(k, *args, **kw)
            if p is not None:
                return True, failed
            failed.append("%dK: %s" % (k, why))
            if why != "corrupt":
                return False, failed
    return False, failed


def test_the_device_as_deployed_runs_in_the_heap_heap_need_names(tmp_path):
    bm, flash0, cfg = _scenario(tmp_path, 256)
    need = heapneed.need("mpy", 256)
    fw = bm.mpy_firmware(tmp_path)
    ok, why = _passes(bm, -(-need // 1024), tmp_path, flash0, cfg, firmware=fw)
    assert ok, f"as .mpy files with 256 codes the device does not run in {need} B ({why})"


def test_the_frozen_device_runs_in_the_heap_heap_need_names(tmp_path):
    bm, flash0, cfg = _scenario(tmp_path, 1000)
    big, why = bm.attempt(1024, tmp_path, flash0, cfg)
    assert big is not None, why
    stubs = bm.frozen_setup(tmp_path, cfg, bm.frozen_order(big.value("modules").split(","), cfg))
    first, why = bm.attempt(1024, tmp_path, flash0, cfg, stubs)
    assert first is not None, why
    need = heapneed.need("frozen", 1000)
    total = -(-(need + int(first.value("rom"))) // 1024)   # the kept code stands for flash
    ok, why = _passes(bm, total, tmp_path, flash0, cfg, stubs)
    assert ok, f"frozen with 1,000 codes the device does not run in {need} B ({why})"
