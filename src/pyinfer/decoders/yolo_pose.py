"""YOLO pose (YOLOv8-pose, YOLO11-pose, YOLO26-pose) as ultralytics exports it: boxes with keypoints.

One output, in one of two layouts:

- ``[B, 4 + nc + K*D, N]`` (YOLOv8/11-pose, YOLO26-pose exported with NMS): box, class scores and K keypoints
  of D values (x, y in model-input pixels, and for D = 3 the keypoint's confidence, after sigmoid) per anchor;
  thresholded and suppressed as ``yolov8`` does;
- ``[B, K', 6 + K*D]`` (YOLO26-pose end-to-end, ``nms=False``): x1, y1, x2, y2, score, class, keypoints.

The keypoint shape (K, D) comes from the model's metadata (ultralytics' ``kpt_shape``, e.g. ``[17, 3]`` for
COCO persons); without it, one class and D = 3 are assumed (``[B, 5 + K*3, N]``), as every ultralytics pose
model has. Keypoints map back to frame pixels as ultralytics' ``scale_coords`` does (letterbox undone, clipped
to the frame); ``Detections.keypoints`` is (N, K, 3), the confidence 1 where the model gives none (D = 2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyinfer.decoders.auto import misfit
from pyinfer.decoders.base import DecodedBatch, check_float, out_of_range, pack, shapes, source, whole_numbers
from pyinfer.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry


def parse_kpt_shape(value: Any) -> tuple[int, int]:
    """ultralytics' ``kpt_shape`` metadata (``[17, 3]``, or its text) as (K, D); ConfigError if it is not one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    try:
        k, d = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"kpt_shape {value!r} in the model's metadata is not [keypoints, 2 or 3]") from None
    if k < 1 or d not in (2, 3):
        raise ConfigError(f"kpt_shape {[k, d]} in the model's metadata is not [keypoints, 2 or 3]")
    return k, d


def to_frame_points(points: torch.Tensor, geometry: LetterboxGeometry) -> torch.Tensor:
    """(M, K, >=2) model-input x, y -> frame pixels, clipped to the frame, in place (ultralytics' scale_coords)."""
    points[..., 0] = ((points[..., 0] - geometry.pad_x) / geometry.gain_x).clamp_(0, geometry.frame_w)
    points[..., 1] = ((points[..., 1] - geometry.pad_y) / geometry.gain_y).clamp_(0, geometry.frame_h)
    return points


class YoloPoseDecoder:
    """Decoder for YOLO pose outputs: boxes and (N, K, 3) keypoints."""

    name = "yolo-pose"
    resize = "letterbox"

    def __init__(self) -> None:
        self._values_checked = False
        self.end2end: bool | None = None
        self.kpt_shape: tuple[int, int] | None = None

    def configure(self, metadata: Mapping[str, Any]) -> None:
        """Read the keypoint shape (``kpt_shape``) and the layout (``end2end``) from the model's metadata."""
        if metadata.get("kpt_shape") is not None:
            self.kpt_shape = parse_kpt_shape(metadata["kpt_shape"])
        if "end2end" in metadata:
            self.end2end = str(metadata["end2end"]).lower() == "true"

    def _layout(self, outputs: list[torch.Tensor]) -> tuple[bool, int, int, int | None]:
        """(end-to-end, K, D, nc or None); DecodeError when the output does not fit."""
        if len(outputs) != 1 or outputs[0].ndim != 3:
            raise misfit(
                self.name,
                outputs,
                f"decoder {self.name} expects one output [B, 4+nc+K*D, N] (or end-to-end [B, K', 6+K*D]); got "
                f"{shapes(outputs)}",
            )
        out = outputs[0]
        e2e = self.end2end if self.end2end is not None else int(out.shape[1]) > int(out.shape[2])
        width = int(out.shape[2] if e2e else out.shape[1])
        if self.kpt_shape is not None:
            k, d = self.kpt_shape
        else:  # ultralytics' pose models: one class, (x, y, confidence) per keypoint
            k, d = (width - (6 if e2e else 5)) // 3, 3
        fixed = 6 if e2e else 4
        nc = None if e2e else width - fixed - k * d
        if k < 1 or (e2e and width != fixed + k * d) or (nc is not None and nc < 1):
            what = f"[B, K', 6+{k}*{d}]" if e2e else f"[B, 4+nc+{k}*{d}, N] with nc >= 1"
            raise misfit(
                self.name,
                outputs,
                f"decoder {self.name} expects {what} (keypoints {[k, d]}"
                f"{' from the metadata' if self.kpt_shape else ', assumed'}); got {shapes(outputs)}",
            )
        return e2e, k, d, nc

    def num_classes(self, outputs: list[torch.Tensor]) -> int | None:
        """Check the output fits; the class count (None for end-to-end rows)."""
        e2e, k, d, nc = self._layout(outputs)
        out = outputs[0]
        check_float(self.name, out)
        if not self._values_checked:
            if e2e:
                bad = out_of_range(out[..., 4], 0.0, 1.0)
                ok = bad is None and whole_numbers(out[..., 5])
            else:
                assert nc is not None
                bad = out_of_range(out[:, 4 : 4 + nc], 0.0, 1.0)
                ok = bad is None
            if ok and d == 3:
                conf = out[..., 8::3] if e2e else out[:, 4 + nc + 2 :: 3]  # type: ignore[operator]
                ok = out_of_range(conf, 0.0, 1.0) is None
            if not ok:
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder {self.name} reads output {shapes(outputs)} as boxes, "
                    f"{'score and class' if e2e else f'{nc} class scores'} and {k} keypoints of {d} values, but "
                    "the scores or keypoint confidences are not probabilities",
                )
            self._values_checked = True
        return nc

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
        import torch

        from pyinfer.decoders.yolo import nms_select
        from pyinfer.decoders.yolo_e2e import e2e_select

        e2e, k, d, nc = self._layout(outputs)
        self.num_classes(outputs)
        out = outputs[0]
        bsz = int(out.shape[0])
        if e2e:
            frame_idx, rows, nonfinite = e2e_select(out, conf_threshold, max_detections)
            xyxy, scores, cls, kpts = rows[:, :4].clone(), rows[:, 4], rows[:, 5].round(), rows[:, 6:]
        else:
            assert nc is not None
            pred = out.transpose(1, 2)
            kept = nms_select(
                pred[..., :4],
                pred[..., 4 : 4 + nc],
                conf_threshold=conf_threshold,
                iou_threshold=iou_threshold,
                max_detections=max_detections,
                others=pred[..., 4 + nc :],
            )
            frame_idx, xyxy, scores, cls, nonfinite = kept.frame_idx, kept.xyxy, kept.scores, kept.cls, kept.nonfinite
            kpts = pred[kept.frame_idx, kept.anchor_idx, 4 + nc :].float()
        kpts = kpts.reshape(len(kpts), k, d)
        kpts = torch.cat([kpts, torch.ones_like(kpts[..., :1])], dim=-1) if d == 2 else kpts.clone()
        return pack(
            geometry.to_frame(xyxy),
            scores,
            cls,
            frame_idx,
            bsz,
            nonfinite=nonfinite,
            where=source(self.name, outputs),
            keypoints=to_frame_points(kpts, geometry),
        )
