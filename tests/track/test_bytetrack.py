"""ByteTracker on synthetic motion: stable ids, two-stage association, ages, interval prediction, rotation.

Every test runs on both backends: the native core and the NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyinfer.detections import Detections
from pyinfer.errors import ConfigError
from pyinfer.track import UNTRACKED_ID, TrackerConfig
from pyinfer.track import ByteTracker as _make_tracker


@pytest.fixture(autouse=True, params=["native", "numpy"])
def backend(request, monkeypatch):
    """Runs the test with ``ByteTracker`` bound to one backend."""
    monkeypatch.setitem(globals(), "ByteTracker", lambda config=None: _make_tracker(config, backend=request.param))
    return request.param


ByteTracker = _make_tracker  # rebound per test by the fixture


def _dets(boxes, conf=None, cls=None, rotated=None) -> Detections:
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(xyxy)
    conf = np.full(n, 0.9, np.float32) if conf is None else np.asarray(conf, np.float32)
    cls = np.zeros(n, np.int32) if cls is None else np.asarray(cls, np.int32)
    cx = None if rotated is None else np.asarray(rotated, np.float32).reshape(-1, 5)
    return Detections(xyxy, conf, cls, cxcywhr=cx)


def _box(cx, cy, w=20.0, h=20.0):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _rot(cx, cy, w, h, a):
    ex = 0.5 * (w * abs(math.cos(a)) + h * abs(math.sin(a)))
    ey = 0.5 * (w * abs(math.sin(a)) + h * abs(math.cos(a)))
    return [cx - ex, cy - ey, cx + ex, cy + ey], [cx, cy, w, h, a]


def test_first_frame_confirms_at_once_and_later_tracks_after_min_hits():
    tracker = ByteTracker(TrackerConfig(min_hits=3))
    ids = tracker.update(_dets([_box(50, 50), _box(150, 50)]))
    assert ids.tolist() == [1, 2]
    seen = []
    for k in range(4):
        ids = tracker.update(_dets([_box(50 + k, 50), _box(150 + k, 50), _box(300, 300 + k)]))
        seen.append(ids.tolist())
    assert seen[0][2] == seen[1][2] == int(UNTRACKED_ID)  # tentative for min_hits - 1 frames
    assert seen[2][2] == seen[3][2] == 3
    assert all(s[:2] == [1, 2] for s in seen)


def test_crossing_objects_keep_their_ids():
    tracker = ByteTracker()
    history = {0: set(), 1: set()}
    for k in range(60):  # two objects crossing at constant speed; their boxes overlap around k = 30
        a, b = _box(40 + 4 * k, 100, 30, 30), _box(280 - 4 * k, 108, 30, 30)
        ids = tracker.update(_dets([a, b]))
        history[0].add(int(ids[0]))
        history[1].add(int(ids[1]))
    assert history == {0: {1}, 1: {2}}


def test_low_score_detections_continue_tracks_but_never_start_them():
    tracker = ByteTracker(TrackerConfig(high_threshold=0.5, low_threshold=0.1))
    tracker.update(_dets([_box(50, 50)], conf=[0.9]))
    ids = tracker.update(_dets([_box(52, 50), _box(200, 200)], conf=[0.3, 0.3]))
    assert ids.tolist() == [1, int(UNTRACKED_ID)]
    for _ in range(3):
        ids = tracker.update(_dets([_box(200, 200)], conf=[0.3]))
        assert ids.tolist() == [int(UNTRACKED_ID)]
    below = tracker.update(_dets([_box(54, 50)], conf=[0.05]))  # under low-threshold: ignored
    assert below.tolist() == [int(UNTRACKED_ID)]


def test_class_aware_matching_refuses_a_detection_of_another_class():
    for aware, expected in ((False, 1), (True, int(UNTRACKED_ID))):
        tracker = ByteTracker(TrackerConfig(class_aware=aware))
        tracker.update(_dets([_box(50, 50)], cls=[0]))
        ids = tracker.update(_dets([_box(51, 50)], cls=[1]))
        assert ids.tolist() == [expected], aware


@pytest.mark.parametrize(("gap", "same_id"), [(10, True), (25, False)])
def test_a_track_survives_a_gap_up_to_max_age(gap, same_id):
    tracker = ByteTracker(TrackerConfig(max_age=20))
    for k in range(5):
        tracker.update(_dets([_box(100 + 2 * k, 100)]))
    for _ in range(gap):
        tracker.update(_dets([]))
    x = 100 + 2 * (5 + gap - 1)  # where the object moved meanwhile
    ids = [int(tracker.update(_dets([_box(x + 2 * k, 100)]))[0]) for k in range(3)]
    assert (ids[-1] == 1) is same_id
    assert len(tracker) == 1


def test_predict_moves_tracks_matched_at_the_last_inference_and_counts_frames():
    tracker = ByteTracker()
    for k in range(10):
        tracker.update(_dets([_box(100 + 5 * k, 100), _box(300, 300)]))
    tracker.update(_dets([_box(150, 100)]))  # the second object is missed now: lost, not predicted
    first = tracker.predict()
    second = tracker.predict()
    assert first.tracker_id.tolist() == [1] == second.tracker_id.tolist()
    assert second.extra["frames_since_update"].tolist() == [2]
    cx = (second.xyxy[0, 0] + second.xyxy[0, 2]) / 2
    assert cx == pytest.approx(160, abs=1.5)  # 150 + 2 frames * 5 px
    assert second.cxcywhr is None
    ids = tracker.update(_dets([_box(165, 100), _box(300, 300)]))
    assert ids.tolist() == [1, 2]  # both found again after the skipped frames


def test_rotated_objects_keep_ids_and_the_representation_flips_do_not_disturb_the_filter():
    tracker = ByteTracker()
    for k in range(40):
        angle = 0.05 * k
        objs = [_rot(100 + 2 * k, 100, 60, 16, angle), _rot(100 + 2 * k, 100, 60, 16, -angle)]
        if k % 2:  # the same rectangles written as (h, w, angle + pi/2) and (w, h, angle - pi)
            cx, cy, w, h, a = objs[0][1]
            objs[0] = (objs[0][0], [cx, cy, h, w, a + math.pi / 2])
            objs[1] = (objs[1][0], [*objs[1][1][:4], objs[1][1][4] - math.pi])
        ids = tracker.update(_dets([o[0] for o in objs], rotated=[o[1] for o in objs]))
        assert ids.tolist() == [1, 2], k
    state = tracker.tracks()
    assert state.cxcywhr is not None
    got = state.cxcywhr[np.argsort(state.tracker_id)]
    np.testing.assert_allclose(got[:, 2:4], [[60, 16], [60, 16]], atol=1.0)
    assert (np.abs(got[:, 4]) <= math.pi / 2).all()  # reported in [-pi/2, pi/2): a half turn is the same box
    error = (got[:, 4] - np.array([0.05 * 39, -0.05 * 39]) + math.pi / 2) % math.pi - math.pi / 2
    np.testing.assert_allclose(error, 0.0, atol=0.05)


def test_rotated_iou_tells_crossing_thin_boxes_apart_by_their_angle():
    # Two thin sticks crossing in an X at the same centre: their enclosing boxes are identical.
    tracker = ByteTracker(TrackerConfig(iou_mode="rotated"))
    first = [_rot(100, 100, 80, 6, math.pi / 4), _rot(100, 100, 80, 6, -math.pi / 4)]
    tracker.update(_dets([o[0] for o in first], rotated=[o[1] for o in first]))
    swapped = first[::-1]  # reported in the other order: only the angle tells them apart
    ids = tracker.update(_dets([o[0] for o in swapped], rotated=[o[1] for o in swapped]))
    assert ids.tolist() == [2, 1]


def test_reset_forgets_tracks_and_restarts_ids():
    tracker = ByteTracker()
    tracker.update(_dets([_box(10, 10), _box(100, 100)]))
    tracker.reset()
    assert len(tracker) == 0
    assert tracker.update(_dets([_box(300, 300)])).tolist() == [1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"high_threshold": 1.5}, "high_threshold must be in"),
        ({"low_threshold": 0.7, "high_threshold": 0.5}, "must not exceed"),
        ({"min_hits": 0}, "min_hits"),
        ({"iou_mode": "diagonal"}, "iou_mode must be one of"),
    ],
)
def test_bad_settings_raise_config_errors_naming_the_setting(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrackerConfig(**kwargs)


def test_each_run_uses_the_backend_it_names(backend):
    assert ByteTracker().backend == backend
