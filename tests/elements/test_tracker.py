"""pytracker in real pipelines: tracking quality on synthetic scenes, interval prediction, rotated boxes,
buffers without metadata, malformed metadata, resets."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from pyinfer._gi import GLib, Gst, GstVideo
from pyinfer.detections import Detections
from pyinfer.elements._base import writable
from pyinfer.meta.roi import (
    TRACKING_PARAM,
    UNTRACKED_ID,
    read_detections,
    read_detections_checked,
    read_frame_info,
    roi_metas,
    write_detections,
    write_frame_info,
)
from pyinfer.scene import Scene
from pyinfer.track.metrics import evaluate_tracking, truth_detections
from support import push_frames, run

SCENE_W, SCENE_H, SCENE_FRAMES = 640, 384, 150


@pytest.fixture(scope="module")
def scene():
    """150 frames of a held-out scene and their truth (identities from the generator)."""
    s = Scene(11, SCENE_W, SCENE_H)
    frames, truth = [], []
    for i in range(SCENE_FRAMES):
        image, objects = s.frame(i)
        frames.append(image)
        truth.append(truth_detections(objects))
    return frames, truth


def _track_scene(scene, model, interval: int):
    frames, truth = scene
    pipeline = Gst.parse_launch(
        f"appsrc name=src ! pyinfer model-engine={model.path} interval={interval} ! pytracker ! appsink name=sink"
    )
    result = run(pipeline, 240, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    assert result.ok, result.error
    assert len(result.detections) == len(truth)
    return result, evaluate_tracking(result.detections, truth)


@pytest.mark.slow
def test_embedded_detector_and_tracker_reach_idf1_of_at_least_0_9_on_a_held_out_scene(scene, embedded_model):
    _, metrics = _track_scene(scene, embedded_model, interval=0)
    print(f"\ninterval=0: {metrics}")
    assert metrics.idf1 >= 0.9, metrics
    assert metrics.mota >= 0.85, metrics
    assert metrics.id_switches <= 2, metrics
    assert metrics.hypothesis_ids <= metrics.truth_ids + 2, metrics  # ids stay stable, not re-issued


@pytest.mark.slow
def test_interval_2_frames_are_predicted_by_the_tracker_and_idf1_stays_high(scene, embedded_model):
    result, metrics = _track_scene(scene, embedded_model, interval=2)
    print(f"\ninterval=2: {metrics}")
    skipped = [i for i, f in enumerate(result.frames) if f is not None and not f.inferred]
    assert len(skipped) == SCENE_FRAMES - math.ceil(SCENE_FRAMES / 3)
    predicted = sum(len(result.detections[i]) for i in skipped)
    assert predicted > 0.8 * sum(len(scene[1][i]) for i in skipped)  # skipped frames carry predicted boxes
    assert all((result.detections[i].tracker_id != UNTRACKED_ID).all() for i in skipped if predicted)
    assert metrics.idf1 >= 0.9, metrics
    assert metrics.mota >= 0.8, metrics


# -- synthetic metadata through appsrc ! pytracker ! appsink ------------------------------------------------


def _push_with_metadata(appsrc, frames_meta, *, width=320, height=240, infos=None, raw=None) -> None:
    """Push blank RGB frames carrying the given detections (and frame records), then EOS."""
    caps = Gst.Caps.from_string(f"video/x-raw,format=RGB,width={width},height={height},framerate=30/1")
    appsrc.set_property("caps", caps)
    appsrc.set_property("format", Gst.Format.TIME)
    size = GstVideo.VideoInfo.new_from_caps(caps).size
    for i, dets in enumerate(frames_meta):
        buf = Gst.Buffer.new_wrapped(bytes(size))
        with writable(buf):
            if dets is not None:
                write_detections(buf, dets, unique_id=3, model_id=1)
            if infos is not None and infos[i] is not None:
                write_frame_info(buf, inferred=infos[i], unique_id=3, model_id=1)
            if raw is not None:
                raw(buf, i)
        buf.pts = i * Gst.SECOND // 30
        buf.duration = Gst.SECOND // 30
        if appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            break
    appsrc.emit("end-of-stream")


def _rotated_scene(frames: int) -> list[Detections]:
    """Two thin rotated boxes turning in opposite directions while crossing, plus one axis-aligned square."""
    out = []
    for k in range(frames):
        boxes = [(60 + 3 * k, 100, 90, 14, 0.04 * k), (260 - 3 * k, 110, 90, 14, -0.04 * k), (40, 200, 20, 20, 0.0)]
        cxcywhr = np.array(boxes, np.float32)
        c, s = np.abs(np.cos(cxcywhr[:, 4])), np.abs(np.sin(cxcywhr[:, 4]))
        ex = 0.5 * (cxcywhr[:, 2] * c + cxcywhr[:, 3] * s)
        ey = 0.5 * (cxcywhr[:, 2] * s + cxcywhr[:, 3] * c)
        xyxy = np.stack([cxcywhr[:, 0] - ex, cxcywhr[:, 1] - ey, cxcywhr[:, 0] + ex, cxcywhr[:, 1] + ey], axis=1)
        out.append(
            Detections(xyxy, np.full(3, 0.9, np.float32), np.array([0, 1, 2], np.int32), cxcywhr=cxcywhr,
                       labels=("stick", "rod", "square"))
        )  # fmt: skip
    return out


def test_rotated_detections_keep_their_angle_and_stable_ids(run_pipeline):
    dets = _rotated_scene(40)
    pipeline = Gst.parse_launch("appsrc name=src ! pytracker ! appsink name=sink")
    result = run_pipeline(pipeline, feed=lambda p: _push_with_metadata(p.get_by_name("src"), dets))
    assert result.ok, result.error
    ids = np.stack([d.tracker_id for d in result.detections])  # (frames, 3), in the order written
    assert ids[0].tolist() == [1, 2, 3]
    assert (ids == ids[0]).all()  # the sticks cross around frame 33 without swapping
    for sent, got in zip(dets, result.detections):
        np.testing.assert_array_equal(got.cxcywhr, sent.cxcywhr)  # the angle is the detection's own, kept


def test_native_and_numpy_backends_give_the_same_ids_in_a_pipeline(run_pipeline):
    dets = _rotated_scene(40)
    inferred = [k % 4 != 3 for k in range(40)]  # interval frames too: predicted boxes are written
    frames_meta = [d if inf else None for d, inf in zip(dets, inferred)]
    results = {}
    for backend in ("native", "numpy"):
        pipeline = Gst.parse_launch(f"appsrc name=src ! pytracker name=t core={backend} ! appsink name=sink")
        tracker = pipeline.get_by_name("t")
        assert tracker.get_property("core-used") == ""
        feed = lambda p: _push_with_metadata(p.get_by_name("src"), frames_meta, infos=inferred)  # noqa: E731
        result = run_pipeline(pipeline, feed=feed)
        assert result.ok, result.error
        results[backend] = result.detections
        assert tracker.get_property("core-used") == ""  # stopped again
    assert len(results["native"]) == len(results["numpy"]) == 40
    for k, (a, b) in enumerate(zip(results["native"], results["numpy"])):
        assert a.tracker_id.tolist() == b.tracker_id.tolist(), k
        np.testing.assert_allclose(a.cxcywhr, b.cxcywhr, rtol=0, atol=1e-4)


def test_backend_used_reports_the_native_core_while_playing():
    pipeline = Gst.parse_launch("videotestsrc is-live=true ! video/x-raw,format=RGB,width=32,height=32 ! "
                                "pytracker name=t ! fakesink")  # fmt: skip
    tracker = pipeline.get_by_name("t")
    assert tracker.get_property("core") == "auto"
    try:
        assert pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE
        pipeline.get_state(5 * Gst.SECOND)
        assert tracker.get_property("core-used") == "native"
    finally:
        pipeline.set_state(Gst.State.NULL)


def test_native_backend_without_the_library_is_an_error_at_start(run_pipeline, monkeypatch):
    from pyinfer.track import _native

    monkeypatch.setattr(_native, "_STATE", [None])  # as where the library is not built
    result = run_pipeline("videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=32,height=32 ! "
                          "pytracker core=native ! fakesink")  # fmt: skip
    assert not result.ok and result.error is not None
    assert result.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "native tracker is not available" in result.error.message
    ok = run_pipeline("videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=32,height=32 ! pytracker ! fakesink")
    assert ok.ok, ok.error  # auto falls back to NumPy


def test_skipped_frames_get_predicted_rotated_boxes_marked_predicted():
    dets = _rotated_scene(30)
    inferred = [k % 3 == 0 for k in range(30)]
    frames_meta = [d if inf else None for d, inf in zip(dets, inferred)]
    pipeline = Gst.parse_launch("appsrc name=src ! pytracker ! appsink name=out")
    records = []

    def on_buffer(buf):
        metas = roi_metas(buf)
        tracking = [m.get_param(TRACKING_PARAM) for m in metas]
        boxes = [(m.x, m.y, m.w, m.h) for m in metas]
        records.append((read_frame_info(buf), read_detections(buf), tracking, boxes))

    _collect(pipeline, "out", on_buffer)
    feed = lambda p: _push_with_metadata(p.get_by_name("src"), frames_meta, infos=inferred)  # noqa: E731
    result = run(pipeline, 30, feed)
    assert result.ok, result.error
    assert len(records) == 30
    for k, (info, got, tracking, boxes) in enumerate(records):
        assert info.inferred == inferred[k]
        assert got.tracker_id.tolist() == [1, 2, 3], k
        assert [t.get_value("predicted") for t in tracking] == [not inferred[k]] * 3
        if inferred[k]:
            continue
        assert [t.get_value("frames-since-update") for t in tracking] == [k % 3] * 3
        assert got.extra["unique_id"].tolist() == [3, 3, 3] and got.labels == ("stick", "rod", "square")
        assert all(x + w <= 320 and y + h <= 240 for x, y, w, h in boxes)  # ROI boxes clipped to the frame
        if k < 15:
            continue  # the motion model needs a few inferred frames to learn the velocities
        truth = dets[k].cxcywhr
        np.testing.assert_allclose(got.cxcywhr[:, :4], truth[:, :4], atol=4.0)  # predicted motion
        err = (got.cxcywhr[:, 4] - truth[:, 4] + math.pi / 2) % math.pi - math.pi / 2
        np.testing.assert_allclose(err, 0.0, atol=0.06)


def test_buffers_without_metadata_pass_untouched(run_pipeline):
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=5 pattern=ball ! video/x-raw,format=RGB,width=64,height=48 ! tee name=t "
        "t. ! queue ! pytracker ! appsink name=out  t. ! queue ! appsink name=ref"
    )
    tracked, ref = [], []
    roi_api = GstVideo.VideoRegionOfInterestMeta.get_info().api
    for name, out in (("out", tracked), ("ref", ref)):
        _collect(pipeline, name, lambda buf, out=out: out.append((buf.extract_dup(0, buf.get_size()),
                                                                   buf.get_n_meta(roi_api))))  # fmt: skip
    result = run_pipeline(pipeline)
    assert result.ok, result.error
    assert len(tracked) == 5 and tracked == ref
    assert all(n_meta == 0 for _, n_meta in tracked) and result.warnings == []


def _collect(pipeline, name: str, on_buffer) -> None:
    """Call ``on_buffer(buf)`` for every buffer reaching the appsink ``name`` (not ``sink``: run() owns that)."""
    sink = pipeline.get_by_name(name)
    sink.set_property("emit-signals", True)
    sink.set_property("sync", False)

    def on_sample(appsink):
        on_buffer(appsink.emit("pull-sample").get_buffer())
        return Gst.FlowReturn.OK

    sink.connect("new-sample", on_sample)


def _bad_metas(buf, i):
    """Malformed ROI metas of another producer, after one good detection (ids 1, 2, 3)."""
    bad = [("confidence", "high"), ("width", -5.0), ("angle-rad", 0.5)]  # a string, a negative size, half a rotation
    for k, (field, value) in enumerate(bad, start=1):
        meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, "junk", 10, 10, 5, 5)
        meta.id = k
        s = Gst.Structure.new_empty("detection")
        for key, v in (("left", 10.0), ("top", 10.0), ("width", 5.0), ("height", 5.0), ("confidence", 0.9)):
            s.set_value(key, v)
        s.set_value("class-id", 0)
        s.set_value(field, value)
        meta.add_param(s)


def test_malformed_metadata_is_skipped_with_a_warning_and_counted():
    good = [Detections(np.array([[100, 100, 140, 140]], np.float32), np.array([0.9], np.float32),
                       np.array([0], np.int32)) for _ in range(4)]  # fmt: skip
    pipeline = Gst.parse_launch("appsrc name=src ! pytracker name=tracker ! appsink name=out")
    out = []
    _collect(pipeline, "out", lambda buf: out.append(read_detections_checked(buf)))
    result = run(pipeline, 30, lambda p: _push_with_metadata(p.get_by_name("src"), good, raw=_bad_metas))
    assert result.ok, result.error
    assert pipeline.get_by_name("tracker").get_property("skipped-metas") == 12
    assert len(result.warnings) == 1  # rate-limited: one per 5 s
    assert "malformed" in result.warnings[0] and "ROI 1" in result.warnings[0]
    assert [r.detections.tracker_id.tolist() for r in out] == [[1]] * 4  # the good one is tracked
    assert all(len(r.problems) == 3 for r in out)  # the bad ones pass on, untouched


@pytest.mark.parametrize("event", ["stream-start", "flush"])
def test_stream_start_and_flush_forget_the_tracks(event):
    square = Detections(np.array([[100, 100, 140, 140]], np.float32), np.array([0.9], np.float32),
                        np.array([0], np.int32))  # fmt: skip
    other = Detections(np.array([[10, 10, 30, 30]], np.float32), np.array([0.9], np.float32), np.array([0], np.int32))
    pipeline = Gst.parse_launch("appsrc name=src ! pytracker name=tracker ! appsink name=out")
    tracker_pad = pipeline.get_by_name("tracker").get_static_pad("sink")

    def feed(p):
        src = p.get_by_name("src")
        caps = Gst.Caps.from_string("video/x-raw,format=RGB,width=320,height=240,framerate=30/1")
        src.set_property("caps", caps)
        src.set_property("format", Gst.Format.TIME)
        src.set_property("block", True)
        for k, dets in enumerate([square, square, None, other]):
            if dets is None:  # everything before has been tracked by now (block=true, max one queued)
                _wait_for(lambda: len(result_holder) >= 2)
                if event == "flush":
                    tracker_pad.send_event(Gst.Event.new_flush_start())
                    tracker_pad.send_event(Gst.Event.new_flush_stop(False))
                    segment = Gst.Segment()
                    segment.init(Gst.Format.TIME)
                    tracker_pad.send_event(Gst.Event.new_segment(segment))
                else:
                    tracker_pad.send_event(Gst.Event.new_stream_start("second"))
                continue
            buf = Gst.Buffer.new_wrapped(bytes(320 * 240 * 3))
            with writable(buf):
                write_detections(buf, dets)
            buf.pts = k * Gst.SECOND // 30
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    result_holder = []
    _collect(pipeline, "out", lambda buf: result_holder.append(int(read_detections(buf).tracker_id[0])))
    result = run(pipeline, 30, feed)
    assert result.ok, result.error
    ids = result_holder
    assert ids == [1, 1, 1]  # without the reset the new object would be track 2


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_bad_settings_are_refused_and_keep_the_previous_ones(run_pipeline):
    with pytest.raises(GLib.Error, match='could not set property "iou-mode"'):
        Gst.parse_launch("videotestsrc ! pytracker iou-mode=diagonal ! fakesink")
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=32,height=32 ! "
        "pytracker name=tracker low-threshold=0.9 high-threshold=0.5 ! appsink name=sink"
    )
    tracker = pipeline.get_by_name("tracker")
    with pytest.raises(TypeError, match="PyInferTrackerCore"):
        tracker.set_property("core", "cuda")  # not a tracker core: GObject refuses it, auto stays
    assert tracker.get_property("core") == "auto"
    result = run_pipeline(pipeline)
    assert not result.ok and result.error is not None
    assert result.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "low_threshold (0.9) must not exceed high_threshold (0.5)" in result.error.message


def test_the_docstring_pipeline_runs_with_interval_and_osd(run_pipeline, embedded_model):
    result = run_pipeline(
        "videotestsrc num-buffers=6 ! video/x-raw,format=RGB,width=160,height=120 ! "
        f"pyinfer model-engine={embedded_model.path} interval=2 ! pytracker ! pyosd ! appsink name=sink"
    )
    assert result.ok, result.error
    assert [f.inferred for f in result.frames] == [True, False, False, True, False, False]


@pytest.mark.parametrize("memory", ["", "(memory:CUDAMemory)", "(memory:NVMM)"])
def test_pytracker_takes_frames_in_any_memory_as_it_reads_only_metadata(memory):
    # nvh264dec ! pyinfer ! pytracker keeps the frames in CUDA memory: pytracker must not force a download.
    tracker = Gst.ElementFactory.make("pytracker", None)
    caps = Gst.Caps.from_string(f"video/x-raw{memory},format=NV12,width=64,height=48,framerate=30/1")
    assert tracker.get_static_pad("sink").query_accept_caps(caps)
    assert tracker.get_static_pad("src").get_pad_template_caps().can_intersect(caps)
