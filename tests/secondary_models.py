"""Small classifiers for secondary-inference tests (``model-engine=secondary_models:...``; tests/ is on sys.path).

``dominant``: logits = 20 x the mean of each RGB channel over the centre half of the crop (the scene's circles are
red, squares green, triangles blue: the top class names the object's colour). It counts the crops it saw in
:data:`SEEN`, so a test can tell how many objects went through the model.
"""

from __future__ import annotations

import torch

SEEN = [0]
NAMES = ["red", "green", "blue"]


class Dominant(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN[0] += int(x.shape[0])
        h, w = x.shape[2], x.shape[3]
        return x[:, :, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean(dim=(2, 3)) * 20.0


def dominant() -> torch.nn.Module:
    return Dominant().eval()


dominant.imgsz = 32  # type: ignore[attr-defined]
dominant.decoder = "classifier"  # type: ignore[attr-defined]
dominant.names = NAMES  # type: ignore[attr-defined]


def reference(crop: torch.Tensor) -> torch.Tensor:
    """The softmax the element should report for one (3, 32, 32) crop in [0, 1] (no counting)."""
    h, w = crop.shape[1], crop.shape[2]
    return (crop[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean(dim=(1, 2)) * 20.0).softmax(0)


def shouting() -> torch.nn.Module:
    """The same classifier under other names (a hot-swap test tells the two models' results apart)."""
    return Dominant().eval()


shouting.imgsz = 32  # type: ignore[attr-defined]
shouting.decoder = "classifier"  # type: ignore[attr-defined]
shouting.names = [n.upper() for n in NAMES]  # type: ignore[attr-defined]


class CentreBox(torch.nn.Module):
    """A YOLOv8-layout detector (``[B, 4 + 1, 2]``) that finds one box in the middle of every 32x32 input:
    centre (16, 16), 16 wide and 8 high, score 0.9 (the second anchor scores 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = torch.tensor([[16.0, 4.0], [16.0, 4.0], [16.0, 2.0], [8.0, 2.0], [0.9, 0.0]], device=x.device)
        return table.unsqueeze(0).expand(x.shape[0], -1, -1) + x[:, :1, :1, :1].flatten(1)[:, :1, None] * 0


def centre_box() -> torch.nn.Module:
    return CentreBox().eval()


centre_box.imgsz = 32  # type: ignore[attr-defined]
centre_box.decoder = "yolov8"  # type: ignore[attr-defined]
centre_box.names = ["inner"]  # type: ignore[attr-defined]
