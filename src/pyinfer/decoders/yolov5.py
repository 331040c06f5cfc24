"""YOLOv5-style heads with objectness (also YOLOv7, YOLOX and other anchor-based exports): ``[B, N, 5 + nc]``.

Each row is cx, cy, w, h (model-input pixels), objectness, then class probabilities, all after sigmoid, as
the YOLOv5 repository's ``export.py`` writes them. A candidate's score is ``objectness * class probability``
for its best class (YOLOv5's ``non_max_suppression``); the rest is :func:`pyinfer.decoders.yolo.nms_decode`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfer.decoders.base import DecodedBatch, check_float, source
from pyinfer.decoders.yolo import nms_decode
from pyinfer.errors import DecodeError

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry


class YoloV5Decoder:
    """Decoder for ``[B, N, 5 + nc]`` outputs: boxes, objectness, class probabilities per row."""

    name = "yolov5"
    resize = "letterbox"

    def num_classes(self, outputs: list[torch.Tensor]) -> int:
        """Check the outputs fit this decoder and return the number of classes."""
        if len(outputs) < 1:
            raise DecodeError("decoder yolov5 expects one output [B, N, 5+nc]; the model returned none")
        out = outputs[0]
        if out.ndim != 3 or out.shape[2] < 6:
            raise DecodeError(
                f"decoder yolov5 expects an output of shape [B, N, 5+nc] with nc >= 1; got {list(out.shape)}"
            )
        check_float(self.name, out)
        return int(out.shape[2] - 5)

    def decode(
        self,
        outputs: list[torch.Tensor],
        geometry: LetterboxGeometry,
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> DecodedBatch:
        """Decode a batch; all frames share ``geometry``."""
        self.num_classes(outputs)
        pred = outputs[0]
        return nms_decode(
            pred[..., :4],
            pred[..., 5:] * pred[..., 4:5],
            geometry,
            conf_threshold=conf_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            where=source(self.name, outputs),
        )
