"""What every backend returns: a loaded model with its input size and class names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class LoadedModel:
    """A model ready to run on ``device``.

    Attributes:
        forward: (B, 3, H, W) float input on ``device`` -> list of output tensors on ``device``.
        device: the torch device the model runs on.
        dtype: the input dtype the model expects.
        input_size: (width, height) from the model's metadata, or None if it carries none.
        names: class names from the model's metadata (ultralytics ``names``), or empty.
        decoder: the decoder the model's metadata asks for, or None.
        path: the file it came from.
    """

    forward: Callable[[torch.Tensor], list[torch.Tensor]]
    device: torch.device
    dtype: torch.dtype
    input_size: tuple[int, int] | None
    names: tuple[str, ...]
    decoder: str | None
    path: str
