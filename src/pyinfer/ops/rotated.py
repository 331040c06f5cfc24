"""Rotated boxes in NumPy: corners, enclosing boxes and exact pairwise rotated IoU.

A rotated box is ``(cx, cy, w, h, angle_rad)``: centre, width and height in pixels, and the angle in radians,
clockwise in image coordinates (y down) about the centre, as in pyinfer's metadata contract.

The intersection of two rotated rectangles is a convex polygon whose vertices are the corners of each box that
lie inside the other plus the crossings of their edges. All of them are found at once for every pair (4 + 4 +
16 candidate points), sorted by angle around their mean and summed with the shoelace formula: exact up to
float64 rounding, and vectorised over pairs. Pairwise IoU first keeps only the pairs whose enclosing boxes
overlap, so sparse scenes (a tracker's typical cost matrix) cost little more than axis-aligned IoU.
"""

from __future__ import annotations

import numpy as np

from pyinfer.ops.boxes import box_iou

# Unit-square corner offsets, in order around the box (clockwise on screen for angle 0).
_UNIT_CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(boxes, np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 5)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"{name}: expected (N, 5) boxes cx, cy, w, h, angle_rad, got shape {arr.shape}")
    return arr


def corners(cxcywhr: np.ndarray) -> np.ndarray:
    """The four corners of each rotated box.

    Args:
        cxcywhr: (N, 5) rotated boxes.

    Returns:
        (N, 4, 2) float64 corner coordinates (x, y), in order around the box.
    """
    b = _as_boxes(cxcywhr, "cxcywhr")
    cos, sin = np.cos(b[:, 4]), np.sin(b[:, 4])
    dx = _UNIT_CORNERS[None, :, 0] * b[:, 2:3]  # (N, 4) offsets along the box's own axes
    dy = _UNIT_CORNERS[None, :, 1] * b[:, 3:4]
    # Rotation by +angle in y-down coordinates turns clockwise on screen.
    x = b[:, 0:1] + dx * cos[:, None] - dy * sin[:, None]
    y = b[:, 1:2] + dx * sin[:, None] + dy * cos[:, None]
    return np.stack([x, y], axis=-1)


def enclosing_xyxy(cxcywhr: np.ndarray) -> np.ndarray:
    """(N, 4) float64 axis-aligned boxes (left, top, right, bottom) enclosing the rotated boxes."""
    b = _as_boxes(cxcywhr, "cxcywhr")
    cos, sin = np.abs(np.cos(b[:, 4])), np.abs(np.sin(b[:, 4]))
    ex = 0.5 * (b[:, 2] * cos + b[:, 3] * sin)
    ey = 0.5 * (b[:, 2] * sin + b[:, 3] * cos)
    return np.stack([b[:, 0] - ex, b[:, 1] - ey, b[:, 0] + ex, b[:, 1] + ey], axis=1)


def xyxy_to_cxcywhr(xyxy: np.ndarray) -> np.ndarray:
    """(N, 5) float64 rotated boxes at angle 0 for (N, 4) axis-aligned boxes."""
    a = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.stack(
        [(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2, a[:, 2] - a[:, 0], a[:, 3] - a[:, 1], np.zeros(len(a))],
        axis=1,
    )


_NEXT = [1, 2, 3, 0]  # each corner's successor around the box


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P, K) bool: point k of pair p lies in (or on the edge of) rotated box p."""
    rel = points - boxes[:, None, :2]
    cos, sin = np.cos(boxes[:, 4])[:, None], np.sin(boxes[:, 4])[:, None]
    u = rel[..., 0] * cos + rel[..., 1] * sin  # coordinates along the box's own axes
    v = rel[..., 1] * cos - rel[..., 0] * sin
    # Points on an edge count as inside: corners shared by both boxes must be kept. The tolerance is relative
    # to the box size, so it is far below a pixel and only absorbs rounding.
    half = np.abs(boxes[:, 2:4]) / 2 * (1 + 1e-12) + 1e-9
    return (np.abs(u) <= half[:, :1]) & (np.abs(v) <= half[:, 1:])


def _intersection(a: np.ndarray, b: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """(P,) intersection areas of paired boxes (P, 5) with their corners (P, 4, 2)."""
    p = len(a)
    # Edge crossings: segment i of A is ca[i] + t * ra[i], segment j of B is cb[j] + u * rb[j].
    ra = ca[:, _NEXT] - ca
    rb = cb[:, _NEXT] - cb
    denom = _cross(ra[:, :, None], rb[:, None, :])  # (P, 4, 4)
    qp = cb[:, None, :, :] - ca[:, :, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):  # parallel edges: inf/nan, which every test below fails
        t = _cross(qp, rb[:, None, :]) / denom
        u = _cross(qp, ra[:, :, None]) / denom
    hit = (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    crossings = ca[:, :, None, :] + np.where(hit, t, 0.0)[..., None] * ra[:, :, None, :]  # (P, 4, 4, 2)
    points = np.concatenate([ca, cb, crossings.reshape(p, 16, 2)], axis=1)  # (P, 24, 2)
    valid = np.concatenate([_inside(ca, b), _inside(cb, a), hit.reshape(p, 16)], axis=1)
    count = valid.sum(axis=1)
    # All valid points are vertices of the convex intersection: order them by angle around their mean
    # (a pseudo-angle, monotonic in the true one and cheaper than arctan2), invalid points last.
    centre = (points * valid[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
    rel = points - centre[:, None, :]
    dx, dy = rel[..., 0], rel[..., 1]
    pseudo = dy / (np.abs(dx) + np.abs(dy) + 1e-300)  # the tiny term only guards a point at the centre
    pseudo = np.where(dx >= 0, pseudo, 2.0 - pseudo)
    pseudo[~valid] = np.inf
    order = np.argsort(pseudo, axis=1)
    rows = np.arange(p)[:, None]
    rel, valid = rel[rows, order], valid[rows, order]
    # Invalid points (sorted last) repeat the first vertex: their edges add zero area and close the polygon.
    rel = np.where(valid[..., None], rel, rel[:, :1, :])
    area = 0.5 * np.abs(_cross(rel, np.roll(rel, -1, axis=1)).sum(axis=1))
    return np.where(count >= 3, area, 0.0)


def intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area of the intersection of rotated boxes ``a[i]`` and ``b[i]``, pair by pair.

    Args:
        a: (P, 5) rotated boxes.
        b: (P, 5) rotated boxes.

    Returns:
        (P,) float64 intersection areas.
    """
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    if len(a) != len(b):
        raise ValueError(f"a and b must pair up, got {len(a)} and {len(b)} boxes")
    if len(a) == 0:
        return np.zeros(0)
    return _intersection(a, b, corners(a), corners(b))


def rotated_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of rotated boxes ``a[i]`` and ``b[i]``, pair by pair: (P,) float64, 0 where the union is empty."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    inter = intersection_area(a, b)
    union = np.abs(a[:, 2] * a[:, 3]) + np.abs(b[:, 2] * b[:, 3]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def rotated_iou(a: np.ndarray, b: np.ndarray, *, min_iou: float = 0.0) -> np.ndarray:
    """Pairwise IoU of two sets of rotated boxes.

    Args:
        a: (N, 5) rotated boxes cx, cy, w, h, angle_rad.
        b: (M, 5) rotated boxes.
        min_iou: pairs whose IoU is certainly below this are reported as 0 without the exact computation (a
            matcher with a threshold passes it; the default computes every overlapping pair).

    Returns:
        (N, M) float64 IoU; 0 where the boxes do not overlap or the union is empty.
    """
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    out = np.zeros((len(a), len(b)))
    if out.size == 0:
        return out
    # The intersection is at most that of the enclosing boxes and at most either area, and IoU grows with the
    # intersection: a bound from the enclosing boxes leaves the exact computation to pairs that can reach
    # min_iou (or merely overlap, by default).
    ea, eb = enclosing_xyxy(a), enclosing_xyxy(b)
    iw = np.minimum(ea[:, None, 2], eb[None, :, 2]) - np.maximum(ea[:, None, 0], eb[None, :, 0])
    ih = np.minimum(ea[:, None, 3], eb[None, :, 3]) - np.maximum(ea[:, None, 1], eb[None, :, 1])
    candidate = (iw > 0) & (ih > 0)
    area_a, area_b = np.abs(a[:, 2] * a[:, 3]), np.abs(b[:, 2] * b[:, 3])
    if min_iou > 0:
        inter = np.minimum(np.minimum(iw * ih, area_a[:, None]), area_b[None, :])
        union = area_a[:, None] + area_b[None, :] - inter
        candidate &= inter >= min_iou * union
    i, j = np.nonzero(candidate)
    if len(i):
        inter = _intersection(a[i], b[j], corners(a)[i], corners(b)[j])
        union = area_a[i] + area_b[j] - inter
        out[i, j] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def iou_any(a: np.ndarray, b: np.ndarray, *, rotated: bool) -> np.ndarray:
    """Pairwise IoU of (N, 5) and (M, 5) boxes: exact rotated IoU, or axis-aligned IoU of the enclosing boxes."""
    if rotated:
        return rotated_iou(a, b)
    return box_iou(enclosing_xyxy(a), enclosing_xyxy(b))
