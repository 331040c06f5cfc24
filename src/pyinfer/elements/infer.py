"""``pyinfer``: runs a detector on video frames and attaches its detections as metadata.

Example::

    gst-launch-1.0 videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=640,height=480 ! \\
        pyinfer model-engine=$(pyinfer models --path shapes) confidence-threshold=0.3 ! fakesink
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

from pyinfer._gi import GObject, Gst, GstBase, GstVideo, copy_buffer
from pyinfer.elements._base import (
    describe_exception,
    error_debug,
    format_exception,
    post_error,
    post_warning,
    ready_property,
    writable,
)
from pyinfer.elements._enums import (
    Backend,
    Compile,
    Decoder,
    Meta,
    OnError,
    Precision,
    ProcessMode,
    choice_property,
)
from pyinfer.elements._secondary import ObjectFilter, ResultCache, SecondaryEngine, is_classifier, select_objects
from pyinfer.elements._swap import LoadResult, ModelSwapper
from pyinfer.elements._video import NVMM_CAPS, PackedVideoFilter, is_nvmm
from pyinfer.errors import ConfigError, DecodeError, DependencyError, ModelError, PyInferError
from pyinfer.frames.video import CUDA_FEATURE, FORMATS, VideoLayout, map_frame
from pyinfer.meta.codecs import Codec
from pyinfer.meta.codecs import codec as meta_codec
from pyinfer.ops.colour import YUV_FORMATS
from pyinfer.params import DEFAULT_PARAMS, InferParams, parse_class_ids
from pyinfer.pipeline import DEFAULT_DEPTH, InferPipeline, Job, StagingRing, wait_all

log = logging.getLogger(__name__)

# Frames are mapped read-only and handed to torch without a copy; torch warns about that once.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

_RW = GObject.ParamFlags.READWRITE
SKIP_WARNING_INTERVAL_S = 5.0  # on-error=skip posts at most one WARNING per this many seconds


@dataclass(frozen=True)
class Settings:
    """One consistent snapshot of the per-batch properties."""

    confidence_threshold: float
    nms_iou_threshold: float
    max_detections: int
    unique_id: int
    interval: int
    objects: ObjectFilter | None = None  # process-mode=secondary: which upstream objects


#: The properties a Settings snapshot reads (GObject names).
_SETTINGS_PROPERTIES = frozenset(
    ("confidence-threshold", "nms-iou-threshold", "max-detections", "unique-id", "interval", "process-mode",
     "operate-on-gie-id", "operate-on-class-ids", "input-object-min-width", "input-object-min-height",
     "input-object-max-width", "input-object-max-height", "secondary-reinfer-interval", "maintain-aspect-ratio")
)  # fmt: skip


def _property_set(element: InferElement, name: str) -> None:
    """A property was set on the element: the next :meth:`InferElement._settings` reads the per-batch ones again,
    and one set on the element (not from config-file-path) wins over the file, as in nvinfer."""
    if name in _SETTINGS_PROPERTIES:
        element._settings_generation = getattr(element, "_settings_generation", 0) + 1
    if not getattr(element, "_applying_config", False):
        explicit = getattr(element, "_explicit", None)
        if explicit is not None:
            explicit.add(name)


def _warning_key(text: str) -> str:
    """The rate limit a model warning counts against: a knob that stopped working has its own."""
    return "accel" if text.startswith(("cuda-graphs:", "compile:")) else "model-output"


def _track_sets(cls: type) -> None:
    """Call :func:`_property_set` after every writable property's setter of ``cls``.

    Not through the "notify" signal: a Python handler connected in ``__init__`` ran while a factory was still making
    the element, dropped the wrapper's floating reference, and a garbage collection there (in the floating-warning
    log handler, gst-python 1.22) could free the new element (valgrind; about 2 in 200 ``make`` with a small GC
    threshold). PyGObject calls ``Property.fset`` at each set (``set_property``, gst-launch, attribute assignment).
    """
    for prop in list(vars(cls).values()):
        if not isinstance(prop, GObject.Property) or not prop.flags & GObject.ParamFlags.WRITABLE:
            continue

        name = prop.name.replace("_", "-")  # the attribute's name; GObject's has dashes

        def fset(instance, value, _orig=prop.fset, _name=name):
            _orig(instance, value)
            _property_set(instance, _name)

        prop.fset = fset


_FORMAT_LIST = ", ".join(FORMATS)
#: System memory: packed RGB-family and 4:2:0 YUV (what software decoders give); CUDA memory from NVIDIA's
#: decoders (NV12) and converters; DeepStream's NVMM batches.
CAPS = Gst.Caps.from_string(
    f"video/x-raw, format=(string){{ {_FORMAT_LIST} }}, width=(int)[1, 32767], height=(int)[1, 32767]; "
    f"video/x-raw({CUDA_FEATURE}), format=(string){{ {_FORMAT_LIST} }}, width=(int)[1, 32767], "
    "height=(int)[1, 32767]"
)
CAPS.append(NVMM_CAPS.copy())
TEMPLATES = (
    Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, CAPS),
    Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, CAPS),
)


class InferElement(PackedVideoFilter):
    """Runs a detector on each (or every ``interval+1``-th) frame and attaches one ROI meta per detection."""

    __gtype_name__ = "PyInfer"
    __gstmetadata__ = (
        "Python inference",
        "Filter/Analyzer/Video",
        "Runs a PyTorch detector on video frames and attaches detections as region-of-interest metadata",
        "pyinfer developers",
    )
    __gsttemplates__ = TEMPLATES

    __gsignals__ = {  # noqa: RUF012 - PyGObject reads this class attribute
        # (path, ok, reason): a model-engine change while playing finished loading (ok) or failed.
        "model-updated": (GObject.SignalFlags.RUN_LAST, None, (str, bool, str)),
    }

    @GObject.Property(
        type=str, default="", nick="Model file",
        blurb="The model; required: .torchscript/.ts (TorchScript), .pt (a TorchScript archive; a pickled checkpoint "
        "only with allow-pickle=true), .pt2 (torch.export), .onnx (ONNX Runtime), "
        ".engine/.plan (TensorRT), package.module:callable or /path/file.py:callable (a factory returning an "
        "nn.Module, e.g. a torchvision detector), or a model on a Triton Inference Server: "
        "triton://host:8001/model[/version] (gRPC) or http://host:8000/model (docs/triton.md). Set while "
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

    backend = ready_property(
        "backend",
        type=Backend, default="auto", nick="Backend",
        blurb="Runtime: auto (from the model-engine extension or URL scheme), torchscript, export, module, onnx, "
        "tensorrt (with an .onnx model builds an engine once and caches it beside the model) or triton (a remote "
        "Triton Inference Server; letterbox and decode stay here)",
    )  # fmt: skip
    precision = ready_property(
        "precision",
        type=Precision, default="fp32", nick="Precision",
        blurb="fp32 (the model as saved), fp16 or bf16: weights cast (torch backends) or TensorRT builder flags; "
        "ONNX runs in the precision it was exported in; Triton as the server's model config declares its input",
    )  # fmt: skip
    cuda_graphs = ready_property(
        "cuda-graphs",
        type=bool, default=False, nick="CUDA graphs",
        blurb="Capture letterbox, model and decode (with NMS) in one CUDA graph per input shape and replay it: one "
        "launch and one device-to-host copy per batch. Torch backends on CUDA; ignored on the CPU",
    )  # fmt: skip
    compile = ready_property(
        "compile",
        type=Compile, default="off", nick="Compile",
        blurb="torch.compile of model, letterbox and decode: off, default, reduce-overhead (inductor kernels in "
        "CUDA graphs) or max-autotune. Costs tens of seconds per input shape at the first batch",
    )  # fmt: skip
    channels_last = ready_property(
        "channels-last",
        type=bool, default=False, nick="Channels last",
        blurb="Model weights and input in NHWC memory order (faster fp16/bf16 convolutions on GPUs); torch backends",
    )  # fmt: skip
    allow_pickle = ready_property(
        "allow-pickle",
        type=bool, default=False, nick="Allow pickle",
        blurb="Load model files that unpickle Python objects (torch.save checkpoints), which can run any code: "
        "only for files you trust",
    )  # fmt: skip
    labels_file = GObject.Property(
        type=str, default="", nick="Labels file",
        blurb="Class names, one per line; empty: the model's own names (or class ids). Applies at start and at the "
        "next model-engine change",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    confidence_threshold = GObject.Property(
        type=float, default=DEFAULT_PARAMS.conf_threshold, minimum=0.0, maximum=1.0, nick="Confidence threshold",
        blurb="Drop detections scoring at or below this", flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    nms_iou_threshold = GObject.Property(
        type=float, default=DEFAULT_PARAMS.iou_threshold, minimum=0.0, maximum=1.0, nick="NMS IoU threshold",
        blurb="Class-aware non-maximum suppression: drop boxes overlapping a better one by more than this IoU",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    device = ready_property(
        "device",
        type=str, default="auto", nick="Device",
        blurb="Where the model runs: auto (cuda when available, else cpu), cpu, cuda, cuda:N (backend=triton: "
        "where letterbox and decode run; the model runs where the server puts it)",
    )  # fmt: skip
    share_cuda_context = ready_property(
        "share-cuda-context",
        type=bool, default=True, nick="Share CUDA context",
        blurb="Answer the context query of upstream CUDA elements (nvh264dec and the other NVDEC decoders, "
        "cudaupload) with the primary context of this element's CUDA device, the one torch runs in: decoder and "
        "model then share one context instead of the GPU time-slicing between two. false: they make their own",
    )  # fmt: skip
    batch_size = ready_property(
        "batch-size",
        type=int, default=1, minimum=1, maximum=1024, nick="Batch size",
        blurb="Frames per model call; frames are held until the batch is full (or EOS, or batch-timeout), adding "
        "latency that the element reports in LATENCY queries",
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
        type=int, default=DEFAULT_PARAMS.max_detections, minimum=1, maximum=100_000, nick="Max detections",
        blurb="Keep at most this many detections per frame (highest confidence first)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    decoder = choice_property(
        "decoder",
        type=Decoder, default="auto", nick="Decoder",
        blurb="Output decoder: auto (picked from the model's metadata, output names and shapes; see decoder-used), "
        "yolov8 (also YOLO11), yolov5, yolo-e2e (YOLOv10/YOLO26 end-to-end), yolo-obb (rotated boxes), yolo-seg "
        "(instance masks), yolo-pose (keypoints), detr (RT-DETR/D-FINE), classifier, torchvision (Faster R-CNN, "
        "RetinaNet, FCOS, SSD), or custom (the "
        "postprocess hook). Applies at start and at the next "
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

    meta = ready_property(
        "meta",
        type=Meta, default="auto", nick="Metadata writer",
        blurb="Where detections go: auto (NVMM caps: DeepStream NvDsObjectMeta through pyservicemaker, else pyds; "
        "system or CUDA memory: GstAnalytics on GStreamer >= 1.24, else ROI meta), analytics (GstAnalytics), roi "
        "(GstVideoRegionOfInterestMeta), both (analytics and roi), deepstream (pyservicemaker), pyds (legacy "
        "bindings)",
    )  # fmt: skip
    mark_inferred = ready_property(
        "mark-inferred",
        type=bool, default=True, nick="Mark inferred",
        blurb="DeepStream: set NvDsFrameMeta.bInferDone on inferred frames, as nvinfer does, so nvtracker treats "
        "them as detector frames (through pyds, else a layout-checked ctypes write)",
    )  # fmt: skip
    event_meta = ready_property(
        "event-meta",
        type=bool, default=False, nick="Event meta",
        blurb="DeepStream (pyservicemaker): also attach one NvDsEventMsgMeta per object for nvmsgconv's default "
        "payload mode",
    )  # fmt: skip

    @GObject.Property(
        type=str, nick="Metadata writer in use",
        blurb="What the negotiated caps selected: analytics, roi, analytics+roi, or the DeepStream writer, frame "
        "access and bInferDone method",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def meta_used(self) -> str:
        return self._meta_used

    on_error = choice_property(
        "on-error",
        type=OnError, default="fail", nick="On error",
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
        type=int, nick="Model ID",
        blurb="Generation of the serving model: 0 at start, then the request number of the model swapped in (each "
        "model-engine set while running is a request, failed and superseded ones too)",
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

    @GObject.Property(
        type=str, nick="Device used",
        blurb="Where the serving model runs, e.g. 'cuda:0' or 'cpu' (what device=auto chose); empty while stopped",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def device_used(self) -> str:
        engine = self._engine
        return str(engine.model.device) if engine is not None else ""

    @GObject.Property(
        type=str, nick="Backend used",
        blurb="The runtime and precision of the serving model, e.g. 'onnx fp16' or 'torchscript fp32' (what "
        "backend=auto chose from the file); empty while stopped",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def backend_used(self) -> str:
        engine = self._engine
        if engine is None:
            return ""
        model = engine.model
        return f"{getattr(model, 'backend', '?')} {getattr(model, 'precision', '?')}"

    batch_timeout = GObject.Property(
        type=GObject.TYPE_INT64, default=0, minimum=-1, maximum=3_600_000_000, nick="Batch timeout",
        blurb="Microseconds a partly filled batch waits for more frames before it is inferred as it is "
        "(nvstreammux's batched-push-timeout): 0 (auto): live sources wait at most the time the batch takes "
        "to fill at the caps' frame rate, other sources until the batch is full; -1: always until full",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    batch_group = ready_property(
        "batch-group",
        type=str, default="", nick="Batch group",
        blurb="Share one model and one batch with every pyinfer of this process that has the same group name (one "
        "per camera): frames of all of them go into one model call of up to batch-size frames, at most "
        "batch-timeout late (40 ms when 0); the group's model and batching settings are those of the member that "
        "starts first. Empty: this element batches only its own frames",
    )  # fmt: skip

    @GObject.Property(
        type=int, default=0, minimum=0, maximum=3_600_000, nick="Stats interval",
        blurb="Milliseconds between pyinfer-stats element messages (frames, fps, fps-average, latency-ms, "
        "latency-max-ms, batch-group) for this stream, as DeepStream's perf callback; 0: none",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    def stats_interval(self) -> int:
        return self._stats_interval_ms

    @stats_interval.setter
    def stats_interval(self, value: int) -> None:
        self._stats_interval_ms = int(value)

    in_flight = ready_property(
        "in-flight",
        type=int, default=DEFAULT_DEPTH, minimum=1, maximum=8, nick="Batches in flight",
        blurb="Batches submitted to the model and not yet collected: with 2, the GPU runs one batch while the "
        "results of the one before are written and pushed (1: one batch at a time)",
    )  # fmt: skip

    process_mode = ready_property(
        "process-mode",
        type=ProcessMode, default="primary", nick="Process mode",
        blurb="primary: the model runs on whole frames; secondary (nvinfer's process-mode=2): on the objects an "
        "upstream pyinfer found, their crops resized to the model input in one batch; a classifier's result is "
        "attached to each object, a detector's objects are added inside their parent; batch-size then counts "
        "objects per model call",
    )  # fmt: skip
    operate_on_gie_id = GObject.Property(
        type=int, default=-1, minimum=-1, maximum=2**31 - 1, nick="Operate on GIE id",
        blurb="Secondary: only objects whose producer has this unique-id (-1: any producer)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    operate_on_class_ids = GObject.Property(
        type=str, default="", nick="Operate on class ids",
        blurb="Secondary: only objects of these class ids, e.g. 0;2 (also 0:2 or 0,2); empty: every class",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    input_object_min_width = GObject.Property(
        type=int, default=0, minimum=0, maximum=32767, nick="Input object min width",
        blurb="Secondary: skip objects narrower than this many pixels (0: no limit)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    input_object_min_height = GObject.Property(
        type=int, default=0, minimum=0, maximum=32767, nick="Input object min height",
        blurb="Secondary: skip objects lower than this many pixels (0: no limit)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    input_object_max_width = GObject.Property(
        type=int, default=0, minimum=0, maximum=32767, nick="Input object max width",
        blurb="Secondary: skip objects wider than this many pixels (0: no limit)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    input_object_max_height = GObject.Property(
        type=int, default=0, minimum=0, maximum=32767, nick="Input object max height",
        blurb="Secondary: skip objects higher than this many pixels (0: no limit)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    secondary_reinfer_interval = GObject.Property(
        type=int, default=0, minimum=0, maximum=1_000_000, nick="Secondary re-infer interval",
        blurb="Secondary: an object a tracker follows (pytracker upstream) keeps its result for this many frames "
        "before the model runs on it again; the kept result is attached on every frame (0: every frame)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    maintain_aspect_ratio = GObject.Property(
        type=bool, default=False, nick="Maintain aspect ratio",
        blurb="Secondary: scale object crops keeping their aspect ratio and pad the rest (grey), instead of "
        "stretching them to the model input (nvinfer's default)",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    config_file_path = ready_property(
        "config-file-path",
        type=str, default="", nick="nvinfer config file",
        blurb="An nvinfer configuration file ([property], [class-attrs-all], [class-attrs-N]), read at start: its "
        "keys set the matching properties (model-engine, labels-file, batch-size, thresholds, interval, unique-id...), "
        "except properties set on the element, which win as in nvinfer. Paths in it are relative to the file; keys "
        "pyinfer cannot honour are named in one WARNING",
    )  # fmt: skip

    def __init__(self) -> None:
        self._model_path = ""
        self._engine = None
        super().__init__()
        self._swapper = ModelSwapper(self._build_engine, self._on_load_failed)
        self._model_id = 0
        self._skipped = 0
        self._last_skip_warning = 0.0
        self._frames_seen = 0
        self._batches_seen = 0
        self._lock = threading.RLock()  # the open batch: filled by the streaming thread, sealed by a timeout too
        self._batch: _OpenBatch | None = None
        self._pipe: InferPipeline | None = None
        self._rings: dict[str, StagingRing] = {}  # by where the slots are: "cpu", or the model's CUDA device
        self._flow = Gst.FlowReturn.OK  # the last push's result, returned upstream at the next buffer
        self._ds = None  # DeepStreamSession while NVMM caps are negotiated
        self._stats = _Stats()
        self._results = ResultCache()  # process-mode=secondary: tracked objects' results (secondary-reinfer-interval)
        self._stats_interval_ms = 0
        self._group = None  # the BatchGroup this element feeds (batch-group), and its side of it
        self._group_member = None
        self._meta_used = ""
        self._codec: Codec = meta_codec("roi")
        self._last_warning: dict[str, float] = {}
        self._started = False
        self._live: bool | None = None  # upstream is live (asked at the first buffer)
        self._frame_duration_ns = 0
        self._batch_cost_ns = 0  # the slowest batch seen (wall time from submit to delivery), for LATENCY
        self._reported_latency_ns = -1
        self._push = _Pusher()
        self._srcpad = self.get_static_pad("src")  # looked up once: a PyGObject call per batch otherwise
        self._settings_generation = getattr(self, "_settings_generation", 0)  # bumped by setters (_track_sets)
        self._settings_cache: tuple[int, Settings] | None = None
        self._explicit: set[str] = set()  # properties set on the element (config-file-path: they win)
        self._config_applied: set[str] = set()  # properties the config file set at the last start
        self._applying_config = False

    # -- state -------------------------------------------------------------------------------------
    def _settings(self) -> Settings:
        """The per-batch properties, read once after each change (their setters bump the generation), not per buffer."""
        generation = self._settings_generation
        cached = self._settings_cache
        if cached is not None and cached[0] == generation:
            return cached[1]
        settings = Settings(
            confidence_threshold=self.confidence_threshold,
            nms_iou_threshold=self.nms_iou_threshold,
            max_detections=self.max_detections,
            unique_id=self.unique_id,
            interval=self.interval,
            objects=self._object_filter(),
        )
        # Stamped with the generation read before the properties: a change during the reads makes it stale at once.
        self._settings_cache = (generation, settings)
        return settings

    def _object_filter(self) -> ObjectFilter | None:
        """process-mode=secondary: the object filter from the properties (None in primary mode)."""
        if self.process_mode != "secondary":
            return None
        try:
            class_ids = parse_class_ids(self.operate_on_class_ids)
        except ConfigError as exc:
            self._warn_limited("class-ids", Gst.ResourceError.SETTINGS, f"{exc}: operating on every class")
            class_ids = frozenset()
        return ObjectFilter(
            gie_id=self.operate_on_gie_id,
            class_ids=class_ids,
            min_width=self.input_object_min_width,
            min_height=self.input_object_min_height,
            max_width=self.input_object_max_width,
            max_height=self.input_object_max_height,
            reinfer_interval=self.secondary_reinfer_interval,
            letterbox=self.maintain_aspect_ratio,
        )

    @property
    def _secondary(self) -> bool:
        return self.process_mode == "secondary"

    @property
    def _frames_per_batch(self) -> int:
        """Frames per model call: batch-size, or one in secondary mode (there batch-size counts objects)."""
        return 1 if self._secondary else self.batch_size

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
            in_flight=self.in_flight,
        )

    def _build_engine(self, cfg):
        from pyinfer.engine import Engine

        engine = Engine.build(cfg)
        if self._secondary:
            _check_secondary_decoder(engine, cfg.model)
        layout = self._layout
        if layout is not None:  # validate on a batch shaped like the live frames (secondary: like the crops)
            fmt = "RGB" if layout.format in YUV_FORMATS else layout.format
            channels = 3 if layout.format in YUV_FORMATS else layout.channels
            if self._secondary:
                engine.check_frames(self.batch_size, engine.input_height, engine.input_width, channels, fmt)
            else:
                engine.check_frames(self.batch_size, layout.height, layout.width, channels, fmt)
        return engine

    def _on_load_failed(self, result: LoadResult) -> None:
        if not result.reason.startswith("superseded"):
            post_warning(self, Gst.ResourceError.OPEN_READ, f"model update to {result.path} failed, the previous "
                         f"model keeps serving: {result.reason}")  # fmt: skip
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
        self._results.clear()  # secondary: results kept for tracked objects were the old model's
        log.info("model %s serving from frame %d, decoder %s", result.path, self._frames_seen, engine.decoder_choice)
        self._announce(result, first_frame=self._frames_seen)

    def _apply_config_file(self) -> bool:
        """config-file-path: set what the nvinfer file gives, except properties set on the element (at start)."""
        from pyinfer.nvinfer_config import read_nvinfer_config

        self._applying_config = True
        try:
            for name in self._config_applied - self._explicit:  # the last file's values go: this file may not set them
                self.set_property(name, self.find_property(name).default_value)
            self._config_applied = set()
            if not self.config_file_path:
                return True
            try:
                config = read_nvinfer_config(self.config_file_path)
                values = config.for_element(self._explicit)
            except ConfigError as exc:
                code = Gst.ResourceError.NOT_FOUND if exc.missing else Gst.ResourceError.SETTINGS
                if getattr(exc, "unreadable", False):
                    code = Gst.ResourceError.OPEN_READ
                post_error(self, code, str(exc))
                return False
            for name, value in values.items():
                self.set_property(name, value)
            self._config_applied = set(values)
        finally:
            self._applying_config = False
        if config.unsupported:
            post_warning(self, Gst.ResourceError.SETTINGS, config.warning())
        kept = sorted(set(config.properties) - set(values))
        log.info(
            "%s: set %s; kept as set on the element: %s",
            config.path,
            ", ".join(f"{k}={v!r} ({config.sources[k]})" for k, v in values.items()),
            ", ".join(kept) or "none",
        )
        return True

    def do_start(self) -> bool:
        from pyinfer.engine import Engine, on_fresh_thread

        if not self._apply_config_file():
            return False
        # on-error, meta, backend, precision, compile and decoder are GEnums: GObject refused other values when set
        if self.meta not in ("deepstream", "pyds"):
            try:
                self._codec = meta_codec(self.meta)
            except ValueError as exc:
                post_error(self, Gst.ResourceError.SETTINGS, str(exc))
                return False
        cfg = self._engine_config()
        if self._secondary and self.batch_group:
            post_error(self, Gst.ResourceError.SETTINGS, "process-mode=secondary cannot join a batch-group: a "
                       "secondary batches the objects of each buffer itself (batch-size counts objects)")  # fmt: skip
            return False
        try:
            if self.batch_group:
                return self._join_group(cfg)
            self._engine = on_fresh_thread(Engine.build, cfg)  # see on_fresh_thread: no OpenMP team left here
            if self._secondary:
                _check_secondary_decoder(self._engine, cfg.model)
        except PyInferError as exc:
            code = _start_error_code(exc)
            post_error(self, code, str(exc), error_debug(exc))
            return False
        except BaseException as exc:  # user code (a factory, a hook) may raise anything, exit too
            post_error(self, Gst.LibraryError.INIT, f"could not load model {cfg.model}: {describe_exception(exc)}",
                       format_exception(exc))  # fmt: skip
            return False
        self._frames_seen = 0
        self._stats.reset()
        self._batches_seen = 0
        self._batch = None
        self._results.clear()
        self._model_id = 0
        self._skipped = 0
        self._last_warning = {}
        self._flow = Gst.FlowReturn.OK
        self._live = None
        self._batch_cost_ns = 0
        self._reported_latency_ns = -1
        self._pipe = InferPipeline(self._deliver, depth=self.in_flight, idle=self._on_idle, name="pyinfer-worker")
        self._started = True
        log.info("loaded %s on %s, decoder %s", cfg.model, self._engine.model.device, self._engine.decoder_choice)
        return True

    def _join_group(self, cfg) -> bool:
        """do_start for a batch-group member: the group's engine (built here by the first member) and batcher."""
        from pyinfer.elements._group import BatchGroup, GroupError
        from pyinfer.engine import Engine, on_fresh_thread

        try:
            self._group, self._group_member = BatchGroup.join(
                self.batch_group, self, cfg, lambda c: on_fresh_thread(Engine.build, c)
            )
        except GroupError as exc:
            post_error(self, Gst.ResourceError.SETTINGS, str(exc))
            return False
        self._engine = self._group.engine
        self._model_id = self._group.model_id
        self._frames_seen = self._batches_seen = self._skipped = 0
        self._stats.reset()
        self._batch = None
        self._last_warning = {}
        self._flow = Gst.FlowReturn.OK
        self._live = None
        self._batch_cost_ns = 0
        self._reported_latency_ns = -1
        self._started = True
        log.info("%s joined batch-group %s (%d members): %s on %s", self.get_name(), self.batch_group,
                 len(self._group.members), cfg.model, self._engine.model.device)  # fmt: skip
        return True

    def do_stop(self) -> bool:
        self._started = False
        group, self._group = self._group, None
        if group is not None:
            group.leave(self)
            self._group_member = None
        self._swapper.stop()
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.flush()  # wakes a streaming thread waiting for room while it holds the lock (see _flush)
        for ring in self._rings.values():
            ring.close()
        with self._lock:
            batch, self._batch = self._batch, None
        if batch is not None:
            batch.drop()
        if pipe is not None:
            pipe.stop()
        self._rings = {}
        self._engine = None
        self._layout = None
        self._ds = None
        return True

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        if is_nvmm(incaps):
            if self._secondary:
                post_error(self, Gst.CoreError.NEGOTIATION, "process-mode=secondary runs on plain GStreamer (ROI "
                           "metas) for now; under DeepStream use nvinfer's secondary mode")  # fmt: skip
                return False
            if self._group is not None:
                post_error(self, Gst.CoreError.NEGOTIATION, f"batch-group {self.batch_group!r} takes system or CUDA "
                           "memory frames; on DeepStream, nvstreammux batches the streams")  # fmt: skip
                return False
            if self.meta in ("roi", "analytics", "both"):
                post_error(self, Gst.CoreError.NEGOTIATION, f"meta={self.meta} cannot write to NVMM frames: use "
                           "meta=auto on DeepStream")  # fmt: skip
                return False
            layout = _nvmm_layout(incaps)
            if layout is None:
                return False
            self._layout = layout
            self._rings = {}
            return self._ds is not None or self._open_deepstream()
        try:
            layout = VideoLayout.from_caps(incaps)
        except ValueError as exc:
            post_error(self, Gst.CoreError.NEGOTIATION, str(exc))
            return False
        if self.meta in ("deepstream", "pyds"):
            post_error(self, Gst.CoreError.NEGOTIATION, f"meta={self.meta} needs DeepStream NVMM caps "
                       f"(video/x-raw(memory:NVMM),format=RGB), got {incaps.to_string()}")  # fmt: skip
            return False
        engine = self._engine
        if layout.memory == "cuda" and engine is not None and engine.model.device.type != "cuda":
            post_error(self, Gst.CoreError.NEGOTIATION, f"frames in CUDA memory need the model on a GPU, but "
                       f"it runs on {engine.model.device}: set device=cuda or put cudadownload before it")  # fmt: skip
            return False
        self._layout = layout
        self._rings = {}  # sized for the old frames
        self._ds = None
        self._meta_used = self._codec.name
        rate = GstVideo.VideoInfo.new_from_caps(incaps)
        self._frame_duration_ns = (
            Gst.util_uint64_scale_int(Gst.SECOND, rate.fps_d, rate.fps_n) if rate is not None and rate.fps_n > 0 else 0
        )
        return True

    def _open_deepstream(self) -> bool:
        from pyinfer.frames.deepstream import DeepStreamSession, SessionOptions
        from pyinfer.meta.deepstream import labels_fit

        api = {"auto": "auto", "deepstream": "pyservicemaker", "pyds": "pyds"}[self.meta]
        options = SessionOptions(api=api, mark_inferred=self.mark_inferred, writer=self._writer_options())
        try:
            self._ds = DeepStreamSession(options)
        except PyInferError as exc:
            post_error(self, Gst.LibraryError.INIT, str(exc), error_debug(exc))
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

    # -- events and queries ------------------------------------------------------------------------
    def do_sink_event(self, event: Gst.Event) -> bool:
        group = self._group
        if group is not None:
            if event.type == Gst.EventType.FLUSH_START:
                group.flush(self)
            elif event.type == Gst.EventType.FLUSH_STOP:
                group.flush_stop(self)
                self._flow = Gst.FlowReturn.OK
            elif _serialized(event):
                group.drain(self)  # this stream's held frames go out before the event
            return GstBase.BaseTransform.do_sink_event(self, event)
        if event.type == Gst.EventType.FLUSH_START:
            self._flush()
        elif event.type == Gst.EventType.FLUSH_STOP:
            self._flush()
            if self._pipe is not None:
                # A push that was under way at FLUSH_START ends now (downstream is still flushing, so it fails at
                # once): its FLUSHING must not outlive the flush as the element's flow.
                self._pipe.drain()
            self._flow = Gst.FlowReturn.OK
        elif _serialized(event) and self._pipe is not None:
            # EOS, caps, segment, gap, tags...: whatever comes next follows every frame before it. Held frames
            # go out first (a partial batch is inferred as it is).
            self._drain()
        return GstBase.BaseTransform.do_sink_event(self, event)

    def do_gst_base_transform_query(self, direction: Gst.PadDirection, query: Gst.Query) -> bool:  # vfunc "query"
        if query.type == Gst.QueryType.CONTEXT and self._answer_cuda_context(query):
            return True
        if direction != Gst.PadDirection.SRC or query.type != Gst.QueryType.LATENCY:
            return GstBase.BaseTransform.do_query(self, direction, query)
        if not GstBase.BaseTransform.do_query(self, direction, query):
            return False
        live, lo, hi = query.parse_latency()
        ours = self._latency_ns()
        self._reported_latency_ns = ours
        query.set_latency(live, lo + ours, hi + ours if hi != Gst.CLOCK_TIME_NONE else hi)
        return True

    def _answer_cuda_context(self, query: Gst.Query) -> bool:
        """A ``gst.cuda.context`` query (from a decoder opening): answered with the primary context of the device
        the model will run on (``device``; auto: cuda:0), so that the decoder shares torch's context."""
        if not self.share_cuda_context:
            return False
        from pyinfer.frames.cuda_context import answer_query, device_index

        index = device_index(self.device)
        if index is None:
            return False
        answered = answer_query(self, query, index)
        if answered:
            log.debug("%s: upstream CUDA elements share the primary context of cuda:%d", self.get_name(), index)
        return answered

    def _latency_ns(self) -> int:
        """What the element adds: frames held until their batch fills (or times out), and the batches in flight."""
        frame = self._frame_duration_ns or _ASSUMED_FRAME_NS
        hold = (self._frames_per_batch - 1) * frame
        timeout = self._timeout_ns()
        if timeout is not None:
            hold = min(hold, timeout)
        cost = max(self._batch_cost_ns, frame)
        return int(hold + self.in_flight * cost)

    def _timeout_ns(self) -> int | None:
        """How long a partial batch may wait, or None: until it is full."""
        value = self.batch_timeout
        if value < 0 or self._frames_per_batch == 1:
            return None
        if value > 0:
            return value * 1000
        if not self._live:
            return None
        return self.batch_size * (self._frame_duration_ns or _ASSUMED_FRAME_NS)

    def _flush(self) -> None:
        # Wake the streaming thread before taking the lock it may hold: it can be waiting for room in the pipeline
        # or for a staging slot while the worker waits in a push that a prerolled sink holds until this
        # FLUSH_START reaches it (a flushing seek in PAUSED deadlocked that way).
        pipe, rings = self._pipe, list(self._rings.values())
        if pipe is not None:
            pipe.flush()
        for ring in rings:
            ring.interrupt()
        with self._lock:
            batch, self._batch = self._batch, None
        if batch is not None:
            batch.drop()
        if pipe is not None:
            pipe.flush()  # a batch sealed while the lock was awaited

    def _drain(self) -> None:
        with self._lock:
            self._seal()
        if self._pipe is not None:
            self._pipe.drain()

    # -- buffers -----------------------------------------------------------------------------------
    def do_submit_input_buffer(self, is_discont: bool, buf: Gst.Buffer) -> Gst.FlowReturn:
        """Take the buffer: into the open batch, or (not inferred, nothing held) straight to the output queue.

        Every buffer leaves through the worker (:meth:`_deliver`), in order; nothing is pushed from here, so
        GstBaseTransform marks no buffer DISCONT for frames held in a batch.
        """
        held = _CallerRef(hash(buf))  # ours from here: released if this returns without keeping the buffer
        group = self._group
        if group is not None:
            if self._layout is None:
                return Gst.FlowReturn.FLUSHING
            return group.submit(self, _owned(buf), held)
        if self._engine is None or self._layout is None or self._pipe is None:
            return Gst.FlowReturn.FLUSHING
        flow = self._flow
        if flow != Gst.FlowReturn.OK:
            return flow
        buf = _owned(buf)
        if self._ds is not None:
            return self._ds_submit(buf, held)
        if self._live is None:
            self._live = _upstream_is_live(self)
        settings = self._settings()
        with self._lock:
            batch = self._batch
            if batch is None:
                self._maybe_swap()  # a new model starts serving between two batches, never inside one
                batch = self._batch = _OpenBatch(self._engine, settings, self._model_id, self._frames_per_batch)
                batch.object_batch = self.batch_size
            infer = self._frames_seen % (settings.interval + 1) == 0
            self._frames_seen += 1
            objects = None
            if infer and settings.objects is not None:
                objects = self._select(buf, settings.objects)
                infer = bool(objects.infer.any())  # else every object's result comes from the cache
            if infer:
                try:
                    self._add_frame(batch, buf)
                except _Flushing:  # a flush or a stop woke the wait for a staging slot
                    self._batch = None
                    batch.drop()
                    return Gst.FlowReturn.FLUSHING
                except Exception as exc:
                    ret = self._failed(exc, 1)
                    if ret != Gst.FlowReturn.OK:
                        self._batch = None
                        batch.drop()
                        return ret
                    infer = False
                if infer and objects is not None:
                    batch.objects.append(objects)
            if objects is not None and not infer:
                objects.infer[:] = False  # not inferred (cached, or the frame failed): cached results only
            batch.items.append(_Item(buf, infer, time.monotonic_ns(), held, objects, self._frames_seen - 1))
            if batch.n_infer >= self._frames_per_batch or batch.n_infer == 0:
                self._seal()  # full; or nothing to infer in it: it goes out in its turn
        return self._flow

    def _select(self, buf: Gst.Buffer, flt: ObjectFilter):
        """Secondary: the frame's objects the element operates on (FrameObjects), GstAnalytics first."""
        from pyinfer.meta import read_detections

        dets = read_detections(buf)
        cache = self._results if is_classifier(self._engine) else None  # detections inside objects move with them
        return select_objects(dets, flt, cache, self._frames_seen - 1)

    def do_generate_output(self) -> tuple[Gst.FlowReturn, Gst.Buffer | None]:
        return Gst.FlowReturn.OK, None  # buffers are pushed by the worker, in order

    def _add_frame(self, batch: _OpenBatch, buf: Gst.Buffer) -> None:
        """Map one frame and put it in the batch: staged (copied) or, when no copy is needed, kept mapped."""
        engine = batch.engine
        layout = self._layout
        frame = map_frame(buf, layout, batch.map_device, pin=not batch.on_cpu and layout.memory != "cuda")
        # page-locked host memory (a recycled pool buffer, see pyinfer.frames.pinning) goes to the GPU by DMA
        pinned = frame.pinned
        if batch.read_in_place and (
            layout.memory == "cuda" or batch.on_cpu or (pinned and layout.format not in YUV_FORMATS)
        ):
            batch.mapped.append(frame)  # read where it is: the mapping stays open until the batch is delivered
            batch.frames = frame.frames()
            batch.n_infer += 1
            return
        try:
            if batch.slot is None:
                # a batch whose first frame is page-locked is gathered on the device, as CUDA frames are
                ring = self._staging_ring(engine, layout, on_device=layout.memory == "cuda" or pinned)
                batch.ring, batch.slot = ring, ring.acquire()
                if batch.slot is None:
                    raise _Flushing()
            if batch.ring.device != "cpu":  # gathered on the device in one call when the batch is submitted
                batch.gather.append((batch.n_infer, frame.planes))
            else:  # copied on the copy threads while this thread takes the next frame
                batch.copies += StagingRing.put_async(batch.slot, batch.n_infer, frame.planes)
        finally:
            batch.mapped.append(frame)  # the copies read it after this returns: mapped until the batch is done
        batch.n_infer += 1

    def _staging_ring(self, engine, layout: VideoLayout, *, on_device: bool = False) -> StagingRing:
        """The staging slots for the next batch: on the model's device (CUDA frames, page-locked host frames:
        gathered there) or in host memory (pinned for a GPU model; the copy threads fill it)."""
        device = engine.model.device
        where = str(device) if on_device else "cpu"
        key = (tuple(layout.plane_shapes()), self._frames_per_batch, where, device.type == "cuda")
        ring = self._rings.get(where)
        if ring is None or ring.key != key:
            ring = StagingRing(layout.plane_shapes(), self._frames_per_batch, device=where,
                               pinned=device.type == "cuda", slots=self.in_flight + 2)  # fmt: skip
            ring.key = key
            self._rings[where] = ring
        return ring

    def _seal(self) -> None:
        """Hand the open batch to the worker (the caller holds ``_lock``)."""
        batch, self._batch = self._batch, None
        if batch is None or self._pipe is None:
            return
        job = batch.job(self._layout)
        self._pipe.put(job)

    def _on_idle(self) -> Job | None:
        """The worker has nothing to do: a partial batch that waited past the timeout is inferred now."""
        timeout = self._timeout_ns()
        if timeout is None:
            return None
        if not self._lock.acquire(blocking=False):  # the streaming thread is at the batch: it seals it itself
            return None
        try:
            batch = self._batch
            if batch is None or batch.n_infer == 0 or time.monotonic_ns() - batch.opened_ns < timeout:
                return None
            self._batch = None
            return batch.job(self._layout)
        finally:
            self._lock.release()

    def _ds_submit(self, buf: Gst.Buffer, held: _CallerRef | None = None) -> Gst.FlowReturn:
        """One NVMM batch from nvstreammux: its frames in one model call on the worker, objects as NvDsObjectMeta."""
        settings = self._settings()
        self._maybe_swap()
        infer = self._batches_seen % (settings.interval + 1) == 0  # nvinfer's interval counts batches
        self._batches_seen += 1
        self._frames_seen += 1
        ds = self._ds
        if ds.writer.options.unique_id != settings.unique_id:
            ds.writer.options = self._writer_options()
        params = InferParams(settings.confidence_threshold, settings.nms_iou_threshold, settings.max_detections)
        job = Job(tokens=[_Item(buf, infer, time.monotonic_ns(), held)], engine=_DsEngine(ds, self._engine, buf, infer),
                  frames=(), params=params, context="ds")  # fmt: skip
        self._pipe.put(job)
        return self._flow

    # -- the worker's side: metadata and pushes ----------------------------------------------------------
    def _deliver(self, job: Job, detections: list | None, error: BaseException | None) -> None:
        """On the worker: write the batch's metadata, then push its buffers in order."""
        if self._flow == Gst.FlowReturn.ERROR:
            # on-error=fail stopped the stream at an earlier batch: the batches already in flight behind it are
            # not pushed (the frames after the failed one would otherwise reach downstream after the ERROR)
            job.done()
            return
        if job.context == "ds":
            self._deliver_ds(job, detections, error)
            return
        batch: _Sealed = job.context
        settings = batch.settings
        items = job.tokens
        n = sum(item.infer for item in items)
        if error is not None:
            if self._failed(error, n) != Gst.FlowReturn.OK:
                job.done()
                self._flow = Gst.FlowReturn.ERROR
                return
            detections = None
        elif detections is not None and len(detections) != n:
            error = DecodeError(f"the model returned {len(detections)} results for a batch of {n} frames")
            if self._failed(error, n) != Gst.FlowReturn.OK:
                job.done()
                self._flow = Gst.FlowReturn.ERROR
                return
            detections = None
        job.done()  # frames unmapped, staging returned: only metadata is written from here on
        take = getattr(job.engine, "take_warnings", None)
        for text in take() if take is not None else ():
            self._warn_limited(_warning_key(text), Gst.StreamError.DECODE, text)
        if settings.objects is not None:
            self._deliver_secondary(items, detections, settings, batch.opened_ns, job.engine, batch.model_id)
            return
        dets = iter(detections or ())
        codec, uid, mid = self._codec, settings.unique_id, batch.model_id
        for item in items:
            inferred = item.infer and detections is not None
            with writable(item.buf):
                if inferred:
                    try:
                        codec.write_detections(item.buf, next(dets), unique_id=uid, model_id=mid)
                    except Exception as exc:  # the frame still goes on, in its place
                        if self._failed(exc, 1) != Gst.FlowReturn.OK:
                            self._flow = Gst.FlowReturn.ERROR
                            return
                        inferred = False
                codec.write_frame_info(item.buf, inferred=inferred, unique_id=uid, model_id=mid)
        if n:
            self._note_cost(batch.opened_ns)
        self._push_all(items)

    def _deliver_secondary(
        self, items: list, results: list | None, settings: Settings, opened_ns: int, job_engine, model_id: int
    ) -> None:
        """Secondary: each object's classification onto its ROI meta (fresh, or kept for its track), then push."""
        from pyinfer.elements._secondary import remember, write_children, write_results

        fresh = iter(results or ())
        uid = settings.unique_id
        classify = is_classifier(getattr(job_engine, "engine", job_engine))
        for item in items:
            objects = item.objects
            if objects is None or not len(objects):
                continue
            got = next(fresh, None) if item.infer else None
            if got is None:  # not inferred (all cached), or the batch failed: the cached results only
                got = [r if not objects.infer[k] else None for k, r in enumerate(objects.cached)]
            elif classify:
                remember(self._results, objects, got, item.frame_no)
            if not any(r is not None for r in got):
                continue
            with writable(item.buf):
                try:
                    if classify:
                        write_results(item.buf, objects, got, uid)
                    else:
                        write_children(item.buf, objects, got, uid, model_id)
                except Exception as exc:  # the frame still goes on, in its place
                    if self._failed(exc, 1) != Gst.FlowReturn.OK:
                        self._flow = Gst.FlowReturn.ERROR
                        return
        if results is not None:
            self._note_cost(opened_ns)
        self._push_all(items)

    def _deliver_ds(self, job: Job, report: object, error: BaseException | None) -> None:
        job.done()
        if error is not None and self._failed(error, 1) != Gst.FlowReturn.OK:
            self._flow = Gst.FlowReturn.ERROR
            return
        take = getattr(job.engine, "take_warnings", None)
        for text in take() if take is not None else ():
            self._warn_limited(_warning_key(text), Gst.StreamError.DECODE, text)
        if report is not None:
            self._ds_warnings(report)
        self._push_all(job.tokens)

    def _push_all(self, items: list) -> None:
        srcpad = self._srcpad
        while items:
            item = items.pop(0)
            ret = self._push(srcpad, item)
            if ret != Gst.FlowReturn.OK:
                if self._flow == Gst.FlowReturn.OK:
                    self._flow = ret
                items.clear()
                return
            self._stats.note(self, item.t_in)

    def _note_cost(self, opened_ns: int) -> None:
        """Keep the slowest batch's time in the element; a LATENCY message when it grew past what was reported."""
        cost = time.monotonic_ns() - opened_ns - (self._frames_per_batch - 1) * (self._frame_duration_ns or 0)
        if cost <= self._batch_cost_ns:
            return
        self._batch_cost_ns = cost
        if self._reported_latency_ns >= 0 and self._latency_ns() > self._reported_latency_ns * 1.2:
            self._reported_latency_ns = self._latency_ns()
            self.post_message(Gst.Message.new_latency(self))

    def _ds_warnings(self, report) -> None:
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
        if report.not_written:
            self._warn_limited("not-written", Gst.ResourceError.SETTINGS, f"the model's "
                               f"{' and '.join(sorted(report.not_written))} are not written through pyds (it has no "
                               "way to hand DeepStream a mask or a custom user meta without a compiled binding): "
                               "use pyservicemaker (meta=deepstream)")  # fmt: skip

    def _failed(self, exc: BaseException, frames: int) -> Gst.FlowReturn:
        """Apply the on-error policy to a failure that cost ``frames`` frames their detections."""
        text = describe_exception(exc)
        if self.on_error == "skip":
            self._skipped += frames
            now = time.monotonic()
            if now - self._last_skip_warning >= SKIP_WARNING_INTERVAL_S:  # rate-limited
                self._last_skip_warning = now
                post_warning(self, Gst.StreamError.DECODE if isinstance(exc, DecodeError) else Gst.LibraryError.FAILED,
                             f"inference failed, frames pass without detections (on-error=skip, "
                             f"{self._skipped} skipped so far): {text}", error_debug(exc))  # fmt: skip
            return Gst.FlowReturn.OK
        if isinstance(exc, DecodeError):
            post_error(self, Gst.StreamError.DECODE, text, error_debug(exc))
        else:
            post_error(self, Gst.LibraryError.FAILED, f"inference failed: {text}", error_debug(exc))
        return Gst.FlowReturn.ERROR


def _check_secondary_decoder(engine, model: str) -> None:
    """process-mode=secondary: classifiers (one result per object) and detectors (objects inside objects, with
    keypoints where the decoder gives them); ConfigError for decoders whose results cannot be mapped back yet."""
    decoder = getattr(engine.decoder, "name", "")
    if decoder in ("yolo-obb", "yolo-seg"):
        raise ConfigError(
            f"process-mode=secondary cannot run {model} (decoder {decoder!r}): rotated boxes and masks inside "
            "objects are not supported yet; classifiers and detectors (with keypoints) are"
        )


#: Frame duration assumed for latency when the caps give no frame rate.
_ASSUMED_FRAME_NS = Gst.SECOND // 30


@dataclass
class _Item:
    buf: Gst.Buffer
    infer: bool
    t_in: int = 0  # time.monotonic_ns() when the element took it (stats-interval's latency)
    held: _CallerRef | None = None  # the reference submit_input_buffer handed over (see _CallerRef)
    objects: Any = None  # process-mode=secondary: the frame's selected objects (FrameObjects)
    frame_no: int = 0


class _CallerRef:
    """The reference to its input buffer that GstBaseTransform hands to ``submit_input_buffer``.

    In C the subclass takes ownership of that reference; the introspection data says "transfer none", so
    PyGObject neither takes it nor releases it: the Python wrapper borrows the buffer during the call and,
    if Python keeps the wrapper, takes a reference of its own when the call returns (released with the
    wrapper). The caller's reference is then the element's to release, and nobody did: every buffer that
    went through pyinfer stayed alive for ever (a pool allocated a new one for each frame, 6 MB of host
    memory per 1080p RGB frame, or CUDA memory for each NVDEC frame). This object holds that reference: the
    push hands it downstream (:meth:`take`), and a buffer that is dropped instead releases it with this
    object (CPython frees it as soon as the item holding it goes).
    """

    __slots__ = ("ptr",)

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr

    def take(self) -> int:
        """The reference, now the caller's (given to gst_pad_push); this object no longer releases it."""
        ptr, self.ptr = self.ptr, 0
        return ptr

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, 0
        if ptr:
            _mini_object_unref(ptr)


_UNREF: Any = None


def _mini_object_unref(ptr: int) -> None:
    global _UNREF
    if _UNREF is None:
        fn = ctypes.CDLL("libgstreamer-1.0.so.0").gst_mini_object_unref  # the GIL is released: freeing a buffer
        fn.argtypes = [ctypes.c_void_p]  # returns it to its pool, which may wake threads waiting for one
        fn.restype = None
        _UNREF = fn
    _UNREF(ptr)


class _Stats:
    """One stream's rates through the element, posted as a ``pyinfer-stats`` element message every interval.

    Counted on the thread that pushes (the worker, or a batch-group member's output thread): frames pushed,
    and each frame's latency from the moment the element took it to the moment it was pushed (waiting for the
    batch, inference, metadata, the queue before the push).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.first_ns = 0
        self.frames = 0
        self.window_ns = 0
        self.window_frames = 0
        self.latency_sum_ns = 0
        self.latency_max_ns = 0

    def note(self, element: InferElement, t_in: int) -> None:
        now = time.monotonic_ns()
        if not self.frames:
            self.first_ns = self.window_ns = now
        self.frames += 1
        self.window_frames += 1
        latency = now - t_in if t_in else 0
        self.latency_sum_ns += latency
        if latency > self.latency_max_ns:
            self.latency_max_ns = latency
        interval_ns = element._stats_interval_ms * 1_000_000
        if interval_ns and now - self.window_ns >= interval_ns:
            self._post(element, now)

    def _post(self, element: InferElement, now: int) -> None:
        span = (now - self.window_ns) / 1e9
        s = Gst.Structure.new_empty("pyinfer-stats")
        s.set_value("frames", GObject.Value(GObject.TYPE_UINT64, self.frames))
        s.set_value("fps", self.window_frames / span if span > 0 else 0.0)
        total = (now - self.first_ns) / 1e9
        s.set_value("fps-average", self.frames / total if total > 0 else 0.0)
        s.set_value("latency-ms", self.latency_sum_ns / max(1, self.window_frames) / 1e6)
        s.set_value("latency-max-ms", self.latency_max_ns / 1e6)
        s.set_value("batch-group", element.batch_group)
        element.post_message(Gst.Message.new_element(element, s))
        self.window_ns, self.window_frames, self.latency_sum_ns, self.latency_max_ns = now, 0, 0, 0


@dataclass
class _Sealed:
    """What ``_deliver`` needs of a batch besides its buffers."""

    settings: Settings
    model_id: int
    opened_ns: int


class _OpenBatch:
    """The batch being filled on the streaming thread."""

    def __init__(self, engine, settings: Settings, model_id: int, batch_size: int) -> None:
        self.engine = engine
        self.settings = settings
        self.model_id = model_id
        self.items: list[_Item] = []
        self.n_infer = 0
        self.mapped: list = []  # frames read where they are, or still being copied (mapped until delivery)
        self.frames = None  # batch of one read in place
        self.copies: list = []  # futures of host frames' copies into the staging slot
        self.gather: list = []  # (index, planes) of CUDA frames to gather into the slot on submit
        self.objects: list = []  # process-mode=secondary: FrameObjects of the inferred frames, in order
        self.ring: StagingRing | None = None
        self.slot: list | None = None
        self.opened_ns = time.monotonic_ns()
        device = engine.model.device
        self.on_cpu = device.type == "cpu"
        self.map_device = "cuda" if self.on_cpu else str(device)  # where CUDA memory frames are viewed from
        self.read_in_place = batch_size == 1  # a batch of one frame is read where it is, when the engine can
        self.object_batch = 1  # process-mode=secondary: objects per model call (the element's batch-size)

    def job(self, layout) -> Job:
        frames = None
        if self.n_infer:
            frames = _slot_frames(self.slot, self.n_infer, layout) if self.slot is not None else self.frames
        s = self.settings
        params = InferParams(s.confidence_threshold, s.nms_iou_threshold, s.max_detections)
        channels = "RGB" if layout.format in YUV_FORMATS else layout.format
        mapped, ring, slot, copies, gather = self.mapped, self.ring, self.slot, self.copies, self.gather
        self.mapped, self.slot, self.copies, self.gather = [], None, [], []

        def prepare() -> None:  # on the worker, just before the batch is submitted
            wait_all(copies)
            if gather:
                StagingRing.put_many(slot, gather)

        def release() -> None:
            wait_all(copies, quiet=True)  # no copy may still write the slot or read the frame
            for frame in mapped:
                frame.close()
            if slot is not None:
                ring.release(slot)

        engine = self.engine
        if s.objects is not None:
            engine = SecondaryEngine(engine, self.objects, self.object_batch, s.objects.letterbox)
        return Job(
            tokens=self.items, frames=frames, engine=engine, channels=channels, params=params, release=release,
            context=_Sealed(self.settings, self.model_id, self.opened_ns),
            prepare=prepare if copies or gather else None,
        )  # fmt: skip

    def drop(self) -> None:
        """Discard (a flush or a stop): unmap, return the staging slot, forget the buffers."""
        wait_all(self.copies, quiet=True)
        for frame in self.mapped:
            frame.close()
        if self.slot is not None:
            self.ring.release(self.slot)
        self.mapped, self.slot, self.items, self.copies, self.gather = [], None, [], [], []


class _Flushing(Exception):
    """The wait for a staging slot was ended by a flush or a stop: the frame is dropped, not an error."""


def _slot_frames(slot: list, n: int, layout):
    """The first ``n`` frames of a staging slot as the engine takes them."""
    from pyinfer.ops.colour import YuvFrames

    if layout.format == "NV12":
        uv = slot[1][:n]
        return YuvFrames(slot[0][:n, ..., 0], uv[..., 0], uv[..., 1], layout.colour)
    if layout.format == "I420":
        return YuvFrames(slot[0][:n, ..., 0], slot[1][:n, ..., 0], slot[2][:n, ..., 0], layout.colour)
    return slot[0][:n]


class _DsEngine:
    """One NVMM batch as a pipeline job in two steps, so batches stay in flight as on the other paths.

    ``submit`` runs the session's read pass (the surfaces as tensors) and submits them to the engine; ``collect``
    collects the detections and runs the write pass (NvDsObjectMeta), returning the session's BatchReport.
    Frames of one size (nvstreammux scales to one) go in one engine batch, gathered on their device; frames of
    several sizes (the new muxer does not scale) are inferred one size after another, synchronously (the
    worker keeps one engine slot free for the batch it submits, which these calls use in turn).
    """

    def __init__(self, ds, engine, buf: Gst.Buffer, infer: bool) -> None:
        self.ds, self.engine, self.buf, self.infer = ds, engine, buf, infer
        self.take_warnings = getattr(engine, "take_warnings", None)

    def submit(self, frames, *, channels: str, params) -> tuple:
        import torch

        from pyinfer.engine import same_device

        steps = self.ds.steps(self.buf, self.infer)
        try:
            tensors = next(steps)
        except StopIteration as stop:
            return (None, None, stop.value)
        try:
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) > 1:
                return (steps, None, _infer_tensors(self.engine, tensors, params))
            device = self.engine.model.device
            batch = torch.stack(tensors) if len(tensors) > 1 else tensors[0][None]
            if not same_device(batch.device, device):
                batch = batch.to(device, non_blocking=True)
            channels = "RGB" if batch.shape[3] == 3 else "RGBA"
            return (steps, self.engine.submit(batch, channels=channels, params=params), None)
        except BaseException:
            steps.close()  # releases what the read pass holds
            raise

    def collect(self, ticket: tuple) -> object:
        steps, engine_ticket, ready = ticket
        if steps is None:
            return ready  # nothing was inferred: the report
        try:
            dets = self.engine.collect(engine_ticket) if engine_ticket is not None else ready
            steps.send(list(dets))
        except StopIteration as stop:
            return stop.value
        finally:
            steps.close()
        raise RuntimeError("the DeepStream write pass did not end")


def _nvmm_layout(caps: Gst.Caps):
    from pyinfer.frames.system import FrameLayout

    return FrameLayout.from_caps(caps)


def _refcount(buf: Gst.Buffer) -> int:
    """GstMiniObject.refcount, read in place (the PyGObject field read costs about ten times more)."""
    return ctypes.c_int.from_address(hash(buf) + _REFCOUNT_OFFSET).value


#: Offset of GstMiniObject.refcount: it follows the GType (a gsize).
_REFCOUNT_OFFSET = ctypes.sizeof(ctypes.c_size_t)


def _owned(buf: Gst.Buffer) -> Gst.Buffer:
    """The buffer, or a shallow copy of it when someone else holds it too (a tee): metadata is only ever added
    to a buffer no one else sees. The buffer comes with its one reference (held by Python's wrapper); the
    count is read in place, as reading ``buf.mini_object`` through PyGObject adds a reference while it reads."""
    if _refcount(buf) > 1:
        return copy_buffer(buf)
    return buf


def _serialized(event: Gst.Event) -> bool:
    """GST_EVENT_IS_SERIALIZED: the event travels in order with the buffers (EOS, caps, segment, gap, tags...)."""
    return bool(Gst.EventType.get_flags(event.type) & Gst.EventTypeFlags.SERIALIZED)


def _upstream_is_live(element: Gst.Element) -> bool:
    query = Gst.Query.new_latency()
    if not element.get_static_pad("sink").peer_query(query):
        return False
    return bool(query.parse_latency()[0])


#: GstFlowReturn by value (the push returns a C int; making the enum from it costs more than the lookup).
_FLOWS: dict[int, Gst.FlowReturn] = {}


class _Pusher:
    """Pushes a buffer downstream handing over its only reference (so downstream may write to it in place).

    PyGObject's ``Pad.push`` adds a reference for the call while the Python wrapper keeps its own, so a
    downstream in-place element would see a shared buffer and copy it (pixels included, to draw). Here the
    reference is taken in C, the wrapper dropped, and ``gst_pad_push`` gets the buffer as its one owner.
    The reference is taken with the GIL held (``PyDLL``: it returns at once, and letting other threads run
    there only meant waiting for the GIL again); the push releases it, as downstream may block or call Python.
    """

    def __init__(self) -> None:
        lib = ctypes.CDLL("libgstreamer-1.0.so.0")
        lib.gst_pad_push.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.gst_pad_push.restype = ctypes.c_int
        held = ctypes.PyDLL("libgstreamer-1.0.so.0")
        held.gst_mini_object_ref.argtypes = [ctypes.c_void_p]
        held.gst_mini_object_ref.restype = ctypes.c_void_p
        self._push = lib.gst_pad_push
        self._ref = held.gst_mini_object_ref

    def __call__(self, pad: Gst.Pad, item: _Item) -> Gst.FlowReturn:
        ptr = hash(item.buf)
        held, item.held = item.held, None
        if held is not None and held.ptr == ptr:
            held.take()  # the reference the element was given is the one pushed
        else:
            self._ref(ptr)  # a copy the wrapper owns (see _owned): a reference for the push
        del held  # a copy's original: its reference is released here
        item.buf = None  # the wrapper goes (with the reference PyGObject took for it, if any)
        ret = self._push(hash(pad), ptr)
        flow = _FLOWS.get(ret)
        if flow is None:
            flow = _FLOWS[ret] = Gst.FlowReturn(ret)
        return flow


def _infer_tensors(engine, tensors: list, params: InferParams) -> list:
    """Infer a DeepStream batch: (H, W, C) uint8 frames (strided views of the surfaces) -> Detections each.

    Frames of one size (nvstreammux scales to one) go to the model in one call, gathered on their device
    (a device-side copy, never through the host); frames of other sizes (the new muxer does not scale) make
    one call per size.
    """
    import torch

    from pyinfer.engine import same_device

    device = engine.model.device
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    out: list = [None] * len(tensors)
    for shape, idx in groups.items():
        frames = torch.stack([tensors[i] for i in idx]) if len(idx) > 1 else tensors[idx[0]][None]
        if not same_device(frames.device, device):
            frames = frames.to(device, non_blocking=True)
        dets = engine.infer(
            frames,
            channels="RGB" if shape[2] == 3 else "RGBA",
            conf_threshold=params.conf_threshold,
            iou_threshold=params.iou_threshold,
            max_detections=params.max_detections,
        )
        for i, d in zip(idx, dets):
            out[i] = d
        del frames
    return out


_track_sets(InferElement)


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
