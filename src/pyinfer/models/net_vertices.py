"""A small CNN finding an object's vertices in its crop: the embedded ``vertices`` keypoint model (secondary).

The input is one object's crop cut from its box and stretched to 64x64 (what a secondary model gets: the element
crops each object's box in whole pixels and resizes it to the model input), ``(B, 3, 64, 64)`` float RGB in
``[0, 1]``. :class:`VerticesNet` predicts :data:`K` = 4 keypoints per crop, in the order of :data:`KEYPOINTS`
(clockwise from the top):

- square: its corners, top-left, top-right, bottom-right, bottom-left;
- triangle: its apex (top centre of its box), the right and the left end of its base (the box's bottom corners),
  and a fourth keypoint that is not visible (visibility 0);
- circle: its extreme points, top, right, bottom, left (the middles of its box's sides).

:func:`object_vertices` gives them from a scene object's class and unclipped box. ``forward`` returns ``(B, K, 3)``:
x and y as fractions of the input's width and height (0 and 1 are the crop's edges; a keypoint may lie a little
outside when the box cuts the object), and a visibility logit.

The exported TorchScript (``train/train_vertices.py``) wraps it in :class:`PoseExport`: the YOLOv8-pose layout the
``yolo-pose`` decoder reads, with one anchor, ``(B, 4 + 1 + K*3, 1)``: the box enclosing the visible keypoints (cx,
cy, w, h in input pixels), a class score of 1, then per keypoint x, y in input pixels and the visibility
probability (sigmoid). Its metadata says ``kpt_shape: [4, 3]`` and ``end2end: false`` (with one anchor, the decoder
would otherwise take the ``[B, 17, 1]`` output for end-to-end rows).

Four stride-2 stages of 3x3 conv + BatchNorm + SiLU (as the marks model) keep a 4x4 map, a 1x1 conv narrows it to
32 channels, and two linear layers read the whole map (where things are matters here, so there is no global pool):
183 k parameters (a 0.75 MB TorchScript file). It runs at 64x64 only.

Only training and tests import this module (it needs torch at import); the elements load the TorchScript export.
"""

from __future__ import annotations

import math

import torch  # noqa: TID253 - architecture module, never imported by elements
from torch import nn  # noqa: TID253

from pyinfer.models.net import ConvBnAct

IMGSZ = 64
K = 4
NAMES: tuple[str, ...] = ("vertices",)
#: Per scene class (``pyinfer.scene.CLASSES`` order), what its keypoints are; None: not visible.
KEYPOINTS: dict[str, tuple[str | None, ...]] = {
    "circle": ("top", "right", "bottom", "left"),
    "square": ("top-left", "top-right", "bottom-right", "bottom-left"),
    "triangle": ("apex", "base-right", "base-left", None),
}
#: Per class id, the keypoint order after a left-right flip (keypoint j of the flipped crop is FLIP[c][j]).
FLIP: tuple[tuple[int, ...], ...] = ((0, 3, 2, 1), (1, 0, 3, 2), (0, 2, 1, 3))
_TRIANGLE_ASPECT = math.sqrt(3.0) / 2.0


def object_vertices(class_id: int, bbox: tuple[float, float, float, float]) -> list[tuple[float, float, float]]:
    """An axis-aligned scene object's :data:`K` keypoints ``(x, y, visible)`` in frame pixels.

    Args:
        class_id: index into ``pyinfer.scene.CLASSES`` (circle, square, triangle).
        bbox: the object's full box ``(left, top, width, height)``: exact only for objects wholly inside the frame
            (``SceneObject.bbox`` is clipped to it).

    Returns:
        Four ``(x, y, visible)``: the triangle's fourth is its centroid, visible 0; every other one is visible.
    """
    left, top, w, h = (float(v) for v in bbox)
    right, bottom, cx, cy = left + w, top + h, left + w / 2.0, top + h / 2.0
    if class_id == 0:
        return [(cx, top, 1.0), (right, cy, 1.0), (cx, bottom, 1.0), (left, cy, 1.0)]
    if class_id == 1:
        return [(left, top, 1.0), (right, top, 1.0), (right, bottom, 1.0), (left, bottom, 1.0)]
    if class_id == 2:  # the generator draws the apex up at the box's top centre, the base along its bottom
        return [(cx, top, 1.0), (right, bottom, 1.0), (left, bottom, 1.0), (cx, top + h * 2.0 / 3.0, 0.0)]
    raise ValueError(f"no vertices for class id {class_id}")


class VerticesNet(nn.Module):
    """The keypoint network; ``forward`` gives normalised keypoints and visibility logits, :meth:`fuse` folds
    BatchNorm for export."""

    def __init__(self, k: int = K, widths: tuple[int, ...] = (16, 32, 48, 64), reduce: int = 32) -> None:
        """Build the network.

        Args:
            k: keypoints per crop.
            widths: channels of the stride 2, 4, 8 and 16 stages.
            reduce: channels of the 4x4 map the linear layers read.
        """
        super().__init__()
        w = widths
        self.k = k
        self.features = nn.Sequential(
            ConvBnAct(3, w[0], 3, 2),  # 32x32
            ConvBnAct(w[0], w[1], 3, 2),  # 16x16
            ConvBnAct(w[1], w[1], 3),
            ConvBnAct(w[1], w[2], 3, 2),  # 8x8
            ConvBnAct(w[2], w[2], 3),
            ConvBnAct(w[2], w[3], 3, 2),  # 4x4
            ConvBnAct(w[3], w[3], 3),
            ConvBnAct(w[3], reduce, 1),
        )
        cells = (IMGSZ // 16) ** 2
        self.head = nn.Sequential(nn.Linear(reduce * cells, 128), nn.SiLU(inplace=True), nn.Linear(128, k * 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Keypoints.

        Args:
            x: (B, 3, 64, 64) float RGB in [0, 1], an object's crop stretched to the input size.

        Returns:
            (B, K, 3): x and y as fractions of the input's width and height, and a visibility logit.
        """
        out = self.head(self.features(x).flatten(1)).view(-1, self.k, 3)
        return torch.cat([out[..., :2] + 0.5, out[..., 2:]], dim=-1)

    def fuse(self) -> VerticesNet:
        """Fold every BatchNorm into its conv (call in eval mode before export); returns self."""
        for m in self.modules():
            if isinstance(m, ConvBnAct):
                m.fuse()
        return self


class PoseExport(nn.Module):
    """:class:`VerticesNet` in the YOLOv8-pose layout with one anchor: ``(B, 4 + 1 + K*3, 1)`` (module docstring)."""

    def __init__(self, model: nn.Module, width: int = IMGSZ, height: int = IMGSZ) -> None:
        """Wrap ``model``, whose forward returns ``(B, K, 3)`` normalised keypoints and visibility logits."""
        super().__init__()
        self.model = model
        self.width, self.height = float(width), float(height)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Box (cx, cy, w, h), class score, keypoints (x, y, visibility) in input pixels, one anchor."""
        out = self.model(x)
        kx, ky = out[..., 0] * self.width, out[..., 1] * self.height
        vis = out[..., 2].sigmoid()
        seen = vis > 0.5
        any_seen = seen.any(dim=1)
        big = torch.full_like(kx, 1e9)
        x1 = torch.where(seen, kx, big).amin(dim=1).clamp(0.0, self.width)
        y1 = torch.where(seen, ky, big).amin(dim=1).clamp(0.0, self.height)
        x2 = torch.where(seen, kx, -big).amax(dim=1).clamp(0.0, self.width)
        y2 = torch.where(seen, ky, -big).amax(dim=1).clamp(0.0, self.height)
        x1 = torch.where(any_seen, x1, torch.zeros_like(x1))  # no visible keypoint: the whole input
        y1 = torch.where(any_seen, y1, torch.zeros_like(y1))
        x2 = torch.where(any_seen, torch.maximum(x2, x1 + 1.0), torch.full_like(x2, self.width))
        y2 = torch.where(any_seen, torch.maximum(y2, y1 + 1.0), torch.full_like(y2, self.height))
        box = torch.stack([(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1, torch.ones_like(x1)], dim=1)
        kpts = torch.stack([kx, ky, vis], dim=-1).flatten(1)
        return torch.cat([box, kpts], dim=1).unsqueeze(-1)
