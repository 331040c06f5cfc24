"""Geometry of rotated scenes: drawing a spinning shape, clipping its box to the frame, the canonical box form.

A shape has half extents ``(a, b)`` along its own axes ``u = (cos t, sin t)`` (long) and ``v = (-sin t, cos t)``
(short), ``t`` its angle (clockwise on screen, y down). :mod:`pyinfer.scene.generator` documents the truth these
functions produce.
"""

from __future__ import annotations

import math

import numpy as np


def canonical_cxcywhr(
    cx: float, cy: float, w: float, h: float, angle: float
) -> tuple[float, float, float, float, float]:
    """The canonical form of a rotated box: ``w >= h`` and ``0 <= angle < pi`` (the same rectangle)."""
    if h > w:
        w, h, angle = h, w, angle + math.pi / 2.0
    angle = math.fmod(angle, math.pi)
    if angle < 0.0:
        angle += math.pi
    if angle >= math.pi:  # fmod of a value a hair below a multiple of pi, shifted by pi, can round up to pi
        angle = 0.0
    return cx, cy, w, h, angle


def enclosing_half_extent(angle: float, half: tuple[float, float]) -> tuple[float, float]:
    """Half width and half height of the axis-aligned box enclosing a rotated box of half extents ``half``."""
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    return half[0] * c + half[1] * s, half[0] * s + half[1] * c


def draw_rotated(
    img: np.ndarray,
    cx: float,
    cy: float,
    angle: float,
    half: tuple[float, float],
    class_id: int,
    fill: tuple[int, int, int],
    outline: tuple[int, int, int],
) -> None:
    """Rasterise a rotated ellipse (0), rectangle (1) or triangle (2) in place; pixel centres inside are drawn.

    The outline is ``max(1, round(0.06 * short side))`` px thick. The triangle has its apex at ``u = +a`` and its
    base (length ``2b``) at ``u = -a``.
    """
    height, width = img.shape[:2]
    ex, ey = enclosing_half_extent(angle, half)
    x0, x1 = max(0, math.floor(cx - ex)), min(width, math.ceil(cx + ex))
    y0, y1 = max(0, math.floor(cy - ey)), min(height, math.ceil(cy + ey))
    if x0 >= x1 or y0 >= y1:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = math.cos(angle), math.sin(angle)
    u, v = dx * c + dy * s, dy * c - dx * s  # R(angle)^T (dx, dy)
    a, b = half
    t = max(1.0, round(0.06 * 2.0 * b))
    if class_id == 0:
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        ai, bi = max(a - t, 1e-3), max(b - t, 1e-3)
        inner = (u / ai) ** 2 + (v / bi) ** 2 <= 1.0
    elif class_id == 1:
        au, av = np.abs(u), np.abs(v)
        inside = (au <= a) & (av <= b)
        inner = (au <= a - t) & (av <= b - t)
    else:
        # Signed distance to a slanted side, for v mirrored to >= 0.
        norm = math.hypot(2.0 * a, b)
        side = (np.abs(v) * (2.0 * a) - (a - u) * b) / norm
        inside = (side <= 0.0) & (u >= -a)
        inner = (side <= -t) & (u >= -a + t)
    win = img[y0:y1, x0:x1]
    win[inside] = outline
    win[inner] = fill


def _clip_to_frame(corners: list[tuple[float, float]], width: float, height: float) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: the convex polygon ``corners`` clipped to ``[0, width] x [0, height]``."""
    poly = corners
    for axis, bound, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        if not poly:
            break
        out: list[tuple[float, float]] = []
        for i, p in enumerate(poly):
            q = poly[i - 1]
            p_in = p[axis] <= bound if keep_below else p[axis] >= bound
            q_in = q[axis] <= bound if keep_below else q[axis] >= bound
            if p_in != q_in:
                f = (bound - q[axis]) / (p[axis] - q[axis])
                out.append((q[0] + f * (p[0] - q[0]), q[1] + f * (p[1] - q[1])))
            if p_in:
                out.append(p)
        poly = out
    return poly


def _polygon_area(poly: list[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(poly[i - 1][0] * p[1] - p[0] * poly[i - 1][1] for i, p in enumerate(poly)))


def clip_rotated_box(
    cx: float, cy: float, angle: float, half: tuple[float, float], width: int, height: int
) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float, float]] | None:
    """A rotated box clipped to the frame along its own axes, if enough of it is visible.

    Args:
        cx: centre x, pixels.
        cy: centre y, pixels.
        angle: radians, clockwise on screen.
        half: half extents ``(a, b)`` along the box's own axes.
        width: frame width.
        height: frame height.

    Returns:
        None when less than 16 px² or 25 % of the box lies inside the frame; else ``(bbox, cxcywhr)``: the
        tightest box at ``angle`` around the box's part inside the frame (canonical form) and the axis-aligned
        ``(left, top, width, height)`` box enclosing it, clipped to the frame.
    """
    w_f, h_f = float(width), float(height)
    a, b = half
    c, s = math.cos(angle), math.sin(angle)
    u, v = (c, s), (-s, c)  # the long and short axes on screen
    corners = [
        (cx + su * a * u[0] + sv * b * v[0], cy + su * a * u[1] + sv * b * v[1])
        for su, sv in ((1, 1), (1, -1), (-1, -1), (-1, 1))
    ]
    visible = _clip_to_frame(corners, w_f, h_f)
    area = _polygon_area(visible) if len(visible) >= 3 else 0.0
    if area < 16.0 or area < 0.25 * (4.0 * a * b):
        return None
    # The extent of the visible polygon along u and along v.
    pu = [(x - cx) * u[0] + (y - cy) * u[1] for x, y in visible]
    pv = [(x - cx) * v[0] + (y - cy) * v[1] for x, y in visible]
    u0, u1, v0, v1 = max(min(pu), -a), min(max(pu), a), max(min(pv), -b), min(max(pv), b)
    mu, mv = (u0 + u1) / 2.0, (v0 + v1) / 2.0
    rbox = canonical_cxcywhr(cx + mu * u[0] + mv * v[0], cy + mu * u[1] + mv * v[1], u1 - u0, v1 - v0, angle)
    rcx, rcy, rw, rh, ra = rbox
    ex = (rw * abs(math.cos(ra)) + rh * abs(math.sin(ra))) / 2.0
    ey = (rw * abs(math.sin(ra)) + rh * abs(math.cos(ra))) / 2.0
    cl, ct = max(rcx - ex, 0.0), max(rcy - ey, 0.0)
    cr, cb = min(rcx + ex, w_f), min(rcy + ey, h_f)
    bbox = (float(cl), float(ct), float(cr - cl), float(cb - ct))
    return bbox, (float(rcx), float(rcy), float(rw), float(rh), float(ra))
