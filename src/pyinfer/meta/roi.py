"""Detections as ``GstVideoRegionOfInterestMeta``: pyinfer's metadata contract on plain GStreamer.

One ROI meta per detection:

- ``roi_type``: the class label (a GQuark of the label string);
- ``x, y, w, h``: the box in frame pixels, clipped to the frame (unsigned integers: left/top rounded
  down, right/bottom rounded up, so the integer box covers the float box);
- ``id``: the detection's index in the frame (0, 1, ...), in descending confidence order;
- one param structure named ``detection`` with ``confidence`` (double), ``class-id`` (int), ``label``
  (string), ``unique-id`` (int: the producing element's ``unique-id``), ``model-id`` (int: which model
  generation of that element produced it, 0 until the first hot-swap) and the exact float box
  ``left``, ``top``, ``width``, ``height`` (double). Rotated detections add the rotated box:
  ``rotated-cx``, ``rotated-cy``, ``rotated-width``, ``rotated-height`` (double, pixels) and ``angle-rad``
  (double, radians, clockwise in image coordinates, about the centre); the ROI box and ``left`` ...
  ``height`` are then the axis-aligned box enclosing it;
- a tracker (``pytracker``) adds a second param named ``tracking`` with ``track-id`` (guint64) and may add
  more fields (see its docs).

Every frame that passed pyinfer also carries one frame record: an ROI meta of type ``pyinfer-frame`` with
id :data:`FRAME_ID` (2**31 - 1), a zero-sized box at (0, 0), and a param ``frame`` with ``inferred``
(boolean: the model ran on this frame; False for frames skipped by ``interval``), ``unique-id`` and
``model-id``. It tells a tracker "no detections" from "not inferred".

:func:`read_detections` reads these back into :class:`~pyinfer.detections.Detections` (``extra`` gets
``unique_id`` and ``roi_id``); ROI metas of other producers without a ``detection`` param are read from
their integer box with confidence 1 and class id -1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pyinfer._gi import GLib, GObject, Gst, GstVideo
from pyinfer.detections import Detections

PARAM_NAME = "detection"
TRACKING_PARAM = "tracking"
FRAME_PARAM = "frame"
FRAME_ROI_TYPE = "pyinfer-frame"
FRAME_ID = 2**31 - 1  # the frame record's ROI id: out of the 0..N-1 range of detections
#: object_id of an untracked detection, as DeepStream's UNTRACKED_OBJECT_ID.
UNTRACKED_ID = 0xFFFF_FFFF_FFFF_FFFF
_ROI_API = None


def _roi_api() -> object:
    global _ROI_API
    if _ROI_API is None:
        _ROI_API = GstVideo.VideoRegionOfInterestMeta.get_info().api
    return _ROI_API


def write_detections(
    buf: Gst.Buffer, detections: Detections, *, unique_id: int = 0, model_id: int = 0, first_id: int = 0
) -> list:
    """Attach one ROI meta per detection to ``buf`` (which must be writable); returns the new metas.

    ``first_id`` numbers them from there (a writer adding to a frame that already has ``first_id`` metas).
    """
    n = len(detections)
    metas: list = []
    if n == 0:
        return metas
    rot = None if detections.cxcywhr is None else detections.cxcywhr.astype(np.float64).tolist()
    # Width and height in float64 from the float32 corners: the difference is exact there, so the reader's
    # left + width gives back the float32 right edge bit for bit (Detections.ltwh, in float32, rounds it).
    xyxy = detections.xyxy.astype(np.float64)
    ltwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).tolist()
    conf = detections.confidence.astype(np.float64).tolist()
    cls = detections.class_id.tolist()
    add = GstVideo.buffer_add_video_region_of_interest_meta
    for i in range(n):
        left, top, width, height = ltwh[i]
        x0, y0 = math.floor(left), math.floor(top)
        label = detections.label(i)
        meta = add(buf, label, x0, y0, math.ceil(left + width) - x0, math.ceil(top + height) - y0)
        if meta is None:
            raise RuntimeError("could not add ROI meta: the buffer is not writable")
        meta.id = first_id + i
        s = Gst.Structure.new_empty(PARAM_NAME)
        s.set_value("confidence", conf[i])
        s.set_value("class-id", cls[i])
        s.set_value("label", label)
        s.set_value("unique-id", unique_id)
        s.set_value("model-id", model_id)
        s.set_value("left", left)
        s.set_value("top", top)
        s.set_value("width", width)
        s.set_value("height", height)
        if rot is not None:
            cx, cy, rw, rh, angle = rot[i]
            s.set_value("rotated-cx", cx)
            s.set_value("rotated-cy", cy)
            s.set_value("rotated-width", rw)
            s.set_value("rotated-height", rh)
            s.set_value("angle-rad", angle)
        meta.add_param(s)
        metas.append(meta)
    return metas


@dataclass(frozen=True)
class FrameInfo:
    """pyinfer's per-frame record: whether the model ran on the frame, and which producer/model."""

    inferred: bool
    unique_id: int
    model_id: int


def write_frame_info(buf: Gst.Buffer, *, inferred: bool, unique_id: int = 0, model_id: int = 0) -> None:
    """Attach the frame record (see the module docs) to ``buf`` (which must be writable)."""
    meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, FRAME_ROI_TYPE, 0, 0, 0, 0)
    if meta is None:
        raise RuntimeError("could not add ROI meta: the buffer is not writable")
    meta.id = FRAME_ID
    s = Gst.Structure.new_empty(FRAME_PARAM)
    s.set_value("inferred", bool(inferred))
    s.set_value("unique-id", unique_id)
    s.set_value("model-id", model_id)
    meta.add_param(s)


def read_frame_info(buf: Gst.Buffer) -> FrameInfo | None:
    """The frame record pyinfer attached to ``buf``, or None if it has none."""
    meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, FRAME_ID)
    if meta is None:
        return None
    s = meta.get_param(FRAME_PARAM)
    if s is None or not s.has_field("inferred"):
        return None
    return FrameInfo(bool(s.get_value("inferred")), int(s.get_value("unique-id")), int(s.get_value("model-id")))


def set_track_id(meta: GstVideo.VideoRegionOfInterestMeta, track_id: int, **fields: object) -> None:
    """Add the ``tracking`` param (``track-id`` as guint64, plus ``fields``) to one ROI meta."""
    s = Gst.Structure.new_empty(TRACKING_PARAM)
    s.set_value("track-id", GObject.Value(GObject.TYPE_UINT64, int(track_id)))
    for key, value in fields.items():
        s.set_value(key.replace("_", "-"), value)
    meta.add_param(s)


def roi_metas(buf: Gst.Buffer) -> list:
    """The detection ROI metas of ``buf`` in id order (0..N-1), without the frame record."""
    return _roi_metas(buf)


def _roi_metas(buf: Gst.Buffer) -> list:
    count = buf.get_n_meta(_roi_api())
    metas = []
    i = 0
    # ROI metas are found by id; pyinfer numbers its detections 0..N-1. A foreign producer that leaves
    # every id at 0 is read as far as its first meta (the ids are how Python can walk them on 1.22).
    while len(metas) < count:
        meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, i)
        if meta is None:
            break
        metas.append(meta)
        i += 1
    return metas


def read_detections(buf: Gst.Buffer, labels: tuple[str, ...] = ()) -> Detections:
    """Read the ROI metas of ``buf`` back into Detections (boxes in frame pixels).

    Args:
        buf: a buffer carrying ROI metas written by pyinfer (or any producer numbering ids 0..N-1).
        labels: class names for the result; by default gathered from the metas' labels.

    Returns:
        Detections with ``extra["unique_id"]`` (producer id, -1 if unknown), ``extra["model_id"]`` and
        ``extra["roi_id"]``; ``extra["track_id"]`` (uint64, :data:`UNTRACKED_ID` where none) when a tracker
        set any; ``cxcywhr`` when any detection is rotated.
    """
    metas = _roi_metas(buf)
    if not metas:
        return Detections.empty(labels=labels)
    n = len(metas)
    xyxy = np.empty((n, 4), np.float32)
    conf = np.ones(n, np.float32)
    cls = np.full(n, -1, np.int32)
    uid = np.full(n, -1, np.int64)
    model_id = np.full(n, -1, np.int64)
    roi_id = np.empty(n, np.int64)
    track_id = np.full(n, UNTRACKED_ID, np.uint64)
    rot = np.full((n, 5), np.nan, np.float32)
    names: dict[int, str] = {}
    for i, meta in enumerate(metas):
        roi_id[i] = meta.id
        t = meta.get_param(TRACKING_PARAM)
        if t is not None and t.has_field("track-id"):
            track_id[i] = t.get_value("track-id")
        s = meta.get_param(PARAM_NAME)
        if s is not None and s.has_field("left"):
            left, top = s.get_value("left"), s.get_value("top")
            xyxy[i] = (left, top, left + s.get_value("width"), top + s.get_value("height"))
            conf[i] = s.get_value("confidence")
            cls[i] = s.get_value("class-id")
            uid[i] = s.get_value("unique-id")
            if s.has_field("model-id"):
                model_id[i] = s.get_value("model-id")
            if s.has_field("angle-rad"):
                rot[i] = [s.get_value(k) for k in _ROTATED_FIELDS]
            names.setdefault(int(cls[i]), s.get_value("label"))
        else:
            xyxy[i] = (meta.x, meta.y, meta.x + meta.w, meta.y + meta.h)
            names.setdefault(-1, GLib.quark_to_string(meta.roi_type))
    if not labels and names and min(names) >= 0:
        labels = tuple(names.get(c, str(c)) for c in range(max(names) + 1))
    extra = {"unique_id": uid, "model_id": model_id, "roi_id": roi_id}
    if (track_id != UNTRACKED_ID).any():
        extra["track_id"] = track_id
    has_rot = ~np.isnan(rot[:, 4])
    cxcywhr = None
    if has_rot.any():
        # Rotated detections keep their box; axis-aligned ones in a mixed frame become angle-0 boxes.
        ltwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        aligned = np.concatenate([ltwh[:, :2] + ltwh[:, 2:] / 2, ltwh[:, 2:], np.zeros((n, 1), np.float32)], axis=1)
        cxcywhr = np.where(has_rot[:, None], rot, aligned).astype(np.float32)
    return Detections(xyxy, conf, cls, cxcywhr=cxcywhr, labels=labels, extra=extra)


_ROTATED_FIELDS = ("rotated-cx", "rotated-cy", "rotated-width", "rotated-height", "angle-rad")


@dataclass(frozen=True)
class CheckedDetections:
    """What :func:`read_detections_checked` read from one buffer.

    Attributes:
        detections: the well-formed detections, in ROI id order; ``extra`` has ``roi_id``, and ``track_id``
            (uint64, :data:`UNTRACKED_ID` where none) and ``predicted`` (bool) when any meta is tracked.
        metas: the ROI meta of each detection (aligned with ``detections``), e.g. for :func:`set_track_id`.
        problems: one line per skipped (malformed) ROI meta, naming its id and what is wrong.
    """

    detections: Detections
    metas: list
    problems: list[str]


_NUMBER_FIELDS = ("left", "top", "width", "height", "confidence")


def _problem(fields: dict[str, object]) -> str | None:
    """What is wrong with a detection's values (``None`` if nothing): types, finiteness, sizes, ranges."""
    for key, value in fields.items():
        if key == "class-id":
            if type(value) is not int:
                return f"detection field 'class-id' is {value!r}, not an integer"
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"detection field {key!r} is {value!r}, not a finite number"
    if fields["width"] < 0 or fields["height"] < 0 or fields.get("rotated-width", 0) < 0:
        return f"negative box size in {fields!r}"
    if fields.get("rotated-height", 0) < 0:
        return f"negative box size in {fields!r}"
    if not 0.0 <= fields["confidence"] <= 1.0:
        return f"detection confidence {fields['confidence']!r} is outside [0, 1]"
    return None


def read_detections_checked(buf: Gst.Buffer, *, tracking: bool = True) -> CheckedDetections:
    """Read the detection ROI metas of ``buf`` as :func:`read_detections` does, skipping malformed ones.

    Elements use this on metadata that may come from other producers: a meta whose ``detection`` param has a
    missing, mistyped or non-finite box, confidence or class id, a negative size, a confidence outside
    [0, 1], a partial rotated box, a ``tracking`` param whose ``track-id`` is not an unsigned 64-bit
    integer, or (without a ``detection`` param) an empty box, is left out and named in ``problems``.
    ``unique_id`` and ``model_id`` are not read (they cost a call per meta and the elements do not need them).

    Args:
        buf: the buffer.
        tracking: also read the ``tracking`` params (track ids; ``predicted`` flags).
    """
    good, problems = [], []
    names: dict[int, str] = {}
    rows: list[list] = []  # left, top, width, height, confidence, class-id
    rot_rows: list[list | None] = []
    tracks: list[tuple[int, bool]] = []
    n_tracked = 0
    for meta in _roi_metas(buf):
        s = meta.get_param(PARAM_NAME)
        rot = None
        if s is None:
            if meta.w == 0 or meta.h == 0:
                problems.append(f"ROI {meta.id}: empty box {meta.w}x{meta.h} at ({meta.x}, {meta.y})")
                continue
            row = [float(meta.x), float(meta.y), float(meta.w), float(meta.h), 1.0, -1]
            names.setdefault(-1, GLib.quark_to_string(meta.roi_type) or "")
        else:
            row = [s.get_value(k) for k in ("left", "top", "width", "height", "confidence", "class-id")]
            angle = s.get_value("angle-rad")
            if angle is not None:
                rot = [s.get_value(k) for k in _ROTATED_FIELDS[:4]] + [angle]
            # Fast path: pyinfer writes doubles and an int; anything else gets the detailed check.
            if not (
                type(row[0]) is float and type(row[1]) is float and type(row[2]) is float
                and type(row[3]) is float and type(row[4]) is float and type(row[5]) is int
                and (rot is None or all(type(v) is float for v in rot))
            ):  # fmt: skip
                fields = dict(zip(("left", "top", "width", "height", "confidence", "class-id"), row))
                if rot is not None:
                    fields.update(zip(_ROTATED_FIELDS, rot))
                problem = _problem(fields)
                if problem is not None:
                    problems.append(f"ROI {meta.id}: {problem}")
                    continue
                row[:5] = [float(v) for v in row[:5]]
                rot = None if rot is None else [float(v) for v in rot]
            cls = row[5]
            if cls not in names:
                label = s.get_value("label")
                names[cls] = label if isinstance(label, str) else str(cls)
        track = (UNTRACKED_ID, False)
        t = meta.get_param(TRACKING_PARAM) if tracking else None
        if t is not None:
            value = t.get_value("track-id")
            if type(value) is not int or not 0 <= value <= UNTRACKED_ID:
                problems.append(f"ROI {meta.id}: track-id {value!r} is not an unsigned 64-bit integer")
                continue
            track = (value, t.get_value("predicted") is True)
            n_tracked += 1
        good.append(meta)
        rows.append(row)
        rot_rows.append(rot)
        tracks.append(track)
    if rows:
        # Values of the right types may still be out of range (NaN, negative sizes, scores above 1): checked
        # here for all rows at once.
        box = np.array(rows, np.float64)
        rot_arr = np.array([r if r is not None else [0.0, 0.0, 0.0, 0.0, 0.0] for r in rot_rows], np.float64)
        bad = ~np.isfinite(box).all(axis=1) | ~np.isfinite(rot_arr).all(axis=1)
        bad |= (box[:, 2] < 0) | (box[:, 3] < 0) | (rot_arr[:, 2] < 0) | (rot_arr[:, 3] < 0)
        bad |= ~((box[:, 4] >= 0) & (box[:, 4] <= 1))
        if bad.any():
            for i in np.flatnonzero(bad).tolist():
                fields = dict(zip(("left", "top", "width", "height", "confidence", "class-id"), rows[i]))
                if rot_rows[i] is not None:
                    fields.update(zip(_ROTATED_FIELDS, rot_rows[i]))
                problems.append(f"ROI {good[i].id}: {_problem(fields) or 'values out of range'}")
            keep = np.flatnonzero(~bad)
            good = [good[i] for i in keep]
            rot_rows = [rot_rows[i] for i in keep]
            tracks = [tracks[i] for i in keep]
            n_tracked = sum(tr[0] != UNTRACKED_ID for tr in tracks)
            box, rot_arr = box[keep], rot_arr[keep]
    if not good:
        return CheckedDetections(Detections.empty(), good, problems)
    n = len(good)
    xyxy = np.concatenate([box[:, :2], box[:, :2] + box[:, 2:4]], axis=1).astype(np.float32)
    labels = tuple(names.get(c, str(c)) for c in range(max(names) + 1)) if names and min(names) >= 0 else ()
    extra = {"roi_id": np.array([m.id for m in good], np.int64)}
    if n_tracked:
        extra["track_id"] = np.array([tr[0] for tr in tracks], np.uint64)
        extra["predicted"] = np.array([tr[1] for tr in tracks], bool)
    cxcywhr = None
    has_rot = np.array([r is not None for r in rot_rows])
    if has_rot.any():
        aligned = np.concatenate([box[:, :2] + box[:, 2:4] / 2, box[:, 2:4], np.zeros((n, 1))], axis=1)
        cxcywhr = np.where(has_rot[:, None], rot_arr, aligned).astype(np.float32)
    dets = Detections(
        xyxy, box[:, 4].astype(np.float32), box[:, 5].astype(np.int32), cxcywhr=cxcywhr, labels=labels, extra=extra
    )
    return CheckedDetections(dets, good, problems)
