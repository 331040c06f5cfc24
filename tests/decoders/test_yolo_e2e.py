"""YoloE2EDecoder: end-to-end rows [B, K, 6] (and rotated [B, K, 7]) against a slow reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyinfer.decoders.yolo_e2e import YoloE2EDecoder
from pyinfer.decoders.yolo_obb import enclosing_xyxy
from pyinfer.errors import DecodeError
from pyinfer.ops.letterbox import LetterboxGeometry


def make_rows(rng: np.random.Generator, b: int, k: int, nc: int, rotated: bool, *, sort: bool) -> np.ndarray:
    out = np.zeros((b, k, 7 if rotated else 6), np.float32)
    cx, cy = rng.uniform(-20, 340, (b, k)), rng.uniform(-20, 340, (b, k))
    w, h = rng.uniform(4, 150, (b, k)), rng.uniform(4, 150, (b, k))
    scores = ((rng.permutation(b * k).reshape(b, k) + 0.5) / (b * k)).astype(np.float32)  # distinct, off thresholds
    if sort:
        scores = -np.sort(-scores, axis=1)
    if rotated:
        out[..., :4] = np.stack([cx, cy, w, h], axis=-1)
        out[..., 6] = rng.uniform(-math.pi / 4, 3 * math.pi / 4, (b, k))
    else:
        out[..., :4] = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    out[..., 4] = scores
    out[..., 5] = rng.integers(nc, size=(b, k))
    return out


def reference(out: np.ndarray, geo: LetterboxGeometry, conf: float, max_det: int):
    gx, gy = geo.frame_w / geo.resized_w, geo.frame_h / geo.resized_h
    frames = []
    for rows in out.astype(np.float64):
        rows = rows[rows[:, 4] > conf]
        rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_det]
        if rows.shape[1] == 6:
            box = rows[:, :4].copy()
            box[:, 0::2] = np.clip((box[:, 0::2] - geo.pad_x) * gx, 0, geo.frame_w)
            box[:, 1::2] = np.clip((box[:, 1::2] - geo.pad_y) * gy, 0, geo.frame_h)
        else:
            box = rows[:, [0, 1, 2, 3, 6]].copy()
            box[:, 0] = (box[:, 0] - geo.pad_x) * gx
            box[:, 1] = (box[:, 1] - geo.pad_y) * gy
            box[:, 2] *= gx
            box[:, 3] *= gy
        frames.append((box, rows[:, 4], rows[:, 5].astype(int)))
    return frames


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize(
    ("b", "k", "nc", "frame", "conf", "max_det", "sort", "seed"),
    [
        (1, 300, 80, (640, 480), 0.25, 300, True, 0),
        (3, 300, 80, (641, 479), 0.5, 20, True, 1),  # max_det cuts
        (2, 100, 3, (300, 900), 0.1, 300, False, 2),  # unsorted rows
    ],
)
def test_e2e_rows_are_thresholded_capped_and_mapped_to_the_frame(b, k, nc, frame, conf, max_det, sort, seed, rotated):
    rng = np.random.default_rng(seed)
    out = make_rows(rng, b, k, nc, rotated, sort=sort)
    geo = LetterboxGeometry.compute(*frame, 320, 320)
    got = YoloE2EDecoder().decode(
        [torch.from_numpy(out)], geo, conf_threshold=conf, iou_threshold=0.01, max_detections=max_det
    )
    for f, (s, (box, score, cls)) in enumerate(zip(got.split(), reference(out, geo, conf, max_det))):
        assert np.all(got.frame[s] == f)
        np.testing.assert_array_equal(got.confidence[s], score.astype(np.float32))
        np.testing.assert_array_equal(got.class_id[s], cls)
        if rotated:
            np.testing.assert_allclose(got.cxcywhr[s], box, rtol=1e-6, atol=1e-3)
            want = enclosing_xyxy(torch.from_numpy(box), geo.frame_w, geo.frame_h).numpy()
            np.testing.assert_allclose(got.xyxy[s], want, rtol=1e-6, atol=1e-3)
        else:
            assert got.cxcywhr is None
            np.testing.assert_allclose(got.xyxy[s], box, rtol=1e-6, atol=1e-3)
        assert 0 < s.stop - s.start <= max_det
    # iou_threshold 0.01 would have suppressed most overlapping rows: the decoder must not run NMS.
    assert len(got.confidence) == sum(min(max_det, int((o[:, 4] > conf).sum())) for o in out)


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (torch.zeros(1, 300, 5), r"\[B, K, 6\].*\[B, K, 7\].*got \[1, 300, 5\]"),
        (torch.zeros(1, 300, 84), r"got \[1, 300, 84\]"),
        (torch.zeros(300, 6), r"got \[300, 6\]"),
        (torch.zeros(1, 300, 6, dtype=torch.int64), r"floating-point"),
    ],
)
def test_e2e_outputs_that_do_not_fit_raise_decode_error(tensor, match):
    with pytest.raises(DecodeError, match=match):
        YoloE2EDecoder().num_classes([tensor])


def test_e2e_rows_carry_no_class_count():
    assert YoloE2EDecoder().num_classes([torch.zeros(1, 300, 6)]) is None
