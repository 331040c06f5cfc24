"""pyinfer on DeepStream batches (NVMM caps, NvDsBatchMeta), through real pipelines with the contract fakes."""

from __future__ import annotations

import sys

import numpy as np
import nvds
import pytest

from pyinfer._gi import Gst
from pyinfer.engine import Engine, EngineConfig
from pyinfer.meta.deepstream import BORDER_WIDTH, UNTRACKED_OBJECT_ID, class_colour
from pyinfer.scene import Scene

W, H = 320, 240


def _pipeline(model, mux: str = "", infer: str = "") -> Gst.Pipeline:
    return Gst.parse_launch(
        f"fakenvstreammux name=mux width={W} height={H} {mux} ! "
        f"pyinfer name=infer model-engine={model} {infer} ! fakesink name=out"
    )


@pytest.fixture(scope="module")
def reference(embedded_model):
    """The engine's own detections on the scene frames the fake muxer sends (seed 3)."""
    import torch

    engine = Engine.build(EngineConfig(model=str(embedded_model.path), device="cpu"))
    scene = Scene(3, W, H)
    frames = torch.from_numpy(np.stack([scene.frame(i)[0] for i in range(8)]))
    return engine.infer(frames)


def test_each_detection_becomes_an_object_meta_with_the_fields_nvinfer_writes(run_pipeline, embedded_model, reference):
    result = run_pipeline(_pipeline(embedded_model.path, "batch-size=4 num-batches=2", "unique-id=7"))
    assert result.ok, result.error
    frames = [f for bm in nvds.HISTORY for f in bm.frames]
    assert len(frames) == 8
    assert sum(len(d) for d in reference) > 20
    for frame, dets in zip(frames, reference):
        assert len(frame.objects) == len(dets)
        assert frame.bInferDone == 1
        for obj, i in zip(frame.objects, range(len(dets))):
            x0, t, r, b = dets.xyxy[i].astype(np.float64)
            assert obj.class_id == int(dets.class_id[i])
            assert obj.confidence == pytest.approx(float(dets.confidence[i]), abs=1e-6)
            assert obj.unique_component_id == 7
            assert obj.object_id == UNTRACKED_OBJECT_ID
            rect = obj.rect_params
            assert (rect.left, rect.top, rect.width, rect.height) == pytest.approx((x0, t, r - x0, b - t), abs=1e-4)
            assert rect.left >= 0 and rect.left + rect.width <= W + 1e-3 and rect.top + rect.height <= H + 1e-3
            assert rect.border_width == BORDER_WIDTH
            assert rect.border_color == class_colour(obj.class_id)
            assert obj.label == dets.label(i)
            assert obj.text_params.display_text == obj.label
            assert obj.text_params.x_offset == max(int(x0), 0)
            assert obj.text_params.y_offset == max(int(t) - 10, 0)
            assert [name for name, _ in obj.writes].count("text_params.display_text") == 1  # set once


def test_all_frames_of_a_batch_go_to_the_model_in_one_call(run_pipeline, embedded_model, monkeypatch):
    calls = []
    original = Engine.submit

    def counting(self, frames, **kw):
        calls.append(tuple(frames.shape))
        return original(self, frames, **kw)

    monkeypatch.setattr(Engine, "submit", counting)
    result = run_pipeline(_pipeline(embedded_model.path, "batch-size=5 num-batches=3"))
    assert result.ok, result.error
    live = [c for c in calls if c[1:] == (H, W, 3)]  # warm-up calls have other shapes
    assert live == [(5, H, W, 3)] * 3


def test_nvmm_batches_stay_in_flight_two_at_a_time_and_go_out_in_order(run_pipeline, embedded_model, monkeypatch):
    """The read pass and submit of batch N+1 run before batch N is collected and written (issue #12)."""
    import time

    events: list[str] = []
    submit, collect = Engine.submit, Engine.collect

    def slow_submit(self, frames, **kw):
        if frames.shape[1:] == (H, W, 3):
            events.append("submit")
            if events.count("submit") == 1:
                time.sleep(0.5)  # the next batches queue up meanwhile
        return submit(self, frames, **kw)

    def logged_collect(self, ticket):
        out = collect(self, ticket)
        if events:
            events.append("collect")
        return out

    monkeypatch.setattr(Engine, "submit", slow_submit)
    monkeypatch.setattr(Engine, "collect", logged_collect)
    pipeline = _pipeline(embedded_model.path, "batch-size=2 num-batches=4", "in-flight=2")
    pts: list[int] = []
    pipeline.get_by_name("out").get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER, lambda pad, info: pts.append(info.get_buffer().pts) or Gst.PadProbeReturn.OK
    )
    result = run_pipeline(pipeline)
    assert result.ok, result.error
    assert events.count("submit") == events.count("collect") == 4
    in_flight = max(events[: i + 1].count("submit") - events[: i + 1].count("collect") for i in range(len(events)))
    assert in_flight == 2
    assert len(pts) == 4 and pts == sorted(pts) and len(set(pts)) == 4
    assert len(nvds.HISTORY) == 4 and all(len(bm.objects) > 0 for bm in nvds.HISTORY)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_no_wrapper_or_frame_tensor_outlives_its_batch(embedded_model, in_flight):
    """A pushed buffer's pyservicemaker wrapper (which holds a reference) is gone when it is pushed. With one
    batch at a time nothing else is alive then either; with two in flight the next batch's may be; at the end
    nothing is left."""
    import gc

    pipeline = _pipeline(embedded_model.path, "batch-size=3 num-batches=3", f"in-flight={in_flight}")
    seen = []

    def probe(pad, info):
        ptr = hash(info.get_buffer())
        own = sum(w.ptr == ptr for w in list(nvds.LIVE_BUFFER_WRAPPERS))
        seen.append((own, len(nvds.LIVE_BUFFER_WRAPPERS), nvds.live_pixel_views()))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)
    from support import run

    assert run(pipeline, 60).ok
    assert len(nvds.HISTORY) == 3 and all(len(bm.objects) > 0 for bm in nvds.HISTORY)
    assert [own for own, _, _ in seen] == [0] * 3
    if in_flight == 1:
        assert seen == [(0, 0, 0)] * 3
    else:
        assert all(live <= 1 and views <= 3 for _, live, views in seen)  # at most the next batch's
    gc.collect()
    assert (len(nvds.LIVE_BUFFER_WRAPPERS), nvds.live_pixel_views()) == (0, 0)


def test_interval_skips_whole_batches_which_are_not_marked_inferred(run_pipeline, embedded_model):
    result = run_pipeline(_pipeline(embedded_model.path, "batch-size=2 num-batches=5", "interval=1"))
    assert result.ok, result.error
    objects = [len(bm.objects) for bm in nvds.HISTORY]
    marked = [[f.bInferDone for f in bm.frames] for bm in nvds.HISTORY]
    assert [n > 0 for n in objects] == [True, False, True, False, True]
    assert marked == [[1, 1], [0, 0], [1, 1], [0, 0], [1, 1]]


def test_mark_inferred_false_leaves_binferdone_alone(run_pipeline, embedded_model):
    result = run_pipeline(_pipeline(embedded_model.path, "batch-size=2 num-batches=1", "mark-inferred=false"))
    assert result.ok
    assert len(nvds.HISTORY[0].objects) > 0
    assert [f.bInferDone for f in nvds.HISTORY[0].frames] == [0, 0]


def test_pyds_writer_writes_the_same_fields_under_the_meta_lock(run_pipeline, embedded_model, reference):
    pipeline = _pipeline(embedded_model.path, "batch-size=4 num-batches=1", "meta=pyds unique-id=9")
    result = run_pipeline(pipeline)
    assert result.ok, result.error
    assert pipeline.get_by_name("infer").get_property("meta-used").startswith("DeepStream writer pyds")
    bm = nvds.HISTORY[0]
    assert bm.lock_taken >= 1 and bm.lock_depth == 0
    for frame, dets in zip(bm.frames, reference):
        assert frame.bInferDone == 1
        assert [o.class_id for o in frame.objects] == dets.class_id.tolist()
        assert all(o.object_id == UNTRACKED_OBJECT_ID and o.unique_component_id == 9 for o in frame.objects)
        got = np.array([[o.rect_params.left, o.rect_params.top] for o in frame.objects])
        np.testing.assert_allclose(got, dets.xyxy[:, :2], atol=1e-4)
        assert [o.label for o in frame.objects] == [dets.label(i) for i in range(len(dets))]


def test_auto_falls_back_to_pyds_when_pyservicemaker_is_absent(run_pipeline, embedded_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyservicemaker", None)  # import fails
    pipeline = _pipeline(embedded_model.path, "batch-size=2 num-batches=1")
    assert run_pipeline(pipeline).ok
    assert "writer pyds" in pipeline.get_by_name("infer").get_property("meta-used")
    assert len(nvds.HISTORY[0].objects) > 0


def test_without_any_deepstream_bindings_nvmm_caps_are_a_clear_error(run_pipeline, embedded_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyservicemaker", None)
    monkeypatch.setitem(sys.modules, "pyds", None)
    result = run_pipeline(_pipeline(embedded_model.path, "batch-size=2 num-batches=1"))
    assert result.error is not None
    assert result.error.matches(Gst.LibraryError.quark(), Gst.LibraryError.INIT)
    assert "pyservicemaker" in result.error.message and "pyds" in result.error.message


def test_without_pyds_frames_are_marked_through_the_checked_ctypes_layout_or_a_warning(
    run_pipeline, embedded_model, monkeypatch
):
    monkeypatch.setitem(sys.modules, "pyds", None)
    pipeline = _pipeline(embedded_model.path, "batch-size=2 num-batches=1")
    result = run_pipeline(pipeline)
    assert result.ok
    used = pipeline.get_by_name("infer").get_property("meta-used")
    assert "bInferDone: unavailable (DeepStream version unknown" in used  # no DeepStream install here
    assert any("bInferDone" in w for w in result.warnings)
    assert len(nvds.HISTORY[0].objects) > 0


def test_non_rgb_surfaces_get_a_warning_and_the_buffers_still_flow(run_pipeline, embedded_model):
    pipeline = _pipeline(embedded_model.path, "batch-size=2 num-batches=3 surface-format=RGBA")
    handoffs = []
    pipeline.get_by_name("out").set_property("signal-handoffs", True)
    pipeline.get_by_name("out").connect("handoff", lambda *a: handoffs.append(1))
    result = run_pipeline(pipeline)
    assert result.ok
    assert len(handoffs) == 3
    assert any("not RGB" in w and "nvvideoconvert" in w for w in result.warnings)
    assert all(len(bm.objects) == 0 for bm in nvds.HISTORY)


def test_an_empty_batch_or_missing_batch_meta_warns_and_passes(run_pipeline, embedded_model):
    for mux in ("batch-size=0 num-batches=2", "batch-size=2 num-batches=2 attach-meta=false"):
        result = run_pipeline(_pipeline(embedded_model.path, mux))
        assert result.ok, mux
        assert any("nvstreammux" in w for w in result.warnings), mux


def test_an_exhausted_object_pool_drops_the_rest_with_a_warning(run_pipeline, embedded_model):
    result = run_pipeline(_pipeline(embedded_model.path, "batch-size=4 num-batches=2 pool-size=5"))
    assert result.ok
    assert [len(bm.objects) for bm in nvds.HISTORY] == [5, 5]
    assert any("pool exhausted" in w for w in result.warnings)


def test_event_meta_adds_one_event_per_object_for_nvmsgconv(run_pipeline, embedded_model):
    result = run_pipeline(_pipeline(embedded_model.path, "batch-size=2 num-batches=1", "event-meta=true"))
    assert result.ok
    for frame in nvds.HISTORY[0].frames:
        assert len(frame.event_metas) == len(frame.objects) > 0
        assert [e.object for e in frame.event_metas] == frame.objects
        assert all(e.frame is frame and "circle" in e.labels for e in frame.event_metas)


def test_deepstream_writers_on_system_memory_caps_fail_negotiation(run_pipeline, fixed_model):
    result = run_pipeline(
        f"videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48 ! "
        f"pyinfer model-engine={fixed_model} meta=deepstream ! fakesink"
    )
    assert result.error is not None
    assert result.error.matches(Gst.CoreError.quark(), Gst.CoreError.NEGOTIATION)
    assert "NVMM" in result.error.message


def test_system_memory_reports_the_plain_gstreamer_writer(run_pipeline, fixed_model):
    from pyinfer.meta import analytics

    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=64,height=48 ! "
        f"pyinfer name=infer model-engine={fixed_model} ! fakesink"
    )
    assert run_pipeline(pipeline).ok
    want = "analytics" if analytics.available() else "roi"  # GstAnalytics from GStreamer 1.24
    assert pipeline.get_by_name("infer").get_property("meta-used") == want
