"""The shapes detector with a YOLOv8-seg head: instance segmentation of pyinfer's synthetic scenes.

:class:`ShapesSegNet` is :class:`pyinfer.models.net.ShapesNet` (same backbone, neck and detect head, same
state_dict keys) plus ultralytics' YOLOv8-seg additions:

* ``proto``: a :class:`Proto` branch on the neck's stride-8 output (3x3 conv, 2x transposed conv, 3x3 conv, 1x1 conv
  to ``nm`` channels, each conv with BatchNorm + SiLU as ultralytics' ``Proto``) giving ``nm`` = 32 mask prototypes
  at stride 4;
* ``coef``: per level a mask-coefficient branch (3x3, 3x3, 1x1 conv to ``nm``; ultralytics' ``cv4``), no activation.

The exported forward pass is what ultralytics' YOLOv8-seg export gives and ``pyinfer.decoders.yolo_seg`` reads:
``(out [B, 4 + nc + nm, N], protos [B, nm, H/4, W/4])``, rows 0..3 = cx, cy, w, h in model-input pixels, rows
4..4+nc = class scores after sigmoid, the last ``nm`` rows each anchor's mask coefficients; an instance's mask logits
are ``coef @ protos`` (flattened over the prototype cells), positive inside the object. Anchors are ordered as in
``ShapesNet``. The detection rows are computed exactly as ``ShapesNet.forward`` computes them, so with the detector's
weights the boxes and scores are the detector's, bit for bit.

The embedded model keeps the trained ``shapes`` detector frozen (:func:`load_frozen_detector` reads its weights
from the committed TorchScript file) and trains only ``proto`` and ``coef`` (``train/train_seg.py``).

Only training and tests import this module (it needs torch at import); the elements load the TorchScript export.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch  # noqa: TID253 - architecture module, never imported by elements
from torch import nn  # noqa: TID253

from pyinfer.models.net import ConvBnAct, ShapesNet

NM = 32  # mask prototypes / coefficients per anchor, as ultralytics
IMGSZ = 384


class Proto(nn.Module):
    """ultralytics' YOLOv8-seg ``Proto``: 3x3 conv, 2x upsampling (transposed conv), 3x3 conv, 1x1 conv to ``nm``."""

    def __init__(self, c_in: int, c_mid: int = 64, nm: int = NM) -> None:
        """Build the branch.

        Args:
            c_in: channels of the stride-8 feature map.
            c_mid: hidden channels.
            nm: prototypes.
        """
        super().__init__()
        self.cv1 = ConvBnAct(c_in, c_mid, 3)
        self.upsample = nn.ConvTranspose2d(c_mid, c_mid, 2, 2, 0, bias=True)
        self.cv2 = ConvBnAct(c_mid, c_mid, 3)
        self.cv3 = ConvBnAct(c_mid, nm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c_in, h, w) -> (B, nm, 2h, 2w) prototypes."""
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


class ShapesSegNet(ShapesNet):
    """``ShapesNet`` + prototypes + mask coefficients; ``forward`` returns the YOLOv8-seg export layout."""

    def __init__(self, nc: int = 3, nm: int = NM, c_proto: int = 64, **kwargs: object) -> None:
        """Build the network.

        Args:
            nc: number of classes.
            nm: mask prototypes (and coefficients per anchor).
            c_proto: hidden channels of the prototype branch.
            kwargs: the rest of ``ShapesNet``'s arguments (widths, depths, c_box, c_cls).
        """
        super().__init__(nc, **kwargs)  # type: ignore[arg-type]  # ShapesNet's keyword arguments
        self.nm = nm
        channels = [int(m[0].conv.in_channels) for m in self.head.box]  # type: ignore[index]  # nn.Sequential
        c4 = max(channels[0] // 4, nm)  # ultralytics' cv4 width
        self.proto = Proto(channels[0], c_proto, nm)
        self.coef = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, c4, 3), ConvBnAct(c4, c4, 3), nn.Conv2d(c4, nm, 1)) for c in channels
        )

    def detector_modules(self) -> list[nn.Module]:
        """The parts shared with ``ShapesNet``: backbone, neck and detect head."""
        return [self.backbone, self.neck, self.head]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The neck's outputs at strides 8, 16, 32."""
        return self.neck(self.backbone(x))

    def segment(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask coefficients (B, nm, N), anchors ordered as the detection rows, and prototypes (B, nm, H/4, W/4)."""
        coef = torch.cat([c(f).flatten(2) for c, f in zip(self.coef, feats)], 2)
        return coef, self.proto(feats[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Export layout.

        Args:
            x: (B, 3, H, W) float RGB in [0, 1], letterboxed; H and W multiples of 32.

        Returns:
            ``(B, 4 + nc + nm, N)`` detections with mask coefficients and ``(B, nm, H/4, W/4)`` prototypes.
        """
        feats = self.features(x)
        coef, protos = self.segment(feats)
        return torch.cat((self.detect(feats), coef), 1), protos

    def fuse(self) -> ShapesSegNet:
        """Fold every BatchNorm into its conv (call in eval mode before export); returns self."""
        super().fuse()
        return self


def frozen_conv_weights(path: str | Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of every convolution of a frozen, fused TorchScript export, in the order its graph runs them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.10 marks TorchScript deprecated
        module = torch.jit.load(str(path), map_location="cpu")
    out = []
    for node in module.graph.nodes():
        if node.kind() == "aten::_convolution":
            weight, bias = node.inputsAt(1).toIValue(), node.inputsAt(2).toIValue()
            if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
                raise ValueError(f"{path}: a convolution's weights are not constants (not a frozen export)")
            out.append((weight, bias))
    return out


@torch.no_grad()
def load_frozen_detector(path: str | Path, nc: int = 3) -> ShapesNet:
    """A fused ``ShapesNet`` holding the weights of a frozen ``ShapesNet`` TorchScript export (``shapes.torchscript``).

    The export keeps no state_dict (``torch.jit.freeze`` turns the weights into constants), so the weights are
    matched to the fused network's convolutions in the order both run them; every shape is checked, and the caller
    should check the outputs agree.
    """
    net = ShapesNet(nc).eval().fuse()
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    net(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    weights = frozen_conv_weights(path)
    if len(weights) != len(order):
        raise ValueError(f"{path}: {len(weights)} convolutions, ShapesNet has {len(order)}")
    for conv, (w, b) in zip(order, weights):
        if w.shape != conv.weight.shape or conv.bias is None or b.shape != conv.bias.shape:
            raise ValueError(f"{path}: a convolution of shape {tuple(w.shape)} where ShapesNet has {conv}")
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    return net


def from_detector(path: str | Path, nc: int = 3, **kwargs: object) -> ShapesSegNet:
    """A ``ShapesSegNet`` whose detection part is the (fused) detector of ``path``, frozen (no gradients, eval mode
    kept by :func:`train_mode`); the prototype and coefficient branches are freshly initialised."""
    det = load_frozen_detector(path, nc)
    model = ShapesSegNet(nc, **kwargs)  # type: ignore[arg-type]
    model.backbone, model.neck, model.head = det.backbone, det.neck, det.head
    for m in model.detector_modules():
        m.requires_grad_(False)
    return model


def train_mode(model: ShapesSegNet) -> ShapesSegNet:
    """Train the segmentation branches only: the detection part stays in eval mode (its BatchNorms are fused)."""
    model.train()
    for m in model.detector_modules():
        m.eval()
    return model
