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
    SourceStores,
)
from pyinfer.elements._base import (
    describe_exception,
    error_debug,
    post_error,
    post_warning,
    ready_property,
    writable,
)
from pyinfer.elements._enums import OnError, ProcessMode, VlmDropPolicy, VlmMode, choice_property
from pyinfer.elements._video import SYSTEM_AND_NVMM_TEMPLATES, PackedVideoFilter, is_nvmm
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
    __gsttemplates__ = SYSTEM_AND_NVMM_TEMPLATES

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
    mode = choice_property(
        "mode",
        type=VlmMode, default="async", nick="Mode",
        blurb="async: the model runs on its own thread and the video never waits for it (answers attach to the "
        "next frames); sync: each offered frame waits for its own answer (every offered frame answered, for "
        "files and evaluation; queue-size and drop-policy do not apply)",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
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
        worker = self._worker
        return worker.answered if worker is not None else self._answered_before_stop

    def __init__(self) -> None:
        super().__init__()
        self._queue: RequestQueue | None = None
        self._worker: AsyncWorker | None = None
        self._stores = SourceStores()  # per stream: one on plain GStreamer, one per source_id under DeepStream
        self._sm = None  # pyservicemaker while DeepStream NVMM caps are negotiated
        self._frame_no = 0
        self._failed = False
        self._sync = False
        self._answered_before_stop = 0  # the count of the last run, readable after it stopped
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
        self._answered_before_stop = 0
        self._stores.clear()
        self._queue = RequestQueue(self.queue_size, self.drop_policy)
        self._worker = AsyncWorker(
            model, self._queue, self._stores, prompt=lambda: str(self.prompt or ""), batch=self.batch_size,
            on_answers=self._on_answers, on_error=self._on_model_error,
        )  # fmt: skip
        self._sync = self.mode == "sync"
        if not self._sync:
            self._worker.start()
        return True

    def do_stop(self) -> bool:
        worker, self._worker = self._worker, None
        if worker is not None:
            self._answered_before_stop = worker.answered
        if worker is not None and not worker.stop():
            log.warning("%s: the text model is still in a call; its answer will be dropped", self.get_name())
        self._stores.clear()
        return True

    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type == Gst.EventType.FLUSH_STOP:  # a seek: answers about frames before it are stale
            if self._queue is not None:
                self._queue.clear()
            self._stores.clear()
        return GstBase.BaseTransform.do_sink_event(self, event)

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        if not is_nvmm(incaps):
            self._sm = None
            self.set_passthrough(False)
            return PackedVideoFilter.do_set_caps(self, incaps, outcaps)
        from pyinfer.frames.deepstream import load_bindings

        try:
            _api, sm, _pyds = load_bindings("auto")
        except PyInferError as exc:
            post_error(self, Gst.LibraryError.INIT, str(exc))
            return False
        if sm is None:
            post_error(self, Gst.CoreError.NEGOTIATION, "pyvlm on DeepStream NVMM batches writes its answers through "
                       "pyservicemaker (DeepStream 8/9), which is not importable; pyds cannot attach custom user "
                       "meta without a compiled binding")  # fmt: skip
            return False
        self._sm = sm
        self._layout = None
        # DeepStream metadata lives in the batch, not in a GstMeta: the buffer is never made writable (copied)
        self.set_passthrough(True)
        return True

    # -- buffers -----------------------------------------------------------------------------------
    def _offer(self, make_request) -> bool:
        """Offer one request to the model (made only when it would be kept); False: the model failed in sync mode
        and the stream stops (the error is posted)."""
        queue, worker = self._queue, self._worker
        if queue is None or worker is None:
            return True
        if self._sync:
            req = make_request()
            if req is None:
                return True
            queue.count_submitted()
            return worker.answer_now([req])
        queue.policy = self.drop_policy
        if queue.policy == "newest" and not queue.has_room():
            queue.refuse()  # it would be dropped: not even copied
            return True
        req = make_request()
        if req is not None:
            queue.put(req)
        return True

    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        if self._failed:
            return Gst.FlowReturn.ERROR  # posted by the worker
        if self._sm is not None:
            return self._transform_nvmm(buf)
        frame_no = self._frame_no
        self._frame_no += 1
        try:
            secondary = self.process_mode == "secondary"
            dets = None
            if secondary:
                from pyinfer.meta import read_detections

                dets = read_detections(buf)
            if frame_no % (self.interval + 1) == 0 and not self._offer(lambda: self._request(buf, frame_no, dets)):
                return Gst.FlowReturn.ERROR  # posted by _on_model_error
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
        n = len(dets)
        return self._select_ids(np.asarray(dets.extra.get("unique_id", np.full(n, -1)), np.int64),
                                np.asarray(dets.class_id))  # fmt: skip

    def _select_ids(self, producers: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        from pyinfer.params import parse_class_ids

        keep = np.ones(len(class_ids), bool)
        gie = self.operate_on_gie_id
        if gie >= 0:
            keep &= np.asarray(producers, np.int64) == gie
        try:
            classes = parse_class_ids(self.operate_on_class_ids)
        except ConfigError:
            classes = frozenset()
        if classes:
            keep &= np.isin(np.asarray(class_ids), list(classes))
        return np.flatnonzero(keep)

    # -- DeepStream --------------------------------------------------------------------------------
    def _transform_nvmm(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        """One NVMM batch: its offered frames (or their objects' crops) in one request, answers per source_id."""
        from pyinfer.elements._vlm_ds import read_batch, write_batch

        secondary = self.process_mode == "secondary"
        every = self.interval + 1
        try:
            frames = read_batch(self._sm, buf, lambda _sid, number: number % every == 0, secondary)
            offered = [f for f in frames if f.pixels is not None]
            if offered and not self._offer(lambda: self._ds_request(offered, secondary)):
                return Gst.FlowReturn.ERROR  # posted by _on_model_error
            for f in offered:
                f.pixels = None
            answers: dict[int, tuple[list, dict[int, dict]]] = {}
            for f in frames:
                store = self._stores.get(f.source_id)
                whole = (0.0, 0.0, float(f.width), float(f.height))
                texts, _found = self._answers_for(store, f.frame_number, f.boxes if secondary else None,
                                                  f.track_ids, whole)  # fmt: skip
                if not texts:
                    continue
                frame_texts = [_record(t) for t in texts if t.object_index < 0]
                object_texts = {t.object_index: _record(t) for t in texts if t.object_index >= 0}
                answers[f.batch_id] = (frame_texts, object_texts)
            if answers:
                write_batch(self._sm, buf, answers)
        except Exception as exc:
            post_error(self, Gst.StreamError.FAILED, f"pyvlm failed on a DeepStream batch: {describe_exception(exc)}",
                       error_debug(exc))  # fmt: skip
            return Gst.FlowReturn.ERROR
        return Gst.FlowReturn.OK

    def _ds_request(self, offered: list, secondary: bool) -> Request | None:
        """The offered frames of one batch (whole, or their selected objects' crops) as one request."""
        if not secondary:
            return Request(offered[0].frame_number, None, [f.pixels for f in offered],
                           sources=[f.source_id for f in offered],
                           frame_nos=[f.frame_number for f in offered])  # fmt: skip
        images, boxes, tracks, objects, sources, numbers = [], [], [], [], [], []
        for f in offered:
            picks = self._select_ids(np.asarray(f.producers), np.asarray(f.class_ids))
            h, w = f.pixels.shape[:2]
            for k in picks.tolist():
                x0, y0, x1, y1 = f.boxes[k].tolist()
                left, top = max(0, int(x0)), max(0, int(y0))
                right, bottom = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
                if right <= left or bottom <= top:
                    continue
                images.append(np.ascontiguousarray(f.pixels[top:bottom, left:right]))
                boxes.append(f.boxes[k])
                tracks.append(f.track_ids[k])
                objects.append(k)
                sources.append(f.source_id)
                numbers.append(f.frame_number)
        if not images:
            return None
        return Request(numbers[0], None, images, np.asarray(boxes, np.float32), tracks, objects, sources, numbers)

    def _attach(self, buf: Gst.Buffer, frame_no: int, dets) -> tuple[list[TextResult], list[tuple]]:
        """The answers for this frame: text records, and (open-vocabulary) detections with their offset."""
        layout = self._layout
        whole = (0.0, 0.0, float(layout.width), float(layout.height)) if layout is not None else (0.0,) * 4
        if dets is None:
            return self._answers_for(self._stores.get(0), frame_no, None, [], whole)
        return self._answers_for(self._stores.get(0), frame_no, np.asarray(dets.xyxy, np.float32).reshape(-1, 4),
                                 _track_ids(dets), whole)  # fmt: skip

    def _answers_for(
        self, store: AnswerStore, frame_no: int, boxes: np.ndarray | None, tracks: list, whole: tuple
    ) -> tuple[list[TextResult], list[tuple]]:
        """From ``store``, the answers for frame ``frame_no``: the whole frame's (``boxes`` None), or those of its
        objects (``boxes`` xyxy, ``tracks`` their track ids); text records and open-vocabulary detections."""
        max_age = self.max_age
        uid = self.unique_id
        texts: list[TextResult] = []
        found: list[tuple] = []

        def fresh(a: Answered | None) -> bool:
            return a is not None and (max_age == 0 or frame_no - a.frame_no <= max_age)

        if boxes is None:
            a = store.frame
            if fresh(a) and a is not None:
                texts.append(TextResult(a.answer.text, uid, a.frame_no, a.pts, -1, None, a.prompt, whole))
                if a.answer.boxes is not None:
                    found.append((a.answer, 0.0, 0.0))
            return texts, found
        if not len(boxes):
            return texts, found
        for i, a in enumerate(store.for_objects(boxes, tracks)):
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
            s.set_value("source-id", int(a.source))
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


def _record(t: TextResult) -> dict:
    """A text answer as the JSON a DeepStream user meta carries."""
    return {"text": t.text, "prompt": t.prompt, "unique_id": t.unique_id, "source_frame": t.source_frame,
            "source_pts_ns": t.source_pts}  # fmt: skip


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
