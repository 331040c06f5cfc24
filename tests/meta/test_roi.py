"""Detections written as GstVideoRegionOfInterestMeta on a bare buffer and read back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyinfer._gi import GLib, Gst, GstVideo
from pyinfer.detections import Detections
from pyinfer.elements._base import writable
from pyinfer.meta.roi import (
    PARAM_NAME,
    UNTRACKED_ID,
    FrameInfo,
    read_classifications,
    read_detections,
    read_frame_info,
    roi_metas,
    set_track_id,
    write_detections,
    write_frame_info,
)

ROI_API = GstVideo.VideoRegionOfInterestMeta.get_info().api


def _buffer() -> Gst.Buffer:
    return Gst.Buffer.new_allocate(None, 16, None)


def _write(detections: Detections, unique_id: int = 0) -> Gst.Buffer:
    buf = _buffer()
    with writable(buf):
        write_detections(buf, detections, unique_id=unique_id)
    return buf


def _metas(buf: Gst.Buffer) -> list:
    metas = []
    while (meta := GstVideo.buffer_get_video_region_of_interest_meta_id(buf, len(metas))) is not None:
        metas.append(meta)
    return metas


def _random_detections(rng: np.random.Generator, n: int, w: int, h: int, labels: tuple[str, ...]) -> Detections:
    lt = rng.uniform(0, [w, h], (n, 2))
    rb = np.minimum(lt + rng.uniform(0.001, 400, (n, 2)), [w, h])
    xyxy = np.concatenate([lt, rb], axis=1).astype(np.float32)
    conf = np.sort(rng.random(n).astype(np.float32))[::-1].copy()
    cls = rng.integers(0, max(len(labels), 1), n).astype(np.int32)
    return Detections(xyxy, conf, cls, labels=labels)


# (detections, frame w, h, labels, unique id, seed)
ROUND_TRIP = [
    (1, 640, 480, ("person",), 0, 0),
    (7, 641, 479, ("a", "b", "c"), 3, 1),
    (200, 1920, 1080, tuple(f"class{i}" for i in range(80)), 12345, 2),
    (50, 300, 900, ("x", "y"), -1, 3),
]


@pytest.mark.parametrize(("n", "w", "h", "labels", "uid", "seed"), ROUND_TRIP)
def test_round_trip_keeps_boxes_scores_classes_labels_and_unique_id_exactly(n, w, h, labels, uid, seed):
    dets = _random_detections(np.random.default_rng(seed), n, w, h, labels)
    back = read_detections(_write(dets, unique_id=uid), labels)
    assert len(back) == n
    np.testing.assert_array_equal(back.xyxy, dets.xyxy)
    np.testing.assert_array_equal(back.confidence, dets.confidence)
    np.testing.assert_array_equal(back.class_id, dets.class_id)
    assert back.xyxy.dtype == np.float32
    assert back.class_id.dtype == np.int32
    assert [back.label(i) for i in range(n)] == [dets.label(i) for i in range(n)]
    assert back.extra["unique_id"].tolist() == [uid] * n
    assert back.extra["roi_id"].tolist() == list(range(n))


@pytest.mark.parametrize(("n", "w", "h", "labels", "uid", "seed"), ROUND_TRIP)
def test_integer_roi_covers_the_float_box_and_ids_count_up(n, w, h, labels, uid, seed):
    dets = _random_detections(np.random.default_rng(seed), n, w, h, labels)
    buf = _write(dets)
    metas = _metas(buf)
    assert buf.get_n_meta(ROI_API) == n
    assert [m.id for m in metas] == list(range(n))
    for i, m in enumerate(metas):
        left, top, right, bottom = dets.xyxy[i].astype(np.float64)
        assert (m.x, m.y) == (math.floor(left), math.floor(top)), i
        assert (m.x + m.w, m.y + m.h) == (math.ceil(right), math.ceil(bottom)), i
        assert m.x + m.w <= w and m.y + m.h <= h
        assert GLib.quark_to_string(m.roi_type) == dets.label(i)
        s = m.get_param(PARAM_NAME)
        assert s.get_value("label") == dets.label(i)
        assert s.get_value("class-id") == int(dets.class_id[i])


def test_integer_boxes_are_written_as_they_are():
    dets = Detections(
        np.array([[0, 0, 10, 20], [5, 6, 7, 8]], np.float32), np.array([0.5, 0.25], np.float32), np.zeros(2, np.int32)
    )
    buf = _write(dets)  # held: the metas live in the buffer
    assert [(m.x, m.y, m.w, m.h) for m in _metas(buf)] == [(0, 0, 10, 20), (5, 6, 2, 2)]


def test_empty_detections_write_nothing_and_read_back_empty():
    buf = _write(Detections.empty(labels=("a",)))
    assert buf.get_n_meta(ROI_API) == 0
    back = read_detections(buf, ("a",))
    assert len(back) == 0
    assert back.xyxy.shape == (0, 4)
    assert back.labels == ("a",)
    assert len(read_detections(_buffer())) == 0


def test_a_foreign_roi_without_param_reads_as_confidence_one_class_minus_one():
    buf = _buffer()
    with writable(buf):
        GstVideo.buffer_add_video_region_of_interest_meta(buf, "face", 10, 20, 30, 40)
    back = read_detections(buf)
    assert len(back) == 1
    np.testing.assert_array_equal(back.xyxy, [[10, 20, 40, 60]])
    assert back.confidence.tolist() == [1.0]
    assert back.class_id.tolist() == [-1]
    assert back.extra["unique_id"].tolist() == [-1]
    assert back.labels == ()  # no class id to hang "face" on
    assert back.label(0) == "-1"


def test_labels_are_gathered_from_the_metas_with_ids_for_gaps():
    dets = Detections(
        np.array([[0, 0, 1, 1], [2, 2, 3, 3]], np.float32),
        np.array([0.9, 0.8], np.float32),
        np.array([2, 0], np.int32),
        labels=("zero", "one", "two"),
    )
    back = read_detections(_write(dets))
    assert back.labels == ("zero", "1", "two")


@pytest.mark.parametrize(
    "label",
    [
        "x" * 127,
        "é" * 63 + "x",  # 127 bytes of UTF-8
        "Straßenbahn",
        "自転車",
        "🚲 bike",
        'with space, comma; and "quotes"',
    ],
)
def test_long_and_unicode_labels_round_trip(label):
    assert len(label.encode()) <= 127
    dets = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.5], np.float32), np.array([0], np.int32),
                      labels=(label,))  # fmt: skip
    buf = _write(dets)
    assert GLib.quark_to_string(_metas(buf)[0].roi_type) == label
    back = read_detections(buf)
    assert back.labels == (label,)
    assert back.label(0) == label


def test_class_without_label_is_written_as_its_id():
    dets = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.5], np.float32), np.array([5], np.int32),
                      labels=("a",))  # fmt: skip
    back = read_detections(_write(dets))
    assert back.label(0) == "5"
    assert back.class_id.tolist() == [5]


def test_rotated_boxes_round_trip_with_their_enclosing_box():
    rot = np.array([[100.0, 80.0, 60.0, 20.0, math.radians(30)], [300.0, 200.0, 10.0, 40.0, -0.5]], np.float32)
    xyxy = np.array([[70, 60, 130, 100], [280, 180, 320, 220]], np.float32)
    dets = Detections(xyxy, np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32), cxcywhr=rot)
    back = read_detections(_write(dets))
    np.testing.assert_array_equal(back.xyxy, xyxy)
    np.testing.assert_allclose(back.cxcywhr, rot, rtol=1e-6)


def test_axis_aligned_detections_read_back_without_rotation_or_track_ids():
    dets = _random_detections(np.random.default_rng(5), 3, 100, 100, ("a",))
    back = read_detections(_write(dets))
    assert back.cxcywhr is None
    assert back.tracker_id is None


def test_track_ids_set_on_existing_metas_are_read_back_as_uint64():
    buf = _write(_random_detections(np.random.default_rng(6), 3, 100, 100, ("a",)))
    metas = roi_metas(buf)
    set_track_id(metas[0], 2**40 + 7, age=3)
    set_track_id(metas[2], 5)
    back = read_detections(buf)
    assert back.tracker_id.dtype == np.uint64
    assert back.tracker_id.tolist() == [2**40 + 7, UNTRACKED_ID, 5]
    assert metas[0].get_param("tracking").get_value("age") == 3


@pytest.mark.parametrize("inferred", [True, False])
def test_frame_record_is_found_by_its_id_and_does_not_count_as_a_detection(inferred):
    buf = _write(_random_detections(np.random.default_rng(7), 2, 100, 100, ("a",)))
    with writable(buf):
        write_frame_info(buf, inferred=inferred, unique_id=9, model_id=2)
    assert read_frame_info(buf) == FrameInfo(inferred, 9, 2)
    assert len(read_detections(buf)) == 2
    assert read_frame_info(_buffer()) is None


def test_a_classifiers_top_k_rides_on_each_detection_and_reads_back():
    dets = Detections(
        np.array([[0, 0, 64, 48], [5, 5, 10, 10]], np.float32), np.array([0.8, 0.6], np.float32),
        np.array([2, 0], np.int32), labels=("cat", "dog", "owl"),
        extra={"topk_class_id": np.array([[2, 0, 1], [0, 2, 1]], np.int32),
               "topk_confidence": np.array([[0.8, 0.15, 0.05], [0.6, 0.3, 0.1]], np.float32)},
    )  # fmt: skip
    buf = _write(dets)
    (first, second) = read_classifications(buf)
    assert [c for c, _, _ in first] == [2, 0, 1] and [lab for _, lab, _ in second] == ["cat", "owl", "dog"]
    assert first[1][2] == pytest.approx(0.15, abs=1e-6)
    back = read_detections(buf)
    np.testing.assert_array_equal(back.class_id, dets.class_id)
    assert read_classifications(_write(_random_detections(np.random.default_rng(8), 2, 50, 50, ("a",)))) == [[], []]


def test_masks_and_keypoints_ride_on_their_roi_metas_and_come_back_by_roi_id():
    from pyinfer.meta import read_detections
    from pyinfer.meta.roi import read_keypoints, read_masks, with_shapes, write_detections

    rng = np.random.default_rng(0)
    masks = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    kpts = rng.uniform(0, 60, (3, 5, 3)).astype(np.float32)
    dets = Detections(
        np.array([[1, 2, 30, 40], [5, 5, 9, 9], [0, 0, 64, 48]], np.float32), np.array([0.9, 0.8, 0.7], np.float32),
        np.array([0, 1, 2], np.int32), masks=masks, keypoints=kpts,
    )  # fmt: skip
    buf = _buffer()
    write_detections(buf, dets)
    assert [m.tolist() for m in read_masks(buf)] == [m.tolist() for m in masks]  # type: ignore[union-attr]
    np.testing.assert_array_equal(np.stack(read_keypoints(buf)), kpts)  # type: ignore[arg-type]
    back = with_shapes(buf, read_detections(buf))
    order = back.extra["roi_id"]
    np.testing.assert_array_equal(back.masks, masks[order])
    np.testing.assert_array_equal(back.keypoints, kpts[order])
    plain = _buffer()
    write_detections(plain, Detections(dets.xyxy, dets.confidence, dets.class_id))
    assert read_masks(plain) == [None, None, None] and read_keypoints(plain) == [None, None, None]
    got = with_shapes(plain, read_detections(plain))
    assert got.masks is None and got.keypoints is None
