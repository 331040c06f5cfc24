"""What every decoder shares: the decoder protocol, the host-side batch result and the device-side helpers.

A decoder turns the model's output tensors for a batch (on the model's device) into one
:class:`DecodedBatch`: thresholding, NMS, per-frame top ``max_detections`` and undoing the letterbox all run
on the device, then :func:`pack` makes **one** device-to-host copy for the whole batch.

Candidates with NaN or infinite values (a float16 overflow gives ``w=inf``) are dropped before NMS
(:func:`finite_candidates`): they would switch suppression off or reach the metadata. The batch counts them
(``DecodedBatch.nonfinite``) and says so in ``DecodedBatch.warning``, naming the model output.
:func:`check_classes` and :func:`check_batch_size` catch outputs that stop fitting mid-stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pyinfer.detections import Detections
from pyinfer.errors import DecodeError

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry

#: Candidates kept per batch before NMS (ultralytics' ``max_nms``), so a badly calibrated model cannot stall NMS.
MAX_NMS = 30000
#: How far outside its range a probability or a normalised coordinate may stray before the outputs are refused
#: at load as another layout: a misread layout puts pixel coordinates there, tens to hundreds.
RANGE_SLACK = 0.5


class Decoder(Protocol):
    """The interface the engine calls; one class per ``decoder`` property value."""

    #: the registry key (the ``decoder`` property value)
    name: str
    #: pre-processing the model expects: "letterbox" (ultralytics' centred letterbox) or "stretch" (plain resize)
    resize: str

    def num_classes(self, outputs: list[torch.Tensor]) -> int | None:
        """Check the outputs fit this decoder (DecodeError naming expected and actual shapes); the class count.

        The first call, the engine's warm-up at load, also checks the values the layout bounds (probabilities,
        normalised boxes) with :func:`out_of_range`, once: later calls check shapes only, so no batch pays a
        device-to-host copy for it. None when the decoder cannot tell (a custom hook).
        """
        ...

    def decode(
        self,
        outputs: list[torch.Tensor],
        geometry: LetterboxGeometry,
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> DecodedBatch | FrameList:
        """Decode a batch; all frames share ``geometry`` (one stream, one frame size)."""
        ...


@dataclass(frozen=True)
class DecodedBatch:
    """Host arrays for a whole batch; ``frame`` says which frame each row belongs to (rows grouped by frame).

    Attributes:
        xyxy: (M, 4) float32 boxes in frame pixels, clipped to the frame (for rotated boxes: the enclosing box).
        confidence: (M,) float32.
        class_id: (M,) int32.
        frame: (M,) int64, sorted ascending; within a frame, confidence descending.
        batch_size: frames in the batch (frames without rows have empty slices).
        cxcywhr: (M, 5) float32 rotated boxes in frame pixels (angle in radians, clockwise), or None.
        extra: per-row arrays (M, ...), e.g. a classifier's top-k.
        nonfinite: candidates (scoring above the threshold, or NaN) dropped because their box, score, angle or
            class held NaN or an infinity: a problem of the model, never in ``xyxy``.
        warning: "" when the outputs were sound; else a sentence for the user naming the decoder, the output
            and the problem (an element posts it as a rate-limited WARNING).
        masks: (M, S, S) uint8 box-local instance masks (see :class:`~pyinfer.detections.Detections`), or None.
        keypoints: (M, K, 3) float32 keypoints (x, y in frame pixels, confidence), or None.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    frame: np.ndarray
    batch_size: int
    cxcywhr: np.ndarray | None = None
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    nonfinite: int = 0
    warning: str = ""
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None

    def split(self) -> list[slice]:
        """One slice per frame into the row arrays."""
        bounds = np.searchsorted(self.frame, np.arange(self.batch_size + 1))
        return [slice(int(bounds[i]), int(bounds[i + 1])) for i in range(self.batch_size)]

    def detections(self, labels: tuple[str, ...] = ()) -> list[Detections]:
        """One Detections per frame."""
        return [
            Detections(
                self.xyxy[s],
                self.confidence[s],
                self.class_id[s],
                cxcywhr=None if self.cxcywhr is None else self.cxcywhr[s],
                labels=labels,
                extra={k: v[s] for k, v in self.extra.items()},
                masks=None if self.masks is None else self.masks[s],
                keypoints=None if self.keypoints is None else self.keypoints[s],
            )
            for s in self.split()
        ]


@dataclass(frozen=True)
class FrameList:
    """Per-frame Detections made elsewhere (a custom hook); ``detections`` attaches the engine's labels."""

    frames: list[Detections]

    def detections(self, labels: tuple[str, ...] = ()) -> list[Detections]:
        """The frames' Detections, with ``labels`` where a frame has none of its own."""
        out = []
        for d in self.frames:
            if labels and not d.labels:
                d = dataclasses.replace(d, labels=labels)
            out.append(d)
        return out


def check_float(name: str, out: torch.Tensor) -> None:
    """DecodeError unless ``out`` is floating point."""
    if not out.is_floating_point():
        raise DecodeError(f"decoder {name} expects floating-point outputs; got {out.dtype}")


def out_of_range(values: torch.Tensor, low: float, high: float) -> tuple[float, float] | None:
    """The finite (min, max) of ``values`` when they leave [low - RANGE_SLACK, high + RANGE_SLACK], else None.

    NaN and infinities are left to :func:`finite_candidates`. One device-to-host copy: decoders call this once,
    at load (the warm-up batch), not per batch.
    """
    import torch

    v = values.detach().float()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    return (lo, hi) if lo < low - RANGE_SLACK or hi > high + RANGE_SLACK else None


def whole_numbers(values: torch.Tensor) -> bool:
    """Whether the finite entries of ``values`` are whole numbers (class indices); one device-to-host copy."""
    import torch

    v = values.detach().float()
    v = v[torch.isfinite(v)]
    return bool(((v - v.round()).abs() <= 1e-3).all())


def shapes(outputs: list[torch.Tensor]) -> str:
    """The outputs' shapes for messages: ``[1, 84, 2100]`` or ``[1, 300, 4], [1, 300, 80]``."""
    return ", ".join(str(list(o.shape)) for o in outputs) if outputs else "no outputs"


def source(name: str, outputs: list[torch.Tensor]) -> str:
    """Where decoded values came from, for warnings: ``decoder yolov8: model output 0 [2, 84, 8400]``."""
    if len(outputs) == 1:
        return f"decoder {name}: model output 0 {list(outputs[0].shape)}"
    return f"decoder {name}: model outputs {shapes(outputs)}"


def finite_candidates(
    scores: torch.Tensor, conf_threshold: float, *values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidates to decode: score above the threshold and every value finite; and how many were dropped.

    Args:
        scores: (B, N) each anchor's (query's, row's) best score; NaN where the model gave NaN.
        conf_threshold: candidates score above this.
        values: the candidate's other values, each (B, N) or (B, N, k): box, angle, class index.

    Returns:
        (B, N) bool mask of the candidates to decode, and a 0-d int64 device tensor (no host sync): the anchors
        scoring above the threshold (or NaN) whose score or values are NaN or infinite, which the mask leaves out.
    """
    import torch

    # One float32 sum per candidate: NaN and infinities propagate through it, so it is finite exactly when every
    # value is (or when values beyond ~1e38 overflow it: absurd boxes, dropped as well). A few elementwise
    # passes, where isfinite().all() costs several per value; pyinfer.accel.decode_fixed does the same.
    total = scores.float()
    for v in values:
        total = total + (v if v.ndim == scores.ndim else v.sum(dim=-1, dtype=torch.float32))
    ok = total.abs() < float("inf")
    suspect = ~(scores <= conf_threshold)  # above the threshold, or NaN
    return suspect & ok, (suspect & ~ok).sum()


def nonfinite_warning(where: str, count: int) -> str:
    """The warning for ``count`` dropped non-finite candidates; "" for none."""
    if count <= 0:
        return ""
    noun = "candidate" if count == 1 else "candidates"
    return (
        f"{where} holds NaN or infinite values in {count} {noun} (a float16 overflow, or a broken model): "
        f"dropped, the other detections are kept"
    )


def check_classes(decoder: Decoder, outputs: list[torch.Tensor], expected: int | None, *, model: str) -> None:
    """DecodeError when the outputs' class count is not ``expected`` (the count at warm-up; None or 0: unknown).

    Labels and class ids are fixed when the model is loaded, so a model whose class count changes mid-stream
    would be decoded with the wrong names (class 4 labelled '4').
    """
    if not expected:
        return
    got = decoder.num_classes(outputs)
    if got is not None and got != expected:
        classes = "class" if got == 1 else "classes"
        raise DecodeError(
            f"model {model} now returns {got} {classes} (outputs {shapes(outputs)}, decoder {decoder.name}) "
            f"where it returned {expected} when it was loaded: the class count cannot change mid-stream"
        )


def check_batch_size(result: DecodedBatch | FrameList, frames: int, *, model: str) -> None:
    """DecodeError unless the decoded ``result`` has one entry per input frame (``frames`` of them)."""
    got = result.batch_size if isinstance(result, DecodedBatch) else len(result.frames)
    if got != frames:
        noun = "frame" if got == 1 else "frames"
        raise DecodeError(
            f"model {model} returned results for {got} {noun} for a batch of {frames}: a model must return one "
            f"result per input frame (a model exported for a fixed batch size needs that batch-size)"
        )


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) cx, cy, w, h -> (N, 4) x1, y1, x2, y2 (new tensor)."""
    import torch

    cxcy, half = boxes[:, :2], boxes[:, 2:4] / 2
    return torch.cat([cxcy - half, cxcy + half], dim=1)


def cap_per_frame(keep: torch.Tensor, frame_idx: torch.Tensor, max_detections: int) -> torch.Tensor:
    """Group ``keep`` (indices, score-descending) by frame, keeping each frame's order, and cap each frame.

    Args:
        keep: (K,) int64 row indices, in descending score order.
        frame_idx: (M,) frame of every row.
        max_detections: rows kept per frame at most.

    Returns:
        (K',) indices grouped by ascending frame, score-descending within a frame.
    """
    import torch

    keep = keep[torch.sort(frame_idx[keep], stable=True).indices]
    kept_frames = frame_idx[keep]
    first = torch.searchsorted(kept_frames, kept_frames, right=False)
    rank = torch.arange(len(keep), device=keep.device) - first
    return keep[rank < max_detections]


def pack(
    xyxy: torch.Tensor,
    confidence: torch.Tensor,
    class_id: torch.Tensor,
    frame: torch.Tensor,
    batch_size: int,
    *,
    cxcywhr: torch.Tensor | None = None,
    extra: Mapping[str, tuple[torch.Tensor, np.dtype]] | None = None,
    nonfinite: torch.Tensor | None = None,
    where: str = "",
    masks: torch.Tensor | None = None,
    keypoints: torch.Tensor | None = None,
) -> DecodedBatch:
    """Copy a decoded batch to the host in one transfer.

    Args:
        xyxy: (M, 4) boxes in frame pixels.
        confidence: (M,) scores.
        class_id: (M,) class indices (any dtype; exact in float32 below 2**24).
        frame: (M,) frame index of each row, ascending.
        batch_size: frames in the batch.
        cxcywhr: optional (M, 5) rotated boxes.
        extra: name -> ((M,) or (M, k) tensor, host dtype) per-row attributes.
        nonfinite: optional 0-d count of dropped non-finite candidates (:func:`finite_candidates`), copied in
            the same transfer (as one extra row).
        where: :func:`source` of the values, for the warning when ``nonfinite`` is not 0.
        masks: optional (M, S, S) uint8 box-local masks; their bytes travel in the same transfer as the rest.
        keypoints: optional (M, K, 3) keypoints in frame pixels, with their confidence.

    Returns:
        The batch as host arrays.
    """
    import torch

    extra = dict(extra or {})
    if keypoints is not None:
        extra["\0keypoints"] = (keypoints, np.dtype(np.float32))
    cols = [xyxy.float(), confidence[:, None].float(), class_id[:, None].float(), frame[:, None].float()]
    if cxcywhr is not None:
        cols.append(cxcywhr.float())
    widths = []
    for tensor, _ in extra.values():
        t = tensor.float().reshape(len(xyxy), int(np.prod(tensor.shape[1:], dtype=np.int64)))  # -1 fails at 0 rows
        widths.append(t.shape[1])
        cols.append(t)
    packed: Any = torch.cat(cols, dim=1)  # a tensor, then its host copy (ndarray)
    if nonfinite is not None:  # one more row, holding the count in every column
        packed = torch.cat([packed, nonfinite.to(packed.dtype).expand(1, packed.shape[1])])
    host_masks = None
    if masks is not None:
        # The masks' bytes beside the float columns' bytes, one uint8 row per detection: still one copy.
        width = packed.shape[1]
        flat = masks.reshape(len(masks), int(np.prod(masks.shape[1:]))).to(torch.uint8)  # -1 fails at 0 rows
        if nonfinite is not None:
            flat = torch.cat([flat, flat.new_zeros((1, flat.shape[1]))])
        both = torch.cat([packed.contiguous().view(torch.uint8), flat], dim=1).cpu().numpy()
        packed = np.ascontiguousarray(both[:, : 4 * width]).view(np.float32)
        host_masks = np.ascontiguousarray(both[:, 4 * width :]).reshape(len(both), *masks.shape[1:])
    else:
        # One device-to-host copy for the whole batch.
        packed = packed.cpu().numpy()
    dropped = 0
    if nonfinite is not None:
        dropped, packed = int(packed[-1, 0]), packed[:-1]
        if host_masks is not None:
            host_masks = host_masks[:-1]
    at = 7
    rot = None
    if cxcywhr is not None:
        rot = np.ascontiguousarray(packed[:, 7:12], dtype=np.float32)
        at = 12
    host_extra = {}
    for (key, (tensor, dtype)), width in zip(extra.items(), widths):
        arr = packed[:, at : at + width].astype(dtype)
        host_extra[key] = arr.reshape(len(packed), *tensor.shape[1:])
        at += width
    host_kpts = host_extra.pop("\0keypoints", None)
    return DecodedBatch(
        xyxy=np.ascontiguousarray(packed[:, :4], dtype=np.float32),
        confidence=np.ascontiguousarray(packed[:, 4], dtype=np.float32),
        class_id=packed[:, 5].astype(np.int32),
        frame=packed[:, 6].astype(np.int64),
        batch_size=batch_size,
        cxcywhr=rot,
        extra=host_extra,
        nonfinite=dropped,
        warning=nonfinite_warning(where, dropped),
        masks=host_masks,
        keypoints=None if host_kpts is None else np.ascontiguousarray(host_kpts, dtype=np.float32),
    )
