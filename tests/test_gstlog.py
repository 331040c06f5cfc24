"""pyinfer's Python log reaches GStreamer's debug log (category ``pyinfer``) under gst-launch-1.0."""

from __future__ import annotations

import os
import subprocess

from pyinfer.cli import plugin_path, python_path
from pyinfer.zoo import get_model


def _launch(tmp_path, gst_debug: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GST_DEBUG")}
    env.update(GST_PLUGIN_PATH=str(plugin_path()), PYINFER_PYTHONPATH=os.pathsep.join(python_path()),
               GST_REGISTRY=str(tmp_path / "registry.bin"), GST_DEBUG_NO_COLOR="1")  # fmt: skip
    if gst_debug is not None:
        env["GST_DEBUG"] = gst_debug
    out = subprocess.run(
        ["gst-launch-1.0", "videotestsrc", "num-buffers=2", "!", "video/x-raw,format=RGB,width=64,height=48", "!",
         "pyinfer", f"model-engine={get_model().path}", "device=cpu", "!", "fakesink"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stderr


def test_model_device_and_decoder_choice_show_with_gst_debug_pyinfer_4(tmp_path):
    err = _launch(tmp_path, "pyinfer:4")
    lines = [line for line in err.splitlines() if " pyinfer " in line and "loaded " in line]
    assert lines, err[-2000:]
    assert "INFO" in lines[0] and "on cpu" in lines[0] and "decoder" in lines[0]


def test_nothing_is_printed_without_gst_debug(tmp_path):
    assert "loaded " not in _launch(tmp_path, None)
