"""YOLOv5-style heads with objectness (also YOLOv7, YOLOX and other anchor-based exports): ``[B, N, 5 + nc]``.

Each row is cx, cy, w, h (model-input pixels), objectness, then class probabilities, all after sigmoid, as
the YOLOv5 repository's ``export.py`` writes them. A candidate's score is ``objectness * class probability``
for its best class (YOLOv5's ``non_max_suppression``); the rest is :func:`pyinfer.decoders.yolo.nms_decode`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfer.decoders.auto import misfit
from pyinfer.decoders.base import DecodedBatch, check_float, out_of_range, shapes, source
from pyinfer.decoders.yolo import nms_decode

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry


class YoloV5Decoder:
    """Decoder for ``[B, N, 5 + nc]`` outputs: boxes, objectness, class probabilities per row."""

    name = "yolov5"
    resize = "letterbox"

    def __init__(self) -> None:
        self._values_checked = False

    def num_classes(self, outputs: list[torch.Tensor]) -> int:
        """Check the outputs fit this decoder and return the number of classes.

        The first call (the engine's warm-up) also checks the values: objectness and class probabilities lie in
        [0, 1]. A YOLOv8 output ``[B, 84, 8400]`` has the shape of 84 rows of 8395 classes, but its box rows put
        pixel coordinates where the probabilities would be.
        """
        if len(outputs) < 1:
            raise misfit(self.name, outputs, "decoder yolov5 expects one output [B, N, 5+nc]; the model returned none")
        out = outputs[0]
        if out.ndim != 3 or out.shape[2] < 6:
            raise misfit(
                self.name,
                outputs,
                f"decoder yolov5 expects an output of shape [B, N, 5+nc] with nc >= 1; got {list(out.shape)}",
            )
        check_float(self.name, out)
        if not self._values_checked:
            bad = out_of_range(out[..., 4:], 0.0, 1.0)
            if bad is not None:
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder yolov5 reads output {shapes(outputs)} as {out.shape[1]} rows of box, objectness and "
                    f"{out.shape[2] - 5} class probabilities, but the values after the box run from {bad[0]:.4g} "
                    f"to {bad[1]:.4g}, where probabilities lie in [0, 1]",
                )
            self._values_checked = True
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
