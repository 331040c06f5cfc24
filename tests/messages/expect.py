"""Checks shared by the message tests: schema validation and field-by-field comparison with metadata."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest

from pyinfer.detections import Detections
from pyinfer.messages import load_schema

VALIDATOR = jsonschema.Draft202012Validator(load_schema())
UNTRACKED = 2**64 - 1


def assert_valid(message: dict) -> None:
    """The message validates against schema-v1.json."""
    VALIDATOR.validate(message)


def assert_matches(message: dict, dets: Detections, *, frame_number: int, pts_ns: int | None, source_id: int,
                   inferred: bool | None, size: tuple[int, int] | None = None) -> None:  # fmt: skip
    """``message`` (a frame message) describes exactly ``dets``, field by field, in order."""
    assert_valid(message)
    assert message["message_type"] == "frame"
    assert (message["frame_number"], message["pts_ns"], message["source_id"]) == (frame_number, pts_ns, source_id)
    assert message["inferred"] is inferred
    if size is not None:
        assert (message["width"], message["height"]) == size
    assert message["object_count"] == len(dets) == len(message["objects"])
    ltwh = dets.ltwh.astype(np.float64)
    for i, obj in enumerate(message["objects"]):
        assert obj["index"] == int(dets.extra["roi_id"][i])
        assert obj["class_id"] == int(dets.class_id[i])
        assert obj["label"] == dets.label(i)
        assert obj["confidence"] == pytest.approx(float(dets.confidence[i]), abs=1e-6)
        box = obj["bbox"]
        assert [box["left"], box["top"], box["width"], box["height"]] == pytest.approx(ltwh[i].tolist(), abs=2e-3)
        unique_id = int(dets.extra["unique_id"][i])
        assert obj["producer_id"] == (unique_id if unique_id >= 0 else None)
        model_id = int(dets.extra["model_id"][i])
        assert obj["model_id"] == (model_id if model_id >= 0 else None)
        track = int(dets.tracker_id[i]) if dets.tracker_id is not None else UNTRACKED
        assert obj["track_id"] == (None if track == UNTRACKED else track)
        if dets.cxcywhr is None:
            assert obj["rotated_bbox"] is None
        else:
            rot = obj["rotated_bbox"]
            got = [rot["cx"], rot["cy"], rot["width"], rot["height"], rot["angle_rad"]]
            assert got == pytest.approx(dets.cxcywhr[i].astype(np.float64).tolist(), abs=2e-3)
