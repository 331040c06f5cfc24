"""Drawing detections into frames in place: box outlines with NumPy, labels from cached glyph bitmaps.

Text is rendered once per character with Pillow's default font and cached as alpha masks, so drawing a
label is a few NumPy slice operations, for any packed RGB-family layout and row stride.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

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


@lru_cache(maxsize=4096)
def text_mask(text: str, size: int = 14) -> np.ndarray:
    """(h, w) uint8 alpha mask of ``text`` (cached)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    left, top, right, bottom = font.getbbox(text or " ")
    img = Image.new("L", (max(1, right - left + 2), max(1, bottom - top + 2)), 0)
    ImageDraw.Draw(img).text((1 - left, 1 - top), text, fill=255, font=font)
    return np.asarray(img)


def _order(fmt: str) -> list[int]:
    return [2, 1, 0] if fmt.startswith("B") else [0, 1, 2]


def draw_detections(frame: np.ndarray, detections: Detections, fmt: str = "RGB", *, thickness: int = 2) -> None:
    """Draw boxes and ``label confidence`` tags into ``frame`` ((H, W, C) uint8, writable, any strides)."""
    h, w = frame.shape[:2]
    if len(detections) == 0 or h == 0 or w == 0:
        return
    order = _order(fmt)
    boxes = np.round(detections.xyxy).astype(np.int64)
    text_size = max(10, min(24, h // 40))
    for i in range(len(detections)):
        colour = class_colour(detections.class_id[i])[order]
        x0, y0, x1, y1 = np.clip(boxes[i], 0, [w - 1, h - 1, w - 1, h - 1])
        t = max(1, min(thickness, (x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2))
        rgb = frame[..., :3]
        rgb[y0 : y0 + t, x0 : x1 + 1] = colour
        rgb[max(y0, y1 - t + 1) : y1 + 1, x0 : x1 + 1] = colour
        rgb[y0 : y1 + 1, x0 : x0 + t] = colour
        rgb[y0 : y1 + 1, max(x0, x1 - t + 1) : x1 + 1] = colour
        label = detections.label(i)
        if "tracker_id" in detections.extra:
            label = f"#{int(detections.extra['tracker_id'][i])} {label}"
        _draw_tag(rgb, f"{label} {detections.confidence[i]:.2f}", int(x0), int(y0), colour, text_size)


def _draw_tag(rgb: np.ndarray, text: str, x: int, y: int, colour: np.ndarray, size: int) -> None:
    mask = text_mask(text, size)
    mh, mw = mask.shape
    h, w = rgb.shape[:2]
    ty = y - mh if y - mh >= 0 else y  # above the box, or inside it at the top edge
    tx = min(x, max(0, w - mw))
    mh, mw = min(mh, h - ty), min(mw, w - tx)
    if mh <= 0 or mw <= 0:
        return
    region = rgb[ty : ty + mh, tx : tx + mw]
    region[:] = colour  # filled tag in the class colour
    # White or black text, whichever reads better on the colour.
    ink = 0 if int(colour.astype(np.int32) @ np.array([299, 587, 114])) > 150_000 else 255
    alpha = mask[:mh, :mw, None].astype(np.uint16)
    region[:] = ((region.astype(np.uint16) * (255 - alpha) + ink * alpha) // 255).astype(np.uint8)
