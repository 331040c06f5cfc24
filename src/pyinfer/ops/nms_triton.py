"""The in-graph NMS of :func:`pyinfer.accel.decode_fixed` as a few Triton kernel launches, for candidates on CUDA.

The eager fixed point builds (B, C, C) pairwise tensors (IoU, "better", same class, the suppression matrix) and
reduces them once per round: some thirty kernels, each reading and writing whole 4-million-value tensors at batch
16 (~0.55 ms of a 3.5 ms batch on the H200, the largest part of what the element adds to the model). Here each
round is one launch that recomputes the pairs it needs in registers, block by block, and writes one value per box;
the IoU uses the same float32 operations in the same order (no fused multiply-adds, a rounded division), so the
rounds, the convergence test and the ranks equal the eager ones.

Used when the candidates are on CUDA, Triton is importable and :data:`ENABLED`; a failure to build or launch is
logged once and the eager code serves from then on. Under ``torch.compile`` the eager code is used.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

#: Off with PYINFER_NO_TRITON=1 or PYINFER_NO_TRITON_NMS=1 (the eager code then serves, as without Triton).
ENABLED = os.environ.get("PYINFER_NO_TRITON") != "1" and os.environ.get("PYINFER_NO_TRITON_NMS") != "1"
_FAILED: list[str] = []  # why the kernel is not used (set once)
_KERNEL: Any = None
BI = 32  # boxes i per program
BJ = 64  # boxes j per step of its loop


def available() -> bool:
    """Whether the kernel may be tried (not disabled, not failed before)."""
    return ENABLED and not _FAILED


def _kernel() -> Any:
    global _KERNEL
    if _KERNEL is None:
        from pyinfer.ops import _nms_triton_kernels

        _KERNEL = _nms_triton_kernels.nms_pass
    return _KERNEL


def keep_rank(
    x1: Any, y1: Any, x2: Any, y2: Any, score: Any, cls: Any, valid: Any, iou: Any, iterations: int
) -> tuple[Any, Any, Any]:
    """The fixed-point NMS of ``decode_fixed`` on (B, C) candidates: (keep, rank, unconverged).

    ``keep`` (B, C) bool after ``iterations`` rounds, ``rank`` (B, C) int64: kept boxes better than each box,
    ``unconverged`` (B,) bool: one more round would change ``keep``. ``iou`` is a 0-d float tensor on the same
    device. Raises where the kernel cannot be built or launched (the caller falls back).
    """
    import torch

    kernel = _kernel()
    b, c = (int(n) for n in x1.shape)
    x1, y1, x2, y2, score = (t.float().contiguous() for t in (x1, y1, x2, y2, score))
    cls = cls.contiguous()
    valid_i = valid.to(torch.int32).contiguous()
    # one past each frame's last valid box (decode_fixed's valid boxes are a prefix: their count)
    nv = (valid_i * torch.arange(1, c + 1, dtype=torch.int32, device=x1.device)).amax(dim=1).to(torch.int32)
    thr = iou.float().reshape(())
    grid = (b, (c + BI - 1) // BI)

    def run(keep_in: Any, rank: bool) -> Any:
        out = torch.empty((b, c), dtype=torch.int32, device=x1.device)
        kernel[grid](
            x1, y1, x2, y2, score, cls, valid_i, nv, keep_in, out, thr, c,
            RANK=rank, BI=BI, BJ=BJ, enable_fp_fusion=False,
        )  # fmt: skip
        return out

    keep = valid_i
    for _ in range(iterations):
        keep = run(keep, False)
    unconverged = (run(keep, False) != keep).any(dim=1)
    rank = run(keep, True).long()
    return keep.bool(), rank, unconverged


def try_keep_rank(
    x1: Any, y1: Any, x2: Any, y2: Any, score: Any, cls: Any, valid: Any, iou: Any, iterations: int
) -> tuple[Any, Any, Any] | None:
    """:func:`keep_rank` where it applies (CUDA, not compiling, enabled, not failed before); None when the caller
    must run the eager code. A failure is logged once and turns the kernel off for the process."""
    import torch

    if not available() or x1.device.type != "cuda" or torch.compiler.is_compiling():
        return None
    try:
        return keep_rank(x1, y1, x2, y2, score, cls, valid, iou, iterations)
    except Exception as exc:  # no Triton, no compiler for this GPU, ...: the eager code does the same
        _FAILED.append(f"{type(exc).__name__}: {exc}")
        log.warning("the Triton NMS kernel is not used (the eager code serves): %s", _FAILED[0][:300])
        return None
