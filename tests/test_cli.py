"""The pyinfer command and discovery of the elements by stock GStreamer tools through `pyinfer env`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyinfer.zoo import get_model

PYINFER = [sys.executable, "-m", "pyinfer.cli"]


@pytest.fixture
def env_from_pyinfer_env(tmp_path) -> dict[str, str]:
    """A clean environment with only `pyinfer env`'s exports applied (and a fresh registry)."""
    base = {k: v for k, v in os.environ.items() if k not in ("GST_PLUGIN_PATH", "PYTHONPATH", "PYINFER_PYTHONPATH")}
    base["GST_REGISTRY"] = str(tmp_path / "registry.bin")
    script = f'eval "$({" ".join(PYINFER)} env)" && env -0'
    out = subprocess.run(["bash", "-c", script], env=base, capture_output=True, check=True, timeout=60)
    env = dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)
    assert "GST_PLUGIN_PATH" in env
    assert "PYINFER_PYTHONPATH" in env
    assert "PYTHONPATH" not in env  # other Python programs in that shell keep their own sys.path
    return env


def test_gst_inspect_documents_every_property(env_from_pyinfer_env):
    out = subprocess.run(
        ["gst-inspect-1.0", "pyinfer"],
        env=env_from_pyinfer_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for prop, default in [
        ("model-engine", 'Default: ""'), ("confidence-threshold", "Default:            0.25"),
        ("nms-iou-threshold", "Default:            0.45"), ("labels-file", 'Default: ""'),
        ("device", 'Default: "auto"'), ("batch-size", "Range: 1 - 1024 Default: 1"),
        ("interval", "Range: 0 - 1000000 Default: 0"), ("unique-id", "Default: 15"),
        ("max-detections", "Range: 1 - 100000 Default: 300"), ("meta", 'Default: 0, "auto"'),
        ("mark-inferred", "Default: true"), ("backend", 'Default: 0, "auto"'), ("precision", 'Default: 0, "fp32"'),
        ("cuda-graphs", "Default: false"), ("compile", 'Default: 0, "off"'),
    ]:  # fmt: skip
        block = text[text.index(f"  {prop}") :][:800]
        assert default in block, (prop, block)
    assert "Filter/Analyzer/Video" in text
    osd = subprocess.run(
        ["gst-inspect-1.0", "pyosd"], env=env_from_pyinfer_env, capture_output=True, text=True, timeout=120, check=False
    )
    assert osd.returncode == 0, osd.stderr


def test_gst_launch_line_with_properties(env_from_pyinfer_env):
    model = get_model()
    out = subprocess.run(
        ["gst-launch-1.0", "videotestsrc", "num-buffers=5", "!", "video/x-raw,format=BGRx,width=320,height=240",
         "!", "pyinfer", f"model-engine={model.path}", f"labels-file={model.labels_file}",
         "confidence-threshold=0.4", "batch-size=2", "interval=1", "unique-id=3", "device=cpu", "!", "fakesink"],
        env=env_from_pyinfer_env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Got EOS" in out.stdout


def test_gst_launch_out_of_range_value_is_refused_with_a_warning(env_from_pyinfer_env):
    out = subprocess.run(
        ["gst-launch-1.0", "videotestsrc", "num-buffers=1", "!", "video/x-raw,format=RGB,width=64,height=48",
         "!", "pyinfer", f"model-engine={get_model().path}", "confidence-threshold=3", "!", "fakesink"],
        env=env_from_pyinfer_env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert "out of range for property 'confidence-threshold'" in out.stderr


def test_gst_launch_missing_model_prints_the_bus_error(env_from_pyinfer_env, tmp_path):
    out = subprocess.run(
        ["gst-launch-1.0", "videotestsrc", "num-buffers=1", "!", "video/x-raw,format=RGB,width=64,height=48",
         "!", "pyinfer", f"model-engine={tmp_path / 'x.torchscript'}", "!", "fakesink"],
        env=env_from_pyinfer_env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "does not exist" in out.stdout + out.stderr


def test_models_lists_the_embedded_detector():
    out = subprocess.run([*PYINFER, "models"], capture_output=True, text=True, check=True, timeout=60)
    assert "shapes" in out.stdout
    assert "circle, square, triangle" in out.stdout
    path = subprocess.run(
        [*PYINFER, "models", "--path", "shapes"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert path == str(get_model().path)
    bad = subprocess.run(
        [*PYINFER, "models", "--path", "nope"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2
    assert "no embedded model 'nope'" in bad.stderr


def test_doctor_reports_gstreamer_and_torch():
    out = subprocess.run([*PYINFER, "doctor"], capture_output=True, text=True, check=True, timeout=120)
    assert "GStreamer 1." in out.stdout
    assert "gst-python plugin loader: present" in out.stdout
    assert "torch: available" in out.stdout
