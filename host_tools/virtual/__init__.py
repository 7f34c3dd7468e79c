# The virtual hardware, in the MicroPython subset: importable by the names the firmware
# imports (machine, network, ntptime...), in the VM (this folder on its path) and on CPython (install()).
import sys
from importlib.util import spec_from_file_location

from host_tools.paths import VIRTUAL as DIR

NAMES = frozenset(p.stem for p in DIR.glob("*.py") if p.stem != "__init__")


class _Finder:
    """Finds exactly this folder's modules by their device-side names, nothing else."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is None and name in NAMES:
            return spec_from_file_location(name, DIR / (name + ".py"))
        return None


def install() -> None:
    """Makes `import machine`, `import memflash`... find the virtual modules on CPython, as
    the VM's path does: a finder for these names only, after every other (a real one wins)."""
    if _Finder not in sys.meta_path:
        sys.meta_path.append(_Finder)
