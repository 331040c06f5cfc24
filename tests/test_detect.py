"""The main job: pyinfer scene -> pyinfer detect -> pyinfer eval, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pyinfer.jsonl import read_jsonl

PYINFER = [sys.executable, "-m", "pyinfer.cli"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene")
    subprocess.run([*PYINFER, "scene", "--frames", "30", "--seed", "4242", "--width", "480", "--height", "360",
                    "--out", str(out)], check=True, capture_output=True, timeout=120)  # fmt: skip
    return out


def test_detect_writes_json_lines_and_an_annotated_video(scene_dir, tmp_path):
    det, video = tmp_path / "det.jsonl", tmp_path / "annotated.mp4"
    out = subprocess.run(
        [*PYINFER, "detect", str(scene_dir / "video.mp4"), "--json", str(det), "--video", str(video), "--quiet"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "frames: 30" in out.stdout
    records = list(read_jsonl(det))
    assert [r["frame"] for r in records] == list(range(30))
    assert all((r["width"], r["height"]) == (480, 360) for r in records)
    pts = [r["pts_ns"] for r in records]
    assert pts == sorted(pts)
    obj = next(o for r in records for o in r["objects"])
    assert set(obj) >= {"bbox", "confidence", "class_id", "label"}
    assert obj["label"] in ("circle", "square", "triangle")

    ev = subprocess.run(
        [
            *PYINFER,
            "eval",
            "--json",
            str(det),
            "--truth",
            str(scene_dir / "truth.jsonl"),
            "--out",
            str(tmp_path / "eval.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["precision"] >= 0.9, ev.stdout
    assert figures["recall"] >= 0.9, ev.stdout

    annotated = _decode(video)
    original = _decode(scene_dir / "video.mp4")
    assert len(annotated) == len(original) == 30
    # Drawing changed pixels along the first detection's box edge, and left a far-away corner alone.
    left, top, w, _h = (round(v) for v in records[0]["objects"][0]["bbox"])
    edge = (slice(max(top, 0), max(top, 0) + 2), slice(left, left + w))
    assert np.abs(annotated[0][edge].astype(int) - original[0][edge].astype(int)).mean() > 20


def test_detect_on_a_missing_input_says_so(tmp_path):
    out = subprocess.run(
        [*PYINFER, "detect", str(tmp_path / "nope.mp4"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "does not exist" in out.stderr


def test_detect_with_a_corrupt_model_reports_the_bus_error(scene_dir, tmp_path):
    bad = tmp_path / "bad.torchscript"
    bad.write_bytes(b"garbage")
    out = subprocess.run(
        [*PYINFER, "detect", str(scene_dir / "video.mp4"), "--model-engine", str(bad), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1
    assert "not a loadable TorchScript archive" in out.stderr


def _decode(path) -> list[np.ndarray]:
    from pyinfer._gi import Gst, ensure_init, structure

    ensure_init()
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=s sync=false'
    )
    sink = pipeline.get_by_name("s")
    frames = []
    pipeline.set_state(Gst.State.PLAYING)
    try:
        while True:
            sample = sink.emit("pull-sample")
            if sample is None:
                break
            with structure(sample.get_caps()) as s:
                w, h = s.get_value("width"), s.get_value("height")
            buf = sample.get_buffer()
            _ok, info = buf.map(Gst.MapFlags.READ)
            stride = len(info.data) // h
            frames.append(np.frombuffer(info.data, np.uint8).reshape(h, stride)[:, : w * 3].reshape(h, w, 3).copy())
            buf.unmap(info)
    finally:
        pipeline.set_state(Gst.State.NULL)
    return frames


def test_detect_publishes_tracked_messages_to_redis_matching_the_json_lines(scene_dir, tmp_path):
    from brokers.servers import Redis

    server = Redis(tmp_path / "redis")
    server.start()
    det = tmp_path / "det.jsonl"
    try:
        out = subprocess.run(
            [*PYINFER, "detect", str(scene_dir / "video.mp4"), "--json", str(det), "--track", "--quiet",
             "--publish", f"redis://{server.conn_str}/cams"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        messages = [payload for payload, _ in server.entries("cams")]
    finally:
        server.stop()
    assert f"redis://{server.conn_str}/cams (30 messages, 0 lost)" in out.stdout
    records = list(read_jsonl(det))
    assert [m["frame_number"] for m in messages] == [r["frame"] for r in records] == list(range(30))
    tracked = 0
    for msg, rec in zip(messages, records):
        assert (msg["pts_ns"], msg["width"], msg["height"]) == (rec["pts_ns"], rec["width"], rec["height"])
        assert len(msg["objects"]) == len(rec["objects"])
        for obj, ref in zip(msg["objects"], rec["objects"]):
            box = obj["bbox"]
            assert [box["left"], box["top"], box["width"], box["height"]] == pytest.approx(ref["bbox"], abs=0.01)
            assert (obj["label"], obj["class_id"]) == (ref["label"], ref["class_id"])
            assert obj["track_id"] == (None if ref.get("track_id", 2**64 - 1) == 2**64 - 1 else ref["track_id"])
            tracked += obj["track_id"] is not None
    assert tracked > 0  # --track put pytracker in the pipeline: ids reach both outputs


@pytest.mark.parametrize(
    ("target", "text"),
    [("amqp://127.0.0.1/q", "unknown publish target scheme"), ("mqtt://127.0.0.1:1/t", "cannot connect to mqtt")],
)
def test_detect_with_a_bad_or_unreachable_publish_target_fails_with_the_reason(scene_dir, target, text):
    out = subprocess.run(
        [*PYINFER, "detect", str(scene_dir / "video.mp4"), "--quiet", "--publish", target],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert text in out.stderr
