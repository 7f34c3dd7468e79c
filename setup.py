# The firmware's packages install as importable packages (the host runs them on CPython), and
# a wheel carries firmware/, boards/ and scenarios/ as package data (host_tools/paths.py finds them).
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PORTS = {"parcelbox": "firmware/parcelbox", "pb_sim": "firmware/sim/pb_sim",
         "pb_linux": "firmware/linux/pb_linux", "pb_esp32": "firmware/esp32/pb_esp32"}
ASSETS = ("firmware", "boards", "scenarios")


class BuildWithAssets(build_py):
    """Copies the asset folders into host_tools/assets; an editable install reads the checkout's."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "host_tools" / "assets"
        for name in ASSETS:
            shutil.rmtree(dest / name, ignore_errors=True)
            shutil.copytree(HERE / name, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(
    packages=find_packages(include=["host_tools", "host_tools.*"]) + list(PORTS),
    package_dir=PORTS,
    package_data={"host_tools.tech": ["heap_need.json"]},
    cmdclass={"build_py": BuildWithAssets},
)
