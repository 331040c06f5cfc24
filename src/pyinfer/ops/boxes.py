"""Box geometry: pairwise IoU in NumPy; batched NMS in torch (imported when called)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: NMS sees coordinates clipped to +-this many model pixels (~250 times a 4K input), so that one absurd finite
#: box (``cx=1e30``) cannot push every box of the batch out of float64 precision; IoU of boxes within it is exact.
NMS_COORDINATE_LIMIT = 2.0**20


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of two sets of axis-aligned boxes.

    Args:
        a_xyxy: (N, 4) boxes as left, top, right, bottom.
        b_xyxy: (M, 4) boxes as left, top, right, bottom.

    Returns:
        (N, M) float64 IoU; 0 where the union is empty (two degenerate boxes).
    """
    a = np.asarray(a_xyxy, np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def batched_nms(xyxy: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS within each group (frame and class), as torchvision's ``batched_nms``, for any finite boxes.

    torchvision keeps groups apart by offsetting each box by ``group * (max coordinate + 1)``. That assumes
    coordinates >= 0 (a box of the next group past the top-left corner lands on the previous group's boxes at
    the bottom-right), and one huge box (``cx=1e30``) makes the offsets so large that every other box rounds to
    a point (IoU 0/0: nothing is suppressed anywhere in the batch). Here NMS sees the boxes clipped to
    +-NMS_COORDINATE_LIMIT and moved to start at 0, in float64; moving boxes leaves their IoU unchanged.

    Args:
        xyxy: (N, 4) finite boxes x1, y1, x2, y2 (drop NaN/inf rows first: they would poison the offsets).
        scores: (N,) scores.
        groups: (N,) int64 group of each box; boxes of different groups never suppress each other.
        iou_threshold: a box is dropped when a better-scoring kept box of its group overlaps it by more.

    Returns:
        (K,) int64 indices of the kept boxes, in descending score order.
    """
    import torch
    from torchvision.ops import batched_nms as tv_batched_nms

    if xyxy.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=xyxy.device)
    boxes = xyxy.to(torch.float64, copy=True).clamp_(-NMS_COORDINATE_LIMIT, NMS_COORDINATE_LIMIT)
    boxes.sub_(boxes.min())  # all >= 0: torchvision's offsets then keep every group in its own range
    return tv_batched_nms(boxes, scores.double(), groups, iou_threshold)
