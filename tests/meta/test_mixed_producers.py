"""Detections of several producers on one buffer keep their own labels (issue #15).

A primary detector and a secondary detector (objects inside objects) number their classes each from 0: read back
through one labels tuple (a name per class id), the children of class 0 were named after the primary's class 0.
The readers give each detection its own label where producers differ (``extra["label"]``, preferred by
``Detections.label``), on ROI metas (every GStreamer) and on GstAnalytics (>= 1.24, the Debian 13 leg).
"""

from __future__ import annotations

import numpy as np

from pyinfer._gi import Gst
from pyinfer.detections import Detections
from pyinfer.jsonl import frame_record
from pyinfer.meta import analytics, read_detections, roi
from support import analytics_test

PRIMARY = Detections(
    xyxy=np.array([[10, 10, 110, 110], [200, 50, 260, 120]], np.float32),
    confidence=np.array([0.9, 0.8], np.float32),
    class_id=np.array([0, 2], np.int32),
    labels=("square", "triangle", "circle"),
)
CHILDREN = Detections(
    xyxy=np.array([[20, 20, 30, 30], [90, 90, 100, 100], [210, 60, 220, 70]], np.float32),
    confidence=np.array([0.7, 0.6, 0.5], np.float32),
    class_id=np.array([0, 0, 1], np.int32),
    labels=("corner", "tip"),
)
WANT = ["square", "circle", "corner", "corner", "tip"]


def _buffer() -> Gst.Buffer:
    buf = Gst.Buffer.new_allocate(None, 16, None)
    buf.pts = 0
    return buf


def test_roi_metas_of_two_producers_keep_each_detections_label():
    buf = _buffer()
    roi.write_detections(buf, PRIMARY, unique_id=1)
    roi.write_detections(buf, CHILDREN, unique_id=2, first_id=len(PRIMARY))
    dets = read_detections(buf)
    assert [dets.label(i) for i in range(len(dets))] == WANT
    assert dets.extra["unique_id"].tolist() == [1, 1, 2, 2, 2]
    record = frame_record(0, 0, 640, 360, dets)
    assert [o["label"] for o in record["objects"]] == WANT  # what pyinfer detect writes


def test_one_producer_keeps_the_class_id_labels():
    buf = _buffer()
    roi.write_detections(buf, PRIMARY, unique_id=1)
    dets = read_detections(buf)
    assert "label" not in dets.extra
    assert [dets.label(i) for i in range(len(dets))] == ["square", "circle"]


@analytics_test
def test_gstanalytics_objects_of_two_producers_keep_each_detections_label():
    buf = _buffer()
    analytics.write_detections(buf, PRIMARY, unique_id=1)
    analytics.write_detections(buf, CHILDREN, unique_id=2, first_index=len(PRIMARY))
    dets = read_detections(buf)
    assert [dets.label(i) for i in range(len(dets))] == WANT


def test_explicit_labels_are_not_overridden():
    buf = _buffer()
    roi.write_detections(buf, PRIMARY, unique_id=1)
    roi.write_detections(buf, CHILDREN, unique_id=2, first_id=len(PRIMARY))
    dets = read_detections(buf, labels=("a", "b", "c"))
    assert [dets.label(i) for i in range(len(dets))] == ["a", "c", "a", "a", "b"]
