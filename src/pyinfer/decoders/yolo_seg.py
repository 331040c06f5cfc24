"""YOLO instance segmentation (YOLOv8-seg, YOLO11-seg, YOLO26-seg) as ultralytics exports it.

Two outputs: the detections and the mask prototypes ``[B, nm, H/4, W/4]`` (``nm`` = 32), in either order.
The detections come in one of two layouts:

- ``[B, 4 + nc + nm, N]`` (YOLOv8/11-seg, YOLO26-seg exported with NMS): box, class scores, mask
  coefficients per anchor; thresholded and suppressed as ``yolov8`` does (class-aware NMS);
- ``[B, K, 6 + nm]`` (YOLO26-seg end-to-end, ``nms=False``): x1, y1, x2, y2, score, class, coefficients, as
  ``yolo-e2e`` reads them. The model's metadata (``end2end``) says which; without it, more rows than
  columns is the end-to-end layout.

Masks are made on the model's device (:func:`box_masks`): each kept detection's coefficients times its frame's
prototypes give mask logits at prototype resolution, sampled bilinearly at the centres of an S x S grid over
the detection's box in frame pixels (``Detections.masks``). This is ultralytics' ``process_mask`` (prototypes
upsampled bilinearly to the input, cropped to the box, logits above 0) read at the grid's points instead of the
input's pixels; where the two grids meet, the values are the same. A detection whose mask is empty is
dropped, as ultralytics' predictor does. The masks' bytes travel in the batch's one host copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyinfer.decoders.auto import misfit
from pyinfer.decoders.base import DecodedBatch, check_float, out_of_range, pack, shapes, source, whole_numbers

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry

#: Cells per side of a detection's box-local mask (``Detections.masks``): finer than the prototypes (a quarter of
#: the model input) for boxes up to about a third of a 1080p frame at a 640 input.
MASK_SIZE = 64


def box_masks(
    protos: torch.Tensor,
    coeffs: torch.Tensor,
    frame_idx: torch.Tensor,
    boxes: torch.Tensor,
    geometry: LetterboxGeometry,
    size: int = MASK_SIZE,
) -> torch.Tensor:
    """Box-local masks of the kept detections, on the device.

    Args:
        protos: (B, nm, ph, pw) mask prototypes.
        coeffs: (M, nm) each detection's coefficients.
        frame_idx: (M,) each detection's frame, ascending.
        boxes: (M, 4) xyxy in frame pixels (clipped to the frame).
        geometry: how the frames were letterboxed into the model input.
        size: cells per side.

    Returns:
        (M, size, size) uint8: the mask probability x 255, rounded.
    """
    import torch
    import torch.nn.functional as F

    m = len(coeffs)
    out = torch.zeros((m, size, size), dtype=torch.uint8, device=protos.device)
    if m == 0:
        return out
    bsz, nm, ph, pw = protos.shape
    in_w = geometry.input_w or 4 * pw
    in_h = geometry.input_h or 4 * ph
    # Cell centres in frame pixels -> model-input pixels -> grid_sample's [-1, 1] (align_corners=False: -1 and 1
    # are the outer edges of the first and last prototype cells, i.e. of the input).
    t = (torch.arange(size, device=protos.device, dtype=torch.float32) + 0.5) / size  # (S,)
    b = boxes.float()
    xs = b[:, 0:1] + t[None, :] * (b[:, 2:3] - b[:, 0:1])  # (M, S)
    ys = b[:, 1:2] + t[None, :] * (b[:, 3:4] - b[:, 1:2])
    gx = (xs * geometry.gain_x + geometry.pad_x) * (2.0 / in_w) - 1.0
    gy = (ys * geometry.gain_y + geometry.pad_y) * (2.0 / in_h) - 1.0
    grid = torch.stack([gx[:, None, :].expand(m, size, size), gy[:, :, None].expand(m, size, size)], dim=-1)
    # Logits at prototype resolution one frame at a time: (m_b, nm) @ (nm, ph*pw), a few MB per frame, where
    # gathering each detection's prototypes would take nm times more.
    counts = torch.bincount(frame_idx, minlength=bsz).tolist()
    start = 0
    flat = protos.float().reshape(bsz, nm, ph * pw)
    for f, count in enumerate(counts):
        if not count:
            continue
        rows = slice(start, start + count)
        logits = (coeffs[rows].float() @ flat[f]).view(count, 1, ph, pw)
        sampled = F.grid_sample(logits, grid[rows], mode="bilinear", padding_mode="border", align_corners=False)
        out[rows] = (sampled[:, 0].sigmoid() * 255).round().to(torch.uint8)
        start += count
    return out


def split_outputs(name: str, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(detections, prototypes) of a segmentation model's two outputs, in either order; DecodeError otherwise."""
    if len(outputs) != 2 or sorted(o.ndim for o in outputs) != [3, 4]:
        raise misfit(
            name,
            outputs,
            f"decoder {name} expects two outputs, detections [B, 4+nc+nm, N] (or end-to-end [B, K, 6+nm]) and mask "
            f"prototypes [B, nm, H, W]; got {shapes(outputs)}",
        )
    det, protos = outputs if outputs[0].ndim == 3 else outputs[::-1]
    return det, protos


class YoloSegDecoder:
    """Decoder for YOLO segmentation outputs: detections + prototypes -> boxes and box-local masks."""

    name = "yolo-seg"
    resize = "letterbox"

    def __init__(self, mask_size: int = MASK_SIZE) -> None:
        self._values_checked = False
        self.end2end: bool | None = None  # from the model's metadata; None: told by shape
        self.mask_size = mask_size

    def configure(self, metadata: Mapping[str, Any]) -> None:
        """Read what the outputs' shapes cannot tell from the model's metadata (ultralytics' ``end2end``)."""
        if "end2end" in metadata:
            self.end2end = str(metadata["end2end"]).lower() == "true"

    def _is_e2e(self, det: torch.Tensor) -> bool:
        if self.end2end is not None:
            return self.end2end
        return int(det.shape[1]) > int(det.shape[2])

    def num_classes(self, outputs: list[torch.Tensor]) -> int | None:
        """Check the outputs fit and return the class count (None for end-to-end rows: a class index each)."""
        det, protos = split_outputs(self.name, outputs)
        check_float(self.name, det)
        nm = int(protos.shape[1])
        if protos.shape[0] != det.shape[0]:
            raise misfit(self.name, outputs, f"decoder {self.name}: outputs {shapes(outputs)} differ in batch size")
        if self._is_e2e(det):
            if det.shape[2] != 6 + nm:
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder {self.name} reads end-to-end rows [B, K, 6+nm] with nm = {nm} prototypes, so 6+{nm} "
                    f"columns; got {shapes(outputs)}",
                )
            if not self._values_checked:
                bad = out_of_range(det[..., 4], 0.0, 1.0)
                if bad is not None or not whole_numbers(det[..., 5]):
                    raise misfit(
                        self.name,
                        outputs,
                        f"decoder {self.name} reads columns 4 and 5 of output {list(det.shape)} as score and class, "
                        "but they are not probabilities and class indices",
                    )
                self._values_checked = True
            return None
        nc = int(det.shape[1]) - 4 - nm
        if nc < 1:
            raise misfit(
                self.name,
                outputs,
                f"decoder {self.name} expects [B, 4+nc+nm, N] with nm = {nm} prototypes and nc >= 1; got "
                f"{shapes(outputs)}",
            )
        if not self._values_checked:
            bad = out_of_range(det[:, 4 : 4 + nc], 0.0, 1.0)
            if bad is not None:
                raise misfit(
                    self.name,
                    outputs,
                    f"decoder {self.name} reads rows 4..{3 + nc} of output {list(det.shape)} as {nc} class scores, "
                    f"but they run from {bad[0]:.4g} to {bad[1]:.4g}, where scores lie in [0, 1]",
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
        from pyinfer.decoders.yolo import nms_select
        from pyinfer.decoders.yolo_e2e import e2e_select

        nc = self.num_classes(outputs)
        det, protos = split_outputs(self.name, outputs)
        bsz, nm = int(det.shape[0]), int(protos.shape[1])
        if nc is None:  # end-to-end rows
            frame_idx, rows, nonfinite = e2e_select(det, conf_threshold, max_detections)
            xyxy, scores, cls, coeffs = rows[:, :4].clone(), rows[:, 4], rows[:, 5].round(), rows[:, 6:]
        else:
            pred = det.transpose(1, 2)  # (B, N, 4+nc+nm)
            k = nms_select(
                pred[..., :4],
                pred[..., 4 : 4 + nc],
                conf_threshold=conf_threshold,
                iou_threshold=iou_threshold,
                max_detections=max_detections,
                others=pred[..., 4 + nc :],
            )
            frame_idx, xyxy, scores, cls, nonfinite = k.frame_idx, k.xyxy, k.scores, k.cls, k.nonfinite
            coeffs = pred[k.frame_idx, k.anchor_idx, 4 + nc :]
        del nm
        xyxy = geometry.to_frame(xyxy)
        masks = box_masks(protos, coeffs, frame_idx, xyxy, geometry, self.mask_size)
        keep = (masks >= 128).flatten(1).any(dim=1)  # an empty mask: dropped, as ultralytics' predictor does
        return pack(
            xyxy[keep],
            scores[keep],
            cls[keep],
            frame_idx[keep],
            bsz,
            nonfinite=nonfinite,
            where=source(self.name, outputs),
            masks=masks[keep],
        )
