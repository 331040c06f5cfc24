"""The native helper of pyinfer.meta.roi gives exactly what the ctypes path gives, and falls back cleanly."""

from __future__ import annotations

import importlib.machinery

import numpy as np
import pytest

from meta.test_roi_fast import _detections, _outcome, _same_detections, _scene, dump
from pyinfer._gi import Gst
from pyinfer.detections import Detections
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
    assert _roi_native.LIB_PATH.exists(), f"{_roi_native.LIB_PATH} not built (make setup / pip install builds it)"
    assert _roi_native.LIB_PATH.name[len("roi_native") :] in importlib.machinery.EXTENSION_SUFFIXES
    assert _roi_native.load() is not None, "the native helper did not load or failed its ABI check (see the log)"
    assert NATIVE is not None, "the native helper loaded, but the ctypes path it works with did not"


def test_the_helper_answers_the_abi_python_expects():
    # The ROI meta's layout as GStreamer's headers give it, against what _roi_c reads from memory.
    assert [NATIVE.abi(k) for k in range(len(_roi_native.ABI) + 1)] == [*_roi_native.ABI, -1]
    assert _roi_native.ABI[1:] == (8, 16, 20, 48, 56)


def test_a_helper_with_another_abi_is_kept_out_and_logged(monkeypatch, caplog):
    monkeypatch.setattr(_roi_native, "_STATE", [])
    monkeypatch.setattr(_roi_native, "ABI", (2, *_roi_native.ABI[1:]))
    assert _roi_native.load() is None
    assert "not used (ctypes path instead)" in caplog.text
    assert f"ABI answers [1, {', '.join(map(str, _roi_native.ABI[1:]))}], expected [2, " in caplog.text
    monkeypatch.setattr(roi, "_NATIVE", [])
    assert roi._native() is None
    buf = Gst.Buffer.new_allocate(None, 16, None)
    with writable(buf):
        roi.write_detections(buf, _detections(np.random.default_rng(3), 5, True))
    assert len(roi.read_detections(buf)) == 5  # through the other paths


@pytest.mark.parametrize("rotated", [False, True], ids=["axis", "rotated"])
def test_native_reads_and_writes_pyinfer_metas_itself_and_as_the_other_paths_do(rotated, no_native):
    """pyinfer's own metas (what the library once self-tested when it loaded): the native paths take them (no
    fallback), and read and write exactly what the ctypes paths do: labels beyond ASCII, the frame record, track
    ids at both ends of uint64, predicted or not."""
    labels = ("a", "bé")
    xyxy = np.array([[1.5, 2.25, 30.0, 40.5], [100.0, 50.0, 120.0, 90.0], [0.0, 0.0, 5.0, 5.0]], np.float32)
    cxcywhr = np.array([[15, 20, 10, 8, 0.3], [110, 70, 5, 9, -1.2], [2.5, 2.5, 2, 2, 0]], np.float32)
    dets = Detections(xyxy, np.array([0.9, 0.5, 0.25], np.float32), np.array([1, 0, 1], np.int32),
                      cxcywhr=cxcywhr if rotated else None, labels=labels)  # fmt: skip
    bufs = []
    for use_native in (True, False):
        buf = Gst.Buffer.new_allocate(None, 16, None)
        with writable(buf):
            metas = roi.write_detections(buf, dets, unique_id=4)
            roi.write_frame_info(buf, inferred=True, unique_id=4)
            roi.set_track_id(metas[0], 2**64 - 2, predicted=True)
            if use_native:
                read = roi._checked_native(NATIVE, buf, True)
                assert read is not None, "the native reader declined pyinfer's own metas"
                ptrs = [read.metas.pointer(i) for i in (1, 2)]
                NATIVE.set_tracks(np.array(ptrs, np.uint64), np.array([2**63 + 5, 7], np.uint64), False)
            else:
                with no_native:
                    read = roi.read_detections_checked(buf, tracking=True)
                    roi.set_track_ids(read.metas, [1, 2], [2**63 + 5, 7], predicted=False)
            assert read.problems == []
        bufs.append((buf, read))
    (nbuf, nread), (rbuf, rread) = bufs
    _same_detections(nread.detections, rread.detections)
    assert {hash(m) for m in nread.metas}.isdisjoint(hash(m) for m in rread.metas)  # two buffers, two sets of metas
    for tracking in (True, False):
        a = roi._checked_native(NATIVE, nbuf, tracking)
        assert a is not None
        with no_native:
            b = roi.read_detections_checked(nbuf, tracking=tracking)
        _same_detections(a.detections, b.detections)
        assert a.problems == b.problems
        assert [hash(m) for m in a.metas] == [hash(m) for m in b.metas]
    got = roi._read_native(NATIVE, nbuf, ())
    assert got is not None
    with no_native:
        _same_detections(got, roi.read_detections(nbuf))
        _same_detections(got, roi.read_detections(rbuf))
    assert got.tracker_id.tolist() == [2**64 - 2, 2**63 + 5, 7]
    assert got.labels == labels and (got.cxcywhr is not None) == rotated
    assert dump(nbuf, [0, 1, 2, roi.FRAME_ID]) == dump(rbuf, [0, 1, 2, roi.FRAME_ID])  # params, serialized


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
