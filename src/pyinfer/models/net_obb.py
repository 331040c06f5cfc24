"""The rotated-box (OBB) variant of the shapes detector: ShapesNet plus an angle branch, YOLO-OBB export layout.

The exported forward pass follows ultralytics' YOLOv8/YOLO11 OBB export (``OBB.forward`` with ``export=True``), so a
decoder written for ultralytics OBB models reads it unchanged: one ``(B, 4 + nc + 1, N)`` tensor,

* rows 0..3: ``cx, cy, w, h`` of the rotated box in model-input pixels (``w`` and ``h`` along the box's own axes);
* rows 4 .. 4 + nc - 1: class scores after sigmoid;
* row 4 + nc: the angle in radians, ``(sigmoid(raw) - 0.25) * pi``, so in ``[-pi/4, 3pi/4)``; clockwise on screen
  (corners at ``(cx, cy) + R(angle) (+-w/2, +-h/2)``, ``R = [[cos, -sin], [sin, cos]]``, y down), not regularised:
  decoders apply ultralytics' ``regularize_rboxes`` themselves.

Anchors are ShapesNet's (strides 8, 16, 32, stride by stride, row-major). The box branch predicts distances
``l, t, r, b`` from the anchor along the box's rotated axes (``softplus(raw) * stride``); the centre is the anchor
plus the rotated ``((r - l) / 2, (b - t) / 2)``, as ultralytics' ``dist2rbox``.

Only training and tests import this module (it needs torch at import); the elements load the TorchScript export.
"""

from __future__ import annotations

import math

import torch  # noqa: TID253 - architecture module, never imported by elements
from torch import nn  # noqa: TID253
from torch.nn import functional as F  # noqa: TID253

from pyinfer.models.net import STRIDES, ConvBnAct, ShapesNet, make_anchors


def dist2rbox(ltrb: torch.Tensor, angle: torch.Tensor, anchors: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Rotated ``cx, cy, w, h`` from distances along the box's own axes (ultralytics' ``dist2rbox``).

    Args:
        ltrb: distances ``l, t, r, b`` in pixels, the 4 values along ``dim``.
        angle: the angle in radians, 1 value along ``dim``.
        anchors: anchor centres ``x, y``, 2 values along ``dim``, broadcastable to the others.
        dim: the dimension holding the box values.

    Returns:
        ``cx, cy, w, h`` along ``dim``.
    """
    lt, rb = ltrb.split(2, dim=dim)
    cos, sin = torch.cos(angle), torch.sin(angle)
    xf, yf = ((rb - lt) / 2).split(1, dim=dim)
    x, y = xf * cos - yf * sin, xf * sin + yf * cos
    return torch.cat((torch.cat((x, y), dim) + anchors, lt + rb), dim)


class ShapesOBBNet(ShapesNet):
    """The rotated-box shapes detector.

    ``forward`` returns the export layout (B, 4 + nc + 1, N); :meth:`forward_train` returns what the loss needs.
    """

    def __init__(
        self,
        nc: int = 3,
        widths: tuple[int, ...] = (16, 32, 64, 128, 192),
        depths: tuple[int, ...] = (1, 2, 2, 1),
        c_box: int = 64,
        c_cls: int = 64,
        c_angle: int = 16,
    ) -> None:
        """Build the network.

        Args:
            nc: number of classes.
            widths: channels of the stem and the stride 4, 8, 16, 32 stages.
            depths: bottlenecks in the C2f of the stride 4, 8, 16, 32 stages.
            c_box: hidden channels of the box branch.
            c_cls: hidden channels of the class branch.
            c_angle: hidden channels of the angle branch (ultralytics' ``cv4``).
        """
        super().__init__(nc, widths, depths, c_box, c_cls)
        self.angle = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, c_angle, 3), ConvBnAct(c_angle, c_angle, 3), nn.Conv2d(c_angle, 1, 1))
            for c in (widths[2], widths[3], widths[4])
        )

    def _levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 4, N) ltrb logits, (B, nc, N) class logits, (B, 1, N) angle logits, (N, 2) anchors, (N, 1) strides."""
        feats = self.neck(self.backbone(x))
        box, cls = self.head(feats)
        ang = [a(f) for a, f in zip(self.angle, feats)]
        sizes = [(int(t.shape[2]), int(t.shape[3])) for t in box]
        anchors, strides = make_anchors(sizes, x.device, x.dtype)
        # Flatten over (h, w) only, so the batch size stays symbolic under torch.jit.trace.
        flat = [torch.cat([t.flatten(2) for t in level], 2) for level in (box, cls, ang)]
        return flat[0], flat[1], flat[2], anchors, strides

    def forward_train(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs for training.

        Args:
            x: (B, 3, H, W) float input in [0, 1]; H and W multiples of 32.

        Returns:
            ltrb (B, N, 4) distances in input pixels, class logits (B, N, nc), angles (B, N, 1) in radians,
            anchor centres (N, 2) and strides (N, 1), all float32.
        """
        box, cls, ang, anchors, strides = self._levels(x)
        ltrb = F.softplus(box.transpose(1, 2).float()) * strides.float()
        angle = (ang.transpose(1, 2).float().sigmoid() - 0.25) * math.pi
        return ltrb, cls.transpose(1, 2).float(), angle, anchors.float(), strides.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Export layout.

        Args:
            x: (B, 3, H, W) float RGB in [0, 1], letterboxed; H and W multiples of 32.

        Returns:
            (B, 4 + nc + 1, N): cx, cy, w, h in input pixels, sigmoid class scores, angle in radians.
        """
        box, cls, ang, anchors, strides = self._levels(x)
        ltrb = F.softplus(box) * strides.T  # (B, 4, N)
        angle = (ang.sigmoid() - 0.25) * math.pi  # (B, 1, N): ultralytics' range, [-pi/4, 3pi/4)
        rbox = dist2rbox(ltrb, angle, anchors.T, dim=1)
        return torch.cat((rbox, cls.sigmoid(), angle), 1)


__all__ = ["STRIDES", "ShapesOBBNet", "dist2rbox"]
