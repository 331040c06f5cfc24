"""Host frames from a recycling pool are page-locked in place and copied to the GPU without staging (issue #12).

Run on a machine with an NVIDIA GPU (CI has none: skipped there, and says why), on the prepared 1080p scene video
(see tests/gpu/test_cuda_memory.py) decoded by NVDEC into system memory. ``videoconvert`` allocates its RGB
output from a buffer pool, so its memories come back frame after frame: pyinfer registers each with the real CUDA
runtime at its second sight, and reads those frames by DMA (batch 1: in place; batch 4: gathered on the device).
The detections must be those of the staged path (pinning off) on the same frames, every frame once and in order.
The registration bookkeeping itself is tested on the CPU (tests/frames/test_pinning.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinfer._gi import Gst
from pyinfer.frames import pinning
from pyinfer.jsonl import read_jsonl
from pyinfer.meta import read_detections

ROOT = Path(__file__).resolve().parents[2]
VIDEO = Path(os.environ.get("PYINFER_GPU_VIDEO", ROOT / ".gpu-data" / "scene" / "video.mp4"))

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
if Gst.ElementFactory.find("nvh264dec") is None:
    pytest.skip("needs NVDEC (nvh264dec: an NVIDIA GPU and its driver)", allow_module_level=True)
if not VIDEO.exists():
    pytest.skip(f"GPU machine without its prepared 1080p scene video {VIDEO}", allow_module_level=True)

DECODE = f"filesrc location={VIDEO} ! qtdemux ! h264parse ! nvh264dec"

SOURCE = f"{DECODE} ! video/x-raw,format=NV12 ! videoconvert ! video/x-raw,format=RGB"


def _run(embedded_model, batch: int, knobs: str = "") -> tuple[list[int], list]:
    pipeline = Gst.parse_launch(
        f"{SOURCE} ! pyinfer model-engine={embedded_model.path} labels-file={embedded_model.labels_file} "
        f"device=cuda batch-size={batch} {knobs} ! appsink name=sink sync=false max-buffers=200"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    pts, dets = [], []
    try:
        while True:
            sample = sink.emit("try-pull-sample", 30 * Gst.SECOND)
            if sample is None:
                break
            pts.append(sample.get_buffer().pts)
            dets.append(read_detections(sample.get_buffer()))
        msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        assert msg is None, msg.parse_error()
        assert sink.get_property("eos")
    finally:
        pipeline.set_state(Gst.State.NULL)
    return pts, dets


@pytest.mark.parametrize(("batch", "knobs"), [(1, ""), (4, ""), (4, "cuda-graphs=true")])
def test_page_locked_pool_frames_give_the_staged_detections(embedded_model, monkeypatch, batch, knobs):
    pin = pinning.host_pinning()
    assert pin is not None, "torch's CUDA runtime was not found: host frames cannot be page-locked"
    before = pin.registered
    pts, pinned = _run(embedded_model, batch, knobs)
    assert pin.registered > before  # videoconvert's pool memories were page-locked
    frames = len(list(read_jsonl(VIDEO.with_name("truth.jsonl"))))
    assert len(pts) == frames and pts == sorted(pts) and len(set(pts)) == frames  # every frame once, in order
    monkeypatch.setattr(pinning, "_PINNING", None)  # pinning off: every frame staged by the copy threads
    monkeypatch.setattr(pinning, "_PINNING_TRIED", True)
    pts_staged, staged = _run(embedded_model, batch, knobs)
    assert pts_staged == pts
    assert sum(len(d) for d in pinned) > 1000  # the scene's objects were found
    for a, b in zip(pinned, staged, strict=True):
        assert a.class_id.tolist() == b.class_id.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
