"""Drawing detections into frames in place: boxes, rotated boxes and labelled tags, with NumPy only.

Boxes are slice assignments (axis-aligned) or stamped points along the edges (rotated, as polygons). Text is
rendered once per character with Pillow's default font and cached as alpha masks; a label is those masks side
by side, and its tag is one lookup from alpha to colour. So drawing works on any packed RGB-family layout and
row stride (a strided view of mapped memory) and costs a few NumPy operations per detection.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from pyinfer.detections import UNTRACKED_ID as _UNTRACKED
from pyinfer.detections import Detections

#: Distinct, readable colours (RGB), one per class id modulo the palette size.
PALETTE = np.array(
    [
        (255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 178, 29), (207, 210, 49), (146, 204, 23),
        (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (52, 69, 147), (100, 115, 255),
        (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199),
    ],
    dtype=np.uint8,
)  # fmt: skip
_FLAT = 1e-6  # radians: a rotated box closer than this to axis-aligned is drawn as one


def class_colour(class_id: int) -> np.ndarray:
    """The RGB colour of a class."""
    return PALETTE[int(class_id) % len(PALETTE)]


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


@lru_cache(maxsize=8)
def _cell(size: int) -> tuple[int, int]:
    """Height of a text line and the y offset that puts the tallest glyph at row 1."""
    _, top, _, bottom = _font(size).getbbox("Ag|#(%")
    return bottom - top + 2, 1 - top


@lru_cache(maxsize=2048)
def _glyph(char: str, size: int) -> np.ndarray:
    """(line height, advance) uint8 alpha mask of one character."""
    from PIL import Image, ImageDraw

    font = _font(size)
    height, y = _cell(size)
    try:
        advance = max(1, round(font.getlength(char)))
    except AttributeError:  # old bitmap fonts
        advance = max(1, font.getbbox(char)[2])
    img = Image.new("L", (advance + 4, height), 0)
    ImageDraw.Draw(img).text((0, y), char, fill=255, font=font)
    return np.asarray(img)[:, :advance]


@lru_cache(maxsize=4096)
def text_mask(text: str, size: int = 14) -> np.ndarray:
    """(h, w) uint8 alpha mask of ``text``: cached glyphs side by side, one column of margin each side."""
    height = _cell(size)[0]
    pad = np.zeros((height, 1), np.uint8)
    return np.hstack([pad, *(_glyph(c, size) for c in text or " "), pad])


@lru_cache(maxsize=256)
def _tag_lut(colour: tuple[int, int, int]) -> np.ndarray:
    """(256, 3) uint8: the tag colour blended towards black or white ink by alpha."""
    c = np.array(colour, np.float64)
    # White or black text, whichever reads better on the colour (ITU-R BT.601 luma).
    ink = 0.0 if c @ np.array([0.299, 0.587, 0.114]) > 150 else 255.0
    alpha = np.arange(256, dtype=np.float64)[:, None] / 255.0
    return np.round(c * (1 - alpha) + ink * alpha).astype(np.uint8)


def _order(fmt: str) -> list[int]:
    return [2, 1, 0] if fmt.startswith("B") else [0, 1, 2]


def _tag_parts(detections: Detections, i: int) -> tuple[str, str]:
    """The tag of detection ``i`` in two parts: ``#track label`` (stable over frames) and `` confidence``."""
    track = detections.tracker_id
    head = detections.label(i)
    if track is not None and int(track[i]) != _UNTRACKED:
        head = f"#{int(track[i])} {head}"
    predicted = detections.extra.get("predicted")
    tail = "" if predicted is not None and predicted[i] else f" {float(detections.confidence[i]):.2f}"
    return head, tail


def label_text(detections: Detections, i: int) -> str:
    """The tag of detection ``i``: ``#track label confidence`` (no confidence on predicted boxes)."""
    return "".join(_tag_parts(detections, i))


def draw_detections(frame: np.ndarray, detections: Detections, fmt: str = "RGB", *, thickness: int = 2) -> None:
    """Draw boxes (rotated ones as polygons) and ``#track label confidence`` tags into ``frame`` in place.

    Args:
        frame: (H, W, C) uint8, writable, any strides; C >= 3 (a fourth channel is left as it is).
        detections: boxes in frame pixels; ``tracker_id`` and ``extra["predicted"]`` are shown when
            present (predicted boxes get 1-pixel lines and no confidence).
        fmt: the pixel format (``RGB``, ``BGRx``, ...): only the channel order matters.
        thickness: line width in pixels.
    """
    h, w = frame.shape[:2]
    n = len(detections)
    if n == 0 or h == 0 or w == 0:
        return
    rgb = frame[..., :3]
    colours = PALETTE[detections.class_id.astype(np.int64) % len(PALETTE)][:, _order(fmt)]
    predicted = detections.extra.get("predicted")
    thick = np.full(n, thickness) if predicted is None else np.where(predicted, 1, thickness)
    rotated = np.zeros(n, bool)
    if detections.cxcywhr is not None:
        angle = detections.cxcywhr[:, 4].astype(np.float64)
        rotated = np.abs(np.remainder(angle + math.pi / 4, math.pi / 2) - math.pi / 4) > _FLAT
        for t in np.unique(thick[rotated]).tolist():
            sel = rotated & (thick == t)
            _draw_polygons(rgb, _corners(detections.cxcywhr[sel]), colours[sel], t)
    boxes = np.clip(np.round(np.nan_to_num(detections.xyxy)), 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.int64)
    box_list, colour_list, thick_list = boxes.tolist(), [tuple(c) for c in colours.tolist()], thick.tolist()
    for i in np.flatnonzero(~rotated).tolist():
        _draw_box(rgb, box_list[i], colours[i], thick_list[i])
    text_size = max(10, min(24, h // 40))
    for i in range(n):
        head, tail = _tag_parts(detections, i)
        _draw_tag(rgb, head, tail, box_list[i][0], box_list[i][1], colour_list[i], text_size)


def _draw_box(rgb: np.ndarray, box: list[int], colour: np.ndarray, thickness: int) -> None:
    x0, y0, x1, y1 = box  # clipped to the frame
    t = max(1, min(thickness, (x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2))
    rgb[y0 : y0 + t, x0 : x1 + 1] = colour
    rgb[max(y0, y1 - t + 1) : y1 + 1, x0 : x1 + 1] = colour
    rgb[y0 : y1 + 1, x0 : x0 + t] = colour
    rgb[y0 : y1 + 1, max(x0, x1 - t + 1) : x1 + 1] = colour


def _corners(cxcywhr: np.ndarray) -> np.ndarray:
    """(K, 4, 2) corners of rotated boxes (angle clockwise in image coordinates), as ops.rotated.corners."""
    b = cxcywhr.astype(np.float64)
    c, s = np.cos(b[:, 4:5]), np.sin(b[:, 4:5])
    dx = np.array([-0.5, 0.5, 0.5, -0.5]) * b[:, 2:3]
    dy = np.array([-0.5, -0.5, 0.5, 0.5]) * b[:, 3:4]
    return np.stack([b[:, 0:1] + dx * c - dy * s, b[:, 1:2] + dx * s + dy * c], axis=-1)


def _draw_polygons(rgb: np.ndarray, corners: np.ndarray, colours: np.ndarray, thickness: int) -> None:
    """Outlines of (K, 4, 2) quadrilaterals, all at once: one pixel per step along each edge's major axis
    (a DDA line), repeated ``thickness`` times across it, then a single scatter of the colours."""
    h, w = rgb.shape[:2]
    keep = np.isfinite(corners).all(axis=(1, 2))
    corners, colours = corners[keep].astype(np.float32), colours[keep]
    if len(corners) == 0:
        return
    sx, sy = corners[:, :, 0].ravel(), corners[:, :, 1].ravel()
    dx = corners[:, [1, 2, 3, 0], 0].ravel() - sx
    dy = corners[:, [1, 2, 3, 0], 1].ravel() - sy
    # A huge box far off the frame must not allocate without bound: at most a few frame sizes per edge.
    steps = np.minimum(np.ceil(np.maximum(np.abs(dx), np.abs(dy))), 4 * (h + w)).astype(np.int64) + 1
    edge = np.repeat(np.arange(len(sx)), steps)
    first = np.repeat(np.cumsum(steps) - steps, steps)
    s = (np.arange(len(edge)) - first).astype(np.float32) / np.repeat(np.maximum(steps - 1, 1), steps)
    px, py = sx[edge] + s * dx[edge], sy[edge] + s * dy[edge]
    across_y = np.repeat((np.abs(dx) >= np.abs(dy)).astype(np.float32), steps)  # x-major: thicken along y
    xs, ys = [], []
    for offset in range(-((thickness - 1) // 2), thickness - (thickness - 1) // 2):  # centred on the edge
        xs.append(np.floor(px + (1 - across_y) * offset))
        ys.append(np.floor(py + across_y * offset))
    x, y = np.concatenate(xs).astype(np.int64), np.concatenate(ys).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    colour = np.tile(colours[edge // 4], (thickness, 1))
    rgb[y[inside], x[inside]] = colour[inside]


@lru_cache(maxsize=8192)
def _tag_image(text: str, colour: tuple[int, int, int], size: int) -> np.ndarray:
    """(h, w, 3) uint8 tag: ``text`` in black or white on ``colour`` (cached; tags repeat across frames)."""
    return _tag_lut(colour)[text_mask(text, size)]


def _draw_tag(rgb: np.ndarray, head: str, tail: str, x: int, y: int, colour: tuple[int, int, int], size: int) -> None:
    """A filled tag in the class colour with readable text, above the box (or inside it at the top edge).

    The tag is two cached images side by side, ``#track label`` and the confidence, so a new score costs a
    cache entry of a few characters rather than a new rendering of the whole tag.
    """
    parts = [_tag_image(head, colour, size)] + ([_tag_image(tail, colour, size)] if tail else [])
    th = parts[0].shape[0]
    tw = sum(p.shape[1] for p in parts)
    h, w = rgb.shape[:2]
    ty = y - th if y - th >= 0 else y
    tx = min(x, max(0, w - tw))
    rows = min(th, h - ty)
    for part in parts:
        cols = min(part.shape[1], w - tx)
        if rows <= 0 or cols <= 0:
            return
        rgb[ty : ty + rows, tx : tx + cols] = part[:rows, :cols]
        tx += cols
