"""Shared fixtures: a private GStreamer registry, in-process registration, pipeline runner, small models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# A private registry, so a stale cached scan can neither hide nor fake an element (set before Gst.init).
_REGISTRY_DIR = tempfile.mkdtemp(prefix="pyinfer-registry-")
os.environ["GST_REGISTRY"] = os.path.join(_REGISTRY_DIR, "registry.bin")

import pytest  # noqa: E402

import pyinfer  # noqa: E402
from pyinfer._gi import Gst  # noqa: E402
from support import FIXED_TABLE, FixedBoxes, PipelineResult, run, save_torchscript  # noqa: E402

pyinfer.register()


@pytest.fixture
def run_pipeline():
    """run_pipeline(description_or_pipeline, timeout_s=60, feed=None) -> PipelineResult."""

    def _run(desc, timeout_s: float = 60.0, feed=None) -> PipelineResult:
        pipeline = Gst.parse_launch(desc) if isinstance(desc, str) else desc
        return run(pipeline, timeout_s, feed)

    return _run


@pytest.fixture(scope="session")
def fixed_model(tmp_path_factory) -> Path:
    """A 320x320 TorchScript model with known outputs and names a, b, c."""
    import torch

    path = tmp_path_factory.mktemp("models") / "fixed.torchscript"
    cfg = {"imgsz": [320, 320], "names": {"0": "a", "1": "b", "2": "c"}}
    return save_torchscript(FixedBoxes.build(FIXED_TABLE), path, cfg, torch.zeros(1, 3, 320, 320))


@pytest.fixture(scope="session")
def embedded_model():
    from pyinfer.zoo import get_model

    model = get_model()
    assert model.path.exists(), f"the embedded model {model.path} is missing"
    return model
