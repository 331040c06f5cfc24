"""The pyinfer element in real pipelines on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from pyinfer._gi import Gst
from support import push_frames

EXPECTED = np.array([[160, 80, 240, 160], [440, 290, 560, 350]], np.float32)  # FIXED_TABLE on 640x480


def _desc(model, extra: str = "", fmt: str = "RGB", size: str = "width=640,height=480", n: int = 6) -> str:
    return (
        f"videotestsrc num-buffers={n} ! video/x-raw,format={fmt},{size},framerate=30/1 ! "
        f"pyinfer name=infer model-engine={model} {extra} ! appsink name=sink"
    )


def test_fixed_model_boxes_are_mapped_back_to_frame_pixels(run_pipeline, fixed_model):
    res = run_pipeline(_desc(fixed_model, "unique-id=7"))
    assert res.ok, res.error
    assert len(res.detections) == 6
    for dets in res.detections:
        np.testing.assert_allclose(dets.xyxy, EXPECTED, atol=1e-3)
        np.testing.assert_allclose(dets.confidence, [0.9, 0.7], atol=1e-6)
        assert dets.class_id.tolist() == [0, 2]
        assert [dets.label(i) for i in range(2)] == ["a", "c"]
        assert dets.extra["unique_id"].tolist() == [7, 7]


@pytest.mark.parametrize(
    ("props", "expected_rows"),
    [
        ("confidence-threshold=0.95", []),
        ("max-detections=1", [0]),
        ("confidence-threshold=0.75", [0]),
        ("nms-iou-threshold=0.9 confidence-threshold=0.5", [0, 0, 1]),  # the 0.8 box survives NMS
    ],
)
def test_thresholds_and_max_detections(run_pipeline, fixed_model, props, expected_rows):
    res = run_pipeline(_desc(fixed_model, props, n=2))
    assert res.ok, res.error
    dets = res.detections[0]
    assert len(dets) == len(expected_rows)
    if props.startswith("nms"):
        assert dets.confidence.tolist() == pytest.approx([0.9, 0.8, 0.7])
    else:
        np.testing.assert_allclose(dets.xyxy, EXPECTED[expected_rows], atol=1e-3)


def test_labels_file_overrides_model_names(run_pipeline, fixed_model, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("person\nbicycle\ncar\n")
    res = run_pipeline(_desc(fixed_model, f"labels-file={labels}", n=1))
    assert res.ok, res.error
    assert [res.detections[0].label(i) for i in range(2)] == ["person", "car"]


@pytest.mark.parametrize("batch_size", [1, 3, 4])
@pytest.mark.parametrize("interval", [0, 2])
def test_every_buffer_leaves_once_in_order(run_pipeline, fixed_model, batch_size, interval):
    n = 10
    res = run_pipeline(_desc(fixed_model, f"batch-size={batch_size} interval={interval}", n=n))
    assert res.ok, res.error
    assert res.pts == [i * Gst.SECOND // 30 for i in range(n)]
    inferred = [len(d) > 0 for d in res.detections]
    assert inferred == [i % (interval + 1) == 0 for i in range(n)]


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "RGBA", "BGRA", "RGBx", "BGRx"])
def test_all_packed_formats_at_odd_size(run_pipeline, fixed_model, fmt):
    res = run_pipeline(_desc(fixed_model, fmt=fmt, size="width=641,height=479", n=2))
    assert res.ok, res.error
    assert len(res.detections[0]) == 2


def test_null_playing_null_twice(fixed_model):
    pipeline = Gst.parse_launch(_desc(fixed_model, n=3))
    from support import run

    for _ in range(2):
        res = run(pipeline)
        assert res.ok, res.error
        assert len(res.detections) == 3


def test_eos_pushes_a_partial_batch(run_pipeline, fixed_model):
    res = run_pipeline(_desc(fixed_model, "batch-size=8", n=5))
    assert res.ok, res.error
    assert len(res.pts) == 5
    assert all(len(d) == 2 for d in res.detections)


def test_flushing_seek_drops_held_frames_and_the_stream_goes_on(fixed_model):
    """A flushing seek while frames are held for a batch: they are dropped, the new segment comes out whole."""
    import time

    from support import run

    pipeline = Gst.parse_launch(
        "videotestsrc is-live=false ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! "
        f"pyinfer model-engine={fixed_model} batch-size=4 ! appsink name=sink"
    )

    def feed(p: Gst.Pipeline) -> None:
        p.get_state(Gst.CLOCK_TIME_NONE)
        sink = p.get_by_name("sink")
        deadline = time.monotonic() + 30
        while len(results.pts) < 9 and not sink.get_property("eos") and time.monotonic() < deadline:
            time.sleep(0.01)
        ok = p.seek(
            1.0,
            Gst.Format.TIME,
            Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE,
            Gst.SeekType.SET,
            2 * Gst.SECOND,
            Gst.SeekType.SET,
            3 * Gst.SECOND,
        )
        assert ok

    results = _Collector()
    res = run(pipeline, feed=lambda p: (results.attach(p), feed(p)))
    assert res.ok, res.error
    seen = results.pts  # every buffer pyinfer pushed (the appsink's own queue is flushed by the seek too)
    first_new = seen.index(2 * Gst.SECOND)
    early, after = seen[:first_new], seen[first_new:]
    assert after == [2 * Gst.SECOND + i * Gst.SECOND // 30 for i in range(30)]  # held frames were not pushed late
    assert early == sorted(set(early))  # nothing pushed twice or out of order before the seek
    assert len(early) >= 8
    assert res.pts[-30:] == after


class _Collector:
    """Watches the appsink's buffers from the test thread (the run() helper collects them too)."""

    def __init__(self) -> None:
        self.pts: list[int] = []

    def attach(self, p: Gst.Pipeline) -> None:
        pad = p.get_by_name("sink").get_static_pad("sink")
        pad.add_probe(Gst.PadProbeType.BUFFER, self._on_buffer)

    def _on_buffer(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        self.pts.append(info.get_buffer().pts)
        return Gst.PadProbeReturn.OK


def test_padded_rows_from_a_video_meta_stride(run_pipeline, fixed_model):
    """Frames whose rows are padded to 2048 bytes (stride from GstVideoMeta) give the same detections."""
    frames = [np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8) for _ in range(2)]
    pipeline = Gst.parse_launch(f"appsrc name=src ! pyinfer model-engine={fixed_model} ! appsink name=sink")
    from support import run

    res = run(pipeline, feed=lambda p: push_frames(p.get_by_name("src"), frames, stride=2048))
    assert res.ok, res.error
    np.testing.assert_allclose(res.detections[0].xyxy, EXPECTED, atol=1e-3)


def test_every_frame_carries_a_frame_record_saying_whether_it_was_inferred(run_pipeline, fixed_model):
    result = run_pipeline(
        f"videotestsrc num-buffers=7 ! video/x-raw,format=RGB,width=64,height=48 ! "
        f"pyinfer model-engine={fixed_model} interval=2 batch-size=2 unique-id=4 ! appsink name=sink"
    )
    assert result.ok
    infos = result.frames
    assert [i.inferred for i in infos] == [True, False, False, True, False, False, True]
    assert {i.unique_id for i in infos} == {4}


def test_a_classifier_model_attaches_its_top_k_to_the_frame_detection(run_pipeline, tmp_path):
    import torch

    from pyinfer.meta import read_classifications
    from support import save_torchscript

    class ColourClassifier(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x.mean(dim=(2, 3)) * 20, dim=1)  # [B, 3]: which channel is brightest

    path = save_torchscript(ColourClassifier(), tmp_path / "cls.torchscript",
                            {"imgsz": [32, 32], "names": {"0": "red", "1": "green", "2": "blue"}},
                            torch.zeros(1, 3, 32, 32))  # fmt: skip
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=2 pattern=blue ! video/x-raw,format=RGB,width=64,height=48 ! "
        f"pyinfer model-engine={path} decoder=classifier ! appsink name=sink"
    )
    seen = []

    def probe(pad, info):
        seen.append(read_classifications(info.get_buffer()))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    result = run_pipeline(pipeline)
    assert result.ok, result.error
    assert [d.label(0) for d in result.detections] == ["blue", "blue"]
    for frame in seen:
        (top,) = frame
        assert top[0][1] == "blue" and sorted(label for _, label, _ in top) == ["blue", "green", "red"]
        assert top[0][2] >= top[1][2] >= top[2][2]
        assert top[0][2] == pytest.approx(float(result.detections[0].confidence[0]), abs=1e-6)


def test_behind_a_tee_metadata_goes_only_on_the_inferred_branch(run_pipeline, fixed_model):
    """A buffer that a tee shares with another branch is copied (shallow) before metadata is added to it."""
    from pyinfer.meta import read_detections, read_frame_info

    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=4 ! video/x-raw,format=RGB,width=640,height=480 ! tee name=t "
        f"t. ! queue ! pyinfer model-engine={fixed_model} batch-size=2 ! appsink name=sink "
        "t. ! queue ! fakesink name=other sync=false"
    )
    seen: list[tuple[int, object]] = []

    def probe(pad, info):
        buf = info.get_buffer()
        seen.append((len(read_detections(buf)), read_frame_info(buf)))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("other").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    res = run_pipeline(pipeline)
    assert res.ok, res.error
    assert [len(d) for d in res.detections] == [2, 2, 2, 2]
    assert seen == [(0, None)] * 4
