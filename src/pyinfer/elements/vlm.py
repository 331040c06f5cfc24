"""``pyvlm``: a slow model (a vision-language model, a captioner, any slow callable) beside the video (issue #16).

Frames, or the objects an upstream pyinfer found (``process-mode=secondary``), go to the model on a thread of
its own, at most every ``interval+1``-th frame and through a queue of at most ``queue-size`` requests
(``drop-policy`` says which goes when it is full); the video never waits for it. Answers attach to the frames
that come next, each with the number of the frame the model read: the whole frame's answer to every later
frame, an object's answer to the same object (by track id, or by overlap when untracked). They go out as text
records (:mod:`pyinfer.meta.text`), as ``pyinfer-text`` element messages (one per answer, when it comes), and,
for open-vocabulary detectors, as detections. ``prompt`` may change while playing: it applies from the next
model call. The model is ``text-model=package.module:factory`` (contract: :mod:`pyinfer.text`).

Example::

    gst-launch-1.0 videotestsrc num-buffers=300 ! video/x-raw,format=RGB,width=640,height=360 ! \\
        pyvlm text-model=pyinfer.text.demo:load prompt="how many shapes?" ! pyosd ! videoconvert ! autovideosink
"""

from __future__ import annotations

import logging
import time

import numpy as np

from pyinfer._gi import GObject, Gst, GstBase
from pyinfer.elements._async import (
    Answered,
    AnswerStore,
    AsyncWorker,
    Request,
    RequestQueue,
)
from pyinfer.elements._base import (
    describe_exception,
    error_debug,
    post_error,
    post_warning,
    ready_property,
    writable,
)
from pyinfer.elements._enums import OnError, ProcessMode, VlmDropPolicy, choice_property
from pyinfer.elements._video import TEMPLATES, PackedVideoFilter
from pyinfer.errors import ConfigError, DecodeError, DependencyError, PyInferError
from pyinfer.frames.system import frame_array
from pyinfer.text import TextResult

log = logging.getLogger(__name__)

_RW = GObject.ParamFlags.READWRITE
WARNING_INTERVAL_S = 5.0


class VlmElement(PackedVideoFilter):
    """Sends frames or object crops to a slow text model without holding the video; attaches its answers."""

    __gtype_name__ = "PyVlm"
    __gstmetadata__ = (
        "Python slow-model inference",
        "Filter/Analyzer/Video",
        "Runs a slow model (vision-language model, captioner) on frames or object crops beside the video and "
        "attaches its text answers to the next frames",
        "pyinfer developers",
    )
    __gsttemplates__ = TEMPLATES

    text_model = ready_property(
        "text-model",
        type=str, default="", nick="Text model",
        blurb="package.module:factory or /path/file.py:factory: called once at start (with model-config when "
        "set), it returns model(images, prompt) -> one str (or dict of boxes, labels, scores) per image",
    )  # fmt: skip
    model_config = ready_property(
        "model-config",
        type=str, default="", nick="Model config",
        blurb="Passed to the text-model factory as its one argument when set (e.g. a local weights folder)",
    )  # fmt: skip
    prompt = GObject.Property(
        type=str, default="", nick="Prompt",
        blurb="Passed to the model with each call; set while playing, it applies from the next model call on "
        "(each answer carries the prompt it answered)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    process_mode = choice_property(
        "process-mode",
        type=ProcessMode, default="primary", nick="Process mode",
        blurb="primary: whole frames go to the model; secondary: the crops of the objects an upstream pyinfer "
        "found, each answer attached to its object",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    operate_on_gie_id = GObject.Property(
        type=int, default=-1, minimum=-1, maximum=2**31 - 1, nick="Operate on GIE id",
        blurb="Secondary: only objects whose producer has this unique-id (-1: any producer)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    operate_on_class_ids = GObject.Property(
        type=str, default="", nick="Operate on class ids",
        blurb="Secondary: only objects of these class ids, e.g. 0;2; empty: every class",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    interval = GObject.Property(
        type=int, default=0, minimum=0, maximum=1_000_000, nick="Interval",
        blurb="Frames skipped between two frames offered to the model (0: every frame is offered; the queue "
        "and its drop-policy bound what the model gets)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    batch_size = ready_property(
        "batch-size",
        type=int, default=1, minimum=1, maximum=1024, nick="Batch size",
        blurb="Images per model call at most (frames, or crops in secondary mode)",
    )  # fmt: skip
    queue_size = ready_property(
        "queue-size",
        type=int, default=1, minimum=1, maximum=1024, nick="Queue size",
        blurb="Requests (a frame, or one frame's crops) waiting for the model at most; memory stays flat "
        "whatever the model's speed",
    )  # fmt: skip
    drop_policy = choice_property(
        "drop-policy",
        type=VlmDropPolicy, default="oldest", nick="Drop policy",
        blurb="A full queue drops the oldest waiting request (the model answers the freshest frames) or the "
        "newest (the one offered)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    max_age = GObject.Property(
        type=int, default=0, minimum=0, maximum=2**31 - 1, nick="Max age",
        blurb="Frames after the one it was computed on that an answer is still attached (0: until a newer one)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    unique_id = GObject.Property(
        type=int, default=16, minimum=0, maximum=2**31 - 1, nick="Unique ID",
        blurb="Stamped on every answer as its producer",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    on_error = choice_property(
        "on-error",
        type=OnError, default="fail", nick="On error",
        blurb="A model call that raises or breaks the contract: fail (ERROR on the bus, the pipeline stops) or "
        "skip (a rate-limited WARNING; the frames go on with the answers before)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Submitted", blurb="Requests offered to the queue since start",
                      flags=GObject.ParamFlags.READABLE)  # fmt: skip
    def submitted(self) -> int:
        return self._queue.submitted if self._queue is not None else 0

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Dropped",
                      blurb="Requests dropped by the drop-policy since start (never answered)",
                      flags=GObject.ParamFlags.READABLE)  # fmt: skip
    def dropped(self) -> int:
        return self._queue.dropped if self._queue is not None else 0

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Answered", blurb="Images the model answered since start",
                      flags=GObject.ParamFlags.READABLE)  # fmt: skip
    def answered(self) -> int:
        return self._worker.answered if self._worker is not None else 0

    def __init__(self) -> None:
        super().__init__()
        self._queue: RequestQueue | None = None
        self._worker: AsyncWorker | None = None
        self._store = AnswerStore()
        self._frame_no = 0
        self._failed = False
        self._last_warning = -WARNING_INTERVAL_S

    # -- state -------------------------------------------------------------------------------------
    def do_start(self) -> bool:
        from pyinfer.params import parse_class_ids
        from pyinfer.text.loader import load_text_model

        try:
            parse_class_ids(self.operate_on_class_ids)
            model = load_text_model(self.text_model, self.model_config)
        except PyInferError as exc:
            post_error(self, _start_code(exc), str(exc), error_debug(exc))
            return False
        except BaseException as exc:  # a factory may even exit
            post_error(self, Gst.LibraryError.INIT, f"text-model {self.text_model}: {describe_exception(exc)}",
                       error_debug(exc))  # fmt: skip
            return False
        self._frame_no = 0
        self._failed = False
        self._store.clear()
        self._queue = RequestQueue(self.queue_size, self.drop_policy)
        self._worker = AsyncWorker(
            model, self._queue, self._store, prompt=lambda: str(self.prompt or ""), batch=self.batch_size,
            on_answers=self._on_answers, on_error=self._on_model_error,
        )  # fmt: skip
        self._worker.start()
        return True

    def do_stop(self) -> bool:
        worker, self._worker = self._worker, None
        if worker is not None and not worker.stop():
            log.warning("%s: the text model is still in a call; its answer will be dropped", self.get_name())
        self._store.clear()
        return True

    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type == Gst.EventType.FLUSH_STOP:  # a seek: answers about frames before it are stale
            if self._queue is not None:
                self._queue.clear()
            self._store.clear()
        return GstBase.BaseTransform.do_sink_event(self, event)

    # -- buffers -----------------------------------------------------------------------------------
    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        if self._failed:
            return Gst.FlowReturn.ERROR  # posted by the worker
        frame_no = self._frame_no
        self._frame_no += 1
        try:
            secondary = self.process_mode == "secondary"
            dets = None
            if secondary:
                from pyinfer.meta import read_detections

                dets = read_detections(buf)
            queue = self._queue
            if queue is not None and frame_no % (self.interval + 1) == 0:
                queue.policy = self.drop_policy
                if queue.policy == "newest" and not queue.has_room():
                    queue.refuse()  # it would be dropped: not even copied
                else:
                    req = self._request(buf, frame_no, dets)
                    if req is not None:
                        queue.put(req)
            texts, found = self._attach(buf, frame_no, dets)
            if texts or found:
                with writable(buf):
                    if found:
                        _write_found(buf, found, self.unique_id)
                    if texts:
                        from pyinfer.meta.text import write_texts

                        write_texts(buf, texts)
        except Exception as exc:
            post_error(self, Gst.StreamError.FAILED, f"pyvlm failed on frame {frame_no}: {describe_exception(exc)}",
                       error_debug(exc))  # fmt: skip
            return Gst.FlowReturn.ERROR
        return Gst.FlowReturn.OK

    def _request(self, buf: Gst.Buffer, frame_no: int, dets) -> Request | None:
        """The frame's pixels (or its objects' crops) copied out of ``buf`` as RGB, or None: nothing to ask."""
        pts = None if buf.pts == Gst.CLOCK_TIME_NONE else int(buf.pts)
        picks = None
        if dets is not None:
            picks = self._select(dets)
            if not len(picks):
                return None
        layout = self._layout.for_buffer(buf)  # type: ignore[union-attr]  # set by do_set_caps, before buffers
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            raise ValueError("could not map the buffer for reading")
        try:
            view = frame_array(info.data, layout)
            order = [2, 1, 0] if layout.format.startswith("B") else [0, 1, 2]
            if picks is None:
                return Request(frame_no, pts, [np.ascontiguousarray(view[..., order])])
            boxes = np.asarray(dets.xyxy, np.float32)[picks]
            h, w = view.shape[:2]
            images, kept = [], []
            for k, (x0, y0, x1, y1) in zip(picks.tolist(), boxes.tolist()):
                left, top = max(0, int(x0)), max(0, int(y0))
                right, bottom = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
                if right <= left or bottom <= top:
                    continue
                images.append(np.ascontiguousarray(view[top:bottom, left:right][..., order]))
                kept.append(k)
            del view
        finally:
            buf.unmap(info)
        if not kept:
            return None
        tracks = _track_ids(dets)
        return Request(frame_no, pts, images, np.asarray(dets.xyxy, np.float32)[kept],
                       [tracks[k] for k in kept], kept)  # fmt: skip

    def _select(self, dets) -> np.ndarray:
        """Secondary: the indices of the objects operate-on-gie-id and operate-on-class-ids let through."""
        from pyinfer.params import parse_class_ids

        n = len(dets)
        keep = np.ones(n, bool)
        gie = self.operate_on_gie_id
        if gie >= 0:
            keep &= np.asarray(dets.extra.get("unique_id", np.full(n, -1)), np.int64) == gie
        try:
            classes = parse_class_ids(self.operate_on_class_ids)
        except ConfigError:
            classes = frozenset()
        if classes:
            keep &= np.isin(np.asarray(dets.class_id), list(classes))
        return np.flatnonzero(keep)

    def _attach(self, buf: Gst.Buffer, frame_no: int, dets) -> tuple[list[TextResult], list[tuple]]:
        """The answers for this frame: text records, and (open-vocabulary) detections with their offset."""
        max_age = self.max_age
        uid = self.unique_id
        layout = self._layout
        texts: list[TextResult] = []
        found: list[tuple] = []

        def fresh(a: Answered | None) -> bool:
            return a is not None and (max_age == 0 or frame_no - a.frame_no <= max_age)

        if dets is None:
            a = self._store.frame
            if fresh(a) and a is not None:
                whole = (0.0, 0.0, float(layout.width), float(layout.height)) if layout is not None else (0.0,) * 4
                texts.append(TextResult(a.answer.text, uid, a.frame_no, a.pts, -1, None, a.prompt, whole))
                if a.answer.boxes is not None:
                    found.append((a.answer, 0.0, 0.0))
            return texts, found
        if not len(dets):
            return texts, found
        tracks = _track_ids(dets)
        boxes = np.asarray(dets.xyxy, np.float32)
        for i, a in enumerate(self._store.for_objects(boxes, tracks)):
            if not fresh(a) or a is None:
                continue
            box = tuple(float(v) for v in boxes[i])
            texts.append(TextResult(a.answer.text, uid, a.frame_no, a.pts, i, tracks[i], a.prompt, box))  # type: ignore[arg-type]
            if a.answer.boxes is not None and a.box is not None:
                found.append((a.answer, a.box[0], a.box[1]))
        return texts, found

    # -- the worker's side -------------------------------------------------------------------------
    def _on_answers(self, answers: list[Answered]) -> None:
        for a in answers:
            s = Gst.Structure.new_empty("pyinfer-text")
            s.set_value("text", a.answer.text)
            s.set_value("prompt", a.prompt)
            s.set_value("source-frame", GObject.Value(GObject.TYPE_UINT64, a.frame_no))
            s.set_value("source-pts", GObject.Value(GObject.TYPE_UINT64, Gst.CLOCK_TIME_NONE if a.pts is None
                                                    else a.pts))  # fmt: skip
            s.set_value("object", a.object_index)
            if a.track_id is not None:
                s.set_value("track-id", GObject.Value(GObject.TYPE_UINT64, a.track_id))
            s.set_value("unique-id", int(self.unique_id))
            self.post_message(Gst.Message.new_element(self, s))

    def _on_model_error(self, exc: BaseException) -> bool:
        text = describe_exception(exc)
        code = Gst.StreamError.DECODE if isinstance(exc, DecodeError) else Gst.LibraryError.FAILED
        if self.on_error == "skip":
            now = time.monotonic()
            if now - self._last_warning >= WARNING_INTERVAL_S:
                self._last_warning = now
                post_warning(self, code, f"text model failed, its answer is skipped (on-error=skip): {text}",
                             error_debug(exc))  # fmt: skip
            return True
        self._failed = True
        post_error(self, code, f"text model failed: {text}", error_debug(exc))
        return False


def _track_ids(dets) -> list[int | None]:
    from pyinfer.detections import UNTRACKED_ID

    if dets.tracker_id is None:
        return [None] * len(dets)
    return [None if t == UNTRACKED_ID else int(t) for t in np.asarray(dets.tracker_id).tolist()]


def _write_found(buf: Gst.Buffer, found: list[tuple], unique_id: int) -> None:
    """Open-vocabulary answers as detections (ROI metas numbered after the frame's), boxes in frame pixels."""
    from pyinfer.detections import Detections
    from pyinfer.meta import roi

    for answer, dx, dy in found:
        if not len(answer.boxes):
            continue
        names = tuple(dict.fromkeys(answer.labels))
        xyxy = answer.boxes + np.array([dx, dy, dx, dy], np.float32)
        dets = Detections(
            xyxy=xyxy.astype(np.float32),
            confidence=np.asarray(answer.scores, np.float32),
            class_id=np.array([names.index(s) for s in answer.labels], np.int32),
            labels=names,
        )
        roi.write_detections(buf, dets, unique_id=unique_id, first_id=len(roi.roi_metas(buf)))


def _start_code(exc: PyInferError) -> GObject.GEnum:
    if exc.missing:
        return Gst.ResourceError.NOT_FOUND
    if isinstance(exc, DependencyError):
        return Gst.LibraryError.INIT
    if isinstance(exc, ConfigError):
        return Gst.ResourceError.SETTINGS
    return Gst.LibraryError.INIT
