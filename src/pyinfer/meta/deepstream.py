"""Detections as DeepStream ``NvDsObjectMeta``: what nvinfer writes, through pyservicemaker or pyds.

The only module (with :mod:`pyinfer.frames.deepstream`) that touches NVIDIA's Python bindings; both are passed
in as module objects, never imported at module level. Field by field this mirrors nvinfer's
``attach_metadata_detector`` (see docs/deepstream.md):

- ``class_id``, ``confidence``, ``unique_component_id`` (= ``unique-id``), ``object_id`` = UNTRACKED
  (0xFFFFFFFFFFFFFFFF, set explicitly: nvtracker removes objects still untracked after it ran, and a pool
  object may start at 0);
- ``rect_params`` left/top/width/height in surface pixels, clipped to the frame; ``border_width`` 3 and a
  per-class ``border_color``; no background;
- ``label`` / ``obj_label`` (at most 127 bytes: longer labels are cut at a UTF-8 boundary and reported);
- ``text_params``: ``display_text`` = the label, set once; x/y offsets at the box's top-left (10 px above,
  never negative); Serif 11 white on black;
- rotated boxes: DeepStream >= 9 (``rect_params.rotation_angle`` exists): the unrotated box plus the angle in
  degrees (not clipped: clipping would change the rotated box); before 9: the enclosing box, clipped, plus a
  JSON user meta (type :data:`ROTATED_BOX_META_TYPE`) with centre, size and angle on the object
  (pyservicemaker only: pyds needs a compiled binding for custom user meta);
- per-object attributes (``Detections.extra``, e.g. a classifier's top-k labels and scores): a JSON user meta
  of type :data:`ATTRIBUTES_META_TYPE` on the object (pyservicemaker only);
- instance masks (``Detections.masks``): ``mask_params`` as nvinfer writes them, a float mask local to the box
  (the model's S x S cells over it, values the probability) with ``threshold`` 0.5, in memory from ``g_malloc``:
  DeepStream frees ``mask_params.data`` with ``g_free`` when the object is released (nvinfer g_malloc's it),
  and pyservicemaker's ``mask_array`` setter stores the array's pointer without copying
  (deepstream-contract.md §1.6), so the array handed to it wraps a g_malloc'd block, never NumPy's own memory
  (pyservicemaker only; pyds reports them as not written);
- keypoints (``Detections.keypoints``): a JSON user meta of type :data:`KEYPOINTS_META_TYPE` on the object,
  ``{"keypoints": [[x, y, confidence], ...]}`` in frame pixels (pyservicemaker only);
- optional event meta for nvmsgconv: ``acquire_event_message_meta`` + ``generate`` + ``append`` per object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from pyinfer import draw
from pyinfer.detections import Detections

UNTRACKED_OBJECT_ID = 0xFFFF_FFFF_FFFF_FFFF
NVDS_START_USER_META = 8193
#: User meta types pyinfer attaches to objects (NVDS_START_USER_META + offsets; fixed, as pyservicemaker has
#: no nvds_get_user_meta_type).
ROTATED_BOX_META_TYPE = NVDS_START_USER_META + 0x5069  # "Pi"
ATTRIBUTES_META_TYPE = NVDS_START_USER_META + 0x506A
KEYPOINTS_META_TYPE = NVDS_START_USER_META + 0x506B
MASK_THRESHOLD = 0.5  # ultralytics' (and Detections.masks') threshold on the mask probability
MAX_LABEL_BYTES = 127  # obj_label is char[128]
BORDER_WIDTH = 3  # nvinfer's default
TEXT_ABOVE_PX = 10  # nvinfer puts the text 10 px above the box


def fit_label(label: str) -> tuple[str, bool]:
    """``label`` cut to at most 127 UTF-8 bytes at a character boundary; and whether it was cut."""
    raw = label.encode()
    if len(raw) <= MAX_LABEL_BYTES:
        return label, False
    return raw[:MAX_LABEL_BYTES].decode(errors="ignore"), True


@lru_cache(maxsize=4096)
def class_colour(class_id: int) -> tuple[float, float, float, float]:
    """RGBA in 0..1, the same colour pyosd draws the class in."""
    r, g, b = (draw.class_colour(class_id) / 255.0).tolist()
    return (r, g, b, 1.0)


@dataclass(frozen=True)
class WriterOptions:
    """What the element asks of a writer."""

    unique_id: int = 15
    event_meta: bool = False
    sensor: str = "N/A"


@dataclass
class WriteReport:
    """What happened while writing one batch (the element turns it into WARNINGs)."""

    written: int = 0
    pool_exhausted: bool = False
    labels_cut: set[str] = field(default_factory=set)
    not_written: set[str] = field(default_factory=set)  # what this writer cannot carry ("masks", "keypoints")

    def merge(self, other: WriteReport) -> None:
        self.written += other.written
        self.pool_exhausted |= other.pool_exhausted
        self.labels_cut |= other.labels_cut
        self.not_written |= other.not_written


@dataclass
class _Rows:
    """Per-detection Python values computed once per frame with NumPy (the per-object loop only assigns)."""

    rect: list[list[float]]
    conf: list[float]
    cls: list[int]
    labels: list[str]
    angle_deg: list[float] | None
    rotated_json: list[dict] | None
    attributes: list[dict] | None


def _rows(dets: Detections, width: int, height: int, *, rotation_field: bool) -> tuple[_Rows, set[str]]:
    xyxy = dets.xyxy.astype(np.float64)
    clipped = np.empty_like(xyxy)
    clipped[:, 0::2] = xyxy[:, 0::2].clip(0, width)
    clipped[:, 1::2] = xyxy[:, 1::2].clip(0, height)
    rect = np.concatenate([clipped[:, :2], clipped[:, 2:] - clipped[:, :2]], axis=1)
    angle_deg = rotated_json = None
    if dets.cxcywhr is not None:
        rot = dets.cxcywhr.astype(np.float64)
        if rotation_field:  # DS >= 9: the unrotated box and the angle, as nvinfer does for OBB models
            rect = np.stack([rot[:, 0] - rot[:, 2] / 2, rot[:, 1] - rot[:, 3] / 2, rot[:, 2], rot[:, 3]], axis=1)
            angle_deg = np.degrees(rot[:, 4]).tolist()
        else:
            rotated_json = [
                {"cx": cx, "cy": cy, "width": w, "height": h, "angle_rad": a, "angle_deg": math.degrees(a)}
                for cx, cy, w, h, a in rot.tolist()
            ]
    cut: set[str] = set()
    names: dict[int, str] = {}
    n_labels = len(dets.labels)
    for c in set(dets.class_id.tolist()):
        full = dets.labels[c] if 0 <= c < n_labels else str(c)
        names[c], was_cut = fit_label(full)
        if was_cut:
            cut.add(full)
    labels = [names[c] for c in dets.class_id.tolist()]
    attributes = _attributes(dets)
    rows = _Rows(rect.tolist(), dets.confidence.astype(np.float64).tolist(), dets.class_id.tolist(), labels,
                 angle_deg, rotated_json, attributes)  # fmt: skip
    return rows, cut


#: Detections.extra keys that are bookkeeping, not attributes of the object.
_NOT_ATTRIBUTES = frozenset({"unique_id", "model_id", "roi_id", "mtd_id", "predicted", "foreign_label"})


def _attributes(dets: Detections) -> list[dict] | None:
    """Per-object attributes from ``Detections.extra`` as JSON-ready dicts, or None when there are none.

    A classifier's ``topk_class_id``/``topk_confidence`` pair becomes ``topk``: a list of
    ``{class_id, label, confidence}``; any other extra array is carried as ``{key: value}``.
    """
    keys = [k for k in dets.extra if k not in _NOT_ATTRIBUTES]
    if not keys:
        return None
    out: list[dict] = [{} for _ in range(len(dets))]
    extra = dict(dets.extra)
    if "topk_class_id" in extra and "topk_confidence" in extra:
        ids, scores = extra.pop("topk_class_id").tolist(), extra.pop("topk_confidence").tolist()
        n_labels = len(dets.labels)
        for row, cls, conf in zip(out, ids, scores):
            row["topk"] = [
                {"class_id": c, "label": dets.labels[c] if 0 <= c < n_labels else str(c), "confidence": p}
                for c, p in zip(cls, conf)
            ]
    for key in keys:
        if key in extra:
            for row, value in zip(out, extra[key].tolist()):
                row[key] = value
    return out


class ServiceMakerWriter:
    """Writes through ``pyservicemaker`` (DeepStream 7.1+; the supported API from 9.0)."""

    name = "pyservicemaker"

    def __init__(self, sm: Any, options: WriterOptions):
        self.sm = sm
        self.osd = sm.osd
        self.options = options
        self._rotation_field: bool | None = None  # learnt from the first object (hasattr, not versions)
        # Colour structs are copied into the C fields on assignment: build each once, reuse for every object.
        self._white = self.osd.Color(1.0, 1.0, 1.0, 1.0)
        self._black = self.osd.Color(0.0, 0.0, 0.0, 1.0)
        self._class_colours: dict[int, Any] = {}

    def _colour(self, class_id: int) -> Any:
        colour = self._class_colours.get(class_id)
        if colour is None:
            colour = self._class_colours[class_id] = self.osd.Color(*class_colour(class_id))
        return colour

    def write_frame(self, batch_meta: Any, frame_meta: Any, dets: Detections, width: int, height: int) -> WriteReport:
        """Add one object meta per detection to ``frame_meta`` (used inside its iterator's loop only)."""
        report = WriteReport()
        if len(dets) == 0:
            return report
        osd = self.osd
        uid = self.options.unique_id
        rows = None
        for i in range(len(dets)):
            om = batch_meta.acquire_object_meta()
            if om is None or not om:
                report.pool_exhausted = True
                break
            if rows is None:
                if self._rotation_field is None:
                    self._rotation_field = hasattr(om.rect_params, "rotation_angle")
                rows, report.labels_cut = _rows(dets, width, height, rotation_field=self._rotation_field)
            om.class_id = rows.cls[i]
            om.confidence = rows.conf[i]
            om.unique_component_id = uid
            om.object_id = UNTRACKED_OBJECT_ID
            rect = om.rect_params
            rect.left, rect.top, rect.width, rect.height = rows.rect[i]
            if rows.angle_deg is not None:
                rect.rotation_angle = rows.angle_deg[i]
            rect.border_width = BORDER_WIDTH
            rect.border_color = self._colour(rows.cls[i])
            rect.has_bg_color = 0
            label = rows.labels[i]
            om.label = label
            text = om.text_params
            text.display_text = label  # once: the setter frees the previous string
            text.x_offset = max(int(rows.rect[i][0]), 0)
            text.y_offset = max(int(rows.rect[i][1]) - TEXT_ABOVE_PX, 0)
            font = text.font_params
            font.name = osd.FontFamily.Serif
            font.size = 11
            font.color = self._white
            text.set_bg_clr = 1
            text.text_bg_clr = self._black
            if rows.rotated_json is not None:
                um = batch_meta.acquire_user_meta()
                um.set_user_data_json(rows.rotated_json[i], ROTATED_BOX_META_TYPE)
                om.append(um)
            if rows.attributes is not None:
                um = batch_meta.acquire_user_meta()
                um.set_user_data_json(rows.attributes[i], ATTRIBUTES_META_TYPE)
                om.append(um)
            if dets.masks is not None:
                mask = om.mask_params
                mask.threshold = MASK_THRESHOLD
                mask.mask_array = glib_float_mask(dets.masks[i])  # DeepStream g_free's it with the object
            if dets.keypoints is not None:
                um = batch_meta.acquire_user_meta()
                um.set_user_data_json({"keypoints": dets.keypoints[i].astype(float).round(3).tolist()},
                                      KEYPOINTS_META_TYPE)  # fmt: skip
                om.append(um)
            frame_meta.append(om)
            if self.options.event_meta:
                em = batch_meta.acquire_event_message_meta()
                em.generate(om, frame_meta, self.options.sensor, "N/A", list(dets.labels))
                frame_meta.append(em)
            report.written += 1
        return report


class PydsWriter:
    """Writes through the legacy ``pyds`` bindings (DeepStream 7.x/8.0 apps), under the batch meta lock."""

    name = "pyds"

    def __init__(self, pyds: Any, options: WriterOptions):
        self.pyds = pyds
        self.options = options

    def write_frame(self, batch_meta: Any, frame_meta: Any, dets: Detections, width: int, height: int) -> WriteReport:
        report = WriteReport()
        if len(dets) == 0:
            return report
        pyds = self.pyds
        rows, report.labels_cut = _rows(dets, width, height, rotation_field=False)
        if dets.masks is not None:
            report.not_written.add("masks")  # pyds cannot hand DeepStream a g_malloc'd mask without a binding
        if dets.keypoints is not None:
            report.not_written.add("keypoints")  # custom user meta needs a compiled binding with pyds
        uid = self.options.unique_id
        pyds.nvds_acquire_meta_lock(batch_meta)
        try:
            for i in range(len(dets)):
                om = pyds.nvds_acquire_obj_meta_from_pool(batch_meta)
                if om is None:
                    report.pool_exhausted = True
                    break
                om.class_id = rows.cls[i]
                om.confidence = rows.conf[i]
                om.unique_component_id = uid
                om.object_id = UNTRACKED_OBJECT_ID
                rect = om.rect_params
                rect.left, rect.top, rect.width, rect.height = rows.rect[i]
                rect.border_width = BORDER_WIDTH
                rect.border_color.set(*class_colour(rows.cls[i]))
                rect.has_bg_color = 0
                om.obj_label = rows.labels[i]
                text = om.text_params
                text.display_text = rows.labels[i]  # the setter frees the old string itself: never free_buffer
                text.x_offset = max(int(rows.rect[i][0]), 0)
                text.y_offset = max(int(rows.rect[i][1]) - TEXT_ABOVE_PX, 0)
                font = text.font_params
                font.font_name = "Serif"
                font.font_size = 11
                font.font_color.set(1.0, 1.0, 1.0, 1.0)
                text.set_bg_clr = 1
                text.text_bg_clr.set(0.0, 0.0, 0.0, 1.0)
                pyds.nvds_add_obj_meta_to_frame(frame_meta, om, None)
                report.written += 1
        finally:
            pyds.nvds_release_meta_lock(batch_meta)
        return report


_G_MALLOC: Any = None


def glib_float_mask(cells: np.ndarray) -> np.ndarray:
    """A (S, S) uint8 mask (probability x 255) as a float32 array of probabilities in memory from ``g_malloc``,
    which DeepStream frees with ``g_free`` (the array does not own it: nothing in Python frees it)."""
    import ctypes

    global _G_MALLOC
    if _G_MALLOC is None:
        from pyinfer._clib import system_library

        fn = system_library("glib-2.0", hold_gil=True).g_malloc
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_void_p
        _G_MALLOC = fn
    h, w = cells.shape
    ptr = _G_MALLOC(max(1, h * w) * 4)
    out = np.ctypeslib.as_array((ctypes.c_float * (h * w)).from_address(ptr)).reshape(h, w)
    np.multiply(cells, np.float32(1.0 / 255.0), out=out, casting="unsafe")
    return out


def labels_fit(labels: Sequence[str]) -> list[str]:
    """The labels that will be cut to 127 bytes in NvDsObjectMeta."""
    return [name for name in labels if fit_label(name)[1]]
