"""Metadata reads and writes from several streaming threads at once give each thread exactly its own results.

Tee branches, two pipelines in one process, pytracker/pyosd/pymsgconv and a user's appsink all read ROI metas
on their own streaming threads. The tests here read buffers of different producers (unique-id 101
axis-aligned and tracked, 202 rotated) on two or more threads at once, some frames growing past the readers'
initial capacity (600+ metas), one frame read by both threads (a tee), with fresh writes in between. They
compare every read with what one thread alone reads from the same buffer, on each of the three paths (native
helper, ctypes, PyGObject): first on Python threads, then on GStreamer's own streaming threads.
"""

from __future__ import annotations

import copy
import sys
import threading

import numpy as np
import pytest

from meta.test_roi_fast import _detections
from pyinfer._gi import Gst
from pyinfer.detections import Detections
from pyinfer.elements._base import writable
from pyinfer.meta import _roi_c, _roi_native, roi

PATHS = ("native", "ctypes", "pygobject")
# Rounds of fresh threads x reads per thread (and buffers per pipeline): the PyGObject path is ~20x slower per
# meta than the native one, so it gets fewer.
ITERATIONS = {"native": (5, 400), "ctypes": (3, 150), "pygobject": (2, 60)}
PIPELINE_BUFFERS = {"native": 300, "ctypes": 120, "pygobject": 60}
BIG_EVERY = 7  # every 7th read is of the thread's 600+ meta frame
SHARED_EVERY = 5  # every 5th, of the frame both threads read
WRITE_EVERY = 9  # every 9th, a fresh buffer written and read back by the thread


def _frame(seed: int, n: int, *, rotated: bool, unique_id: int, model_id: int, tracked: bool) -> Gst.Buffer:
    rng = np.random.default_rng(seed)
    dets = _detections(rng, n, rotated)
    buf = Gst.Buffer.new_allocate(None, 16, None)
    with writable(buf):
        metas = roi.write_detections(buf, dets, unique_id=unique_id, model_id=model_id)
        roi.write_frame_info(buf, inferred=not rotated, unique_id=unique_id, model_id=model_id)
        if tracked:
            idx = list(range(0, n, 2))
            roi.set_track_ids(metas, idx, [unique_id * 10_000 + i for i in idx], predicted=False)
    return buf


PRODUCERS = {  # unique-id: its boxes, and the sizes of its small and big frames and of its fresh writes
    101: dict(rotated=False, model_id=0, tracked=True, small=23, big=640, fresh=5),
    202: dict(rotated=True, model_id=3, tracked=False, small=31, big=613, fresh=6),
}


@pytest.fixture(scope="module")
def frames():
    out = {}
    for uid, p in PRODUCERS.items():
        kw = dict(rotated=p["rotated"], unique_id=uid, model_id=p["model_id"], tracked=p["tracked"])
        fresh = _detections(np.random.default_rng(uid + 2), p["fresh"], p["rotated"])
        out[uid] = (_frame(uid, p["small"], **kw), _frame(uid + 1, p["big"], **kw), fresh)
    # A tee: both threads read this one buffer (two producers on one frame, as two models in series).
    shared = _frame(7, 40, rotated=False, unique_id=101, model_id=0, tracked=True)
    dets = _detections(np.random.default_rng(8), 12, True)
    with writable(shared):
        roi.write_detections(shared, dets, unique_id=202, model_id=3, first_id=40)
    return out, shared


@pytest.fixture
def path(request, monkeypatch):
    """Force one path of pyinfer.meta.roi for the test (module globals: every thread sees it)."""
    name = request.param
    if name == "native":
        assert roi._native() is not None, "the native helper is not in use (make builds it)"
    elif name == "ctypes":
        assert _roi_c.load() is not None
        monkeypatch.setattr(roi, "_native", lambda: None)
    else:
        monkeypatch.setattr(roi, "_fast", lambda: None)
    return name


@pytest.fixture
def fast_switching():
    """Hand the GIL over often, so the threads' Python code interleaves too (not only their C calls)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


def _same(a: Detections, b: Detections) -> bool:
    if len(a) != len(b) or a.labels != b.labels or a.extra.keys() != b.extra.keys():
        return False
    if (a.cxcywhr is None) != (b.cxcywhr is None):
        return False
    pairs = [(a.xyxy, b.xyxy), (a.confidence, b.confidence), (a.class_id, b.class_id)]
    pairs += [(a.extra[k], b.extra[k]) for k in a.extra]
    if a.cxcywhr is not None:
        pairs.append((a.cxcywhr, b.cxcywhr))
    return all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in pairs)


def _pointers(metas) -> list[int]:
    if isinstance(metas, roi.RoiMetas):
        return [metas.pointer(i) for i in range(len(metas))]
    return [hash(m) for m in metas]


def _read(kind: int, buf: Gst.Buffer) -> tuple:
    """One of the reads the elements do, as a comparable tuple."""
    if kind == 0:
        return (roi.read_detections(buf), roi.read_frame_info(buf))
    checked = roi.read_detections_checked(buf, tracking=kind == 1)
    return (checked.detections, checked.problems, _pointers(checked.metas))


def _equal(got: tuple, want: tuple) -> bool:
    return _same(got[0], want[0]) and got[1:] == want[1:]


def _write_and_read(dets: Detections, unique_id: int, model_id: int) -> tuple:
    buf = Gst.Buffer.new_allocate(None, 16, None)
    with writable(buf):
        metas = roi.write_detections(buf, dets, unique_id=unique_id, model_id=model_id)
        roi.write_frame_info(buf, inferred=True, unique_id=unique_id, model_id=model_id)
        roi.set_track_ids(metas, range(len(dets)), range(1, len(dets) + 1), predicted=True)
    return _read(0, buf)


def _expected(frames) -> dict[tuple, tuple]:
    """The results one thread alone reads, on the path under test; checked against what was written."""
    per_producer, shared = frames
    want: dict[tuple, tuple] = {}
    for uid, (small, big, fresh) in per_producer.items():
        for kind in range(3):
            want[uid, "small", kind] = _read(kind, small)
            want[uid, "big", kind] = _read(kind, big)
        want[uid, "fresh"] = _write_and_read(fresh, uid, PRODUCERS[uid]["model_id"])
    for kind in range(3):
        want["shared", kind] = _read(kind, shared)
    for uid, p in PRODUCERS.items():
        for size in ("small", "big"):
            dets = want[uid, size, 0][0]
            assert len(dets) == p[size]
            assert (dets.extra["unique_id"] == uid).all()
            assert (dets.cxcywhr is not None) == p["rotated"]
            assert (dets.tracker_id is not None) == p["tracked"]
            assert want[uid, size, 0][1] == roi.FrameInfo(not p["rotated"], uid, p["model_id"])
    assert want["shared", 0][0].extra["unique_id"].tolist() == [101] * 40 + [202] * 12
    return want


def _schedule(uid: int, i: int) -> str:
    """Which of its frames reader ``uid`` reads at step ``i``."""
    if i % WRITE_EVERY == WRITE_EVERY - 1:
        return "fresh"
    if i % BIG_EVERY == BIG_EVERY - 1:
        return "big"
    if i % SHARED_EVERY == SHARED_EVERY - 1:
        return "shared"
    return "small"


def _run_threads(frames, rounds: int, iterations: int) -> None:
    per_producer, shared = frames
    want = _expected(frames)
    failures: list[str] = []
    errors: list[BaseException] = []

    def reader(uid: int, start: threading.Barrier) -> None:
        small, big, fresh = per_producer[uid]
        model_id = PRODUCERS[uid]["model_id"]
        try:
            start.wait()
            for i in range(iterations):
                kind = i % 3
                which = _schedule(uid, i)
                if which == "fresh":
                    key, got = (uid, "fresh"), _write_and_read(fresh, uid, model_id)
                elif which == "shared":
                    key, got = ("shared", kind), _read(kind, shared)
                else:
                    key, got = (uid, which, kind), _read(kind, big if which == "big" else small)
                if not _equal(got, want[key]):
                    failures.append(f"thread {uid}, read {i}: {key} differs from a lone read")
        except BaseException as exc:
            errors.append(exc)

    for _ in range(rounds):  # fresh threads each round
        start = threading.Barrier(len(per_producer))
        threads = [threading.Thread(target=reader, args=(uid, start)) for uid in per_producer]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    assert not failures, f"{len(failures)} wrong reads of {rounds * iterations * 2}, e.g. {failures[:3]}"


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_two_threads_read_exactly_their_own_detections(frames, path, fast_switching):
    _run_threads(frames, *ITERATIONS[path])


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_streaming_threads_of_two_pipelines_and_a_tee_read_exactly_their_own_detections(frames, path):
    """Pad probes on GStreamer's own streaming threads: a pipeline per producer, and a tee whose two branches
    read one buffer at once. Only detections and problems are compared (a buffer may be copied on its way)."""
    per_producer, shared = frames
    want = _expected(frames)
    n_buffers = PIPELINE_BUFFERS[path]
    failures: list[str] = []
    pipelines = []
    for uid in per_producer:
        pipe = Gst.parse_launch("appsrc name=src ! queue ! fakesink name=a")
        schedule = [_schedule(uid, i) for i in range(n_buffers)]
        schedule = [w if w in ("small", "big") else "small" for w in schedule]
        bufs = [per_producer[uid][1] if w == "big" else per_producer[uid][0] for w in schedule]
        keys = [(uid, w) for w in schedule]
        pipelines.append((pipe, bufs, keys, ("a",)))
    tee = Gst.parse_launch("appsrc name=src ! tee name=t t. ! queue ! fakesink name=a t. ! queue ! fakesink name=b")
    pipelines.append((tee, [shared] * n_buffers, [("shared",)] * n_buffers, ("a", "b")))

    def probe_for(name: str, keys: list[tuple]):
        seen = [0]

        def probe(pad, info):
            i = seen[0]
            seen[0] += 1
            kind = i % 3
            try:
                got = _read(kind, info.get_buffer())
                exp = want[(*keys[i], kind)]
                if not (_same(got[0], exp[0]) and got[1] == exp[1]):
                    failures.append(f"{name}, buffer {i}: {keys[i]} differs from a lone read")
            except Exception as exc:
                failures.append(f"{name}, buffer {i}: {exc!r}")
            return Gst.PadProbeReturn.OK

        return probe

    for k, (pipe, _, keys, sinks) in enumerate(pipelines):
        for sink in sinks:
            pad = pipe.get_by_name(sink).get_static_pad("sink")
            pad.add_probe(Gst.PadProbeType.BUFFER, probe_for(f"pipeline {k} sink {sink}", keys))
        pipe.set_state(Gst.State.PLAYING)
    try:
        for i in range(n_buffers):  # interleaved, so the pipelines' streaming threads run at once
            for pipe, bufs, _, _ in pipelines:
                assert pipe.get_by_name("src").emit("push-buffer", bufs[i]) == Gst.FlowReturn.OK
        for pipe, _, _, _ in pipelines:
            pipe.get_by_name("src").emit("end-of-stream")
        for pipe, _, _, _ in pipelines:
            msg = pipe.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
            assert msg is not None and msg.type == Gst.MessageType.EOS, msg and msg.parse_error()
    finally:
        for pipe, _, _, _ in pipelines:
            pipe.set_state(Gst.State.NULL)
    reads = n_buffers * 4
    assert not failures, f"{len(failures)} wrong reads of {reads}, e.g. {failures[:3]}"


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_a_result_is_not_changed_by_later_reads(frames, path):
    per_producer, shared = frames
    small = per_producer[101][0]
    first = [_read(kind, small) for kind in range(3)]
    copies = [(copy.deepcopy(r[0]), *r[1:]) for r in first]
    for buf in (per_producer[202][1], per_producer[202][0], shared, per_producer[101][1]):
        for kind in range(3):
            _read(kind, buf)
    for got, kept in zip(first, copies):
        assert _equal(got, kept)


def test_reads_in_progress_never_share_scratch_space():
    nat, c = roi._native(), _roi_c.load()
    assert nat is not None and c is not None
    for pool in (nat, c):
        a, b = pool.acquire(), pool.acquire()
        assert a is not b  # two reads at once: two sets
        pool.release(a)
        assert pool.acquire() is a  # a released one is reused, not made again
        pool.release(a)
        pool.release(b)


def test_a_scratch_grows_for_a_big_frame_and_is_kept_grown(frames):
    nat = roi._native()
    big = frames[0][101][1]
    scratch = _roi_native.Scratch()
    assert scratch.cap < 640
    assert nat.read(hash(big), scratch) == 640
    assert scratch.cap >= 641  # every ROI meta, the frame record included
    nat.release(scratch)
    assert nat.acquire() is scratch
    nat.release(scratch)
