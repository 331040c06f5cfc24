"""Drawing detections into frames in place: boxes, rotated boxes and labelled tags, with NumPy only.

Boxes are slice assignments (axis-aligned) or stamped points along the edges (rotated, as polygons). Text is
rendered once per character and size with Pillow's default font and cached as alpha masks; a label is those
masks side by side, and its tag is one lookup from alpha to colour. So drawing works on any packed RGB-family
layout and row stride (a strided view of mapped memory) and costs a few NumPy operations per detection.

Line width and text size follow the frame height unless given (:func:`auto_thickness`, :func:`auto_text_size`),
and tags are placed so that none covers another (:func:`_place_tag`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
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


def auto_thickness(height: int) -> int:
    """Box line width for a frame ``height`` pixels high: 2 up to 720p (as before sizes scaled), 3 at 1080p
    (nvinfer's ``border_width``), 6 at 4K: one pixel per 360 rows."""
    return max(2, round(height / 360))


def auto_text_size(height: int) -> int:
    """Tag text size (pixels) for a frame ``height`` pixels high: ``height / 40`` between 10 and 24 up to
    1080p (12 at 480p, 18 at 720p, 24 at 1080p), then ``height / 45`` (48 at 4K)."""
    return max(10, min(height // 40, max(24, round(height / 45))))


def predicted_thickness(thickness: int) -> int:
    """Line width of predicted boxes (no inference on the frame): a third of the others', at least 1 pixel."""
    return max(1, thickness // 3)


@lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _margin(size: int) -> int:
    """Blank pixels around the text of a tag: 1 up to 31-pixel text, then a sixteenth of the size."""
    return max(1, size // 16)


@lru_cache(maxsize=16)
def _cell(size: int) -> tuple[int, int]:
    """Height of a text line (margins included) and the y offset that puts the tallest glyph below the top
    margin."""
    _, top, _, bottom = _font(size).getbbox("Ag|#(%")
    m = _margin(size)
    return bottom - top + 2 * m, m - top


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
    """(h, w) uint8 alpha mask of ``text`` at ``size`` pixels: cached glyphs side by side, a margin each side."""
    height = _cell(size)[0]
    pad = np.zeros((height, _margin(size)), np.uint8)
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


def label_text(detections: Detections, i: int, *, confidence: bool = True, track_id: bool = True) -> str:
    """The tag of detection ``i``: ``#track label confidence`` (no confidence on predicted boxes, nor without
    ``confidence``; no ``#track`` without ``track_id``)."""
    return "".join(_tag_parts(detections[i : i + 1], confidence, track_id)[0])


#: ``Detections.extra`` key of the text secondary classifiers add to a tag (pyosd sets it from the metadata).
SECONDARY_LABELS = "secondary_labels"


def _tag_parts(detections: Detections, confidence: bool = True, track_id: bool = True) -> list[tuple[str, str]]:
    """Each detection's tag in two parts: ``#track label`` (stable over frames) and `` confidence`` (empty on
    predicted boxes, or without ``confidence``); ``track_id=False`` leaves out ``#track``."""
    labels = detections.labels
    heads = [labels[c] if 0 <= c < len(labels) else str(c) for c in detections.class_id.tolist()]
    secondary = detections.extra.get(SECONDARY_LABELS)
    if secondary is not None:  # a secondary classifier's best class follows the label
        heads = [f"{h} {s}" if s else h for h, s in zip(heads, np.asarray(secondary, object).tolist())]
    if track_id and detections.tracker_id is not None:
        heads = [h if t == _UNTRACKED else f"#{t} {h}" for h, t in zip(heads, detections.tracker_id.tolist())]
    if not confidence:
        return [(h, "") for h in heads]
    tails = [f" {c:.2f}" for c in detections.confidence.astype(np.float64).tolist()]
    predicted = detections.extra.get("predicted")
    if predicted is not None:
        tails = [("" if p else t) for t, p in zip(tails, np.asarray(predicted, bool).tolist())]
    return list(zip(heads, tails))


def draw_detections(
    frame: np.ndarray,
    detections: Detections,
    fmt: str = "RGB",
    *,
    thickness: int = 0,
    text_size: int = 0,
    display_bbox: bool = True,
    display_text: bool = True,
    display_confidence: bool = True,
    display_track_id: bool = True,
    display_mask: bool = True,
    display_keypoints: bool = True,
) -> None:
    """Draw boxes (rotated ones as polygons) and ``#track label confidence`` tags into ``frame`` in place;
    instance masks (translucent, in the class colour) and keypoints (dots, and COCO's person skeleton for 17
    keypoints) where the detections carry them.

    Tags go above their box (inside it at the top of the frame), shifted down past tags placed before them
    (or up, where the frame's bottom is too near) so that none covers another, in detection order; they stay
    inside the frame. Only where the frame has no room left do tags overlap.

    Args:
        frame: (H, W, C) uint8, writable, any strides; C >= 3 (a fourth channel is left as it is).
        detections: boxes in frame pixels; ``tracker_id`` and ``extra["predicted"]`` are shown when
            present (predicted boxes get thinner lines, :func:`predicted_thickness`, and no confidence).
        fmt: the pixel format (``RGB``, ``BGRx``, ...): only the channel order matters.
        thickness: line width in pixels; 0: :func:`auto_thickness` of the frame height.
        text_size: tag text size in pixels; 0: :func:`auto_text_size` of the frame height.
        display_bbox: draw the boxes.
        display_text: draw the tags.
        display_confidence: put the confidence in the tags.
        display_track_id: put ``#track`` in the tags.
        display_mask: fill ``detections.masks`` at :data:`MASK_ALPHA` (as nvdsosd's display-mask).
        display_keypoints: draw ``detections.keypoints`` whose confidence is at least :data:`KEYPOINT_MIN_CONF`.
    """
    h, w = frame.shape[:2]
    n = len(detections)
    masks = detections.masks if display_mask else None
    kpts = detections.keypoints if display_keypoints else None
    if n == 0 or h == 0 or w == 0 or not (display_bbox or display_text or masks is not None or kpts is not None):
        return
    rgb = frame[..., :3]
    colours = PALETTE[detections.class_id.astype(np.int64) % len(PALETTE)][:, _order(fmt)]
    if masks is not None:
        _fill_masks(rgb, detections.xyxy, masks, colours)
    if kpts is not None:
        _draw_keypoints(rgb, kpts, colours, thickness if thickness > 0 else auto_thickness(h))
    boxes = np.clip(np.round(np.nan_to_num(detections.xyxy)), 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.int64)
    box_list = boxes.tolist()
    if display_bbox:
        thickness = thickness if thickness > 0 else auto_thickness(h)
        predicted = detections.extra.get("predicted")
        if predicted is None:
            thick = np.full(n, thickness)
        else:
            thick = np.where(np.asarray(predicted, bool), predicted_thickness(thickness), thickness)
        rotated = np.zeros(n, bool)
        if detections.cxcywhr is not None:
            angle = detections.cxcywhr[:, 4].astype(np.float64)
            rotated = np.abs(np.remainder(angle + math.pi / 4, math.pi / 2) - math.pi / 4) > _FLAT
            for t in np.unique(thick[rotated]).tolist():
                sel = rotated & (thick == t)
                _draw_polygons(rgb, _corners(detections.cxcywhr[sel]), colours[sel], t)
        thick_list = thick.tolist()
        pixels = _pixels(rgb)  # a pixel per item: a 3-byte colour fills a slice faster than an (R, G, B) row
        target, fill = (rgb, colours) if pixels is None else (pixels, np.ascontiguousarray(colours).view("V3")[:, 0])
        for i in np.flatnonzero(~rotated).tolist():
            _draw_box(target, box_list[i], fill[i], thick_list[i])
    if display_text:
        size = text_size if text_size > 0 else auto_text_size(h)
        _draw_tags(
            rgb, _tag_parts(detections, display_confidence, display_track_id), box_list,
            [tuple(c) for c in colours.tolist()], size,
        )  # fmt: skip


#: Colour of the caption tags (pyvlm's texts about the whole frame): dark grey, white text.
CAPTION_COLOUR = (40, 40, 40)


def draw_captions(frame: np.ndarray, lines: list[str], fmt: str = "RGB", *, text_size: int = 0) -> None:
    """Draw ``lines`` (captions, answers) as tags stacked at the frame's top-left corner, clipped to the frame.

    Args:
        frame: (H, W, C) uint8, writable; C >= 3.
        lines: one tag each, top to bottom.
        fmt: the pixel format (only the channel order matters; the caption colour is grey).
        text_size: tag text size in pixels; 0: :func:`auto_text_size` of the frame height.
    """
    h, w = frame.shape[:2]
    if not lines or h == 0 or w == 0:
        return
    rgb = frame[..., :3]
    size = text_size if text_size > 0 else auto_text_size(h)
    y = x = _margin(size)
    for line in lines:
        tag = _tag_image(line, CAPTION_COLOUR, size)
        rows, cols = min(tag.shape[0], h - y), min(tag.shape[1], w - x)
        if rows <= 0:
            return
        if cols > 0:
            rgb[y : y + rows, x : x + cols] = tag[:rows, :cols]
        y += tag.shape[0]


#: Opacity of a drawn instance mask.
MASK_ALPHA = 0.45
#: Keypoints below this confidence are not drawn (nor the skeleton lines that end at them).
KEYPOINT_MIN_CONF = 0.5
#: COCO's person skeleton (ultralytics' order of the 17 keypoints): pairs of keypoint indices.
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
                 (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))  # fmt: skip


def _fill_masks(rgb: np.ndarray, xyxy: np.ndarray, masks: np.ndarray, colours: np.ndarray) -> None:
    """Blend each box-local mask (cells >= 128) into its box's pixels, nearest cell per pixel centre."""
    h, w = rgb.shape[:2]
    s_h, s_w = masks.shape[1], masks.shape[2]
    for i, (x1, y1, x2, y2) in enumerate(np.nan_to_num(xyxy.astype(np.float64)).tolist()):
        c0, c1 = max(math.floor(x1), 0), min(math.ceil(x2), w)
        r0, r1 = max(math.floor(y1), 0), min(math.ceil(y2), h)
        if c1 <= c0 or r1 <= r0 or x2 <= x1 or y2 <= y1:
            continue
        cx = np.floor((np.arange(c0, c1) + 0.5 - x1) * (s_w / (x2 - x1))).astype(np.int64)
        cy = np.floor((np.arange(r0, r1) + 0.5 - y1) * (s_h / (y2 - y1))).astype(np.int64)
        ok_x, ok_y = (cx >= 0) & (cx < s_w), (cy >= 0) & (cy < s_h)
        on = masks[i][np.clip(cy, 0, s_h - 1)[:, None], np.clip(cx, 0, s_w - 1)[None, :]] >= 128
        on &= ok_y[:, None] & ok_x[None, :]
        if not on.any():
            continue
        region = rgb[r0:r1, c0:c1]
        blended = region[on].astype(np.float32) * (1 - MASK_ALPHA) + colours[i].astype(np.float32) * MASK_ALPHA
        region[on] = np.round(blended).astype(np.uint8)


def _draw_keypoints(rgb: np.ndarray, kpts: np.ndarray, colours: np.ndarray, thickness: int) -> None:
    """Dots at confident keypoints and, for 17 keypoints, COCO's skeleton between confident pairs."""
    h, w = rgb.shape[:2]
    r = max(thickness, 2)
    for i in range(len(kpts)):
        pts = np.nan_to_num(kpts[i].astype(np.float64))
        seen = pts[:, 2] >= KEYPOINT_MIN_CONF
        colour = colours[i]
        if len(pts) == 17:
            for a, b in COCO_SKELETON:
                if seen[a] and seen[b]:
                    _draw_segment(rgb, pts[a, :2], pts[b, :2], colour, thickness)
        for x, y in pts[seen, :2].tolist():
            x0, y0 = round(x), round(y)
            rgb[max(y0 - r, 0) : min(y0 + r + 1, h), max(x0 - r, 0) : min(x0 + r + 1, w)] = colour


def _draw_segment(rgb: np.ndarray, p0: np.ndarray, p1: np.ndarray, colour: np.ndarray, thickness: int) -> None:
    """A straight line of ``thickness`` pixels (a DDA along the major axis, thickened across it)."""
    h, w = rgb.shape[:2]
    d = p1 - p0
    steps = int(min(math.ceil(max(abs(d[0]), abs(d[1]))), 4 * (h + w))) + 1
    t = np.linspace(0.0, 1.0, steps)
    px = np.floor(p0[0] + t * d[0]).astype(np.intp)
    py = np.floor(p0[1] + t * d[1]).astype(np.intp)
    offsets = np.arange(-((thickness - 1) // 2), thickness - (thickness - 1) // 2)[:, None]
    across_y = abs(d[0]) >= abs(d[1])
    x = (px + (0 if across_y else offsets)).ravel()
    y = (py + (offsets if across_y else 0)).ravel()
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    rgb[y[inside], x[inside]] = colour


def _draw_box(rgb: np.ndarray, box: list[int], colour: np.ndarray | np.void, thickness: int) -> None:
    """An axis-aligned outline into ``rgb``: (H, W, 3) with an (R, G, B) ``colour``, or :func:`_pixels` with
    a 3-byte one."""
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


def _pixels(rgb: np.ndarray) -> np.ndarray | None:
    """(H, W) view of ``rgb``'s pixels as 3-byte items (one scatter writes a pixel, not three bytes), or None
    where its channels are not adjacent bytes."""
    try:
        return rgb.view("V3")[..., 0]
    except ValueError:
        return None


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
    px = np.floor(sx[edge] + s * dx[edge]).astype(np.intp)
    py = np.floor(sy[edge] + s * dy[edge]).astype(np.intp)
    across_y = np.repeat(np.abs(dx) >= np.abs(dy), steps)  # x-major: thicken along y
    # Offsets centred on the edge; floor(p + k) = floor(p) + k, so thickening is integer arithmetic.
    offsets = np.arange(-((thickness - 1) // 2), thickness - (thickness - 1) // 2)[:, None]
    x = (px + np.where(across_y, 0, offsets)).ravel()
    y = (py + np.where(across_y, offsets, 0)).ravel()
    # Negative coordinates wrap to huge unsigned ones: one comparison per axis.
    inside = (x.view(np.uintp) < w) & (y.view(np.uintp) < h)
    x, y, point_edge = x[inside], y[inside], np.tile(edge, thickness)[inside] // 4
    pixels = _pixels(rgb)
    if pixels is None:
        rgb[y, x] = colours[point_edge]
    else:
        pixels[y, x] = np.ascontiguousarray(colours).view("V3")[:, 0][point_edge]


@lru_cache(maxsize=8192)
def _tag_image(text: str, colour: tuple[int, int, int], size: int) -> np.ndarray:
    """(h, w, 3) uint8 tag: ``text`` in black or white on ``colour`` (cached; tags repeat across frames)."""
    return _tag_lut(colour)[text_mask(text, size)]


def _place_tag(
    placed: list[tuple[int, int, int]], x: int, y: int, tw: int, th: int, w: int, h: int
) -> tuple[int, int]:  # fmt: skip
    """Top-left corner of a ``tw`` x ``th`` tag for a box whose top-left corner is (``x``, ``y``), covering
    none of the ``placed`` tags, which it joins; ``placed``: (top, left, right) sorted, all ``th`` high.

    Above the box, or inside it where the frame's top cuts that off; then shifted down past the placed tags
    it would cover, or, where that runs past the frame's bottom, up from where it started. Where both fail
    (a frame full of tags) it stays where it started. One pass over the tags sorted by top, from the first
    that could reach its rows: a tag it is shifted below starts no lower than the next one it could cover
    (and symmetrically going up), so no tag needs a second look.
    """
    tx = min(x, max(0, w - tw))
    right = tx + tw
    start = y - th if y >= th else y
    start = ty = max(0, min(start, h - th))
    if placed:
        for top, left, end in placed[bisect_right(placed, (ty - th, w, w)) :]:  # down
            if top >= ty + th:
                break
            if left < right and end > tx and top + th > ty:
                ty = top + th
        if ty + th > h:
            ty = start
            for top, left, end in reversed(placed[: bisect_left(placed, (ty + th,))]):  # up
                if top + th <= ty:
                    break
                if left < right and end > tx and top < ty + th:
                    ty = top - th
            if ty < 0:
                ty = start
    insort(placed, (ty, tx, right))
    return tx, ty


def _draw_tags(
    rgb: np.ndarray, tags: list[tuple[str, str]], boxes: list[list[int]], colours: list[tuple[int, ...]], size: int
) -> None:
    """Filled tags in the class colours with readable text, placed by :func:`_place_tag` in detection order.

    A tag is two cached images side by side, ``#track label`` and the confidence, so a new score costs a
    cache entry of a few characters rather than a new rendering of the whole tag.
    """
    h, w = rgb.shape[:2]
    placed: list[tuple[int, int, int]] = []
    for (head, tail), box, colour in zip(tags, boxes, colours):
        first = _tag_image(head, colour, size)
        th, tw = first.shape[:2]
        second = _tag_image(tail, colour, size) if tail else None
        if second is not None:
            tw += second.shape[1]
        tx, ty = _place_tag(placed, box[0], box[1], tw, th, w, h)
        rows = min(th, h - ty)
        if rows <= 0:
            continue
        for part in (first, second):
            if part is None:
                break
            cols = min(part.shape[1], w - tx)
            if cols <= 0:
                break
            rgb[ty : ty + rows, tx : tx + cols] = part[:rows, :cols]
            tx += cols
