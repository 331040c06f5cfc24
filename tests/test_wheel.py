"""The C helpers are extension builds of the package (setup.py): a wheel carries both, and the package installed
from it loads them (with ctypes, under the name setuptools gives them)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ("pyinfer/meta/roi_native", "pyinfer/track/track_native")
#: Built only where GStreamer has GstAnalytics (pkg-config gstreamer-analytics-1.0, GStreamer >= 1.24).
OPTIONAL = ("pyinfer/meta/analytics_native",)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the source tree without its in-place builds (so the wheel's helpers are built
    for it, not copied from the editable install), with this venv's setuptools (no download)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    (whl,) = out.glob("pyinfer_gst-*.whl")  # the distribution pyinfer-gst (wheel names use an underscore)
    return whl


def test_the_wheel_carries_both_helpers_under_the_extension_suffix(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]  # what setuptools names an extension for this Python
    for helper in HELPERS:
        assert helper + suffix in names, f"{helper}{suffix} not in {wheel.name}: {sorted(names)}"
    if _has_analytics_headers():
        assert OPTIONAL[0] + suffix in names, f"{OPTIONAL[0]}{suffix} not in {wheel.name}"
    # nothing stale copied in
    assert not [n for n in names if n.endswith(".so") and not n.startswith(HELPERS + OPTIONAL)]
    assert not wheel.name.endswith("-none-any.whl")  # a platform wheel: it holds compiled code


def _has_analytics_headers() -> bool:
    return subprocess.run(["pkg-config", "--exists", "gstreamer-analytics-1.0"], check=False).returncode == 0


def test_the_package_installed_from_the_wheel_loads_both_helpers(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYINFER_NO_NATIVE", None)
    _check_helpers_load_from(site, sys.executable, env)


PROBE = """
import json, sys
import pyinfer
from pyinfer._gi import ensure_init
ensure_init()
from pyinfer.meta import _roi_native, roi
from pyinfer.track import _native
print(json.dumps({"package": pyinfer.__file__, "roi": str(_roi_native.LIB_PATH), "track": str(_native.LIB_PATH),
                  "roi_loaded": roi._native() is not None, "track_loaded": _native.load() is not None}))
"""


def _check_helpers_load_from(site: Path, python: str, env: dict[str, str]) -> None:
    """``python`` imports pyinfer from ``site`` and loads both helpers from there."""
    run = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    assert Path(got["package"]).is_relative_to(site)  # the wheel's copy, not the editable install
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    assert got["roi"] == str(site / (HELPERS[0] + suffix))
    assert got["track"] == str(site / (HELPERS[1] + suffix))
    assert got["roi_loaded"] and got["track_loaded"], run.stderr


#: Variables that would let GStreamer or Python find pyinfer elsewhere than in the venv under test.
_FOREIGN = ("GST_PLUGIN_PATH", "GST_PLUGIN_PATH_1_0", "PYTHONPATH", "PYINFER_PYTHONPATH", "PYINFER_NO_NATIVE",
            "VIRTUAL_ENV", "PYTHONHOME")  # fmt: skip


def test_pip_install_of_the_wheel_into_a_fresh_venv_gives_the_elements_and_the_helpers(wheel, tmp_path):
    """A user's install: a fresh ``--system-site-packages`` venv of the system Python (PyGObject and gst-python
    come from the system), ``pip install --no-index --no-deps`` of the wheel, ``eval "$(pyinfer env)"``, then
    ``gst-inspect-1.0`` finds the elements from the venv and the venv's Python loads the helpers from it.

    There is no network here, so pip cannot install the dependencies (torch, torchvision, pillow, numpy):
    ``--no-deps``, and this interpreter's numpy is linked into the venv's site-packages, where pip would have put
    it; the console script (``pyinfer env``), pytracker, pymsgconv and the helpers need nothing else (torch is
    imported only when a pipeline loads a model). Element registration is checked, not inference."""
    import numpy

    base = Path(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")  # the wheel's tag
    # make setup installs all three (python3-venv, gstreamer1.0-tools): missing, it is a failed install step
    assert base.exists(), f"{base} is missing"
    assert shutil.which("gst-inspect-1.0") is not None, "gst-inspect-1.0 is missing (gstreamer1.0-tools)"
    ensurepip = subprocess.run([base, "-c", "import ensurepip"], capture_output=True, check=False)
    assert ensurepip.returncode == 0, f"{base} has no ensurepip (python3-venv)"
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    env["GST_REGISTRY"] = str(tmp_path / "registry.bin")

    def run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, check=False, **kwargs)

    made = run(base, "-m", "venv", "--system-site-packages", venv)
    assert made.returncode == 0, made.stdout + made.stderr
    installed = run(venv / "bin" / "pip", "install", "--no-index", "--no-deps", "-q", wheel)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = Path(run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                .stdout.strip())  # fmt: skip
    assert (site / "pyinfer" / "gst" / "python" / "gstpytracker.py").is_file()
    for dep in ("numpy", "numpy.libs"):  # numpy.libs: the wheel's bundled libraries, where there are any
        if (Path(numpy.__file__).parent.parent / dep).exists():
            (site / dep).symlink_to(Path(numpy.__file__).parent.parent / dep)

    script = f"""set -e
eval "$({shlex.quote(str(venv / "bin" / "pyinfer"))} env)"
echo "GST_PLUGIN_PATH=$GST_PLUGIN_PATH"
echo "PYINFER_PYTHONPATH=$PYINFER_PYTHONPATH"
for element in pytracker pymsgconv; do gst-inspect-1.0 "$element"; done
"""
    shell = run("bash", "-c", script)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert f"GST_PLUGIN_PATH={site / 'pyinfer' / 'gst'}\n" in shell.stdout  # the venv's plugin folder, alone
    assert f"PYINFER_PYTHONPATH={site}" in shell.stdout
    assert "Python multi-object tracker" in shell.stdout and "Python message converter" in shell.stdout
    assert "libgstpython" in shell.stdout
    # without the exports, GStreamer does not find them: they came from the venv
    env["GST_REGISTRY"] = str(tmp_path / "bare-registry.bin")
    bare = run("gst-inspect-1.0", "pytracker")
    assert bare.returncode != 0, bare.stdout

    _check_helpers_load_from(site, str(venv / "bin" / "python"), env)
