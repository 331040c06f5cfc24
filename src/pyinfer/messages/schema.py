"""Detection messages, schema version 1: what ``pymsgconv`` publishes, built without GStreamer.

One message describes one frame (``message_type`` ``"frame"``, every object of the frame) or one object
(``"object"``, ``objects`` holds exactly that one). Both share one envelope, so a consumer parses one shape::

    {"version": "1.0", "message_id": "5f0c...e1-42", "message_type": "frame",
     "source_id": 0, "frame_number": 42, "pts_ns": 1400000000, "timestamp": "2026-11-25T10:11:12.345Z",
     "width": 640, "height": 480, "inferred": true, "object_count": 1,
     "objects": [{"index": 0, "class_id": 1, "label": "square", "confidence": 0.973,
                  "bbox": {"left": 412.5, "top": 96.0, "width": 88.25, "height": 88.0},
                  "rotated_bbox": null, "track_id": null, "producer_id": 15, "model_id": 0}]}

The JSON Schema is ``schema-v1.json`` beside this module (:func:`load_schema`); ``docs/messages.md``
describes every field. ``version`` changes its minor number for added fields and its major number for
anything that breaks a consumer. Version 1.1 added ``keypoints`` (``[[x, y, confidence], ...]``, pose models)
and ``mask`` (COCO RLE over the bbox, segmentation models) to an object, present only where the model gives them;
1.2 added ``classifications`` (``[{"unique_id", "class_id", "label", "confidence"}, ...]``: the best class of each
secondary classifier that ran on the object, ``pyinfer process-mode=secondary``) and ``parent_index`` (the ``index``
of the object a secondary detector found this one inside); 1.3 added ``texts`` to the message (answers of a slow
model about the whole frame, ``pyvlm``) and to an object (answers about that object):
``[{"text", "prompt", "unique_id", "source_frame", "source_pts_ns"}, ...]``, ``source_frame`` being the number the
producer gave the frame its model read.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from pyinfer.detections import UNTRACKED_ID, Detections
from pyinfer.errors import PyInferError
from pyinfer.jsonl import classification_entries, mask_rle, text_entries

#: 1.1: objects[].keypoints and objects[].mask (segmentation and pose models); 1.2: objects[].classifications
#: and parent_index; 1.3: texts and objects[].texts (pyvlm)
SCHEMA_VERSION = "1.3"
MESSAGE_TYPES = ("frame", "object")
_BOX_DECIMALS = 3  # 1/1000 px: far below any detector's precision, keeps messages short
_SCORE_DECIMALS = 6


class MetadataError(PyInferError):
    """Detections that cannot become a valid message (non-finite numbers, a label that is not text, ...)."""


@dataclass(frozen=True)
class FrameHeader:
    """The frame-level fields of a message.

    Attributes:
        source_id: the stream's id (``pymsgconv source-id``).
        frame_number: the frame's index in its stream, counted from 0 by the converter.
        pts_ns: presentation timestamp in nanoseconds, None when the buffer has none.
        timestamp_ns: wall-clock time (Unix epoch, nanoseconds) the message was made.
        width: frame width in pixels, None when unknown.
        height: frame height in pixels, None when unknown.
        inferred: whether the detector ran on this frame; None when no producer said.
    """

    source_id: int
    frame_number: int
    pts_ns: int | None
    timestamp_ns: int
    width: int | None = None
    height: int | None = None
    inferred: bool | None = None


def iso_timestamp(timestamp_ns: int) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-25T10:11:12.345Z``."""
    seconds, ns = divmod(int(timestamp_ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1_000_000:03d}Z"


def _finite(name: str, values: np.ndarray) -> None:
    if values.size and not np.isfinite(values).all():
        raise MetadataError(f"{name} holds a non-finite value (NaN or infinity)")


def object_records(
    detections: Detections,
    labels: Sequence[str | None] | None = None,
    secondary: Sequence[dict[int, list[tuple[int, str, float]]]] | None = None,
    parents: Sequence[int] | None = None,
    texts: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """The ``objects`` entries of a message for ``detections``, in their order.

    Args:
        detections: one frame's detections. ``extra`` may hold ``roi_id`` (the object's ``index``),
            ``unique_id`` and ``model_id`` (-1: unknown); ``tracker_id`` (uint64, :data:`UNTRACKED_ID`: none) gives
            ``track_id``.
        labels: per-detection labels that replace ``detections.label(i)`` where not None (e.g. the ROI
            type of another producer's meta, which has no class id).
        secondary: per detection, secondary classifiers' top-k (``pyinfer.meta.read_secondary_results``):
            objects with any get ``classifications``.
        parents: per detection, the position of the object it was found inside (a secondary detector) or -1:
            such objects get ``parent_index``, that object's ``index``.
        texts: the frame's text results (``pyinfer.meta.text.read_texts``): objects with any get ``texts``.

    Returns:
        JSON-ready dicts, one per detection.

    Raises:
        MetadataError: a box, angle or confidence is not finite, a confidence is outside [0, 1] or a label
            is not a string.
    """
    n = len(detections)
    if n == 0:
        return []
    xyxy = detections.xyxy.astype(np.float64)
    ltwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    _finite("a box", ltwh)
    conf = detections.confidence.astype(np.float64)
    _finite("a confidence", conf)
    if ((conf < 0) | (conf > 1)).any():
        raise MetadataError(f"a confidence is outside [0, 1]: {conf[(conf < 0) | (conf > 1)][0]:g}")
    boxes = np.round(ltwh, _BOX_DECIMALS).tolist()
    scores = np.round(conf, _SCORE_DECIMALS).tolist()
    classes = detections.class_id.tolist()
    extra = detections.extra
    index = extra["roi_id"].tolist() if "roi_id" in extra else list(range(n))
    producer = _optional_ids(extra.get("unique_id"), n)
    model = _optional_ids(extra.get("model_id"), n)
    tracks: list[int | None] = [None] * n
    if detections.tracker_id is not None:
        tracks = [None if t == UNTRACKED_ID else t for t in detections.tracker_id.tolist()]
    rotated: list[dict[str, float] | None] = [None] * n
    if detections.cxcywhr is not None:
        rot = detections.cxcywhr.astype(np.float64)
        _finite("a rotated box", rot)
        rotated = [
            {"cx": r[0], "cy": r[1], "width": r[2], "height": r[3], "angle_rad": r[4]} for r in _round_rotated(rot)
        ]
    kpts = None
    if detections.keypoints is not None:
        k = detections.keypoints.astype(np.float64)
        _finite("a keypoint", k)
        kpts = np.round(k, _BOX_DECIMALS).tolist()
    out = []
    for i in range(n):
        label = labels[i] if labels is not None and labels[i] is not None else detections.label(i)
        if not isinstance(label, str):
            raise MetadataError(f"the label of object {i} is a {type(label).__name__}, not a string")
        left, top, width, height = boxes[i]
        out.append(
            {
                "index": index[i],
                "class_id": classes[i],
                "label": label,
                "confidence": scores[i],
                "bbox": {"left": left, "top": top, "width": width, "height": height},
                "rotated_bbox": rotated[i],
                "track_id": tracks[i],
                "producer_id": producer[i],
                "model_id": model[i],
            }
        )
        if kpts is not None and detections.keypoints is not None and detections.keypoints[i].any():
            out[-1]["keypoints"] = kpts[i]  # all 0: the object has none (see pyinfer.meta.roi.with_shapes)
        if detections.masks is not None and detections.masks[i].any():
            out[-1]["mask"] = mask_rle(detections.masks[i] >= 128)
        if secondary is not None and i < len(secondary) and secondary[i]:
            entries = classification_entries(secondary[i])
            for e in entries:
                if not (math.isfinite(e["confidence"]) and 0.0 <= e["confidence"] <= 1.0):
                    raise MetadataError(f"a secondary confidence of object {i} is outside [0, 1]: {e['confidence']}")
            out[-1]["classifications"] = entries
        if parents is not None and i < len(parents) and 0 <= parents[i] < n:
            out[-1]["parent_index"] = index[parents[i]]
        own = [t for t in texts if t.object_index == i] if texts else None
        if own:
            out[-1]["texts"] = text_entries(own)
    return out


def _round_rotated(rot: np.ndarray) -> list[list[float]]:
    out = np.empty_like(rot)
    out[:, :4] = np.round(rot[:, :4], _BOX_DECIMALS)
    out[:, 4] = np.round(rot[:, 4], _SCORE_DECIMALS)
    return out.tolist()


def _optional_ids(values: np.ndarray | None, n: int) -> list[int | None]:
    if values is None:
        return [None] * n
    return [None if v < 0 else v for v in values.astype(np.int64).tolist()]


def envelope(header: FrameHeader, message_id: str, message_type: str, objects: list[dict], count: int) -> dict:
    """One message around ``objects`` (``count``: how many objects the frame has in all)."""
    return {
        "version": SCHEMA_VERSION,
        "message_id": message_id,
        "message_type": message_type,
        "source_id": header.source_id,
        "frame_number": header.frame_number,
        "pts_ns": header.pts_ns,
        "timestamp": iso_timestamp(header.timestamp_ns),
        "width": header.width,
        "height": header.height,
        "inferred": header.inferred,
        "object_count": count,
        "objects": objects,
    }


class MessageBuilder:
    """Builds the JSON text of messages and numbers them.

    ``message_id`` is ``<session>-<sequence>``: a random hex session per builder (one per element run) and
    a counter from 0, so ids are unique across runs and a consumer deduplicates at-least-once deliveries
    by id and sees gaps in the sequence.
    """

    def __init__(self, session: str | None = None) -> None:
        self.session = session or uuid.uuid4().hex
        self._sequence = itertools.count()

    def next_id(self) -> str:
        """A fresh message id."""
        return f"{self.session}-{next(self._sequence)}"

    def build(
        self,
        header: FrameHeader,
        detections: Detections,
        *,
        per_object: bool = False,
        labels: Sequence[str | None] | None = None,
        secondary: Sequence[dict[int, list[tuple[int, str, float]]]] | None = None,
        parents: Sequence[int] | None = None,
        texts: Sequence[Any] | None = None,
    ) -> list[str]:
        """The messages for one frame, as JSON text.

        Args:
            header: the frame-level fields.
            detections: the frame's detections (see :func:`object_records` for ``extra``).
            per_object: one message per object (none for a frame without objects) instead of one per frame.
            labels: per-detection label overrides (see :func:`object_records`).
            secondary: per-detection secondary classifications (see :func:`object_records`).
            parents: per-detection parents (see :func:`object_records`).
            texts: the frame's text results (``pyinfer.meta.text.read_texts``): those about the whole frame go
                to every message's ``texts``, an object's to that object.

        Returns:
            JSON texts (compact, UTF-8 safe, no NaN).

        Raises:
            MetadataError: the detections cannot make a valid message.
        """
        objects = object_records(detections, labels, secondary, parents, texts)
        if not per_object:
            messages = [envelope(header, self.next_id(), "frame", objects, len(objects))]
        else:
            messages = [envelope(header, self.next_id(), "object", [obj], len(objects)) for obj in objects]
        whole = [t for t in texts if t.object_index < 0] if texts else None
        if whole:
            for m in messages:
                m["texts"] = text_entries(whole)
        try:
            return [json.dumps(m, separators=(",", ":"), ensure_ascii=False, allow_nan=False) for m in messages]
        except (ValueError, TypeError) as exc:  # a value from foreign metadata JSON cannot hold
            raise MetadataError(f"cannot encode the message: {exc}") from exc


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every version-1 message validates against."""
    text = resources.files("pyinfer.messages").joinpath("schema-v1.json").read_text(encoding="utf-8")
    return json.loads(text)
