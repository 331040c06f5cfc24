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

Threads: every function here may run on several threads at once (tee branches, pipelines sharing a process,
pytracker/pyosd/pymsgconv, an appsink's callback), on different buffers or on one buffer they all read. Each
result is the caller's own: a read on the C paths holds scratch space that no other read uses
(:meth:`_roi_c.RoiC.acquire`, :meth:`_roi_native.RoiNative.acquire`) and copies out of it before returning.
Writing (``write_*``, ``set_track_id*``) needs a writable buffer, which only one thread holds. See
docs/metadata.md.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from pyinfer._gi import GLib, GObject, Gst, GstVideo
from pyinfer.detections import UNTRACKED_ID, Detections
from pyinfer.meta import _roi_c, _roi_native

PARAM_NAME = "detection"
TRACKING_PARAM = "tracking"
#: A classifier's top-k on a detection: ``count`` and ``class-id-K``, ``label-K``, ``confidence-K``, K < count.
CLASSIFICATION_PARAM = "classification"
FRAME_PARAM = "frame"
#: A detection's instance mask (yolo-seg): ``width``, ``height`` (int), ``threshold`` (int, 128) and ``data``, a
#: GstBuffer of width x height uint8 (row-major, the probability x 255) covering the detection's box.
MASK_PARAM = "pyinfer-mask"
#: A detection's keypoints (yolo-pose): ``count`` (int) and ``data``, a GstBuffer of count x 3 float32
#: little-endian (x, y in frame pixels, confidence).
KEYPOINTS_PARAM = "pyinfer-keypoints"
FRAME_ROI_TYPE = "pyinfer-frame"
FRAME_ID = 2**31 - 1  # the frame record's ROI id: out of the 0..N-1 range of detections
_ROI_API = None


def _roi_api() -> object:
    global _ROI_API
    if _ROI_API is None:
        _ROI_API = GstVideo.VideoRegionOfInterestMeta.get_info().api
    return _ROI_API


# The C fast path (see _roi_c): buffers and metas are passed to it as their C pointers, which PyGObject gives
# as hash() of a Gst.Buffer or meta wrapper (checked by its self-test); None where it is not usable.
_fast = _roi_c.load
_get_meta_id = GstVideo.buffer_get_video_region_of_interest_meta_id


class RoiMetas(Sequence):
    """ROI metas of one buffer, as a sequence of ``GstVideo.VideoRegionOfInterestMeta``.

    The fast path returns these instead of lists: a PyGObject meta wrapper costs ~2.5 µs, so each is made on
    first access (by id, as :func:`roi_metas` finds them) and :func:`set_track_ids` needs none at all.
    """

    __slots__ = ("_buf", "_ids", "_ptrs", "_wrappers")

    def __init__(self, buf: Gst.Buffer, ids: list[int], ptrs: list[int], wrappers: list | None = None) -> None:
        self._buf, self._ids, self._ptrs = buf, ids, ptrs
        self._wrappers = [None] * len(ids) if wrappers is None else wrappers

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        meta = self._wrappers[index]
        if meta is None:
            meta = self._wrappers[index] = _get_meta_id(self._buf, self._ids[index])
        return meta

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RoiMetas, list)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RoiMetas(ids={self._ids})"

    def pointer(self, index: int) -> int:
        """The C pointer of meta ``index``."""
        return self._ptrs[index]


def write_detections(
    buf: Gst.Buffer, detections: Detections, *, unique_id: int = 0, model_id: int = 0, first_id: int = 0
) -> Sequence:
    """Attach one ROI meta per detection to ``buf`` (which must be writable); returns the new metas.

    ``first_id`` numbers them from there (a writer adding to a frame that already has ``first_id`` metas).
    A classifier's top-k (``extra["topk_class_id"]`` / ``extra["topk_confidence"]``) is added to each meta
    as a :data:`CLASSIFICATION_PARAM` param (see :func:`read_classifications`).
    """
    metas = _write_detections(buf, detections, unique_id=unique_id, model_id=model_id, first_id=first_id)
    if len(detections) and "topk_class_id" in detections.extra and "topk_confidence" in detections.extra:
        _write_classifications(metas, detections)
    if len(detections) and (detections.masks is not None or detections.keypoints is not None):
        _write_shapes(metas, detections)
    return metas


def _write_shapes(metas: Sequence, detections: Detections) -> None:
    """Masks and keypoints as :data:`MASK_PARAM` / :data:`KEYPOINTS_PARAM` params (their bytes in a GstBuffer)."""
    masks, kpts = detections.masks, detections.keypoints
    for i in range(len(detections)):
        if masks is not None:
            s = Gst.Structure.new_empty(MASK_PARAM)
            s.set_value("width", int(masks.shape[2]))
            s.set_value("height", int(masks.shape[1]))
            s.set_value("threshold", 128)
            s.set_value("data", Gst.Buffer.new_wrapped(np.ascontiguousarray(masks[i]).tobytes()))
            metas[i].add_param(s)
        if kpts is not None:
            s = Gst.Structure.new_empty(KEYPOINTS_PARAM)
            s.set_value("count", int(kpts.shape[1]))
            s.set_value("data", Gst.Buffer.new_wrapped(np.ascontiguousarray(kpts[i], "<f4").tobytes()))
            metas[i].add_param(s)


def _param_bytes(s: Gst.Structure) -> bytes | None:
    data = s.get_value("data") if s.has_field("data") else None
    return data.extract_dup(0, data.get_size()) if isinstance(data, Gst.Buffer) else None


def read_masks(buf: Gst.Buffer) -> list[np.ndarray | None]:
    """Per ROI meta (ROI id order), its :data:`MASK_PARAM` mask as (height, width) uint8, or None."""
    out: list[np.ndarray | None] = []
    for meta in _roi_metas(buf):
        s = meta.get_param(MASK_PARAM)
        raw = None if s is None else _param_bytes(s)
        if s is None or raw is None or not (s.has_field("width") and s.has_field("height")):
            out.append(None)
            continue
        w, h = int(s.get_value("width")), int(s.get_value("height"))
        out.append(np.frombuffer(raw, np.uint8).reshape(h, w).copy() if len(raw) == w * h else None)
    return out


def read_keypoints(buf: Gst.Buffer) -> list[np.ndarray | None]:
    """Per ROI meta (ROI id order), its :data:`KEYPOINTS_PARAM` keypoints as (K, 3) float32, or None."""
    out: list[np.ndarray | None] = []
    for meta in _roi_metas(buf):
        s = meta.get_param(KEYPOINTS_PARAM)
        raw = None if s is None else _param_bytes(s)
        if s is None or raw is None or not s.has_field("count"):
            out.append(None)
            continue
        k = int(s.get_value("count"))
        out.append(np.frombuffer(raw, "<f4").reshape(k, 3).astype(np.float32) if len(raw) == 12 * k else None)
    return out


def has_shapes(buf: Gst.Buffer) -> bool:
    """Whether ``buf``'s first or last detection carries a mask or keypoints: two lookups, so that readers of plain
    detectors pay nothing more (a producer gives every detection it writes the same kinds; a secondary adds its
    objects after the frame's)."""
    last = max(int(buf.get_n_meta(_roi_api())) - 1, 0)
    for roi_id in dict.fromkeys((0, last, last - 1, last - 2)):  # the frame record and a payload may follow
        if roi_id < 0:
            continue
        meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, roi_id)
        if meta is not None and (meta.get_param(MASK_PARAM) is not None or meta.get_param(KEYPOINTS_PARAM) is not None):
            return True
    return False


def with_shapes(buf: Gst.Buffer, detections: Detections) -> Detections:
    """``detections`` (read from ``buf``'s ROI metas, ``extra["roi_id"]`` numbering them) with the masks and
    keypoints their metas carry. Where only some detections have them (a secondary model's objects beside the
    frame's), the others get an empty mask (all 0) or keypoints of confidence 0 at (0, 0), which the JSON lines
    and the messages leave out; unchanged where none has one, or they differ in shape."""
    import dataclasses

    if not len(detections) or "roi_id" not in detections.extra:
        return detections
    ids = [int(v) for v in detections.extra["roi_id"]]
    stacked: list[np.ndarray | None] = []
    for found in (read_masks(buf), read_keypoints(buf)):
        picked = [found[i] if 0 <= i < len(found) else None for i in ids]
        present = [p for p in picked if p is not None]
        if not present or any(p.shape != present[0].shape for p in present):
            stacked.append(None)
            continue
        blank = np.zeros_like(present[0])
        stacked.append(np.stack([p if p is not None else blank for p in picked]))
    masks, keypoints = stacked
    if masks is None and keypoints is None:
        return detections
    return dataclasses.replace(detections, masks=masks, keypoints=keypoints)


def _write_classifications(metas: Sequence, detections: Detections) -> None:
    ids = np.asarray(detections.extra["topk_class_id"]).reshape(len(detections), -1).tolist()
    scores = np.asarray(detections.extra["topk_confidence"], np.float64).reshape(len(detections), -1).tolist()
    n_labels = len(detections.labels)
    for i in range(len(detections)):
        s = Gst.Structure.new_empty(CLASSIFICATION_PARAM)
        s.set_value("count", len(ids[i]))
        for k, (c, p) in enumerate(zip(ids[i], scores[i])):
            s.set_value(f"class-id-{k}", int(c))
            s.set_value(f"label-{k}", detections.labels[c] if 0 <= c < n_labels else str(c))
            s.set_value(f"confidence-{k}", float(p))
        metas[i].add_param(s)


def object_labels(buf: Gst.Buffer, roi_ids: Sequence[int]) -> list[str]:
    """The ROI type (label) of each ROI meta id of ``buf`` ("" where there is no such meta)."""
    out = []
    for i in roi_ids:
        meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, int(i))
        out.append((GLib.quark_to_string(meta.roi_type) or "") if meta is not None else "")
    return out


def read_classifications(buf: Gst.Buffer) -> list[list[tuple[int, str, float]]]:
    """Per detection (ROI id order), the classifier's top-k as ``(class_id, label, confidence)``, best first.

    Detections without a :data:`CLASSIFICATION_PARAM` param give an empty list.
    """
    out: list[list[tuple[int, str, float]]] = []
    for meta in _roi_metas(buf):
        s = meta.get_param(CLASSIFICATION_PARAM)
        if s is None or not s.has_field("count"):
            out.append([])
            continue
        out.append([
            (int(s.get_value(f"class-id-{k}")), str(s.get_value(f"label-{k}")), float(s.get_value(f"confidence-{k}")))
            for k in range(int(s.get_value("count")))
            if s.has_field(f"class-id-{k}")
        ])  # fmt: skip
    return out


def read_object_classifications(buf: Gst.Buffer, unique_id: int) -> list[list[tuple[int, str, float]]]:
    """Per detection (ROI id order), the top-k a secondary pyinfer with ``unique_id`` attached to it
    (``process-mode=secondary``: a ``classification-<unique-id>`` param), best first; empty where none."""
    name = f"classification-{int(unique_id)}"
    out: list[list[tuple[int, str, float]]] = []
    for meta in _roi_metas(buf):
        s = meta.get_param(name)
        if s is None or not s.has_field("count"):
            out.append([])
            continue
        out.append([
            (int(s.get_value(f"class-id-{k}")), str(s.get_value(f"label-{k}")), float(s.get_value(f"confidence-{k}")))
            for k in range(int(s.get_value("count")))
            if s.has_field(f"class-id-{k}")
        ])  # fmt: skip
    return out


#: ROI param of an object found inside another by a secondary detector: ``id`` (int), the parent's ROI id.
PARENT_PARAM = "pyinfer-parent"


def set_parents(metas: Sequence, parent_ids: Sequence[int]) -> None:
    """Give each meta a :data:`PARENT_PARAM` naming its parent's ROI id (the buffer is writable)."""
    for meta, parent in zip(metas, parent_ids):
        s = Gst.Structure.new_empty(PARENT_PARAM)
        s.set_value("id", int(parent))
        meta.add_param(s)


def read_parents(buf: Gst.Buffer) -> list[int]:
    """Per detection (ROI id order), its parent's ROI id (a secondary detector's result inside that object), or
    -1."""
    out = []
    for meta in _roi_metas(buf):
        s = meta.get_param(PARENT_PARAM)
        out.append(int(s.get_value("id")) if s is not None and s.has_field("id") else -1)
    return out


_STRUCTURE_NAME: Any = None


def _param_names(meta: GstVideo.VideoRegionOfInterestMeta) -> list[str]:
    """The names of an ROI meta's params (PyGObject gives the GList as structure pointers on 3.42)."""
    global _STRUCTURE_NAME
    names = []
    for p in meta.params or ():
        if isinstance(p, int):
            if _STRUCTURE_NAME is None:
                from pyinfer._clib import system_library

                fn = system_library("gstreamer-1.0", hold_gil=True).gst_structure_get_name
                fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
                _STRUCTURE_NAME = fn
            raw = _STRUCTURE_NAME(p)
            names.append(raw.decode() if raw else "")
        else:
            names.append(p.get_name())
    return names


def read_secondary_results(buf: Gst.Buffer) -> list[dict[int, list[tuple[int, str, float]]]]:
    """Per detection (ROI id order), every secondary's top-k attached to it: ``{unique_id: [(class_id, label,
    confidence), ...]}`` (see :func:`read_object_classifications`); empty dicts where none."""
    out: list[dict[int, list[tuple[int, str, float]]]] = []
    for meta in _roi_metas(buf):
        found: dict[int, list[tuple[int, str, float]]] = {}
        for name in _param_names(meta):
            if not name.startswith("classification-"):
                continue
            s = meta.get_param(name)
            if s is None or not s.has_field("count") or not name[len("classification-") :].isdigit():
                continue
            found[int(name[len("classification-") :])] = [
                (int(s.get_value(f"class-id-{k}")), str(s.get_value(f"label-{k}")),
                 float(s.get_value(f"confidence-{k}")))
                for k in range(int(s.get_value("count")))
                if s.has_field(f"class-id-{k}")
            ]  # fmt: skip
        out.append(found)
    return out


def _write_detections(
    buf: Gst.Buffer, detections: Detections, *, unique_id: int = 0, model_id: int = 0, first_id: int = 0
) -> Sequence:
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
    c = _fast()
    if c is not None:
        written = _write_fast(c, buf, detections.labels, xyxy, ltwh, conf, cls, rot, unique_id, model_id, first_id)
        if written is not None:
            return written
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


def _write_fast(c, buf, labels, xyxy, ltwh, conf, cls, rot, unique_id, model_id, first_id) -> RoiMetas | None:
    """write_detections through the C API, or None (nothing written) where PyGObject must do it."""
    n = len(conf)
    if _roi_c.gtype_of(unique_id) != _roi_c.G_TYPE_INT or _roi_c.gtype_of(model_id) != _roi_c.G_TYPE_INT:
        return None
    if type(first_id) is not int or not _roi_c.INT_MIN <= first_id <= _roi_c.INT_MAX - n + 1:
        return None
    with np.errstate(invalid="ignore"):
        x0, y0 = np.floor(xyxy[:, 0]), np.floor(xyxy[:, 1])
        box = np.stack([x0, y0, np.ceil(xyxy[:, 0] + (xyxy[:, 2] - xyxy[:, 0])) - x0,
                        np.ceil(xyxy[:, 1] + (xyxy[:, 3] - xyxy[:, 1])) - y0], axis=1)  # fmt: skip
    if not (np.isfinite(box).all() and (box >= 0).all() and (box <= 0xFFFF_FFFF).all()):
        return None  # PyGObject raises as before
    names: dict[int, bytes] = {}
    for k in set(cls):
        name = labels[k] if 0 <= k < len(labels) else str(k)
        if "\0" in name:
            return None
        try:
            names[k] = name.encode()
        except UnicodeEncodeError:
            return None
    ptr = hash(buf)
    c.check_writable(ptr)
    ids = range(first_id, first_id + n)
    if any(first_id <= rec[2] < first_id + n for rec in c.walk(ptr)):
        return None  # ids taken: RoiMetas could not find the new metas by id
    D, I, S = _roi_c.G_TYPE_DOUBLE, _roi_c.G_TYPE_INT, _roi_c.G_TYPE_STRING  # noqa: E741
    types = (D, I, S, I, I, D, D, D, D) + ((D,) * 5 if rot is not None else ())
    new, add, add_param = c.new_structure(types), c.add, c.add_param
    ibox = box.astype(np.int64).tolist()
    ptrs = []
    for i in range(n):
        left, top, width, height = ltwh[i]
        label = names[cls[i]]
        meta = add(ptr, label, *ibox[i], first_id + i)
        if rot is None:
            s = new(
                b"detection", b"confidence", D, conf[i], b"class-id", I, cls[i], b"label", S, label,
                b"unique-id", I, unique_id, b"model-id", I, model_id, b"left", D, left, b"top", D, top,
                b"width", D, width, b"height", D, height, None,
            )  # fmt: skip
        else:
            cx, cy, rw, rh, angle = rot[i]
            s = new(
                b"detection", b"confidence", D, conf[i], b"class-id", I, cls[i], b"label", S, label,
                b"unique-id", I, unique_id, b"model-id", I, model_id, b"left", D, left, b"top", D, top,
                b"width", D, width, b"height", D, height, b"rotated-cx", D, cx, b"rotated-cy", D, cy,
                b"rotated-width", D, rw, b"rotated-height", D, rh, b"angle-rad", D, angle, None,
            )  # fmt: skip
        add_param(meta, s)
        ptrs.append(meta)
    return RoiMetas(buf, list(ids), ptrs)


@dataclass(frozen=True)
class FrameInfo:
    """pyinfer's per-frame record: whether the model ran on the frame, and which producer/model."""

    inferred: bool
    unique_id: int
    model_id: int


def write_frame_info(buf: Gst.Buffer, *, inferred: bool, unique_id: int = 0, model_id: int = 0) -> None:
    """Attach the frame record (see the module docs) to ``buf`` (which must be writable)."""
    c = _fast()
    if (
        c is not None
        and _roi_c.gtype_of(unique_id) == _roi_c.G_TYPE_INT
        and _roi_c.gtype_of(model_id) == _roi_c.G_TYPE_INT
    ):
        flag = bool(inferred)  # as the PyGObject path: raises before anything is added
        c.check_writable(hash(buf))
        meta = c.add(hash(buf), FRAME_ROI_TYPE.encode(), 0, 0, 0, 0, FRAME_ID)
        b, i = _roi_c.G_TYPE_BOOLEAN, _roi_c.G_TYPE_INT
        s = c.new_structure((b, i, i))(
            FRAME_PARAM.encode(), b"inferred", b, flag, b"unique-id", i, unique_id, b"model-id", i, model_id, None
        )
        c.add_param(meta, s)
        return
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
    c = _fast()
    if c is not None:
        meta = _get_meta_id(buf, FRAME_ID)  # GStreamer's own scan in C: cheaper than walking from Python
        if meta is None:
            return None
        s = c.param(_roi_c.params_of(hash(meta)), c.q_frame)
        if not s or not c.has_field(s, b"inferred"):
            return None
        t = c.acquire()
        try:
            if t.get(s, t.args_frame):
                return FrameInfo(bool(t.int1.value), t.int2.value, t.int3.value)
        finally:
            c.release(t)
    meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, FRAME_ID)
    if meta is None:
        return None
    s = meta.get_param(FRAME_PARAM)
    if s is None or not s.has_field("inferred"):
        return None
    return FrameInfo(bool(s.get_value("inferred")), int(s.get_value("unique-id")), int(s.get_value("model-id")))


def set_track_id(meta: GstVideo.VideoRegionOfInterestMeta, track_id: int, **fields: object) -> None:
    """Add the ``tracking`` param (``track-id`` as guint64, plus ``fields``) to one ROI meta."""
    c = _fast()
    if c is not None and type(meta) is _META_TYPE and _set_track_fast(c, hash(meta), track_id, fields):
        return
    s = Gst.Structure.new_empty(TRACKING_PARAM)
    s.set_value("track-id", GObject.Value(GObject.TYPE_UINT64, int(track_id)))
    for key, value in fields.items():
        s.set_value(key.replace("_", "-"), value)
    meta.add_param(s)


_META_TYPE = GstVideo.VideoRegionOfInterestMeta


def _set_track_fast(c, meta: int, track_id: int, fields: dict) -> bool:
    """set_track_id through the C API; False (nothing added) where PyGObject must do it."""
    tid = int(track_id)
    if not 0 <= tid <= _roi_c.UINT64_MAX:
        return False
    types = [_roi_c.G_TYPE_UINT64]
    args = [TRACKING_PARAM.encode(), b"track-id", _roi_c.G_TYPE_UINT64, tid]
    for key, value in fields.items():
        gtype = _roi_c.gtype_of(value)
        if gtype is None:
            return False
        types.append(gtype)
        args += [key.replace("_", "-").encode(), gtype, _roi_c.c_value(value)]
    args.append(None)
    c.add_param(meta, c.new_structure(tuple(types))(*args))
    return True


def set_track_ids(metas: Sequence, indices: Iterable[int], track_ids: Iterable[int], **fields: object) -> None:
    """:func:`set_track_id` on ``metas[i]`` for each ``i`` in ``indices``, with the matching track id.

    With the :class:`RoiMetas` of :func:`read_detections_checked` this needs no PyGObject meta wrappers.
    """
    c = _fast()
    if c is not None and isinstance(metas, RoiMetas) and len(fields) == 1 and type(fields.get("predicted")) is bool:
        nat = _native()
        if nat is not None:
            indices, track_ids = list(indices), list(track_ids)
            if (
                len(indices) == len(track_ids)
                and all(type(t) is int for t in track_ids)
                and (not track_ids or (min(track_ids) >= 0 and max(track_ids) <= _roi_c.UINT64_MAX))
            ):
                ptrs = [metas.pointer(i) for i in indices]
                nat.set_tracks(
                    np.array(ptrs, np.uint64), np.array(track_ids, np.uint64), cast(bool, fields["predicted"])
                )
                return
    for i, track_id in zip(indices, track_ids):
        if c is not None and isinstance(metas, RoiMetas) and _set_track_fast(c, metas.pointer(i), track_id, fields):
            continue
        set_track_id(metas[i], track_id, **fields)


def roi_metas(buf: Gst.Buffer) -> Sequence:
    """The detection ROI metas of ``buf`` in id order (0..N-1), without the frame record."""
    c = _fast()
    if c is not None:
        recs, _ = c.select(hash(buf))
        return RoiMetas(buf, [r[2] for r in recs], [r[0] for r in recs])
    return _roi_metas(buf)


def _roi_metas(buf: Gst.Buffer) -> list:
    count = buf.get_n_meta(_roi_api())
    metas: list = []
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
        ``extra["roi_id"]``; ``tracker_id`` (uint64, :data:`UNTRACKED_ID` where none) when a tracker
        set any; ``cxcywhr`` when any detection is rotated.
    """
    if _fast() is not None and (nat := _native()) is not None:
        got = _read_native(nat, buf, labels)
        if got is not None:
            return got
    return _read_detections(buf, labels)


def _read_detections(buf: Gst.Buffer, labels: tuple[str, ...]) -> Detections:
    c = _fast()
    if c is not None:
        recs, _ = c.select(hash(buf))
        n = len(recs)
    else:
        metas = _roi_metas(buf)
        n = len(metas)
    if n == 0:
        return Detections.empty(labels=labels)
    xyxy = np.empty((n, 4), np.float32)
    conf = np.ones(n, np.float32)
    cls = np.full(n, -1, np.int32)
    uid = np.full(n, -1, np.int64)
    model_id = np.full(n, -1, np.int64)
    roi_id = np.empty(n, np.int64)
    track_id = np.full(n, UNTRACKED_ID, np.uint64)
    rot = np.full((n, 5), np.nan, np.float32)
    names: dict[int, str] = {}
    out = (xyxy, conf, cls, uid, model_id, roi_id, track_id, rot)
    t = c.acquire() if c is not None else None
    try:
        for i in range(n):
            if c is not None and t is not None:
                if _read_fast(c, t, recs[i], i, out, names):
                    continue
                meta = _get_meta_id(buf, i)  # the one _roi_metas finds: the first meta with id i
            else:
                meta = metas[i]
            _read_slow(meta, i, out, names)
    finally:
        if c is not None and t is not None:
            c.release(t)
    return _finish_read(out, names, labels)


def _finish_read(out: tuple, names: dict[int, str], labels: tuple[str, ...]) -> Detections:
    xyxy, conf, cls, uid, model_id, roi_id, track_id, rot = out
    n = len(xyxy)
    if not labels and names and min(names) >= 0:
        labels = tuple(names.get(c, str(c)) for c in range(max(names) + 1))
    extra = {"unique_id": uid, "model_id": model_id, "roi_id": roi_id}
    tracker_id = track_id if (track_id != UNTRACKED_ID).any() else None
    has_rot = ~np.isnan(rot[:, 4])
    cxcywhr = None
    if has_rot.any():
        # Rotated detections keep their box; axis-aligned ones in a mixed frame become angle-0 boxes.
        ltwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        aligned = np.concatenate([ltwh[:, :2] + ltwh[:, 2:] / 2, ltwh[:, 2:], np.zeros((n, 1), np.float32)], axis=1)
        cxcywhr = np.where(has_rot[:, None], rot, aligned).astype(np.float32)
    return Detections(xyxy, conf, cls, cxcywhr=cxcywhr, labels=labels, extra=extra, tracker_id=tracker_id)


_ROTATED_FIELDS = ("rotated-cx", "rotated-cy", "rotated-width", "rotated-height", "angle-rad")


def _read_slow(meta: GstVideo.VideoRegionOfInterestMeta, i: int, out: tuple, names: dict[int, str]) -> None:
    """read_detections of one meta through PyGObject."""
    xyxy, conf, cls, uid, model_id, roi_id, track_id, rot = out
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


def _read_fast(c, t: _roi_c.Slots, rec: tuple, i: int, out: tuple, names: dict[int, str]) -> bool:
    """:func:`_read_slow` through the C API (``t``: this read's slots); False (nothing changed) where
    PyGObject must read the meta."""
    xyxy, conf, cls, uid, model_id, roi_id, track_id, rot = out
    _, roi_type, rid, _, x, y, w, h, params = rec
    det, trk = c.params2(params)
    tid = None
    if trk:
        if c.get_uint64(trk, b"track-id", t.u64_at):
            tid = t.u64.value
        elif c.has_field(trk, b"track-id"):
            return False
    if det and t.get(det, t.args_det_uid):
        left, top, width, height, score = t.dbl[:]
        k, producer = t.int1.value, t.int2.value
        if c.get_int(det, b"model-id", t.int3_at):
            model = t.int3.value
        elif c.has_field(det, b"model-id"):
            return False
        else:
            model = -1
        box = c.rotated(det, t)
        if box is False:
            return False
        label = None
        if k not in names and (label := c.label(det)) is None:
            return False
        xyxy[i] = (left, top, left + width, top + height)
        conf[i], cls[i], uid[i], model_id[i] = score, k, producer, model
        if box is not None:
            rot[i] = box
        if label is not None:
            names[k] = label
    elif det and c.has_field(det, b"left"):
        return False
    else:
        xyxy[i] = (x, y, x + w, y + h)
        if -1 not in names:
            names[-1] = GLib.quark_to_string(roi_type)
    roi_id[i] = rid
    if tid is not None:
        track_id[i] = tid
    return True


@dataclass(frozen=True)
class CheckedDetections:
    """What :func:`read_detections_checked` read from one buffer.

    Attributes:
        detections: the well-formed detections, in ROI id order; ``extra`` has ``roi_id``; ``tracker_id``
            (uint64, :data:`UNTRACKED_ID` where none) and ``extra["predicted"]`` (bool) when any meta is tracked.
        metas: the ROI meta of each detection (aligned with ``detections``), e.g. for :func:`set_track_id`.
        problems: one line per skipped (malformed) ROI meta, naming its id and what is wrong.
    """

    detections: Detections
    metas: Sequence  # a list, or the fast path's RoiMetas
    problems: list[str]


_NUMBER_FIELDS = ("left", "top", "width", "height", "confidence")


def _problem(fields: dict[str, Any]) -> str | None:
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


def _checked_slow(meta: GstVideo.VideoRegionOfInterestMeta, names: dict[int, str], tracking: bool) -> tuple | str:
    """read_detections_checked of one meta through PyGObject: ``(row, rotated box, track)`` or a problem."""
    s = meta.get_param(PARAM_NAME)
    rot = None
    if s is None:
        if meta.w == 0 or meta.h == 0:
            return f"ROI {meta.id}: empty box {meta.w}x{meta.h} at ({meta.x}, {meta.y})"
        row: list[Any] = [float(meta.x), float(meta.y), float(meta.w), float(meta.h), 1.0, -1]
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
                return f"ROI {meta.id}: {problem}"
            row[:5] = [float(v) for v in row[:5]]
            rot = None if rot is None else [float(v) for v in rot]
        cls = row[5]
        if cls not in names:
            label = s.get_value("label")
            names[cls] = label if isinstance(label, str) else str(cls)
    track = (UNTRACKED_ID, False, False)
    t = meta.get_param(TRACKING_PARAM) if tracking else None
    if t is not None:
        value = t.get_value("track-id")
        if type(value) is not int or not 0 <= value <= UNTRACKED_ID:
            return f"ROI {meta.id}: track-id {value!r} is not an unsigned 64-bit integer"
        track = (value, t.get_value("predicted") is True, True)
    return row, rot, track


def _checked_fast(c, t: _roi_c.Slots, rec: tuple, names: dict[int, str], tracking: bool) -> tuple | str | None:
    """:func:`_checked_slow` through the C API (``t``: this read's slots); None (nothing changed) where
    PyGObject must read the meta."""
    _, roi_type, rid, _, x, y, w, h, params = rec
    det, trk = c.params2(params)
    track = (UNTRACKED_ID, False, False)
    if tracking and trk:
        if not c.get_uint64(trk, b"track-id", t.u64_at):
            return None
        track = (t.u64.value, bool(c.get_boolean(trk, b"predicted", t.int3_at) and t.int3.value), True)
    if not det:
        if w == 0 or h == 0:
            return f"ROI {rid}: empty box {w}x{h} at ({x}, {y})"
        if -1 not in names:
            names[-1] = GLib.quark_to_string(roi_type) or ""
        return [float(x), float(y), float(w), float(h), 1.0, -1], None, track
    if not t.get(det, t.args_det):
        return None
    row = t.dbl[:]
    k = t.int1.value
    row.append(k)
    rot = c.rotated(det, t)
    if rot is False:
        return None
    if k not in names:
        label = c.label(det)
        if label is None:
            return None
        names[k] = label
    return row, rot, track


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
    if _fast() is not None and (nat := _native()) is not None:
        got = _checked_native(nat, buf, tracking)
        if got is not None:
            return got
    return _read_detections_checked(buf, tracking)


def _read_detections_checked(buf: Gst.Buffer, tracking: bool) -> CheckedDetections:
    problems: list[str] = []
    names: dict[int, str] = {}
    ids: list[int] = []  # ROI id of each good detection
    ptrs: list[int] = []  # and its meta's C pointer (fast path) ...
    wrappers: list = []  # ... or PyGObject wrapper (None where not made)
    rows: list[list] = []  # left, top, width, height, confidence, class-id
    rot_rows: list[list | None] = []
    tracks: list[tuple[int, bool]] = []
    n_tracked = 0
    c = _fast()
    if c is not None:
        recs, _ = c.select(hash(buf))
        n = len(recs)
    else:
        metas = _roi_metas(buf)
        n = len(metas)
    t = c.acquire() if c is not None else None
    try:
        for i in range(n):
            got = None
            meta: Any = None
            if c is not None and t is not None:
                got = _checked_fast(c, t, recs[i], names, tracking)
                if got is None:
                    meta = _get_meta_id(buf, i)  # the one _roi_metas finds: the first meta with id i
            else:
                meta = metas[i]
            if got is None:
                got = _checked_slow(meta, names, tracking)
            if isinstance(got, str):
                problems.append(got)
                continue
            row, rot, track = got
            ids.append(i if c is not None else meta.id)
            ptrs.append(recs[i][0] if c is not None else 0)
            wrappers.append(meta)
            rows.append(row)
            rot_rows.append(rot)
            tracks.append(track)
            n_tracked += track[2]
    finally:
        if c is not None and t is not None:
            c.release(t)
    tracks = [tr[:2] for tr in tracks]
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
                problems.append(f"ROI {ids[i]}: {_problem(fields) or 'values out of range'}")
            keep = np.flatnonzero(~bad).tolist()
            ids, ptrs, wrappers = [ids[i] for i in keep], [ptrs[i] for i in keep], [wrappers[i] for i in keep]
            rot_rows = [rot_rows[i] for i in keep]
            tracks = [tracks[i] for i in keep]
            n_tracked = sum(tr[0] != UNTRACKED_ID for tr in tracks)
            box, rot_arr = box[keep], rot_arr[keep]
    good = RoiMetas(buf, ids, ptrs, wrappers) if c is not None else wrappers
    if not ids:
        return CheckedDetections(Detections.empty(), good, problems)
    n = len(good)
    xyxy = np.concatenate([box[:, :2], box[:, :2] + box[:, 2:4]], axis=1).astype(np.float32)
    labels = tuple(names.get(c, str(c)) for c in range(max(names) + 1)) if names and min(names) >= 0 else ()
    extra = {"roi_id": np.array(ids, np.int64)}
    tracker_id = None
    if n_tracked:
        tracker_id = np.array([tr[0] for tr in tracks], np.uint64)
        extra["predicted"] = np.array([tr[1] for tr in tracks], bool)
    cxcywhr = None
    has_rot = np.array([r is not None for r in rot_rows])
    if has_rot.any():
        aligned = np.concatenate([box[:, :2] + box[:, 2:4] / 2, box[:, 2:4], np.zeros((n, 1))], axis=1)
        cxcywhr = np.where(has_rot[:, None], rot_arr, aligned).astype(np.float32)
    dets = Detections(
        xyxy, box[:, 4].astype(np.float32), box[:, 5].astype(np.int32), cxcywhr=cxcywhr, labels=labels, extra=extra,
        tracker_id=tracker_id,
    )  # fmt: skip
    return CheckedDetections(dets, good, problems)


# -- the native helper (see _roi_native): first choice when built and its ABI check passes ---------------------

_NATIVE: list = []  # [RoiNative | None] once checked
_NATIVE_LOCK = threading.Lock()


def _native() -> _roi_native.RoiNative | None:
    """The native helper, or ``None`` (ctypes/PyGObject paths) where it is missing or fails its ABI check, or
    the ctypes path it works with is not usable. tests/meta/test_roi_native.py compares it with those paths."""
    if not _NATIVE:
        with _NATIVE_LOCK:
            if not _NATIVE:
                nat = _roi_native.load()
                _NATIVE.append(nat if nat is not None and _fast() is not None else None)
    return _NATIVE[0]


def _native_names(r: _roi_native.Scratch, cls: np.ndarray) -> dict[int, str] | None:
    """The label of each class id, from its first meta (as the other paths read it); None if not UTF-8."""
    names: dict[int, str] = {}
    uniq, first = np.unique(cls, return_index=True)
    ptrs = r.labels[first].tolist()
    for k, ptr in zip(uniq.tolist(), ptrs):
        if not ptr:
            return None
        try:
            names[k] = ctypes.string_at(ptr).decode()
        except UnicodeDecodeError:
            return None
    return names


def _read_native(nat: _roi_native.RoiNative, buf: Gst.Buffer, labels: tuple[str, ...]) -> Detections | None:
    """:func:`read_detections` in one native call; None where the other paths must read the buffer."""
    r = nat.acquire()
    try:
        n = nat.read(hash(buf), r)
        return None if n < 0 else _native_detections(r, n, labels)
    finally:
        nat.release(r)  # nothing returned shares memory with r


def _native_detections(r: _roi_native.Scratch, n: int, labels: tuple[str, ...]) -> Detections | None:
    if n == 0:
        return Detections.empty(labels=labels)
    flags = r.flags[:n]
    if ((flags & _roi_native.F_UID) == 0).any() or (flags & _roi_native.F_MODEL_BAD).any():
        return None
    cls = r.cls[:n].copy()
    names = _native_names(r, cls)
    if names is None:
        return None
    box = r.box[:n]
    xyxy = np.concatenate([box[:, :2], box[:, :2] + box[:, 2:4]], axis=1).astype(np.float32)
    track_id = np.full(n, UNTRACKED_ID, np.uint64)
    has_trk = (flags & _roi_native.F_TRACK) != 0
    track_id[has_trk] = r.track[:n][has_trk]
    rot = np.full((n, 5), np.nan, np.float32)
    has_rot = (flags & _roi_native.F_ROT) != 0
    rot[has_rot] = r.rot[:n][has_rot]
    out = (
        xyxy, box[:, 4].astype(np.float32), cls, r.uid[:n].astype(np.int64), r.model[:n].astype(np.int64),
        np.arange(n, dtype=np.int64), track_id, rot,
    )  # fmt: skip
    return _finish_read(out, names, labels)


def _checked_native(nat: _roi_native.RoiNative, buf: Gst.Buffer, tracking: bool) -> CheckedDetections | None:
    """:func:`read_detections_checked` in one native call; None where the other paths must read the buffer."""
    r = nat.acquire()
    try:
        n = nat.read(hash(buf), r)
        return None if n < 0 else _native_checked(r, n, buf, tracking)
    finally:
        nat.release(r)  # nothing returned shares memory with r


def _native_checked(r: _roi_native.Scratch, n: int, buf: Gst.Buffer, tracking: bool) -> CheckedDetections | None:
    if n == 0:
        return CheckedDetections(Detections.empty(), RoiMetas(buf, [], [], []), [])
    flags = r.flags[:n]
    cls = r.cls[:n]
    names = _native_names(r, cls)
    if names is None:
        return None
    box = np.empty((n, 6), np.float64)
    box[:, :5] = r.box[:n]
    box[:, 5] = cls
    has_rot = (flags & _roi_native.F_ROT) != 0
    rot_arr = np.zeros((n, 5), np.float64)
    rot_arr[has_rot] = r.rot[:n][has_rot]
    tid = np.full(n, UNTRACKED_ID, np.uint64)
    pred = np.zeros(n, bool)
    n_tracked = 0
    if tracking:
        has_trk = (flags & _roi_native.F_TRACK) != 0
        tid[has_trk] = r.track[:n][has_trk]
        pred = has_trk & ((flags & _roi_native.F_PRED) != 0)
        n_tracked = int(has_trk.sum())
    ptrs = r.ptrs[:n]
    problems: list[str] = []
    bad = ~np.isfinite(box).all(axis=1) | ~np.isfinite(rot_arr).all(axis=1)
    bad |= (box[:, 2] < 0) | (box[:, 3] < 0) | (rot_arr[:, 2] < 0) | (rot_arr[:, 3] < 0)
    bad |= ~((box[:, 4] >= 0) & (box[:, 4] <= 1))
    if bad.any():
        for i in np.flatnonzero(bad).tolist():
            fields = dict(zip(("left", "top", "width", "height", "confidence"), box[i, :5].tolist()))
            fields["class-id"] = int(cls[i])
            if has_rot[i]:
                fields.update(zip(_ROTATED_FIELDS, rot_arr[i].tolist()))
            problems.append(f"ROI {i}: {_problem(fields) or 'values out of range'}")
        keep = np.flatnonzero(~bad)
        box, rot_arr, has_rot, tid, pred, ptrs = (
            box[keep],
            rot_arr[keep],
            has_rot[keep],
            tid[keep],
            pred[keep],
            ptrs[keep],
        )
        n_tracked = int((tid != UNTRACKED_ID).sum())
        ids = keep.tolist()
    else:
        ids = list(range(n))
    good = RoiMetas(buf, ids, ptrs.tolist())
    if not ids:
        return CheckedDetections(Detections.empty(), good, problems)
    m = len(ids)
    xyxy = np.concatenate([box[:, :2], box[:, :2] + box[:, 2:4]], axis=1).astype(np.float32)
    labels = tuple(names.get(c, str(c)) for c in range(max(names) + 1)) if min(names) >= 0 else ()
    extra: dict[str, np.ndarray] = {"roi_id": np.array(ids, np.int64)}
    tracker_id = None
    if n_tracked:
        tracker_id = tid
        extra["predicted"] = pred.copy()
    cxcywhr = None
    if has_rot.any():
        aligned = np.concatenate([box[:, :2] + box[:, 2:4] / 2, box[:, 2:4], np.zeros((m, 1))], axis=1)
        cxcywhr = np.where(has_rot[:, None], rot_arr, aligned).astype(np.float32)
    dets = Detections(
        xyxy, box[:, 4].astype(np.float32), box[:, 5].astype(np.int32), cxcywhr=cxcywhr, labels=labels, extra=extra,
        tracker_id=tracker_id,
    )  # fmt: skip
    return CheckedDetections(dets, good, problems)
