"""Rotated-box YOLO heads (YOLOv8-obb, YOLO11-obb): one output ``[B, 4 + nc + 1, N]``, rotated NMS on the device.

Rows 0..3 are cx, cy, w, h in model-input pixels, rows 4..4+nc the class scores after sigmoid, the last row
the angle in radians (ultralytics: in [-pi/4, 3pi/4), clockwise in image coordinates). Suppression follows
ultralytics' ``non_max_suppression(rotated=True)`` exactly: probabilistic IoU (``batch_probiou``, the
Hellinger distance between the boxes' Gaussians) and *fast NMS*: a box is dropped when any better-scoring
box of its frame and class overlaps it by more than the threshold, whether or not that box was itself
dropped. That is what ultralytics does for OBB models, and it differs from greedy NMS when three boxes chain.

Boxes come back as ``cxcywhr`` in frame pixels (unclipped, as ultralytics' ``scale_boxes(xywh=True)``) and
``xyxy``, the enclosing axis-aligned box clipped to the frame.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pyinfer.decoders.auto import misfit
from pyinfer.decoders.base import (
    MAX_NMS,
    DecodedBatch,
    cap_per_frame,
    check_float,
    finite_candidates,
    out_of_range,
    pack,
    shapes,
    source,
)

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry

#: Pairwise IoU entries computed at once in rotated NMS (bounds memory: ~10 float temporaries per entry).
BLOCK_ELEMENTS = 1 << 21
#: Columns (candidates being judged) per block.
BLOCK_COLUMNS = 1024
_EPS = 1e-7


def _covariance(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 5) cx, cy, w, h, r -> the Gaussian covariance entries a, b, c (each (N,)); ultralytics' formula."""
    a = boxes[:, 2].pow(2) / 12
    b = boxes[:, 3].pow(2) / 12
    cos, sin = boxes[:, 4].cos(), boxes[:, 4].sin()
    cos2, sin2 = cos.pow(2), sin.pow(2)
    return a * cos2 + b * sin2, a * sin2 + b * cos2, (a - b) * cos * sin


def probiou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Probabilistic IoU of every pair: (N, 5) x (M, 5) cxcywhr -> (N, M), as ultralytics' ``batch_probiou``.

    Args:
        boxes1: (N, 5) cx, cy, w, h, angle (radians).
        boxes2: (M, 5) the same.

    Returns:
        (N, M) similarities in [0, 1] (1 - Hellinger distance of the boxes' Gaussians).
    """
    a1, b1, c1 = (v[:, None] for v in _covariance(boxes1))
    a2, b2, c2 = (v[None, :] for v in _covariance(boxes2))
    return _probiou(boxes1[:, 0:1], boxes1[:, 1:2], a1, b1, c1, boxes2[None, :, 0], boxes2[None, :, 1], a2, b2, c2)


def _probiou(
    x1: torch.Tensor, y1: torch.Tensor, a1: torch.Tensor, b1: torch.Tensor, c1: torch.Tensor,
    x2: torch.Tensor, y2: torch.Tensor, a2: torch.Tensor, b2: torch.Tensor, c2: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """probiou of broadcastable centres and covariance entries (box 1 vs box 2)."""
    # Term by term as ultralytics.utils.metrics.batch_probiou writes it, so float32 rounding agrees too.
    sa, sb, sc = a1 + a2, b1 + b2, c1 + c2
    den = sa * sb - sc.pow(2)
    t1 = ((sa * (y1 - y2).pow(2) + sb * (x1 - x2).pow(2)) / (den + _EPS)) * 0.25
    t2 = ((sc * (x2 - x1) * (y1 - y2)) / (den + _EPS)) * 0.5
    t3 = (den / (4 * ((a1 * b1 - c1.pow(2)).clamp_(0) * (a2 * b2 - c2.pow(2)).clamp_(0)).sqrt() + _EPS) + _EPS).log()
    # ultralytics clamps at 100; beyond 80, 1 - exp(-bd) is 1.0 in float32 and float64 alike, so 80 gives the
    # same bits while keeping exp() out of denormals (exp(-100) is one in float32: ~4x slower arithmetic).
    bd = (t1 + t2 + t3 * 0.5).clamp(_EPS, 80.0)
    return 1 - (1.0 - (-bd).exp() + _EPS).sqrt()


def rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """ultralytics' rotated fast NMS within each group, vectorised in blocks.

    Args:
        boxes: (N, 5) cx, cy, w, h, angle.
        scores: (N,) scores.
        groups: (N,) int64 group of each box (frame * nc + class); boxes of different groups never suppress.
        iou_threshold: a box is dropped when a better-scoring box of its group has probiou above this.

    Returns:
        (K,) int64 indices of the kept boxes, in descending score order.
    """
    import torch

    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    # Sort by group, then score descending: a box's possible suppressors are the rows of its own group above it.
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    b, g = boxes[order].float(), groups[order]
    a_, b_, c_ = _covariance(b)
    group_start = torch.searchsorted(g, g)  # first row of each row's group
    idx = torch.arange(n, device=b.device)
    suppressed = torch.zeros(n, dtype=torch.bool, device=b.device)
    col_starts = range(0, n, BLOCK_COLUMNS)
    row_lows = group_start[::BLOCK_COLUMNS].tolist()  # one small transfer for all the block bounds
    row_step = max(1, BLOCK_ELEMENTS // BLOCK_COLUMNS)
    for c0, lo in zip(col_starts, row_lows):
        c1 = min(c0 + BLOCK_COLUMNS, n)
        cols = slice(c0, c1)
        hit = torch.zeros(c1 - c0, dtype=torch.bool, device=b.device)
        for r0 in range(lo, c1, row_step):  # only rows of the columns' groups, above the columns, can suppress
            rows = slice(r0, min(r0 + row_step, c1))
            iou = _probiou(
                b[rows, 0:1], b[rows, 1:2], a_[rows, None], b_[rows, None], c_[rows, None],
                b[None, cols, 0], b[None, cols, 1], a_[None, cols], b_[None, cols], c_[None, cols],
            )  # fmt: skip
            mask = (g[rows, None] == g[None, cols]) & (idx[rows, None] < idx[None, cols])
            hit |= ((iou > iou_threshold) & mask).any(dim=0)
        suppressed[cols] = hit
    keep = order[~suppressed]
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


def enclosing_xyxy(cxcywhr: torch.Tensor, frame_w: int, frame_h: int) -> torch.Tensor:
    """(N, 5) rotated boxes -> (N, 4) enclosing axis-aligned boxes, clipped to the frame."""
    import torch

    cos, sin = cxcywhr[:, 4].cos().abs(), cxcywhr[:, 4].sin().abs()
    half_w, half_h = cxcywhr[:, 2] / 2, cxcywhr[:, 3] / 2
    ex = half_w * cos + half_h * sin
    ey = half_w * sin + half_h * cos
    cx, cy = cxcywhr[:, 0], cxcywhr[:, 1]
    xyxy = torch.stack([cx - ex, cy - ey, cx + ex, cy + ey], dim=1)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, frame_w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, frame_h)
    return xyxy


class YoloObbDecoder:
    """Decoder for ``[B, 4 + nc + 1, N]`` rotated-box outputs (ultralytics ``task=obb`` exports)."""

    name = "yolo-obb"
    resize = "letterbox"

    def __init__(self) -> None:
        self._values_checked = False

    def num_classes(self, outputs: list[torch.Tensor]) -> int:
        """Check the outputs fit this decoder and return the number of classes.

        The first call (the engine's warm-up) also checks the values: class scores in [0, 1], angles in radians
        (within [-pi, pi]). A YOLOv8 output of the same shape passes both (its last class row looks like angles):
        :func:`pyinfer.decoders.auto.check_fit` tells it by the model's class names.
        """
        if len(outputs) < 1:
            raise misfit(
                self.name, outputs, "decoder yolo-obb expects one output [B, 4+nc+1, N]; the model returned none"
            )
        out = outputs[0]
        if out.ndim != 3 or out.shape[1] < 6:
            raise misfit(
                self.name,
                outputs,
                f"decoder yolo-obb expects an output of shape [B, 4+nc+1, N] (box, class scores, angle) with "
                f"nc >= 1; got {list(out.shape)}",
            )
        check_float(self.name, out)
        if not self._values_checked:
            nc = out.shape[1] - 5
            bad = out_of_range(out[:, 4:-1], 0.0, 1.0)
            if bad is not None:
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder yolo-obb reads output {shapes(outputs)} as a box, {nc} class scores and an angle "
                    f"for each of {out.shape[2]} anchors, but the class scores run from {bad[0]:.4g} to "
                    f"{bad[1]:.4g}, where scores lie in [0, 1]",
                )
            bad = out_of_range(out[:, -1], -math.pi, math.pi)
            if bad is not None:
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder yolo-obb reads the last row of output {shapes(outputs)} as angles in radians, but "
                    f"it runs from {bad[0]:.4g} to {bad[1]:.4g}",
                )
            self._values_checked = True
        return int(out.shape[1] - 5)

    def decode(
        self,
        outputs: list[torch.Tensor],
        geometry: LetterboxGeometry,
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> DecodedBatch:
        """Decode a batch; all frames share ``geometry``."""
        import torch

        nc = self.num_classes(outputs)
        pred = outputs[0].transpose(1, 2)  # (B, N, 4 + nc + 1)
        bsz = pred.shape[0]
        scores, cls = pred[..., 4 : 4 + nc].max(dim=-1)
        # NaN/inf boxes or angles are dropped: their probiou is NaN, so they would suppress nothing and be kept.
        candidates, nonfinite = finite_candidates(scores, conf_threshold, pred[..., :4], pred[..., -1])
        frame_idx, anchor_idx = candidates.nonzero(as_tuple=True)
        scores = scores[frame_idx, anchor_idx].float()
        if scores.numel() > MAX_NMS:
            top = scores.topk(MAX_NMS).indices
            frame_idx, anchor_idx, scores = frame_idx[top], anchor_idx[top], scores[top]
        cls = cls[frame_idx, anchor_idx]
        rows = pred[frame_idx, anchor_idx].float()
        rot = torch.cat([rows[:, :4], rows[:, -1:]], dim=1)
        keep = rotated_nms(rot, scores, frame_idx * nc + cls, iou_threshold)
        keep = cap_per_frame(keep, frame_idx, max_detections)
        rot = geometry.to_frame_cxcywh(rot[keep])
        xyxy = enclosing_xyxy(rot, geometry.frame_w, geometry.frame_h)
        return pack(
            xyxy, scores[keep], cls[keep], frame_idx[keep], bsz,
            cxcywhr=rot, nonfinite=nonfinite, where=source(self.name, outputs),
        )  # fmt: skip
