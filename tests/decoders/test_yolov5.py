"""YoloV5Decoder: objectness folded into the class scores, then the YOLOv8 path (checked against its reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decoders.test_yolo import _assert_frame_matches, make_outputs, reference_decode
from pyinfer.decoders.yolov5 import YoloV5Decoder
from pyinfer.errors import DecodeError
from pyinfer.ops.letterbox import LetterboxGeometry


def to_v5(rng: np.random.Generator, v8: np.ndarray) -> np.ndarray:
    """(B, 4 + nc, N) YOLOv8 layout -> (B, N, 5 + nc): objectness >= every class score, cls = score / obj."""
    boxes, scores = v8[:, :4], v8[:, 4:]
    obj = np.maximum(scores.max(axis=1, keepdims=True), 1e-3) / rng.uniform(0.5, 1.0, (v8.shape[0], 1, v8.shape[2]))
    obj = np.minimum(obj, 1.0).astype(np.float32)
    cls = (scores / obj).astype(np.float32)
    return np.concatenate([boxes, obj, cls], axis=1).transpose(0, 2, 1).copy()


@pytest.mark.parametrize(
    ("b", "nc", "n", "frame", "conf", "iou", "max_det", "seed"),
    [
        (1, 1, 200, (641, 479), (0.25), 0.45, 300, 0),
        (3, 80, 2000, (300, 900), 0.1, 0.5, 5, 2),
        (3, 3, 1000, (1920, 1080), 0.25, 0.7, 300, 1),
    ],
)
def test_v5_scores_are_objectness_times_class_probability(b, nc, n, frame, conf, iou, max_det, seed):
    rng = np.random.default_rng(seed)
    v5 = to_v5(rng, make_outputs(rng, b, nc, n, 320, 320, conf, iou))
    # The reference decodes the equivalent YOLOv8 layout: boxes and obj * cls, multiplied in float32 as torch does.
    v8 = np.concatenate([v5[..., :4], v5[..., 5:] * v5[..., 4:5]], axis=2).transpose(0, 2, 1).copy()
    geo = LetterboxGeometry.compute(*frame, 320, 320)
    ref = reference_decode(v8, geo, conf, iou, max_det)
    got = YoloV5Decoder().decode(
        [torch.from_numpy(v5)], geo, conf_threshold=conf, iou_threshold=iou, max_detections=max_det
    )
    for f, (s, r) in enumerate(zip(got.split(), ref)):
        assert r.margin > 1e-3, f"frame {f}: seeded data too close to the IoU threshold"
        _assert_frame_matches(got.xyxy[s], got.confidence[s], got.class_id[s], r, f"seed {seed} frame {f}")
    assert sum(len(r.score) for r in ref) > 0


def test_a_confident_class_with_low_objectness_is_dropped():
    out = torch.zeros(1, 2, 7)  # two rows, two classes
    out[0, :, :4] = torch.tensor([100.0, 100.0, 50.0, 50.0])
    out[0, 0, 4:] = torch.tensor([0.2, 0.0, 0.99])  # obj 0.2: score 0.198
    out[0, 1, 4:] = torch.tensor([0.9, 0.5, 0.1])  # obj 0.9: score 0.45, class 0
    got = YoloV5Decoder().decode(
        [out], LetterboxGeometry.compute(320, 320, 320, 320), conf_threshold=0.25, iou_threshold=0.5, max_detections=9
    )
    assert got.class_id.tolist() == [0]
    assert got.confidence.tolist() == pytest.approx([0.45])


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (torch.zeros(1, 6300, 5), r"\[B, N, 5\+nc\].*got \[1, 6300, 5\]"),
        (torch.zeros(6300, 85), r"\[B, N, 5\+nc\].*got \[6300, 85\]"),
        (torch.zeros(1, 6300, 85, dtype=torch.int32), r"floating-point"),
    ],
)
def test_v5_outputs_that_do_not_fit_raise_decode_error(tensor, match):
    with pytest.raises(DecodeError, match=match):
        YoloV5Decoder().num_classes([tensor])


def test_v5_class_count_leaves_out_box_and_objectness():
    assert YoloV5Decoder().num_classes([torch.zeros(1, 6300, 85)]) == 80
