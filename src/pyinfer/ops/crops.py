"""Object crops for secondary inference: every object of every frame of a batch, cut and resized in one batch.

:func:`crop_resize` takes packed frames ``(B, H, W, C)`` uint8 where they are (CPU or GPU) and, for N boxes
with their frame index, returns ``(N, out_h, out_w, C)`` uint8 crops on the same device: four gathers and one
blend for the whole batch (no per-object loop, no whole-frame float copy).

Each box is taken as nvinfer takes an object's ``rect_params``: whole pixels, ``left``/``top`` rounded down and
``right``/``bottom`` rounded up, clipped to the frame. The crop is then resized with bilinear taps exactly as
``torch.nn.functional.interpolate(crop, size, mode="bilinear", align_corners=False)`` resizes that crop (no
antialiasing; taps clamped to the crop's own edges), rounded to the nearest integer:

- ``stretch`` (nvinfer's default, ``maintain-aspect-ratio=0``): the crop fills the output;
- ``letterbox`` (``maintain-aspect-ratio=1``): scaled by the smaller ratio, centred, the rest filled with
  :data:`pyinfer.ops.letterbox.PAD_VALUE` (what the detectors' letterbox pads with).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfer.ops.letterbox import PAD_VALUE

if TYPE_CHECKING:
    import torch

#: Smallest crop side in pixels: boxes are widened to at least this (and clipped to the frame).
MIN_SIDE = 1


def pixel_boxes(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``(N, 4)`` float xyxy -> int64 ``(left, top, right, bottom)``: whole pixels covering the box, in the frame,
    at least :data:`MIN_SIDE` wide and high."""
    import torch

    b = boxes.to(torch.float64)
    left = b[:, 0].floor().clamp(0, width - MIN_SIDE)
    top = b[:, 1].floor().clamp(0, height - MIN_SIDE)
    right = torch.maximum(b[:, 2].ceil().clamp(max=width), left + MIN_SIDE)
    bottom = torch.maximum(b[:, 3].ceil().clamp(max=height), top + MIN_SIDE)
    return torch.stack([left, top, right, bottom], dim=1).to(torch.int64)


def _axis(lo: torch.Tensor, hi: torch.Tensor, out: int, ratio: torch.Tensor, pad: torch.Tensor) -> tuple:
    """Per box, bilinear taps along one axis: first and second source index, the second's weight, and which
    output positions fall inside the (scaled) crop. ``ratio`` is source pixels per output pixel; the source
    position is computed in float32 as ``F.interpolate`` computes it (``(dst + 0.5) * ratio - 0.5``, clamped at 0)."""
    import torch

    pos = torch.arange(out, device=lo.device, dtype=torch.float32)[None, :] + 0.5  # (1, out) pixel centres
    size = (hi - lo)[:, None]
    pad32 = pad.to(torch.float32)[:, None]
    rel = ((pos - pad32) * ratio.to(torch.float32)[:, None] - 0.5).clamp(min=0.0)
    i0 = rel.floor()
    w1 = rel - i0
    i0 = torch.minimum(i0.to(torch.int64), size - 1)
    i1 = torch.minimum(i0 + 1, size - 1)
    extent = size.to(torch.float64) / ratio.to(torch.float64)[:, None]  # the crop's size in output pixels
    centre = pos.to(torch.float64)
    inside = (centre >= pad[:, None]) & (centre < pad[:, None] + extent)
    base = lo[:, None]
    return base + i0, base + i1, w1, inside


def crop_resize(
    frames: torch.Tensor,
    frame_index: torch.Tensor,
    boxes: torch.Tensor,
    out_w: int,
    out_h: int,
    *,
    letterbox: bool = False,
) -> torch.Tensor:
    """Crops of ``boxes`` (``(N, 4)`` xyxy in frame pixels) from ``frames[frame_index]``, resized to
    ``(out_h, out_w)``; see the module docs. Returns ``(N, out_h, out_w, C)`` uint8 on the frames' device."""
    import torch

    if frames.dtype != torch.uint8 or frames.ndim != 4:
        raise ValueError(f"crop_resize expects (B, H, W, C) uint8 frames, not {tuple(frames.shape)} {frames.dtype}")
    n = int(boxes.shape[0])
    _, height, width, channels = (int(v) for v in frames.shape)
    dev = frames.device
    if n == 0:
        return torch.empty((0, out_h, out_w, channels), dtype=torch.uint8, device=dev)
    pb = pixel_boxes(boxes, width, height).to(dev)
    fi = frame_index.to(device=dev, dtype=torch.int64)
    bw = (pb[:, 2] - pb[:, 0]).to(torch.float64)
    bh = (pb[:, 3] - pb[:, 1]).to(torch.float64)
    rx, ry = bw / out_w, bh / out_h  # source pixels per output pixel
    px = py = torch.zeros(n, dtype=torch.float64, device=dev)
    if letterbox:
        r = torch.maximum(rx, ry)
        rx = ry = r
        px, py = (out_w - bw / r) / 2.0, (out_h - bh / r) / 2.0
    x0, x1, wx, in_x = _axis(pb[:, 0], pb[:, 2], out_w, rx, px)
    y0, y1, wy, in_y = _axis(pb[:, 1], pb[:, 3], out_h, ry, py)
    # Flat pixel indices into the frames seen as (B*H*W, C) rows: four index_selects of whole pixels (faster than
    # advanced indexing with three broadcast index tensors, on the CPU several times over).
    flat = frames.reshape(-1, channels)
    fy0 = (fi[:, None] * height + y0) * width  # (N, out_h) row starts
    fy1 = (fi[:, None] * height + y1) * width

    def tap(rows: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        idx = (rows[:, :, None] + xs[:, None, :]).reshape(-1)
        return flat.index_select(0, idx).reshape(n, out_h, out_w, channels).to(torch.float32)

    wx4, wy4 = wx[:, None, :, None], wy[:, :, None, None]
    top = torch.lerp(tap(fy0, x0), tap(fy0, x1), wx4.expand(n, out_h, out_w, channels))
    bottom = torch.lerp(tap(fy1, x0), tap(fy1, x1), wx4.expand(n, out_h, out_w, channels))
    out = torch.lerp(top, bottom, wy4.expand(n, out_h, out_w, channels)).round_().clamp_(0, 255).to(torch.uint8)
    if letterbox:
        keep = (in_y[:, :, None] & in_x[:, None, :])[..., None]
        out = torch.where(keep, out, torch.full_like(out, PAD_VALUE))
    return out
