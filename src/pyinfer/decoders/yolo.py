"""YOLOv8 / YOLO11 heads as ultralytics exports them: one output ``[B, 4 + nc, N]``.

Rows 0..3 are cx, cy, w, h in model-input pixels; rows 4.. are class scores after sigmoid (no
objectness). Decoding is vectorised over the whole batch on the model's device: threshold, class-aware
NMS (torchvision ``batched_nms`` with frame and class as the group), per-frame top ``max_det``, letterbox
undone, one device-to-host copy for the batch. YOLOv5-style heads (:mod:`pyinfer.decoders.yolov5`) share
the same path after their objectness is folded into the scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfer.decoders.base import MAX_NMS, DecodedBatch, cap_per_frame, check_float, cxcywh_to_xyxy, pack
from pyinfer.errors import DecodeError

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry

__all__ = ["MAX_NMS", "DecodedBatch", "YoloV8Decoder", "cxcywh_to_xyxy", "nms_decode"]


def nms_decode(
    boxes: torch.Tensor,
    class_scores: torch.Tensor,
    geometry: LetterboxGeometry,
    *,
    conf_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> DecodedBatch:
    """Best class per candidate, threshold, class-aware NMS per frame, cap, undo the letterbox, copy to host.

    Args:
        boxes: (B, N, 4) cx, cy, w, h in model-input pixels (a strided view is fine).
        class_scores: (B, N, nc) final per-class scores (objectness already folded in where a head has it).
        geometry: how the frames were letterboxed.
        conf_threshold: keep candidates scoring above this.
        iou_threshold: suppress a box overlapping a better one of the same frame and class by more than this.
        max_detections: keep at most this many per frame.

    Returns:
        The batch on the host.
    """
    from torchvision.ops import batched_nms

    bsz, _, nc = class_scores.shape
    scores, cls = class_scores.max(dim=-1)  # (B, N)
    frame_idx, anchor_idx = (scores > conf_threshold).nonzero(as_tuple=True)
    scores = scores[frame_idx, anchor_idx].float()
    if scores.numel() > MAX_NMS:
        top = scores.topk(MAX_NMS).indices
        frame_idx, anchor_idx, scores = frame_idx[top], anchor_idx[top], scores[top]
    cls = cls[frame_idx, anchor_idx]
    xyxy = cxcywh_to_xyxy(boxes[frame_idx, anchor_idx].float())
    # float64: batched_nms separates groups by offsetting boxes by group * (max coordinate + 1); in float32 that
    # offset (up to ~1e5 px for 80 classes x a few frames) would round the coordinates to ~0.01 px.
    keep = batched_nms(xyxy.double(), scores.double(), frame_idx * nc + cls, iou_threshold)  # score-descending
    keep = cap_per_frame(keep, frame_idx, max_detections)
    return pack(geometry.to_frame(xyxy[keep]), scores[keep], cls[keep], frame_idx[keep], bsz)


class YoloV8Decoder:
    """Decoder for ``[B, 4 + nc, N]`` outputs: YOLOv8, YOLO11, YOLO26 exported with NMS, the embedded model."""

    name = "yolov8"
    resize = "letterbox"

    def num_classes(self, outputs: list[torch.Tensor]) -> int:
        """Check the outputs fit this decoder and return the number of classes."""
        if len(outputs) < 1:
            raise DecodeError("decoder yolov8 expects one output [B, 4+nc, N]; the model returned none")
        out = outputs[0]
        if out.ndim != 3 or out.shape[1] < 5:
            raise DecodeError(
                f"decoder yolov8 expects an output of shape [B, 4+nc, N] with nc >= 1; got {list(out.shape)}"
            )
        check_float(self.name, out)
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
        )
