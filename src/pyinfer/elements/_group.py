"""Batch groups: ``pyinfer`` elements of several streams sharing one model and one batch (issue #13).

Every ``pyinfer`` with the same ``batch-group`` name in a process joins one :class:`BatchGroup`:

- **one model**: the first member to start builds the engine; the others check that they ask for the same
  model (an ERROR names both otherwise) and share it. It is freed when the last member stops;
- **one batch**: frames of all members go into the group's open batch, up to the group's ``batch-size``,
  then one model call (on the group's worker, ``in-flight`` batches at most, as a single element does). A
  partial batch goes out after ``batch-timeout`` (default here: nvstreammux's usual 40 ms), so a stalled or
  ended stream never holds the others; a member's EOS sends its held frames at once;
- **each stream its own order and output**: a batch's results are written into each frame's buffer with that
  member's metadata settings (``unique-id``, ``meta``), and the buffer goes to its member's output queue. The
  member's own streaming thread pushes what is queued each time it brings a frame (as a single element
  pushes from its chain function: no other thread wakes for it); a member whose streaming thread is waiting
  (for room, at a drain) or has not come back within :data:`PUSH_GRACE_S` has its queue pushed by its output
  thread instead (woken by the frame's delivery, or by the group's sweeper thread). A member whose downstream
  blocks holds only itself (its streaming thread waits once it has ``batch-size * (in-flight + 2)`` frames out),
  never the group;
- frames of different sizes or formats are never mixed in one model call: a frame whose layout differs from
  the open batch's seals that batch first.

The group's batching settings (``batch-size``, ``batch-timeout``, ``in-flight``, thresholds, ``interval``,
``max-detections``) and its model are those of the member that started it (the *owner*); ``interval`` counts
each stream's own frames. A member's flush (a seek) drops only that member's frames. Hot-swapping the model
(``model-engine`` while playing) is done on the owner and serves every member from the next batch on.

Designed to take GStreamer 1.28's GstAnalyticsBatchMeta later: a batch is a list of (member, buffer) items
whatever produced it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Any

from pyinfer._gi import Gst
from pyinfer.elements._base import writable
from pyinfer.pipeline import InferPipeline, Job

log = logging.getLogger(__name__)

#: A partial batch waits at most this long when the owner's batch-timeout is 0 (nvstreammux's usual 40 ms).
DEFAULT_TIMEOUT_NS = 40_000_000
#: Finished buffers wait at most about this long for their member's streaming thread to push them (it comes back
#: with the stream's next frame) before the member's output thread pushes them.
PUSH_GRACE_S = 0.005
#: ``PYINFER_GROUP_PUSH=thread``: every buffer pushed by its member's output thread (the behaviour before the
#: streaming threads pushed; for A/B measurements).
PUSH_MODE = os.environ.get("PYINFER_GROUP_PUSH", "stream")

_GROUPS: dict[str, BatchGroup] = {}
_GROUPS_LOCK = threading.Lock()


class GroupError(Exception):
    """A member cannot join its group (another model, a group that failed to start)."""


@dataclasses.dataclass
class GroupItem:
    """One buffer in a group batch: which member it came from and in which of its flush epochs."""

    member: Member
    buf: Gst.Buffer
    infer: bool
    epoch: int
    t_in: int = 0  # time.monotonic_ns() when the member took it (stats-interval's latency)
    held: Any = None  # the reference submit_input_buffer handed over (infer._CallerRef)


class Member:
    """A pyinfer element's side of its group: its output queue and the thread that pushes it.

    One lock, two conditions: the output thread waits for items (``_has_items``), the streaming thread for room
    and a drain or flush-stop for pushes to finish (``_room``), so a wake-up goes only to the thread it concerns
    (each one costs a hand-over of the GIL). The output thread takes every queued item at once and pushes them
    in order before it waits again.
    """

    def __init__(self, element: Any) -> None:
        self.element = element
        self.epoch = 0
        self.frames_seen = 0
        self.outstanding = 0  # buffers taken and not yet pushed (or dropped)
        self.limit = 1
        self.flow = Gst.FlowReturn.OK
        lock = threading.RLock()  # guards the fields below; three conditions on it
        self._cond = threading.Condition(lock)
        self._has_items = threading.Condition(lock)
        self._room = threading.Condition(lock)
        self._queue: collections.deque[GroupItem] = collections.deque()
        self._stopping = False
        self._pushing = False
        self._waiting = False  # the streaming thread waits (for room, a drain): it will not push meanwhile
        self._queued_at = 0.0  # time.monotonic() of the oldest queued item (for the sweeper)
        self.inline = PUSH_MODE != "thread"
        self._thread = threading.Thread(target=self._run, name=f"pyinfer-out-{element.get_name()}", daemon=True)
        self._thread.start()

    # -- the streaming thread ---------------------------------------------------------------------------
    def admit(self) -> bool:
        """Wait for room (``limit`` buffers out at most); False if flushed or stopped meanwhile."""
        with self._cond:
            epoch = self.epoch
            while self.outstanding >= self.limit and not self._stopping and epoch == self.epoch:
                self._wait_room(0.1)
            if self._stopping or epoch != self.epoch:
                return False
            self.outstanding += 1
            return True

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every buffer taken so far is pushed or dropped."""
        self.pump()
        with self._cond:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while self.outstanding and not self._stopping:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wait_room(0.1 if left is None else min(0.1, left))
            return True

    def _wait_room(self, timeout_s: float) -> None:
        """Wait on ``_room`` (the caller holds the lock) as the streaming thread: meanwhile deliveries wake the
        output thread, and what is already queued is handed to it now."""
        self._waiting = True
        if self._queue:
            self._has_items.notify()
        try:
            self._room.wait(timeout_s)
        finally:
            self._waiting = False

    def pump(self, keep: GroupItem | None = None) -> None:
        """On the streaming thread: push what is queued (in order), unless the output thread is pushing (or the
        member pushes on its output thread only: ``PYINFER_GROUP_PUSH=thread``).

        ``keep``: the buffer of the ``submit_input_buffer`` call this runs in, left queued (for the next call, the
        drain at EOS, or the output thread after PUSH_GRACE_S). When a Python vfunc returns, PyGObject takes and
        drops a reference on each boxed argument it was lent (``pygi_boxed_copy_in_place`` in the marshal
        clean-up), after the Python code: a buffer pushed inside its own call had been freed downstream by then,
        and was freed a second time. With a model that finishes a batch at once, 8 streams of a batch-group
        crashed or hung in 4 runs of 6 (``bench/element_overhead.py --only group8_b8,small_b16``); 0 of 16 since.
        """
        if not self.inline:
            return
        with self._cond:
            if self._pushing or not self._queue or self._stopping:
                return
            items = self._take(keep)
            if not items:
                return
            self._pushing = True
        self._push_items(items, keep)

    def _take(self, keep: GroupItem | None = None) -> list[GroupItem]:
        """What is queued, in order (the caller holds the lock), less ``keep`` where it is the last: that one stays
        queued (see :meth:`pump`)."""
        items = list(self._queue)
        self._queue.clear()
        if keep is not None and items and items[-1] is keep:
            self._queue.append(items.pop())
            self._queued_at = time.monotonic()
        return items

    def flush(self) -> None:
        """Forget this member's buffers everywhere (queued here, in the group's batches): a new epoch.

        ``outstanding`` counts the current epoch's buffers only: the flushed ones, wherever they are (queued
        here, in the open batch, in flight on the worker, being pushed), are never counted back, so it starts
        again from 0 (counting only the queued ones left those elsewhere counted for ever: after enough
        seeks the streaming thread waited for room that never came, and an EOS after a seek waited for ever).
        """
        with self._cond:
            self.epoch += 1
            self._queue.clear()
            self.outstanding = 0
            self._room.notify_all()

    def flush_stop(self) -> None:
        """After a flush: wait for pushes that were under way, then accept buffers again."""
        with self._cond:
            self._room.wait_for(lambda: not self._pushing or self._stopping, 5.0)
            self.flow = Gst.FlowReturn.OK

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._has_items.notify_all()
            self._room.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(10)

    # -- the group's worker -----------------------------------------------------------------------------
    def deliver(self, item: GroupItem) -> None:
        """Queue a finished buffer for pushing (never blocks the group's worker)."""
        self.deliver_many([item])

    def deliver_many(self, items: list[GroupItem]) -> None:
        """Queue finished buffers, in order, for pushing: one wake-up for all of them."""
        with self._cond:
            queued = False
            was_empty = not self._queue
            for item in items:
                if item.epoch != self.epoch or self._stopping:
                    if item.epoch == self.epoch:
                        self.outstanding -= 1
                    continue
                self._queue.append(item)
                queued = True
            if queued:
                if not self.inline or self._waiting:
                    self._has_items.notify()  # the streaming thread will not come to push them: the output thread
                elif was_empty:
                    self._queued_at = time.monotonic()  # the sweeper hands them over if nobody comes for them
            if len(self._queue) < len(items):  # some were dropped: room for the streaming thread
                self._room.notify_all()

    def dropped(self, item: GroupItem) -> None:
        """A buffer of the current epoch that will not be pushed (the group failed its batch)."""
        with self._cond:
            if item.epoch == self.epoch:
                self.outstanding -= 1
            self._room.notify_all()

    def stale(self, now: float) -> bool:
        """Whether queued buffers waited past the grace time for the streaming thread (the sweeper asks)."""
        return bool(self._queue) and not self._pushing and now - self._queued_at >= PUSH_GRACE_S

    def wake(self) -> None:
        """The sweeper: the streaming thread did not come back in time; the output thread pushes the queue."""
        with self._cond:
            if self._queue and not self._pushing:
                self._has_items.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._has_items.wait()
                if self._stopping:
                    return
                if self._pushing:  # the streaming thread is pushing: it takes what is queued when it is done
                    self._has_items.wait(PUSH_GRACE_S)
                    continue
                items = self._take()
                self._pushing = True
            self._push_items(items)

    def _push_items(self, items: list[GroupItem], keep: GroupItem | None = None) -> None:
        """Push ``items`` in order (the caller set ``_pushing``); then count them out and make room."""
        push = self.element._push
        while True:
            try:
                for item in items:
                    ret = Gst.FlowReturn.OK
                    if self.flow == Gst.FlowReturn.OK and item.epoch == self.epoch:  # not flushed meanwhile
                        ret = push(self.element._srcpad, item)
                        if ret == Gst.FlowReturn.OK:
                            self.element._stats.note(self.element, item.t_in)
                        elif self.flow == Gst.FlowReturn.OK:
                            self.flow = ret  # the next ones are not pushed (as upstream will be told)
            finally:
                with self._cond:
                    for item in items:
                        if item.epoch == self.epoch:
                            self.outstanding -= 1
                    self._room.notify_all()
                    items = []
                    if self._queue and not self._stopping:  # delivered while we pushed: ours too, in order
                        items = self._take(keep)
                    if not items:
                        self._pushing = False
                        if not self._queue:
                            self._queued_at = 0.0
            if not items:
                return


class BatchGroup:
    """The shared engine, open batch and worker of one ``batch-group`` (see the module docs)."""

    def __init__(self, name: str, owner: Any, engine: Any, cfg: Any) -> None:
        self.name = name
        self.owner = owner
        self.engine = engine
        self.cfg = cfg
        self.model_id = 0
        self.members: dict[Any, Member] = {}
        self.batch_size = owner.batch_size
        self.in_flight = owner.in_flight
        timeout_us = owner.batch_timeout
        self.timeout_ns: int | None = None if timeout_us < 0 else (timeout_us * 1000 or DEFAULT_TIMEOUT_NS)
        self._lock = threading.Lock()
        self._batch: Any = None  # the open batch: an infer._OpenBatch whose items are GroupItems
        self._layout: Any = None  # the open batch's frame layout
        self._rings: dict[Any, Any] = {}
        self.closed = False
        self.pipe = InferPipeline(self._deliver, depth=self.in_flight, idle=self._on_idle,
                                  name=f"pyinfer-group-{name}")  # fmt: skip
        self._sweeper = threading.Thread(target=self._sweep, name=f"pyinfer-sweep-{name}", daemon=True)
        self._sweeper.start()

    def _sweep(self) -> None:
        """Hand finished buffers that waited past PUSH_GRACE_S for their streaming thread to its output thread
        (a stalled or slow stream: its next frame is not coming soon). One thread for the whole group."""
        while not self.closed:
            time.sleep(PUSH_GRACE_S)
            now = time.monotonic()
            for member in list(self.members.values()):
                if member.stale(now):
                    member.wake()

    # -- membership ---------------------------------------------------------------------------------------
    @classmethod
    def join(cls, name: str, element: Any, cfg: Any, build: Any) -> tuple[BatchGroup, Member]:
        """Join (or start, building the engine with ``build(cfg)``) the group ``name``.

        Raises:
            GroupError: the group runs another model than ``cfg`` asks for.
            Whatever ``build`` raises, for the member that starts the group.
        """
        with _GROUPS_LOCK:
            group = _GROUPS.get(name)
            if group is None or group.closed:
                engine = build(cfg)
                group = _GROUPS[name] = cls(name, element, engine, cfg)
                log.info("batch-group %s: started by %s (batch-size %d)", name, element.get_name(), group.batch_size)
            else:
                mine, theirs = _model_key(cfg), _model_key(group.cfg)
                if mine != theirs:
                    diff = ", ".join(f"{k} {theirs[k]!r} (this element: {mine[k]!r})" for k in mine
                                     if mine[k] != theirs[k])  # fmt: skip
                    raise GroupError(f"batch-group {name!r} already runs another model, set by "
                                     f"{group.owner.get_name()}: {diff}")  # fmt: skip
            member = Member(element)
            member.limit = group.batch_size * (group.in_flight + 2)
            group.members[element] = member
        return group, member

    def leave(self, element: Any) -> None:
        """A member stops: its buffers are dropped; the last member out stops the group and frees the model."""
        member = self.members.get(element)
        if member is None:
            return
        member.flush()
        member.stop()
        with _GROUPS_LOCK:
            self.members.pop(element, None)
            last = not self.members
            if not last and element is self.owner:  # the next member's settings rule from now on
                self.owner = next(iter(self.members))
            if last:
                self.closed = True
                if _GROUPS.get(self.name) is self:
                    del _GROUPS[self.name]
        if last:
            self.pipe.flush()
            with self._lock:
                batch, self._batch = self._batch, None
            if batch is not None:
                batch.drop()
            self.pipe.stop()
            for ring in self._rings.values():
                ring.close()
            self._rings.clear()
            self.engine = None
            log.info("batch-group %s: stopped", self.name)

    # -- the members' streaming threads -----------------------------------------------------------------
    def submit(self, element: Any, buf: Gst.Buffer, held: Any = None) -> Gst.FlowReturn:
        """Take one buffer of ``element`` into the open batch (sealing it when full)."""
        from pyinfer.elements.infer import _Flushing, _OpenBatch

        member = self.members.get(element)
        if member is None or self.closed:
            return Gst.FlowReturn.FLUSHING
        if member.flow != Gst.FlowReturn.OK:
            return member.flow
        if not member.admit():
            return Gst.FlowReturn.FLUSHING
        owner = self.owner
        settings = owner._settings()
        layout = element._layout
        infer = member.frames_seen % (settings.interval + 1) == 0
        member.frames_seen += 1
        item = GroupItem(member, buf, infer, member.epoch, time.monotonic_ns(), held)
        frame = None
        if infer:
            # Mapped before the group's lock is taken: the members' streaming threads map their frames side by
            # side and hold the lock only to add them (mapping under it serialised 8 NVDEC streams on the H200:
            # half of their samples waited for the lock).
            try:
                frame = self._map(buf, layout)
            except Exception as exc:
                ret = _frame_failed(element, member, item, exc)
                if ret is not None:
                    return ret
                infer = False
        try:
            with self._lock:
                batch = self._batch
                if batch is not None and infer and batch.n_infer and self._layout != layout:
                    self._seal()  # frames of another size or format: never in the same model call
                    batch = None
                if batch is None:
                    self._maybe_swap()
                    batch = self._batch = _OpenBatch(self.engine, settings, self.model_id, self.batch_size)
                    batch.read_in_place = False  # frames of several buffers, copied into the group's staging
                    self._layout = layout
                if infer:
                    if not batch.n_infer:
                        self._layout = layout
                    try:
                        frame, mapped = None, frame  # the batch owns it from here (and unmaps it)
                        self._add_frame(batch, mapped, buf, layout)
                    except _Flushing:
                        member.dropped(item)
                        return Gst.FlowReturn.FLUSHING
                    except Exception as exc:
                        ret = _frame_failed(element, member, item, exc)
                        if ret is not None:
                            return ret
                        infer = False
                batch.items.append(item)
                if batch.n_infer >= self.batch_size or batch.n_infer == 0:
                    self._seal()
        finally:
            if frame is not None:  # not taken by the batch (an error before _add_frame)
                frame.close()
        if member.inline:
            member.pump(keep=item)  # this stream's finished buffers go out from here, as a single element's do
        return member.flow

    def drain(self, element: Any) -> None:
        """``element``'s EOS (or another serialized event): its held frames go out now, then it waits for them."""
        member = self.members.get(element)
        if member is None:
            return
        with self._lock:
            batch = self._batch
            if batch is not None and any(item.member is member for item in batch.items):
                self._seal()
        member.drain()

    def flush(self, element: Any) -> None:
        member = self.members.get(element)
        if member is not None:
            member.flush()

    def flush_stop(self, element: Any) -> None:
        member = self.members.get(element)
        if member is not None:
            member.flush_stop()

    # -- internals (the caller holds _lock) -------------------------------------------------------------
    def _maybe_swap(self) -> None:
        """Between batches: the owner's hot-swapped model serves the whole group."""
        ready = self.owner._swapper.take_ready()
        if ready is None:
            return
        engine, result = ready
        self.engine = engine
        self.owner._engine = engine
        self.model_id = self.owner._model_id = result.generation
        log.info("batch-group %s: model %s serving, decoder %s", self.name, result.path, engine.decoder_choice)
        self.owner._announce(result, first_frame=self.owner._group_member.frames_seen)

    def _map_device(self) -> str:
        """Where CUDA memory frames are viewed from: the engine's device (as _OpenBatch.map_device)."""
        device = self.engine.model.device
        return "cuda" if device.type == "cpu" else str(device)

    def _map(self, buf: Gst.Buffer, layout: Any) -> Any:
        """Map one frame for the group's engine (on the streaming thread, without the group's lock)."""
        from pyinfer.frames.video import map_frame

        return map_frame(buf, layout, self._map_device())

    def _add_frame(self, batch: Any, frame: Any, buf: Gst.Buffer, layout: Any) -> None:
        """Add a mapped frame to the open batch (the caller holds _lock); the batch unmaps it when done."""
        from pyinfer.elements.infer import _Flushing
        from pyinfer.frames.video import map_frame
        from pyinfer.pipeline import StagingRing

        if frame is None or frame.device != batch.map_device:  # a hot swap moved the model meanwhile
            if frame is not None:
                frame.close()
            frame = map_frame(buf, layout, batch.map_device)
        try:
            if batch.slot is None:
                ring = self._ring(layout)
                batch.ring, batch.slot = ring, ring.acquire()
                if batch.slot is None:
                    raise _Flushing()
            if layout.memory == "cuda":
                batch.gather.append((batch.n_infer, frame.planes))
            else:
                batch.copies += StagingRing.put_async(batch.slot, batch.n_infer, frame.planes)
        finally:
            batch.mapped.append(frame)
        batch.n_infer += 1

    def _ring(self, layout: Any) -> Any:
        from pyinfer.pipeline import StagingRing

        device = self.engine.model.device
        where = str(device) if layout.memory == "cuda" else "cpu"
        key = (tuple(layout.plane_shapes()), where)
        ring = self._rings.get(key)
        if ring is None:
            ring = StagingRing(layout.plane_shapes(), self.batch_size, device=where, pinned=device.type == "cuda",
                               slots=self.in_flight + 2)  # fmt: skip
            self._rings[key] = ring
        return ring

    def _seal(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        self.pipe.put(batch.job(self._layout))

    def _on_idle(self) -> Job | None:
        if self.timeout_ns is None:
            return None
        if not self._lock.acquire(blocking=False):
            return None
        try:
            batch = self._batch
            if batch is None or time.monotonic_ns() - batch.opened_ns < self.timeout_ns:
                return None
            self._batch = None
            return batch.job(self._layout)
        finally:
            self._lock.release()

    # -- the group's worker ---------------------------------------------------------------------------
    def _deliver(self, job: Job, detections: list | None, error: BaseException | None) -> None:
        items: list[GroupItem] = job.tokens
        n = sum(item.infer for item in items)
        if error is None and detections is not None and len(detections) != n:
            from pyinfer.errors import DecodeError

            error = DecodeError(f"the model returned {len(detections)} results for a batch of {n} frames")
        job.done()
        from pyinfer.elements.infer import _warning_key

        take = getattr(job.engine, "take_warnings", None)
        for text in take() if take is not None else ():
            self.owner._warn_limited(_warning_key(text), Gst.StreamError.DECODE, text)
        if error is not None:
            detections = None
            failed: set[Any] = set()
            for item in items:
                el = item.member.element
                if el in failed:
                    continue
                if el._failed(error, sum(i.infer for i in items if i.member is item.member)) != Gst.FlowReturn.OK:
                    item.member.flow = Gst.FlowReturn.ERROR
                    failed.add(el)
        batch = job.context
        dets = iter(detections or ())
        ready: dict[Member, list[GroupItem]] = {}  # per member, in order: handed over together after the batch
        for item in items:
            member = item.member
            frame_dets = next(dets) if item.infer and detections is not None else None
            if member.flow == Gst.FlowReturn.ERROR or item.epoch != member.epoch:
                member.dropped(item)
                continue
            el = member.element
            codec, uid = el._codec, el._settings().unique_id  # cached per property change, not a GObject read
            try:
                with writable(item.buf):
                    inferred = frame_dets is not None
                    if inferred:
                        codec.write_detections(item.buf, frame_dets, unique_id=uid, model_id=batch.model_id)
                    codec.write_frame_info(item.buf, inferred=inferred, unique_id=uid, model_id=batch.model_id)
            except Exception as exc:
                if el._failed(exc, 1) != Gst.FlowReturn.OK:
                    member.flow = Gst.FlowReturn.ERROR
                    member.dropped(item)
                    continue
            ready.setdefault(member, []).append(item)
        for member, done in ready.items():
            member.deliver_many(done)


def _frame_failed(element: Any, member: Member, item: GroupItem, exc: Exception) -> Gst.FlowReturn | None:
    """A frame that could not be mapped or batched: the flow to return (the buffer dropped), or None when
    ``on-error`` lets it pass uninferred (``item.infer`` is cleared)."""
    ret = element._failed(exc, 1)
    if ret != Gst.FlowReturn.OK:
        member.dropped(item)
        return ret
    item.infer = False
    return None


def _model_key(cfg: Any) -> dict[str, Any]:
    """What two members must agree on to share one engine."""
    keep = ("model", "backend", "precision", "device", "labels_file", "decoder", "postprocess", "input_width",
            "input_height", "cuda_graphs", "compile", "channels_last", "allow_pickle")  # fmt: skip
    return {k: getattr(cfg, k) for k in keep}
