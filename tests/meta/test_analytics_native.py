"""The native GstAnalytics reader (analytics_native.c) against the ctypes path: the same results on the same
buffers, to the last bit: pyinfer's own detections (axis-aligned, rotated, tracked, predicted, a classifier's
top-k), another producer's (GStreamer's API through PyGObject, oriented OD Mtds too), boxes that no longer agree
with pyinfer's exact ones, malformed values for the checked read, frames past the reader's initial capacity, and
reads from two threads at once. Also the native tracking write (set_track_ids) against the ctypes one.

These run in the Debian 13 leg of `make test` (GStreamer 1.26, where make builds the helper); on GStreamer 1.22
there is no GstAnalytics and they are skipped.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from pyinfer._gi import Gst
from pyinfer.detections import UNTRACKED_ID, Detections
from pyinfer.meta import _analytics_native, analytics
from support import analytics_test

GST_VERSION = Gst.version()[:2]
HAS_ANALYTICS = GST_VERSION >= (1, 24)  # below, each test checks the clear refusal instead (support.analytics_test)


def _gst_analytics():
    import gi

    gi.require_version("GstAnalytics", "1.0")
    from gi.repository import GstAnalytics

    return GstAnalytics


@pytest.fixture(scope="module")
def api():
    got = analytics._api()
    assert (got is not None) == HAS_ANALYTICS, "libgstanalytics-1.0 did not load"
    return got


@pytest.fixture(scope="module")
def nat(api):
    if api is None:
        return None
    got = analytics._native(api)
    assert got is not None, f"the native analytics helper is not in use ({_analytics_native.LIB_PATH}; make builds it)"
    return got


def _buffer() -> Gst.Buffer:
    return Gst.Buffer.new_allocate(None, 16, None)


def _detections(rng: np.random.Generator, n: int, rotated: bool, n_classes: int = 5) -> Detections:
    left = rng.uniform(-20, 1200, n)
    top = rng.uniform(-20, 700, n)
    w = rng.uniform(0.5, 300, n)
    h = rng.uniform(0.5, 300, n)
    xyxy = np.stack([left, top, left + w, top + h], axis=1).astype(np.float32)
    cxcywhr = None
    if rotated:
        cxcywhr = np.stack([left + w / 2, top + h / 2, w, h, rng.uniform(-4, 7, n)], axis=1).astype(np.float32)
        cxcywhr[::7, 4] = 0.0  # some upright ones among them
    labels = tuple(f"class-{c}" for c in range(n_classes))
    return Detections(xyxy, rng.uniform(0, 1, n).astype(np.float32), rng.integers(0, n_classes, n).astype(np.int32),
                      cxcywhr=cxcywhr, labels=labels)  # fmt: skip


def _same_detections(a: Detections, b: Detections) -> None:
    for name in ("xyxy", "confidence", "class_id", "cxcywhr", "tracker_id"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert x.tobytes() == y.tobytes(), name  # bit for bit, NaN included
    assert a.labels == b.labels
    assert list(a.extra) == list(b.extra)
    for key in a.extra:
        x, y = a.extra[key], b.extra[key]
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tolist() == y.tolist(), key


def _compare(api, nat, buf: Gst.Buffer, labels: tuple[str, ...] = ()) -> analytics.CheckedDetections | None:
    """Every reader variant through both paths, the same; the native plain read's result."""
    first = None
    for checked in (False, True):
        for tracking in (True, False):
            lab = () if checked else labels
            ref = analytics._read_ctypes(api, buf, lab, checked=checked, tracking=tracking)
            got = analytics._read_native(api, nat, buf, lab, checked=checked, tracking=tracking)
            assert (ref is None) == (got is None)
            if ref is None:
                continue
            _same_detections(ref.detections, got.detections)
            assert ref.metas == got.metas
            assert ref.problems == got.problems
            if first is None:
                first = got
    return first


def _written(seed: int, n: int, *, rotated: bool, unique_id: int = 7, model_id: int = 2,
             first_index: int = 0) -> tuple[Gst.Buffer, list[int]]:  # fmt: skip
    buf = _buffer()
    dets = _detections(np.random.default_rng(seed), n, rotated)
    ids = analytics.write_detections(buf, dets, unique_id=unique_id, model_id=model_id, first_index=first_index)
    analytics.write_frame_info(buf, inferred=True, unique_id=unique_id, model_id=model_id)
    return buf, ids


def test_the_helper_is_used_and_its_build_matches_the_library(api, nat):
    assert nat.oriented == api.oriented == (GST_VERSION >= (1, 26))
    assert analytics._native(api) is nat


def test_a_buffer_without_analytics_reads_as_none(api, nat):
    assert _compare(api, nat, _buffer()) is None
    assert analytics.read_detections(_buffer()) is None


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize("n", [0, 1, 37, 300])  # 300: past the initial capacity of the arrays
def test_pyinfers_detections_read_the_same(api, nat, rotated, n):
    buf, _ = _written(n + rotated, n, rotated=rotated)
    got = _compare(api, nat, buf)
    if n:
        assert got is not None and len(got.detections) == n
        _compare(api, nat, buf, labels=("a", "b"))


def test_two_producers_and_a_classifiers_top_k_read_the_same(api, nat):
    buf, _ = _written(1, 20, rotated=False, unique_id=3)
    dets = _detections(np.random.default_rng(2), 9, True)
    topk = Detections(dets.xyxy, dets.confidence, dets.class_id, cxcywhr=dets.cxcywhr, labels=dets.labels, extra={
        "topk_class_id": np.tile([[2, 0, 1]], (9, 1)), "topk_confidence": np.tile([[0.6, 0.3, 0.1]], (9, 1)),
    })  # fmt: skip
    analytics.write_detections(buf, topk, unique_id=4, model_id=1, first_index=20)
    got = _compare(api, nat, buf)
    assert sorted(set(got.detections.extra["unique_id"].tolist())) == [3, 4]


def test_tracked_and_predicted_detections_read_the_same(api, nat):
    buf, ids = _written(5, 40, rotated=True)
    analytics.set_track_ids(buf, ids[::3], [1000 + i for i in range(len(ids[::3]))], pts=Gst.SECOND)
    dets = _detections(np.random.default_rng(6), 6, False)
    dets = Detections(dets.xyxy, dets.confidence, dets.class_id, labels=dets.labels,
                      tracker_id=np.arange(50, 56, dtype=np.uint64),
                      extra={"frames_since_update": np.arange(6, dtype=np.int64)})  # fmt: skip
    analytics.write_predicted(buf, dets, unique_id=7, model_id=2, pts=Gst.SECOND)
    got = _compare(api, nat, buf)
    d = got.detections
    assert d.tracker_id is not None and int((d.tracker_id != UNTRACKED_ID).sum()) == len(ids[::3]) + 6
    assert int(d.extra["predicted"].sum()) == 6


def test_another_producers_detections_read_the_same(api, nat):
    GstAnalytics = _gst_analytics()
    from gi.repository import GLib

    buf = _buffer()
    rmeta = GstAnalytics.buffer_add_analytics_relation_meta(buf)
    assert rmeta.add_od_mtd(GLib.quark_from_string("dog"), 5, 6, 50, 60, 0.8)[0]
    ok, od2 = rmeta.add_od_mtd(0, 100, 110, 20, 30, 0.4)  # no type: the classification names it
    ok, cls = rmeta.add_one_cls_mtd(0.7, GLib.quark_from_string("cat"))
    assert ok and rmeta.set_relation(GstAnalytics.RelTypes.RELATE_TO, od2.id, cls.id)
    assert rmeta.add_od_mtd(0, 1, 2, 3, 4, 0.5)[0]  # no type, no classification: no label
    ok, od4 = rmeta.add_od_mtd(GLib.quark_from_string(""), 1, 2, 3, 4, 0.5)  # an empty type: the class's
    ok, cls4 = rmeta.add_one_cls_mtd(0.5, GLib.quark_from_string("bird"))
    assert rmeta.set_relation(GstAnalytics.RelTypes.RELATE_TO, od4.id, cls4.id)
    ok, trk = rmeta.add_tracking_mtd(77, 0)
    assert ok and rmeta.set_relation(GstAnalytics.RelTypes.RELATE_TO, od2.id, trk.id)
    if GST_VERSION >= (1, 26):
        for r in (0.0, 0.3, 2.0, 5.5):
            assert rmeta.add_oriented_od_mtd(GLib.quark_from_string("box"), 40, 50, 30, 10, r, 0.6)[0]
    # and pyinfer's detections beside them: a foreign row leaves the labels tuple empty
    dets = _detections(np.random.default_rng(9), 5, True)
    analytics.write_detections(buf, dets, unique_id=1)
    got = _compare(api, nat, buf)
    fl = got.detections.extra["foreign_label"].tolist()
    assert fl[:4] == ["dog", "cat", "", "bird"]
    assert got.detections.tracker_id.tolist()[1] == 77


def _record_address(api, buf: Gst.Buffer, od_id: int) -> int:
    meta = api.get_meta(hash(buf))
    p = api.related_one(meta, od_id, api.det_type)
    return api.mtd_data(meta, p.id)


def test_boxes_that_no_longer_agree_and_malformed_records_read_the_same(api, nat):
    buf, ids = _written(11, 12, rotated=True)
    doubles = analytics.DETECTION_STRUCT.size - 9 * 8  # offset of left
    # fields after the ints: left, top, width, height, rotated cx, cy, width, height, angle
    for k, (field, value) in enumerate([(0, 5.0), (1, -3.0), (2, 40.0), (3, float("nan")), (4, 3.0), (7, 10.0),
                                        (8, float("inf")), (2, -1.0), (3, -0.5), (6, 0.25)]):  # fmt: skip
        addr = _record_address(api, buf, ids[k]) + doubles + 8 * field
        old = ctypes.c_double.from_address(addr).value
        ctypes.c_double.from_address(addr).value = old + value if field in (0, 1, 4, 6) else value
    # a pyinfer Mtd too short to hold the record: read as another producer's
    meta = api.get_meta(hash(buf))
    short = analytics.Mtd()
    od_mtd = analytics.Mtd()
    assert api.add_od(meta, api.label_quark("x"), 1, 2, 3, 4, 0.5, ctypes.byref(od_mtd))
    assert api.add_mtd(meta, api.det_type, 8, ctypes.byref(short))
    api.set_relation(meta, analytics.REL_RELATE_TO, od_mtd.id, short.id)
    got = _compare(api, nat, buf)
    assert got is not None
    checked = analytics.read_detections_checked(buf)
    assert len(checked.problems) == 3  # a NaN height, two negative sizes
    assert all("pyinfer Mtd box" in p for p in checked.problems)


def test_impossible_values_are_named_the_same(api, nat):
    GstAnalytics = _gst_analytics()
    from gi.repository import GLib

    buf = _buffer()
    rmeta = GstAnalytics.buffer_add_analytics_relation_meta(buf)
    q = GLib.quark_from_string("thing")
    for x, y, w, h, c in [(0, 0, 10, 10, 1.5), (0, 0, 10, 10, float("nan")), (0, 0, 10, 10, -0.25),
                          (0, 0, -4, 10, 0.5), (0, 0, 10, -1, 0.5), (3, 4, 5, 6, 1.0), (3, 4, 5, 6, 0.0),
                          (0, 0, 10, 10, float("inf"))]:  # fmt: skip
        assert rmeta.add_od_mtd(q, x, y, w, h, c)[0]
    analytics.write_detections(buf, _detections(np.random.default_rng(3), 4, False))
    _compare(api, nat, buf)
    checked = analytics.read_detections_checked(buf)
    assert len(checked.problems) == 6 and len(checked.detections) == 6


def test_set_track_ids_writes_the_same_mtds_as_the_ctypes_path(api, nat, monkeypatch):
    def tracked(native: bool, **kw) -> Gst.Buffer:
        buf, ids = _written(21, 30, rotated=False)
        with monkeypatch.context() as m:
            if not native:
                m.setattr(analytics, "_native", lambda api: None)
            analytics.set_track_ids(buf, ids[1::2], **kw)
        return buf

    GstAnalytics = _gst_analytics()
    n = 15
    for kw in (
        dict(track_ids=range(1, n + 1), pts=0),
        dict(track_ids=np.arange(5, 5 + n, dtype=np.uint64), pts=3 * Gst.SECOND, first_seen=[Gst.SECOND] * n),
        dict(track_ids=[2**64 - 2] * n),  # pts unset: last seen is not updated
        dict(track_ids=[1.0] * n),  # not integers: the ctypes path takes them, as before
        dict(track_ids=range(4)),  # fewer than objects: zip's length
    ):
        a, b = tracked(True, **kw), tracked(False, **kw)
        _compare(api, nat, a)
        ra, rb = (GstAnalytics.buffer_get_analytics_relation_meta(x) for x in (a, b))
        ta = [(m.id, m.get_info()) for m in ra if isinstance(m, GstAnalytics.TrackingMtd)]
        tb = [(m.id, m.get_info()) for m in rb if isinstance(m, GstAnalytics.TrackingMtd)]
        assert ta == tb and ta
        ods = [m.id for m in ra if isinstance(m, GstAnalytics.ODMtd)]
        rel_a = [[ra.get_relation(o, t) for t, _ in ta] for o in ods]
        rel_b = [[rb.get_relation(o, t) for t, _ in tb] for o in ods]
        assert rel_a == rel_b
        _same_detections(analytics.read_detections(a), analytics.read_detections(b))


def test_a_bad_track_id_is_refused_as_before(api, nat):
    buf, ids = _written(22, 4, rotated=False)
    with pytest.raises(ValueError, match="not an unsigned 64-bit integer"):
        analytics.set_track_ids(buf, ids, [1, 2, -3, 4])
    assert analytics.read_detections(buf).tracker_id.tolist()[:2] == [1, 2]  # the ones before it, as before


def test_two_threads_read_their_own_buffers(api, nat):
    bufs = [_written(100 + k, n, rotated=bool(k % 2), unique_id=k)[0] for k, n in enumerate((23, 613, 31, 300))]
    refs = [analytics._read_ctypes(api, b, (), checked=True, tracking=True) for b in bufs]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(order: list[int]) -> None:
        try:
            start.wait()
            for i in order * 60:
                got = analytics.read_detections_checked(bufs[i])
                _same_detections(got.detections, refs[i].detections)
                assert got.metas == refs[i].metas
                plain = analytics.read_detections(bufs[i])
                _same_detections(plain, refs[i].detections)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(o,)) for o in ([0, 1, 2, 3], [3, 2, 1, 0])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_pyinfer_no_native_turns_it_off():
    code = (
        "from pyinfer.meta import _analytics_native, analytics; "
        "api = analytics._api(); "
        "print(_analytics_native.load() is None, api is None or analytics._native(api) is None)"
    )
    env = dict(os.environ, PYINFER_NO_NATIVE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


# Every test of this module runs on both CI legs (see support.analytics_test).
for _name, _test in list(globals().items()):
    if _name.startswith("test_") and callable(_test):
        globals()[_name] = analytics_test(_test)
