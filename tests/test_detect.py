"""The main job: pyinfer scene -> pyinfer detect -> pyinfer eval, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

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
            assert obj["track_id"] == ref["track_id"]  # null in both when untracked
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


# Issue #18: what a newcomer trips over in `pyinfer detect`.


def _detect(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*PYINFER, "detect", *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--confidence-threshold", "1.5"], "argument --confidence-threshold: 1.5 is out of range: 0 to 1"),
        (["--confidence-threshold", "nan"], "argument --confidence-threshold: nan is out of range"),
        (["--batch-size", "0"], "argument --batch-size: 0 is out of range: 1 to 1024"),
        (["--nms-iou-threshold", "-0.1"], "argument --nms-iou-threshold: -0.1 is out of range: 0 to 1"),
        (["--interval", "-1"], "argument --interval: -1 is out of range: 0 to 1e+06"),
        (["--input-width", "20000"], "argument --input-width: 20000 is out of range: 0 to 16384"),
        (["--batch-size", "two"], "argument --batch-size: 'two' is not an integer"),
        (["--device", "gpu"], "argument --device: 'gpu' is not one of auto, cpu, cuda, cuda:N"),
        (["--decoder", "yolov99"], "argument --decoder: invalid choice: 'yolov99'"),
        (["--precision", "int8"], "argument --precision: invalid choice: 'int8'"),
        (["--backend", "tflite"], "argument --backend: invalid choice: 'tflite'"),
        (["--input-width", "320"], "input-width and input-height go together"),
    ],
)
def test_detect_refuses_out_of_range_and_unknown_values_before_running(tmp_path, args, message):
    out = _detect(str(tmp_path / "nope.mp4"), *args, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "frames:" not in out.stdout


def test_every_option_reaches_the_element_property_of_its_name(tmp_path):
    import pyinfer
    from pyinfer._gi import Gst, ensure_init
    from pyinfer.detect import DetectOptions, build_description

    ensure_init()
    pyinfer.register()
    opts = DetectOptions(
        input="in.mp4", device="cpu", backend="onnx", precision="fp16", allow_pickle=True, batch_size=3,
        confidence_threshold=0.4, nms_iou_threshold=0.3, decoder="custom", postprocess="my.hooks:decode",
        interval=2, input_width=320, input_height=256,
    )  # fmt: skip
    infer = Gst.parse_launch(build_description(opts, "/m/model.onnx", "/m/labels.txt")).get_by_name("infer")
    want = {
        "model-engine": "/m/model.onnx", "labels-file": "/m/labels.txt", "device": "cpu", "backend": "onnx",
        "precision": "fp16", "allow-pickle": True, "batch-size": 3, "confidence-threshold": 0.4,
        "nms-iou-threshold": 0.3, "decoder": "custom", "postprocess": "my.hooks:decode", "interval": 2,
        "input-width": 320, "input-height": 256,
    }  # fmt: skip
    assert {k: infer.get_property(k) for k in want} == pytest.approx(want)


def test_detect_checks_output_paths_before_running(scene_dir, tmp_path):
    video = tmp_path / "annotated.mp4"
    out = _detect(str(scene_dir / "video.mp4"), "--json", "/nonexistent/dir/det.jsonl", "--video", str(video),
                  "--quiet")  # fmt: skip
    assert out.returncode == 1
    assert "cannot write --json /nonexistent/dir/det.jsonl: No such file or directory" in out.stderr
    assert "frames:" not in out.stdout
    assert not video.exists()  # nothing ran: the video was not written either
    copy = tmp_path / "copy.mp4"
    copy.write_bytes((scene_dir / "video.mp4").read_bytes())
    out = _detect(str(copy), "--video", str(copy), "--quiet", timeout=60)
    assert out.returncode == 1
    assert f"--video {copy} is the input" in out.stderr
    assert copy.stat().st_size == (scene_dir / "video.mp4").stat().st_size  # not truncated


def test_an_embedded_model_by_name_and_the_model_options_reach_pyinfer(scene_dir, tmp_path):
    det = tmp_path / "det.jsonl"
    out = _detect(str(scene_dir / "video.mp4"), "--model-engine", "shapes-obb", "--decoder", "yolo-obb",
                  "--interval", "1", "--nms-iou-threshold", "0.3", "--backend", "torchscript", "--precision", "fp32",
                  "--device", "cpu", "--input-width", "384", "--input-height", "384", "--json", str(det),
                  "--quiet")  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = list(read_jsonl(det))
    assert len(records) == 30
    assert all(not r["objects"] for r in records[1::2])  # interval 1: every other frame skipped
    objects = [o for r in records[0::2] for o in r["objects"]]
    assert objects and all("cxcywhr" in o for o in objects)  # rotated boxes: the shapes-obb model
    assert {o["label"] for o in objects} <= {"ellipse", "rectangle", "triangle"}  # with its labels


def test_a_forced_decoder_that_does_not_fit_stops_detect_naming_the_right_one(scene_dir):
    out = _detect(str(scene_dir / "video.mp4"), "--decoder", "yolov5", "--quiet")
    assert out.returncode == 1
    assert "decoder yolov5 reads output [1, 7, 3024]" in out.stderr
    assert "set decoder=yolov8" in out.stderr


def _damage(src, dst, keep: float) -> None:
    """Copy an MP4, zeroing its media data after the first ``keep`` fraction (the index stays intact)."""
    data = bytearray(src.read_bytes())
    at = 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"mdat":
            cut = at + 8 + int((size - 8) * keep)
            data[cut : at + size] = bytes(at + size - cut)
        at += size
    dst.write_bytes(bytes(data))


def test_a_damaged_input_fails_detect_naming_the_frames_lost(scene_dir, tmp_path):
    damaged, det = tmp_path / "damaged.mp4", tmp_path / "det.jsonl"
    _damage(scene_dir / "video.mp4", damaged, keep=0.4)
    out = _detect(str(damaged), "--json", str(det), "--quiet")
    assert out.returncode == 1, out.stdout + out.stderr
    match = re.search(r"damaged\.mp4 is damaged: its decoder \S+ decoded (\d+) of the 30 frames", out.stderr)
    assert match, out.stderr
    decoded = int(match.group(1))
    assert 0 < decoded < 30
    assert len(list(read_jsonl(det))) == decoded  # what did decode is kept


def test_odd_frame_sizes_are_padded_to_even_for_the_encoder_only(tmp_path):
    scene = tmp_path / "odd"
    subprocess.run([*PYINFER, "scene", "--frames", "4", "--seed", "7", "--width", "321", "--height", "241",
                    "--out", str(scene)], check=True, capture_output=True, timeout=120)  # fmt: skip
    det, video = tmp_path / "det.jsonl", tmp_path / "annotated.mp4"
    out = _detect(str(scene / "video.mp4"), "--json", str(det), "--video", str(video), "--quiet")
    assert out.returncode == 0, out.stderr
    assert [(r["width"], r["height"]) for r in read_jsonl(det)] == [(321, 241)] * 4  # the JSON keeps the frame size
    frames = _decode(video)
    assert len(frames) == 4
    assert frames[0].shape == (242, 322, 3)  # one black column and row added
    assert frames[0][-1].max() < 40 and frames[0][:, -1].max() < 40


FACTORY = """
import time

import torch

from pyinfer.zoo import get_model


def build(device="cpu"):
    time.sleep({sleep})  # a slow model load
    return torch.jit.load(str(get_model().path), map_location=device)
"""


def test_frames_per_second_counts_from_the_first_frame_not_from_model_loading(tmp_path):
    scene = tmp_path / "scene"
    subprocess.run([*PYINFER, "scene", "--frames", "3", "--seed", "3", "--width", "160", "--height", "128",
                    "--out", str(scene)], check=True, capture_output=True, timeout=120)  # fmt: skip
    (tmp_path / "slowload.py").write_text(FACTORY.format(sleep=10))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = _detect(str(scene / "video.mp4"), "--model-engine", "slowload:build", "--input-width", "384",
                  "--input-height", "384", "--quiet", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    match = re.search(r"frames: 3  time: ([\d.]+) s  frames/s: ([\d.]+) .*start-up ([\d.]+) s", out.stdout)
    assert match, out.stdout
    seconds, fps, startup = (float(v) for v in match.groups())
    assert startup >= 10.0  # the load is reported apart...
    assert seconds < 10.0  # ...and not counted in the time
    assert fps > 3 / 10.0


def test_ctrl_c_ends_the_stream_cleanly_keeping_streamed_json_and_a_playable_mp4(tmp_path):
    scene = tmp_path / "scene"
    subprocess.run([*PYINFER, "scene", "--frames", "300", "--seed", "8", "--width", "320", "--height", "240",
                    "--out", str(scene)], check=True, capture_output=True, timeout=120)  # fmt: skip
    det, video = tmp_path / "det.jsonl", tmp_path / "annotated.mp4"
    proc = subprocess.Popen([*PYINFER, "detect", str(scene / "video.mp4"), "--json", str(det), "--video", str(video),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if det.exists() and det.read_text().count("\n") >= 3:  # streamed: lines appear while it runs
                break
            time.sleep(0.2)
        assert proc.poll() is None, "detect finished before any JSON line appeared: lines are not streamed"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert "(interrupted)" in stdout
    records = list(read_jsonl(det))  # every line whole and valid
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert 3 <= len(records) < 300
    frames = _decode(video)  # decodes to EOS: mp4mux finished the file
    assert len(frames) == len(records)


def test_detect_with_truth_and_track_prints_the_tracking_figures_as_eval_does(scene_dir, tmp_path):
    det = tmp_path / "det.jsonl"
    truth = str(scene_dir / "truth.jsonl")
    out = subprocess.run(
        [*PYINFER, "detect", str(scene_dir / "video.mp4"), "--json", str(det), "--track", "--truth", truth, "--quiet"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = out.stdout.splitlines()[-2:]
    assert figures[0].startswith("frames=30 truth=") and "precision=" in figures[0], out.stdout
    for part in ("tracked=", "MOTA=", "IDF1=", "IDSW="):
        assert part in figures[1], out.stdout
    assert "warning" not in out.stderr, out.stderr
    ev = subprocess.run([*PYINFER, "eval", "--json", str(det), "--truth", truth], capture_output=True, text=True,
                        timeout=60, check=True)  # fmt: skip
    assert ev.stdout.splitlines() == figures  # the same two lines as pyinfer eval


def test_eval_against_the_truth_of_another_scene_warns(scene_dir, tmp_path, capsys):
    from pyinfer.cli import main as cli_main
    from pyinfer.jsonl import write_jsonl
    from pyinfer.scene.video import write_scene

    _video, other_truth = write_scene(tmp_path / "other", frames=30, seed=7, width=480, height=360)
    truth = list(read_jsonl(scene_dir / "truth.jsonl"))
    as_detections = [{**r, "objects": [{**o, "confidence": 0.9} for o in r["objects"]]} for r in truth]
    write_jsonl(tmp_path / "det.jsonl", as_detections)  # perfect detections of this scene
    assert cli_main(["eval", "--json", str(tmp_path / "det.jsonl"), "--truth", str(other_truth)]) == 0
    out, err = capsys.readouterr()
    assert "precision=" in out
    assert "pyinfer eval: warning: " in err and "do not look like the same video" in err, err
    assert cli_main(["eval", "--json", str(tmp_path / "det.jsonl"), "--truth", str(scene_dir / "truth.jsonl")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_detect_truth_needs_json_and_an_existing_file(scene_dir, tmp_path):
    for args, message in [
        (["--truth", str(scene_dir / "truth.jsonl")], "--truth needs --json"),
        (["--json", str(tmp_path / "d.jsonl"), "--truth", str(tmp_path / "nope.jsonl")], "no such file"),
    ]:
        out = subprocess.run([*PYINFER, "detect", str(scene_dir / "video.mp4"), *args], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
        assert out.returncode == 2 and message in out.stderr, out.stderr
