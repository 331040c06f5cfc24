"""A slow model beside the video: a bounded request queue, a worker thread, and the latest answers (issue #16).

The streaming thread never waits for the model. It puts a :class:`Request` (a frame's pixels, or its objects'
crops, copied out of the buffer) into a :class:`RequestQueue` of at most ``queue-size`` requests; when the queue
is full, ``drop-policy`` drops the oldest waiting request (the model always answers the freshest frames) or the
new one. The :class:`AsyncWorker` thread takes up to ``batch-size`` images at a time, reads the prompt once per
model call (so a prompt set while playing applies from the next call on, never inside one), checks the answers
against the contract (:func:`pyinfer.text.check_answers`) and keeps them in an :class:`AnswerStore`, from which
the streaming thread attaches them to the frames that come next: the whole frame's answer to every later frame,
an object's answer to the same object (by track id; untracked objects by overlap with the box that was asked
about), each with the number of the frame the model read.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyinfer.text import Answer, check_answers

log = logging.getLogger(__name__)

DROP_POLICIES = ("oldest", "newest")
#: Overlap above which an untracked object is taken for the one an answer was computed on.
MATCH_IOU = 0.5
#: Tracked objects whose answers are kept; the longest unanswered go first past this.
MAX_TRACKS = 4096


@dataclass
class Request:
    """One frame's images for the model: the whole frame, or its selected objects' crops."""

    frame_no: int
    pts: int | None
    images: list[np.ndarray]  # (H, W, 3) uint8 RGB each
    boxes: np.ndarray | None = None  # (N, 4) float32 xyxy of the crops in frame pixels; None: the whole frame
    track_ids: list[int | None] | None = None  # per crop: the object's track id, or None (untracked)
    objects: list[int] | None = None  # per crop: the object's index on its frame
    sources: list[int] | None = None  # per image: its stream (DeepStream's source_id); None: all stream 0
    frame_nos: list[int] | None = None  # per image: its frame number in its stream; None: all ``frame_no``


@dataclass(frozen=True)
class Answered:
    """A model's answer to one image of a request, with the prompt it answered."""

    answer: Answer
    prompt: str
    frame_no: int
    pts: int | None
    box: tuple[float, float, float, float] | None = None  # the crop's box; None: the whole frame
    track_id: int | None = None
    object_index: int = -1  # the object's index on the frame the model read
    source: int = 0  # the stream it is about (DeepStream's source_id; 0 on plain GStreamer)


class RequestQueue:
    """At most ``size`` requests; a full queue drops per ``policy`` (``oldest`` or ``newest``)."""

    def __init__(self, size: int, policy: str = "oldest") -> None:
        self.size = max(1, int(size))
        self.policy = policy
        self._items: collections.deque[Request] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.peak = 0
        self.submitted = 0
        self.dropped = 0

    def has_room(self) -> bool:
        """Whether a request put now would be kept without dropping another (a hint: no lock)."""
        return len(self._items) < self.size

    def count_submitted(self) -> None:
        """Count a request answered at once (``mode=sync``), never queued."""
        with self._cond:
            self.submitted += 1

    def refuse(self) -> None:
        """Count a request dropped before it was made (``newest`` and full: its pixels are not even copied)."""
        with self._cond:
            self.submitted += 1
            self.dropped += 1

    def put(self, req: Request) -> bool:
        """Queue ``req``; False when the policy dropped it (``newest`` and full). A dropped oldest is counted."""
        with self._cond:
            if self._closed:
                return False
            self.submitted += 1
            if len(self._items) >= self.size:
                self.dropped += 1
                if self.policy == "newest":
                    return False
                self._items.popleft()
            self._items.append(req)
            self.peak = max(self.peak, len(self._items))
            self._cond.notify()
            return True

    def take(self, max_images: int, timeout_s: float = 0.2) -> list[Request] | None:
        """Requests for one model call: the first waiting, then more while their images fit ``max_images``.

        Waits up to ``timeout_s`` for one; ``[]`` when none came, None once closed.
        """
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout_s)
            if self._closed:
                return None
            out: list[Request] = []
            images = 0
            while self._items and (not out or images + len(self._items[0].images) <= max_images):
                req = self._items.popleft()
                images += len(req.images)
                out.append(req)
            return out

    def clear(self) -> int:
        """Drop every waiting request (a flush); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class AnswerStore:
    """The latest answers: the whole frame's, per tracked object, and the last request's untracked objects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frame: Answered | None = None
        self._tracks: dict[int, Answered] = {}
        self._untracked: list[Answered] = []

    def update(self, answers: list[Answered]) -> None:
        """One request's answers replace the ones before them (the frame's, or its objects')."""
        with self._lock:
            untracked = []
            for a in answers:
                if a.box is None:
                    if self.frame is None or a.frame_no >= self.frame.frame_no:
                        self.frame = a
                elif a.track_id is not None:
                    old = self._tracks.get(a.track_id)
                    if old is None or a.frame_no >= old.frame_no:
                        self._tracks[a.track_id] = a
                else:
                    untracked.append(a)
            if untracked:
                self._untracked = untracked
            if len(self._tracks) > MAX_TRACKS:
                keep = sorted(self._tracks.items(), key=lambda kv: kv[1].frame_no)[len(self._tracks) - MAX_TRACKS :]
                self._tracks = dict(keep)

    def for_objects(self, boxes: np.ndarray, track_ids: list[int | None]) -> list[Answered | None]:
        """Per object (its box xyxy and track id), the latest answer about it, or None."""
        with self._lock:
            tracks, untracked = self._tracks, list(self._untracked)
        out: list[Answered | None] = [tracks.get(t) if t is not None else None for t in track_ids]
        if untracked and any(o is None for o in out):
            asked = np.array([a.box for a in untracked], np.float32)
            iou = box_iou(np.asarray(boxes, np.float32), asked)
            for i in range(len(out)):
                if out[i] is None and track_ids[i] is None and iou.shape[1]:
                    j = int(iou[i].argmax())
                    if iou[i, j] >= MATCH_IOU:
                        out[i] = untracked[j]
        return out

    def clear(self) -> None:
        with self._lock:
            self.frame, self._tracks, self._untracked = None, {}, []


class SourceStores:
    """One :class:`AnswerStore` per stream (DeepStream batches carry several; plain GStreamer has stream 0):
    answers about one camera never land on another's frames."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[int, AnswerStore] = {}

    def get(self, source: int) -> AnswerStore:
        with self._lock:
            store = self._stores.get(source)
            if store is None:
                store = self._stores[source] = AnswerStore()
            return store

    def update(self, answers: list[Answered]) -> None:
        by_source: dict[int, list[Answered]] = {}
        for a in answers:
            by_source.setdefault(a.source, []).append(a)
        for source, got in by_source.items():
            self.get(source).update(got)

    def clear(self) -> None:
        with self._lock:
            self._stores.clear()


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


class AsyncWorker:
    """The thread that runs the model on queued requests.

    Args:
        model: ``model(images, prompt) -> list`` (the text-model contract).
        queue: where requests come from.
        store: where answers go (an :class:`AnswerStore` or :class:`SourceStores`: anything with ``update``).
        prompt: called once per model call for the prompt to use.
        batch: images per model call at most.
        on_answers: called on this thread with each request's answers (after they are stored).
        on_error: called on this thread with an exception from the model or its answers; returns whether to
            go on (on-error=skip) or stop.
    """

    def __init__(
        self,
        model: Callable[[list, str], Any],
        queue: RequestQueue,
        store: AnswerStore | SourceStores,
        *,
        prompt: Callable[[], str],
        batch: int,
        on_answers: Callable[[list[Answered]], None],
        on_error: Callable[[BaseException], bool],
    ) -> None:
        self.model, self.queue, self.store = model, queue, store
        self.prompt, self.batch = prompt, max(1, int(batch))
        self.on_answers, self.on_error = on_answers, on_error
        self.calls = 0
        self.answered = 0
        self.prompts: list[str] = []  # the prompt of each model call, in order (tests, stats)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pyinfer-async-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop taking requests; waits up to ``timeout_s`` for a model call under way. False: still in it."""
        self._stopping = True
        self.queue.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping:
            reqs = self.queue.take(self.batch)
            if reqs is None:
                return
            if not reqs:
                continue
            try:
                answers = self._answer(reqs)
            except BaseException as exc:  # user code: anything, SystemExit too; the video goes on
                if self._stopping or not self.on_error(exc):
                    return
                continue
            if self._stopping:
                return
            for got in answers:
                self.store.update(got)
                self.answered += len(got)
                self.on_answers(got)

    def answer_now(self, reqs: list[Request]) -> bool:
        """Answer ``reqs`` on the calling thread (``mode=sync``): stored and reported as the thread would; False
        when the model failed and the stream must stop (on_error said so)."""
        try:
            answers = self._answer(reqs)
        except BaseException as exc:  # user code: anything
            return self.on_error(exc)
        for got in answers:
            self.store.update(got)
            self.answered += len(got)
            self.on_answers(got)
        return True

    def _answer(self, reqs: list[Request]) -> list[list[Answered]]:
        images = [img for r in reqs for img in r.images]
        answers: list[tuple[Answer, str]] = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch]
            prompt = self.prompt()  # once per call: a new prompt applies between calls
            self.prompts.append(prompt)
            self.calls += 1
            out = self.model(chunk, prompt)
            answers += [(a, prompt) for a in check_answers(out, len(chunk))]
        result: list[list[Answered]] = []
        k = 0
        for r in reqs:
            got = []
            for i in range(len(r.images)):
                answer, prompt = answers[k]
                k += 1
                source = r.sources[i] if r.sources is not None else 0
                frame_no = r.frame_nos[i] if r.frame_nos is not None else r.frame_no
                if r.boxes is None:
                    got.append(Answered(answer, prompt, frame_no, r.pts, source=source))
                else:
                    box = tuple(float(v) for v in r.boxes[i])
                    track = r.track_ids[i] if r.track_ids is not None else None
                    index = r.objects[i] if r.objects is not None else i
                    got.append(Answered(answer, prompt, frame_no, r.pts, box, track, index, source))  # type: ignore[arg-type]
            result.append(got)
        return result
