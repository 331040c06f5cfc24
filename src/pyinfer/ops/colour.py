"""YUV 4:2:0 frames (NV12, I420) to RGB, on whatever device the planes are: only the pixels a resize reads.

Decoders hand out 4:2:0 YUV: NVIDIA's ``nvh264dec``/``nvh265dec`` NV12 in CUDA memory, ``avdec_h264`` I420 in
system memory. Converting the whole frame to RGB before the letterbox would write and read 6 MB per 1080p
frame; instead the letterbox asks :func:`yuv_rgb_at` for the RGB value of just the source pixels its bilinear
taps read (one in nine for 1080p -> 640x360), so the conversion and the letterbox are one gather.

The arithmetic, per pixel:

- chroma upsampled to full resolution linearly, as GStreamer's chroma resampler does (``video-chroma.c``):
  vertically the 4:2:0 samples sit between two luma rows (weights 3/4, 1/4 with the nearer and the farther
  chroma row); horizontally they are centred (``chroma-site=jpeg``, weights 3/4, 1/4 too) or co-sited with the
  even luma columns (``mpeg2``: the odd columns average their two neighbours). Each step rounds to an integer,
  as GStreamer's 8-bit resampler does;
- the caps' matrix (BT.601, BT.709, BT.2020, SMPTE 240M) and range (16-235 limited, 0-255 full) in float32;
- rounded to the nearest integer and clamped to 0..255: an RGB uint8 pixel.

GStreamer 1.22's ``videoconvert`` uses 6-bit fixed-point coefficients (limited-range Y 235 gives 253, not
255), so its output differs from this exact conversion by up to a few grey levels (tests/ops/test_colour.py
measures it on the same frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: YUV layouts this module converts: planes Y (H, W), U and V (H/2, W/2) each (strided views for NV12).
YUV_FORMATS = ("NV12", "I420")

#: (Kr, Kb) of each matrix, as GStreamer's gst_video_color_matrix_get_Kr_Kb.
_KR_KB = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
    "smpte240m": (0.212, 0.087),
    "fcc": (0.30, 0.11),
}


@dataclass(frozen=True)
class YuvColour:
    """How a YUV frame's values map to RGB: the matrix, the range and where chroma samples sit.

    Attributes:
        matrix: bt601, bt709, bt2020, smpte240m or fcc.
        full_range: Y and chroma use 0..255 (JPEG) rather than 16..235 / 16..240.
        cosited: chroma samples sit on the even luma columns (chroma-site mpeg2) rather than between two.
        nearest_chroma: each 2x2 block of pixels takes its chroma sample as it is (no interpolation), as
            videoconvert 1.22's I420 fast path does; the default interpolates (as its NV12 path does).
    """

    matrix: str = "bt709"
    full_range: bool = False
    cosited: bool = False
    nearest_chroma: bool = False

    def __post_init__(self) -> None:
        if self.matrix not in _KR_KB:
            raise ValueError(f"colour matrix {self.matrix!r} is not one of {', '.join(_KR_KB)}")

    @classmethod
    def from_video_info(cls, info: Any) -> YuvColour:
        """From a GstVideo.VideoInfo's colorimetry and chroma site (defaults as GStreamer fills them)."""
        from pyinfer._gi import GstVideo

        names = {
            GstVideo.VideoColorMatrix.BT601: "bt601",
            GstVideo.VideoColorMatrix.BT709: "bt709",
            GstVideo.VideoColorMatrix.BT2020: "bt2020",
            GstVideo.VideoColorMatrix.SMPTE240M: "smpte240m",
            GstVideo.VideoColorMatrix.FCC: "fcc",
        }
        colorimetry = info.colorimetry
        matrix = names.get(colorimetry.matrix)
        if matrix is None:  # unknown/RGB on a YUV format: what GStreamer assumes for SD and HD
            matrix = "bt709" if info.height > 576 else "bt601"
        full = colorimetry.range == getattr(GstVideo.VideoColorRange, "0_255")
        cosited = bool(int(info.chroma_site) & int(GstVideo.VideoChromaSite.H_COSITED))
        return cls(matrix, full, cosited)


@dataclass
class YuvFrames:
    """A batch of 4:2:0 frames as three plane views (no copy): Y (B, H, W), U and V (B, ceil(H/2), ceil(W/2)).

    For NV12 ``u`` and ``v`` are the two interleaved halves of the UV plane (``uv[..., 0]``, ``uv[..., 1]``).
    """

    y: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    colour: YuvColour

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, H, W, 3): the RGB frames these planes stand for (what the letterbox reads sizes from)."""
        b, h, w = self.y.shape
        return (int(b), int(h), int(w), 3)

    @property
    def device(self) -> torch.device:
        return self.y.device

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to_rgb(self) -> torch.Tensor:
        """The whole frames as (B, H, W, 3) uint8 RGB (for tests and the CPU path)."""
        import torch

        _, h, w, _ = self.shape
        dev = self.y.device
        return yuv_rgb_at(self, torch.arange(h, device=dev), torch.arange(w, device=dev))


def _chroma_taps(n_luma: int, n_chroma: int, idx: torch.Tensor, centred: bool) -> tuple:
    """For luma positions ``idx`` of one axis: the nearer and farther chroma sample and the rounding rule.

    Centred samples (between two luma positions): position 2k and 2k+1 take 3/4 of sample k and 1/4 of
    sample k-1 (even) or k+1 (odd), clamped at the edges. Co-sited samples: even positions take sample k,
    odd ones average samples k and k+1.
    """
    import torch

    k = torch.div(idx, 2, rounding_mode="floor").clamp_(max=n_chroma - 1)
    odd = (idx % 2) == 1
    if centred:
        other = torch.where(odd, k + 1, k - 1).clamp_(0, n_chroma - 1)
    else:
        other = torch.where(odd, k + 1, k).clamp_(max=n_chroma - 1)
    return k, other, odd


def yuv_rgb_at(frames: YuvFrames, yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """RGB of the source pixels at rows ``yi`` x columns ``xi``: (B, len(yi), len(xi), 3) uint8."""
    import torch

    _, h, w, _ = frames.shape
    ch, cw = int(frames.u.shape[1]), int(frames.u.shape[2])
    cy, cy2, _ = _chroma_taps(h, ch, yi, centred=True)
    cx, cx2, odd_x = _chroma_taps(w, cw, xi, centred=not frames.colour.cosited)
    f32 = torch.float32
    luma = frames.y[:, yi[:, None], xi[None, :]].to(f32)

    def up(plane: torch.Tensor) -> torch.Tensor:
        if frames.colour.nearest_chroma:
            return plane[:, cy][:, :, cx].to(f32)
        # Vertical, then horizontal, each rounded to an integer as GStreamer's 8-bit resampler does.
        near = plane[:, cy].to(f32)
        far = plane[:, cy2].to(f32)
        vert = torch.floor((3 * near + far + 2) / 4)  # (B, n_rows, cw)
        a = vert[:, :, cx]
        b = vert[:, :, cx2]
        if frames.colour.cosited:
            return torch.where(odd_x[None, None, :], torch.floor((a + b + 1) / 2), a)
        return torch.floor((3 * a + b + 2) / 4)

    u, v = up(frames.u), up(frames.v)
    kr, kb = _KR_KB[frames.colour.matrix]
    kg = 1.0 - kr - kb
    if frames.colour.full_range:
        yy, cb, cr = luma, u - 128.0, v - 128.0
    else:
        yy, cb, cr = (luma - 16.0) * (255.0 / 219.0), (u - 128.0) * (255.0 / 224.0), (v - 128.0) * (255.0 / 224.0)
    r = yy + (2.0 * (1.0 - kr)) * cr
    b = yy + (2.0 * (1.0 - kb)) * cb
    g = (yy - kr * r - kb * b) * (1.0 / kg)
    rgb = torch.stack((r, g, b), dim=-1)
    return torch.floor(rgb + 0.5).clamp_(0, 255).to(torch.uint8)
