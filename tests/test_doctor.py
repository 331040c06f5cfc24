"""``pyinfer doctor``: the report, DeepStream features by hasattr, and the self-test's "not run" here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent / "fakes"


def _doctor(*args: str, fakes: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if fakes:
        env["PYTHONPATH"] = f"{FAKES}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "pyinfer.cli", "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)  # fmt: skip


def test_doctor_reports_versions_loader_and_missing_deepstream():
    out = _doctor(fakes=False)
    assert out.returncode == 0, out.stderr
    assert "GStreamer 1." in out.stdout
    assert "gst-python plugin loader: present" in out.stdout
    assert "pyservicemaker: absent" in out.stdout and "pyds: absent" in out.stdout
    assert "pyservicemaker.Buffer.extract (zero-copy frames): no" in out.stdout
    assert "element nvstreammux: absent" in out.stdout


def test_doctor_detects_binding_features_by_attribute():
    out = _doctor(fakes=True)
    assert out.returncode == 0, out.stderr
    assert "pyservicemaker: available" in out.stdout
    assert "pyservicemaker.Buffer.extract (zero-copy frames): yes" in out.stdout
    assert "pyds nvds_acquire_meta_lock: yes" in out.stdout


def test_deepstream_self_test_says_not_run_and_why_without_deepstream():
    out = _doctor("--deepstream", fakes=True)
    assert out.returncode == 0, out.stderr
    assert "DeepStream self-test: not run: DeepStream elements absent (nvstreammux" in out.stdout
