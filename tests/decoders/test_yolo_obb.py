"""Rotated boxes: probiou, ultralytics-style fast NMS in blocks, the OBB decoder, against slow references.

(tests/reference/test_ultralytics_ops.py checks the same functions against ultralytics' own code.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyinfer.decoders import yolo_obb
from pyinfer.decoders.yolo_obb import YoloObbDecoder, enclosing_xyxy, probiou, rotated_nms
from pyinfer.errors import DecodeError
from pyinfer.ops.letterbox import LetterboxGeometry

# --------------------------------------------------------------------------------------------------------------
# Slow references: one pair at a time, plain floats.


def ref_probiou(b1, b2, eps: float = 1e-7) -> float:
    """probiou of two (cx, cy, w, h, r) boxes: 1 - Hellinger distance of their Gaussians (arXiv 2106.06072)."""

    def cov(b):
        a, bb = b[2] ** 2 / 12, b[3] ** 2 / 12
        c, s = math.cos(b[4]), math.sin(b[4])
        return a * c * c + bb * s * s, a * s * s + bb * c * c, (a - bb) * c * s

    a1, b1_, c1 = cov(b1)
    a2, b2_, c2 = cov(b2)
    x1, y1, x2, y2 = b1[0], b1[1], b2[0], b2[1]
    den = (a1 + a2) * (b1_ + b2_) - (c1 + c2) ** 2
    t1 = ((a1 + a2) * (y1 - y2) ** 2 + (b1_ + b2_) * (x1 - x2) ** 2) / (den + eps) * 0.25
    t2 = ((c1 + c2) * (x2 - x1) * (y1 - y2)) / (den + eps) * 0.5
    det1, det2 = max(a1 * b1_ - c1**2, 0.0), max(a2 * b2_ - c2**2, 0.0)
    t3 = 0.5 * math.log(den / (4 * math.sqrt(det1 * det2) + eps) + eps)
    bd = min(max(t1 + t2 + t3, eps), 100.0)
    return 1 - math.sqrt(1 - math.exp(-bd) + eps)


def ref_fast_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, thr: float) -> tuple[list[int], float]:
    """Fast NMS: drop a box when any better box of its group (dropped or not) has probiou > thr.

    Returns the kept indices (best first) and the smallest |probiou - thr| seen (data too close to call if tiny).
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept, margin = [], math.inf
    for pos, i in enumerate(order):
        drop = False
        for j in order[:pos]:
            if groups[j] == groups[i]:
                v = ref_probiou(boxes[j], boxes[i])
                margin = min(margin, abs(v - thr))
                drop |= v > thr
        if not drop:
            kept.append(i)
    return kept, margin


def random_rboxes(rng: np.random.Generator, n: int, size: float = 200.0) -> np.ndarray:
    """(n, 5) rotated boxes in clusters, so that many overlap."""
    centres = rng.uniform(0, size, (max(1, n // 6), 2))
    pick = rng.integers(len(centres), size=n)
    xy = centres[pick] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(8, 60, (n, 2))
    r = rng.uniform(-math.pi / 4, 3 * math.pi / 4, (n, 1))
    return np.concatenate([xy, wh, r], axis=1)


# --------------------------------------------------------------------------------------------------------------
# probiou


def test_probiou_matches_the_slow_reference_pair_by_pair():
    rng = np.random.default_rng(0)
    a = random_rboxes(rng, 40)
    b = np.concatenate([a[:20] + rng.normal(0, [4, 4, 3, 3, 0.2], (20, 5)), random_rboxes(rng, 10)])
    got = probiou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.array([[ref_probiou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert 0.05 < (want > 0.1).mean() < 0.95, "the boxes should give a mix of overlaps"


@pytest.mark.parametrize(
    ("box", "other", "expected"),
    [
        ((50, 50, 20, 10, 0.3), (50, 50, 20, 10, 0.3), 1.0),  # identical
        ((50, 50, 20, 10, 0.3), (50, 50, 20, 10, 0.3 + math.pi), 1.0),  # a half turn is the same box
        ((50, 50, 20, 10, 0.3), (50, 50, 10, 20, 0.3 + math.pi / 2), 1.0),  # w/h swapped, quarter turn
        ((50, 50, 20, 10, 0.0), (500, 50, 20, 10, 0.0), 0.0),  # far apart
    ],
)
def test_probiou_of_equivalent_and_distant_boxes(box, other, expected):
    got = probiou(torch.tensor([box], dtype=torch.float64), torch.tensor([other], dtype=torch.float64)).item()
    assert got == pytest.approx(expected, abs=1e-3)


def test_probiou_falls_as_a_box_moves_away_and_is_symmetric():
    base = torch.tensor([[100.0, 100.0, 40.0, 20.0, 0.5]], dtype=torch.float64)
    moved = base.repeat(20, 1)
    moved[:, 0] += torch.arange(20, dtype=torch.float64) * 3
    row = probiou(base, moved)[0]
    assert torch.all(row[1:] < row[:-1])
    torch.testing.assert_close(probiou(moved, base)[:, 0], row)


# --------------------------------------------------------------------------------------------------------------
# Fast NMS


def test_a_suppressed_box_still_suppresses_as_ultralytics_fast_nms_does():
    # A overlaps B, B overlaps C, A and C barely touch: greedy NMS would keep A and C; fast NMS keeps A only.
    boxes = torch.tensor(
        [[100, 100, 40, 40, 0.0], [112, 100, 40, 40, 0.0], [124, 100, 40, 40, 0.0]], dtype=torch.float64
    )
    sim = probiou(boxes, boxes)
    assert sim[0, 1] > 0.5 and sim[1, 2] > 0.5 and sim[0, 2] < 0.5
    keep = rotated_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.int64), 0.5)
    assert keep.tolist() == [0]


@pytest.mark.parametrize(
    ("n", "groups", "thr", "seed"), [(60, 1, 0.5, 0), (200, 4, 0.3, 1), (300, 7, 0.7, 2), (1, 1, 0.5, 3)]
)
@pytest.mark.parametrize("small_blocks", [False, True])
def test_rotated_nms_matches_the_slow_reference(monkeypatch, n, groups, thr, seed, small_blocks):
    if small_blocks:  # many column blocks and row chunks, crossing group boundaries
        monkeypatch.setattr(yolo_obb, "BLOCK_COLUMNS", 7)
        monkeypatch.setattr(yolo_obb, "BLOCK_ELEMENTS", 30)
    rng = np.random.default_rng(seed)
    boxes = random_rboxes(rng, n)
    scores = rng.permutation(n).astype(np.float64) / n + 0.001  # distinct
    grp = rng.integers(groups, size=n)
    want, margin = ref_fast_nms(boxes, scores, grp, thr)
    assert margin > 1e-6, "seeded data too close to the threshold to call"
    got = rotated_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(grp), thr)
    assert got.tolist() == want
    if n > 1:
        assert len(want) < n, "NMS had nothing to do"


def test_rotated_nms_of_nothing_is_empty():
    got = rotated_nms(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert got.shape == (0,) and got.dtype == torch.int64


# --------------------------------------------------------------------------------------------------------------
# Enclosing boxes and the decoder


@pytest.mark.parametrize("angle", [0.0, 0.3, math.pi / 4, math.pi / 2, 2.5, -0.7])
def test_enclosing_box_is_the_min_max_of_the_corners_clipped_to_the_frame(angle):
    r = torch.tensor([[60.0, 40.0, 80.0, 30.0, angle], [5.0, 5.0, 40.0, 10.0, angle]], dtype=torch.float64)
    got = enclosing_xyxy(r, 100, 70).numpy()
    for row, box in zip(r.numpy(), got):
        cx, cy, w, h, a = row
        c, s = math.cos(a), math.sin(a)
        pts = [(cx + x * c - y * s, cy + x * s + y * c) for x in (-w / 2, w / 2) for y in (-h / 2, h / 2)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        want = [max(min(xs), 0), max(min(ys), 0), min(max(xs), 100), min(max(ys), 70)]
        np.testing.assert_allclose(box, want, atol=1e-9)


def make_obb_outputs(rng, b: int, nc: int, n: int, in_w: int, in_h: int, conf: float) -> np.ndarray:
    """(B, 4 + nc + 1, N): clustered rotated boxes, most above ``conf`` in one class, background below."""
    out = np.zeros((b, 4 + nc + 1, n), np.float32)
    for f in range(b):
        boxes = random_rboxes(rng, n, size=min(in_w, in_h))
        out[f, :4] = boxes[:, :4].T
        out[f, -1] = boxes[:, 4]
        out[f, 4 : 4 + nc] = rng.uniform(0, conf * 0.9, (nc, n))
        hot = rng.random(n) < 0.5
        cls = rng.integers(nc, size=n)
        out[f, 4 + cls[hot], np.flatnonzero(hot)] = rng.uniform(conf + 0.01, 1.0, hot.sum())
    return out


def ref_obb_decode(out: np.ndarray, geo: LetterboxGeometry, conf: float, thr: float, max_det: int):
    frames = []
    for pred in out.astype(np.float64):
        nc = pred.shape[0] - 5
        scores, cls = pred[4 : 4 + nc].max(axis=0), pred[4 : 4 + nc].argmax(axis=0)
        sel = np.flatnonzero(scores > conf)
        boxes = np.concatenate([pred[:4, sel].T, pred[-1:, sel].T], axis=1)
        kept, margin = ref_fast_nms(boxes, scores[sel], cls[sel], thr)
        kept = kept[:max_det]
        r = boxes[kept].copy()
        r[:, 0] = (r[:, 0] - geo.pad_x) * geo.frame_w / geo.resized_w
        r[:, 1] = (r[:, 1] - geo.pad_y) * geo.frame_h / geo.resized_h
        r[:, 2] *= geo.frame_w / geo.resized_w
        r[:, 3] *= geo.frame_h / geo.resized_h
        frames.append((r, scores[sel][kept], cls[sel][kept], margin))
    return frames


@pytest.mark.parametrize(
    ("b", "nc", "n", "frame", "conf", "thr", "max_det", "seed"),
    [
        (1, 1, 80, (640, 480), 0.25, 0.5, 300, 0),
        (3, 4, 150, (641, 479), 0.3, 0.3, 300, 1),
        (2, 15, 200, (300, 900), 0.2, 0.7, 5, 2),
    ],
)
def test_obb_decoder_matches_the_reference_threshold_nms_cap_and_unletterbox(b, nc, n, frame, conf, thr, max_det, seed):
    rng = np.random.default_rng(seed)
    out = make_obb_outputs(rng, b, nc, n, 320, 320, conf)
    geo = LetterboxGeometry.compute(*frame, 320, 320)
    ref = ref_obb_decode(out, geo, conf, thr, max_det)
    got = YoloObbDecoder().decode(
        [torch.from_numpy(out)], geo, conf_threshold=conf, iou_threshold=thr, max_detections=max_det
    )
    assert got.cxcywhr is not None and got.cxcywhr.dtype == np.float32
    for f, (s, (r, score, cls, margin)) in enumerate(zip(got.split(), ref)):
        assert margin > 1e-5, f"frame {f}: seeded data too close to the threshold"
        assert got.confidence[s].tolist() == pytest.approx(score.astype(np.float32).tolist())
        assert got.class_id[s].tolist() == cls.tolist()
        np.testing.assert_allclose(got.cxcywhr[s], r, rtol=1e-5, atol=1e-3)
        want_xyxy = enclosing_xyxy(torch.from_numpy(r), geo.frame_w, geo.frame_h).numpy()
        np.testing.assert_allclose(got.xyxy[s], want_xyxy, rtol=1e-5, atol=1e-3)
        assert np.all(got.frame[s] == f)
    assert sum(len(r[0]) for r in ref) < int((out[:, 4:-1].max(axis=1) > conf).sum()), "NMS had nothing to do"


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (torch.zeros(1, 5, 100), r"\[B, 4\+nc\+1, N\].*got \[1, 5, 100\]"),  # box + angle, no class
        (torch.zeros(20, 100), r"\[B, 4\+nc\+1, N\].*got \[20, 100\]"),
        (torch.zeros(1, 20, 100, dtype=torch.int64), r"floating-point.*torch\.int64"),
    ],
)
def test_obb_outputs_that_do_not_fit_raise_decode_error(tensor, match):
    with pytest.raises(DecodeError, match=match):
        YoloObbDecoder().num_classes([tensor])


def test_obb_class_count_leaves_out_the_angle_row():
    assert YoloObbDecoder().num_classes([torch.zeros(2, 20, 100)]) == 15
