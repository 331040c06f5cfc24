"""Synthetic scenes: coloured shapes moving over a drifting, textured background, with exact ground truth.

A :class:`Scene` is fully determined by ``(seed, width, height, rotated, marked)``. Motion is simulated frame by
frame from one ``numpy.random.Generator(PCG64(seed))``; snapshots every ``_CHECKPOINT_EVERY`` frames make random
access cheap, and sequential access costs one simulation step plus one render per frame. The background is a
closed-form function of the frame index (windows into precomputed textures), so it needs no state at all.

Rotated scenes (``rotated=True``) show ellipses, rectangles and elongated triangles that spin as they move, and
their truth carries a rotated box (:attr:`SceneObject.cxcywhr`). Its canonical form:

* ``(cx, cy, w, h, angle)`` in pixels and radians; the corners are ``(cx, cy) + R(angle) (+-w/2, +-h/2)`` with
  ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` acting on ``(x, y)``: with y pointing down, a positive angle turns
  the box clockwise on screen (OpenCV's and ultralytics' convention);
* ``w >= h`` (``w`` runs along the long axis) and ``0 <= angle < pi``: every rectangle has exactly one such form
  (a box with ``w == h`` has two; the generator never makes one). This is ultralytics' older "long edge"
  regularisation; ultralytics' current ``regularize_rboxes`` gives the same rectangle as ``angle`` in
  ``[0, pi/2)`` with ``w`` and ``h`` swapped where needed. Compare boxes by rotated IoU, never field by field.

An object partly outside the frame has the rotated box clipped along its own axes: the tightest box at the object's
angle around the part of its full box inside the frame (for angle 0 this is the axis-aligned clipping of the
default scenes). Its ``bbox`` is the axis-aligned box enclosing that rotated box, clipped to the frame.

Marked scenes (``marked=True``, axis-aligned only) give each object a mark from :data:`MARKS`, an attribute that
is independent of its class and visible in its crop (what the embedded ``marks`` secondary classifier reads): drawn
in the object's outline colour inside its fill, ``"dot"`` is a disc of radius ``0.16 * size``, ``"bar"`` a
horizontal bar ``0.5 * size`` wide and ``0.14 * size`` high, ``"plain"`` nothing. Circles and squares carry the mark
at their centre; triangles carry the dot at their centroid and the bar lower, ``0.17 * size`` above the base, where
the triangle is wide enough for it. A mark never reaches past the fill (it is clipped to it). Each object's mark
comes from its own generator, seeded by ``(seed, 2, object_id)``: the scene's own generator is never drawn from for
marks, so a marked scene shows the same objects, moving the same way, as the unmarked scene of the same seed, and
differs from it only by the marks' pixels (and ``SceneObject.mark`` in its truth).

:meth:`Scene.instance_map` gives a frame's exact instance masks: per pixel, the id of the object whose fill,
outline or mark :meth:`Scene.frame` painted there (later objects cover earlier ones), -1 for the background. It is
computed from the same rasterisation (``_coverage``) as the image and draws nothing from the scene's generator.
Axis-aligned scenes only.

The default scenes (``rotated=False``, ``marked=False``) are frozen: their frames and truth are bit-identical to
those the committed ``shapes`` model was trained and tested on (``tests/scene/test_golden.py``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyinfer.errors import ConfigError
from pyinfer.scene.rotated import canonical_cxcywhr, clip_rotated_box, draw_rotated, enclosing_half_extent

__all__ = ["CLASSES", "MARKS", "ROTATED_CLASSES", "Scene", "SceneObject", "canonical_cxcywhr"]

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
ROTATED_CLASSES: tuple[str, ...] = ("ellipse", "rectangle", "triangle")  # rotated scenes; same colours per class id

# Fill colours per class (RGB); each object jitters them (+-15 per channel, then x0.85..1.1 brightness). The class
# channel then beats the others by >= 110 while background channels differ by <= 80: colour alone separates the
# classes, and so does shape.
_BASE_COLOURS = np.array([[225.0, 35.0, 35.0], [35.0, 210.0, 45.0], [40.0, 60.0, 235.0]])
_TRIANGLE_ASPECT = math.sqrt(3.0) / 2.0  # height / base of an equilateral triangle
MIN_SIZE, MAX_SIZE = 0.06, 0.22  # side / diameter as a fraction of min(width, height)
_MIN_ALIVE, _MAX_ALIVE = 5, 10  # objects on or entering the stage; 3..10 of them are visible at a time
_MIN_SPEED, _MAX_SPEED = 0.003, 0.010  # per frame, as a fraction of min(width, height)
_CHECKPOINT_EVERY = 64
# Rotated scenes: the long side as a fraction of min(width, height), short / long side, and spin per frame. The
# aspect stays <= 0.8 so every object has a clear long axis (a square's angle would be ambiguous modulo pi/2).
ROTATED_MIN_SIZE, ROTATED_MAX_SIZE = 0.08, 0.24
_MIN_ASPECT, _MAX_ASPECT = 0.4, 0.8
_MIN_SPIN, _MAX_SPIN = 0.004, 0.03  # radians per frame, either sense
# Marked scenes: the marks, drawn uniformly at random per object; their sizes as fractions of the object's size.
MARKS: tuple[str, ...] = ("plain", "dot", "bar")
_DOT_RADIUS = 0.16
_BAR_HALF_WIDTH, _BAR_HALF_HEIGHT = 0.25, 0.07
_TRIANGLE_BAR_ABOVE_BASE = 0.17  # the bar's centre above a triangle's base: there the triangle is wide enough


@dataclass(frozen=True)
class SceneObject:
    """One object's ground truth in one frame.

    Attributes:
        object_id: stable identity across frames.
        class_id: index into :data:`CLASSES`.
        label: ``CLASSES[class_id]``.
        bbox: ``(left, top, width, height)`` in pixels, the drawn shape's full extent clipped to the frame; in
            rotated scenes, the box enclosing ``cxcywhr``, clipped to the frame.
        cxcywhr: rotated scenes only (else None): ``(cx, cy, w, h, angle)`` in pixels and radians, in the canonical
            form of the module docstring (``w >= h``, ``0 <= angle < pi``, clockwise on screen).
        mark: marked scenes only (else None): the object's mark, one of :data:`MARKS`.
    """

    object_id: int
    class_id: int
    label: str
    bbox: tuple[float, float, float, float]
    cxcywhr: tuple[float, float, float, float, float] | None = None
    mark: str | None = None


@dataclass
class _Body:
    """Mutable simulation state of one object; ``(cx, cy)`` is the centre of its box."""

    object_id: int
    class_id: int
    cx: float
    cy: float
    size: float  # side, diameter, or triangle base
    vx: float
    vy: float
    growth: float  # size change per frame, px
    fill: tuple[int, int, int]
    outline: tuple[int, int, int]
    angle: float = 0.0  # radians, clockwise on screen; stays 0 unless rotated
    entered: bool = False
    age: int = 0
    rotated: bool = False  # a rotated-scene body: size is the long side, aspect the short / long ratio
    aspect: float = 1.0
    spin: float = 0.0  # radians per frame
    mark: str | None = None  # marked scenes: one of MARKS

    def half_extent(self) -> tuple[float, float]:
        """Half sizes along the body's own axes (its long axis first when rotated)."""
        half = self.size / 2.0
        if self.rotated:
            return half, half * self.aspect
        return half, half * _TRIANGLE_ASPECT if self.class_id == 2 else half

    def box(self) -> tuple[float, float, float, float]:
        """Unclipped ``(left, top, right, bottom)``; for a rotated body, the box enclosing its rotated box."""
        hw, hh = self.half_extent()
        if self.rotated:
            hw, hh = enclosing_half_extent(self.angle, (hw, hh))
        return self.cx - hw, self.cy - hh, self.cx + hw, self.cy + hh


def _interp_taps(size: int, knots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothstep interpolation of ``knots`` values over ``size`` pixels: (first knot, its weight, the next's)."""
    pos = np.linspace(0.0, knots - 1.0, size)
    i = np.minimum(pos.astype(np.int64), knots - 2)
    f = pos - i
    f = f * f * (3.0 - 2.0 * f)  # smoothstep: no visible creases at the knots
    return i, (1.0 - f).astype(np.float32), f.astype(np.float32)


def _blend(grid: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Interpolate ``grid`` along ``axis`` to ``size`` samples: two taps each, float32 multiply then add.

    Elementwise on purpose: a matrix product (BLAS) sums in an order, and with fused multiply-adds, that depends
    on the CPU's kernel, so the same seed gave other pixels on another CPU; this gives the same bits everywhere.
    """
    i, w0, w1 = _interp_taps(size, grid.shape[axis])
    shape = [1] * grid.ndim
    shape[axis] = size
    a = np.take(grid, i, axis=axis)
    b = np.take(grid, i + 1, axis=axis)
    return a * w0.reshape(shape) + b * w1.reshape(shape)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float, channels: int) -> np.ndarray:
    """(height, width, channels) float32 value noise in [0, 1] with features about ``cell`` pixels wide."""
    ky, kx = max(2, round(height / cell) + 2), max(2, round(width / cell) + 2)
    grid = rng.random((ky, kx, channels)).astype(np.float32)
    return _blend(_blend(grid, 0, height), 1, width)  # (H, W, C)


def _normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / max(hi - lo, 1e-6)


class _Background:
    """A textured background whose pattern and tint drift slowly; ``render(t)`` is a pure function of ``t``.

    Three uint8 layers, each a window into a texture larger than the frame, are summed (max 165 + 60 + 4 = 229,
    so uint8 addition cannot wrap): a grey-dominated multi-octave texture with fine grain, a broad colour tint
    drifting on its own path, and faint grey sensor noise.
    """

    def __init__(self, rng: np.random.Generator, width: int, height: int) -> None:
        self.width, self.height = width, height
        m = min(width, height)
        self.pad_a = (max(8, round(0.15 * width)), max(8, round(0.15 * height)))
        self.pad_b = (max(8, round(0.25 * width)), max(8, round(0.25 * height)))
        self.pad_n = (61, 53)
        ha, wa = height + 2 * self.pad_a[1], width + 2 * self.pad_a[0]
        grey = 0.6 * _smooth_noise(rng, ha, wa, m / 3, 1)
        grey += 0.3 * _smooth_noise(rng, ha, wa, m / 10, 1)
        grey += 0.1 * _smooth_noise(rng, ha, wa, m / 30, 1)
        colour = _smooth_noise(rng, ha, wa, m / 5, 3)
        grain = rng.integers(0, 21, (ha, wa, 1)).astype(np.float32)  # fine grey grain that drifts with the texture
        self.tex_a = np.clip(15.0 + 110.0 * _normalise(grey) + 20.0 * colour + grain, 0, 165).astype(np.uint8)
        hb, wb = height + 2 * self.pad_b[1], width + 2 * self.pad_b[0]
        self.tex_b = (60.0 * _normalise(_smooth_noise(rng, hb, wb, m / 1.5, 3))).astype(np.uint8)
        # Sensor noise, re-rolled every frame; faint, because it is what a video encoder cannot predict.
        fine = rng.integers(0, 5, (height + self.pad_n[1], width + self.pad_n[0], 1), dtype=np.uint8)
        self.noise = np.repeat(fine, 3, axis=2)
        self.phase = rng.uniform(0.0, 2.0 * math.pi, 4)

    def _offset(self, t: int, pad: tuple[int, int], period: float, phase: np.ndarray) -> tuple[int, int]:
        w = 2.0 * math.pi * t / period
        ox = pad[0] * (1.0 + math.sin(w + phase[0]))
        oy = pad[1] * (1.0 + math.sin(0.77 * w + phase[1]))
        return round(ox), round(oy)

    def render(self, t: int) -> np.ndarray:
        """(H, W, 3) uint8 background of frame ``t``, a new C-contiguous array."""
        h, w = self.height, self.width
        ax, ay = self._offset(t, self.pad_a, 1500.0, self.phase[:2])
        bx, by = self._offset(t, self.pad_b, 2300.0, self.phase[2:])
        nx, ny = (t * 37) % self.pad_n[0], (t * 23) % self.pad_n[1]  # re-rolls the fine noise every frame
        out = np.empty((h, w, 3), np.uint8)
        np.add(self.tex_a[ay : ay + h, ax : ax + w], self.tex_b[by : by + h, bx : bx + w], out=out)
        np.add(out, self.noise[ny : ny + h, nx : nx + w], out=out)
        return out


def _mark_mask(body: _Body, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Where a body's dot or bar lies, for pixel offsets ``xs`` (1, W) and ``ys`` (H, 1) from the body's centre."""
    s = body.size
    dot = body.mark == "dot"
    dy = 0.0  # the mark's centre below the box centre
    if body.class_id == 2:  # the centroid, hh / 3 below the box centre; the bar lower still (module docstring)
        hh = body.half_extent()[1]
        dy = hh / 3.0 if dot else hh - _TRIANGLE_BAR_ABOVE_BASE * s
    my = ys - np.float32(dy)
    if dot:
        mask: np.ndarray = xs * xs + my * my <= (_DOT_RADIUS * s) ** 2
        return mask
    return (np.abs(xs) <= _BAR_HALF_WIDTH * s) & (np.abs(my) <= _BAR_HALF_HEIGHT * s)


def _coverage(
    body: _Body, width: int, height: int
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Which pixels an axis-aligned body covers: ``(x0, y0, inside, inner, xs, ys)`` over the window of the frame
    its box overlaps, or None where that window is empty. ``inside`` (h, w) is where a pixel's centre lies inside
    the shape (outline and fill), ``inner`` where it lies inside the fill; ``xs`` (1, w) and ``ys`` (h, 1) are the
    pixel centres' offsets from the body's centre. :func:`_draw` paints exactly these pixels."""
    left, top, right, bottom = body.box()
    x0, x1 = max(0, math.floor(left)), min(width, math.ceil(right))
    y0, y1 = max(0, math.floor(top)), min(height, math.ceil(bottom))
    if x0 >= x1 or y0 >= y1:
        return None
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - body.cx)[None, :]
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - body.cy)[:, None]
    hw, hh = body.half_extent()
    t = max(1.0, round(0.06 * body.size))  # outline thickness, px
    if body.class_id == 0:
        d2 = xs * xs + ys * ys
        inside, inner = d2 <= hw * hw, d2 <= max(hw - t, 0.0) ** 2
    elif body.class_id == 1:
        ax, ay = np.abs(xs), np.abs(ys)
        inside = (ax <= hw) & (ay <= hh)
        inner = (ax <= hw - t) & (ay <= hh - t)
    else:
        # Apex up at (0, -hh), base at y = +hh. Signed distance to a slanted side, for the point mirrored to x >= 0.
        norm = math.hypot(2.0 * hh, hw)
        side = (np.abs(xs) * (2.0 * hh) - (ys + hh) * hw) / norm
        inside = (side <= 0.0) & (ys <= hh)
        inner = (side <= -t) & (ys <= hh - t)
    return x0, y0, inside, inner, xs, ys


def _draw(img: np.ndarray, body: _Body) -> None:
    """Rasterise one object in place: a pixel is drawn when its centre lies inside the shape."""
    if body.rotated:
        draw_rotated(img, body.cx, body.cy, body.angle, body.half_extent(), body.class_id, body.fill, body.outline)
        return
    height, width = img.shape[:2]
    cover = _coverage(body, width, height)
    if cover is None:
        return
    x0, y0, inside, inner, xs, ys = cover
    win = img[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]]
    win[inside] = body.outline
    win[inner] = body.fill
    if body.mark is not None and body.mark != "plain":  # marked scenes only; in the outline colour, inside the fill
        win[inner & _mark_mask(body, xs, ys)] = body.outline


class Scene:
    """A deterministic synthetic video of circles, squares and triangles; see the module docstring.

    Args:
        seed: non-negative seed; the same ``(seed, width, height)`` always gives the same frames and truth.
        width: frame width in pixels, >= 64.
        height: frame height in pixels, >= 64.
        rotated: ellipses, rectangles and elongated triangles that spin, with rotated boxes in the truth
            (:data:`ROTATED_CLASSES`); the default is the frozen axis-aligned scene (:data:`CLASSES`).
        marked: give every object a mark from :data:`MARKS` (see the module docstring), named in its truth
            (:attr:`SceneObject.mark`); the same objects and motion as the unmarked scene. Axis-aligned scenes only.

    Raises:
        ConfigError: on a negative seed, a frame smaller than 64 x 64, or ``marked`` with ``rotated``.
    """

    def __init__(self, seed: int, width: int, height: int, *, rotated: bool = False, marked: bool = False) -> None:
        for name, value, low in (("seed", seed, 0), ("width", width, 64), ("height", height, 64)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ConfigError(f"scene {name} must be an integer >= {low}, got {value!r}")
        if rotated and marked:
            raise ConfigError("marked scenes are axis-aligned only: rotated and marked cannot be combined")
        self.seed, self.width, self.height = int(seed), int(width), int(height)
        self.rotated = bool(rotated)
        self.marked = bool(marked)
        self.classes = ROTATED_CLASSES if self.rotated else CLASSES
        self._m = float(min(width, height))
        self._background = _Background(np.random.Generator(np.random.PCG64([self.seed, 1])), self.width, self.height)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._bodies: list[_Body] = []
        self._next_id = 0
        self._target = int(self._rng.integers(_MIN_ALIVE, _MAX_ALIVE - 1))
        for _ in range(self._target):
            self._bodies.append(self._spawn(inside=True))
        self._t = 0
        self._checkpoints: dict[int, dict[str, Any]] = {0: self._snapshot()}

    def frame(self, index: int) -> tuple[np.ndarray, list[SceneObject]]:
        """Render frame ``index`` (any order; sequential is fastest).

        Returns:
            ``(image, objects)``: the (H, W, 3) uint8 RGB C-contiguous image and the ground truth of the objects
            at least partly visible (clipped box >= 16 px² and >= 25 % of the full box; in rotated scenes, the
            full rotated box's area inside the frame), in drawing order (later ones cover earlier ones).
        """
        if index < 0:
            raise IndexError(f"frame index must be >= 0, got {index}")
        self._seek(int(index))
        img = self._background.render(self._t)
        for body in self._bodies:
            _draw(img, body)
        return img, self._truth()

    def instance_map(self, index: int) -> np.ndarray:
        """Which object each pixel of frame ``index`` shows: the exact instance masks of :meth:`frame`'s image.

        The pixels are those :meth:`frame` paints (a pixel belongs to a shape when its centre lies inside it,
        outline and fill alike, marks included), and a later-drawn object takes the pixels it covers from earlier
        ones. Objects too little visible to be in :meth:`frame`'s truth still own their pixels here. Calling this
        changes nothing :meth:`frame` returns: it only seeks the simulation, which is deterministic.

        Returns:
            (H, W) int32: the ``object_id`` of the object visible at each pixel, -1 where the background shows.

        Raises:
            ValueError: for rotated scenes (not supported).
        """
        if self.rotated:
            raise ValueError("Scene.instance_map supports axis-aligned scenes only, not rotated=True")
        if index < 0:
            raise IndexError(f"frame index must be >= 0, got {index}")
        self._seek(int(index))
        out = np.full((self.height, self.width), -1, np.int32)
        for body in self._bodies:
            cover = _coverage(body, self.width, self.height)
            if cover is None:
                continue
            x0, y0, inside = cover[0], cover[1], cover[2]
            out[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]][inside] = body.object_id
        return out

    def __iter__(self) -> Iterator[tuple[np.ndarray, list[SceneObject]]]:
        """Frames 0, 1, 2, ... without end (slice with ``itertools.islice``)."""
        return (self.frame(i) for i in itertools.count())

    # -- simulation ---------------------------------------------------------------------------------------

    def _spawn(self, *, inside: bool) -> _Body:
        rng, m = self._rng, self._m
        class_id = int(rng.integers(len(CLASSES)))
        lo, hi = (ROTATED_MIN_SIZE, ROTATED_MAX_SIZE) if self.rotated else (MIN_SIZE, MAX_SIZE)
        size = float(rng.uniform(lo, hi)) * m
        speed = float(rng.uniform(_MIN_SPEED, _MAX_SPEED)) * m
        growth = float(rng.uniform(-1.0, 1.0)) * 0.0006 * m
        fill = np.clip((_BASE_COLOURS[class_id] + rng.uniform(-15, 15, 3)) * rng.uniform(0.85, 1.1), 0, 255)
        outline = fill * 0.4  # dark enough that an outline never passes for a fill colour
        body = _Body(
            object_id=self._next_id,
            class_id=class_id,
            cx=0.0,
            cy=0.0,
            size=size,
            vx=0.0,
            vy=0.0,
            growth=growth,
            fill=(int(fill[0]), int(fill[1]), int(fill[2])),
            outline=(int(outline[0]), int(outline[1]), int(outline[2])),
        )
        self._next_id += 1
        if self.marked:  # from the object's own generator: the scene's generator draws exactly as unmarked
            mark_rng = np.random.Generator(np.random.PCG64([self.seed, 2, body.object_id]))
            body.mark = MARKS[int(mark_rng.integers(len(MARKS)))]
        if self.rotated:  # drawn after the default scene's draws, which therefore stay as they were
            body.rotated = True
            body.aspect = float(rng.uniform(_MIN_ASPECT, _MAX_ASPECT))
            body.angle = float(rng.uniform(0.0, 2.0 * math.pi))
            body.spin = float(rng.uniform(_MIN_SPIN, _MAX_SPIN)) * float(rng.choice((-1.0, 1.0)))
        hw, hh = body.half_extent()
        if self.rotated:  # place by the enclosing box, so a spawned body starts inside (or just outside) the frame
            left, top, right, bottom = body.box()
            hw, hh = (right - left) / 2.0, (bottom - top) / 2.0
        if inside:
            body.cx = float(rng.uniform(hw, self.width - hw))
            body.cy = float(rng.uniform(hh, self.height - hh))
            heading = float(rng.uniform(0.0, 2.0 * math.pi))
            body.entered = True
        else:
            # Just outside one edge, heading inwards within +-50 degrees of the edge normal.
            edge = int(rng.integers(4))
            along = float(rng.uniform(0.1, 0.9))
            heading = (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi)[edge] + float(rng.uniform(-0.87, 0.87))
            if edge == 0:  # left edge, moving right
                body.cx, body.cy = -hw - 0.5, along * self.height
            elif edge == 1:  # top edge, moving down
                body.cx, body.cy = along * self.width, -hh - 0.5
            elif edge == 2:  # right edge, moving left
                body.cx, body.cy = self.width + hw + 0.5, along * self.height
            else:  # bottom edge, moving up
                body.cx, body.cy = along * self.width, self.height + hh + 0.5
        body.vx, body.vy = speed * math.cos(heading), speed * math.sin(heading)
        return body

    def _overlaps_frame(self, body: _Body) -> bool:
        left, top, right, bottom = body.box()
        return right > 0 and bottom > 0 and left < self.width and top < self.height

    def _step(self) -> None:
        rng, m = self._rng, self._m
        lo, hi = _MIN_SPEED * m, _MAX_SPEED * m
        min_size, max_size = (ROTATED_MIN_SIZE, ROTATED_MAX_SIZE) if self.rotated else (MIN_SIZE, MAX_SIZE)
        alive = []
        for body in self._bodies:
            body.age += 1
            if body.entered:  # a random walk of the velocity; entering objects keep heading in
                body.vx += float(rng.normal(0.0, 0.0004 * m))
                body.vy += float(rng.normal(0.0, 0.0004 * m))
                speed = math.hypot(body.vx, body.vy)
                scale = min(max(speed, lo), hi) / max(speed, 1e-9)
                body.vx, body.vy = body.vx * scale, body.vy * scale
            if body.rotated:  # the spin drifts too, keeping its sense and staying within its range
                mag = min(max(abs(body.spin) + float(rng.normal(0.0, 0.001)), _MIN_SPIN), _MAX_SPIN)
                body.spin = math.copysign(mag, body.spin)
                body.angle = math.fmod(body.angle + body.spin, 2.0 * math.pi)
            body.cx += body.vx
            body.cy += body.vy
            body.size += body.growth
            if not min_size * m <= body.size <= max_size * m:
                body.size = min(max(body.size, min_size * m), max_size * m)
                body.growth = -body.growth
            inside = self._overlaps_frame(body)
            body.entered = body.entered or inside
            if inside or (not body.entered and body.age < 200):
                alive.append(body)
        if rng.random() < 0.02:
            self._target = int(np.clip(self._target + rng.choice((-1, 1)), _MIN_ALIVE, _MAX_ALIVE))
        if len(alive) < self._target:  # at most one newcomer per frame
            alive.append(self._spawn(inside=False))
        self._bodies = alive
        self._t += 1
        if self._t % _CHECKPOINT_EVERY == 0 and self._t not in self._checkpoints:
            self._checkpoints[self._t] = self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "t": self._t,
            "bodies": [dataclasses.replace(b) for b in self._bodies],
            "rng": self._rng.bit_generator.state,
            "next_id": self._next_id,
            "target": self._target,
        }

    def _seek(self, index: int) -> None:
        if index < self._t:
            snap = self._checkpoints[index - index % _CHECKPOINT_EVERY]
            self._t, self._next_id, self._target = snap["t"], snap["next_id"], snap["target"]
            self._bodies = [dataclasses.replace(b) for b in snap["bodies"]]
            self._rng.bit_generator.state = snap["rng"]
        while self._t < index:
            self._step()

    def _truth(self) -> list[SceneObject]:
        if self.rotated:
            return self._rotated_truth()
        out = []
        for body in self._bodies:
            left, top, right, bottom = body.box()
            cl, ct = max(left, 0.0), max(top, 0.0)
            cr, cb = min(right, float(self.width)), min(bottom, float(self.height))
            if cr <= cl or cb <= ct:
                continue
            area = (cr - cl) * (cb - ct)
            if area < 16.0 or area < 0.25 * (right - left) * (bottom - top):
                continue
            bbox = (float(cl), float(ct), float(cr - cl), float(cb - ct))
            out.append(SceneObject(body.object_id, body.class_id, CLASSES[body.class_id], bbox, mark=body.mark))
        return out

    def _rotated_truth(self) -> list[SceneObject]:
        out = []
        for body in self._bodies:
            clipped = clip_rotated_box(body.cx, body.cy, body.angle, body.half_extent(), self.width, self.height)
            if clipped is not None:
                bbox, rbox = clipped
                out.append(SceneObject(body.object_id, body.class_id, ROTATED_CLASSES[body.class_id], bbox, rbox))
        return out
