"""``counter``: pyinfer's embedded text model (issue #16), a shape counter that answers in words.

``pyvlm text-model=pyinfer.text.counter:load`` captions each image (a frame of ``pyinfer scene``) as
``"2 circles, 1 square"``; a prompt naming shapes (``"how many triangles?"``) gets only those
(``"3 triangles"``). The network (:class:`CounterNet`) is a small CNN with one classification head per shape
class choosing a count from 0 to :data:`MAX_COUNT` ("that many or more"); the words come from those counts
(:func:`caption`), not from a language model. Trained by ``train/train_counter.py`` on the scene generator; its
held-out accuracy is stored in the model file (``config.txt``) and in docs/vlm.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyinfer.errors import ModelError

if TYPE_CHECKING:
    import torch

CLASSES = ("circle", "square", "triangle")  # pyinfer.scene.CLASSES, in its order
MAX_COUNT = 9
INPUT_HW = (72, 128)
MODEL_PATH = Path(__file__).resolve().parents[1] / "models" / "counter.torchscript"


def _net() -> Any:
    import torch
    from torch import nn

    class _CounterNet(nn.Module):
        """uint8 (B, 3, 72, 128) RGB -> (B, 3, MAX_COUNT + 1) count logits per class."""

        def __init__(self) -> None:
            super().__init__()

            def block(cin: int, cout: int, stride: int) -> nn.Sequential:
                return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

            self.features = nn.Sequential(
                block(3, 16, 2), block(16, 32, 2), block(32, 32, 1), block(32, 64, 2), block(64, 64, 1),
            )  # fmt: skip
            # Per cell a density of each class's objects; summed over the map, then read as a count.
            self.density = nn.Conv2d(64, 3 * 8, 1)
            self.head = nn.Linear(3 * 8, 3 * (MAX_COUNT + 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.float() / 255.0
            d = torch.relu(self.density(self.features(x))).sum(dim=(2, 3)) / 16.0
            return self.head(d).view(-1, 3, MAX_COUNT + 1)

    return _CounterNet


def CounterNet() -> Any:  # reads as the class it builds (torch is imported lazily)
    """A fresh, untrained counter network."""
    return _net()()


def caption(counts: Sequence[int], prompt: str = "") -> str:
    """Words for per-class counts (``CLASSES`` order): every class present, or those the prompt names.

    A count of :data:`MAX_COUNT` reads "MAX_COUNT or more".
    """
    asked = [c for c, name in enumerate(CLASSES) if name in prompt.lower()]
    parts = []
    for c in asked or range(len(CLASSES)):
        n = int(counts[c])
        if n == 0 and not asked:
            continue
        word = CLASSES[c] if n == 1 else CLASSES[c] + "s"
        parts.append(f"{n}{'+' if n >= MAX_COUNT else ''} {word}")
    return ", ".join(parts) if parts else "no shapes"


def load(path: str = "") -> Callable[[list[np.ndarray], str], list[str]]:
    """The text-model factory: loads the TorchScript model (``path``, default the embedded one) on the CPU."""
    import torch
    import torch.nn.functional as F

    file = Path(path) if path else MODEL_PATH
    if not file.is_file():
        raise ModelError(f"counter model {file} does not exist", missing=True)
    files = {"config.txt": ""}
    net = torch.jit.load(str(file), map_location="cpu", _extra_files=files)
    net.eval()
    meta = json.loads(files["config.txt"] or "{}")
    hw = tuple(meta.get("input_hw", INPUT_HW))

    def model(images: list[np.ndarray], prompt: str) -> list[str]:
        batch = []
        for im in images:
            x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float()
            x = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
            batch.append(x.round().clamp(0, 255).to(torch.uint8))
        with torch.inference_mode():
            counts = net(torch.cat(batch)).argmax(-1).tolist()
        return [caption(c, prompt) for c in counts]

    return model
