"""Rotated boxes in NumPy: corners, enclosing boxes and exact pairwise rotated IoU.

A rotated box is ``(cx, cy, w, h, angle_rad)``: centre, width and height in pixels, and the angle in radians,
clockwise in image coordinates (y down) about the centre, as in pyinfer's metadata contract.

The intersection area comes from Green's theorem: half the sum of cross products along its boundary, which
is the part of each box's edges inside the other box (slab clipping, no polygon building or vertex sorting);
see :func:`_intersection` for how shared edges are handled. It is exact up to float64 rounding (1e-15 of IoU)
except where edges of the two boxes lie on one line (up to ~1e-8) or a hair off it (within ~1e-8 rad: up
to ~1e-7); vectorised over pairs, and checked against polygon clipping, shared and nearly shared edges
included. Pairwise IoU first keeps only the pairs whose enclosing
boxes overlap (and, given ``min_iou``, could reach it), so sparse scenes (a tracker's cost matrix) stay cheap.
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
    if (arr[:, 2:4] < 0).any():  # a negative size is the same rectangle; corners then run the usual way round
        arr = arr.copy()
        arr[:, 2:4] = np.abs(arr[:, 2:4])
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


def _inside_lengths(c: np.ndarray, r: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(2, P, 4) parameter length of each edge ``c + t r`` (t in [0, 1]) inside the rotated ``box`` of its pair,
    against the box grown by a tolerance (closed) and shrunk by it (open): slab clipping in the box's frame."""
    cos, sin = np.cos(box[:, 4])[:, None], np.sin(box[:, 4])[:, None]
    rel = c - box[:, None, :2]
    start = (rel[..., 0] * cos + rel[..., 1] * sin, rel[..., 1] * cos - rel[..., 0] * sin)
    step = (r[..., 0] * cos + r[..., 1] * sin, r[..., 1] * cos - r[..., 0] * sin)
    # Edges closer than this to a box side count as lying on it (see _intersection). 1e-9 of the coordinates'
    # magnitude balances the two errors: too small, and the crossing of an edge a hair off parallel is found
    # by each box separately with large relative error (4e-5 of IoU at 1e-12); too large, and the averaging
    # below spreads over a wider band. At 1e-9 the worst IoU error measured is 5e-8, elsewhere 1e-15.
    tol = 1e-9 * (1.0 + np.abs(box[:, :4]).max(axis=1, keepdims=True))
    grow = np.stack([tol, -tol])  # closed, open
    lo = np.zeros((2, *start[0].shape))
    hi = np.ones_like(lo)
    for k in (0, 1):
        half = np.maximum(box[:, 2 + k, None] / 2 + grow, 0.0)
        s, d = start[k], step[k]
        with np.errstate(divide="ignore", invalid="ignore"):  # d == 0 is handled by `parallel` below
            t1, t2 = (-half - s) / d, (half - s) / d
        parallel = d == 0
        inside = np.abs(s) <= half
        lo = np.maximum(lo, np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2)))
        hi = np.minimum(hi, np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2)))
    return np.maximum(hi - lo, 0.0)


def _intersection(a: np.ndarray, b: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """(P,) intersection areas of paired boxes (P, 5) with their corners (P, 4, 2).

    Green's theorem: the area is half the sum of cross(P0, P1) over the boundary of the intersection, which
    is the part of each box's edges inside the other box. For an edge ``q + t r`` kept for t in [lo, hi],
    cross(q + lo r, q + hi r) = (hi - lo) cross(q, r), so each edge needs only its clipped length. Edges of the
    two boxes lying on one line (shared sides, identical boxes) would count twice with closed boxes and never
    with open ones; the mean of the two is exact there and equal to either elsewhere, so no case analysis
    (and no sorting of polygon vertices) is needed.
    """
    ra = ca[:, _NEXT] - ca
    rb = cb[:, _NEXT] - cb
    origin = a[:, None, :2]
    total = (_inside_lengths(ca, ra, b) * _cross(ca - origin, ra)).sum(axis=(0, 2))
    total += (_inside_lengths(cb, rb, a) * _cross(cb - origin, rb)).sum(axis=(0, 2))
    return np.abs(0.25 * total)  # half the boundary sum, averaged over closed and open


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
    i, j = np.nonzero(
        (ea[:, None, 0] < eb[None, :, 2]) & (eb[None, :, 0] < ea[:, None, 2])
        & (ea[:, None, 1] < eb[None, :, 3]) & (eb[None, :, 1] < ea[:, None, 3])
    )  # fmt: skip
    area_a, area_b = np.abs(a[:, 2] * a[:, 3]), np.abs(b[:, 2] * b[:, 3])
    if min_iou > 0 and len(i):
        iw = np.minimum(ea[i, 2], eb[j, 2]) - np.maximum(ea[i, 0], eb[j, 0])
        ih = np.minimum(ea[i, 3], eb[j, 3]) - np.maximum(ea[i, 1], eb[j, 1])
        bound = np.minimum(np.minimum(iw * ih, area_a[i]), area_b[j])
        reachable = bound >= min_iou * (area_a[i] + area_b[j] - bound)
        i, j = i[reachable], j[reachable]
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
