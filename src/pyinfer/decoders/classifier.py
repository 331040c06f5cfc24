"""Image classifiers: one output ``[B, nc]`` of class scores -> one whole-frame detection per frame with its top-k.

Scores that are all within [0, 1] are taken as probabilities (ultralytics ``task=classify`` exports end in a
softmax; multi-label heads in a sigmoid); otherwise they are logits and go through a softmax. A frame whose
best class scores above the confidence threshold gets one detection: the whole frame as its box, the best
class and score, and ``extra["topk_class_id"]`` (1, k) int32 and ``extra["topk_confidence"]`` (1, k) float32
with the k best classes (k = min(5, nc)), best first, whatever their scores. ``max_detections`` and the
IoU threshold do not apply.

The input is letterboxed like the detectors' (the whole frame stays visible); ultralytics' own classify
predictor resizes the short side and crops the centre instead, so scores differ from its ``predict`` on
frames whose aspect ratio differs from the model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pyinfer.decoders.auto import misfit
from pyinfer.decoders.base import DecodedBatch, check_float, pack

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry

#: Classes reported per frame (fewer when the model has fewer).
TOP_K = 5


def _scores(outputs: list[torch.Tensor]) -> torch.Tensor:
    """The (B, nc) scores, or DecodeError naming expected and actual shapes."""
    if len(outputs) < 1:
        raise misfit("classifier", outputs, "decoder classifier expects one output [B, nc]; the model returned none")
    out = outputs[0]
    if out.ndim == 4 and out.shape[2:] == (1, 1):  # a 1x1 conv head: [B, nc, 1, 1]
        out = out.flatten(1)
    if out.ndim != 2 or out.shape[1] < 1:
        raise misfit(
            "classifier",
            outputs,
            f"decoder classifier expects an output of shape [B, nc] with nc >= 1; got {list(out.shape)}",
        )
    check_float("classifier", out)
    return out


class ClassifierDecoder:
    """Decoder for ``[B, nc]`` class scores (see the module docs)."""

    name = "classifier"
    resize = "letterbox"

    def __init__(self, top_k: int = TOP_K) -> None:
        self.top_k = top_k

    def num_classes(self, outputs: list[torch.Tensor]) -> int:
        """Check the outputs fit this decoder and return the number of classes."""
        return int(_scores(outputs).shape[1])

    def decode(
        self,
        outputs: list[torch.Tensor],
        geometry: LetterboxGeometry,
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> DecodedBatch:
        """Decode a batch: at most one whole-frame detection per frame."""
        import torch

        out = _scores(outputs).float()
        bsz, nc = out.shape
        # Decided on the device (no sync): probabilities pass, logits get a softmax.
        is_prob = (out.min() >= 0) & (out.max() <= 1)
        probs = torch.where(is_prob, out, out.softmax(dim=1))
        top_conf, top_cls = probs.topk(min(self.top_k, nc), dim=1)  # (B, k), best first
        frame_idx = (top_conf[:, 0] > conf_threshold).nonzero(as_tuple=True)[0]
        full = torch.tensor([0.0, 0.0, geometry.frame_w, geometry.frame_h], device=out.device)
        return pack(
            full.expand(len(frame_idx), 4),
            top_conf[frame_idx, 0],
            top_cls[frame_idx, 0],
            frame_idx,
            bsz,
            extra={
                "topk_class_id": (top_cls[frame_idx], np.dtype(np.int32)),
                "topk_confidence": (top_conf[frame_idx], np.dtype(np.float32)),
            },
        )
