"""DETR-style detectors (RT-DETR, D-FINE, DEIM, RF-DETR, Deformable DETR): boxes plus class scores per query, no NMS.

Two layouts are read:

- one output ``[B, Q, 4 + nc]`` (ultralytics' RT-DETR export): normalised cx, cy, w, h, then class scores
  already through a sigmoid;
- two outputs ``[B, Q, 4]`` (boxes, normalised cx, cy, w, h) and ``[B, Q, nc]`` (class logits, in either
  order; the one with 4 columns is the boxes, and with exactly 4 classes the first output is taken as the
  logits, as Hugging Face exports order them): the logits go through a sigmoid (focal-loss DETRs).

A query's score is its best class (ultralytics' RT-DETR predictor); queries scoring above the threshold are
kept, at most ``max_detections`` per frame, best first. Boxes are relative to the model input, which for
these models is the frame *stretched* to the input size (``resize = "stretch"``: no letterbox), as both
ultralytics and the RT-DETR/D-FINE reference code pre-process. The IoU threshold does not apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfer.decoders.auto import misfit
from pyinfer.decoders.base import (
    DecodedBatch,
    cap_per_frame,
    check_float,
    cxcywh_to_xyxy,
    finite_candidates,
    out_of_range,
    pack,
    shapes,
    source,
)

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry

_EXPECTED = "one output [B, Q, 4+nc] or two outputs [B, Q, 4] (boxes) and [B, Q, nc] (logits)"


class DetrDecoder:
    """Decoder for DETR-style outputs (see the module docs for the two layouts)."""

    name = "detr"
    resize = "stretch"

    def __init__(self) -> None:
        self._values_checked = False

    def _split(self, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(boxes (B, Q, 4), scores (B, Q, nc), scores_are_logits) or DecodeError."""
        if len(outputs) == 1:
            out = outputs[0]
            if out.ndim == 3 and out.shape[2] >= 5:
                check_float(self.name, out)
                return out[..., :4], out[..., 4:], False
        elif len(outputs) == 2:
            a, b = outputs
            if a.ndim == 3 and b.ndim == 3 and a.shape[:2] == b.shape[:2]:
                check_float(self.name, a)
                check_float(self.name, b)
                if b.shape[2] == 4:
                    return b, a, True
                if a.shape[2] == 4:
                    return a, b, True
        raise misfit(self.name, outputs, f"decoder detr expects {_EXPECTED}; got {shapes(outputs)}")

    def num_classes(self, outputs: list[torch.Tensor]) -> int:
        """Check the outputs fit this decoder and return the number of classes.

        The first call (the engine's warm-up) also checks the values: boxes are normalised to the input, so lie
        in [0, 1] (and so do the scores of a one-output export). A YOLOv8 output ``[B, 84, 8400]`` has the shape
        of 84 queries, but puts pixel coordinates where their boxes would be.
        """
        boxes, scores, logits = self._split(outputs)
        if not self._values_checked:
            for what, values in (("boxes", boxes), ("class scores", None if logits else scores)):
                bad = None if values is None else out_of_range(values, 0.0, 1.0)
                if bad is not None:
                    raise misfit(
                        self.name,
                        outputs,
                        f"decoder detr reads outputs {shapes(outputs)} as {boxes.shape[1]} queries, but their "
                        f"{what} run from {bad[0]:.4g} to {bad[1]:.4g}, where DETR's normalised {what} lie in [0, 1]",
                    )
            self._values_checked = True
        return int(scores.shape[2])

    def decode(
        self,
        outputs: list[torch.Tensor],
        geometry: LetterboxGeometry,
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> DecodedBatch:
        """Decode a batch; ``iou_threshold`` is unused (set prediction: no duplicates to suppress)."""
        import torch

        boxes, scores, logits = self._split(outputs)
        bsz = boxes.shape[0]
        best, cls = scores.max(dim=-1)  # sigmoid is monotonic: pick the class on logits, squash the winner only
        if logits:
            best = best.float().sigmoid()
        candidates, nonfinite = finite_candidates(best, conf_threshold, boxes)
        frame_idx, query_idx = candidates.nonzero(as_tuple=True)
        best = best[frame_idx, query_idx].float()
        keep = cap_per_frame(torch.argsort(best, descending=True, stable=True), frame_idx, max_detections)
        frame_idx, query_idx, best = frame_idx[keep], query_idx[keep], best[keep]
        # Normalised to the model input: the letterboxed (or stretched) picture spans the whole input.
        in_w, in_h = geometry.input_w, geometry.input_h
        xyxy = cxcywh_to_xyxy(boxes[frame_idx, query_idx].float())
        xyxy[:, 0::2] *= in_w
        xyxy[:, 1::2] *= in_h
        return pack(
            geometry.to_frame(xyxy), best, cls[frame_idx, query_idx], frame_idx, bsz,
            nonfinite=nonfinite, where=source(self.name, outputs),
        )  # fmt: skip
