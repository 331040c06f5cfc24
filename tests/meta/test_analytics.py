"""GstAnalytics metadata (GStreamer >= 1.24): pyinfer's writer and readers, checked against GStreamer's own
API through PyGObject (an independent reader and "another producer"), copies, videoscale, pyinfer's elements
and upstream's objectdetectionoverlay.

These run in the Debian 13 leg of `make test` (GStreamer 1.26); on GStreamer 1.22 only the refusal test runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyinfer._gi import Gst
from pyinfer.detections import Detections
from pyinfer.meta import (
    analytics,
    read_classifications,
    read_detections,
    read_detections_checked,
    read_frame_info,
    roi,
)
from support import analytics_test, push_frames, run

GST_VERSION = Gst.version()[:2]
needs_analytics = analytics_test
needs_oriented = analytics_test(oriented=True)


def _gst_analytics():
    """GStreamer's own GstAnalytics bindings (PyGObject): the independent reader and writer of these tests."""
    import gi

    gi.require_version("GstAnalytics", "1.0")
    from gi.repository import GstAnalytics

    return GstAnalytics


def _buffer(w: int = 320, h: int = 240) -> Gst.Buffer:
    return Gst.Buffer.new_allocate(None, w * h * 3, None)


def _dets(rotated: bool = False) -> Detections:
    xyxy = np.array([[10.25, 20.5, 110.75, 90.0], [200.0, 30.0, 260.5, 200.25], [0.0, 0.0, 5.0, 5.0]], np.float32)
    cxcywhr = None
    if rotated:
        cxcywhr = np.array([[60.5, 55.25, 80.0, 40.0, 0.5], [230.25, 115.125, 50.0, 120.0, -0.25],
                            [2.5, 2.5, 5.0, 5.0, 0.0]], np.float32)  # fmt: skip
    return Detections(
        xyxy, np.array([0.9, 0.75, 0.3], np.float32), np.array([2, 0, 1], np.int32), cxcywhr=cxcywhr,
        labels=("car", "person", "bike"),
    )  # fmt: skip


@needs_analytics
def test_analytics_is_available_where_gstreamer_has_it():
    # Not a skip: on GStreamer >= 1.24 with plugins-bad (installed by the Makefile) the codec must load.
    assert analytics.available(), "libgstanalytics-1.0 did not load or its self-test failed"
    assert analytics.oriented_available() == (GST_VERSION >= (1, 26))


@needs_analytics
@pytest.mark.parametrize("rotated", [False, True])
def test_written_detections_read_back_exactly(rotated):
    buf = _buffer()
    dets = _dets(rotated)
    ids = analytics.write_detections(buf, dets, unique_id=9, model_id=3)
    analytics.write_frame_info(buf, inferred=True, unique_id=9, model_id=3)
    assert len(ids) == 3
    got = read_detections(buf)
    np.testing.assert_array_equal(got.xyxy, dets.xyxy)
    np.testing.assert_array_equal(got.confidence, dets.confidence)
    np.testing.assert_array_equal(got.class_id, dets.class_id)
    assert got.labels == dets.labels
    assert got.extra["unique_id"].tolist() == [9, 9, 9]
    assert got.extra["model_id"].tolist() == [3, 3, 3]
    assert got.extra["roi_id"].tolist() == [0, 1, 2]
    assert got.extra["mtd_id"].tolist() == ids
    assert got.tracker_id is None
    if rotated:
        np.testing.assert_array_equal(got.cxcywhr, dets.cxcywhr)
    else:
        assert got.cxcywhr is None
    info = read_frame_info(buf)
    assert info == roi.FrameInfo(True, 9, 3)
    assert roi.read_frame_info(buf) is None and len(roi.roi_metas(buf)) == 0  # analytics only


@needs_analytics
def test_gstreamer_reads_the_standard_mtds_pyinfer_wrote():
    GstAnalytics = _gst_analytics()
    from gi.repository import GLib

    buf = _buffer()
    dets = _dets()
    analytics.write_detections(buf, dets, unique_id=1)
    rmeta = GstAnalytics.buffer_get_analytics_relation_meta(buf)
    assert rmeta is not None
    mtds = list(rmeta)  # gst-python's iterator raises KeyError on unknown Mtd types: pyinfer registers its own
    ods = [m for m in mtds if isinstance(m, GstAnalytics.ODMtd)]
    clss = [m for m in mtds if isinstance(m, GstAnalytics.ClsMtd)]
    assert len(ods) == 3 and len(clss) == 3
    names = [GstAnalytics.mtd_type_get_name(m.get_mtd_type()) for m in mtds]
    assert names.count("pyinfer-detection") == 3
    for i, od in enumerate(ods):
        ok, x, y, w, h, conf = od.get_location()
        assert ok
        left, top, right, bottom = dets.xyxy[i].tolist()
        assert (x, y) == (math.floor(left), math.floor(top))
        assert (x + w, y + h) == (math.ceil(right), math.ceil(bottom))
        assert conf == pytest.approx(float(dets.confidence[i]))
        assert GLib.quark_to_string(od.get_obj_type()) == dets.label(i)
        related = [c for c in clss if rmeta.get_relation(od.id, c.id) == GstAnalytics.RelTypes.RELATE_TO]
        assert len(related) == 1
        assert GLib.quark_to_string(related[0].get_quark(0)) == dets.label(i)
        assert related[0].get_level(0) == pytest.approx(float(dets.confidence[i]))


@needs_oriented
def test_rotated_detections_are_oriented_od_mtds():
    GstAnalytics = _gst_analytics()
    buf = _buffer()
    dets = _dets(rotated=True)
    analytics.write_detections(buf, dets)
    rmeta = GstAnalytics.buffer_get_analytics_relation_meta(buf)
    ods = [m for m in rmeta if isinstance(m, GstAnalytics.ODMtd)]
    for i, od in enumerate(ods):
        ok, x, y, w, h, r, _conf = od.get_oriented_location()
        assert ok
        cx, cy, rw, rh, angle = dets.cxcywhr[i].tolist()
        assert (x, y, w, h) == (round(cx - rw / 2), round(cy - rh / 2), round(rw), round(rh))
        assert r == pytest.approx(angle % (2 * math.pi), abs=1e-6)


def _foreign_buffer(conf_second: float = 0.4) -> Gst.Buffer:
    """Detections written by another producer through GStreamer's API: OD Mtds with a related classification."""
    GstAnalytics = _gst_analytics()
    from gi.repository import GLib

    buf = _buffer()
    rmeta = GstAnalytics.buffer_add_analytics_relation_meta(buf)
    ok, _od = rmeta.add_od_mtd(GLib.quark_from_string("dog"), 5, 6, 50, 60, 0.8)
    assert ok
    ok, od2 = rmeta.add_od_mtd(0, 100, 110, 20, 30, conf_second)  # no type: the classification names it
    assert ok
    ok, cls = rmeta.add_one_cls_mtd(0.7, GLib.quark_from_string("cat"))
    assert ok
    assert rmeta.set_relation(GstAnalytics.RelTypes.RELATE_TO, od2.id, cls.id)
    return buf


@needs_analytics
def test_a_classifiers_top_k_is_the_classification_mtd_with_class_ids():
    buf = _buffer()
    d = _dets()
    topk = Detections(d.xyxy, d.confidence, d.class_id, labels=d.labels, extra={
        "topk_class_id": np.array([[2, 0, 1], [0, 2, 1], [1, 0, 2]]),
        "topk_confidence": np.array([[0.9, 0.05, 0.05], [0.75, 0.2, 0.05], [0.3, 0.3, 0.4]]),
    })  # fmt: skip
    analytics.write_detections(buf, topk)
    got = read_classifications(buf)
    assert [[c for c, _, _ in e] for e in got] == [[2, 0, 1], [0, 2, 1], [1, 0, 2]]
    assert [e[0][1] for e in got] == ["bike", "car", "person"]  # labels of classes 2, 0, 1
    assert got[1][1][2] == pytest.approx(0.2)
    plain = _buffer()
    analytics.write_detections(plain, _dets())
    assert read_classifications(plain) == [[], [], []]  # a detector: no top-k, as the ROI reader


@needs_analytics
def test_detections_of_another_producer_are_read():
    buf = _foreign_buffer()
    got = read_detections(buf)
    assert len(got) == 2
    np.testing.assert_array_equal(got.xyxy, [[5, 6, 55, 66], [100, 110, 120, 140]])
    np.testing.assert_allclose(got.confidence, [0.8, 0.4], rtol=1e-6)
    assert got.class_id.tolist() == [-1, -1]
    assert got.extra["unique_id"].tolist() == [-1, -1]
    assert got.extra["foreign_label"].tolist() == ["dog", "cat"]
    assert read_frame_info(buf) is None


@needs_analytics
def test_checked_read_leaves_out_an_impossible_confidence_and_names_it():
    buf = _foreign_buffer(conf_second=1.5)
    read = read_detections_checked(buf)
    assert isinstance(read, analytics.CheckedDetections)
    assert len(read.detections) == 1 and len(read.metas) == 1
    assert len(read.problems) == 1 and "confidence 1.5" in read.problems[0]


@needs_analytics
def test_track_ids_are_tracking_mtds_related_to_the_objects():
    GstAnalytics = _gst_analytics()
    buf = _buffer()
    buf.pts = 5 * Gst.SECOND
    ids = analytics.write_detections(buf, _dets())
    analytics.set_track_ids(buf, [ids[0], ids[2]], [41, 2**64 - 2], pts=buf.pts, first_seen=[Gst.SECOND, buf.pts])
    got = read_detections(buf)
    assert got.tracker_id.tolist() == [41, roi.UNTRACKED_ID, 2**64 - 2]
    assert got.extra["predicted"].tolist() == [False, False, False]
    rmeta = GstAnalytics.buffer_get_analytics_relation_meta(buf)
    tracks = [m for m in rmeta if isinstance(m, GstAnalytics.TrackingMtd)]
    assert len(tracks) == 2
    ok, tid, first, last, lost = tracks[0].get_info()
    assert ok and tid == 41 and first == Gst.SECOND and last == 5 * Gst.SECOND and not lost
    assert rmeta.get_relation(ids[0], tracks[0].id) == GstAnalytics.RelTypes.RELATE_TO


@needs_analytics
def test_a_copied_buffer_keeps_every_mtd():
    buf = _buffer()
    analytics.write_detections(buf, _dets(rotated=True), unique_id=4)
    analytics.write_frame_info(buf, inferred=False, unique_id=4)
    copy = buf.copy()
    a, b = read_detections(buf), read_detections(copy)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.cxcywhr, b.cxcywhr)
    assert b.extra["unique_id"].tolist() == [4, 4, 4]
    assert read_frame_info(copy) == roi.FrameInfo(False, 4, 0)


@needs_analytics
def test_writing_needs_a_writable_buffer():
    buf = _buffer()
    sample = Gst.Sample.new(buf, None, None, None)  # a second reference: the buffer is not writable now
    with pytest.raises(RuntimeError, match="not writable"):
        analytics.write_detections(buf, _dets())
    del sample


# -- elements -----------------------------------------------------------------------------------------------


def _frames(n: int = 6, w: int = 320, h: int = 240):
    from pyinfer.scene import Scene

    s = Scene(3, w, h)
    return [s.frame(i)[0] for i in range(n)]


def _pipeline(model, tail: str, meta: str = "auto", extra: str = "") -> Gst.Pipeline:
    return Gst.parse_launch(
        f"appsrc name=src ! pyinfer name=infer model-engine={model.path} meta={meta} {extra} ! {tail}"
    )


@needs_analytics
def test_pyinfer_writes_analytics_by_default_and_companions_read_it(embedded_model):
    frames = _frames(8)
    pipeline = _pipeline(embedded_model, "pytracker ! pymsgconv frame-interval=1 ! appsink name=sink")
    seen = []

    sink = pipeline.get_by_name("sink")

    def probe(pad, info):
        buf = info.get_buffer()
        seen.append((analytics.has_analytics(buf), len(roi.roi_metas(buf)), read_detections(buf)))
        return Gst.PadProbeReturn.OK

    sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    result = run(pipeline, 120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    assert result.ok, result.error
    assert pipeline.get_by_name("infer").get_property("meta-used") == "analytics"
    assert len(seen) == len(frames)
    assert all(has and n_roi == 0 for has, n_roi, _ in seen)  # analytics only (the payload is not a detection)
    total = sum(len(d) for _, _, d in seen)
    assert total >= len(frames)  # the scene has objects in every frame
    tracked = [d for _, _, d in seen if d.tracker_id is not None]
    assert tracked, "pytracker wrote no tracking Mtds"
    assert all(f is not None and f.inferred for f in result.frames)


@needs_analytics
def test_meta_both_writes_the_same_detections_twice_and_tracks_both(embedded_model):
    frames = _frames(8)
    pipeline = _pipeline(embedded_model, "pytracker ! appsink name=sink", meta="both")
    seen = []

    def probe(pad, info):
        buf = info.get_buffer()
        seen.append((analytics.read_detections(buf), roi.read_detections(buf)))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    result = run(pipeline, 120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    assert result.ok, result.error
    assert pipeline.get_by_name("infer").get_property("meta-used") == "analytics+roi"
    for a, r in seen:
        np.testing.assert_array_equal(a.xyxy, r.xyxy)
        np.testing.assert_array_equal(a.class_id, r.class_id)
        assert (a.tracker_id is None) == (r.tracker_id is None)
        if a.tracker_id is not None:
            assert a.tracker_id.tolist() == r.tracker_id.tolist()
    assert any(a.tracker_id is not None for a, _ in seen)


@needs_analytics
def test_interval_frames_get_predicted_analytics_detections(embedded_model):
    frames = _frames(9)
    pipeline = _pipeline(embedded_model, "pytracker ! appsink name=sink", extra="interval=2")
    result = run(pipeline, 120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    assert result.ok, result.error
    skipped = [i for i, f in enumerate(result.frames) if not f.inferred]
    assert skipped == [1, 2, 4, 5, 7, 8]
    predicted = [result.detections[i] for i in skipped[2:]]  # tracks are confirmed after a few frames
    assert any(len(d) for d in predicted)
    for d in predicted:
        if len(d):
            assert d.extra["predicted"].all() and (d.tracker_id != roi.UNTRACKED_ID).all()


@needs_analytics
def test_videoscale_scales_the_boxes_and_the_reader_follows(embedded_model):
    frames = _frames(4, 320, 240)
    pipeline = _pipeline(
        embedded_model, "videoscale ! video/x-raw,width=640,height=480 ! appsink name=sink", meta="analytics"
    )
    direct = _pipeline(embedded_model, "appsink name=sink", meta="analytics")
    scaled = run(pipeline, 120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    plain = run(direct, 120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    assert scaled.ok and plain.ok
    for a, b in zip(plain.detections, scaled.detections):
        assert len(a) == len(b) and len(a) > 0
        np.testing.assert_allclose(b.xyxy, a.xyxy * 2, atol=3)  # integer OD boxes, scaled by GStreamer
        assert b.class_id.tolist() == a.class_id.tolist()  # the pyinfer Mtd still names the class


@needs_analytics
def test_objectdetectionoverlay_draws_pyinfers_detections(embedded_model):
    if Gst.ElementFactory.find("objectdetectionoverlay") is None:
        pytest.fail("objectdetectionoverlay (gst-plugins-bad analyticsoverlay) is missing on GStreamer >= 1.24")
    frames = _frames(3)
    out = {}
    for name, overlay in (("plain", ""), ("drawn", "objectdetectionoverlay ! ")):
        pipeline = _pipeline(
            embedded_model, f"videoconvert ! video/x-raw,format=BGRA ! {overlay}videoconvert ! "
            "video/x-raw,format=RGB ! appsink name=sink",
        )  # fmt: skip
        images = []

        def probe(pad, info, images=images):
            buf = info.get_buffer()
            _ok, m = buf.map(Gst.MapFlags.READ)
            images.append(np.frombuffer(m.data, np.uint8).copy())
            buf.unmap(m)
            return Gst.PadProbeReturn.OK

        pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
        result = run(pipeline, 120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
        assert result.ok, result.error
        out[name] = (images, result.detections)
    images, dets = out["drawn"]
    for plain, drawn, d in zip(out["plain"][0], images, dets):
        assert len(d) > 0
        diff = (plain.reshape(240, -1)[:, : 320 * 3] != drawn.reshape(240, -1)[:, : 320 * 3]).reshape(240, 320, 3)
        changed = diff.any(axis=2)
        for left, top, right, bottom in d.xyxy.astype(int).tolist():  # each box's outline is drawn
            edge = changed[max(top, 0) : min(bottom, 239) + 1, max(left, 0) : min(right, 319) + 1]
            assert edge.any(), (left, top, right, bottom)
        assert changed.mean() < 0.5  # an overlay, not a different picture


def test_meta_analytics_is_written_or_refused_clearly_by_gstreamer_version(embedded_model, run_pipeline):
    result = run_pipeline(
        f"videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48 ! "
        f"pyinfer model-engine={embedded_model.path} meta=analytics ! fakesink"
    )
    if analytics.available():  # GStreamer >= 1.24
        assert GST_VERSION >= (1, 24) and result.ok, result.error
        return
    assert result.message == Gst.MessageType.ERROR
    assert result.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "GstAnalytics" in result.error.message and "meta=roi" in result.error.message


def test_meta_auto_writes_roi_where_gstreamer_has_no_analytics(embedded_model):
    frames = _frames(2, 128, 96)
    pipeline = _pipeline(embedded_model, "appsink name=sink")
    result = run(pipeline, 60, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    assert result.ok, result.error
    used = pipeline.get_by_name("infer").get_property("meta-used")
    assert used == ("analytics" if analytics.available() else "roi")


@needs_analytics
def test_companions_track_and_report_another_producers_detections():
    """pytracker and pymsgconv on OD Mtds written through GStreamer's own API (no pyinfer Mtds): track ids,
    labels from the OD type and the related classification, messages with both."""
    import json

    from pyinfer.elements.msgconv import read_payloads

    GstAnalytics = _gst_analytics()
    from gi.repository import GLib

    w, h, n = 320, 240, 10
    pipeline = Gst.parse_launch(
        f"appsrc name=src caps=video/x-raw,format=RGB,width={w},height={h},framerate=30/1 format=time ! "
        "pytracker ! pymsgconv frame-interval=1 ! appsink name=sink"
    )
    messages = []

    def probe(pad, info):
        messages.extend(json.loads(t) for t in read_payloads(info.get_buffer()).texts)
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)

    def feed(p):
        src = p.get_by_name("src")
        for i in range(n):
            buf = Gst.Buffer.new_allocate(None, w * h * 3, None)
            buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
            rmeta = GstAnalytics.buffer_add_analytics_relation_meta(buf)
            ok1, _ = rmeta.add_od_mtd(GLib.quark_from_string("dog"), 10 + 2 * i, 20, 60, 40, 0.9)
            ok2, od = rmeta.add_od_mtd(0, 200 - 2 * i, 100, 50, 50, 0.8)
            ok3, cls = rmeta.add_one_cls_mtd(0.8, GLib.quark_from_string("cat"))
            assert ok1 and ok2 and ok3 and rmeta.set_relation(GstAnalytics.RelTypes.RELATE_TO, od.id, cls.id)
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    result = run(pipeline, 60, feed=feed)
    assert result.ok, result.error
    assert len(messages) == n
    for m in messages:
        assert sorted(o["label"] for o in m["objects"]) == ["cat", "dog"]
        assert all(o["class_id"] == -1 and o["producer_id"] is None for o in m["objects"])
    late = messages[-1]["objects"]
    assert all(o["track_id"] is not None for o in late)  # confirmed tracks by the last frame
    assert len({o["track_id"] for o in late}) == 2


@needs_analytics
def test_pyosd_draws_the_analytics_detections_pyinfer_wrote(embedded_model):
    frames = _frames(3)
    out = {}
    for name, osd in (("plain", ""), ("drawn", "pyosd ! ")):
        pipeline = _pipeline(embedded_model, f"{osd}appsink name=sink", meta="analytics")
        images = []

        def probe(pad, info, images=images):
            buf = info.get_buffer()
            _, m = buf.map(Gst.MapFlags.READ)
            images.append(np.frombuffer(m.data, np.uint8).copy().reshape(240, 320, 3))
            buf.unmap(m)
            return Gst.PadProbeReturn.OK

        pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
        result = run(pipeline, 120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
        assert result.ok, result.error
        out[name] = (images, result.detections)
    for plain, drawn, d in zip(out["plain"][0], out["drawn"][0], out["drawn"][1]):
        assert len(d) > 0
        changed = (plain != drawn).any(axis=2)
        for left, top, right, bottom in d.xyxy.astype(int).tolist():
            assert changed[max(top, 0) : bottom + 1, max(left, 0) : right + 1].any(), (left, top, right, bottom)
