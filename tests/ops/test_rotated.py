"""Rotated boxes: corners, enclosing boxes and exact rotated IoU against a slow polygon-clipping reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyinfer.ops.boxes import box_iou
from pyinfer.ops.rotated import (
    corners,
    enclosing_xyxy,
    intersection_area,
    iou_any,
    rotated_iou,
    rotated_iou_pairs,
    xyxy_to_cxcywhr,
)


def _shoelace(poly: list[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1])))


def _clip(subject: list[tuple[float, float]], clip: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: ``subject`` clipped by the convex polygon ``clip`` (any orientation)."""
    sign = 1.0 if sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(clip, clip[1:] + clip[:1])) > 0 else -1.0

    def side(p, a, b):
        return sign * ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))

    out = subject
    for a, b in zip(clip, clip[1:] + clip[:1]):
        inp, out = out, []
        for k, cur in enumerate(inp):
            prev = inp[k - 1]
            sc, sp = side(cur, a, b), side(prev, a, b)
            if sc >= 0:
                if sp < 0:
                    t = sp / (sp - sc)
                    out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
                out.append(cur)
            elif sp >= 0:
                t = sp / (sp - sc)
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
        if not out:
            return []
    return out


def _reference_iou(a: np.ndarray, b: np.ndarray) -> float:
    pa = [tuple(p) for p in corners(a[None])[0].tolist()]
    pb = [tuple(p) for p in corners(b[None])[0].tolist()]
    inter = _shoelace(_clip(pa, pb)) if pa and pb else 0.0
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack(
        [rng.uniform(0, 100, n), rng.uniform(0, 100, n), rng.uniform(2, 60, n), rng.uniform(2, 60, n),
         rng.uniform(-math.pi, math.pi, n)],
        axis=1,
    )  # fmt: skip


def test_corners_of_a_box_turned_a_quarter_turn_clockwise_on_screen():
    # A 4x2 box at the origin, +90 degrees: its right-hand end (x = +2) moves to the bottom (y = +2, y down).
    c = corners(np.array([[0.0, 0.0, 4.0, 2.0, math.pi / 2]]))[0]
    np.testing.assert_allclose(c, [[1, -2], [1, 2], [-1, 2], [-1, -2]], atol=1e-12)


def test_enclosing_box_of_a_rotated_box_touches_all_its_corners():
    boxes = _random_boxes(np.random.default_rng(0), 50)
    enc, c = enclosing_xyxy(boxes), corners(boxes)
    np.testing.assert_allclose(enc[:, 0], c[..., 0].min(axis=1), atol=1e-9)
    np.testing.assert_allclose(enc[:, 1], c[..., 1].min(axis=1), atol=1e-9)
    np.testing.assert_allclose(enc[:, 2], c[..., 0].max(axis=1), atol=1e-9)
    np.testing.assert_allclose(enc[:, 3], c[..., 1].max(axis=1), atol=1e-9)


def test_square_and_the_same_square_turned_45_degrees_have_iou_one_over_root_two():
    a = np.array([[50.0, 50.0, 20.0, 20.0, 0.0]])
    b = np.array([[50.0, 50.0, 20.0, 20.0, math.pi / 4]])
    assert rotated_iou(a, b)[0, 0] == pytest.approx(1 / math.sqrt(2), abs=1e-12)


@pytest.mark.parametrize("angle", [0.0, math.pi / 2, math.pi, -math.pi / 2])
def test_rotated_iou_equals_axis_aligned_iou_for_right_angles(angle):
    rng = np.random.default_rng(1)
    lt = rng.uniform(0, 100, (40, 2))
    xyxy = np.concatenate([lt, lt + rng.uniform(1, 50, (40, 2))], axis=1)
    boxes = xyxy_to_cxcywhr(xyxy)
    turned = boxes.copy()
    if abs(math.sin(angle)) > 0.5:  # a quarter turn swaps width and height of the same rectangle
        turned[:, [2, 3]] = turned[:, [3, 2]]
    turned[:, 4] = angle
    np.testing.assert_allclose(rotated_iou(boxes, turned), box_iou(xyxy, xyxy), atol=1e-9)


def test_rotated_iou_matches_polygon_clipping_on_random_boxes():
    rng = np.random.default_rng(2)
    a, b = _random_boxes(rng, 60), _random_boxes(rng, 50)
    got = rotated_iou(a, b)
    want = np.array([[_reference_iou(x, y) for y in b] for x in a])
    assert (want > 0).sum() > 100  # the sample really has overlapping pairs
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_nearly_identical_and_touching_boxes_stay_exact():
    base = np.array([30.0, 40.0, 20.0, 10.0, 0.3])
    shifted = base + np.array([1e-7, 0, 0, 0, 1e-9])
    touching = np.array([base[0] + 20 * math.cos(0.3), base[1] + 20 * math.sin(0.3), 20.0, 10.0, 0.3])
    got = rotated_iou_pairs(np.stack([base, base, base]), np.stack([base, shifted, touching]))
    assert got[0] == pytest.approx(1.0, abs=1e-12)
    assert got[1] == pytest.approx(1.0, abs=1e-6)
    assert got[2] == pytest.approx(0.0, abs=1e-9)


def test_contained_box_intersection_is_its_own_area():
    outer = np.array([[0.0, 0.0, 100.0, 100.0, 0.2]])
    inner = np.array([[1.0, -2.0, 10.0, 5.0, 1.1]])
    assert intersection_area(outer, inner)[0] == pytest.approx(50.0, rel=1e-12)


def test_empty_inputs_and_degenerate_boxes_give_zero_without_warnings():
    with np.errstate(all="raise"):
        assert rotated_iou(np.zeros((0, 5)), _random_boxes(np.random.default_rng(3), 4)).shape == (0, 4)
        zero = np.array([[10.0, 10.0, 0.0, 0.0, 0.5]])
        assert rotated_iou(zero, zero)[0, 0] == 0.0


def test_iou_any_uses_enclosing_boxes_when_not_rotated():
    a = np.array([[50.0, 50.0, 20.0, 20.0, math.pi / 4]])
    b = np.array([[50.0, 50.0, 20.0, 20.0, 0.0]])
    assert iou_any(a, b, rotated=False)[0, 0] == pytest.approx(0.5, abs=1e-12)  # 400 / (20 * sqrt 2) ** 2
    assert iou_any(a, b, rotated=True)[0, 0] == pytest.approx(1 / math.sqrt(2), abs=1e-12)


def test_bad_shapes_are_refused_with_the_shape_in_the_message():
    with pytest.raises(ValueError, match=r"expected \(N, 5\).*\(3, 4\)"):
        rotated_iou(np.zeros((3, 4)), np.zeros((1, 5)))


def test_min_iou_only_zeroes_pairs_below_it():
    rng = np.random.default_rng(5)
    a, b = _random_boxes(rng, 80), _random_boxes(rng, 70)
    full = rotated_iou(a, b)
    pruned = rotated_iou(a, b, min_iou=0.3)
    keep = full >= 0.3
    assert keep.sum() > 10
    np.testing.assert_array_equal(pruned[keep], full[keep])
    assert (pruned[~keep] <= full[~keep]).all() and (pruned[~keep] < 0.3).all()


@pytest.mark.parametrize("tilt", [0.0, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-7, 1e-5])
def test_shared_and_nearly_shared_edges_match_polygon_clipping(tilt):
    # Boxes shifted by whole half-widths along their own axis, with equal or integer sizes: many edges lie on
    # one line (or nearly, tilted by `tilt`), the case where intersection algorithms double-count or drop sides.
    rng = np.random.default_rng(6)
    n = 400
    a = np.column_stack([rng.uniform(0, 50, (n, 2)), rng.integers(1, 40, (n, 2)), rng.choice([0, 0.5, 1.3], n)])
    b = a.copy()
    shift = rng.integers(-3, 4, n) * a[:, 2] / 2
    b[:, 0] += shift * np.cos(a[:, 4])
    b[:, 1] += shift * np.sin(a[:, 4])
    b[:, 2:4] = np.where(rng.random((n, 2)) < 0.5, a[:, 2:4], rng.integers(1, 40, (n, 2)))
    b[:, 4] += tilt
    got = rotated_iou_pairs(a, b)
    want = np.array([_reference_iou(x, y) for x, y in zip(a, b)])
    assert (want > 0).sum() > n / 3
    # Shared edges cost up to ~1e-8 of IoU, edges a hair off parallel up to ~1e-7 (documented).
    np.testing.assert_allclose(got, want, atol=1e-8 if tilt == 0 else 2e-7)
