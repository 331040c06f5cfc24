"""pyinfer's decoders and their pieces against ultralytics' own functions, on synthetic head outputs.

The model-level comparisons are in test_ultralytics.py; these pin the arithmetic: probiou, rotated fast NMS,
and each decoder against ultralytics' ``non_max_suppression`` + ``scale_boxes`` on the same raw outputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyinfer.decoders import YoloE2EDecoder, YoloObbDecoder, YoloV8Decoder
from pyinfer.decoders.yolo_obb import probiou, rotated_nms
from pyinfer.ops.letterbox import LetterboxGeometry

pytestmark = pytest.mark.reference


def rboxes(rng: np.random.Generator, n: int, size: float = 300.0) -> torch.Tensor:
    """(n, 5) float32 rotated boxes in clusters (many overlaps), angles in ultralytics' [-pi/4, 3pi/4)."""
    centres = rng.uniform(20, size - 20, (max(1, n // 8), 2))
    xy = centres[rng.integers(len(centres), size=n)] + rng.normal(0, 5, (n, 2))
    wh = rng.uniform(8, 80, (n, 2))
    r = rng.uniform(-math.pi / 4, 3 * math.pi / 4, (n, 1))
    return torch.from_numpy(np.concatenate([xy, wh, r], axis=1).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probiou_is_ultralytics_batch_probiou(seed):
    from ultralytics.utils.metrics import batch_probiou

    rng = np.random.default_rng(seed)
    a, b = rboxes(rng, 64), rboxes(rng, 48)
    torch.testing.assert_close(probiou(a, b), batch_probiou(a, b), rtol=0, atol=1e-6)
    assert (probiou(a, b) > 0.3).any()


@pytest.mark.parametrize(("n", "thr", "seed"), [(50, 0.5, 0), (400, 0.7, 1), (120, 0.3, 0)])
def test_rotated_nms_keeps_what_ultralytics_fast_nms_keeps(n, thr, seed):
    from ultralytics.utils.metrics import batch_probiou
    from ultralytics.utils.nms import TorchNMS

    rng = np.random.default_rng(seed)
    boxes = rboxes(rng, n)
    scores = torch.from_numpy(rng.permutation(n).astype(np.float32) / n + 0.01)
    sim = batch_probiou(boxes, boxes)
    assert ((sim - thr).abs() > 1e-4).all(), "seeded data too close to the threshold"
    want = TorchNMS.fast_nms(boxes, scores, thr, iou_func=batch_probiou)
    got = rotated_nms(boxes, scores, torch.zeros(n, dtype=torch.int64), thr)
    assert got.tolist() == want.tolist()
    assert len(got) < n


def _raw_outputs(rng: np.random.Generator, b: int, nc: int, n: int, *, angle: bool) -> torch.Tensor:
    """(B, 4 + nc [+ 1], N): boxes in a 320x256 input, scores with one hot class on half the anchors."""
    rows = 4 + nc + int(angle)
    out = np.zeros((b, rows, n), np.float32)
    for f in range(b):
        r = rboxes(rng, n, size=256).numpy()
        out[f, :4] = r[:, :4].T
        if angle:
            out[f, -1] = r[:, 4]
        out[f, 4 : 4 + nc] = rng.uniform(0, 0.2, (nc, n))
        hot = np.flatnonzero(rng.random(n) < 0.5)
        out[f, 4 + rng.integers(nc, size=len(hot)), hot] = rng.uniform(0.3, 1.0, len(hot))
    return torch.from_numpy(out)


# nc kept small: ultralytics separates classes by adding class * 7680 px to float32 boxes, which for high
# class ids rounds coordinates enough to flip near-threshold decisions (pyinfer's float64 offsets do not).
@pytest.mark.parametrize(
    ("b", "nc", "frame", "seed"), [(1, 3, (640, 512), 0), (3, 2, (1280, 720), 1), (2, 4, (333, 500), 2)]
)
@pytest.mark.parametrize("kind", ["yolov8", "yolo-obb"])
def test_decoders_agree_with_ultralytics_nms_and_scale_boxes(kind, b, nc, frame, seed):
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    rotated = kind == "yolo-obb"
    rng = np.random.default_rng(seed)
    out = _raw_outputs(rng, b, nc, 400, angle=rotated)
    conf, iou, max_det = 0.25, 0.5, 50
    geo = LetterboxGeometry.compute(*frame, 320, 256)
    decoder = YoloObbDecoder() if rotated else YoloV8Decoder()
    got = decoder.decode([out], geo, conf_threshold=conf, iou_threshold=iou, max_detections=max_det)
    ref = non_max_suppression(out.clone(), conf, iou, max_det=max_det, nc=nc, rotated=rotated)
    for f, (s, r) in enumerate(zip(got.split(), ref)):
        if rotated:  # rows: x, y, w, h, conf, class, angle
            boxes = scale_boxes((256, 320), r[:, :4].clone(), (frame[1], frame[0]), xywh=True)
            np.testing.assert_allclose(got.cxcywhr[s][:, :4], boxes.numpy(), rtol=1e-5, atol=1e-3)
            np.testing.assert_allclose(got.cxcywhr[s][:, 4], r[:, 6].numpy(), atol=1e-6)
        else:
            boxes = scale_boxes((256, 320), r[:, :4].clone(), (frame[1], frame[0]))
            np.testing.assert_allclose(got.xyxy[s], boxes.numpy(), rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(got.confidence[s], r[:, 4].numpy(), err_msg=f"frame {f}")
        np.testing.assert_array_equal(got.class_id[s], r[:, 5].numpy().astype(np.int32))
        assert 0 < s.stop - s.start <= max_det


@pytest.mark.parametrize("rows", [6, 7])
def test_end_to_end_rows_agree_with_ultralytics_end2end_filtering(rows):
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(rows)
    out = np.zeros((2, 300, rows), np.float32)
    out[..., :2] = rng.uniform(0, 300, (2, 300, 2))
    out[..., 2:4] = out[..., :2] + rng.uniform(5, 80, (2, 300, 2))
    out[..., 4] = -np.sort(-rng.uniform(0, 1, (2, 300)), axis=1)  # the head's rows come best first
    out[..., 5] = rng.integers(80, size=(2, 300))
    if rows == 7:
        out[..., 6] = rng.uniform(-math.pi / 4, 3 * math.pi / 4, (2, 300))
    out = torch.from_numpy(out)
    geo = LetterboxGeometry.compute(1280, 720, 320, 320)
    got = YoloE2EDecoder().decode([out], geo, conf_threshold=0.4, iou_threshold=0.5, max_detections=100)
    ref = non_max_suppression(out.clone(), 0.4, 0.5, max_det=100, end2end=True)
    for s, r in zip(got.split(), ref):
        np.testing.assert_array_equal(got.confidence[s], r[:, 4].numpy())
        np.testing.assert_array_equal(got.class_id[s], r[:, 5].numpy().astype(np.int32))
        boxes = scale_boxes((320, 320), r[:, :4].clone(), (720, 1280), xywh=rows == 7)
        np.testing.assert_allclose((got.cxcywhr[s][:, :4] if rows == 7 else got.xyxy[s]), boxes.numpy(), atol=1e-3)
        assert s.stop - s.start == min(100, int((r[:, 4] > 0.4).sum()))
