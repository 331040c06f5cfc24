"""The secondary chain as a user runs it (issue #15): ``pyinfer scene --marked`` -> ``pyinfer detect --track
--secondary marks`` (pyinfer -> pytracker -> pyinfer process-mode=secondary -> pymsgconv -> pyosd) -> ``pyinfer
eval``, with the embedded detector and the embedded marks classifier on a held-out marked scene."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pyinfer.evaluate import evaluate_attribute
from pyinfer.jsonl import read_jsonl
from pyinfer.messages.schema import load_schema

PYINFER = [sys.executable, "-m", "pyinfer.cli"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("marked")
    subprocess.run([*PYINFER, "scene", "--marked", "--frames", "30", "--seed", "1000231", "--width", "640",
                    "--height", "384", "--out", str(out)], check=True, capture_output=True, timeout=120)  # fmt: skip
    proc = subprocess.run(
        [*PYINFER, "detect", str(out / "video.mp4"), "--track", "--secondary", "marks", "--secondary-reinfer-interval",
         "5", "--json", str(out / "det.jsonl"), "--publish", str(out / "msgs.jsonl"), "--video", str(out / "ann.mp4"),
         "--truth", str(out / "truth.jsonl"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_every_detection_carries_the_secondary_class_and_eval_scores_it(run):
    out, stdout = run
    records = list(read_jsonl(out / "det.jsonl"))
    objects = [o for r in records for o in r["objects"]]
    assert len(records) == 30 and len(objects) > 60
    for o in objects:
        (c,) = o["classifications"]
        assert c["unique_id"] == 2 and c["label"] in ("plain", "dot", "bar") and 0 <= c["confidence"] <= 1
        assert o["unique_id"] == 1  # the detector's
    result = evaluate_attribute(records, list(read_jsonl(out / "truth.jsonl")))
    assert result is not None and result.classified == result.matched > 60
    assert result.accuracy >= 0.9, result
    assert set(result.per_value) == {"plain", "dot", "bar"}
    assert "secondary vs truth mark:" in stdout and f"accuracy {result.accuracy:.3f}" in stdout


def test_messages_carry_the_same_classifications_and_validate(run):
    import jsonschema  # a test dependency (pyproject's [test] extra)

    out, _ = run
    messages = [json.loads(line) for line in (out / "msgs.jsonl").read_text().splitlines()]
    records = list(read_jsonl(out / "det.jsonl"))
    assert len(messages) == len(records)
    schema = load_schema()
    for msg, rec in zip(messages, records):
        jsonschema.validate(msg, schema)
        assert msg["version"] == "1.3"
        assert [o["classifications"] for o in msg["objects"]] == [o["classifications"] for o in rec["objects"]]


def test_the_video_tags_name_the_secondary_class(run):
    from pyinfer.draw import SECONDARY_LABELS, label_text
    from pyinfer.jsonl import record_detections

    out, _ = run
    rec = next(iter(read_jsonl(out / "det.jsonl")))
    dets = record_detections(rec)
    labels = np.array([o["classifications"][0]["label"] for o in rec["objects"]], object)
    import dataclasses

    tagged = dataclasses.replace(dets, extra={**dets.extra, SECONDARY_LABELS: labels})
    assert label_text(tagged, 0, track_id=False).startswith(f"{dets.label(0)} {labels[0]} ")
    assert (out / "ann.mp4").stat().st_size > 10_000


def test_secondary_without_objects_to_classify_leaves_records_unchanged(tmp_path):
    from pyinfer.detections import Detections
    from pyinfer.jsonl import frame_record

    dets = Detections.empty()
    assert frame_record(0, 0, 10, 10, dets, [])["objects"] == []
    one = Detections(np.array([[0, 0, 4, 4]], np.float32), np.array([0.9], np.float32), np.array([0], np.int32))
    assert "classifications" not in frame_record(0, 0, 10, 10, one, [{}])["objects"][0]
    rec = frame_record(0, 0, 10, 10, one, [{7: [(1, "dot", 0.8)], 3: [(0, "a", 0.5), (1, "b", 0.4)]}])
    assert rec["objects"][0]["classifications"] == [
        {"unique_id": 3, "class_id": 0, "label": "a", "confidence": 0.5},
        {"unique_id": 7, "class_id": 1, "label": "dot", "confidence": 0.8},
    ]


def test_a_detector_secondary_adds_children_with_their_parent_in_json_and_messages(tmp_path):
    from pathlib import Path

    out = tmp_path
    subprocess.run([*PYINFER, "scene", "--frames", "8", "--seed", "1000231", "--width", "640", "--height", "384",
                    "--out", str(out)], check=True, capture_output=True, timeout=120)  # fmt: skip
    model = f"{Path(__file__).resolve().parent / 'secondary_models.py'}:centre_box"
    proc = subprocess.run(
        [*PYINFER, "detect", str(out / "video.mp4"), "--secondary", model, "--json", str(out / "det.jsonl"),
         "--publish", str(out / "msgs.jsonl"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = list(read_jsonl(out / "det.jsonl"))
    messages = [json.loads(line) for line in (out / "msgs.jsonl").read_text().splitlines()]
    assert len(records) == len(messages) == 8
    children = 0
    for rec, msg in zip(records, messages):
        objs = rec["objects"]
        for j, o in enumerate(objs):
            if o["unique_id"] == 2:  # a child: the middle of its parent's box
                parent = objs[o["parent"]]
                assert parent["unique_id"] == 1 and "parent" not in parent
                pl, pt, pw, ph = parent["bbox"]
                assert pl <= o["bbox"][0] and o["bbox"][0] + o["bbox"][2] <= pl + pw + 1
                assert pt <= o["bbox"][1] and o["bbox"][1] + o["bbox"][3] <= pt + ph + 1
                assert msg["objects"][j]["parent_index"] == msg["objects"][o["parent"]]["index"]
                children += 1
            else:
                assert "parent" not in o and "parent_index" not in msg["objects"][j]
        assert sum(o["unique_id"] == 2 for o in objs) == sum(o["unique_id"] == 1 for o in objs)
    assert children >= 8


def test_the_vertices_secondary_gives_each_object_a_child_with_keypoints(tmp_path):
    out = tmp_path
    subprocess.run([*PYINFER, "scene", "--frames", "6", "--seed", "1000231", "--width", "640", "--height", "384",
                    "--out", str(out)], check=True, capture_output=True, timeout=120)  # fmt: skip
    proc = subprocess.run(
        [*PYINFER, "detect", str(out / "video.mp4"), "--secondary", "vertices", "--json", str(out / "det.jsonl"),
         "--publish", str(out / "msgs.jsonl"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = list(read_jsonl(out / "det.jsonl"))
    messages = [json.loads(line) for line in (out / "msgs.jsonl").read_text().splitlines()]
    with_kpts = 0
    for rec, msg in zip(records, messages):
        for o, m in zip(rec["objects"], msg["objects"]):
            if o["unique_id"] == 2:  # the child: 4 keypoints inside its parent's box
                parent = rec["objects"][o["parent"]]
                assert len(o["keypoints"]) == 4 and len(m["keypoints"]) == 4
                left, top, w, h = parent["bbox"]
                for x, y, c in o["keypoints"]:
                    if c > 0.5:
                        assert left - 0.1 * w <= x <= left + 1.1 * w and top - 0.1 * h <= y <= top + 1.1 * h
                with_kpts += 1
            else:  # the frame's own objects have none: left out, not written as zeros
                assert "keypoints" not in o and "keypoints" not in m
    assert with_kpts >= 6
