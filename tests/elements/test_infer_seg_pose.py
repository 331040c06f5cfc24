"""Segmentation and pose models inside a pipeline (issue #15): pyinfer picks yolo-seg / yolo-pose and writes their
boxes as the engine decodes them, batched, every buffer out once and in order.

The models are ultralytics' YOLOv8n-seg and YOLOv8n-pose built from yaml with seeded random weights (calibrated
as tests/reference does), exported to ONNX. Masks and keypoints are not in the metadata yet (docs/decoders.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinfer._gi import Gst
from pyinfer.engine import Engine, EngineConfig
from reference.ultra import OFFLINE_ENV, bgr_frames, box_iou, build
from support import push_frames

FRAMES = 5


@pytest.fixture(scope="module")
def offline():
    saved = {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _export(cfg: str, frames_bgr: np.ndarray, out: Path) -> str:
    yolo = build(cfg, frames_bgr, (256, 320))
    cwd = os.getcwd()
    os.chdir(out)
    try:
        return str(Path(yolo.export(format="onnx", imgsz=(256, 320), dynamic=True, simplify=False)).resolve())
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(("cfg", "decoder"), [("yolov8n-seg.yaml", "yolo-seg"), ("yolov8n-pose.yaml", "yolo-pose")])
def test_a_seg_or_pose_model_runs_in_the_element_with_the_engines_boxes(offline, tmp_path, run_pipeline, cfg, decoder):
    bgr = bgr_frames(640, 480, FRAMES, block=2)
    model = _export(cfg, bgr, tmp_path)
    rgb = [np.ascontiguousarray(f[..., ::-1]) for f in bgr]
    pipeline = Gst.parse_launch(
        f"appsrc name=src ! pyinfer name=infer model-engine={model} device=cpu batch-size=2 ! appsink name=sink"
    )
    res = run_pipeline(pipeline, feed=lambda p: push_frames(p.get_by_name("src"), rgb))
    assert res.ok, (res.error, res.debug)
    assert res.pts == [i * Gst.SECOND // 30 for i in range(FRAMES)]
    engine = Engine.build(EngineConfig(model=model, device="cpu"))
    assert engine.decoder_choice.name == decoder
    want = engine.infer(torch.from_numpy(np.stack(rgb)), channels="RGB")
    total = 0
    for got, ref in zip(res.detections, want):
        assert len(got) == len(ref)
        if len(ref):
            iou = box_iou(got.xyxy, ref.xyxy)
            assert (iou.max(axis=1) > 0.999).all()
            assert sorted(got.class_id.tolist()) == sorted(ref.class_id.tolist())
        assert (ref.masks is not None) == (decoder == "yolo-seg")
        assert (ref.keypoints is not None) == (decoder == "yolo-pose")
        total += len(ref)
    assert total >= FRAMES, "too few detections to compare"
