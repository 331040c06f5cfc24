"""Detections: shape validation, selection, derived boxes, labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pyinfer.detections import Detections


def _dets(n: int = 4, *, rotated: bool = False, seed: int = 0) -> Detections:
    rng = np.random.default_rng(seed)
    lt = rng.uniform(0, 100, (n, 2))
    xyxy = np.concatenate([lt, lt + rng.uniform(1, 50, (n, 2))], axis=1).astype(np.float32)
    return Detections(
        xyxy=xyxy,
        confidence=rng.random(n).astype(np.float32),
        class_id=rng.integers(0, 3, n).astype(np.int32),
        cxcywhr=rng.random((n, 5)).astype(np.float32) if rotated else None,
        labels=("a", "b", "c"),
        extra={"tracker_id": np.arange(10, 10 + n), "embedding": rng.random((n, 8)).astype(np.float32)},
    )


def _arrays(n: int = 3) -> dict:
    return {
        "xyxy": np.zeros((n, 4), np.float32),
        "confidence": np.zeros(n, np.float32),
        "class_id": np.zeros(n, np.int32),
    }


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"xyxy": np.zeros((3, 5), np.float32)}, ValueError, r"xyxy: expected shape \('N', 4\), got \(3, 5\)"),
        ({"xyxy": np.zeros(4, np.float32)}, ValueError, r"xyxy: expected shape \('N', 4\), got \(4,\)"),
        ({"xyxy": np.zeros((3, 4, 1), np.float32)}, ValueError, r"xyxy: expected shape \('N', 4\), got \(3, 4, 1\)"),
        ({"xyxy": [[0, 0, 1, 1]] * 3}, TypeError, r"xyxy: expected a numpy array, got list"),
        ({"confidence": np.zeros(2, np.float32)}, ValueError, r"confidence: expected shape \(3,\), got \(2,\)"),
        ({"confidence": np.zeros((3, 1), np.float32)}, ValueError, r"confidence: expected shape \(3,\), got \(3, 1\)"),
        ({"confidence": 0.5}, TypeError, r"confidence: expected a numpy array, got float"),
        ({"class_id": np.zeros(4, np.int32)}, ValueError, r"class_id: expected shape \(3,\), got \(4,\)"),
        ({"cxcywhr": np.zeros((3, 4), np.float32)}, ValueError, r"cxcywhr: expected shape \(3, 5\), got \(3, 4\)"),
        ({"cxcywhr": np.zeros((2, 5), np.float32)}, ValueError, r"cxcywhr: expected shape \(3, 5\), got \(2, 5\)"),
        ({"extra": {"tracker_id": np.zeros(2)}}, ValueError, r"extra\['tracker_id'\]: .* length 3, got \(2,\)"),
        ({"extra": {"tracker_id": np.array(1)}}, ValueError, r"extra\['tracker_id'\]: .* length 3, got \(\)"),
        ({"extra": {"tracker_id": [1, 2, 3]}}, ValueError, r"extra\['tracker_id'\]: .* length 3, got list"),
    ],
)
def test_wrong_shapes_name_the_field_expected_and_actual_shape(change, error, match):
    with pytest.raises(error, match=match):
        Detections(**{**_arrays(3), **change})


def test_valid_arrays_of_length_zero_and_n_are_accepted():
    assert len(Detections(**_arrays(0))) == 0
    assert len(Detections(**_arrays(3), cxcywhr=np.zeros((3, 5), np.float32), extra={"k": np.zeros((3, 2))})) == 3


@pytest.mark.parametrize(
    ("index", "rows"),
    [
        (np.array([True, False, True, False]), [0, 2]),
        (np.zeros(4, bool), []),
        (slice(1, 3), [1, 2]),
        (slice(None, None, -1), [3, 2, 1, 0]),
        (2, [2]),
        (-1, [3]),
        (np.int64(1), [1]),
        ([3, 0, 0], [3, 0, 0]),
        (np.array([1, 3]), [1, 3]),
    ],
)
@pytest.mark.parametrize("rotated", [False, True])
def test_indexing_selects_the_same_rows_of_every_array(index, rows, rotated):
    dets = _dets(4, rotated=rotated)
    sub = dets[index]
    assert isinstance(sub, Detections)
    assert len(sub) == len(rows)
    np.testing.assert_array_equal(sub.xyxy, dets.xyxy[rows].reshape(-1, 4))
    np.testing.assert_array_equal(sub.confidence, dets.confidence[rows])
    np.testing.assert_array_equal(sub.class_id, dets.class_id[rows])
    if rotated:
        np.testing.assert_array_equal(sub.cxcywhr, dets.cxcywhr[rows].reshape(-1, 5))
    else:
        assert sub.cxcywhr is None
    for key, value in dets.extra.items():
        np.testing.assert_array_equal(sub.extra[key], value[rows].reshape(-1, *value.shape[1:]))
    assert sub.labels == dets.labels


def test_an_integer_index_keeps_the_row_dimension():
    sub = _dets(4)[1]
    assert sub.xyxy.shape == (1, 4)
    assert sub.confidence.shape == (1,)
    assert sub.extra["embedding"].shape == (1, 8)


def test_out_of_range_integer_index_raises_index_error():
    with pytest.raises(IndexError):
        _dets(4)[4]


def test_ltwh_is_left_top_width_height_and_leaves_xyxy_alone():
    xyxy = np.array([[10, 20, 30, 60], [0.5, 0.25, 0.75, 1.0]], np.float32)
    dets = Detections(xyxy.copy(), np.ones(2, np.float32), np.zeros(2, np.int32))
    np.testing.assert_array_equal(dets.ltwh, [[10, 20, 20, 40], [0.5, 0.25, 0.25, 0.75]])
    assert dets.ltwh.dtype == np.float32
    np.testing.assert_array_equal(dets.xyxy, xyxy)
    assert Detections.empty().ltwh.shape == (0, 4)


@pytest.mark.parametrize(
    ("labels", "class_id", "expected"),
    [
        (("a", "b", "c"), 1, "b"),
        (("a", "b", "c"), 3, "3"),
        (("a", "b", "c"), -1, "-1"),
        ((), 0, "0"),
        (("",), 0, ""),
    ],
)
def test_label_falls_back_to_the_class_id(labels, class_id, expected):
    dets = Detections(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.array([class_id], np.int32),
                      labels=labels)  # fmt: skip
    assert dets.label(0) == expected


@pytest.mark.parametrize("rotated", [False, True])
def test_empty_has_zero_rows_of_the_right_shapes(rotated):
    dets = Detections.empty(rotated=rotated, labels=("a",))
    assert len(dets) == 0
    assert dets.xyxy.shape == (0, 4)
    assert dets.confidence.shape == dets.class_id.shape == (0,)
    assert dets.xyxy.dtype == dets.confidence.dtype == np.float32
    assert dets.class_id.dtype == np.int32
    assert dets.labels == ("a",)
    assert dets.extra == {}
    if rotated:
        assert dets.cxcywhr.shape == (0, 5)
        assert dets.cxcywhr.dtype == np.float32
    else:
        assert dets.cxcywhr is None


def test_detections_are_frozen():
    dets = _dets(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dets.labels = ("x",)


def test_tracker_id_is_a_typed_field_with_one_sentinel():
    from pyinfer.detections import UNTRACKED_ID

    xyxy = np.zeros((3, 4), np.float32)
    d = Detections(xyxy, np.ones(3, np.float32), np.zeros(3, np.int32),
                   tracker_id=np.array([5, UNTRACKED_ID, 7], np.uint64))  # fmt: skip
    assert d.tracked().tolist() == [True, False, True]
    assert d[[2, 1]].tracker_id.tolist() == [7, UNTRACKED_ID]
    assert Detections(xyxy, np.ones(3, np.float32), np.zeros(3, np.int32)).tracked().tolist() == [False] * 3
    with pytest.raises(TypeError, match="uint64"):
        Detections(xyxy, np.ones(3, np.float32), np.zeros(3, np.int32), tracker_id=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="tracker_id"):
        Detections(xyxy, np.ones(3, np.float32), np.zeros(3, np.int32), tracker_id=np.array([1], np.uint64))
    with pytest.raises(ValueError, match="tracker_id field"):
        Detections(xyxy, np.ones(3, np.float32), np.zeros(3, np.int32), extra={"track_id": np.zeros(3, np.uint64)})
