"""`pyinfer detect` with several inputs at once: files and a directory of images (issue #13 item 2).

RTSP inputs do not finish yet (the stream's end does not reach detect, and after Ctrl-C the process does not
exit): README "Several inputs at once" says so; their test comes back with the fix.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyinfer.jsonl import read_jsonl

PYINFER = [sys.executable, "-m", "pyinfer.cli"]


def _scene(out, frames: int, seed: int, width: int, height: int):
    args = ["--frames", str(frames), "--seed", str(seed), "--width", str(width), "--height", str(height)]
    subprocess.run([*PYINFER, "scene", *args, "--out", str(out)], check=True, capture_output=True, timeout=120)
    return out / "video.mp4"


def _detect(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*PYINFER, "detect", *args, "--quiet"], capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two small scenes of different sizes and lengths, and each one's detections when run alone."""
    root = tmp_path_factory.mktemp("multi")
    a, b = _scene(root / "a", 10, 11, 320, 240), _scene(root / "b", 6, 12, 256, 192)
    alone = {}
    for video in (a, b):
        det = video.parent / "alone.jsonl"
        out = _detect(str(video), "--json", str(det), "--track")
        assert out.returncode == 0, out.stderr
        alone[video] = list(read_jsonl(det))
    return a, b, alone


def _objects(records):
    return [[(o["bbox"], o["class_id"], o["confidence"]) for o in r["objects"]] for r in records]


def test_two_files_at_once_give_each_the_detections_it_gets_alone(videos, tmp_path):
    a, b, alone = videos
    messages = tmp_path / "messages-{stream}.jsonl"
    out = _detect(str(a), str(b), "--json", str(tmp_path / "{stream}.jsonl"), "--track", "--batch-size", "4",
                  "--publish", str(messages))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(r"frames: 16  time: .* frames/s: [\d.]+ .* streams: 2", out.stdout), out.stdout
    assert re.search(rf"stream 0 {re.escape(str(a))}: frames: 10  frames/s: [\d.]+", out.stdout), out.stdout
    assert re.search(rf"stream 1 {re.escape(str(b))}: frames: 6  frames/s: [\d.]+", out.stdout), out.stdout
    for index, video in enumerate((a, b)):
        records = list(read_jsonl(tmp_path / f"{index}.jsonl"))
        assert [r["frame"] for r in records] == list(range(len(alone[video])))
        assert {r["stream"] for r in records} == {index}
        assert _objects(records) == _objects(alone[video])  # batched with the other stream: the same detections
        assert [[o["track_id"] for o in r["objects"]] for r in records] == [
            [o["track_id"] for o in r["objects"]] for r in alone[video]
        ]  # a tracker per stream: the ids it gets alone
        lines = Path(str(messages).replace("{stream}", str(index))).read_text().splitlines()
        sent = [json.loads(line) for line in lines]
        assert len(sent) == len(records)
        assert {m["source_id"] for m in sent} == {index}


def test_one_json_file_for_several_inputs_marks_each_record_with_its_stream(videos, tmp_path):
    a, b, alone = videos
    det = tmp_path / "all.jsonl"
    out = _detect(str(a), str(b), "--json", str(det), "--track")
    assert out.returncode == 0, out.stderr
    records = list(read_jsonl(det))
    for index, video in enumerate((a, b)):
        mine = [r for r in records if r["stream"] == index]
        assert [r["frame"] for r in mine] == list(range(len(alone[video])))
        assert _objects(mine) == _objects(alone[video])


def test_a_directory_of_images_names_each_file_in_its_records(videos, tmp_path):
    a, b, alone = videos
    images = tmp_path / "images"
    images.mkdir()
    # PNG keeps the decoded pixels: the images are the video's frames, so the detections must match.
    launch = f"filesrc location={b} ! decodebin ! videoconvert ! pngenc ! multifilesink location={images}/img_%04d.png"
    subprocess.run(["gst-launch-1.0", "-q", *launch.split()], check=True, timeout=60)
    (images / "notes.txt").write_text("not an image")
    out = _detect(str(images), str(a), "--json", str(tmp_path / "out") + "/", "--track")
    assert out.returncode == 1, out.stdout  # the output directory does not exist: checked before running
    assert "cannot write --json" in out.stderr
    (tmp_path / "out").mkdir()
    out = _detect(str(images), str(a), "--json", str(tmp_path / "out"), "--track")
    assert out.returncode == 0, out.stderr
    records = list(read_jsonl(tmp_path / "out" / "0-images.jsonl"))
    assert [r["file"] for r in records] == [f"img_{i:04d}.png" for i in range(6)]
    assert _objects(records) == _objects(alone[b])
    assert len(list(read_jsonl(tmp_path / "out" / "1-video.jsonl"))) == 10


def test_an_input_that_cannot_be_read_is_named_before_anything_runs(videos, tmp_path):
    a, _b, _alone = videos
    out = _detect(str(a), str(tmp_path / "nope.mp4"), str(tmp_path / "*.png"), timeout=60)
    assert out.returncode == 1
    assert f"input {tmp_path / 'nope.mp4'} does not exist" in out.stderr
    out = _detect(str(a), str(tmp_path / "*.png"), timeout=60)
    assert out.returncode == 1
    assert f"input {tmp_path / '*.png'} matches no file" in out.stderr
    out = _detect(str(a), str(a), "--video", str(tmp_path / "one.mp4"), timeout=60)
    assert out.returncode == 1
    assert "with several inputs, give a directory or a pattern" in out.stderr
