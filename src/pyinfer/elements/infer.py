"""``pyinfer``: runs a detector on video frames and attaches its detections as metadata.

Example::

    gst-launch-1.0 videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=640,height=480 ! \\
        pyinfer model-engine=$(pyinfer models --path shapes) confidence-threshold=0.3 ! fakesink
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass

from pyinfer._gi import GObject, Gst, GstBase
from pyinfer.elements._base import format_exception, post_error, post_warning, writable
from pyinfer.elements._swap import LoadResult, ModelSwapper
from pyinfer.elements._video import SYSTEM_AND_NVMM_TEMPLATES, PackedVideoFilter, is_nvmm
from pyinfer.errors import ConfigError, DecodeError, DependencyError, ModelError, PyInferError
from pyinfer.frames.system import mapped_frame
from pyinfer.meta.roi import write_detections, write_frame_info

log = logging.getLogger(__name__)

# Frames are mapped read-only and handed to torch without a copy; torch warns about that once.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

_RW = GObject.ParamFlags.READWRITE
FLOW_DROPPED = Gst.FlowReturn.CUSTOM_SUCCESS  # GST_BASE_TRANSFORM_FLOW_DROPPED
SKIP_WARNING_INTERVAL_S = 5.0  # on-error=skip posts at most one WARNING per this many seconds


@dataclass(frozen=True)
class Settings:
    """One consistent snapshot of the per-batch properties."""

    confidence_threshold: float
    nms_iou_threshold: float
    max_detections: int
    unique_id: int
    interval: int


@dataclass
class _Pending:
    buf: Gst.Buffer
    infer: bool


class InferElement(PackedVideoFilter):
    """Runs a detector on each (or every ``interval+1``-th) frame and attaches one ROI meta per detection."""

    __gtype_name__ = "PyInfer"
    __gstmetadata__ = (
        "Python inference",
        "Filter/Analyzer/Video",
        "Runs a PyTorch detector on video frames and attaches detections as region-of-interest metadata",
        "pyinfer developers",
    )
    __gsttemplates__ = SYSTEM_AND_NVMM_TEMPLATES

    __gsignals__ = {  # noqa: RUF012 - PyGObject reads this class attribute
        # (path, ok, reason): a model-engine change while playing finished loading (ok) or failed.
        "model-updated": (GObject.SignalFlags.RUN_LAST, None, (str, bool, str)),
    }

    @GObject.Property(
        type=str, default="", nick="Model file",
        blurb="The model; required: .torchscript/.ts/.pt (TorchScript), .pt2 (torch.export), .onnx (ONNX Runtime), "
        ".engine/.plan (TensorRT), or package.module:callable (a factory returning an nn.Module). Set while "
        "playing, the new model loads in the background and replaces the old one between two batches (hot-swap)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    def model_engine(self) -> str:
        return self._model_path

    @model_engine.setter
    def model_engine(self, value: str) -> None:
        self._model_path = value or ""
        if self._engine is not None:  # running: load beside the serving model
            self._swapper.request(self._model_path, self._engine_config())

    backend = GObject.Property(
        type=str, default="auto", nick="Backend",
        blurb="Runtime: auto (from the model-engine extension), torchscript, export, module, onnx or tensorrt "
        "(tensorrt with an .onnx model builds an engine once and caches it beside the model)",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    precision = GObject.Property(
        type=str, default="fp32", nick="Precision",
        blurb="fp32 (the model as saved), fp16 or bf16: weights cast (torch backends) or TensorRT builder flags; "
        "ONNX runs in the precision it was exported in",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    cuda_graphs = GObject.Property(
        type=bool, default=False, nick="CUDA graphs",
        blurb="Capture letterbox, model and decode (with NMS) in one CUDA graph per input shape and replay it: one "
        "launch and one device-to-host copy per batch. Torch backends on CUDA; ignored on the CPU",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    compile = GObject.Property(
        type=str, default="off", nick="Compile",
        blurb="torch.compile of model, letterbox and decode: off, default, reduce-overhead (inductor kernels in "
        "CUDA graphs) or max-autotune. Costs tens of seconds per input shape at the first batch",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    channels_last = GObject.Property(
        type=bool, default=False, nick="Channels last",
        blurb="Model weights and input in NHWC memory order (faster fp16/bf16 convolutions on GPUs); torch backends",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    allow_pickle = GObject.Property(
        type=bool, default=False, nick="Allow pickle",
        blurb="Load model files that unpickle Python objects (torch.save checkpoints), which can run any code: "
        "only for files you trust",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    labels_file = GObject.Property(
        type=str, default="", nick="Labels file",
        blurb="Class names, one per line; empty: the model's own names (or class ids). Applies at start and at the "
        "next model-engine change",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    confidence_threshold = GObject.Property(
        type=float, default=0.25, minimum=0.0, maximum=1.0, nick="Confidence threshold",
        blurb="Drop detections scoring at or below this", flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    nms_iou_threshold = GObject.Property(
        type=float, default=0.45, minimum=0.0, maximum=1.0, nick="NMS IoU threshold",
        blurb="Class-aware non-maximum suppression: drop boxes overlapping a better one by more than this IoU",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    device = GObject.Property(
        type=str, default="auto", nick="Device",
        blurb="Where the model runs: auto (cuda when available, else cpu), cpu, cuda, cuda:N",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    batch_size = GObject.Property(
        type=int, default=1, minimum=1, maximum=1024, nick="Batch size",
        blurb="Frames per model call; frames are held until the batch is full (or EOS), adding latency",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    interval = GObject.Property(
        type=int, default=0, minimum=0, maximum=1_000_000, nick="Interval",
        blurb="Frames (DeepStream: batches) skipped between inferences, as nvinfer (0: infer every frame); skipped "
        "frames get no detections, and their frame record says inferred=false",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    unique_id = GObject.Property(
        type=int, default=15, minimum=0, maximum=2**31 - 1, nick="Unique ID",
        blurb="Stamped on every detection as its producer (nvinfer's unique-id)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    max_detections = GObject.Property(
        type=int, default=300, minimum=1, maximum=100_000, nick="Max detections",
        blurb="Keep at most this many detections per frame (highest confidence first)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    decoder = GObject.Property(
        type=str, default="auto", nick="Decoder",
        blurb="Output decoder: auto (picked from the model's metadata, output names and shapes; see decoder-used), "
        "yolov8 (also YOLO11), yolov5, yolo-e2e (YOLOv10/YOLO26 end-to-end), yolo-obb (rotated boxes), detr "
        "(RT-DETR/D-FINE), classifier, or custom (the postprocess hook). Applies at start and at the next "
        "model-engine change",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    postprocess = GObject.Property(
        type=str, default="", nick="Post-processing hook",
        blurb="module:function (or /path/file.py:function) called with the output tensors and frame geometry, "
        "returning Detections per frame (docs/decoders.md); implies decoder=custom under auto. Applies at start "
        "and at the next model-engine change",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    input_width = GObject.Property(
        type=int, default=0, minimum=0, maximum=16384, nick="Input width",
        blurb="Model input width; 0: from the model's metadata", flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    input_height = GObject.Property(
        type=int, default=0, minimum=0, maximum=16384, nick="Input height",
        blurb="Model input height; 0: from the model's metadata", flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    meta = GObject.Property(
        type=str, default="auto", nick="Metadata writer",
        blurb="Where detections go: auto (NVMM caps: DeepStream NvDsObjectMeta through pyservicemaker, else pyds; "
        "system memory: ROI meta), roi, deepstream (pyservicemaker), pyds (legacy bindings)",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    mark_inferred = GObject.Property(
        type=bool, default=True, nick="Mark inferred",
        blurb="DeepStream: set NvDsFrameMeta.bInferDone on inferred frames, as nvinfer does, so nvtracker treats "
        "them as detector frames (through pyds, else a layout-checked ctypes write)",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip
    event_meta = GObject.Property(
        type=bool, default=False, nick="Event meta",
        blurb="DeepStream (pyservicemaker): also attach one NvDsEventMsgMeta per object for nvmsgconv's default "
        "payload mode",
        flags=_RW | Gst.PARAM_MUTABLE_READY,
    )  # fmt: skip

    @GObject.Property(
        type=str, nick="Metadata writer in use",
        blurb="What the negotiated caps selected: roi, or the DeepStream writer, frame access and bInferDone method",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def meta_used(self) -> str:
        return self._meta_used

    on_error = GObject.Property(
        type=str, default="fail", nick="On error",
        blurb="What an inference or post-processing failure does: fail (ERROR on the bus, the pipeline stops) or "
        "skip (the frames pass without detections, a rate-limited WARNING, skipped-buffers rises)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    @GObject.Property(
        type=GObject.TYPE_UINT64, nick="Skipped buffers",
        blurb="Buffers passed without detections because inference failed (on-error=skip)",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def skipped_buffers(self) -> int:
        return self._skipped

    @GObject.Property(
        type=int, nick="Model ID", blurb="Generation of the serving model: 0 at start, +1 at each model swap",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def model_id(self) -> int:
        return self._model_id

    @GObject.Property(
        type=str, nick="Decoder used",
        blurb="The decoder of the serving model and why it was picked, e.g. 'yolo-obb (auto: the model's metadata "
        "names it)'; empty while stopped",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def decoder_used(self) -> str:
        engine = self._engine
        return str(engine.decoder_choice) if engine is not None else ""

    def __init__(self) -> None:
        self._model_path = ""
        self._engine = None
        super().__init__()
        self._swapper = ModelSwapper(self._build_engine, self._on_load_failed)
        self._model_id = 0
        self._skipped = 0
        self._last_skip_warning = 0.0
        self._pending: list[_Pending] = []
        self._staging = None
        self._frames_seen = 0
        self._lock = threading.Lock()  # guards _pending against a flush from another thread
        self._ds = None  # DeepStreamSession while NVMM caps are negotiated
        self._meta_used = ""
        self._batches_seen = 0
        self._last_warning: dict[str, float] = {}

    # -- state -------------------------------------------------------------------------------------
    def _settings(self) -> Settings:
        return Settings(
            confidence_threshold=self.confidence_threshold,
            nms_iou_threshold=self.nms_iou_threshold,
            max_detections=self.max_detections,
            unique_id=self.unique_id,
            interval=self.interval,
        )

    def _engine_config(self):
        from pyinfer.engine import EngineConfig

        return EngineConfig(
            model=self._model_path,
            backend=self.backend,
            precision=self.precision,
            allow_pickle=self.allow_pickle,
            max_batch=self.batch_size,
            device=self.device,
            labels_file=self.labels_file,
            decoder=self.decoder,
            postprocess=self.postprocess,
            input_width=self.input_width,
            input_height=self.input_height,
            cuda_graphs=self.cuda_graphs,
            compile=self.compile,
            channels_last=self.channels_last,
        )

    def _build_engine(self, cfg):
        from pyinfer.engine import Engine

        engine = Engine.build(cfg)
        layout = self._layout
        if layout is not None:  # validate on a batch shaped like the live frames
            engine.check_frames(self.batch_size, layout.height, layout.width, layout.channels, layout.format)
        return engine

    def _on_load_failed(self, result: LoadResult) -> None:
        if result.reason.startswith("superseded"):
            self._announce(result, first_frame=-1)
            return
        post_warning(self, Gst.ResourceError.OPEN_READ, f"model update to {result.path} failed, the previous model "
                     f"keeps serving: {result.reason}")  # fmt: skip
        self._announce(result, first_frame=-1)

    def _announce(self, result: LoadResult, first_frame: int) -> None:
        s = Gst.Structure.new_empty("pyinfer-model-updated")
        s.set_value("path", result.path)
        s.set_value("ok", result.ok)
        s.set_value("reason", result.reason)
        s.set_value("load-time", float(result.load_time_s))
        s.set_value("first-frame", int(first_frame))
        s.set_value("model-id", int(result.generation if result.ok else self._model_id))
        if result.ok and self._engine is not None:  # announced once the new engine serves
            s.set_value("decoder", str(self._engine.decoder_choice))
        self.post_message(Gst.Message.new_element(self, s))
        self.emit("model-updated", result.path, result.ok, result.reason)

    def _maybe_swap(self) -> None:
        """Between batches: start serving a newly loaded model, if one is ready."""
        ready = self._swapper.take_ready()
        if ready is None:
            return
        engine, result = ready
        self._engine = engine
        self._model_id = result.generation
        self._staging = None
        log.info("model %s serving from frame %d, decoder %s", result.path, self._frames_seen, engine.decoder_choice)
        self._announce(result, first_frame=self._frames_seen)

    def do_start(self) -> bool:
        from pyinfer.engine import Engine, on_fresh_thread

        if self.on_error not in ("fail", "skip"):
            post_error(self, Gst.ResourceError.SETTINGS, f"on-error must be fail or skip, not {self.on_error!r}")
            return False
        cfg = self._engine_config()
        try:
            self._engine = on_fresh_thread(Engine.build, cfg)  # see on_fresh_thread: no OpenMP team left here
        except PyInferError as exc:
            code = _start_error_code(exc)
            post_error(self, code, str(exc), format_exception(exc))
            return False
        except Exception as exc:  # a runtime failing in a way we did not foresee
            post_error(self, Gst.LibraryError.INIT, f"could not load model {cfg.model}: {exc}", format_exception(exc))
            return False
        if self.meta not in ("auto", "roi", "deepstream", "pyds"):
            msg = f"meta must be auto, roi, deepstream or pyds, not {self.meta!r}"
            post_error(self, Gst.ResourceError.SETTINGS, msg)
            return False
        self._frames_seen = 0
        self._batches_seen = 0
        self._pending = []
        self._staging = None
        self._model_id = 0
        self._skipped = 0
        self._last_warning = {}
        log.info("loaded %s on %s, decoder %s", cfg.model, self._engine.model.device, self._engine.decoder_choice)
        return True

    def do_stop(self) -> bool:
        self._swapper.stop()
        with self._lock:
            self._pending = []
        self._engine = None
        self._staging = None
        self._layout = None
        self._ds = None
        return True

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        if not PackedVideoFilter.do_set_caps(self, incaps, outcaps):
            return False
        if not is_nvmm(incaps):
            if self.meta in ("deepstream", "pyds"):
                post_error(self, Gst.CoreError.NEGOTIATION, f"meta={self.meta} needs DeepStream NVMM caps "
                           f"(video/x-raw(memory:NVMM),format=RGB), got {incaps.to_string()}")  # fmt: skip
                return False
            self._ds = None
            self._meta_used = "roi"
            return True
        if self.meta == "roi":
            post_error(self, Gst.CoreError.NEGOTIATION, "meta=roi cannot read NVMM frames: use meta=auto on DeepStream")
            return False
        if self._ds is None:
            return self._open_deepstream()
        return True

    def _open_deepstream(self) -> bool:
        from pyinfer.frames.deepstream import DeepStreamSession, SessionOptions
        from pyinfer.meta.deepstream import labels_fit

        api = {"auto": "auto", "deepstream": "pyservicemaker", "pyds": "pyds"}[self.meta]
        options = SessionOptions(api=api, mark_inferred=self.mark_inferred, writer=self._writer_options())
        try:
            self._ds = DeepStreamSession(options)
        except PyInferError as exc:
            post_error(self, Gst.LibraryError.INIT, str(exc), format_exception(exc))
            return False
        except Exception as exc:
            post_error(self, Gst.LibraryError.INIT, f"DeepStream bindings failed to load: {exc}", format_exception(exc))
            return False
        self._meta_used = self._ds.describe()
        log.info("%s", self._meta_used)
        if self.mark_inferred and self._ds.infer_done.startswith("unavailable"):
            post_warning(self, Gst.LibraryError.INIT, f"cannot mark frames inferred for nvtracker (bInferDone): "
                         f"{self._ds.infer_done}; install pyds or set mark-inferred=false")  # fmt: skip
        if self.event_meta and self._ds.writer.name != "pyservicemaker":
            post_warning(self, Gst.ResourceError.SETTINGS, "event-meta needs pyservicemaker; no event meta is written")
        too_long = labels_fit(self._engine.labels if self._engine is not None else ())
        if too_long:
            post_warning(self, Gst.ResourceError.SETTINGS, f"{len(too_long)} label(s) longer than 127 bytes will be "
                         f"cut in NvDsObjectMeta.obj_label: {too_long[0][:40]!r}...")  # fmt: skip
        return True

    def _writer_options(self):
        from pyinfer.meta.deepstream import WriterOptions

        return WriterOptions(unique_id=self.unique_id, event_meta=self.event_meta)

    def _warn_limited(self, key: str, code: GObject.GEnum, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(key, -1e9) >= SKIP_WARNING_INTERVAL_S:
            self._last_warning[key] = now
            post_warning(self, code, text)

    # -- DeepStream batches ------------------------------------------------------------------------
    def _ds_transform(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        """One NVMM batch from nvstreammux: all its frames in one model call, objects as NvDsObjectMeta."""
        settings = self._settings()
        self._maybe_swap()
        infer = self._batches_seen % (settings.interval + 1) == 0  # nvinfer's interval counts batches
        self._batches_seen += 1
        self._frames_seen += 1
        ds = self._ds
        if ds.writer.options.unique_id != settings.unique_id:
            ds.writer.options = self._writer_options()
        engine = self._engine

        def run(tensors: list) -> list:
            return _infer_tensors(engine, tensors, settings)

        layout = self._layout
        try:
            report = ds.process(buf, run if infer else None, layout.width, layout.height)
        except Exception as exc:
            return self._failed(exc, 1)
        if report.no_batch_meta:
            self._warn_limited("no-batch-meta", Gst.StreamError.FORMAT, "NVMM buffer without NvDsBatchMeta "
                               "frames (n_frames == 0): pyinfer needs nvstreammux upstream; the buffer passes "
                               "unchanged")  # fmt: skip
        if report.not_rgb:
            self._warn_limited("not-rgb", Gst.StreamError.FORMAT, f"surfaces of batch ids {report.not_rgb} are not "
                               "RGB and were not inferred: add nvvideoconvert ! video/x-raw(memory:NVMM),format=RGB "
                               "before pyinfer")  # fmt: skip
        if report.bad_tensor:
            self._warn_limited("bad-tensor", Gst.StreamError.FORMAT, f"unexpected frame tensors, not inferred: "
                               f"{'; '.join(report.bad_tensor)}")  # fmt: skip
        if report.pool_exhausted:
            self._warn_limited("pool", Gst.ResourceError.NO_SPACE_LEFT, f"NvDsObjectMeta pool exhausted "
                               f"after {report.written} objects in this batch; the remaining detections were "
                               "dropped")  # fmt: skip
        if report.labels_cut:
            self._warn_limited("labels", Gst.ResourceError.SETTINGS, f"labels longer than 127 bytes cut for "
                               f"NvDsObjectMeta: {sorted(report.labels_cut)[0][:40]!r}...")  # fmt: skip
        return Gst.FlowReturn.OK

    def on_layout_changed(self) -> None:
        self._staging = None

    # -- events ------------------------------------------------------------------------------------
    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type in (Gst.EventType.EOS, Gst.EventType.CAPS, Gst.EventType.SEGMENT, Gst.EventType.GAP):
            # Held frames belong before whatever comes next. A failure is on the bus already; the event
            # still goes on (so EOS can stop the pipeline).
            self._flush_pending()
        elif event.type == Gst.EventType.FLUSH_STOP:
            with self._lock:
                self._pending = []
        return GstBase.BaseTransform.do_sink_event(self, event)

    # -- buffers -----------------------------------------------------------------------------------
    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        if self._engine is None or self._layout is None:
            return Gst.FlowReturn.FLUSHING
        if self._ds is not None:
            return self._ds_transform(buf)
        settings = self._settings()
        if not self._pending:
            self._maybe_swap()  # a new model starts serving between two batches, never inside one
        infer = self._frames_seen % (settings.interval + 1) == 0
        self._frames_seen += 1
        if self.batch_size == 1 and not self._pending:
            if infer:
                try:
                    self._infer_now(buf, settings)
                    return Gst.FlowReturn.OK
                except Exception as exc:
                    ret = self._failed(exc, 1)
                    if ret != Gst.FlowReturn.OK:
                        return ret
            self._mark_not_inferred(buf, settings)
            return Gst.FlowReturn.OK
        with self._lock:
            if infer:
                try:
                    self._stage(buf, sum(p.infer for p in self._pending))
                except Exception as exc:
                    ret = self._failed(exc, 1)
                    if ret != Gst.FlowReturn.OK:
                        self._pending = []
                        return ret
                    infer = False
            self._pending.append(_Pending(buf, infer))
            n_infer = sum(p.infer for p in self._pending)
            if n_infer < self.batch_size and n_infer > 0:
                return FLOW_DROPPED  # held: pushed with its batch
            pending, self._pending = self._pending, []
        return self._finish(pending, settings, current=buf)

    def _failed(self, exc: Exception, frames: int) -> Gst.FlowReturn:
        """Apply the on-error policy to a failure that cost ``frames`` frames their detections."""
        if self.on_error == "skip":
            self._skipped += frames
            now = time.monotonic()
            if now - self._last_skip_warning >= SKIP_WARNING_INTERVAL_S:  # rate-limited
                self._last_skip_warning = now
                post_warning(self, Gst.StreamError.DECODE if isinstance(exc, DecodeError) else Gst.LibraryError.FAILED,
                             f"inference failed, frames pass without detections (on-error=skip, "
                             f"{self._skipped} skipped so far): {exc}", format_exception(exc))  # fmt: skip
            return Gst.FlowReturn.OK
        if isinstance(exc, DecodeError):
            post_error(self, Gst.StreamError.DECODE, str(exc), format_exception(exc))
        else:
            post_error(self, Gst.LibraryError.FAILED, f"inference failed: {exc}", format_exception(exc))
        return Gst.FlowReturn.ERROR

    def _infer_now(self, buf: Gst.Buffer, settings: Settings) -> None:
        """Batch of one: the model reads the mapped frame directly when it runs on the CPU."""
        import torch

        engine = self._engine
        with mapped_frame(buf, self._layout) as frame:
            frames = torch.from_numpy(frame)[None]
            if frames.device != engine.model.device:
                frames = self._to_device(frames)
            dets = engine.infer(
                frames,
                channels=self._layout.format,
                conf_threshold=settings.confidence_threshold,
                iou_threshold=settings.nms_iou_threshold,
                max_detections=settings.max_detections,
            )[0]
            del frames
        with writable(buf):
            write_detections(buf, dets, unique_id=settings.unique_id, model_id=self._model_id)
            write_frame_info(buf, inferred=True, unique_id=settings.unique_id, model_id=self._model_id)

    def _mark_not_inferred(self, buf: Gst.Buffer, settings: Settings) -> None:
        with writable(buf):
            write_frame_info(buf, inferred=False, unique_id=settings.unique_id, model_id=self._model_id)

    def _to_device(self, frames):
        import torch

        if self._staging is None or self._staging.shape[1:] != frames.shape[1:]:
            self._staging = torch.empty(
                (max(self.batch_size, frames.shape[0]), *frames.shape[1:]), dtype=torch.uint8, pin_memory=True
            )
        n = frames.shape[0]
        self._staging[:n].copy_(frames)
        if self._engine.fast is not None and self._engine.fast.takes_host_frames:
            return self._staging[:n]  # copied straight into the engine's device buffer, on its stream
        return self._staging[:n].to(self._engine.model.device, non_blocking=True)

    def _stage(self, buf: Gst.Buffer, slot: int) -> None:
        """Copy one frame into the batch staging tensor (pinned when the model is on a GPU)."""
        import torch

        layout = self._layout
        shape = (self.batch_size, layout.height, layout.width, layout.channels)
        if self._staging is None or tuple(self._staging.shape) != shape:
            pin = self._engine.model.device.type == "cuda"
            self._staging = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
        with mapped_frame(buf, layout) as frame:
            self._staging[slot].copy_(torch.from_numpy(frame))

    def _finish(self, pending: list[_Pending], settings: Settings, current: Gst.Buffer | None) -> Gst.FlowReturn:
        """Infer the staged frames of ``pending``, attach metadata, push all but ``current`` in order."""
        n = sum(p.infer for p in pending)
        annotated = False
        if n:
            try:
                self._annotate(pending, n, settings)
                annotated = True
            except Exception as exc:
                ret = self._failed(exc, n)
                if ret != Gst.FlowReturn.OK:
                    return ret
        for p in pending:
            if not (p.infer and annotated):
                self._mark_not_inferred(p.buf, settings)
        srcpad = self.get_static_pad("src")
        for p in pending:
            if p.buf is current:
                continue
            ret = srcpad.push(p.buf)
            if ret != Gst.FlowReturn.OK:
                return ret
        return Gst.FlowReturn.OK

    def _annotate(self, pending: list[_Pending], n: int, settings: Settings) -> None:
        engine = self._engine
        frames = self._staging[:n]
        if engine.model.device.type != "cpu" and not (engine.fast is not None and engine.fast.takes_host_frames):
            frames = frames.to(engine.model.device, non_blocking=True)
        dets = iter(
            engine.infer(
                frames,
                channels=self._layout.format,
                conf_threshold=settings.confidence_threshold,
                iou_threshold=settings.nms_iou_threshold,
                max_detections=settings.max_detections,
            )
        )
        for p in pending:
            if p.infer:
                with writable(p.buf):
                    write_detections(p.buf, next(dets), unique_id=settings.unique_id, model_id=self._model_id)
                    write_frame_info(p.buf, inferred=True, unique_id=settings.unique_id, model_id=self._model_id)

    def _flush_pending(self) -> Gst.FlowReturn:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending or self._engine is None:
            return Gst.FlowReturn.OK
        return self._finish(pending, self._settings(), current=None)


def _infer_tensors(engine, tensors: list, settings: Settings) -> list:
    """Infer a DeepStream batch: (H, W, C) uint8 frames (strided views of the surfaces) -> Detections each.

    Frames of one size (nvstreammux scales to one) go to the model in one call, gathered on their device
    (a device-side copy, never through the host); frames of other sizes (the new muxer does not scale) make
    one call per size.
    """
    import torch

    device = engine.model.device
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    out: list = [None] * len(tensors)
    for shape, idx in groups.items():
        frames = torch.stack([tensors[i] for i in idx]) if len(idx) > 1 else tensors[idx[0]][None]
        if frames.device != device:
            frames = frames.to(device, non_blocking=True)
        dets = engine.infer(
            frames,
            channels="RGB" if shape[2] == 3 else "RGBA",
            conf_threshold=settings.confidence_threshold,
            iou_threshold=settings.nms_iou_threshold,
            max_detections=settings.max_detections,
        )
        for i, d in zip(idx, dets):
            out[i] = d
        del frames
    return out


def _start_error_code(exc: PyInferError) -> GObject.GEnum:
    if exc.missing:
        return Gst.ResourceError.NOT_FOUND
    if isinstance(exc, ModelError):
        return Gst.ResourceError.OPEN_READ
    if isinstance(exc, DependencyError):
        return Gst.LibraryError.INIT
    if isinstance(exc, DecodeError):
        return Gst.StreamError.DECODE
    if isinstance(exc, ConfigError):
        return Gst.ResourceError.SETTINGS
    return Gst.LibraryError.INIT
