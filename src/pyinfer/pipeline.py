"""Batches in flight: staged frames in, detections out in order, on one worker thread beside the streaming thread.

:class:`InferPipeline` is the loop an element runs its engine through (GStreamer-free, so it is tested alone):

- the caller (the element's streaming thread) fills a batch, seals it into a :class:`Job` (its tokens, e.g.
  buffers, in order; the frames to infer, if any) and :meth:`~InferPipeline.put` s it; ``put`` blocks while
  ``max_queued`` jobs wait, which bounds memory and passes back-pressure upstream;
- the worker thread submits each job's frames to its engine (:meth:`pyinfer.engine.Engine.submit`: on a GPU it
  returns once the work is queued) and keeps up to ``depth`` batches in flight: it collects the oldest when the
  next one is submitted, or as soon as nothing else is waiting (a live stream is not held back for a batch
  that is not coming);
- every job is handed to ``deliver`` exactly once, in the order it was put, with its detections or the error
  that cost them; a job with no frames (frames skipped by ``interval``) is delivered in its turn.

All torch work of the element runs on the worker: one thread, so one OpenMP thread team on the CPU (a second
live team makes every forward slower, see :func:`pyinfer.engine.on_fresh_thread`).

:meth:`~InferPipeline.drain` waits until everything put so far is delivered (EOS, caps, a model swap);
:meth:`~InferPipeline.flush` drops what is not delivered yet (a flushing seek); an ``idle`` callback lets the
owner seal a partial batch that waited too long (``batch-timeout``) while the worker has nothing else to do.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyinfer.params import DEFAULT_PARAMS, InferParams

log = logging.getLogger(__name__)

#: Batches a worker keeps submitted and not yet collected.
DEFAULT_DEPTH = 2


@dataclass
class Job:
    """One batch: the tokens to deliver in order, and the frames to infer (None: deliver without inference).

    Attributes:
        tokens: opaque items handed back to ``deliver`` in order (the element's buffers and their flags).
        frames: the batch for ``engine.submit`` (a tensor or YUV planes), or None.
        engine: the engine that runs it (a hot-swap takes effect between jobs).
        channels: channel order of packed frames.
        params: thresholds and limits for this batch.
        release: called once the job is delivered or dropped (returns staging memory, unmaps frames).
        context: anything the owner wants back in ``deliver``.
        prepare: called on the worker just before ``engine.submit`` (waits for frame copies still running,
            queues device-side gathers); what it raises costs the batch its detections, like a failed submit.
    """

    tokens: list
    frames: Any = None
    engine: Any = None
    channels: str = "RGB"
    params: InferParams = DEFAULT_PARAMS
    release: Callable[[], None] | None = None
    context: Any = None
    prepare: Callable[[], None] | None = None
    ticket: Any = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)

    def done(self) -> None:
        """Run ``release`` once."""
        release, self.release = self.release, None
        if release is not None:
            try:
                release()
            except Exception:  # a release must not stop the delivery of the jobs after it
                log.exception("releasing a batch failed")


class InferPipeline:
    """A worker thread running jobs through their engines with up to ``depth`` in flight, delivering in order.

    Args:
        deliver: ``deliver(job, detections, error)`` on the worker thread: detections is a list (one per frame)
            or None (no frames, or ``error`` cost them).
        depth: batches submitted and not yet collected at most (1: one batch at a time).
        max_queued: jobs waiting for the worker at most; ``put`` blocks beyond that.
        idle: called by the worker when it has nothing queued nor in flight, at least every ``idle_period_s``;
            returns a job to run (a partial batch that waited too long) or None.
        idle_period_s: how often ``idle`` is polled while the worker waits.
        name: the worker thread's name.
    """

    def __init__(
        self,
        deliver: Callable[[Job, list | None, BaseException | None], None],
        *,
        depth: int = DEFAULT_DEPTH,
        max_queued: int = 1,
        idle: Callable[[], Job | None] | None = None,
        idle_period_s: float = 0.005,
        name: str = "pyinfer-worker",
    ) -> None:
        if depth < 1 or max_queued < 1:
            raise ValueError("depth and max_queued must be at least 1")
        self._deliver = deliver
        self.depth = depth
        self.max_queued = max_queued
        self._idle = idle
        self._idle_period_s = idle_period_s
        # One lock, three conditions, so that each change wakes only the thread that waits for it: the worker
        # (a job put, a flush, a stop), the owner in put (room in the queue) and drain (the worker settled).
        # A wake-up that finds nothing to do still costs two GIL hand-offs between the streaming thread and
        # the worker, per batch.
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._settled = threading.Condition(self._lock)
        self._queue: collections.deque[Job] = collections.deque()
        self._in_flight: collections.deque[Job] = collections.deque()
        self._busy = False  # the worker holds a job outside both deques (submitting or delivering it)
        self._epoch = 0  # bumped by flush: jobs of an older epoch are dropped, not delivered
        self._discard: list[Job] = []  # flushed jobs the worker finishes and releases
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the owner's side -------------------------------------------------------------------------------
    def put(self, job: Job) -> bool:
        """Queue a job (blocks while ``max_queued`` wait). False if the pipeline was flushed or stopped meanwhile."""
        with self._lock:
            epoch = self._epoch
            while len(self._queue) >= self.max_queued and not self._stopping and epoch == self._epoch:
                self._room.wait()
            if self._stopping or epoch != self._epoch:
                job.done()
                return False
            self._queue.append(job)
            self._work.notify()
            return True

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every job put so far is delivered (or dropped by a flush); False on timeout."""
        with self._lock:
            return self._settled.wait_for(
                lambda: not (self._queue or self._in_flight or self._busy or self._discard), timeout_s
            )

    def flush(self) -> None:
        """Drop every job not delivered yet, and wake a blocked ``put``.

        The worker finishes the dropped jobs' GPU work (their frames must outlive it) and runs their
        ``release``, without delivering them. A job being delivered at this moment finishes (its pushes fail
        with FLUSHING downstream).
        """
        with self._lock:
            self._epoch += 1
            self._discard.extend(self._queue)
            self._discard.extend(self._in_flight)
            self._queue.clear()
            self._in_flight.clear()
            self._wake_all()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush, then end the worker thread."""
        self.flush()
        with self._lock:
            self._stopping = True
            self._wake_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _wake_all(self) -> None:
        """Wake every waiter (the caller holds the lock): a flush or a stop concerns them all."""
        self._work.notify_all()
        self._room.notify_all()
        self._settled.notify_all()

    # -- the worker -------------------------------------------------------------------------------------
    def _next(self) -> tuple[str, Job | None, int]:
        """What the worker does next: ("submit", job), ("collect", job) or ("stop", None)."""
        with self._lock:
            while True:
                if self._discard:
                    job = self._discard.pop(0)
                    self._busy = True
                    return "discard", job, self._epoch
                if self._stopping:
                    return "stop", None, self._epoch
                if self._queue and len(self._in_flight) < self.depth:
                    job = self._queue.popleft()
                    self._busy = True
                    self._room.notify_all()  # a slot in the queue is free
                    return "submit", job, self._epoch
                if self._in_flight:  # full, or nothing else to submit: the oldest one's results go out now
                    job = self._in_flight.popleft()
                    self._busy = True
                    return "collect", job, self._epoch
                if self._idle is None:
                    self._work.wait()
                    continue
                self._work.wait(self._idle_period_s)
                if self._queue or self._in_flight or self._stopping:
                    continue
                self._lock.release()  # the owner's idle callback takes its own lock
                try:
                    job = self._idle()
                finally:
                    self._lock.acquire()
                if job is not None:
                    self._queue.append(job)

    def _run(self) -> None:
        while True:
            action, job, epoch = self._next()
            if action == "stop":
                return
            try:
                if action == "discard":
                    self._collect_quietly(job)
                    job.done()
                    continue
                if action == "submit":
                    self._submit(job)
                    with self._lock:
                        if epoch == self._epoch:
                            self._in_flight.append(job)
                            job = None
                    if job is not None:  # flushed while it was being submitted
                        self._collect_quietly(job)
                        job.done()
                    continue
                detections, error = self._collect(job)
                with self._lock:
                    current = epoch == self._epoch
                if current:
                    try:
                        self._deliver(job, detections, error)
                    except BaseException:  # the worker must outlive a failing delivery
                        log.exception("delivering a batch failed")
                job.done()
            finally:
                with self._lock:
                    self._busy = False
                    self._settled.notify_all()

    @staticmethod
    def _submit(job: Job) -> None:
        if job.frames is None:
            return
        try:
            if job.prepare is not None:
                job.prepare()
            job.ticket = job.engine.submit(job.frames, channels=job.channels, params=job.params)
        except BaseException as exc:  # handed to deliver (user code may raise anything)
            job.error = exc

    @staticmethod
    def _collect(job: Job) -> tuple[list | None, BaseException | None]:
        if job.error is not None or job.ticket is None:
            return None, job.error
        ticket, job.ticket = job.ticket, None
        try:
            return job.engine.collect(ticket), None
        except BaseException as exc:  # handed to deliver
            return None, exc

    @staticmethod
    def _collect_quietly(job: Job) -> None:
        """Finish a dropped job's GPU work (its buffers must outlive it) without delivering it."""
        if job.ticket is not None:
            ticket, job.ticket = job.ticket, None
            with contextlib.suppress(BaseException):  # dropped anyway
                job.engine.collect(ticket)


class StagingRing:
    """Batch buffers that frames are gathered into, reused batch after batch.

    One slot holds one batch: a (B, rows, cols, bytes per pixel) uint8 tensor per plane. Host frames for a GPU
    engine go to pinned memory (the engine's copy to the device is then asynchronous and about 4x faster than
    from pageable memory); CUDA frames to device memory (a device-side gather, no host round trip); frames
    for a CPU engine to plain memory. Host copies run through NumPy, not torch: the caller is the streaming
    thread, which must not start an OpenMP thread team of its own (see :class:`InferPipeline`).

    Args:
        plane_shapes: (rows, cols, bytes per pixel) of each plane of one frame.
        batch: frames per slot.
        device: "cpu" (host memory), or a CUDA device for frames that are on it.
        pinned: host slots in page-locked memory.
        slots: how many batches can be staged or in flight at once; :meth:`acquire` blocks beyond that.
    """

    def __init__(
        self, plane_shapes: list[tuple[int, ...]], batch: int, *, device: str = "cpu", pinned: bool = False,
        slots: int = DEFAULT_DEPTH + 2,
    ) -> None:  # fmt: skip
        self.plane_shapes = [tuple(s) for s in plane_shapes]
        self.batch = batch
        self.device = device
        self.pinned = pinned and device == "cpu"
        self._slots = slots
        self._free: list[list] = []
        self._made = 0
        self._cond = threading.Condition()
        self._closed = False
        self._epoch = 0  # bumped by interrupt
        self.key: tuple | None = None  # what the owner made it for (shapes, batch, device), to tell when to remake it

    def acquire(self, timeout_s: float | None = None) -> list | None:
        """A free slot (a list of plane tensors), or None (ring closed or interrupted, wait timed out)."""
        import torch

        with self._cond:
            epoch = self._epoch
            if not self._free and self._made < self._slots:
                self._made += 1
                return [
                    torch.empty((self.batch, *shape), dtype=torch.uint8, device=self.device, pin_memory=self.pinned)
                    for shape in self.plane_shapes
                ]
            woken = self._cond.wait_for(lambda: self._free or self._closed or self._epoch != epoch, timeout_s)
            if not woken or self._closed or self._epoch != epoch:
                return None
            return self._free.pop()

    def interrupt(self) -> None:
        """Wake every waiting :meth:`acquire`, which returns None (a flush: the frame it was for is dropped)."""
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    def release(self, slot: list) -> None:
        """Give a slot back (its batch was delivered or dropped)."""
        with self._cond:
            if not self._closed:
                self._free.append(slot)
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter; no slot is handed out after this."""
        with self._cond:
            self._closed = True
            self._free.clear()
            self._cond.notify_all()

    @staticmethod
    def put(slot: list, index: int, planes: list) -> None:
        """Copy one frame's planes (torch views) into position ``index`` of ``slot``."""
        import numpy as np

        for dst, src in zip(slot, planes):
            if dst.device.type == "cpu" and src.device.type == "cpu":
                np.copyto(dst[index].numpy(), src.numpy())
            else:
                dst[index].copy_(src, non_blocking=True)

    @staticmethod
    def put_many(slot: list, frames: list[tuple[int, list]]) -> None:
        """Device-side gather of several frames' planes, ``(index, planes)`` each, in one call (CUDA frames).

        Asynchronous, on the caller's current stream; one ``_foreach_copy_`` instead of a copy per plane and
        frame (the Python cost of a batch of 16 NV12 frames: one call, not 32).
        """
        import torch

        dst = [plane[index] for index, planes in frames for plane in slot[: len(planes)]]
        src = [p for _, planes in frames for p in planes]
        if dst:
            torch._foreach_copy_(dst, src, non_blocking=True)

    @staticmethod
    def put_async(slot: list, index: int, planes: list) -> list[Future]:
        """Copy one host frame's planes into ``slot`` on the copy threads; the futures of the copies.

        A 1080p RGB frame is 6.2 MB: one thread copies it in about 0.6 ms, which bounded a stream of host
        frames to about 1,700 frames/s. The copies run on up to :data:`COPY_THREADS` threads while the streaming
        thread goes on to the next frame. A large plane is split into row bands only as far as the batch does
        not keep the threads busy by itself: a batch of 16 frames gives them 16 copies, so each frame is one
        task (each task is Python run under the GIL on the way in and out, beside the streaming thread and
        the worker; 6 bands a frame made 96 of them per batch), while a frame of a batch of 1 is cut in bands.
        """
        import numpy as np

        futures: list[Future] = []
        for dst, src in zip(slot, planes):
            d, s = dst[index].numpy(), src.numpy()
            if d.nbytes < _BAND_BYTES:  # a small plane: copied here, faster than handing it to a thread
                np.copyto(d, s)
                continue
            pool = _copy_pool()
            rows = d.shape[0]
            per_frame = -(-COPY_THREADS // max(1, int(dst.shape[0])))  # the slot's batch shares the threads
            bands = max(1, min(per_frame, d.nbytes // _BAND_BYTES, rows))
            step = -(-rows // bands)
            for r in range(0, rows, step):
                futures.append(pool.submit(np.copyto, d[r : r + step], s[r : r + step]))
        return futures


#: Threads that copy host frames into staging memory (NumPy releases the GIL while it copies).
COPY_THREADS = max(2, min(8, (os.cpu_count() or 2) // 2))
#: A plane is split into row bands of about this many bytes, one copy task each.
_BAND_BYTES = 1 << 20
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _copy_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=COPY_THREADS, thread_name_prefix="pyinfer-copy")
        return _POOL


def wait_all(futures: list[Future], *, quiet: bool = False) -> None:
    """Wait for every future; the first failure is raised once all are done (unless ``quiet``)."""
    error = None
    for f in futures:
        try:
            f.result()
        except BaseException as exc:
            error = error or exc
    if error is not None and not quiet:
        raise error
