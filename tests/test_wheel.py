"""The C helpers are extension builds of the package (setup.py): a wheel carries both, and the package installed
from it loads them (with ctypes, under the name setuptools gives them)."""

from __future__ import annotations

import importlib.machinery
import json
import os
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
    probe = """
import json, sys
import pyinfer
from pyinfer._gi import ensure_init
ensure_init()
from pyinfer.meta import _roi_native, roi
from pyinfer.track import _native
print(json.dumps({"package": pyinfer.__file__, "roi": str(_roi_native.LIB_PATH), "track": str(_native.LIB_PATH),
                  "roi_loaded": roi._native() is not None, "track_loaded": _native.load() is not None}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYINFER_NO_NATIVE", None)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120,
                         check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    assert Path(got["package"]).is_relative_to(site)  # the wheel's copy, not the editable install
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    assert got["roi"] == str(site / (HELPERS[0] + suffix))
    assert got["track"] == str(site / (HELPERS[1] + suffix))
    assert got["roi_loaded"] and got["track_loaded"], run.stderr
