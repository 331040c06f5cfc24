"""The embedded trained detector through the real element, on scenes it has never seen."""

from __future__ import annotations

import numpy as np
import pytest

from pyinfer._gi import Gst
from pyinfer.evaluate import evaluate
from pyinfer.jsonl import frame_record
from pyinfer.scene.video import render_frames, truth_record
from support import push_frames, run


def _detect(model, frames: list[np.ndarray], fmt: str = "RGB", extra: str = "") -> list:
    pipeline = Gst.parse_launch(
        f"appsrc name=src ! pyinfer model-engine={model.path} labels-file={model.labels_file} "
        f"device=cpu {extra} ! appsink name=sink"
    )
    res = run(pipeline, timeout_s=240, feed=lambda p: push_frames(p.get_by_name("src"), frames, fmt=fmt))
    assert res.ok, res.error
    assert len(res.detections) == len(frames)
    return res.detections


@pytest.mark.parametrize(("seed", "width", "height", "batch"), [(9001, 1024, 576, 1), (31337, 720, 720, 4)])
def test_held_out_sequence_precision_and_recall_at_least_0_9(embedded_model, seed, width, height, batch):
    scene = list(render_frames(seed, width, height, 40))
    frames = [img for img, _ in scene]
    dets = _detect(embedded_model, frames, extra=f"batch-size={batch}")
    preds = [frame_record(i, None, width, height, d) for i, d in enumerate(dets)]
    truth = [truth_record(i, 0, width, height, objs) for i, (_, objs) in enumerate(scene)]
    result = evaluate(preds, truth, iou_threshold=0.5)
    assert result.truth_objects > 150
    assert result.precision >= 0.9, result
    assert result.recall >= 0.9, result
    assert result.mean_iou >= 0.8, result


def test_channel_order_and_padded_rows_give_the_same_detections(embedded_model):
    """641x479: RGB rows are padded to 1924 bytes; BGRx carries a fourth byte. Same pixels, same boxes."""
    frames = [img for img, _ in render_frames(77, 641, 479, 3)]
    rgb = _detect(embedded_model, frames, "RGB")
    bgrx = _detect(
        embedded_model, [np.dstack([f[..., ::-1], np.full(f.shape[:2], 255, np.uint8)]) for f in frames], "BGRx"
    )
    assert sum(len(d) for d in rgb) > 5
    for a, b in zip(rgb, bgrx, strict=True):
        assert a.class_id.tolist() == b.class_id.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)


def test_element_matches_the_engine_on_the_same_frames(embedded_model):
    import torch

    from pyinfer.engine import Engine, EngineConfig

    frames = [img for img, _ in render_frames(5, 800, 600, 2)]
    via_element = _detect(embedded_model, frames)
    engine = Engine.build(EngineConfig(model=str(embedded_model.path), device="cpu"))
    direct = engine.infer(torch.from_numpy(np.stack(frames)))
    for a, b in zip(via_element, direct, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-4)
        assert a.class_id.tolist() == b.class_id.tolist()
