"""Batched letterbox on the model's device: uint8 HWC frames -> float NCHW model input.

The same arithmetic as ultralytics' ``LetterBox(auto=False, center=True)``: scale by
``min(out_h / h, out_w / w)``, resize, pad evenly with grey 114, divide by 255. Training and inference
both go through :func:`letterbox`, so the model sees at run time exactly what it saw in training.
``stretch=True`` resizes to the whole input without keeping the aspect ratio (no padding), as DETR-style
models (RT-DETR, D-FINE) and ultralytics' RT-DETR predictor do.

Boxes are mapped back with per-axis gains ``resized / frame`` (as ultralytics' ``scale_boxes`` does in
8.4): the resize maps the frame's width onto exactly ``resized_w`` pixels, so dividing by the rounded size's
ratio is exact, where dividing by ``scale`` is off by up to half a model pixel at the far edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxGeometry:
    """How one frame size maps into the model input: ``model = frame * (gain_x, gain_y) + (pad_x, pad_y)``."""

    frame_w: int
    frame_h: int
    scale: float
    pad_x: float
    pad_y: float
    resized_w: int
    resized_h: int
    input_w: int = 0  # the model input size (0 if unknown: made by hand without it)
    input_h: int = 0

    @classmethod
    def compute(
        cls, frame_w: int, frame_h: int, input_w: int, input_h: int, *, stretch: bool = False
    ) -> LetterboxGeometry:
        """Geometry of a frame_w x frame_h frame letterboxed (or, with ``stretch``, resized) into input_w x input_h."""
        if stretch:
            scale = min(input_w / frame_w, input_h / frame_h)
            return cls(frame_w, frame_h, scale, 0.0, 0.0, input_w, input_h, input_w, input_h)
        scale = min(input_w / frame_w, input_h / frame_h)
        # At least one pixel, as ultralytics keeps thin images.
        rw, rh = max(round(frame_w * scale), 1), max(round(frame_h * scale), 1)
        # Integer offsets, as ultralytics rounds them (left/top = round(pad - 0.1)).
        pad_x = float(round((input_w - rw) / 2 - 0.1))
        pad_y = float(round((input_h - rh) / 2 - 0.1))
        return cls(frame_w, frame_h, scale, pad_x, pad_y, rw, rh, input_w, input_h)

    @property
    def gain_x(self) -> float:
        """Model pixels per frame pixel horizontally: ``resized_w / frame_w`` (``scale`` up to rounding)."""
        return self.resized_w / self.frame_w

    @property
    def gain_y(self) -> float:
        """Model pixels per frame pixel vertically: ``resized_h / frame_h``."""
        return self.resized_h / self.frame_h

    def to_frame(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Map (N, 4) model-input xyxy boxes back to frame pixels, clipped to the frame (in place)."""
        boxes_xyxy[:, 0::2] = ((boxes_xyxy[:, 0::2] - self.pad_x) / self.gain_x).clamp_(0, self.frame_w)
        boxes_xyxy[:, 1::2] = ((boxes_xyxy[:, 1::2] - self.pad_y) / self.gain_y).clamp_(0, self.frame_h)
        return boxes_xyxy

    def to_frame_cxcywh(self, boxes: torch.Tensor) -> torch.Tensor:
        """Map (N, >=4) model-input cx, cy, w, h (e.g. rotated boxes, angle kept) to frame pixels, unclipped (in place).

        Widths and heights are divided by the x and y gains whatever the angle, as ultralytics' ``scale_boxes``
        does for rotated boxes (the two gains differ by under half a model pixel across the frame).
        """
        boxes[:, 0] = (boxes[:, 0] - self.pad_x) / self.gain_x
        boxes[:, 1] = (boxes[:, 1] - self.pad_y) / self.gain_y
        boxes[:, 2] /= self.gain_x
        boxes[:, 3] /= self.gain_y
        return boxes


def letterbox(
    frames: torch.Tensor,
    input_w: int,
    input_h: int,
    *,
    out: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    channels: str = "RGB",
    stretch: bool = False,
) -> tuple[torch.Tensor, LetterboxGeometry]:
    """Letterbox a batch of same-sized frames.

    Args:
        frames: (B, H, W, C) uint8 frames, C >= 3, on any device; may be a strided view (padded rows). Or 4:2:0
            YUV planes (:class:`pyinfer.ops.colour.YuvFrames`): converted to RGB pixel by pixel as the resize
            gathers them (one step, any device).
        input_w: model input width.
        input_h: model input height.
        out: optional preallocated (B, 3, input_h, input_w) float output (reused between calls).
        dtype: output dtype (default float32, or out's dtype).
        channels: channel order of ``frames`` ("RGB", "BGR", "RGBA", "BGRA", "RGBx", "BGRx"); the output is RGB.
        stretch: resize to the whole input, ignoring the aspect ratio (no padding), for DETR-style models.

    Returns:
        (B, 3, input_h, input_w) float tensor in [0, 1] on the frames' device, and the geometry.
    """
    import torch
    import torch.nn.functional as F

    from pyinfer.ops.colour import YuvFrames

    b, h, w, _ = frames.shape
    geo = LetterboxGeometry.compute(w, h, input_w, input_h, stretch=stretch)
    if dtype is None:
        dtype = out.dtype if out is not None else torch.float32
    if out is None or out.shape != (b, 3, input_h, input_w):
        out = torch.empty((b, 3, input_h, input_w), dtype=dtype, device=frames.device)
    resize = (geo.resized_w, geo.resized_h) != (w, h)
    px, py = int(geo.pad_x), int(geo.pad_y)
    if frames.device.type != "cpu" or isinstance(frames, YuvFrames):
        # Off the CPU (and for YUV planes anywhere): read only the source pixels the resize uses, straight from
        # uint8 (see resize_gather).
        _fill_pad(out, px, py, geo.resized_w, geo.resized_h)
        picture = out[:, :, py : py + geo.resized_h, px : px + geo.resized_w]
        resize_gather(frames, geo.resized_w, geo.resized_h, channels, picture)
        return out, geo
    # NCHW view of the colour planes (channels-last in memory: no copy).
    x = frames[..., :3].permute(0, 3, 1, 2)
    if resize:
        # The CPU has a vectorised uint8 bilinear kernel: resizing before the float conversion is ~3x faster
        # than converting the full frame first (1280x720 -> 384: 0.39 ms vs 1.3 ms); values differ by at most
        # one grey level from the float path.
        x = F.interpolate(x, size=(geo.resized_h, geo.resized_w), mode="bilinear", align_corners=False).to(dtype)
    else:
        x = x.to(dtype)
    if channels.startswith("B"):
        x = x.flip(1)
    out.fill_(PAD_VALUE / 255.0)
    out[:, :, py : py + geo.resized_h, px : px + geo.resized_w] = x.mul_(1.0 / 255.0)
    return out, geo


def _fill_pad(out: torch.Tensor, px: int, py: int, rw: int, rh: int) -> None:
    """Fill the grey bands around the picture (only them: the picture is written next)."""
    for band in (
        out[:, :, :py],
        out[:, :, py + rh :],
        out[:, :, py : py + rh, :px],
        out[:, :, py : py + rh, px + rw :],
    ):
        if band.numel():
            band.fill_(PAD_VALUE / 255.0)


#: Source taps per (input size, output size, device), made once outside compiled code.
_TAPS: dict[tuple[int, int, str], tuple] = {}


def _taps(n_in: int, n_out: int, device: torch.device) -> tuple:
    """Bilinear (align_corners=False) source taps of one axis, as torch's CUDA ``upsample_bilinear2d`` computes them.

    Returns ``(i0, i1, l1)``: (n_out,) int64 first and second source index and the float32 weight of the second
    (``l0 = 1 - l1``); ``i1`` and ``l1`` are None where every weight of the second tap is 0 (no resize, or an odd
    integer ratio such as 1080 -> 360: each output pixel is one source pixel).
    """
    import torch

    key = (n_in, n_out, str(device))
    compiling = torch.compiler.is_compiling()
    if not compiling and key in _TAPS:
        return _TAPS[key]
    if n_in == n_out or (n_in % n_out == 0 and (n_in // n_out) % 2 == 1):
        k = n_in // n_out
        # scale * (d + 0.5) - 0.5 = k * d + (k - 1) / 2 exactly: an integer, weight 0 on the second tap.
        taps: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]
        taps = (torch.arange(n_out, device=device) * k + (k - 1) // 2, None, None)
    else:
        # As area_pixel_compute_source_index: float32 scale = in / out, src = scale * (d + 0.5) - 0.5, >= 0.
        real = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp_(min=0)
        i0 = real.to(torch.int64)
        i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
        taps = (i0, i1, real - i0)
    if not compiling:
        _TAPS[key] = taps
    return taps


def resize_gather(frames: torch.Tensor, rw: int, rh: int, channels: str, out: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of (B, H, W, C) uint8 frames into ``out`` ((B, 3, rh, rw) float view), RGB, divided by 255.

    The arithmetic of ``F.interpolate(frames.to(dtype), mode="bilinear", align_corners=False)`` followed by
    ``* (1 / 255)`` in ``out``'s dtype, the GPU path before: the same source indices and weights, the same
    formula ``l0y * (l0x * a + l1x * b) + l1y * (l0x * c + l1x * d)`` in float32, rounded to ``out``'s dtype,
    then scaled. Only the source pixels the resize reads are gathered, from uint8: for 1080p -> 640x360 that
    is one pixel in nine (an odd integer ratio: each output pixel is one source pixel, so no arithmetic and the
    same result bit for bit), where converting the whole frame to float first moved ~20 MB per frame.
    (Where the two weights are not 0/1, the last bit may differ from torch's kernel, which may fuse
    multiply-adds.)
    ``frames`` may also be YUV planes (:class:`pyinfer.ops.colour.YuvFrames`): each gathered source pixel is then
    converted to RGB first (:func:`pyinfer.ops.colour.yuv_rgb_at`), so conversion and resize are one step.
    """
    import torch

    from pyinfer.ops.colour import YuvFrames, yuv_rgb_at

    if isinstance(frames, YuvFrames) and frames.device.type == "cuda":
        from pyinfer.ops.yuv_triton import try_yuv_letterbox

        if try_yuv_letterbox(frames, rw, rh, out):  # the same values in one kernel (pyinfer.ops.yuv_triton)
            return out
    _, h, w, _ = frames.shape
    dev = frames.device
    y0, y1, ly = _taps(int(h), rh, dev)
    x0, x1, lx = _taps(int(w), rw, dev)
    c = torch.arange(2, -1, -1, device=dev) if channels.startswith("B") else torch.arange(3, device=dev)
    cc = c[None, None, :]

    def tap(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        if isinstance(frames, YuvFrames):
            return yuv_rgb_at(frames, yi, xi)  # (B, rh, rw, 3) uint8 RGB
        return frames[:, yi[:, None, None], xi[None, :, None], cc]  # (B, rh, rw, 3) uint8

    if ly is None and lx is None:
        # One source pixel per output pixel: scale the gathered uint8 straight into out (float32 arithmetic, as
        # the float path's 1.0 * v then * (1 / 255)).
        return _scaled_into(out, tap(y0, x0).permute(0, 3, 1, 2))
    f32 = torch.float32
    if lx is None:
        lyc = ly[:, None, None]
        val = (1 - lyc) * tap(y0, x0).to(f32) + lyc * tap(y1, x0).to(f32)
    elif ly is None:
        lxc = lx[None, :, None]
        val = (1 - lxc) * tap(y0, x0).to(f32) + lxc * tap(y0, x1).to(f32)
    else:
        lyc, lxc = ly[:, None, None], lx[None, :, None]
        top = (1 - lxc) * tap(y0, x0).to(f32) + lxc * tap(y0, x1).to(f32)
        bottom = (1 - lxc) * tap(y1, x0).to(f32) + lxc * tap(y1, x1).to(f32)
        val = (1 - lyc) * top + lyc * bottom
    return _scaled_into(out, val.to(out.dtype).permute(0, 3, 1, 2))


def _scaled_into(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[...] = x * (1 / 255)``, computed in float32 (x's opmath) and rounded to out's dtype once."""
    import torch

    if torch.compiler.is_compiling():  # dynamo takes no strided out=; inductor fuses the two anyway
        return out.copy_(x.to(torch.float32) * (1.0 / 255.0))
    return torch.mul(x, 1.0 / 255.0, out=out)  # one kernel in eager mode (a CUDA graph replays each one)
