# Where the firmware, the board files and the scenarios are: the one place that knows.
# Installed, they are package data (host_tools/assets, copied by setup.py); in a checkout, the repository's folders.
from pathlib import Path

_PKG = Path(__file__).resolve().parent
_ASSETS = _PKG / "assets"

# The repository when running from a checkout (an editable install, or the tree itself); None when installed.
CHECKOUT = None if _ASSETS.is_dir() else _PKG.parent
_BASE = _ASSETS if CHECKOUT is None else CHECKOUT

FIRMWARE = _BASE / "firmware"
BOARDS = _BASE / "boards"
SCENARIOS = _BASE / "scenarios"
VIRTUAL = _PKG / "virtual"   # the virtual hardware's modules, for the VM's path


def work_dir() -> Path:
    """Where generated output goes by default: the checkout, else the current folder."""
    return CHECKOUT if CHECKOUT is not None else Path.cwd()
