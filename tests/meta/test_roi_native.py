"""The native helper of pyinfer.meta.roi gives exactly what the ctypes path gives, and falls back cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from meta.test_roi_fast import _detections, _outcome, _same_detections, _scene, dump
from pyinfer._gi import Gst
from pyinfer.elements._base import writable
from pyinfer.meta import _roi_c, _roi_native, roi

NATIVE = roi._native() if _roi_c.load() is not None else None


@pytest.fixture
def no_native(monkeypatch):
    """Run the block on the ctypes/PyGObject paths only."""

    class NoNative:
        def __enter__(self):
            monkeypatch.setattr(roi, "_native", lambda: None)

        def __exit__(self, *exc):
            monkeypatch.setattr(roi, "_native", _NATIVE_FN)

    return NoNative()


_NATIVE_FN = roi._native


def test_native_helper_is_built_and_loaded():
    assert _roi_native.LIB_PATH.exists(), f"{_roi_native.LIB_PATH} not built (make setup builds it)"
    assert _roi_native.load() is not None
    assert NATIVE is not None, "the native helper failed its self-test"


@pytest.mark.parametrize("seed", range(60))
def test_native_reads_match_the_other_paths(seed, no_native):
    buf, ids = _scene(seed)
    before = dump(buf, ids)
    got, got_err = _outcome(roi.read_detections, buf)
    with no_native:
        ref, ref_err = _outcome(roi.read_detections, buf)
    assert got_err == ref_err
    if ref is not None:
        _same_detections(got, ref)
    for tracking in (True, False):
        a = roi.read_detections_checked(buf, tracking=tracking)
        with no_native:
            b = roi.read_detections_checked(buf, tracking=tracking)
        _same_detections(a.detections, b.detections)
        assert a.problems == b.problems
        assert [hash(m) for m in a.metas] == [hash(m) for m in b.metas]
        assert [m.id for m in a.metas] == [m.id for m in b.metas]
    assert dump(buf, ids) == before


def test_native_is_used_on_pyinfer_metas_and_declines_foreign_ones():
    rng = np.random.default_rng(1)
    buf = Gst.Buffer.new_allocate(None, 16, None)
    with writable(buf):
        roi.write_detections(buf, _detections(rng, 300, True), unique_id=2)  # beyond the initial capacity
        roi.write_frame_info(buf, inferred=True)
    scratch = NATIVE.acquire()
    assert NATIVE.read(hash(buf), scratch) == 300
    assert roi._checked_native(NATIVE, buf, True) is not None
    with writable(buf):
        Gst_meta = roi.GstVideo.buffer_add_video_region_of_interest_meta(buf, "face", 1, 2, 3, 4)
        Gst_meta.id = 300  # a foreign meta without a detection param
    assert NATIVE.read(hash(buf), scratch) == -1
    NATIVE.release(scratch)
    assert roi._checked_native(NATIVE, buf, True) is None
    assert len(roi.read_detections_checked(buf).detections) == 301  # read by the other paths


@pytest.mark.parametrize("seed", range(10))
def test_native_set_track_ids_writes_what_the_other_paths_write(seed, no_native):
    rng = np.random.default_rng(50 + seed)
    dets = _detections(rng, int(rng.integers(1, 40)), bool(seed % 2))
    n = len(dets)
    idx = sorted(rng.choice(n, int(rng.integers(0, n + 1)), replace=False).tolist())
    tids = rng.integers(0, 2**64, len(idx), dtype=np.uint64).tolist()
    predicted = bool(seed % 3)
    bufs = []
    for use_native in (True, False):
        buf = Gst.Buffer.new_allocate(None, 16, None)
        with writable(buf):
            roi.write_detections(buf, dets)
            if use_native:
                read = roi.read_detections_checked(buf)
                roi.set_track_ids(read.metas, idx, tids, predicted=predicted)
            else:
                with no_native:
                    read = roi.read_detections_checked(buf)
                    roi.set_track_ids(read.metas, idx, tids, predicted=predicted)
        bufs.append(buf)
    assert dump(bufs[0], range(n)) == dump(bufs[1], range(n))


def test_forced_fallback_gives_the_same_results(no_native):
    """With the native helper disabled (as where it is not built), reads and writes go through the other paths."""
    dets = _detections(np.random.default_rng(7), 25, True)
    results = []
    for disable in (True, False):
        buf = Gst.Buffer.new_allocate(None, 16, None)
        if disable:
            no_native.__enter__()
            assert roi._native() is None
        with writable(buf):
            roi.write_detections(buf, dets)
            read = roi.read_detections_checked(buf)
            roi.set_track_ids(read.metas, range(0, 25, 2), list(range(100, 113)), predicted=False)
        checked = roi.read_detections_checked(buf)
        results.append((dump(buf, range(25)), roi.read_detections(buf), checked.detections, checked.problems))
        if disable:
            no_native.__exit__()
    (dump_a, det_a, chk_a, prob_a), (dump_b, det_b, chk_b, prob_b) = results
    assert dump_a == dump_b
    assert prob_a == prob_b
    _same_detections(det_a, det_b)
    _same_detections(chk_a, chk_b)
    assert det_a.tracker_id[::2].tolist() == list(range(100, 113))
