"""JSON-lines records: building them from detections, reading and validating them back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyinfer.detections import Detections
from pyinfer.errors import ConfigError
from pyinfer.jsonl import frame_record, read_jsonl, record_detections, write_jsonl


def _dets(n: int, seed: int, *, object_id: bool = False) -> Detections:
    rng = np.random.default_rng(seed)
    lt = rng.uniform(0, 1900, (n, 2))
    xyxy = np.concatenate([lt, lt + rng.uniform(0.5, 300, (n, 2))], axis=1).astype(np.float32)
    extra = {"object_id": rng.integers(0, 1000, n)} if object_id else {}
    return Detections(
        xyxy, rng.random(n).astype(np.float32), rng.integers(0, 4, n).astype(np.int32),
        labels=("a", "b", "c"), extra=extra,
    )  # fmt: skip


GOOD = {"frame": 0, "pts_ns": 0, "width": 64, "height": 48, "objects": []}
OBJ = {"bbox": [1, 2, 3, 4], "confidence": 0.5, "class_id": 1, "label": "b"}


@pytest.mark.parametrize(("n", "seed", "object_id"), [(0, 0, False), (1, 1, True), (25, 2, False), (25, 3, True)])
def test_records_round_trip_through_a_file(tmp_path, n, seed, object_id):
    dets = _dets(n, seed, object_id=object_id)
    path = tmp_path / "det.jsonl"
    write_jsonl(path, [frame_record(7, 233_333_333, 1920, 1080, dets), frame_record(8, None, 1920, 1080, dets)])
    records = list(read_jsonl(path))
    assert [(r["frame"], r["pts_ns"], r["width"], r["height"]) for r in records] == [
        (7, 233_333_333, 1920, 1080),
        (8, None, 1920, 1080),
    ]
    back = record_detections(records[0])
    assert len(back) == n
    # Boxes are stored as ltwh rounded to 0.01 px: each corner is off by at most two roundings.
    np.testing.assert_allclose(back.xyxy, dets.xyxy, atol=0.0101, rtol=0)
    np.testing.assert_allclose(back.confidence, dets.confidence, atol=5e-5, rtol=0)
    np.testing.assert_array_equal(back.class_id, dets.class_id)
    assert [o["label"] for o in records[0]["objects"]] == [dets.label(i) for i in range(n)]
    if object_id and n:
        np.testing.assert_array_equal(back.extra["object_id"], dets.extra["object_id"])
    else:
        assert "object_id" not in back.extra


def test_frame_record_has_the_documented_fields_and_extra_values():
    dets = Detections(
        np.array([[10.123, 20.456, 30.0, 60.0]], np.float32),
        np.array([0.987654], np.float32),
        np.array([3], np.int32),
        labels=("a",),
        extra={"unique_id": np.array([5]), "embedding": np.array([[0.5, 0.25]])},
    )
    rec = frame_record(0, 0, 64, 48, dets)
    assert rec == {
        "frame": 0,
        "pts_ns": 0,
        "width": 64,
        "height": 48,
        "objects": [
            {
                "bbox": [10.12, 20.46, 19.88, 39.54],
                "confidence": 0.9877,
                "class_id": 3,
                "label": "3",
                "unique_id": 5,
                "embedding": [0.5, 0.25],
            }
        ],
    }
    assert type(rec["objects"][0]["unique_id"]) is int
    json.dumps(rec)  # plain Python values only


def test_objects_without_confidence_read_as_one():
    back = record_detections({**GOOD, "objects": [{"bbox": [1, 2, 3, 4], "class_id": 0}]})
    assert back.confidence.tolist() == [1.0]
    np.testing.assert_array_equal(back.xyxy, [[1, 2, 4, 6]])


def test_an_empty_record_gives_empty_detections():
    back = record_detections(GOOD)
    assert len(back) == 0
    assert back.xyxy.shape == (0, 4)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"not valid JSON"),
        ('{"frame": 0', r"not valid JSON"),
        ("[1, 2]", r"expected a JSON object, got list"),
        ("3", r"expected a JSON object, got int"),
        (json.dumps({**GOOD, "frame": None}), r"field 'frame' must be int, got None"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "frame"}), r"field 'frame' must be int, got None"),
        (json.dumps({**GOOD, "frame": "0"}), r"field 'frame' must be int, got '0'"),
        (json.dumps({**GOOD, "frame": True}), r"field 'frame' must be int, got True"),
        (json.dumps({**GOOD, "width": 64.0}), r"field 'width' must be int, got 64\.0"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "height"}), r"field 'height' must be int"),
        (json.dumps({**GOOD, "objects": {}}), r"field 'objects' must be list, got \{\}"),
        (json.dumps({**GOOD, "objects": [OBJ, 1]}), r"objects\[1\] must be an object"),
        (json.dumps({**GOOD, "objects": [{**OBJ, "bbox": [1, 2, 3]}]}), r"objects\[0\]\.bbox must be 4 numbers"),
        (json.dumps({**GOOD, "objects": [{**OBJ, "bbox": [1, 2, 3, "4"]}]}), r"objects\[0\]\.bbox must be 4 numbers"),
        (json.dumps({**GOOD, "objects": [{**OBJ, "bbox": [1, 2, 3, True]}]}), r"objects\[0\]\.bbox must be 4"),
        (json.dumps({**GOOD, "objects": [{**OBJ, "bbox": None}]}), r"objects\[0\]\.bbox must be 4 numbers"),
        (json.dumps({**GOOD, "objects": [OBJ, {**OBJ, "class_id": 1.0}]}), r"objects\[1\]\.class_id must be an int"),
        (json.dumps({**GOOD, "objects": [{**OBJ, "class_id": False}]}), r"objects\[0\]\.class_id must be an int"),
        (json.dumps({**GOOD, "objects": [{"bbox": [1, 2, 3, 4]}]}), r"objects\[0\]\.class_id must be an integer"),
        (json.dumps({**GOOD, "objects": [{**OBJ, "confidence": "high"}]}), r"objects\[0\]\.confidence must be a num"),
        (json.dumps({**GOOD, "objects": [{**OBJ, "confidence": None}]}), r"objects\[0\]\.confidence must be a num"),
    ],
)
def test_bad_lines_raise_config_error_naming_file_line_and_field(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    it = read_jsonl(path)
    assert next(it) == GOOD  # records before the bad line are still read
    with pytest.raises(ConfigError, match=rf"bad\.jsonl:3: {match}"):
        next(it)


def test_a_non_utf8_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"label": "caf\xe9"}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: not UTF-8 text \(byte 14\)"):
        list(read_jsonl(path))


def test_a_long_bad_value_is_cut_in_the_message(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({**GOOD, "frame": "x" * 500}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: field 'frame'") as info:
        list(read_jsonl(path))
    assert len(str(info.value)) < 200


def test_blank_lines_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_bytes(b"\n" + json.dumps(GOOD).encode() + b"\r\n   \r\n" + json.dumps({**GOOD, "frame": 1}).encode())
    assert [r["frame"] for r in read_jsonl(path)] == [0, 1]


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.jsonl: No such file or directory"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_rotated_boxes_are_written_as_cxcywhr_beside_the_enclosing_bbox():
    import math

    rot = np.array([[50.0, 40.0, 30.0, 10.0, math.radians(30)]], np.float32)
    dets = Detections(np.array([[35, 30, 65, 50]], np.float32), np.ones(1, np.float32), np.zeros(1, np.int32), rot)
    (obj,) = frame_record(0, 0, 100, 80, dets)["objects"]
    assert obj["bbox"] == [35.0, 30.0, 30.0, 20.0]
    assert obj["cxcywhr"] == pytest.approx([50.0, 40.0, 30.0, 10.0, math.radians(30)], abs=1e-4)


def test_untracked_objects_have_a_null_track_id_and_tracked_ones_their_id(tmp_path):
    # Issue #18: the untracked sentinel (2**64 - 1, DeepStream's UNTRACKED_OBJECT_ID) leaked into --json.
    dets = _dets(3, 4)
    dets = Detections(dets.xyxy, dets.confidence, dets.class_id, labels=dets.labels,
                      tracker_id=np.array([7, 2**64 - 1, 12], np.uint64))  # fmt: skip
    path = tmp_path / "det.jsonl"
    write_jsonl(path, [frame_record(0, 0, 640, 480, dets)])
    assert [o["track_id"] for o in json.loads(path.read_text())["objects"]] == [7, None, 12]
    from pyinfer.track.metrics import evaluate_tracking_records

    truth = frame_record(0, 0, 640, 480, Detections(dets.xyxy, dets.confidence, dets.class_id,
                                                    extra={"object_id": np.arange(3)}))  # fmt: skip
    result = evaluate_tracking_records(read_jsonl(path), [truth])
    assert (result.hypotheses, result.misses) == (2, 1)  # the untracked object is no hypothesis


def test_the_streaming_writer_flushes_every_line_whole(tmp_path):
    from pyinfer.jsonl import JsonLinesWriter  # here, not at the top: older code lacks it

    path = tmp_path / "det.jsonl"
    with JsonLinesWriter(path) as writer:
        for frame in range(3):
            writer.write({**GOOD, "frame": frame})
            assert [r["frame"] for r in read_jsonl(path)] == list(range(frame + 1))  # readable at once
    assert writer.count == 3


def test_masks_are_coco_rle_and_keypoints_lists_in_the_record():
    from pyinfer.jsonl import mask_rle, rle_mask

    m = np.array([[0, 1, 1], [0, 1, 0]], bool)
    # column-major: 0,0 | 1,1 | 1,0 -> runs 2 background, 3 foreground, 1 background
    assert mask_rle(m) == {"size": [2, 3], "counts": [2, 3, 1]}
    assert mask_rle(np.ones((2, 2), bool))["counts"] == [0, 4]
    rng = np.random.default_rng(3)
    for _ in range(20):
        r = rng.random((7, 5)) > 0.5
        np.testing.assert_array_equal(rle_mask(mask_rle(r)), r)
    with pytest.raises(ConfigError, match="add up"):
        rle_mask({"size": [2, 2], "counts": [1, 1]})
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, 1:3, 1:3] = 200
    kpts = np.array([[[1.234, 5.678, 0.5], [2, 3, 0.25]]], np.float32)
    dets = Detections(np.array([[0, 0, 8, 8]], np.float32), np.array([0.9], np.float32), np.array([0], np.int32),
                      masks=masks, keypoints=kpts)  # fmt: skip
    obj = json.loads(json.dumps(frame_record(0, 0, 8, 8, dets)))["objects"][0]
    np.testing.assert_array_equal(rle_mask(obj["mask"]), masks[0] >= 128)
    assert obj["keypoints"] == [[1.23, 5.68, 0.5], [2.0, 3.0, 0.25]]
