"""4:2:0 YUV planes -> letterboxed RGB model input in one GPU kernel (Triton), for NV12/I420 frames on CUDA.

The eager path (:func:`pyinfer.ops.letterbox.resize_gather` with :func:`pyinfer.ops.colour.yuv_rgb_at`) gathers
the source pixels the resize reads and converts them with some forty element-wise kernels over the batch; inside a
CUDA graph each still reads and writes whole intermediate tensors (~1 ms per batch of 16 1080p frames on the
H200, a third of the model's own time). Here each output pixel is computed where it is written: its luma and
chroma taps read from the planes, the same chroma interpolation, matrix, rounding and bilinear weights, in the same
float32 operations in the same order (no fused multiply-adds), so the result equals the eager path's.

Used for frames on CUDA when Triton is importable and :data:`ENABLED`; a failure to build or launch the kernel
(no Triton, an unsupported GPU) is logged once and the eager path serves from then on. Under ``torch.compile`` the
eager path is used (inductor fuses it). The tables of source indices are made once per shape and kept (a CUDA graph
holds their addresses).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

#: Off with PYINFER_NO_TRITON=1 (the eager path then serves, as without Triton).
ENABLED = os.environ.get("PYINFER_NO_TRITON") != "1"
_FAILED: list[str] = []  # why the kernel is not used (set once)
_TABLES: dict[tuple, tuple] = {}
_KERNEL: Any = None
BLOCK = 128


def available() -> bool:
    """Whether the kernel may be tried (not disabled, not failed before)."""
    return ENABLED and not _FAILED


def _kernel() -> Any:
    global _KERNEL
    if _KERNEL is None:
        from pyinfer.ops import _yuv_triton_kernels

        _KERNEL = _yuv_triton_kernels.yuv_letterbox
    return _KERNEL


def _tables(frames: Any, rw: int, rh: int) -> tuple:
    """Per-shape source tables on the frames' device (kept: a CUDA graph holds their addresses)."""
    import torch

    from pyinfer.ops.colour import _chroma_taps
    from pyinfer.ops.letterbox import _taps

    _, h, w, _ = frames.shape
    ch, cw = int(frames.u.shape[1]), int(frames.u.shape[2])
    colour = frames.colour
    dev = frames.device
    key = (h, w, ch, cw, rw, rh, colour.cosited, str(dev))
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    y0, y1, ly = _taps(int(h), rh, dev)
    x0, x1, lx = _taps(int(w), rw, dev)
    two_y, two_x = ly is not None, lx is not None
    y1 = y1 if y1 is not None else y0
    x1 = x1 if x1 is not None else x0
    cy0n, cy0f, _ = _chroma_taps(h, ch, y0, centred=True)
    cy1n, cy1f, _ = _chroma_taps(h, ch, y1, centred=True)
    cx0n, cx0f, odd0 = _chroma_taps(w, cw, x0, centred=not colour.cosited)
    cx1n, cx1f, odd1 = _chroma_taps(w, cw, x1, centred=not colour.cosited)
    rows = torch.stack([y0, y1, cy0n, cy0f, cy1n, cy1f], dim=1).to(torch.int32).contiguous()
    cols = torch.stack([x0, x1, cx0n, cx0f, cx1n, cx1f, odd0.long(), odd1.long()], dim=1).to(torch.int32)
    cols = cols.contiguous()
    zeros_y = torch.zeros(rh, dtype=torch.float32, device=dev)
    zeros_x = torch.zeros(rw, dtype=torch.float32, device=dev)
    ly_t = ly.to(torch.float32).contiguous() if two_y else zeros_y
    lx_t = lx.to(torch.float32).contiguous() if two_x else zeros_x
    hit = _TABLES[key] = (rows, cols, ly_t, lx_t, two_y, two_x)
    return hit


def yuv_letterbox(frames: Any, rw: int, rh: int, out: Any) -> Any:
    """Convert and resize YUV ``frames`` (:class:`pyinfer.ops.colour.YuvFrames`) into ``out`` ((B, 3, rh, rw) float
    view, any strides), RGB divided by 255: what ``resize_gather`` writes, in one kernel. Raises where the kernel
    cannot be built or launched (the caller falls back)."""
    from pyinfer.ops.colour import _KR_KB

    kernel = _kernel()
    rows, cols, ly, lx, two_y, two_x = _tables(frames, rw, rh)
    colour = frames.colour
    kr, kb = _KR_KB[colour.matrix]
    kg = 1.0 - kr - kb
    b = int(frames.y.shape[0])
    y, u, v = frames.y, frames.u, frames.v
    grid = (b * rh, (rw + BLOCK - 1) // BLOCK)
    kernel[grid](
        y, u, v, out, rows, cols, ly, lx, rh, rw,
        *y.stride(), *u.stride(), *v.stride(), *out.stride(),
        16.0, 255.0 / 219.0, 255.0 / 224.0, 2.0 * (1.0 - kr), 2.0 * (1.0 - kb), kr, kb, 1.0 / kg, 1.0 / 255.0,
        TWO_Y=two_y, TWO_X=two_x, NEAREST=colour.nearest_chroma, COSITED=colour.cosited, FULL=colour.full_range,
        BLOCK=BLOCK, enable_fp_fusion=False,
    )  # fmt: skip
    return out


def try_yuv_letterbox(frames: Any, rw: int, rh: int, out: Any) -> bool:
    """:func:`yuv_letterbox` where it applies (CUDA frames, not compiling, enabled, not failed before); False when
    the caller must run the eager path. A failure is logged once and turns the kernel off for the process."""
    import torch

    if not available() or frames.device.type != "cuda" or torch.compiler.is_compiling():
        return False
    try:
        yuv_letterbox(frames, rw, rh, out)
    except Exception as exc:  # no Triton, no compiler for this GPU, ...: the eager path does the same
        _FAILED.append(f"{type(exc).__name__}: {exc}")
        log.warning("the Triton YUV letterbox kernel is not used (the eager path serves): %s", _FAILED[0][:300])
        return False
    return True
