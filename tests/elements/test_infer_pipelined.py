"""pyinfer with batches in flight: exactly once and in order through EOS, flushing seeks, caps changes; no DISCONT
from batching; LATENCY answered; a live source with batches renders every frame; partial batches time out;
READY-only properties refused while playing; user code that exits is contained; one message per swap request."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pyinfer._gi import Gst
from pyinfer.meta import read_detections, read_frame_info
from support import push_frames, run

EXPECTED = np.array([[160, 80, 240, 160], [440, 290, 560, 350]], np.float32)  # FIXED_TABLE on 640x480


def _probe_flags(pipeline: Gst.Pipeline, name: str = "sink") -> list[tuple[int, bool]]:
    seen: list[tuple[int, bool]] = []

    def probe(pad, info):
        buf = info.get_buffer()
        seen.append((buf.pts, bool(buf.get_flags() & Gst.BufferFlags.DISCONT)))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name(name).get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    return seen


@pytest.mark.parametrize(("batch", "in_flight"), [(1, 1), (1, 2), (4, 1), (4, 2), (3, 2), (2, 3), (1, 8)])
def test_batches_in_flight_deliver_every_frame_once_in_order_without_discont(fixed_model, batch, in_flight):
    n = 17  # not a multiple of the batch: EOS drains a partial one
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={n} ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! "
        f"pyinfer model-engine={fixed_model} batch-size={batch} in-flight={in_flight} ! appsink name=sink"
    )
    flags = _probe_flags(pipeline)
    res = run(pipeline)
    assert res.ok, res.error
    assert res.pts == [i * Gst.SECOND // 30 for i in range(n)]
    for dets in res.detections:
        np.testing.assert_allclose(dets.xyxy, EXPECTED, atol=1e-3)
    assert [f.inferred for f in res.frames] == [True] * n
    assert [d for _, d in flags] == [True] + [False] * (n - 1)  # only the stream's first buffer


def test_interval_frames_keep_their_place_between_batches(fixed_model):
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=13 ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! "
        f"pyinfer model-engine={fixed_model} batch-size=2 interval=2 ! appsink name=sink"
    )
    res = run(pipeline)
    assert res.ok, res.error
    assert res.pts == [i * Gst.SECOND // 30 for i in range(13)]
    assert [f.inferred for f in res.frames] == [i % 3 == 0 for i in range(13)]
    assert [len(d) for d in res.detections] == [2 if i % 3 == 0 else 0 for i in range(13)]


def test_a_caps_change_mid_batch_drains_the_old_size_first(fixed_model):
    small = [np.full((48, 64, 3), 60, np.uint8) for _ in range(5)]
    large = [np.full((96, 128, 3), 60, np.uint8) for _ in range(7)]

    def feed(p):
        src = p.get_by_name("src")
        src.set_property("format", Gst.Format.TIME)
        for frames, offset in ((small, 0), (large, 5)):
            h, w, _ = frames[0].shape
            src.set_property(
                "caps", Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},framerate=30/1")
            )
            for i, f in enumerate(frames):
                buf = Gst.Buffer.new_wrapped(f.tobytes())
                buf.pts = (offset + i) * Gst.SECOND // 30
                src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    pipeline = Gst.parse_launch(
        f"appsrc name=src ! pyinfer model-engine={fixed_model} batch-size=4 ! appsink name=sink"
    )
    res = run(pipeline, feed=feed)
    assert res.ok, res.error
    assert res.pts == [i * Gst.SECOND // 30 for i in range(12)]
    for i, dets in enumerate(res.detections):
        scale = 0.1 if i < 5 else 0.2  # 640x480 boxes on 64x48, then 128x96 frames
        np.testing.assert_allclose(dets.xyxy, EXPECTED * scale, atol=1e-3)


def test_a_flushing_seek_with_batches_in_flight_restarts_cleanly(fixed_model):
    n = 40
    pipeline = Gst.parse_launch(
        # identity sleep-time paces the source (20 ms a frame), so the mid-stream seek below always comes long
        # before the stream's end (unpaced, all 40 frames could reach EOS before the test thread looked).
        "videotestsrc ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! identity sleep-time=20000 ! "
        f"pyinfer model-engine={fixed_model} batch-size=4 ! appsink name=sink max-buffers=2"
    )
    flags = Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE
    stop = n * Gst.SECOND // 30

    def seek() -> bool:  # play [0, n frames), from wherever the stream is
        return pipeline.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.SET, stop)

    pipeline.set_state(Gst.State.PAUSED)
    assert pipeline.get_state(10 * Gst.SECOND)[0] == Gst.StateChangeReturn.SUCCESS
    assert seek()
    count: list[int] = []
    pipeline.get_by_name("sink").connect("new-sample", lambda s: count.append(1) or Gst.FlowReturn.OK)

    def feed(p):
        deadline = time.monotonic() + 20
        while len(count) < 9 and time.monotonic() < deadline:  # seek once some frames went through
            time.sleep(0.001)
        assert seek()

    res = run(pipeline, feed=feed)
    assert res.ok, res.error
    restart = max(i for i, pts in enumerate(res.pts) if pts == 0)
    assert restart > 0  # the seek happened mid-stream
    assert res.pts[restart:] == [i * Gst.SECOND // 30 for i in range(n)]  # after the seek: every frame, once, in order
    before = res.pts[:restart]
    assert before == sorted(before) and len(set(before)) == len(before)
    for dets in res.detections:
        np.testing.assert_allclose(dets.xyxy, EXPECTED, atol=1e-3)


@pytest.mark.parametrize(("batch", "in_flight"), [(1, 2), (4, 2), (2, 3)])
def test_a_flushing_seek_while_prerolled_with_full_batches_in_flight_neither_deadlocks_nor_stalls(
    fixed_model, batch, in_flight
):
    """Prerolled in PAUSED, the worker waits in a push the sink holds, and the streaming thread waits for room in
    the pipeline: the FLUSH_START of a seek must reach the sink (it deadlocked on the element's lock), and the
    interrupted push's FLUSHING must not outlive the flush (upstream then stopped without an error or EOS)."""
    n = 30
    pipeline = Gst.parse_launch(
        "videotestsrc ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! "
        f"pyinfer model-engine={fixed_model} batch-size={batch} in-flight={in_flight} ! fakesink name=sink"
    )
    seen: list[int] = []

    def probe(pad, info):  # the FLUSH_STOP reaches the sink before any buffer of the seek: start afresh there
        if info.type & Gst.PadProbeType.BUFFER:
            seen.append(info.get_buffer().pts)
        elif info.get_event().type == Gst.EventType.FLUSH_STOP:
            seen.clear()
        return Gst.PadProbeReturn.OK

    pad = pipeline.get_by_name("sink").get_static_pad("sink")
    pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_FLUSH, probe)
    deadlocked = False
    pipeline.set_state(Gst.State.PAUSED)
    try:
        assert pipeline.get_state(10 * Gst.SECOND)[0] == Gst.StateChangeReturn.SUCCESS
        time.sleep(0.3)  # the streaming thread fills the pipeline and waits for room
        stop = n * Gst.SECOND // 30  # the seek ends the stream after n frames (num-buffers would count from start)
        seeker = threading.Thread(
            target=lambda: pipeline.seek(
                1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH, Gst.SeekType.SET, 0, Gst.SeekType.SET, stop
            )
        )
        seeker.start()
        seeker.join(20)
        deadlocked = seeker.is_alive()
        assert not deadlocked, "the flushing seek deadlocked"
        pipeline.set_state(Gst.State.PLAYING)
        msg = pipeline.get_bus().timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        assert msg is not None and msg.type == Gst.MessageType.EOS, msg.parse_error() if msg else "no EOS in 30 s"
    finally:
        if not deadlocked:  # a deadlocked pipeline cannot be stopped either
            pipeline.set_state(Gst.State.NULL)
    pts = seen
    assert pts == [i * Gst.SECOND // 30 for i in range(n)], pts  # after the seek: every frame once, in order


def test_latency_query_reports_the_frames_a_batch_holds(fixed_model):
    pipeline = Gst.parse_launch(
        "videotestsrc is-live=true ! video/x-raw,format=RGB,width=64,height=48,framerate=15/1 ! "
        f"pyinfer name=infer model-engine={fixed_model} batch-size=4 ! fakesink name=sink sync=true"
    )
    pipeline.set_state(Gst.State.PLAYING)
    try:
        assert pipeline.get_state(10 * Gst.SECOND)[0] == Gst.StateChangeReturn.SUCCESS
        query = Gst.Query.new_latency()
        assert pipeline.get_by_name("sink").get_static_pad("sink").peer_query(query)
        live, lo, _ = query.parse_latency()
        assert live
        assert lo >= 3 * Gst.SECOND // 15  # three frames wait for the fourth
        assert lo < 2 * Gst.SECOND  # and not some huge bound
    finally:
        pipeline.set_state(Gst.State.NULL)


@pytest.mark.slow
def test_a_live_source_with_batches_into_a_synchronised_sink_renders_every_frame(fixed_model):
    n = 45
    pipeline = Gst.parse_launch(
        f"videotestsrc is-live=true num-buffers={n} ! video/x-raw,format=RGB,width=64,height=48,framerate=15/1 ! "
        f"pyinfer model-engine={fixed_model} batch-size=4 ! "
        "fakesink name=out sync=true qos=true max-lateness=20000000 signal-handoffs=true"
    )
    rendered: list[int] = []
    pipeline.get_by_name("out").connect("handoff", lambda s, buf, pad: rendered.append(buf.pts))
    res = run(pipeline, timeout_s=30)
    assert res.ok, res.error
    assert len(rendered) == n  # none dropped as late (35 of 90 rendered when the latency was not reported)
    assert rendered == sorted(rendered)


def test_a_partial_batch_of_a_stalled_live_source_goes_out_after_batch_timeout(fixed_model):
    frames = [np.full((48, 64, 3), 60, np.uint8) for _ in range(2)]
    arrived = threading.Event()
    pipeline = Gst.parse_launch(
        f"appsrc name=src is-live=true format=time ! pyinfer model-engine={fixed_model} batch-size=4 "
        "batch-timeout=100000 ! appsink name=sink emit-signals=true sync=false"
    )
    out: list = []

    def on_sample(sink):
        buf = sink.emit("pull-sample").get_buffer()
        out.append((buf.pts, read_detections(buf), read_frame_info(buf)))
        if len(out) == 2:
            arrived.set()
        return Gst.FlowReturn.OK

    pipeline.get_by_name("sink").connect("new-sample", on_sample)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        src = pipeline.get_by_name("src")
        src.set_property("caps", Gst.Caps.from_string("video/x-raw,format=RGB,width=64,height=48,framerate=15/1"))
        for i, f in enumerate(frames):
            buf = Gst.Buffer.new_wrapped(f.tobytes())
            buf.pts = i * Gst.SECOND // 15
            src.emit("push-buffer", buf)
        assert arrived.wait(10), "a partial batch of a stalled source never came out"  # no EOS, no third frame
        assert [pts for pts, _, _ in out] == [0, Gst.SECOND // 15]
        assert all(info.inferred and len(d) == 2 for _, d, info in out)
    finally:
        pipeline.set_state(Gst.State.NULL)


def test_ready_only_properties_refuse_changes_while_playing(fixed_model):
    frames = [np.full((48, 64, 3), 60, np.uint8) for _ in range(12)]
    pipeline = Gst.parse_launch(f"appsrc name=src ! pyinfer name=infer model-engine={fixed_model} batch-size=4 "
                                "! appsink name=sink")  # fmt: skip
    infer = pipeline.get_by_name("infer")

    def feed(p):
        src = p.get_by_name("src")
        infer.set_property("batch-size", 7)
        infer.set_property("allow-pickle", True)
        infer.set_property("device", "cuda")
        push_frames(src, frames)

    res = run(pipeline, feed=feed)
    assert res.ok, res.error
    assert len(res.pts) == 12 and all(len(d) == 2 for d in res.detections)
    assert infer.get_property("batch-size") == 4
    assert infer.get_property("allow-pickle") is False
    assert infer.get_property("device") == "auto"
    assert sum("batch-size can only change in the NULL or READY state" in w for w in res.warnings) == 1
    assert any("allow-pickle can only change" in w for w in res.warnings)
    infer.set_property("batch-size", 2)  # back in NULL: allowed
    assert infer.get_property("batch-size") == 2


@pytest.mark.parametrize("target", ["sys:exit", "os:_exit_not_there"])
def test_user_code_that_exits_at_start_is_an_error_on_the_bus_not_the_end_of_the_application(target):
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48 ! pyinfer model-engine={target} "
        "input-width=64 input-height=64 ! fakesink"
    )
    res = run(pipeline, timeout_s=30)  # SystemExit would end this test process here
    assert res.message == Gst.MessageType.ERROR
    assert res.error.message
    if target == "sys:exit":
        assert "SystemExit" in res.error.message


def _swap_pipeline(model) -> tuple[Gst.Pipeline, Gst.Element, list]:
    """appsrc ! pyinfer ! appsink, and the list its model-updated signals go to: (path, ok, reason)."""
    pipeline = Gst.parse_launch(f"appsrc name=src ! pyinfer name=infer model-engine={model} ! appsink name=sink")
    infer = pipeline.get_by_name("infer")
    updates: list = []
    infer.connect("model-updated", lambda e, path, ok, reason: updates.append((path, ok, reason)))
    return pipeline, infer, updates


def test_user_code_that_exits_during_a_hot_swap_keeps_the_old_model_serving(fixed_model):
    frames = [np.full((48, 64, 3), 60, np.uint8) for _ in range(30)]
    pipeline, infer, updates = _swap_pipeline(fixed_model)

    def feed(p):
        infer.set_property("model-engine", "sys:exit")
        deadline = time.monotonic() + 30
        while not updates and time.monotonic() < deadline:
            time.sleep(0.02)
        push_frames(p.get_by_name("src"), frames)

    res = run(pipeline, feed=feed)
    assert res.ok, res.error
    assert len(res.pts) == 30 and all(len(d) == 2 for d in res.detections)
    assert len(updates) == 1 and updates[0][1] is False and "SystemExit" in updates[0][2]


def test_two_swap_requests_while_no_buffers_flow_get_one_answer_each(fixed_model, tmp_path):
    import shutil

    second = tmp_path / "second.torchscript"
    shutil.copy(fixed_model, second)
    frames = [np.full((48, 64, 3), 60, np.uint8) for _ in range(6)]
    pipeline, infer, updates = _swap_pipeline(fixed_model)

    def feed(p):
        for path in (fixed_model, second):  # both load before any buffer flows
            infer.set_property("model-engine", str(path))
            deadline = time.monotonic() + 30
            while infer._swapper.busy() and time.monotonic() < deadline:
                time.sleep(0.02)
        push_frames(p.get_by_name("src"), frames)

    res = run(pipeline, feed=feed)
    assert res.ok, res.error
    assert len(res.pts) == 6
    assert [(p, ok) for p, ok, _ in updates] == [(str(fixed_model), False), (str(second), True)]
    assert "superseded" in updates[0][2]
    assert {info.model_id for info in res.frames} == {2}


@pytest.mark.parametrize("fmt", ["NV12", "I420"])
@pytest.mark.parametrize("batch", [1, 3])
def test_yuv_frames_from_a_decoder_give_the_detections_of_their_rgb(embedded_model, fmt, batch):
    from pyinfer.scene.generator import Scene

    scene = Scene(seed=11, width=320, height=240)
    frames = [scene.frame(i)[0][..., :3].copy() for i in range(0, 14, 2)]

    def detect(convert: str) -> list:
        pipeline = Gst.parse_launch(
            f"appsrc name=src ! videoconvert ! {convert} ! pyinfer model-engine={embedded_model.path} "
            f"batch-size={batch} ! appsink name=sink"
        )
        res = run(pipeline, feed=lambda p: push_frames(p.get_by_name("src"), frames))
        assert res.ok, res.error
        assert len(res.detections) == len(frames)
        return res.detections

    # The RGB reference goes through the same YUV frames (videoconvert there), so both see the same pixels
    # up to videoconvert's own rounding.
    expected = detect(f"video/x-raw,format={fmt} ! videoconvert ! video/x-raw,format=RGB")
    got = detect(f"video/x-raw,format={fmt}")
    assert sum(len(d) for d in expected) > 10
    for e, g in zip(expected, got):
        assert len(e) == len(g)
        eo, go = np.lexsort((e.xyxy[:, 0], e.class_id)), np.lexsort((g.xyxy[:, 0], g.class_id))  # near-equal scores
        assert e.class_id[eo].tolist() == g.class_id[go].tolist()
        np.testing.assert_allclose(g.xyxy[go], e.xyxy[eo], atol=2.0)
        np.testing.assert_allclose(g.confidence[go], e.confidence[eo], atol=0.05)
