"""torchvision detection models (Faster R-CNN, RetinaNet, FCOS, SSD, SSDlite, Keypoint R-CNN): no NMS here.

They return a list of dicts, one per image: ``boxes`` (N, 4) x1, y1, x2, y2 in the pixels of the image they
were given, ``labels`` (N,) class indices (COCO category ids, background 0, for torchvision's COCO weights)
and ``scores`` (N,), already suppressed (each model runs its own NMS) and capped (``detections_per_img``).
The backend packs them into padded tensors (:func:`pyinfer.backends.base.pack_detection_dicts`):
``boxes`` ``[B, M, 4]``, ``scores`` ``[B, M]`` (padding rows -1), ``labels`` ``[B, M]`` (integers), and for
Keypoint R-CNN ``keypoints`` ``[B, M, K, 3]`` (x, y, visibility) and ``keypoints_scores`` ``[B, M, K]``; its
keypoints become ``Detections.keypoints`` (x, y in frame pixels, the sigmoid of the score as confidence) and stay
in ``extra["keypoints"]`` / ``extra["keypoints_scores"]`` as the model gives them.

The model gets the letterboxed frames in [0, 1] (it normalises and resizes them itself, in
``GeneralizedRCNNTransform``, and maps its boxes back to the image it was given), so boxes come back in
model-input pixels and are mapped to frame pixels through the letterbox geometry, as every other decoder's.
The decoder keeps rows scoring above the threshold, at most ``max_detections`` per frame, best first; the
IoU threshold does not apply (set the model's own, e.g. ``model.roi_heads.nms_thresh``). Class ids are the
model's labels as they are: name them with the model's ``names`` (e.g. torchvision's
``weights.meta["categories"]``, whose entry 0 is ``__background__``) or a labels file in that order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pyinfer.decoders.auto import is_torchvision_layout, misfit
from pyinfer.decoders.base import DecodedBatch, cap_per_frame, check_float, finite_candidates, pack, shapes, source

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry


class TorchvisionDecoder:
    """Decoder for torchvision detection models' results (see the module docs)."""

    name = "torchvision"
    resize = "letterbox"

    def num_classes(self, outputs: list[torch.Tensor]) -> None:
        """Check the outputs are packed torchvision detections; a row carries a label, not class scores: no count."""
        if not is_torchvision_layout(outputs):
            raise misfit(
                self.name,
                outputs,
                "decoder torchvision expects a torchvision detection model's results (a list of dicts with boxes, "
                "labels and scores, packed as outputs [B, M, 4], [B, M], [B, M] integer labels); got "
                f"{shapes(outputs) if outputs else 'no output tensors'}",
            )
        check_float(self.name, outputs[0])
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

        self.num_classes(outputs)
        boxes, scores, labels = outputs[:3]
        bsz = int(boxes.shape[0])
        candidates, nonfinite = finite_candidates(scores, conf_threshold, boxes)
        frame_idx, row_idx = candidates.nonzero(as_tuple=True)
        conf = scores[frame_idx, row_idx].float()
        keep = torch.argsort(conf, descending=True, stable=True)
        keep = cap_per_frame(keep, frame_idx, max_detections)
        frame_idx, row_idx, conf = frame_idx[keep], row_idx[keep], conf[keep]
        xyxy = geometry.to_frame(boxes[frame_idx, row_idx].float().clone())
        extra: dict[str, tuple[torch.Tensor, np.dtype]] = {}
        keypoints = None
        if len(outputs) == 5:
            kpts = outputs[3][frame_idx, row_idx].float().clone()  # (M, K, 3): x, y, visibility
            kpts[..., 0] = (kpts[..., 0] - geometry.pad_x) / geometry.gain_x
            kpts[..., 1] = (kpts[..., 1] - geometry.pad_y) / geometry.gain_y
            kscores = outputs[4][frame_idx, row_idx].float()
            extra["keypoints"] = (kpts, np.dtype(np.float32))
            extra["keypoints_scores"] = (kscores, np.dtype(np.float32))
            # Detections.keypoints (what the metadata, pyosd and the messages carry): x, y and a confidence in
            # [0, 1], the sigmoid of the heatmap score (torchvision's scores are unbounded logits).
            keypoints = torch.cat([kpts[..., :2], torch.sigmoid(kscores)[..., None]], dim=-1)
        return pack(
            xyxy,
            conf,
            labels[frame_idx, row_idx],
            frame_idx,
            bsz,
            extra=extra,
            nonfinite=nonfinite,
            where=source(self.name, outputs),
            keypoints=keypoints,
        )
