"""The native tracker core against the NumPy reference: the same ids, and the same state to the last bit."""

from __future__ import annotations

import importlib.machinery
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinfer.detections import Detections
from pyinfer.errors import ConfigError
from pyinfer.ops.rotated import enclosing_xyxy, rotated_iou
from pyinfer.track import ByteTracker, NumpyByteTracker, TrackerConfig, _native, bytetrack, native_available

LIB = _native.load()


def test_native_core_is_built_loaded_and_chosen_by_default():
    assert _native.LIB_PATH.exists(), f"{_native.LIB_PATH} not built (make setup / pip install builds it)"
    assert _native.LIB_PATH.name[len("track_native") :] in importlib.machinery.EXTENSION_SUFFIXES
    assert LIB is not None, "the native tracker failed to load or its ABI check (see the log)"
    assert native_available()
    assert ByteTracker().backend == "native"
    assert ByteTracker(backend="numpy").backend == "numpy"


def _scene(rotated: bool, seed: int) -> list[Detections]:
    """Twelve frames of 24 objects moving and turning, with misses, weak scores, 3 classes and newcomers."""
    rng = np.random.default_rng(seed)
    n = 24
    size = rng.uniform(10, 50, (n, 2))
    start = rng.uniform(60, 500, (n, 2))
    vel = rng.uniform(-6, 6, (n, 2))
    angle0 = rng.uniform(-1.5, 1.5, n) if rotated else np.zeros(n)
    cls = rng.integers(0, 3, n).astype(np.int32)
    frames = []
    for k in range(12):
        visible = (rng.uniform(size=n) > 0.15) & (np.arange(n) < 16 + k)
        c = np.column_stack([start + vel * k + rng.normal(0, 1, (n, 2)), size, angle0 + 0.05 * k])[visible]
        frames.append(
            Detections(
                enclosing_xyxy(c).astype(np.float32), rng.uniform(0.05, 1.0, len(c)).astype(np.float32), cls[visible],
                cxcywhr=c.astype(np.float32) if rotated else None,
            )
        )  # fmt: skip
    return frames


def _state(tracker: NumpyByteTracker) -> dict[str, np.ndarray]:
    names = ("mean", "cov", "id", "hits", "missed", "since", "class", "score", "rotated")
    return {n: getattr(tracker, "_" + n) for n in names}


def _assert_same_state(ref: NumpyByteTracker, nat) -> None:
    got = nat.state()
    for name, want in _state(ref).items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)  # bit for bit, floats included
    assert int(got["next_id"][0]) == ref._next_id


def _run_both(frames, cfg: TrackerConfig, *, predict_every: int = 0, configs=None) -> None:
    ref, nat = NumpyByteTracker(cfg), ByteTracker(cfg, backend="native")
    for k, dets in enumerate(frames):
        if configs is not None and k in configs:
            ref.config = nat.config = configs[k]
        np.testing.assert_array_equal(nat.update(dets), ref.update(dets), err_msg=f"frame {k}")
        _assert_same_state(ref, nat)
        if predict_every and k % predict_every == predict_every - 1:
            for _ in range(2):
                p_ref, p_nat = ref.predict(), nat.predict()
                _assert_same_detections(p_nat, p_ref)
                _assert_same_state(ref, nat)
        assert len(nat) == len(ref) and nat.confirmed_count == ref.confirmed_count
    _assert_same_detections(nat.tracks(), ref.tracks())


def _assert_same_detections(got: Detections, want: Detections) -> None:
    np.testing.assert_array_equal(got.tracker_id, want.tracker_id)
    np.testing.assert_array_equal(got.extra["frames_since_update"], want.extra["frames_since_update"])
    np.testing.assert_array_equal(got.class_id, want.class_id)
    np.testing.assert_array_equal(got.confidence, want.confidence)
    np.testing.assert_allclose(got.xyxy, want.xyxy, rtol=0, atol=1e-3)  # enclosing boxes: cos/sin may differ by an ulp
    assert (got.cxcywhr is None) == (want.cxcywhr is None)
    if want.cxcywhr is not None:
        np.testing.assert_array_equal(got.cxcywhr, want.cxcywhr)
    assert got.xyxy.dtype == want.xyxy.dtype == np.float32


CONFIGS = [
    TrackerConfig(),
    TrackerConfig(class_aware=True, min_hits=1),
    TrackerConfig(min_hits=3, max_age=2, match_iou_threshold=0.5),
    TrackerConfig(match_iou_threshold=0.0, high_threshold=0.7, low_threshold=0.3),  # IoU 0 pairs may match
    TrackerConfig(iou_mode="rotated", max_age=0),
    TrackerConfig(iou_mode="axis", new_track_threshold=0.9),
]


@pytest.mark.parametrize("rotated", [False, True], ids=["axis", "rotated"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
@pytest.mark.parametrize("seed", [1, 2, 3, 7])  # 7: the scene the library was once self-tested on when loaded
def test_native_matches_the_reference_frame_by_frame(rotated, cfg, seed):
    _run_both(_scene(rotated, seed), cfg, predict_every=3)


def test_config_changes_between_frames_apply_the_same_way():
    frames = _scene(True, 5)
    configs = {3: TrackerConfig(min_hits=1, class_aware=True), 6: TrackerConfig(max_age=0, iou_mode="axis"),
               9: TrackerConfig(min_hits=3, low_threshold=0.5)}  # fmt: skip
    _run_both(frames, TrackerConfig(min_hits=4), configs=configs)


def test_reset_restarts_ids_and_empty_frames_age_tracks():
    frames = _scene(False, 9)
    ref, nat = NumpyByteTracker(), ByteTracker(backend="native")
    for tracker in (ref, nat):
        for d in frames[:4]:
            tracker.update(d)
        tracker.update(Detections.empty())
        tracker.reset()
        assert len(tracker) == 0
    ids = nat.update(frames[4])
    np.testing.assert_array_equal(ids, ref.update(frames[4]))
    tracked = ids[ids != bytetrack.UNTRACKED_ID]
    assert tracked.min() == 1 and tracked.max() <= len(frames[4])  # ids start again at 1
    _assert_same_state(ref, nat)


def test_more_tracks_than_the_initial_capacities():
    rng = np.random.default_rng(0)
    n = 700  # beyond the C arrays' first 64 and the export buffers' 256
    centre = rng.uniform(0, 4000, (n, 2))
    frames = []
    for k in range(4):
        c = np.column_stack([centre + 2 * k, np.full((n, 2), 8.0), np.zeros(n)])
        frames.append(Detections(enclosing_xyxy(c).astype(np.float32), np.full(n, 0.9, np.float32),
                                 np.zeros(n, np.int32)))  # fmt: skip
    _run_both(frames, TrackerConfig(), predict_every=2)
    nat = ByteTracker(backend="native")
    nat.update(frames[0])
    assert len(nat.tracks()) == n


def test_degenerate_boxes_and_equal_scores_tie_the_same_way():
    # Identical boxes (IoU ties broken by position), zero-size boxes, negative sizes, turned by exactly pi/4.
    box = [10.0, 10.0, 30.0, 30.0]
    frames = []
    for k in range(6):
        xyxy = np.array([box, box, [50, 50, 50, 50], [80, 80, 90 + k, 85], box], np.float32)
        rows = [[20, 20, 20, 20, math.pi / 4], [20, 20, 20, 20, -math.pi / 4], [50, 50, 0, 0, 0],
                [85 + k / 2, 82.5, -(10 + k), 5, math.pi / 2], [20, 20, 20, 20, 0]]  # fmt: skip
        cxcywhr = np.array(rows, np.float32)
        conf = np.array([0.8, 0.8, 0.9, 0.3 + 0.1 * k, 0.8], np.float32)
        frames.append(Detections(xyxy, conf, np.array([0, 0, 1, 1, 0], np.int32), cxcywhr=cxcywhr))
    for cfg in (TrackerConfig(min_hits=1), TrackerConfig(match_iou_threshold=0.0, class_aware=True)):
        _run_both(frames, cfg, predict_every=2)
        _run_both([Detections(f.xyxy, f.confidence, f.class_id) for f in frames], cfg, predict_every=2)


def test_thresholds_compare_in_float32_like_numpy():
    # 0.7 is not a float32: NumPy compares float32(0.7) >= 0.7 in float32 (true), not in float64 (false).
    conf = np.array([np.float32(0.7), np.nextafter(np.float32(0.7), np.float32(0))], np.float32)
    dets = Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), conf, np.zeros(2, np.int32))
    cfg = TrackerConfig(high_threshold=0.7, new_track_threshold=0.7)
    _run_both([dets], cfg)
    assert ByteTracker(cfg, backend="native").update(dets).tolist() == [1, int(bytetrack.UNTRACKED_ID)]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    rotated=st.booleans(),
    cfg=st.builds(
        TrackerConfig,
        high_threshold=st.sampled_from([0.3, 0.5, 0.7]),
        low_threshold=st.sampled_from([0.0, 0.1, 0.3]),
        new_track_threshold=st.sampled_from([0.0, 0.6, 0.8]),
        match_iou_threshold=st.sampled_from([0.0, 0.1, 0.2, 0.6]),
        max_age=st.integers(0, 5),
        min_hits=st.integers(1, 3),
        class_aware=st.booleans(),
        iou_mode=st.sampled_from(["auto", "axis", "rotated"]),
    ),
)
def test_native_matches_the_reference_on_random_scenes(seed, rotated, cfg):
    _run_both(_scene(rotated, seed), cfg, predict_every=4)


@pytest.mark.parametrize("min_iou", [0.0, 0.3])
def test_pairwise_ious_match_the_numpy_ones(min_iou):
    rng = np.random.default_rng(4)
    a = np.column_stack([rng.uniform(0, 100, (60, 2)), rng.uniform(0, 40, (60, 2)), rng.uniform(-3, 3, 60)])
    b = np.concatenate(
        [a[:20], a[20:40] + np.array([0.5, 0, 0, 0, 0]), a[40:] * [1, 1, 1, 1, 0]]
    )  # shared edges, near, axis
    out = np.zeros((len(a), len(b)))
    LIB.rotated_iou(len(a), a.ctypes.data, len(b), b.ctypes.data, min_iou, out.ctypes.data)
    want = rotated_iou(a, b, min_iou=min_iou)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)
    assert (out > 0).sum() == (want > 0).sum() > 60
    LIB.enclosing_iou(len(a), a.ctypes.data, len(b), b.ctypes.data, out.ctypes.data)
    want = bytetrack._box_iou(enclosing_xyxy(a), enclosing_xyxy(b))
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)


def test_unknown_backend_and_missing_library_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="backend must be one of"):
        ByteTracker(backend="gpu")
    monkeypatch.setattr(_native, "_STATE", [None])  # as where the library is not built
    with pytest.raises(ConfigError, match="native tracker is not available"):
        ByteTracker(backend="native")
    assert ByteTracker().backend == "numpy"  # auto falls back


def test_the_library_answers_the_abi_python_expects():
    assert [LIB.abi(k) for k in range(len(_native.ABI) + 1)] == [*_native.ABI, -1]


@pytest.mark.parametrize(
    ("abi", "problem"),
    [
        ((2, *_native.ABI[1:]), f"ABI answers {list(_native.ABI)}, expected [2, "),  # another interface version
        (_native.ABI[:-1], f"and more ({_native.ABI[-1]}, ...)"),  # a field Python does not know
    ],
    ids=["version", "layout"],
)
def test_a_library_with_another_abi_is_kept_out_and_logged(monkeypatch, caplog, abi, problem):
    monkeypatch.setattr(_native, "_STATE", [])
    monkeypatch.setattr(_native, "ABI", abi)
    assert _native.load() is None
    assert "native tracker" in caplog.text and "not used (the NumPy tracker runs instead)" in caplog.text
    assert problem in caplog.text
    assert ByteTracker().backend == "numpy"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy warns about the NaN/inf arithmetic; C is silent
def test_non_finite_and_huge_boxes_neither_crash_nor_diverge():
    # pytracker never passes these (the metadata reader skips non-finite boxes), but the library may get them.
    frames = []
    for k in range(6):
        xyxy = np.array([[10 + k, 10, 30 + k, 30], [np.nan, 5, 10, 20], [50, 50, np.inf, 60], [0, 0, 1e30, 1e30]])
        rot = np.array([[20 + k, 20, 20, 20, 0.1], [np.nan, 1, 2, 3, 0], [55, 55, np.inf, 10, 0.2],
                        [1, 1, 1e30, 1e30, np.inf]])  # fmt: skip
        conf, cls = np.full(4, 0.9, np.float32), np.zeros(4, np.int32)
        frames.append(Detections(xyxy.astype(np.float32), conf, cls, cxcywhr=rot.astype(np.float32)))
    for dets in (frames, [Detections(d.xyxy, d.confidence, d.class_id) for d in frames]):
        ref, nat = NumpyByteTracker(), ByteTracker(backend="native")
        for d in dets:
            np.testing.assert_array_equal(nat.update(d), ref.update(d))
            np.testing.assert_array_equal(nat.state()["mean"], ref._mean)  # NaN where NumPy has NaN
        assert nat.update(dets[0])[0] == ref.update(dets[0])[0] == 1  # the finite object keeps its track
