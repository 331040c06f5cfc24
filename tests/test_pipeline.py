"""pyinfer.pipeline: jobs delivered exactly once and in order, with up to ``depth`` batches in flight.

The engine here is a recording stand-in for pyinfer's own submit/collect interface (no external contract):
it notes what is in flight, so the tests can check the depth, the order and the release of every job.
"""

from __future__ import annotations

import threading
import time

import pytest

from pyinfer.pipeline import InferPipeline, Job, StagingRing


class RecordingEngine:
    """submit/collect that record the in-flight count; ``fail`` makes a batch's submit or collect raise."""

    def __init__(self, collect_delay_s: float = 0.0, fail: dict | None = None) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.collect_delay_s = collect_delay_s
        self.fail = fail or {}
        self.lock = threading.Lock()
        self.threads: set[str] = set()

    def submit(self, frames, *, channels, params):
        self.threads.add(threading.current_thread().name)
        if self.fail.get(frames) == "submit":
            raise RuntimeError(f"submit {frames} failed")
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return frames

    def collect(self, ticket):
        time.sleep(self.collect_delay_s)
        with self.lock:
            self.in_flight -= 1
        if self.fail.get(ticket) == "collect":
            raise SystemExit(3)  # user code may raise anything: the pipeline must hand it over, not die
        return [f"dets-{ticket}"]


def _collector():
    out: list = []
    lock = threading.Lock()

    def deliver(job, dets, error):
        with lock:
            out.append((job.tokens[0], dets, None if error is None else type(error).__name__))

    return out, deliver


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_every_job_is_delivered_once_in_order_with_at_most_depth_in_flight(depth):
    engine = RecordingEngine(collect_delay_s=0.002)
    out, deliver = _collector()
    released: list[int] = []
    pipe = InferPipeline(deliver, depth=depth, max_queued=2)
    for i in range(60):
        frames = None if i % 7 == 3 else i  # some jobs have nothing to infer (interval frames)
        pipe.put(Job(tokens=[i], frames=frames, engine=engine, release=lambda i=i: released.append(i)))
    assert pipe.drain(10)
    pipe.stop()
    assert [t for t, _, _ in out] == list(range(60))
    assert [d for t, d, _ in out if t % 7 != 3] == [[f"dets-{t}"] for t in range(60) if t % 7 != 3]
    assert all(d is None for t, d, _ in out if t % 7 == 3)
    assert sorted(released) == list(range(60))
    assert 1 <= engine.max_in_flight <= depth
    assert engine.threads == {"pyinfer-worker"}  # all model work on the one worker thread


def test_two_batches_are_in_flight_when_the_next_one_is_already_waiting():
    engine = RecordingEngine(collect_delay_s=0.01)
    out, deliver = _collector()
    pipe = InferPipeline(deliver, depth=2, max_queued=4)
    for i in range(8):
        pipe.put(Job(tokens=[i], frames=i, engine=engine))
    pipe.drain(10)
    pipe.stop()
    assert engine.max_in_flight == 2
    assert [t for t, _, _ in out] == list(range(8))


def test_errors_of_submit_and_collect_reach_deliver_in_their_turn_and_the_worker_goes_on():
    engine = RecordingEngine(fail={2: "submit", 5: "collect"})
    out, deliver = _collector()
    pipe = InferPipeline(deliver, depth=2)
    for i in range(8):
        pipe.put(Job(tokens=[i], frames=i, engine=engine))
    assert pipe.drain(10)
    pipe.stop()
    assert [t for t, _, _ in out] == list(range(8))
    assert out[2] == (2, None, "RuntimeError")
    assert out[5] == (5, None, "SystemExit")
    assert out[6] == (6, ["dets-6"], None)


def test_a_failing_delivery_does_not_stop_the_jobs_after_it():
    engine = RecordingEngine()
    seen: list[int] = []

    def deliver(job, dets, error):
        seen.append(job.tokens[0])
        if job.tokens[0] == 1:
            raise ValueError("delivery broke")

    pipe = InferPipeline(deliver)
    for i in range(4):
        pipe.put(Job(tokens=[i], frames=i, engine=engine))
    assert pipe.drain(10)
    pipe.stop()
    assert seen == [0, 1, 2, 3]


def test_flush_drops_what_is_not_delivered_releases_it_and_unblocks_put():
    gate = threading.Event()
    engine = RecordingEngine()
    delivered: list[int] = []
    released: list[int] = []

    def deliver(job, dets, error):
        gate.wait(5)
        delivered.append(job.tokens[0])

    pipe = InferPipeline(deliver, depth=2, max_queued=1)
    for i in range(4):  # 0 delivering (blocked), 1 in flight or queued, more queued
        threading.Thread(
            target=pipe.put, args=(Job(tokens=[i], frames=i, engine=engine, release=lambda i=i: released.append(i)),)
        ).start()
        time.sleep(0.02)
    pipe.flush()
    gate.set()
    assert pipe.drain(5)
    time.sleep(0.05)
    pipe.put(Job(tokens=[99], frames=99, engine=engine))
    assert pipe.drain(5)
    pipe.stop()
    assert delivered[0] == 0 and delivered[-1] == 99
    assert set(delivered[1:-1]) <= {1}  # at most the one being delivered at the flush; the rest dropped
    assert sorted(set(released) | set(delivered) - {99}) == [0, 1, 2, 3]  # every job released or delivered
    assert engine.in_flight == 0  # dropped jobs' work was collected, never left running


def test_the_idle_callback_runs_a_partial_batch_when_nothing_else_is_queued():
    engine = RecordingEngine()
    out, deliver = _collector()
    partial = [Job(tokens=["late"], frames=7, engine=engine)]

    def idle():
        return partial.pop() if partial else None

    pipe = InferPipeline(deliver, idle=idle, idle_period_s=0.001)
    deadline = time.monotonic() + 5
    while not out and time.monotonic() < deadline:
        time.sleep(0.005)
    pipe.stop()
    assert out == [("late", ["dets-7"], None)]


def test_staging_ring_hands_out_at_most_its_slots_and_reuses_them():
    ring = StagingRing([(4, 6, 3)], 2, slots=2)
    a, _b = ring.acquire(), ring.acquire()
    assert a[0].shape == (2, 4, 6, 3)
    assert ring.acquire(timeout_s=0.05) is None  # both in use
    ring.release(a)
    assert ring.acquire(timeout_s=0.05) is a
    ring.close()
    assert ring.acquire(timeout_s=0.05) is None


def test_staging_copies_strided_host_planes_exactly():
    import torch

    ring = StagingRing([(3, 4, 3)], 2)
    slot = ring.acquire()
    src = torch.arange(3 * 8 * 3, dtype=torch.uint8).reshape(3, 8, 3)[:, 2:6]  # padded rows
    StagingRing.put(slot, 1, [src])
    assert torch.equal(slot[0][1], src)


@pytest.mark.parametrize(("rows", "batch"), [(1, 3), (7, 3), (1080, 1), (1080, 3)])
def test_copies_on_the_copy_threads_give_every_row_of_every_plane(rows, batch):
    """A 1080p plane of a batch of one is split into row bands copied on several threads; small planes in one band."""
    import torch

    from pyinfer.pipeline import wait_all

    shapes = [(rows, 1920, 3), ((rows + 1) // 2, 960, 2)]
    ring = StagingRing(shapes, batch)
    slot = ring.acquire()
    for t in slot:
        t.zero_()
    gen = torch.Generator().manual_seed(rows)
    full = [torch.randint(0, 256, (r, c + 5, p), dtype=torch.uint8, generator=gen) for r, c, p in shapes]
    planes = [f[:, 5:] for f in full]  # padded rows, like a GstVideoMeta stride
    index = batch - 1
    futures = StagingRing.put_async(slot, index, planes)
    if rows == 1080 and batch == 1:
        assert len(futures) >= 2  # bands of the 6 MB plane (small planes are copied at once, on the caller's thread)
    wait_all(futures)
    for dst, src in zip(slot, planes, strict=True):
        assert torch.equal(dst[index], src)
        assert not dst[:index].any()  # the other frames' places are untouched


def test_a_batch_that_keeps_the_copy_threads_busy_copies_each_large_plane_in_one_task():
    """At batch >= COPY_THREADS the frames themselves spread the copies: no bands (fewer tasks under the GIL)."""
    import torch

    from pyinfer.pipeline import COPY_THREADS, wait_all

    shapes = [(1080, 1920, 3)]
    slot = StagingRing(shapes, COPY_THREADS).acquire()
    src = torch.randint(0, 256, shapes[0], dtype=torch.uint8)
    futures = StagingRing.put_async(slot, 0, [src])
    assert len(futures) == 1
    wait_all(futures)
    assert torch.equal(slot[0][0], src)


def test_a_failed_copy_is_raised_once_all_copies_ended():
    from concurrent.futures import Future

    from pyinfer.pipeline import wait_all

    ok, bad = Future(), Future()
    ok.set_result(None)
    bad.set_exception(ValueError("copy failed"))
    with pytest.raises(ValueError, match="copy failed"):
        wait_all([bad, ok])
    wait_all([bad, ok], quiet=True)


def test_device_gather_of_several_frames_in_one_call():
    import torch

    ring = StagingRing([(3, 4, 1), (2, 2, 2)], 4)
    slot = ring.acquire()
    for t in slot:
        t.zero_()
    frames = [
        (i, [torch.full((3, 4, 1), 10 + i, dtype=torch.uint8), torch.full((2, 2, 2), 20 + i, dtype=torch.uint8)])
        for i in (0, 2, 3)
    ]
    StagingRing.put_many(slot, frames)
    for i in range(4):
        want = 0 if i == 1 else 1
        assert torch.equal(slot[0][i], torch.full((3, 4, 1), (10 + i) * want, dtype=torch.uint8))
        assert torch.equal(slot[1][i], torch.full((2, 2, 2), (20 + i) * want, dtype=torch.uint8))
