"""End-to-end YOLO heads (YOLOv10, YOLO26 exported with ``nms=False``): ``[B, K, 6]``, no NMS.

Each of the K rows is x1, y1, x2, y2 (model-input pixels), score, class index, as the NMS-free head picked
them (ultralytics sorts them by score; the decoder sorts again, so an unsorted export works too). The
decoder keeps rows scoring above the threshold, at most ``max_detections`` per frame, and undoes the
letterbox; the IoU threshold does not apply.

Rotated end-to-end heads (YOLO26-obb with ``nms=False``) give ``[B, K, 7]``: cx, cy, w, h, score, class,
angle (radians); the decoder then fills ``cxcywhr`` and the enclosing ``xyxy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfer.decoders.auto import misfit
from pyinfer.decoders.base import (
    DecodedBatch,
    cap_per_frame,
    check_float,
    finite_candidates,
    out_of_range,
    pack,
    shapes,
    source,
    whole_numbers,
)

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry


def e2e_select(out: torch.Tensor, conf_threshold: float, max_detections: int) -> tuple:
    """The rows of an end-to-end output ``[B, K, 6 + ...]`` to keep: score above the threshold, every value
    finite, at most ``max_detections`` per frame; grouped by frame, score-descending.

    Returns:
        (frame_idx (M,), rows (M, C) float32, nonfinite 0-d count of rows dropped for NaN or infinities).
    """
    import torch

    candidates, nonfinite = finite_candidates(out[..., 4], conf_threshold, out)  # box, class, the rest finite
    frame_idx, row_idx = candidates.nonzero(as_tuple=True)
    rows = out[frame_idx, row_idx].float()
    keep = torch.argsort(rows[:, 4], descending=True, stable=True)
    keep = cap_per_frame(keep, frame_idx, max_detections)
    return frame_idx[keep], rows[keep], nonfinite


class YoloE2EDecoder:
    """Decoder for ``[B, K, 6]`` (axis-aligned) and ``[B, K, 7]`` (rotated) end-to-end outputs."""

    name = "yolo-e2e"
    resize = "letterbox"

    def __init__(self) -> None:
        self._values_checked = False

    def num_classes(self, outputs: list[torch.Tensor]) -> None:
        """Check the outputs fit; end-to-end rows carry a class index, not per-class scores, so no class count.

        The first call (the engine's warm-up) also checks the values: scores in [0, 1], class indices whole
        numbers. A two-class DETR output ``[B, 300, 6]`` has the shape, but a score where the class would be.
        """
        if len(outputs) < 1:
            raise misfit(
                self.name, outputs, "decoder yolo-e2e expects one output [B, K, 6] (or [B, K, 7] rotated); got none"
            )
        out = outputs[0]
        if out.ndim != 3 or out.shape[2] not in (6, 7):
            raise misfit(
                self.name,
                outputs,
                f"decoder yolo-e2e expects an output of shape [B, K, 6] (x1, y1, x2, y2, score, class) or "
                f"[B, K, 7] (cx, cy, w, h, score, class, angle); got {list(out.shape)}",
            )
        check_float(self.name, out)
        if not self._values_checked:
            bad = out_of_range(out[..., 4], 0.0, 1.0)
            if bad is not None:
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder yolo-e2e reads column 4 of output {shapes(outputs)} as scores, but it runs from "
                    f"{bad[0]:.4g} to {bad[1]:.4g}, where scores lie in [0, 1]",
                )
            if not whole_numbers(out[..., 5]):
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder yolo-e2e reads column 5 of output {shapes(outputs)} as class indices, but it holds "
                    f"fractions",
                )
            self._values_checked = True
        return None

    def decode(
        self,
        outputs: list[torch.Tensor],
        geometry: LetterboxGeometry,
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> DecodedBatch:
        """Decode a batch; ``iou_threshold`` is unused (the model did its own suppression)."""
        import torch

        from pyinfer.decoders.yolo_obb import enclosing_xyxy

        self.num_classes(outputs)
        out = outputs[0]
        bsz = out.shape[0]
        frame_idx, rows, nonfinite = e2e_select(out, conf_threshold, max_detections)
        scores = rows[:, 4]
        cls = rows[:, 5].round()
        where = source(self.name, outputs)
        if out.shape[2] == 6:
            xyxy = geometry.to_frame(rows[:, :4].clone())
            return pack(xyxy, scores, cls, frame_idx, bsz, nonfinite=nonfinite, where=where)
        rot = torch.cat([rows[:, :4], rows[:, 6:7]], dim=1)
        rot = geometry.to_frame_cxcywh(rot)
        xyxy = enclosing_xyxy(rot, geometry.frame_w, geometry.frame_h)
        return pack(xyxy, scores, cls, frame_idx, bsz, cxcywhr=rot, nonfinite=nonfinite, where=where)
