from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyinfer._gi import Gst, GstVideo, ensure_init
from pyinfer.errors import ConfigError
from pyinfer.jsonl import read_jsonl
from pyinfer.scene import Scene
from pyinfer.scene.video import encode_frames, render_frames, write_scene


def _decode(path: Path) -> list[np.ndarray]:
    """Every frame of a video file as (H, W, 3) uint8 RGB."""
    ensure_init()
    pipeline = Gst.parse_launch(
        "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false"
    )
    pipeline.get_by_name("src").set_property("location", str(path))
    sink = pipeline.get_by_name("sink")
    frames = []
    pipeline.set_state(Gst.State.PLAYING)
    try:
        while (sample := sink.emit("pull-sample")) is not None:
            info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
            buf = sample.get_buffer()
            ok, mapped = buf.map(Gst.MapFlags.READ)
            assert ok
            try:
                rows = np.frombuffer(mapped.data, np.uint8)[: info.stride[0] * info.height]
                rows = rows.reshape(info.height, info.stride[0])
                frames.append(rows[:, : info.width * 3].reshape(info.height, info.width, 3).copy())
            finally:
                buf.unmap(mapped)
        msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        assert msg is None, msg.parse_error()[0].message if msg else ""
    finally:
        pipeline.set_state(Gst.State.NULL)
    return frames


@pytest.mark.parametrize(("width", "height"), [(320, 240), (161, 121)])  # odd sizes go through 4:4:4 and padded rows
def test_video_round_trips_close_to_the_rendered_frames(tmp_path: Path, width: int, height: int) -> None:
    frames = 40
    video, truth = write_scene(tmp_path, frames=frames, seed=2, width=width, height=height, fps=25)
    assert (video, truth) == (tmp_path / "video.mp4", tmp_path / "truth.jsonl")
    decoded = _decode(video)
    assert len(decoded) == frames
    for (rendered, _), got in zip(render_frames(2, width, height, frames), decoded, strict=True):
        assert got.shape == rendered.shape
        assert np.abs(got.astype(np.int16) - rendered).mean() < 6.0


def test_truth_has_one_record_per_frame_in_the_jsonl_schema(tmp_path: Path) -> None:
    frames, fps = 12, 30
    _, truth = write_scene(tmp_path, frames=frames, seed=9, width=128, height=96, fps=fps)
    records = list(read_jsonl(truth))
    scene = Scene(9, 128, 96)
    assert [r["frame"] for r in records] == list(range(frames))
    for rec in records:
        assert rec["pts_ns"] == round(rec["frame"] * 1e9 / fps)
        assert (rec["width"], rec["height"]) == (128, 96)
        want = scene.frame(rec["frame"])[1]
        assert [o["object_id"] for o in rec["objects"]] == [o.object_id for o in want]
        for got, obj in zip(rec["objects"], want, strict=True):
            assert got["confidence"] == 1.0
            assert (got["class_id"], got["label"]) == (obj.class_id, obj.label)
            np.testing.assert_allclose(got["bbox"], obj.bbox, atol=0.006)


def test_pipeline_failure_raises_runtime_error_naming_the_element(tmp_path: Path) -> None:
    images = (np.zeros((64, 64, 3), np.uint8) for _ in range(3))
    with pytest.raises(RuntimeError, match="'sink'"):
        encode_frames(tmp_path / "missing-dir" / "video.mp4", images, width=64, height=64, fps=30)


@pytest.mark.parametrize(("frames", "fps", "match"), [(0, 30, "frames"), (5, 0, "fps")])
def test_bad_counts_raise_config_error(tmp_path: Path, frames: int, fps: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        write_scene(tmp_path, frames=frames, seed=0, width=64, height=64, fps=fps)
