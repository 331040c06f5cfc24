"""Messages (schema v1) built from Detections, checked field by field and against schema-v1.json."""

from __future__ import annotations

import datetime as dt
import json
import math

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinfer.detections import Detections
from pyinfer.messages import SCHEMA_VERSION, FrameHeader, MessageBuilder, MetadataError, iso_timestamp, load_schema

VALIDATOR = jsonschema.Draft202012Validator(load_schema())
UNTRACKED = np.uint64(2**64 - 1)


def _header(**kw) -> FrameHeader:
    base = {"source_id": 4, "frame_number": 17, "pts_ns": 566_666_666, "timestamp_ns": 1_764_065_472_345_678_901,
            "width": 640, "height": 480, "inferred": True}  # fmt: skip
    base.update(kw)
    return FrameHeader(**base)


def _dets(rotated: bool = False, tracked: bool = True) -> Detections:
    xyxy = np.array([[10.25, 20.5, 110.75, 220.0], [300.0, 40.0, 340.5, 90.125]], np.float32)
    extra = {
        "unique_id": np.array([15, -1], np.int64),
        "model_id": np.array([2, -1], np.int64),
        "roi_id": np.array([0, 1], np.int64),
    }
    tracker_id = np.array([42, UNTRACKED], np.uint64) if tracked else None
    cxcywhr = None
    if rotated:
        cxcywhr = np.array([[60.5, 120.25, 80.0, 40.0, math.radians(30)], [320.25, 65.0625, 40.5, 50.125, 0.0]],
                           np.float32)  # fmt: skip
    return Detections(xyxy, np.array([0.9731, 0.5], np.float32), np.array([1, 0], np.int32), cxcywhr=cxcywhr,
                      labels=("circle", "square"), extra=extra, tracker_id=tracker_id)  # fmt: skip


def _build(dets: Detections, **kw) -> list[dict]:
    texts = MessageBuilder(session="ab" * 16).build(_header(), dets, **kw)
    messages = [json.loads(t) for t in texts]
    for m in messages:
        VALIDATOR.validate(m)
    return messages


def test_a_frame_message_carries_every_field_of_the_frame_and_its_detections():
    (msg,) = _build(_dets())
    assert msg["version"] == SCHEMA_VERSION == "1.3"
    assert msg["message_id"] == "ab" * 16 + "-0"
    assert (msg["message_type"], msg["source_id"], msg["frame_number"], msg["pts_ns"]) == ("frame", 4, 17, 566_666_666)
    assert msg["timestamp"] == "2025-11-25T10:11:12.345Z"
    assert (msg["width"], msg["height"], msg["inferred"], msg["object_count"]) == (640, 480, True, 2)
    first, second = msg["objects"]
    assert first == {
        "index": 0, "class_id": 1, "label": "square", "confidence": pytest.approx(0.9731, abs=1e-6),
        "bbox": {"left": 10.25, "top": 20.5, "width": 100.5, "height": 199.5},
        "rotated_bbox": None, "track_id": 42, "producer_id": 15, "model_id": 2,
    }  # fmt: skip
    assert second["label"] == "circle"
    assert second["bbox"] == {"left": 300.0, "top": 40.0, "width": 40.5, "height": 50.125}
    # DeepStream's UNTRACKED_OBJECT_ID and unknown producers (-1) become null, not huge or negative numbers
    assert (second["track_id"], second["producer_id"], second["model_id"]) == (None, None, None)


def test_rotated_detections_carry_the_rotated_box_with_the_angle_in_radians():
    (msg,) = _build(_dets(rotated=True))
    rot = msg["objects"][0]["rotated_bbox"]
    assert rot == {"cx": 60.5, "cy": 120.25, "width": 80.0, "height": 40.0,
                   "angle_rad": pytest.approx(math.radians(30), abs=1e-6)}  # fmt: skip
    assert msg["objects"][1]["rotated_bbox"]["angle_rad"] == 0.0


def test_untracked_detections_have_a_null_track_id():
    (msg,) = _build(_dets(tracked=False))
    assert [o["track_id"] for o in msg["objects"]] == [None, None]


def test_per_object_mode_makes_one_message_per_object_in_the_same_envelope():
    frame = _build(_dets())[0]
    objects = _build(_dets(), per_object=True)
    assert [m["message_type"] for m in objects] == ["object", "object"]
    assert [m["objects"] for m in objects] == [[o] for o in frame["objects"]]
    assert all(m["object_count"] == 2 and m["frame_number"] == 17 for m in objects)
    assert [m["message_id"] for m in objects] == ["ab" * 16 + "-0", "ab" * 16 + "-1"]


def test_a_frame_without_objects_makes_one_empty_frame_message_and_no_object_messages():
    assert _build(Detections.empty())[0]["objects"] == []
    assert _build(Detections.empty(), per_object=True) == []


def test_message_ids_are_unique_across_builders_and_sequential_within_one():
    a, b = MessageBuilder(), MessageBuilder()
    ids = [a.next_id() for _ in range(3)]
    assert [i.rsplit("-", 1)[1] for i in ids] == ["0", "1", "2"]
    assert a.session != b.session
    assert len(a.session) == 32


@pytest.mark.parametrize("ns", [0, 999_999, 1_000_000, 1_764_065_472_999_999_999])
def test_timestamps_are_iso8601_utc_with_milliseconds_truncated(ns):
    expected = dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    assert iso_timestamp(ns) == f"{expected}.{(ns % 10**9) // 10**6:03d}Z"


def test_unknown_frame_fields_are_null_and_still_valid():
    texts = MessageBuilder().build(_header(pts_ns=None, width=None, height=None, inferred=None), _dets())
    msg = json.loads(texts[0])
    VALIDATOR.validate(msg)
    assert (msg["pts_ns"], msg["width"], msg["height"], msg["inferred"]) == (None, None, None, None)


def _broken(kind: str) -> Detections:
    d = _dets(rotated=kind == "angle")
    xyxy, conf, labels = d.xyxy.copy(), d.confidence.copy(), d.labels
    cxcywhr = d.cxcywhr
    if kind == "nan-box":
        xyxy[1, 2] = np.nan
    elif kind == "inf-confidence":
        conf[0] = np.inf
    elif kind == "confidence-above-1":
        conf[0] = 1.5
    elif kind == "angle":
        cxcywhr = cxcywhr.copy()
        cxcywhr[0, 4] = np.nan
    elif kind == "label-not-text":
        labels = (3, 4)
    return Detections(xyxy, conf, d.class_id, cxcywhr=cxcywhr, labels=labels, extra=d.extra)


@pytest.mark.parametrize("kind", ["nan-box", "inf-confidence", "confidence-above-1", "angle", "label-not-text"])
def test_values_json_or_the_schema_cannot_hold_raise_metadata_error(kind):
    with pytest.raises(MetadataError):
        MessageBuilder().build(_header(), _broken(kind))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("version"),
        lambda m: m.update(version="2.0"),
        lambda m: m.update(timestamp="2025-11-25 10:11:12"),
        lambda m: m["objects"][0].pop("track_id"),
        lambda m: m["objects"][0]["bbox"].update(width=-1),
        lambda m: m["objects"][0].update(confidence=1.2),
        lambda m: m.update(message_type="object"),  # an object message holds exactly one object
    ],
)
def test_the_schema_rejects_messages_that_break_the_contract(mutate):
    (msg,) = _build(_dets())
    mutate(msg)
    assert not VALIDATOR.is_valid(msg)


_coord = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.lists(st.tuples(_coord, _coord, st.floats(0, 5e3, width=32), st.floats(0, 5e3, width=32)), max_size=8),
    seed=st.integers(0, 2**16),
    per_object=st.booleans(),
)
def test_any_finite_detections_make_schema_valid_messages(boxes, seed, per_object):
    rng = np.random.default_rng(seed)
    n = len(boxes)
    ltwh = np.array(boxes, np.float32).reshape(n, 4)
    xyxy = np.concatenate([ltwh[:, :2], ltwh[:, :2] + ltwh[:, 2:]], axis=1)
    extra = {"unique_id": rng.integers(-1, 99, n)}
    dets = Detections(xyxy, rng.random(n).astype(np.float32), rng.integers(-1, 5, n).astype(np.int32), extra=extra,
                      tracker_id=rng.integers(0, 2**63, n, dtype=np.uint64))  # fmt: skip
    texts = MessageBuilder().build(_header(), dets, per_object=per_object)
    assert len(texts) == (n if per_object else 1)
    for text in texts:
        VALIDATOR.validate(json.loads(text))


def test_schema_1_1_carries_keypoints_and_masks_where_the_model_gives_them():
    from pyinfer.jsonl import rle_mask

    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 1:3, 1:3] = 255
    masks[1, 0] = 130
    kpts = np.array([[[1.23456, 2.5, 0.9]], [[3.0, 4.0, 0.1]]], np.float32)
    base = _dets()
    dets = Detections(base.xyxy[:2], base.confidence[:2], base.class_id[:2], labels=base.labels, masks=masks,
                      keypoints=kpts)  # fmt: skip
    (msg,) = _build(dets)
    objs = msg["objects"]
    assert objs[0]["keypoints"] == [[1.235, 2.5, 0.9]] and objs[1]["keypoints"] == [[3.0, 4.0, 0.1]]
    for obj, mask in zip(objs, masks):
        np.testing.assert_array_equal(rle_mask(obj["mask"]), mask >= 128)
    (plain,) = _build(_dets())
    assert all("keypoints" not in o and "mask" not in o for o in plain["objects"])  # only where the model has them
    bad = json.loads(json.dumps(msg))
    bad["objects"][0]["keypoints"] = [[1, 2]]
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(bad)
    nan = Detections(dets.xyxy, dets.confidence, dets.class_id, keypoints=np.full((2, 1, 3), np.nan, np.float32))
    with pytest.raises(MetadataError, match="keypoint"):
        _build(nan)
