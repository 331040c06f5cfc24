"""Detections as GstAnalytics metadata (GStreamer >= 1.24): pyinfer's metadata contract on current GStreamer.

Everything lives in the buffer's one ``GstAnalyticsRelationMeta`` (added if the buffer has none; other
producers' Mtds in it are kept). Per detection:

- an **object-detection Mtd** (``GstAnalyticsODMtd``): ``obj_type`` the label's GQuark; ``x, y, w, h`` the box
  in frame pixels as integers (left/top rounded down, right/bottom rounded up, clipped to the frame, as the
  ROI contract); ``location_confidence_lvl`` the confidence. Rotated detections on GStreamer >= 1.26 are
  *oriented* OD Mtds: ``x, y, w, h`` the unrotated rectangle around the rotated box's centre (rounded to
  the nearest pixel) and ``r`` the angle in radians in [0, 2π), clockwise, about the centre; on 1.24 they
  are the enclosing upright box and the rotated box is in the pyinfer Mtd only;
- a **classification Mtd** (``GstAnalyticsClsMtd``), related ``od RELATE_TO cls``: the class (label quark,
  confidence), or a classifier's top-k in descending order;
- a **pyinfer detection Mtd** (type name ``pyinfer-detection``, :data:`DETECTION_MTD`), related
  ``od RELATE_TO pyinfer``: what the standard Mtds cannot hold, as a packed little-endian C struct
  (:data:`DETECTION_STRUCT`): ``class_id`` (int32), ``unique_id`` (int32: the producing element's
  ``unique-id``), ``model_id`` (int32), ``flags`` (uint32: 1 rotated, 2 predicted by a tracker, 4
  ``frames_since_update`` is set), ``index`` (int32: the detection's index in its producer's frame, the ROI
  contract's ``id``), ``od_id`` (uint32: the OD Mtd it belongs to), ``frames_since_update`` (uint32),
  ``n_topk`` (uint32), then float64 ``left, top, width, height`` (the exact box) and ``rotated_cx,
  rotated_cy, rotated_width, rotated_height, angle_rad``, then ``n_topk`` int32: a classifier's top-k class
  ids, in the classification Mtd's order (0 for a detector).
- a tracker (``pytracker``) adds a **tracking Mtd** (``GstAnalyticsTrackingMtd``: ``tracking_id``,
  ``first_seen``/``last_seen`` running PTS) related ``od RELATE_TO tracking``.

Each frame that passed pyinfer also gets one **pyinfer frame Mtd** (``pyinfer-frame``, :data:`FRAME_STRUCT`:
``inferred``, ``unique_id``, ``model_id`` as int32, then a reserved uint32), related to nothing: "no
detections" versus "not inferred" for a tracker.

Readers (:func:`read_detections`, :func:`read_detections_checked`) take every OD Mtd of the buffer, in id
order. OD Mtds of other producers (no pyinfer Mtd) are read from their integer box and confidence, with class
id -1 and the OD's type as label; a related classification Mtd gives the label where the OD has none. The
pyinfer Mtd's exact box is used only while it still agrees with the OD's integer box: an element that scaled
the frame (``videoscale`` transforms the OD Mtds, not pyinfer's) leaves the OD box authoritative.

The API is reached through ctypes on ``libgstanalytics-1.0``, not PyGObject: GstAnalytics' introspection is
incomplete there (``iterate()`` and ``exist()`` crash PyGObject 3.50, custom Mtd types cannot be defined), and a
C call costs a fraction of a PyGObject call. :func:`available` says whether the library is there (GStreamer
>= 1.24, the plugins-bad libraries installed) and passed its self-test. The readers and :func:`set_track_ids`
go through a small C helper instead where it is built (``analytics_native.c``, see
:mod:`pyinfer.meta._analytics_native`): one call per buffer, with the same results as the ctypes path
(tests/meta/test_analytics_native.py compares them); ``PYINFER_NO_NATIVE=1`` turns it off.

Threads: like :mod:`pyinfer.meta.roi`, every function may run on several threads at once on buffers they only
read; writing needs a writable buffer, which one thread holds.
"""

from __future__ import annotations

import ctypes
import logging
import math
import struct
import sys
import threading
from collections.abc import Iterable, Sequence
from ctypes import (
    POINTER,
    PYFUNCTYPE,
    Structure,
    byref,
    c_char_p,
    c_float,
    c_int,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyinfer._clib import system_library
from pyinfer._gi import Gst
from pyinfer.detections import UNTRACKED_ID, Detections
from pyinfer.meta import _analytics_native
from pyinfer.meta.roi import FrameInfo

DETECTION_MTD = "pyinfer-detection"
FRAME_MTD = "pyinfer-frame"
#: A secondary classifier's result on an object (process-mode=secondary): related OD RELATE_TO it.
SECONDARY_MTD = "pyinfer-secondary"
#: unique_id (int32), the classification Mtd's id (uint32), k (uint32); then k int32 class ids, best first.
SECONDARY_STRUCT = struct.Struct("<iII")
#: The pyinfer detection Mtd's data: class_id, unique_id, model_id, flags, index, od_id, frames_since_update,
#: n_topk, then left, top, width, height, rotated_cx, rotated_cy, rotated_width, rotated_height, angle_rad;
#: followed by n_topk int32: a classifier's top-k class ids, in the classification Mtd's order.
DETECTION_STRUCT = struct.Struct("<iiiIiIII9d")
#: The pyinfer frame Mtd's data: inferred, unique_id, model_id, reserved.
FRAME_STRUCT = struct.Struct("<iiiI")
FLAG_ROTATED, FLAG_PREDICTED, FLAG_AGE = 1, 2, 4
REL_IS_PART_OF, REL_CONTAIN, REL_RELATE_TO = 1 << 1, 1 << 2, 1 << 3
CLOCK_TIME_NONE = 0xFFFF_FFFF_FFFF_FFFF
_TWO_PI = 2 * math.pi


class Mtd(Structure):
    """``GstAnalyticsMtd``: a handle (id, relation meta)."""

    _fields_ = [("id", c_uint), ("meta", c_void_p)]


class _InitParams(Structure):
    """``GstAnalyticsRelationMetaInitParams``: the relation matrix's order and the data size to start with (each
    also the step it grows by)."""

    _fields_ = [("initial_relation_order", c_size_t), ("initial_buf_size", c_size_t)]


class _MtdImpl(Structure):
    """``GstAnalyticsMtdImpl``: name, transform function, 20 reserved pointers."""

    _fields_ = [("name", c_char_p), ("transform", c_void_p), ("reserved", c_void_p * 20)]


class _Api:
    """The C functions of libgstanalytics-1.0 (and two of libgstreamer); one instance per process."""

    def __init__(self) -> None:
        an, gst, glib = (
            system_library("gstanalytics-1.0", hold_gil=True),
            system_library("gstreamer-1.0", hold_gil=True),
            system_library("glib-2.0", hold_gil=True),
        )

        def fn(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
            return PYFUNCTYPE(restype, *argtypes)((name, lib))

        def optional(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
            try:
                return fn(lib, name, restype, *argtypes)
            except AttributeError:
                return None

        P = POINTER(Mtd)
        self.get_meta = fn(an, "gst_buffer_get_analytics_relation_meta", c_void_p, c_void_p)
        self.add_meta = fn(an, "gst_buffer_add_analytics_relation_meta", c_void_p, c_void_p)
        self.add_meta_full = fn(an, "gst_buffer_add_analytics_relation_meta_full", c_void_p, c_void_p,
                                POINTER(_InitParams))  # fmt: skip
        self.add_od = fn(an, "gst_analytics_relation_meta_add_od_mtd", c_int, c_void_p, c_uint32, c_int, c_int,
                         c_int, c_int, c_float, P)  # fmt: skip
        # 1.26: oriented boxes
        self.add_oriented_od = optional(an, "gst_analytics_relation_meta_add_oriented_od_mtd", c_int, c_void_p,
                                        c_uint32, c_int, c_int, c_int, c_int, c_float, c_float, P)  # fmt: skip
        # Segmentation Mtds (GStreamer >= 1.26): instance masks of segmentation models.
        self.add_segmentation = optional(an, "gst_analytics_relation_meta_add_segmentation_mtd", c_int, c_void_p,
                                         c_void_p, c_int, c_size_t, POINTER(c_uint), c_int, c_int, c_uint, c_uint,
                                         P)  # fmt: skip
        self.segmentation_mask = optional(an, "gst_analytics_segmentation_mtd_get_mask", c_void_p, P,
                                          POINTER(c_int), POINTER(c_int), POINTER(c_uint), POINTER(c_uint))  # fmt: skip
        seg_type = optional(an, "gst_analytics_segmentation_mtd_get_mtd_type", c_size_t)
        self.segmentation_type: int | None = seg_type() if seg_type is not None else None
        video = system_library("gstvideo-1.0", hold_gil=True)
        self.add_video_meta = fn(video, "gst_buffer_add_video_meta", c_void_p, c_void_p, c_int, c_int, c_uint, c_uint)
        self.get_video_meta = fn(video, "gst_buffer_get_video_meta", c_void_p, c_void_p)
        self.buffer_extract = fn(gst, "gst_buffer_extract", c_size_t, c_void_p, c_size_t, c_void_p, c_size_t)
        self.buffer_ref = fn(gst, "gst_mini_object_ref", c_void_p, c_void_p)
        self.buffer_unref = fn(gst, "gst_mini_object_unref", None, c_void_p)
        self.od_location = fn(an, "gst_analytics_od_mtd_get_location", c_int, P, POINTER(c_int), POINTER(c_int),
                              POINTER(c_int), POINTER(c_int), POINTER(c_float))  # fmt: skip
        self.od_oriented_location = optional(an, "gst_analytics_od_mtd_get_oriented_location", c_int, P,
                                             POINTER(c_int), POINTER(c_int), POINTER(c_int), POINTER(c_int),
                                             POINTER(c_float), POINTER(c_float))  # fmt: skip
        self.od_obj_type = fn(an, "gst_analytics_od_mtd_get_obj_type", c_uint32, P)
        self.od_type = fn(an, "gst_analytics_od_mtd_get_mtd_type", c_size_t)()
        self.add_cls = fn(an, "gst_analytics_relation_meta_add_cls_mtd", c_int, c_void_p, c_size_t,
                          POINTER(c_float), POINTER(c_uint32), P)  # fmt: skip
        self.cls_length = fn(an, "gst_analytics_cls_mtd_get_length", c_size_t, P)
        self.cls_level = fn(an, "gst_analytics_cls_mtd_get_level", c_float, P, c_size_t)
        self.cls_quark = fn(an, "gst_analytics_cls_mtd_get_quark", c_uint32, P, c_size_t)
        self.cls_type = fn(an, "gst_analytics_cls_mtd_get_mtd_type", c_size_t)()
        self.add_tracking = fn(an, "gst_analytics_relation_meta_add_tracking_mtd", c_int, c_void_p, c_uint64,
                               c_uint64, P)  # fmt: skip
        self.tracking_info = fn(an, "gst_analytics_tracking_mtd_get_info", c_int, P, POINTER(c_uint64),
                                POINTER(c_uint64), POINTER(c_uint64), POINTER(c_int))  # fmt: skip
        self.tracking_last_seen = fn(an, "gst_analytics_tracking_mtd_update_last_seen", c_int, P, c_uint64)
        self.tracking_type = fn(an, "gst_analytics_tracking_mtd_get_mtd_type", c_size_t)()
        self.set_relation = fn(an, "gst_analytics_relation_meta_set_relation", c_int, c_void_p, c_int, c_uint,
                               c_uint)  # fmt: skip
        self.get_relation = fn(an, "gst_analytics_relation_meta_get_relation", c_int, c_void_p, c_uint, c_uint)
        self.iterate = fn(an, "gst_analytics_relation_meta_iterate", c_int, c_void_p, POINTER(c_void_p),
                          c_size_t, P)  # fmt: skip
        self.related = fn(an, "gst_analytics_relation_meta_get_direct_related", c_int, c_void_p, c_uint, c_int,
                          c_size_t, POINTER(c_void_p), P)  # fmt: skip
        self.add_mtd = fn(an, "gst_analytics_relation_meta_add_mtd", c_void_p, c_void_p, c_void_p, c_size_t, P)
        self.mtd_data = fn(an, "gst_analytics_relation_meta_get_mtd_data", c_void_p, c_void_p, c_uint)
        self.mtd_size = fn(an, "gst_analytics_mtd_get_size", c_size_t, P)
        self.is_writable = fn(gst, "gst_mini_object_is_writable", c_int, c_void_p)
        self.buffer_size = fn(gst, "gst_buffer_get_size", c_size_t, c_void_p)
        self.quark = fn(glib, "g_quark_from_string", c_uint32, c_char_p)
        self.quark_to_string = fn(glib, "g_quark_to_string", c_char_p, c_uint32)
        # The custom Mtd types: their address is their type; kept for the life of the process.
        self._impls = (
            _MtdImpl(DETECTION_MTD.encode()),
            _MtdImpl(FRAME_MTD.encode()),
            _MtdImpl(SECONDARY_MTD.encode()),
        )
        self.det_type = ctypes.addressof(self._impls[0])
        self.frame_type = ctypes.addressof(self._impls[1])
        self.secondary_type = ctypes.addressof(self._impls[2])
        self.oriented = self.add_oriented_od is not None and self.od_oriented_location is not None
        self._labels: dict[int, str] = {}  # quark -> label (quarks are never freed)
        self._quarks: dict[str, int] = {}

    def label_quark(self, label: str) -> int:
        q = self._quarks.get(label)
        if q is None:
            q = self._quarks[label] = self.quark(label.encode())
        return q

    def quark_label(self, quark: int) -> str:
        s = self._labels.get(quark)
        if s is None:
            raw = self.quark_to_string(quark) if quark else None
            s = raw.decode(errors="replace") if raw else ""
            if quark:
                self._labels[quark] = s
        return s

    def related_one(self, meta: int, mtd_id: int, mtd_type: int) -> Mtd | None:
        """The first Mtd of ``mtd_type`` that ``mtd_id`` RELATE_TO, or None."""
        state, out = c_void_p(0), Mtd()
        if self.related(meta, mtd_id, REL_RELATE_TO, mtd_type, byref(state), byref(out)):
            return out
        return None

    def related_all(self, meta: int, mtd_id: int, mtd_type: int) -> list[Mtd]:
        """Every Mtd of ``mtd_type`` that ``mtd_id`` RELATE_TO."""
        state, out, found = c_void_p(0), Mtd(), []
        while self.related(meta, mtd_id, REL_RELATE_TO, mtd_type, byref(state), byref(out)):
            found.append(Mtd(out.id, out.meta))
        return found

    def all_of(self, meta: int, mtd_type: int) -> list[Mtd]:
        state, out, found = c_void_p(0), Mtd(), []
        while self.iterate(meta, byref(state), mtd_type, byref(out)):
            found.append(Mtd(out.id, out.meta))
        return found


_API: _Api | None = None
_LOADED = False
_LOAD_LOCK = threading.Lock()


def _api() -> _Api | None:
    global _API, _LOADED
    if _LOADED:
        return _API
    with _LOAD_LOCK:
        if not _LOADED:
            _API = _load()
            _LOADED = True
    return _API


def _load() -> _Api | None:
    if not Gst.is_initialized():
        Gst.init(None)
    if (Gst.version()[0], Gst.version()[1]) < (1, 24):
        return None
    try:
        api = _Api()
    except (OSError, AttributeError):
        return None
    if not _self_test(api):
        return None
    _register_with_pygobject(api)
    return api


def _register_with_pygobject(api: _Api) -> None:
    """Let PyGObject iterate relation metas holding pyinfer's Mtds.

    gst-python's GstAnalytics override (1.24-1.26) looks every Mtd type up in a dict of the standard ones and
    raises KeyError on any other type, so ``for mtd in relation_meta`` would fail on a buffer pyinfer wrote
    (as on any producer's custom Mtds). Registering pyinfer's types there makes them come out as plain
    ``GstAnalytics.Mtd`` handles (``GstAnalytics.mtd_type_get_name(mtd.get_mtd_type())`` names them).
    """
    try:
        import gi

        gi.require_version("GstAnalytics", "1.0")
        from gi.repository import GstAnalytics  # noqa: F401  (loads the override)
    except (ImportError, ValueError):
        return
    override = sys.modules.get("gi.overrides.GstAnalytics")
    types = getattr(override, "__mtd_types__", None)
    if not isinstance(types, dict):
        return
    for t in (api.det_type, api.frame_type):
        types.setdefault(t, lambda rmeta, mtd_id, t=t: rmeta.get_mtd(mtd_id, t))


def _self_test(api: _Api) -> bool:
    """A buffer's C pointer is ``hash()`` of its PyGObject wrapper, and a round trip gives back what was written."""
    buf = Gst.Buffer.new_allocate(None, 7, None)
    if api.buffer_size(hash(buf)) != 7:
        return False
    dets = Detections(np.array([[1.25, 2.5, 30.0, 40.75]], np.float32), np.array([0.5], np.float32),
                      np.array([3], np.int32), labels=("a", "b", "c", "d"))  # fmt: skip
    try:
        _write(api, buf, dets, unique_id=7, model_id=2, first_index=0)
        got = _read_ctypes(api, buf, (), checked=False, tracking=True)
    except Exception:
        return False
    return (
        got is not None
        and len(got.detections) == 1
        and got.detections.label(0) == "d"
        and (np.array_equal(got.detections.xyxy, dets.xyxy) and int(got.detections.extra["unique_id"][0]) == 7)
    )


def available() -> bool:
    """GstAnalytics can be written and read here (GStreamer >= 1.24 with libgstanalytics, self-test passed)."""
    return _api() is not None


def segmentation_available() -> bool:
    """Segmentation Mtds exist (GStreamer >= 1.26): instance masks are written as GstAnalytics too."""
    api = _api()
    return api is not None and api.add_segmentation is not None and api.segmentation_type is not None


#: GST_VIDEO_FORMAT_GRAY8 and GST_SEGMENTATION_TYPE_INSTANCE (stable enum values of GStreamer's headers).
_GRAY8, _SEGMENTATION_INSTANCE = 25, 1
#: Mask cells at or above this (probability x 255) belong to the object (region 1).
MASK_THRESHOLD = 128


def write_instance_masks(buf: Gst.Buffer, od_ids: Sequence[int], masks: np.ndarray) -> list[int]:
    """One instance segmentation Mtd per object (GStreamer >= 1.26; ``buf`` writable): the box-local mask
    (``masks[i]``, (S, S) uint8 probability x 255) as a GRAY8 buffer of region ids, 1 for the object's cells
    (>= :data:`MASK_THRESHOLD`) and 0 for the rest, placed over the OD Mtd's box, regions [0, 1]; related
    ``od RELATE_TO seg``. Returns the segmentation Mtd ids (none where segmentation Mtds do not exist)."""
    api = _require()
    if not segmentation_available():
        return []
    meta = _relation_meta(api, buf)
    od, seg = Mtd(), Mtd()
    x, y, w, h, conf = c_int(), c_int(), c_int(), c_int(), c_float()
    regions = (c_uint * 2)(0, 1)
    ids = []
    for od_id, mask in zip(od_ids, masks):
        od.id, od.meta = int(od_id), meta
        if not api.od_location(byref(od), byref(x), byref(y), byref(w), byref(h), byref(conf)):
            raise RuntimeError(f"no object-detection Mtd {od_id} to attach a mask to")
        cells = (np.asarray(mask) >= MASK_THRESHOLD).astype(np.uint8)
        mh, mw = cells.shape
        mbuf = Gst.Buffer.new_wrapped(np.ascontiguousarray(cells).tobytes())
        ptr = hash(mbuf)
        if not api.add_video_meta(ptr, 0, _GRAY8, mw, mh):
            raise RuntimeError("could not add the mask's video meta")
        api.buffer_ref(ptr)  # add_segmentation_mtd takes a reference (transfer full); the wrapper keeps its own
        if not api.add_segmentation(meta, ptr, _SEGMENTATION_INSTANCE, 2, regions, x.value, y.value,
                                    max(w.value, 1), max(h.value, 1), byref(seg)):  # fmt: skip
            api.buffer_unref(ptr)
            raise RuntimeError("could not add a segmentation Mtd")
        api.set_relation(meta, REL_RELATE_TO, od.id, seg.id)
        ids.append(seg.id)
    return ids


def read_instance_masks(buf: Gst.Buffer) -> list[tuple[np.ndarray, tuple[int, int, int, int]] | None]:
    """Per OD Mtd (id order), the instance segmentation Mtd related to it: its region-id mask ((h, w) uint8)
    and where it lies ``(x, y, w, h)`` in frame pixels; None where none (or before GStreamer 1.26)."""
    api = _require()
    meta = api.get_meta(hash(buf))
    seg_type = api.segmentation_type
    if not meta or seg_type is None or api.segmentation_mask is None:
        return []
    out: list[tuple[np.ndarray, tuple[int, int, int, int]] | None] = []
    x, y, w, h = c_int(), c_int(), c_uint(), c_uint()
    for od in api.all_of(meta, api.od_type):
        seg = api.related_one(meta, od.id, seg_type)
        if seg is None:
            out.append(None)
            continue
        ptr = api.segmentation_mask(byref(seg), byref(x), byref(y), byref(w), byref(h))
        if not ptr:
            out.append(None)
            continue
        try:
            mask = _gray8(api, ptr)
        finally:
            api.buffer_unref(ptr)
        out.append(None if mask is None else (mask, (x.value, y.value, w.value, h.value)))
    return out


class _VideoMeta(Structure):
    """The head of ``GstVideoMeta`` (unchanged since GStreamer 1.0): GstMeta, buffer, flags, format, id, width,
    height, n_planes, offset[4], stride[4]."""

    _fields_ = [
        ("meta_flags", c_int), ("meta_info", c_void_p), ("buffer", c_void_p), ("flags", c_int), ("format", c_int),
        ("id", c_uint), ("width", c_uint), ("height", c_uint), ("n_planes", c_uint),
        ("offset", c_size_t * 4), ("stride", c_int * 4),
    ]  # fmt: skip


def _gray8(api: _Api, ptr: int) -> np.ndarray | None:
    """The GRAY8 image of a mask buffer, by its GstVideoMeta (width, height, stride, offset), copied out."""
    vptr = api.get_video_meta(ptr)
    if not vptr:
        return None
    vm = _VideoMeta.from_address(vptr)
    if vm.format != _GRAY8 or vm.width == 0 or vm.height == 0:
        return None
    width, height, stride, offset = int(vm.width), int(vm.height), int(vm.stride[0]), int(vm.offset[0])
    size = int(api.buffer_size(ptr))
    need = offset + stride * (height - 1) + width
    if stride < width or size < need:
        return None
    rows = np.empty(size, np.uint8)
    if api.buffer_extract(ptr, 0, rows.ctypes.data, size) != size:
        return None
    rows = rows[offset:need]
    return np.lib.stride_tricks.as_strided(rows, (height, width), (stride, 1)).copy()


def oriented_available() -> bool:
    """Oriented object-detection Mtds exist (GStreamer >= 1.26)."""
    api = _api()
    return api is not None and api.oriented


def _require() -> _Api:
    api = _api()
    if api is None:
        raise RuntimeError(
            f"GstAnalytics metadata needs GStreamer >= 1.24 with libgstanalytics-1.0 (gstreamer1.0-plugins-bad); "
            f"this is GStreamer {Gst.version_string().split()[-1]}"
        )
    return api


def has_analytics(buf: Gst.Buffer) -> bool:
    """``buf`` carries a GstAnalytics relation meta with at least one object-detection or pyinfer Mtd."""
    api = _api()
    if api is None:
        return False
    meta = api.get_meta(hash(buf))
    if not meta:
        return False
    state, out = c_void_p(0), Mtd()
    return bool(api.iterate(meta, byref(state), api.od_type, byref(out))) or bool(
        api.iterate(meta, byref(c_void_p(0)), api.frame_type, byref(out))
    )


# -- writing -----------------------------------------------------------------------------------------------


#: Relation-matrix entries and data bytes to reserve per detection where pyinfer adds the relation meta: its OD,
#: classification and pyinfer Mtds and a tracker's tracking Mtd. GStreamer's default (5 Mtds, 1 KiB, growing by
#: as much) copies the whole N x N matrix every 5 Mtds: most of the cost of writing 100 detections.
_MTDS_PER_DETECTION, _BYTES_PER_DETECTION = 4, 512


def _relation_meta(api: _Api, buf: Gst.Buffer, detections: int = 0) -> int:
    """``buf``'s relation meta, added (sized for ``detections``) where it has none; ``buf`` must be writable."""
    ptr = hash(buf)
    if not api.is_writable(ptr):
        raise RuntimeError("could not add analytics meta: the buffer is not writable")
    meta = api.get_meta(ptr)
    if not meta and detections > 0:
        params = _InitParams(_MTDS_PER_DETECTION * detections + 8, _BYTES_PER_DETECTION * detections + 1024)
        meta = api.add_meta_full(ptr, byref(params))
    elif not meta:
        meta = api.add_meta(ptr)
    if not meta:
        raise RuntimeError("could not add the analytics relation meta")
    return meta


def write_detections(
    buf: Gst.Buffer, detections: Detections, *, unique_id: int = 0, model_id: int = 0, first_index: int = 0
) -> list[int]:
    """Add the Mtds of the module docs for each detection to ``buf`` (writable); returns the OD Mtd ids.

    ``first_index`` numbers the detections from there (the ROI contract's ``first_id``). A classifier's top-k
    (``extra["topk_class_id"]`` / ``extra["topk_confidence"]``) becomes the classification Mtd.
    """
    return _write(_require(), buf, detections, unique_id=unique_id, model_id=model_id, first_index=first_index)


def _write(api: _Api, buf: Gst.Buffer, dets: Detections, *, unique_id: int, model_id: int,
           first_index: int, predicted: bool = False, ages: Sequence[int] | None = None) -> list[int]:  # fmt: skip
    n = len(dets)
    if n == 0:
        return []
    meta = _relation_meta(api, buf, n)
    xyxy = dets.xyxy.astype(np.float64)
    ltwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).tolist()
    conf = dets.confidence.astype(np.float64).tolist()
    cls = dets.class_id.tolist()
    rot = None if dets.cxcywhr is None else dets.cxcywhr.astype(np.float64).tolist()
    topk = None
    if "topk_class_id" in dets.extra and "topk_confidence" in dets.extra:
        topk = (
            np.asarray(dets.extra["topk_class_id"]).reshape(n, -1).tolist(),
            np.asarray(dets.extra["topk_confidence"], np.float64).reshape(n, -1).tolist(),
        )
    n_labels = len(dets.labels)
    od, cls_mtd, pmtd = Mtd(), Mtd(), Mtd()
    ids = []
    for i in range(n):
        left, top, width, height = ltwh[i]
        label = dets.label(i)
        q = api.label_quark(label)
        flags = 0
        r5 = (math.nan,) * 5
        if rot is not None:
            r5 = tuple(rot[i])
            flags |= FLAG_ROTATED
        if rot is not None and api.oriented:
            cx, cy, rw, rh, angle = r5
            x0, y0 = round(cx - rw / 2), round(cy - rh / 2)
            ok = api.add_oriented_od(meta, q, x0, y0, round(rw), round(rh), angle % _TWO_PI, conf[i], byref(od))
        else:
            x0, y0 = math.floor(left), math.floor(top)
            w, h = math.ceil(left + width) - x0, math.ceil(top + height) - y0
            ok = api.add_od(meta, q, x0, y0, w, h, conf[i], byref(od))
        if not ok:
            raise RuntimeError("could not add an object-detection Mtd")
        if topk is not None:
            quarks = [api.label_quark(dets.labels[c] if 0 <= c < n_labels else str(c)) for c in topk[0][i]]
            levels = topk[1][i]
        else:
            quarks, levels = [q], [conf[i]]
        k = len(quarks)
        if not api.add_cls(meta, k, (c_float * k)(*levels), (c_uint32 * k)(*quarks), byref(cls_mtd)):
            raise RuntimeError("could not add a classification Mtd")
        age = -1 if ages is None else int(ages[i])
        if predicted:
            flags |= FLAG_PREDICTED
        if age >= 0:
            flags |= FLAG_AGE
        topk_ids = [] if topk is None else [int(c) for c in topk[0][i]]
        packed = DETECTION_STRUCT.pack(
            int(cls[i]), unique_id, model_id, flags, first_index + i, od.id, max(age, 0) & 0xFFFFFFFF,
            len(topk_ids), left, top, width, height, *r5,
        ) + struct.pack(f"<{len(topk_ids)}i", *topk_ids)  # fmt: skip
        data = api.add_mtd(meta, api.det_type, len(packed), byref(pmtd))
        if not data:
            raise RuntimeError("could not add the pyinfer detection Mtd")
        ctypes.memmove(data, packed, len(packed))
        api.set_relation(meta, REL_RELATE_TO, od.id, cls_mtd.id)
        api.set_relation(meta, REL_RELATE_TO, od.id, pmtd.id)
        ids.append(od.id)
    return ids


def write_frame_info(buf: Gst.Buffer, *, inferred: bool, unique_id: int = 0, model_id: int = 0) -> None:
    """Add the pyinfer frame Mtd (see the module docs) to ``buf`` (which must be writable)."""
    api = _require()
    meta = _relation_meta(api, buf)
    out = Mtd()
    data = api.add_mtd(meta, api.frame_type, FRAME_STRUCT.size, byref(out))
    if not data:
        raise RuntimeError("could not add the pyinfer frame Mtd")
    ctypes.memmove(data, FRAME_STRUCT.pack(int(bool(inferred)), unique_id, model_id, 0), FRAME_STRUCT.size)


def read_frame_info(buf: Gst.Buffer) -> FrameInfo | None:
    """The first pyinfer frame Mtd of ``buf``, or None."""
    api = _api()
    if api is None:
        return None
    meta = api.get_meta(hash(buf))
    if not meta:
        return None
    state, out = c_void_p(0), Mtd()
    if not api.iterate(meta, byref(state), api.frame_type, byref(out)):
        return None
    inferred, uid, mid, _ = FRAME_STRUCT.unpack(ctypes.string_at(api.mtd_data(meta, out.id), FRAME_STRUCT.size))
    return FrameInfo(bool(inferred), uid, mid)


# -- tracking ----------------------------------------------------------------------------------------------


def set_track_ids(
    buf: Gst.Buffer, od_ids: Iterable[int], track_ids: Iterable[int], *, pts: int = CLOCK_TIME_NONE,
    first_seen: Iterable[int] | None = None,
) -> None:  # fmt: skip
    """Add a tracking Mtd with each track id, related ``od RELATE_TO tracking``, to the OD Mtd ids given.

    ``first_seen``: each track's first PTS (``pts`` where not given); ``last_seen`` is ``pts``.
    """
    api = _require()
    meta = _relation_meta(api, buf)
    od_ids, track_ids = list(od_ids), list(track_ids)
    firsts = [pts] * len(od_ids) if first_seen is None else list(first_seen)
    nat = _native(api)
    if nat is not None and 0 <= pts <= CLOCK_TIME_NONE:
        n = min(len(od_ids), len(track_ids), len(firsts))
        ods = _uints(od_ids[:n], 0xFFFF_FFFF)
        tids = _uints(track_ids[:n], UNTRACKED_ID)
        starts = _uints(firsts[:n], CLOCK_TIME_NONE)
        if ods is not None and tids is not None and starts is not None:  # else as below (with its errors)
            if nat.set_tracks(meta, ods.astype(np.uint32), tids, starts, pts) < n:
                raise RuntimeError("could not add a tracking Mtd")
            return
    out = Mtd()
    for od_id, tid, first in zip(od_ids, track_ids, firsts):
        if not 0 <= int(tid) <= UNTRACKED_ID:
            raise ValueError(f"track id {tid} is not an unsigned 64-bit integer")
        if not api.add_tracking(meta, int(tid), int(first), byref(out)):
            raise RuntimeError("could not add a tracking Mtd")
        if pts != CLOCK_TIME_NONE:
            api.tracking_last_seen(byref(out), pts)
        api.set_relation(meta, REL_RELATE_TO, od_id, out.id)


def write_predicted(
    buf: Gst.Buffer, detections: Detections, *, unique_id: int, model_id: int, pts: int = CLOCK_TIME_NONE,
    first_seen: Iterable[int] | None = None,
) -> list[int]:  # fmt: skip
    """A tracker's predicted boxes (``tracker_id``, ``extra["frames_since_update"]``): OD, cls and pyinfer Mtds
    flagged predicted, and their tracking Mtds."""
    api = _require()
    meta = api.get_meta(hash(buf))
    first_index = 0
    if meta:
        first_index = len(api.all_of(meta, api.od_type))
    ages = detections.extra["frames_since_update"].tolist() if "frames_since_update" in detections.extra else None
    ids = _write(api, buf, detections, unique_id=unique_id, model_id=model_id, first_index=first_index,
                 predicted=True, ages=ages)  # fmt: skip
    if detections.tracker_id is None:
        raise ValueError("predicted detections need tracker_id")
    set_track_ids(buf, ids, detections.tracker_id.tolist(), pts=pts, first_seen=first_seen)
    return ids


# -- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedDetections:
    """What :func:`read_detections_checked` read: the well-formed detections, their OD Mtd ids, the problems."""

    detections: Detections
    metas: list[int]
    problems: list[str]


def read_detections(buf: Gst.Buffer, labels: tuple[str, ...] = ()) -> Detections | None:
    """The detections of ``buf``'s OD Mtds (see the module docs), or None if it has no analytics meta.

    ``extra`` has ``unique_id`` (-1 for other producers), ``model_id``, ``roi_id`` (the pyinfer index, or the
    OD Mtd id), ``mtd_id`` (the OD Mtd id), and ``predicted`` when any detection is tracked; ``tracker_id``
    (uint64, :data:`UNTRACKED_ID` where none) then too.
    """
    api = _api()
    if api is None:
        return None
    got = _read(api, buf, labels, checked=False, tracking=True)
    return None if got is None else got.detections


def read_detections_checked(buf: Gst.Buffer, *, tracking: bool = True) -> CheckedDetections | None:
    """:func:`read_detections`, leaving out (and naming in ``problems``) OD Mtds with impossible values."""
    api = _api()
    if api is None:
        return None
    return _read(api, buf, (), checked=True, tracking=tracking)


def _problem(conf: float, w: int, h: int, record: tuple | None) -> str | None:
    if not math.isfinite(conf) or not 0.0 <= conf <= 1.0:
        return f"confidence {conf!r} is not in [0, 1]"
    if w < 0 or h < 0:
        return f"negative size {w}x{h}"
    if record is not None:
        values = record[8:12]
        if not all(math.isfinite(v) for v in values) or values[2] < 0 or values[3] < 0:
            return f"pyinfer Mtd box {values!r} is not a finite box"
    return None


def _read(api: _Api, buf: Gst.Buffer, labels: tuple[str, ...], *, checked: bool,
          tracking: bool) -> CheckedDetections | None:  # fmt: skip
    nat = _native(api)
    if nat is not None:
        return _read_native(api, nat, buf, labels, checked=checked, tracking=tracking)
    return _read_ctypes(api, buf, labels, checked=checked, tracking=tracking)


def _read_ctypes(api: _Api, buf: Gst.Buffer, labels: tuple[str, ...], *, checked: bool,
                 tracking: bool) -> CheckedDetections | None:  # fmt: skip
    """The reader through ctypes, one C call at a time (the reference of the native path)."""
    meta = api.get_meta(hash(buf))
    if not meta:
        return None
    ods = api.all_of(meta, api.od_type)
    rows: list[tuple] = []
    problems: list[str] = []
    kept: list[int] = []
    names: dict[int, str] = {}
    x, y, w, h, r, conf = c_int(), c_int(), c_int(), c_int(), c_float(), c_float()
    tid, first, last, lost = c_uint64(), c_uint64(), c_uint64(), c_int()
    fixed = DETECTION_STRUCT.size
    for od in ods:
        ref = byref(od)
        if api.oriented:
            api.od_oriented_location(ref, byref(x), byref(y), byref(w), byref(h), byref(r), byref(conf))
        else:
            api.od_location(ref, byref(x), byref(y), byref(w), byref(h), byref(conf))
            r.value = 0.0
        p = api.related_one(meta, od.id, api.det_type)
        record = None
        if p is not None:
            record = _record(api, meta, p, fixed)
        if checked:
            problem = _problem(conf.value, w.value, h.value, record)
            if problem is not None:
                problems.append(f"object-detection Mtd {od.id}: {problem}")
                continue
        label = api.quark_label(api.od_obj_type(ref))
        if not label:
            c = api.related_one(meta, od.id, api.cls_type)
            if c is not None and api.cls_length(byref(c)) > 0:
                label = api.quark_label(api.cls_quark(byref(c), 0))
        track = (UNTRACKED_ID, False)
        if tracking:
            t = api.related_one(meta, od.id, api.tracking_type)
            if t is not None and api.tracking_info(byref(t), byref(tid), byref(first), byref(last), byref(lost)):
                track = (tid.value, bool(record is not None and record[3] & FLAG_PREDICTED))
        rows.append((od.id, x.value, y.value, w.value, h.value, r.value, conf.value, label, record, track))
        kept.append(od.id)
    m = len(rows)
    xyxy = np.empty((m, 4), np.float32)
    confidence = np.empty(m, np.float32)
    class_id = np.full(m, -1, np.int32)
    uid = np.full(m, -1, np.int64)
    model_id = np.full(m, -1, np.int64)
    roi_id = np.empty(m, np.int64)
    mtd_id = np.empty(m, np.int64)
    track_id = np.full(m, UNTRACKED_ID, np.uint64)
    predicted = np.zeros(m, bool)
    rot = np.full((m, 5), np.nan, np.float32)
    for i, (od_id, x0, y0, w0, h0, r0, c0, label, record, track) in enumerate(rows):
        mtd_id[i] = roi_id[i] = od_id
        confidence[i] = c0
        track_id[i], predicted[i] = track
        if r0 and api.oriented:  # oriented OD: the enclosing box of the rotated rectangle
            cx, cy = x0 + w0 / 2, y0 + h0 / 2
            ca, sa = abs(math.cos(r0)), abs(math.sin(r0))
            hw, hh = (w0 * ca + h0 * sa) / 2, (w0 * sa + h0 * ca) / 2
            box = (cx - hw, cy - hh, cx + hw, cy + hh)
            rot[i] = (cx, cy, w0, h0, r0)
        else:
            box = (x0, y0, x0 + w0, y0 + h0)
        if record is not None:
            cid, u, mid, flags, index, _od, _age, _k, left, top, width, height = record[:12]
            exact = (left, top, left + width, top + height)
            if flags & FLAG_ROTATED and r0 and api.oriented:  # compare the rotated boxes themselves
                rcx, rcy, rw, rh, _angle = record[12:17]
                agree = _agrees((rcx - rw / 2, rcy - rh / 2, rcx + rw / 2, rcy + rh / 2), (x0, y0, x0 + w0, y0 + h0))
            else:
                agree = _agrees(exact, box)
            if agree:
                box = exact
                if flags & FLAG_ROTATED:
                    rot[i] = record[12:17]
            class_id[i], uid[i], model_id[i], roi_id[i] = cid, u, mid, index
            names.setdefault(cid, label)
        else:
            names.setdefault(-1, label)
        xyxy[i] = box
    if not labels and names and min(names) >= 0:
        labels = tuple(names.get(c, str(c)) for c in range(max(names) + 1))
    foreign = [row[7] if row[8] is None else "" for row in rows] if any(row[8] is None for row in rows) else None
    columns = (xyxy, confidence, class_id, uid, model_id, roi_id, mtd_id, track_id, predicted, rot)
    return _assemble(columns, foreign, labels, kept, problems)


def _assemble(columns: tuple[np.ndarray, ...], foreign: list[str] | None, labels: tuple[str, ...], kept: list[int],
              problems: list[str]) -> CheckedDetections:  # fmt: skip
    """The reader's result from its columns (both paths): ``xyxy`` (float32), ``confidence``, ``class_id``, ``uid``,
    ``model_id``, ``roi_id``, ``mtd_id``, ``track_id``, ``predicted``, ``rot`` (float32, NaN where not rotated);
    ``foreign`` the label of each row of another producer ("" for pyinfer's), None where there is none."""
    xyxy, confidence, class_id, uid, model_id, roi_id, mtd_id, track_id, predicted, rot = columns
    m = len(xyxy)
    extra: dict[str, np.ndarray] = {"unique_id": uid, "model_id": model_id, "roi_id": roi_id, "mtd_id": mtd_id}
    tracker_id = None
    if (track_id != UNTRACKED_ID).any():
        tracker_id = track_id
        extra["predicted"] = predicted
    if foreign is not None:
        extra["foreign_label"] = np.array(foreign, dtype=object)
    has_rot = ~np.isnan(rot[:, 4])
    cxcywhr = None
    if has_rot.any():
        ltwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        aligned = np.concatenate([ltwh[:, :2] + ltwh[:, 2:] / 2, ltwh[:, 2:], np.zeros((m, 1), np.float32)], axis=1)
        cxcywhr = np.where(has_rot[:, None], rot, aligned).astype(np.float32)
    dets = Detections(xyxy, confidence, class_id, cxcywhr=cxcywhr, labels=labels, extra=extra, tracker_id=tracker_id)
    return CheckedDetections(dets, kept, problems)


def _agrees(exact: tuple, box: tuple) -> bool:
    """The exact float box still rounds to (or lies within a pixel of) the integer box."""
    return all(abs(a - b) <= 1.0 for a, b in zip(exact, box))


# -- the native helper (see _analytics_native): first choice when built and its ABI check passes ----------------

_NATIVE: list = []  # [AnalyticsNative | None] once checked
_NATIVE_LOCK = threading.Lock()
_log = logging.getLogger(__name__)


def _native(api: _Api) -> _analytics_native.AnalyticsNative | None:
    """The native helper, or ``None`` (ctypes path) where it is missing, fails its ABI check, or reads oriented
    OD Mtds where this libgstanalytics has none (or the reverse: built against another GStreamer)."""
    if not _NATIVE:
        with _NATIVE_LOCK:
            if not _NATIVE:
                nat = _analytics_native.load()
                if nat is not None and nat.oriented != api.oriented:
                    _log.warning("native analytics helper %s not used (ctypes path instead): built %s oriented OD "
                                 "Mtds, libgstanalytics here has %s", _analytics_native.LIB_PATH,
                                 "for" if nat.oriented else "without", "them" if api.oriented else "none")  # fmt: skip
                    nat = None
                _NATIVE.append(nat)
    return _NATIVE[0]


def _uints(values: list, top: int) -> np.ndarray | None:
    """``values`` as uint64 where all are integers in [0, top], else None (the ctypes path then takes them)."""
    a = np.asarray(values)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        return None
    if len(a) and (int(a.min()) < 0 or int(a.max()) > top):
        return None
    return a.astype(np.uint64)


def _read_native(api: _Api, nat: _analytics_native.AnalyticsNative, buf: Gst.Buffer, labels: tuple[str, ...], *,
                 checked: bool, tracking: bool) -> CheckedDetections | None:  # fmt: skip
    """:func:`_read_ctypes` in one native call (the C side applies the box rules; the same results)."""
    r = nat.acquire()
    try:
        n = nat.read(hash(buf), api.det_type, tracking, r)
        if n < 0:
            return None
        return _native_rows(api, r, n, labels, checked)
    finally:
        nat.release(r)  # nothing returned shares memory with r


def _native_rows(api: _Api, r: _analytics_native.Scratch, n: int, labels: tuple[str, ...],
                 checked: bool) -> CheckedDetections:  # fmt: skip
    flags = r.flags[:n]
    problems: list[str] = []
    sel: Any = slice(0, n)
    if checked:
        bad = (flags & _analytics_native.F_BAD) != 0
        if bad.any():
            for i in np.flatnonzero(bad).tolist():
                record = tuple(r.rec[i].tolist()) if flags[i] & _analytics_native.F_RECORD else None
                _x, _y, w, h = r.loc[i].tolist()
                problem = _problem(float(r.rconf[i, 1]), w, h, record) or "impossible values"
                problems.append(f"object-detection Mtd {int(r.ids[i])}: {problem}")
            sel = np.flatnonzero(~bad)
    flags = flags[sel]
    ids = r.ids[sel].astype(np.int64)
    m = len(ids)
    rec = r.rec[sel]
    has_rec = (flags & _analytics_native.F_RECORD) != 0
    has_trk = (flags & _analytics_native.F_TRACK) != 0
    xyxy = r.box[sel].astype(np.float32)
    confidence = r.rconf[sel, 1].copy()
    class_id = np.where(has_rec, rec["class_id"], -1).astype(np.int32)
    uid = np.where(has_rec, rec["unique_id"], -1).astype(np.int64)
    model_id = np.where(has_rec, rec["model_id"], -1).astype(np.int64)
    roi_id = np.where(has_rec, rec["index"], ids).astype(np.int64)
    track_id = np.full(m, UNTRACKED_ID, np.uint64)
    track_id[has_trk] = r.track[sel][has_trk]
    predicted = has_trk & has_rec & ((rec["flags"] & FLAG_PREDICTED) != 0)
    rot = r.rot[sel].astype(np.float32)
    quarks = r.quark[sel]
    foreign = None
    if not has_rec.all():  # another producer's objects: no labels tuple (class id -1), their labels in extra
        foreign = [api.quark_label(q) if f else "" for q, f in zip(quarks.tolist(), (~has_rec).tolist())]
    elif not labels and m:  # each class id's label from its first object, as the ctypes path
        uniq, first = np.unique(class_id, return_index=True)
        if uniq[0] >= 0:
            names = dict(zip(uniq.tolist(), (api.quark_label(q) for q in quarks[first].tolist())))
            labels = tuple(names.get(c, str(c)) for c in range(max(names) + 1))
    columns = (xyxy, confidence, class_id, uid, model_id, roi_id, ids, track_id, predicted, rot)
    return _assemble(columns, foreign, labels, ids.tolist(), problems)


def object_labels(buf: Gst.Buffer, mtd_ids: Sequence[int]) -> list[str]:
    """The OD type (label) of each OD Mtd id of ``buf``."""
    api = _require()
    meta = api.get_meta(hash(buf))
    out = []
    for i in mtd_ids:
        m = Mtd(int(i), meta)
        out.append(api.quark_label(api.od_obj_type(byref(m))) if meta else "")
    return out


def _record(api: _Api, meta: int, mtd: Mtd, fixed: int) -> tuple | None:
    """The pyinfer detection Mtd's fixed fields, or None if it is too short to hold them."""
    if api.mtd_size(byref(mtd)) < fixed:
        return None
    return DETECTION_STRUCT.unpack(ctypes.string_at(api.mtd_data(meta, mtd.id), fixed))


def _topk_ids(api: _Api, meta: int, mtd: Mtd) -> list[int]:
    """The top-k class ids after the pyinfer detection Mtd's fixed fields (none if they do not fit)."""
    fixed = DETECTION_STRUCT.size
    size = api.mtd_size(byref(mtd))
    if size < fixed:
        return []
    raw = ctypes.string_at(api.mtd_data(meta, mtd.id), size)
    k = DETECTION_STRUCT.unpack_from(raw)[7]
    if size < fixed + 4 * k:
        return []
    return list(struct.unpack_from(f"<{k}i", raw, fixed))


def write_object_classifications(
    buf: Gst.Buffer, od_ids: Sequence[int], topks: Sequence[tuple[list[int], list[str], list[float]] | None],
    unique_id: int,
) -> int:  # fmt: skip
    """A secondary classifier's results (``buf`` writable): for each OD Mtd id with a top-k (class ids, labels,
    confidences; None: nothing), a classification Mtd and a :data:`SECONDARY_MTD` naming ``unique_id`` and it, both
    related OD RELATE_TO them. Returns how many objects were written."""
    api = _require()
    meta = _relation_meta(api, buf)
    cls_mtd, pmtd = Mtd(), Mtd()
    written = 0
    for od_id, topk in zip(od_ids, topks):
        if topk is None:
            continue
        ids, labels, levels = topk
        k = len(ids)
        quarks = [api.label_quark(label) for label in labels]
        if not api.add_cls(meta, k, (c_float * k)(*levels), (c_uint32 * k)(*quarks), byref(cls_mtd)):
            raise RuntimeError("could not add a classification Mtd")
        packed = SECONDARY_STRUCT.pack(int(unique_id), cls_mtd.id, k) + struct.pack(f"<{k}i", *ids)
        data = api.add_mtd(meta, api.secondary_type, len(packed), byref(pmtd))
        if not data:
            raise RuntimeError("could not add the pyinfer secondary Mtd")
        ctypes.memmove(data, packed, len(packed))
        api.set_relation(meta, REL_RELATE_TO, int(od_id), cls_mtd.id)
        api.set_relation(meta, REL_RELATE_TO, int(od_id), pmtd.id)
        written += 1
    return written


def write_children(
    buf: Gst.Buffer, detections: Detections, parents: Sequence[int], *, unique_id: int, model_id: int
) -> list[int]:  # fmt: skip
    """Objects found inside others (a secondary detector): the Mtds of :func:`write_detections`, numbered after
    the frame's, each related ``parent CONTAIN child`` and ``child IS_PART_OF parent`` to its parent OD Mtd
    (``parents``, one per detection). Returns the new OD Mtd ids."""
    api = _require()
    meta = api.get_meta(hash(buf))
    first_index = len(api.all_of(meta, api.od_type)) if meta else 0
    ids = _write(api, buf, detections, unique_id=unique_id, model_id=model_id, first_index=first_index)
    meta = api.get_meta(hash(buf))
    for child, parent in zip(ids, parents):
        api.set_relation(meta, REL_CONTAIN, int(parent), int(child))
        api.set_relation(meta, REL_IS_PART_OF, int(child), int(parent))
    return ids


def read_parents(buf: Gst.Buffer) -> list[int]:
    """Per OD Mtd (id order), the index (in that order) of the OD Mtd it IS_PART_OF (a secondary detector's
    result inside that object), or -1."""
    api = _require()
    meta = api.get_meta(hash(buf))
    if not meta:
        return []
    ods = api.all_of(meta, api.od_type)
    index = {od.id: i for i, od in enumerate(ods)}
    out = []
    state, found = c_void_p(0), Mtd()
    for od in ods:
        state.value = None
        parent = -1
        if api.related(meta, od.id, REL_IS_PART_OF, api.od_type, byref(state), byref(found)):
            parent = index.get(found.id, -1)
        out.append(parent)
    return out


def read_object_classifications(buf: Gst.Buffer, unique_id: int) -> list[list[tuple[int, str, float]]]:
    """Per OD Mtd (id order, as :func:`read_detections`), the top-k the secondary ``unique_id`` attached to it
    (:func:`write_object_classifications`) as ``(class_id, label, confidence)``, best first; empty where none."""
    return [found.get(unique_id, []) for found in read_secondary_results(buf)]


def read_secondary_results(buf: Gst.Buffer) -> list[dict[int, list[tuple[int, str, float]]]]:
    """Per OD Mtd (id order), every secondary's top-k attached to it: ``{unique_id: [(class_id, label,
    confidence), ...]}``; empty dicts where none."""
    api = _require()
    meta = api.get_meta(hash(buf))
    if not meta:
        return []
    out = []
    fixed = SECONDARY_STRUCT.size
    for od in api.all_of(meta, api.od_type):
        found: dict[int, list[tuple[int, str, float]]] = {}
        for p in api.related_all(meta, od.id, api.secondary_type):
            size = api.mtd_size(byref(p))
            if size < fixed:
                continue
            raw = ctypes.string_at(api.mtd_data(meta, p.id), size)
            uid, cls_id, k = SECONDARY_STRUCT.unpack_from(raw)
            if uid in found or size < fixed + 4 * k:
                continue
            ids = struct.unpack_from(f"<{k}i", raw, fixed)
            c = Mtd(cls_id, meta)
            n = min(k, api.cls_length(byref(c)))
            found[uid] = [
                (int(ids[j]), api.quark_label(api.cls_quark(byref(c), j)), float(api.cls_level(byref(c), j)))
                for j in range(n)
            ]
        out.append(found)
    return out


def read_classifications(buf: Gst.Buffer) -> list[list[tuple[int, str, float]]]:
    """Per OD Mtd (id order), a classifier's top-k as ``(class_id, label, confidence)``, best first.

    pyinfer's detections carry one only when a classifier wrote a top-k (else an empty list, as the ROI
    reader); other producers' classification Mtds are given with class id -1.
    """
    api = _require()
    meta = api.get_meta(hash(buf))
    if not meta:
        return []
    out = []
    for od in api.all_of(meta, api.od_type):
        entries: list[tuple[int, str, float]] = []
        p = api.related_one(meta, od.id, api.det_type)
        ids = _topk_ids(api, meta, p) if p is not None else None
        c = api.related_one(meta, od.id, api.cls_type)
        if c is not None and ids != []:
            n = api.cls_length(byref(c))
            for k in range(n):
                cid = ids[k] if ids is not None and k < len(ids) else -1
                entries.append((cid, api.quark_label(api.cls_quark(byref(c), k)), float(api.cls_level(byref(c), k))))
        out.append(entries)
    return out
