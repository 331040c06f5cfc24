"""A small CNN classifying an object's crop by its mark (``plain``, ``dot``, ``bar``): the embedded ``marks`` model.

The input is one object's crop cut from its box and stretched to 64x64 (what a secondary classifier gets: the
element crops each object's box and resizes it to the model input, as nvinfer does by default), ``(B, 3, 64, 64)``
float RGB in ``[0, 1]``. :class:`MarksNet` returns ``(B, 3)`` logits in :data:`pyinfer.scene.MARKS` order; the
exported TorchScript (``train/train_marks.py``) ends in a softmax (:class:`Probabilities`), so the ``classifier``
decoder reads its rows as probabilities whatever their values.

Four stride-2 stages of 3x3 conv + BatchNorm + SiLU (two convs each after the first), a global average pool and
a linear layer: 114 k parameters (a 0.46 MB TorchScript file). The pool makes it run at any input size; it was
trained at 64x64 only.

Only training and tests import this module (it needs torch at import); the elements load the TorchScript export.
"""

from __future__ import annotations

import torch  # noqa: TID253 - architecture module, never imported by elements
from torch import nn  # noqa: TID253

from pyinfer.models.net import ConvBnAct

IMGSZ = 64


class MarksNet(nn.Module):
    """The marks classifier; ``forward`` gives logits, :meth:`fuse` folds BatchNorm for export."""

    def __init__(self, nc: int = 3, widths: tuple[int, ...] = (16, 32, 48, 64)) -> None:
        """Build the network.

        Args:
            nc: number of classes.
            widths: channels of the stride 2, 4, 8 and 16 stages.
        """
        super().__init__()
        w = widths
        self.features = nn.Sequential(
            ConvBnAct(3, w[0], 3, 2),  # 32x32
            ConvBnAct(w[0], w[1], 3, 2),  # 16x16
            ConvBnAct(w[1], w[1], 3),
            ConvBnAct(w[1], w[2], 3, 2),  # 8x8
            ConvBnAct(w[2], w[2], 3),
            ConvBnAct(w[2], w[3], 3, 2),  # 4x4
            ConvBnAct(w[3], w[3], 3),
        )
        self.head = nn.Linear(w[3], nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits.

        Args:
            x: (B, 3, H, W) float RGB in [0, 1], an object's crop stretched to the input size (64x64).

        Returns:
            (B, nc) logits.
        """
        return self.head(self.features(x).mean(dim=(2, 3)))

    def fuse(self) -> MarksNet:
        """Fold every BatchNorm into its conv (call in eval mode before export); returns self."""
        for m in self.modules():
            if isinstance(m, ConvBnAct):
                m.fuse()
        return self


class Probabilities(nn.Module):
    """A classifier followed by a softmax: the exported layout, ``(B, nc)`` probabilities."""

    def __init__(self, model: nn.Module) -> None:
        """Wrap ``model``, whose forward returns ``(B, nc)`` logits."""
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities, each row summing to 1."""
        return self.model(x).softmax(dim=1)
