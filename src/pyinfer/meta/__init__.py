"""Metadata writers and readers.

pyinfer writes detections in one of two representations on plain GStreamer (see README "Metadata contract"):
:mod:`pyinfer.meta.analytics` (GstAnalytics, GStreamer >= 1.24) and :mod:`pyinfer.meta.roi`
(``GstVideoRegionOfInterestMeta``, every version); :mod:`pyinfer.meta.deepstream` writes DeepStream's. The
readers here take whichever a buffer carries, GstAnalytics first: companions (``pytracker``, ``pyosd``,
``pymsgconv``) and user code read the same way whatever the producer wrote.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pyinfer._gi import Gst
from pyinfer.detections import Detections
from pyinfer.meta import analytics, roi
from pyinfer.meta.roi import FrameInfo, write_detections
from pyinfer.meta.text import read_texts

__all__ = [
    "FrameInfo",
    "has_detection_meta",
    "read_classifications",
    "read_detections",
    "read_detections_checked",
    "read_frame_info",
    "read_object_classifications",
    "read_parents",
    "read_secondary_results",
    "read_texts",
    "write_detections",
]


def read_detections(buf: Gst.Buffer, labels: tuple[str, ...] = ()) -> Detections:
    """The detections ``buf`` carries: its GstAnalytics object detections if it has any, else its ROI metas.

    See :func:`pyinfer.meta.analytics.read_detections` and :func:`pyinfer.meta.roi.read_detections` for
    ``extra``; both give ``unique_id``, ``model_id``, ``roi_id`` and, when tracked, ``tracker_id``.
    """
    if analytics.has_analytics(buf):
        got = analytics.read_detections(buf, labels)
        if got is not None:
            return got if labels else _own_labels(buf, got, analytics=True)
    got = roi.read_detections(buf, labels)
    return got if labels else _own_labels(buf, got, analytics=False)


def _own_labels(buf: Gst.Buffer, dets: Detections, *, analytics: bool) -> Detections:
    """Detections of several producers (a primary and a secondary detector) may use one class id for different
    classes: the labels tuple, one name per class id, then names some of them wrongly. Where producers differ,
    each detection's own label (its ROI type / OD type) goes to ``extra["label"]``, which
    :meth:`Detections.label` prefers; frames of one producer cost one comparison."""
    uid = dets.extra.get("unique_id")
    if uid is None or len(dets) < 2 or not (uid != uid[0]).any():
        return dets
    if analytics:
        from pyinfer.meta import analytics as _an

        mtd = dets.extra.get("mtd_id")
        if mtd is None:
            return dets
        own = _an.object_labels(buf, mtd.tolist())
    else:
        own = roi.object_labels(buf, dets.extra["roi_id"].tolist())
    if all(not own[i] or own[i] == dets.label(i) for i in range(len(dets))):
        return dets
    per = np.array([own[i] or dets.label(i) for i in range(len(dets))], dtype=object)
    return dataclasses.replace(dets, extra={**dets.extra, "label": per})


def read_detections_checked(buf: Gst.Buffer, *, tracking: bool = True) -> Any:
    """:func:`read_detections` leaving out malformed entries: an ``analytics.CheckedDetections`` (``metas``
    are OD Mtd ids) or a ``roi.CheckedDetections`` (``metas`` are ROI metas)."""
    if analytics.has_analytics(buf):
        got = analytics.read_detections_checked(buf, tracking=tracking)
        if got is not None:
            return got
    return roi.read_detections_checked(buf, tracking=tracking)


def read_frame_info(buf: Gst.Buffer) -> FrameInfo | None:
    """pyinfer's frame record on ``buf`` (GstAnalytics frame Mtd first, then the ROI record), or None."""
    info = analytics.read_frame_info(buf)
    return info if info is not None else roi.read_frame_info(buf)


def read_object_classifications(buf: Gst.Buffer, unique_id: int) -> list[list[tuple[int, str, float]]]:
    """Per detection (the order of :func:`read_detections`), the top-k a secondary pyinfer with ``unique_id``
    attached to it, ``(class_id, label, confidence)`` best first; empty where none (GstAnalytics first)."""
    if analytics.has_analytics(buf):
        return analytics.read_object_classifications(buf, unique_id)
    return roi.read_object_classifications(buf, unique_id)


def read_secondary_results(buf: Gst.Buffer) -> list[dict[int, list[tuple[int, str, float]]]]:
    """Per detection (the order of :func:`read_detections`), every secondary pyinfer's top-k attached to it,
    ``{unique_id: [(class_id, label, confidence), ...]}`` (GstAnalytics first)."""
    if analytics.has_analytics(buf):
        return analytics.read_secondary_results(buf)
    return roi.read_secondary_results(buf)


def read_parents(buf: Gst.Buffer) -> list[int]:
    """Per detection (the order of :func:`read_detections`), the index of the object it was found inside (by a
    secondary detector, ``process-mode=secondary``), or -1 (GstAnalytics first)."""
    if analytics.has_analytics(buf):
        return analytics.read_parents(buf)
    return roi.read_parents(buf)


def read_classifications(buf: Gst.Buffer) -> list[list[tuple[int, str, float]]]:
    """Per detection, a classifier's top-k as ``(class_id, label, confidence)``, best first (GstAnalytics first,
    then ROI metas); detections of a detector give empty lists."""
    if analytics.has_analytics(buf):
        return analytics.read_classifications(buf)
    return roi.read_classifications(buf)


def has_detection_meta(buf: Gst.Buffer) -> bool:
    """``buf`` carries any detection metadata pyinfer reads (GstAnalytics or ROI metas)."""
    return analytics.has_analytics(buf) or buf.get_n_meta(roi._roi_api()) > 0
