"""YOLOv8 / YOLO11 heads as ultralytics exports them: one output ``[B, 4 + nc, N]``.

Rows 0..3 are cx, cy, w, h in model-input pixels; rows 4.. are class scores after sigmoid (no
objectness). Decoding is vectorised over the whole batch on the model's device: threshold (candidates with
NaN or infinite values dropped and counted), class-aware NMS (:func:`pyinfer.ops.boxes.batched_nms`, frame
and class as the group), per-frame top ``max_det``, letterbox undone, one device-to-host copy for the batch.
YOLOv5-style heads (:mod:`pyinfer.decoders.yolov5`) share the same path after their objectness is folded
into the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyinfer.decoders.auto import misfit
from pyinfer.decoders.base import (
    MAX_NMS,
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
from pyinfer.ops.boxes import batched_nms

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry

__all__ = ["MAX_NMS", "DecodedBatch", "Kept", "YoloV8Decoder", "cxcywh_to_xyxy", "nms_decode", "nms_select"]


@dataclass
class Kept:
    """What :func:`nms_select` keeps: rows grouped by frame, score-descending within a frame (on the device)."""

    frame_idx: torch.Tensor  # (M,) frame of each row, ascending
    anchor_idx: torch.Tensor  # (M,) the anchor each row came from (to gather its mask coefficients, keypoints)
    xyxy: torch.Tensor  # (M, 4) boxes in model-input pixels
    scores: torch.Tensor  # (M,) float32
    cls: torch.Tensor  # (M,) class index
    nonfinite: torch.Tensor  # 0-d count of dropped non-finite candidates


def nms_select(
    boxes: torch.Tensor,
    class_scores: torch.Tensor,
    *,
    conf_threshold: float,
    iou_threshold: float,
    max_detections: int,
    others: torch.Tensor | None = None,
) -> Kept:
    """Best class per candidate, threshold, class-aware NMS per frame, cap per frame (no letterbox undone).

    Args:
        boxes: (B, N, 4) cx, cy, w, h in model-input pixels (a strided view is fine).
        class_scores: (B, N, nc) final per-class scores.
        others: (B, N, k) more values of each candidate (mask coefficients, keypoints) that must be finite too.
    """
    nc = class_scores.shape[2]
    scores, cls = class_scores.max(dim=-1)  # (B, N); NaN where any class score is NaN (torch.max propagates it)
    extra = (boxes,) if others is None else (boxes, others)
    candidates, nonfinite = finite_candidates(scores, conf_threshold, *extra)
    frame_idx, anchor_idx = candidates.nonzero(as_tuple=True)
    scores = scores[frame_idx, anchor_idx].float()
    if scores.numel() > MAX_NMS:
        top = scores.topk(MAX_NMS).indices
        frame_idx, anchor_idx, scores = frame_idx[top], anchor_idx[top], scores[top]
    cls = cls[frame_idx, anchor_idx]
    xyxy = cxcywh_to_xyxy(boxes[frame_idx, anchor_idx].float())
    keep = batched_nms(xyxy, scores, frame_idx * nc + cls, iou_threshold)  # score-descending
    keep = cap_per_frame(keep, frame_idx, max_detections)
    return Kept(frame_idx[keep], anchor_idx[keep], xyxy[keep], scores[keep], cls[keep], nonfinite)


def nms_decode(
    boxes: torch.Tensor,
    class_scores: torch.Tensor,
    geometry: LetterboxGeometry,
    *,
    conf_threshold: float,
    iou_threshold: float,
    max_detections: int,
    where: str = "",
) -> DecodedBatch:
    """Best class per candidate, threshold, class-aware NMS per frame, cap, undo the letterbox, copy to host.

    Args:
        boxes: (B, N, 4) cx, cy, w, h in model-input pixels (a strided view is fine).
        class_scores: (B, N, nc) final per-class scores (objectness already folded in where a head has it).
        geometry: how the frames were letterboxed.
        conf_threshold: keep candidates scoring above this.
        iou_threshold: suppress a box overlapping a better one of the same frame and class by more than this.
        max_detections: keep at most this many per frame.
        where: :func:`~pyinfer.decoders.base.source` of the outputs, for the warning about NaN/inf candidates.

    Returns:
        The batch on the host.
    """
    k = nms_select(
        boxes,
        class_scores,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    bsz = class_scores.shape[0]
    return pack(geometry.to_frame(k.xyxy), k.scores, k.cls, k.frame_idx, bsz, nonfinite=k.nonfinite, where=where)


class YoloV8Decoder:
    """Decoder for ``[B, 4 + nc, N]`` outputs: YOLOv8, YOLO11, YOLO26 exported with NMS, the embedded model."""

    name = "yolov8"
    resize = "letterbox"

    def __init__(self) -> None:
        self._values_checked = False

    def num_classes(self, outputs: list[torch.Tensor]) -> int:
        """Check the outputs fit this decoder and return the number of classes.

        The first call (the engine's warm-up) also checks the values: class scores lie in [0, 1]. A YOLOv5
        output ``[B, 25200, 85]`` read this way would put pixel coordinates among the class scores.
        """
        if len(outputs) < 1:
            raise misfit(self.name, outputs, "decoder yolov8 expects one output [B, 4+nc, N]; the model returned none")
        out = outputs[0]
        if out.ndim != 3 or out.shape[1] < 5:
            raise misfit(
                self.name,
                outputs,
                f"decoder yolov8 expects an output of shape [B, 4+nc, N] with nc >= 1; got {list(out.shape)}",
            )
        check_float(self.name, out)
        if not self._values_checked:
            bad = out_of_range(out[:, 4:], 0.0, 1.0)
            if bad is not None:
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder yolov8 reads output {shapes(outputs)} as a box and {out.shape[1] - 4} class scores "
                    f"for each of {out.shape[2]} anchors, but the values after the box run from {bad[0]:.4g} to "
                    f"{bad[1]:.4g}, where scores lie in [0, 1]",
                )
            self._values_checked = True
        return int(out.shape[1] - 4)

    def decode(
        self,
        outputs: list[torch.Tensor],
        geometry: LetterboxGeometry,
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> DecodedBatch:
        """Decode a batch; all frames share ``geometry`` (one stream, one frame size)."""
        self.num_classes(outputs)
        pred = outputs[0].transpose(1, 2)  # (B, N, 4+nc)
        return nms_decode(
            pred[..., :4],
            pred[..., 4:],
            geometry,
            conf_threshold=conf_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            where=source(self.name, outputs),
        )
