"""The C fast path of pyinfer.meta.roi gives exactly what the PyGObject path gives, on any metas."""

from __future__ import annotations

import contextlib
import ctypes
import math

import numpy as np
import pytest

from pyinfer._gi import GLib, GObject, Gst, GstVideo
from pyinfer.detections import Detections
from pyinfer.elements._base import writable
from pyinfer.meta import _roi_c, roi

FAST = _roi_c.load()
LABELS = ("person", "Straßenbahn", "自転車", "🚲 bike", 'with space, comma; and "quotes"', "x" * 127)
PAYLOAD_ID = 2**31 - 2  # msgconv's payload meta

_gst = ctypes.CDLL("libgstreamer-1.0.so.0")
_gst.gst_structure_to_string.restype = ctypes.c_void_p
_gst.gst_structure_to_string.argtypes = [ctypes.c_void_p]
_glib = ctypes.CDLL("libglib-2.0.so.0")
_glib.g_free.argtypes = [ctypes.c_void_p]


@pytest.fixture
def slow(monkeypatch):
    """Run the block on the PyGObject path only."""

    class Slow:
        def __enter__(self):
            monkeypatch.setattr(roi, "_fast", lambda: None)

        def __exit__(self, *exc):
            monkeypatch.setattr(roi, "_fast", _roi_c.load)

    return Slow()


def _to_string(ptr: int) -> str:
    raw = _gst.gst_structure_to_string(ptr)
    try:
        return ctypes.string_at(raw).decode()
    finally:
        _glib.g_free(raw)


def dump(buf: Gst.Buffer, ids) -> list:
    """Every ROI meta with one of these ids, as PyGObject sees it: type, ids, box and params serialized."""
    out = []
    for i in ids:
        m = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, i)
        if m is not None:
            params = [_to_string(p) for p in (m.params or [])]
            out.append((GLib.quark_to_string(m.roi_type), m.id, m.parent_id, m.x, m.y, m.w, m.h, params))
    return out


def _detections(rng: np.random.Generator, n: int, rotated: bool) -> Detections:
    lt = rng.uniform(0, [1280, 720], (n, 2))
    rb = np.minimum(lt + rng.uniform(0.001, 300, (n, 2)), [1280, 720])
    xyxy = np.concatenate([lt, rb], axis=1).astype(np.float32)
    if rng.random() < 0.3:
        xyxy[: n // 2] = np.round(xyxy[: n // 2])  # integer boxes
    conf = np.sort(rng.random(n).astype(np.float32))[::-1].copy()
    cls = rng.integers(0, len(LABELS) + 2, n).astype(np.int32)  # some without a label
    cxcywhr = None
    if rotated:
        c = (xyxy[:, :2] + xyxy[:, 2:]) / 2
        wh = (xyxy[:, 2:] - xyxy[:, :2]) * 0.7
        cxcywhr = np.concatenate([c, wh, rng.uniform(-3, 3, (n, 1))], axis=1).astype(np.float32)
    return Detections(xyxy, conf, cls, cxcywhr=cxcywhr, labels=LABELS)


def _foreign(buf: Gst.Buffer, rng: np.random.Generator, roi_id: int) -> None:
    """One meta as other producers might write it, sound or malformed."""
    kind = int(rng.integers(0, 12))
    w, h = (0, 5) if kind == 1 else (int(rng.integers(1, 50)), int(rng.integers(1, 50)))
    m = GstVideo.buffer_add_video_region_of_interest_meta(buf, "face" if kind != 2 else "", 3, 4, w, h)
    m.id = roi_id
    if kind <= 2:
        return  # no params; an empty box; an empty type
    s = Gst.Structure.new_empty(roi.PARAM_NAME if kind != 3 else "other")
    values = {"left": 1.5, "top": 2.0, "width": 3.0, "height": 4.0, "confidence": 0.5, "class-id": 1,
              "label": "thing", "unique-id": 7}  # fmt: skip
    if kind == 4:
        values["confidence"] = 1  # int
    elif kind == 5:
        del values["width"]
    elif kind == 6:
        values["left"] = math.nan
    elif kind == 7:
        values["label"] = 5
    elif kind == 8:
        values["height"] = -2.0
    elif kind == 9:
        values["angle-rad"] = 0.5  # a partial rotated box
    elif kind == 10:
        values["confidence"] = 1.5
    elif kind == 11:
        values["class-id"] = 2.0
    for k, v in values.items():
        s.set_value(k, v)
    if kind in (4, 5, 11):
        s.set_value("model-id", "three")
    m.add_param(s)
    if rng.random() < 0.5:
        t = Gst.Structure.new_empty(roi.TRACKING_PARAM)
        t.set_value("track-id", [5, -1, "x", GObject.Value(GObject.TYPE_UINT64, 9)][int(rng.integers(0, 4))])
        t.set_value("predicted", [True, 1, "yes"][int(rng.integers(0, 3))])
        m.add_param(t)


def _scene(seed: int) -> tuple[Gst.Buffer, list]:
    """A buffer with a random mix of pyinfer's metas, tracking params, foreign metas, the frame record and
    msgconv's payload meta; and the ids to dump."""
    rng = np.random.default_rng(seed)
    buf = Gst.Buffer.new_allocate(None, 16, None)
    n = int(rng.integers(0, 40))
    with writable(buf):
        if rng.random() < 0.8:
            roi.write_frame_info(buf, inferred=bool(rng.random() < 0.7), unique_id=int(rng.integers(0, 9)))
        if rng.random() < 0.3:
            payload = GstVideo.buffer_add_video_region_of_interest_meta(buf, "pyinfer-payload", 0, 0, 0, 0)
            payload.id = PAYLOAD_ID
        metas = roi.write_detections(buf, _detections(rng, n, bool(rng.random() < 0.5)), unique_id=3, model_id=1)
        for k, meta in enumerate(metas):
            if rng.random() < 0.5:
                roi.set_track_id(meta, int(rng.integers(0, 2**64, dtype=np.uint64)), predicted=bool(k % 2), age=k)
        for k in range(int(rng.integers(0, 6))):
            _foreign(buf, rng, n + k)
        if rng.random() < 0.2:  # a duplicate id and a gap
            GstVideo.buffer_add_video_region_of_interest_meta(buf, "dup", 1, 1, 1, 1).id = 0
            GstVideo.buffer_add_video_region_of_interest_meta(buf, "gap", 1, 1, 1, 1).id = n + 20
    return buf, [*range(n + 25), PAYLOAD_ID, roi.FRAME_ID]


def _same_detections(a: Detections, b: Detections) -> None:
    assert len(a) == len(b)
    for name in ("xyxy", "confidence", "class_id"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert (a.cxcywhr is None) == (b.cxcywhr is None)
    if a.cxcywhr is not None:
        np.testing.assert_array_equal(a.cxcywhr, b.cxcywhr)
    assert (a.tracker_id is None) == (b.tracker_id is None)
    if a.tracker_id is not None:
        assert a.tracker_id.dtype == b.tracker_id.dtype
        np.testing.assert_array_equal(a.tracker_id, b.tracker_id)
    assert a.labels == b.labels
    assert a.extra.keys() == b.extra.keys()
    for k in a.extra:
        assert a.extra[k].dtype == b.extra[k].dtype, k
        np.testing.assert_array_equal(a.extra[k], b.extra[k])


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs), None
    except Exception as exc:
        return None, (type(exc), str(exc))


@pytest.mark.parametrize("seed", range(60))
def test_reads_match_the_pygobject_path(seed, slow):
    buf, ids = _scene(seed)
    before = dump(buf, ids)
    fast, fast_err = _outcome(roi.read_detections, buf)
    with slow:
        ref, ref_err = _outcome(roi.read_detections, buf)
    assert fast_err == ref_err
    if ref is not None:
        _same_detections(fast, ref)
    for tracking in (True, False):
        fast_c = roi.read_detections_checked(buf, tracking=tracking)
        with slow:
            ref_c = roi.read_detections_checked(buf, tracking=tracking)
        _same_detections(fast_c.detections, ref_c.detections)
        assert fast_c.problems == ref_c.problems
        assert [hash(m) for m in fast_c.metas] == [hash(m) for m in ref_c.metas]
        assert [m.id for m in fast_c.metas] == [m.id for m in ref_c.metas]
    fast_info = roi.read_frame_info(buf)
    with slow:
        assert roi.read_frame_info(buf) == fast_info
        ref_metas = roi.roi_metas(buf)
    assert [hash(m) for m in roi.roi_metas(buf)] == [hash(m) for m in ref_metas]
    assert dump(buf, ids) == before  # reading changes nothing


@pytest.mark.parametrize("seed", range(30))
def test_writes_put_the_same_metas_on_the_buffer(seed, slow):
    rng = np.random.default_rng(1000 + seed)
    dets = _detections(rng, int(rng.integers(0, 50)), bool(seed % 2))
    first_id = int(rng.integers(0, 5))
    tracks = rng.integers(0, 2**64, len(dets), dtype=np.uint64).tolist()
    bufs = []
    for use_slow in (False, True):
        buf = Gst.Buffer.new_allocate(None, 16, None)
        with writable(buf):
            if use_slow:
                slow.__enter__()
            metas = roi.write_detections(buf, dets, unique_id=seed - 5, model_id=seed % 3, first_id=first_id)
            roi.write_frame_info(buf, inferred=bool(seed % 2), unique_id=seed, model_id=2)
            for k, meta in enumerate(metas):
                roi.set_track_id(meta, tracks[k], predicted=bool(k % 2), frames_since_update=k, score=0.5, tag="é")
            if use_slow:
                slow.__exit__()
        assert [m.id for m in metas] == list(range(first_id, first_id + len(dets)))
        bufs.append(buf)
    ids = [*range(first_id + len(dets)), roi.FRAME_ID]
    assert dump(bufs[0], ids) == dump(bufs[1], ids)
    assert len(dump(bufs[0], ids)) == len(dets) + 1


def test_set_track_ids_by_pointer_matches_set_track_id(slow):
    dets = _detections(np.random.default_rng(3), 20, False)
    bufs = []
    for use_slow in (False, True):
        buf = Gst.Buffer.new_allocate(None, 16, None)
        with writable(buf):
            roi.write_detections(buf, dets)
            if use_slow:
                with slow:
                    metas = roi.read_detections_checked(buf).metas
                    for i in range(0, 20, 3):
                        roi.set_track_id(metas[i], i * 7, predicted=False)
            else:
                read = roi.read_detections_checked(buf)
                roi.set_track_ids(read.metas, range(0, 20, 3), [i * 7 for i in range(0, 20, 3)], predicted=False)
        bufs.append(buf)
    assert dump(bufs[0], range(20)) == dump(bufs[1], range(20))
    assert roi.read_detections(bufs[0]).tracker_id[::3].tolist() == [i * 7 for i in range(0, 20, 3)]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"unique_id": 2**31}, None),  # out of gint: PyGObject raises, the fast path hands over
        ({"unique_id": True}, None),  # written as a boolean by PyGObject
        ({"first_id": np.int64(2)}, None),
    ],
)
def test_unusual_arguments_are_written_as_pygobject_writes_them(kwargs, error, slow):
    dets = _detections(np.random.default_rng(4), 3, False)
    results = []
    for use_slow in (False, True):
        buf = Gst.Buffer.new_allocate(None, 16, None)
        with writable(buf):
            if use_slow:
                with slow:
                    got = _outcome(roi.write_detections, buf, dets, **kwargs)
            else:
                got = _outcome(roi.write_detections, buf, dets, **kwargs)
        results.append((got[1], dump(buf, range(5))))
    assert results[0] == results[1]


def test_unusual_track_fields_fall_back_to_pygobject(slow):
    dets = _detections(np.random.default_rng(5), 2, False)
    dumps = []
    for use_slow in (False, True):
        buf = Gst.Buffer.new_allocate(None, 16, None)
        with writable(buf):
            metas = roi.write_detections(buf, dets)
            with slow if use_slow else contextlib.nullcontext():
                errors = [
                    _outcome(roi.set_track_id, metas[0], np.uint64(2**63), half=np.float32(0.5))[1],
                    _outcome(roi.set_track_id, metas[1], 3.7, flag=True)[1],
                    _outcome(roi.set_track_id, metas[1], 4, big=2**40)[1],  # PyGObject: out of gint
                    _outcome(roi.set_track_id, metas[0], -1)[1],
                ]
        dumps.append((errors, dump(buf, range(2))))
    assert dumps[0] == dumps[1]


def test_a_buffer_that_is_not_writable_is_refused():
    # (PyGObject's path crashes there: GStreamer's ROI adder writes to the NULL that gst_buffer_add_meta returns.)
    dets = _detections(np.random.default_rng(6), 1, False)
    buf = Gst.Buffer.new_allocate(None, 16, None)
    mini = buf.mini_object
    mini.refcount += 1  # as when a queue still holds it
    try:
        with pytest.raises(RuntimeError, match="not writable"):
            roi.write_detections(buf, dets)
        with pytest.raises(RuntimeError, match="not writable"):
            roi.write_frame_info(buf, inferred=True)
    finally:
        mini.refcount -= 1
    assert dump(buf, [0, roi.FRAME_ID]) == []


def test_the_c_fast_path_loads_and_passes_its_self_test():
    assert FAST is not None, "pyinfer.meta._roi_c did not load: GStreamer's libraries or symbols are missing"
