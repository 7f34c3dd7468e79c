# `pip install .` into a fresh virtual environment in a folder outside the checkout: the
# installed `parcelbox` runs the demo and a bundled scenario with nothing of the checkout on its path.
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "deposit_and_pickup.txt"
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "flash", "parcelbox.db*")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package installed from a copy of this checkout (pip writes build files into the
    folder it builds) into a new environment; returns (its bin folder, a folder to run in, env)."""
    home = tmp_path_factory.mktemp("install")
    src = home / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = str(env_dir / "bin" / "python")
    # pip, setuptools and the pinned dependencies come from this environment, as one plain path
    # entry after the new one's own (its .pth files, the editable install of this checkout
    # among them, are not run): no network, and what pip installs goes to the new environment.
    purelib = subprocess.check_output(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    (Path(purelib) / "pinned-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run = home / "run"
    run.mkdir()
    r = subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--no-build-isolation", str(src)],
                       cwd=run, env=env, text=True, capture_output=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    shutil.rmtree(src)   # the installed command must not need the source either
    return env_dir / "bin", run, env


def _run(installed, *args, timeout=300):
    bindir, cwd, env = installed
    return subprocess.run([str(bindir / args[0]), *args[1:]], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_the_installed_package_comes_from_the_environment_not_the_checkout(installed):
    r = _run(installed, "python", "-c",
             "import host_tools, parcelbox, pb_linux; from host_tools import paths\n"
             "print(host_tools.__file__, parcelbox.__file__, pb_linux.__file__, paths.CHECKOUT,"
             " paths.FIRMWARE, paths.BOARDS, paths.SCENARIOS)")
    assert r.returncode == 0, r.stderr
    bindir = installed[0]
    words = r.stdout.split()
    assert words[3] == "None"
    for w in words[:3] + words[4:]:
        assert Path(w).is_relative_to(bindir.parent) and not Path(w).is_relative_to(ROOT)
    for w in words[4:]:
        assert Path(w).is_dir()


def test_the_installed_parcelbox_runs_the_demo(installed):
    r = _run(installed, "parcelbox", "demo")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr


def test_the_installed_parcelbox_runs_a_bundled_scenario(installed):
    bindir, cwd, env = installed
    where = _run(installed, "python", "-c", "from host_tools import paths; print(paths.SCENARIOS)")
    script = Path(where.stdout.strip()) / SCENARIO
    assert script.is_file()
    r = _run(installed, "parcelbox", "sim", "--script", str(script))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
