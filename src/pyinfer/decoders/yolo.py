"""YOLOv8 / YOLO11 heads as ultralytics exports them: one output ``[B, 4 + nc, N]``.

Rows 0..3 are cx, cy, w, h in model-input pixels; rows 4.. are class scores after sigmoid (no
objectness). Decoding is vectorised over the whole batch on the model's device: threshold, class-aware
NMS (torchvision ``batched_nms`` with frame and class as the group), per-frame top ``max_det``, letterbox
undone, one device-to-host copy for the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pyinfer.errors import DecodeError

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry

#: Candidates kept per batch before NMS (ultralytics' ``max_nms``), so a badly calibrated model cannot stall NMS.
MAX_NMS = 30000


@dataclass(frozen=True)
class DecodedBatch:
    """Host arrays for a whole batch; ``frame`` says which frame each row belongs to (rows grouped by frame)."""

    xyxy: np.ndarray  # (M, 4) float32, frame pixels
    confidence: np.ndarray  # (M,) float32
    class_id: np.ndarray  # (M,) int32
    frame: np.ndarray  # (M,) int64, sorted ascending; within a frame, confidence descending
    batch_size: int

    def split(self) -> list[slice]:
        """One slice per frame into the row arrays."""
        bounds = np.searchsorted(self.frame, np.arange(self.batch_size + 1))
        return [slice(int(bounds[i]), int(bounds[i + 1])) for i in range(self.batch_size)]


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) cx, cy, w, h -> (N, 4) x1, y1, x2, y2 (new tensor)."""
    import torch

    cxcy, half = boxes[:, :2], boxes[:, 2:4] / 2
    return torch.cat([cxcy - half, cxcy + half], dim=1)


class YoloV8Decoder:
    """Decoder for ``[B, 4 + nc, N]`` outputs (YOLOv8, YOLO11 and the embedded shapes model)."""

    name = "yolov8"

    def num_classes(self, outputs: list[torch.Tensor]) -> int:
        """Check the outputs fit this decoder and return the number of classes."""
        if len(outputs) < 1:
            raise DecodeError("decoder yolov8 expects one output [B, 4+nc, N]; the model returned none")
        out = outputs[0]
        if out.ndim != 3 or out.shape[1] < 5:
            raise DecodeError(
                f"decoder yolov8 expects an output of shape [B, 4+nc, N] with nc >= 1; got {list(out.shape)}"
            )
        if not out.is_floating_point():
            raise DecodeError(f"decoder yolov8 expects floating-point outputs; got {out.dtype}")
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
        import torch
        from torchvision.ops import batched_nms

        nc = self.num_classes(outputs)
        out = outputs[0]
        bsz = out.shape[0]
        pred = out.transpose(1, 2)  # (B, N, 4+nc)
        scores, cls = pred[..., 4:].max(dim=-1)  # (B, N)
        frame_idx, anchor_idx = (scores > conf_threshold).nonzero(as_tuple=True)
        scores = scores[frame_idx, anchor_idx].float()
        if scores.numel() > MAX_NMS:
            top = scores.topk(MAX_NMS).indices
            frame_idx, anchor_idx, scores = frame_idx[top], anchor_idx[top], scores[top]
        cls = cls[frame_idx, anchor_idx]
        boxes = cxcywh_to_xyxy(pred[frame_idx, anchor_idx, :4].float())
        keep = batched_nms(boxes, scores, frame_idx * nc + cls, iou_threshold)  # score-descending
        # Group by frame (stable, so each frame stays score-descending), then cap each frame at max_det.
        keep = keep[torch.sort(frame_idx[keep], stable=True).indices]
        kept_frames = frame_idx[keep]
        first = torch.searchsorted(kept_frames, kept_frames, right=False)
        rank = torch.arange(len(keep), device=keep.device) - first
        keep = keep[rank < max_detections]
        boxes = geometry.to_frame(boxes[keep])
        # One device-to-host copy for the whole batch.
        packed = (
            torch.cat([boxes, scores[keep, None], cls[keep, None].float(), frame_idx[keep, None].float()], dim=1)
            .cpu()
            .numpy()
        )
        return DecodedBatch(
            xyxy=np.ascontiguousarray(packed[:, :4], dtype=np.float32),
            confidence=np.ascontiguousarray(packed[:, 4], dtype=np.float32),
            class_id=packed[:, 5].astype(np.int32),
            frame=packed[:, 6].astype(np.int64),
            batch_size=bsz,
        )
