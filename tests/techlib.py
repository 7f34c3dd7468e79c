# Helpers for the technician tooling's tests (build, deploy, provision, doctor against the
# virtual board): firmware builds that differ in known files, a provisioned flash, and the
# boot rule of firmware/esp32/boot.py applied to a flash folder.
import hashlib
import json
import shutil
from pathlib import Path

from host_tools.tech import build

ROOT = Path(__file__).resolve().parent.parent
BOX = "box-1"
KEY = bytes(range(32))
OFFLINE = {"box_id": BOX, "box_key": KEY.hex(), "wifi": {"ssid": "home", "password": "wifi-pass-731"},
           "broker": {"host": "127.0.0.1", "port": 1, "tls": False}, "mqtt_password": "mqtt-pass-442"}
SLOTS = ("app_a", "app_b")


def board_json():
    from host_tools.boards import device_board
    return device_board(ROOT / "boards" / "esp32-devkitc-4x3.json")


def make_builds(base: Path) -> dict:
    """v1: the firmware as it is. v2: VERSION 0.1.1-test and one module changed (2 .mpy differ).
    v3: every module changed (every .mpy differs) and main.py: a long transfer to cut."""
    out = {"v1": build.build("sim", base / "v1")}
    fw2 = base / "fw2"
    shutil.copytree(ROOT / "firmware", fw2)
    init = fw2 / "parcelbox" / "__init__.py"
    init.write_text(init.read_text().replace('VERSION = "0.1.0"', 'VERSION = "0.1.1-test"'))
    ticks = fw2 / "parcelbox" / "ticks.py"
    ticks.write_text(ticks.read_text() + '\n_REVISION = "v2"\n')
    out["v2"] = build.build("sim", base / "v2", firmware=fw2)
    fw3 = base / "fw3"
    shutil.copytree(fw2, fw3)
    init = fw3 / "parcelbox" / "__init__.py"
    init.write_text(init.read_text().replace('"0.1.1-test"', '"0.1.2-test"'))
    for py in list((fw3 / "parcelbox").glob("*.py")) + list((fw3 / "sim" / "pb_sim").glob("*.py")):
        py.write_text(py.read_text() + '\n_REVISION3 = "v3"\n')
    main = fw3 / "esp32" / "main.py"
    main.write_text(main.read_text() + "# v3\n")   # a boot file changes too
    out["v3"] = build.build("sim", base / "v3", firmware=fw3)
    return out


def provision_offline(flash: Path, config: dict = OFFLINE) -> None:
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "board.json").write_text(json.dumps(board_json()))
    (flash / "config.json").write_text(json.dumps(config))


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def booting_slot(flash: Path):
    """The slot boot.py would put on sys.path (its rule: the manifest parses and every app
    file has its size), or None."""
    ptr = flash / "app.ptr"
    want = ptr.read_text(errors="replace").strip() if ptr.exists() else ""
    for s in (want,) + SLOTS:
        if s in SLOTS and _sizes_match(flash / s):
            return s
    return None


def _sizes_match(slot: Path) -> bool:
    try:
        files = json.loads((slot / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all((slot / f["path"][4:]).is_file() and (slot / f["path"][4:]).stat().st_size == f["size"]
               for f in files if f["path"].startswith("app/"))


def slot_intact(flash: Path, slot: str) -> dict:
    """The slot's manifest, after checking every app file against it (AssertionError if not)."""
    m = json.loads((flash / slot / "manifest.json").read_text())
    for f in m["files"]:
        if f["path"].startswith("app/"):
            p = flash / slot / f["path"][4:]
            assert p.is_file() and sha(p) == f["sha256"], "%s/%s is damaged" % (slot, f["path"])
    return m


def app_files(b) -> list:
    return [f for f in b.files if f["path"].startswith("app/")]


def gc_heap(heap) -> int:
    """What gc counts (mem_free + mem_alloc) in a VM heap of `heap`: the heap deploy and doctor
    read on a virtual board of that size."""
    from host_tools.vm.runner import VM
    r = VM(heap=heap, paths=[]).run_code("import gc\nprint(gc.mem_free() + gc.mem_alloc())")
    return int(r.stdout)


def heap_for(total: int) -> int:
    """A VM heap size (whole KB) in which gc counts about `total` bytes (its tables take 3/131)."""
    return int(total * 131 / 128) // 1024 * 1024
