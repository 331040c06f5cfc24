"""The GStreamer-free core: model + letterbox + decoder, batch of frames in, Detections out.

Elements, the CLI and the benchmarks all run this same object; the element adds only buffer mapping and
metadata writing on top.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pyinfer.accel import AccelSettings, FastPath, build_fast_path
from pyinfer.backends import load_model
from pyinfer.backends.metadata import stride_from_config
from pyinfer.decoders import DecoderChoice, check_fit, choose_decoder, get_decoder, hint_from_metadata
from pyinfer.decoders.base import check_batch_size, check_classes
from pyinfer.detections import Detections
from pyinfer.errors import ConfigError, DecodeError, DependencyError
from pyinfer.labels import check_label_count, read_labels
from pyinfer.ops.letterbox import letterbox
from pyinfer.params import DEFAULT_PARAMS, InferParams

if TYPE_CHECKING:
    import torch

    from pyinfer.backends.base import LoadedModel

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Ticket:
    """A batch submitted to :meth:`Engine.submit`; :meth:`Engine.collect` turns it into detections."""

    n: int
    params: InferParams
    fast: object = None  # the FastPath's ticket
    outputs: list | None = None  # plain path: the model's outputs (still being computed on a GPU)
    geometry: object = None
    slot: int = -1  # plain path: which input buffer of the ring the batch used
    done: bool = False


#: Batches the plain path lets be in flight at once (one model-input buffer each).
PLAIN_DEPTH = 2


@dataclass(frozen=True)
class EngineConfig:
    """What an engine is built from (the element's start-time properties).

    Attributes:
        model: model file path, or ``package.module:callable`` (pyinfer.backends.module).
        backend: auto (by extension), torchscript, export, module, onnx or tensorrt (pyinfer.backends).
        precision: fp32, fp16 or bf16, as the backend allows (docs/backends.md).
        allow_pickle: let model files that unpickle Python objects load (pickled .pt checkpoints).
        max_batch: the largest batch ``infer`` gets (the element's batch-size): TensorRT builds for it.
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
        labels_file: class names file; empty to use the model's own names (or class ids).
        decoder: decoder name, or "auto": picked from the model's metadata, output names and shapes
            (pyinfer.decoders.auto), the choice and its reason in ``Engine.decoder_choice``.
        postprocess: ``module:function`` of a custom post-processing hook (decoder custom, or auto).
        input_width: model input width; 0 to take it from the model's metadata.
        input_height: model input height; 0 to take it from the model's metadata.
        cuda_graphs: capture letterbox + model + decode in CUDA graphs (pyinfer.accel); ignored on the CPU.
        compile: torch.compile mode: off, default, reduce-overhead or max-autotune (pyinfer.accel).
        channels_last: model weights and input in NHWC memory order (pyinfer.accel).
        in_flight: batches that may be submitted and not yet collected (the element's in-flight).
    """

    model: str
    backend: str = "auto"
    precision: str = "fp32"
    allow_pickle: bool = False
    max_batch: int = 1
    device: str = "auto"
    labels_file: str = ""
    decoder: str = "auto"
    postprocess: str = ""
    input_width: int = 0
    input_height: int = 0
    cuda_graphs: bool = False
    compile: str = "off"
    channels_last: bool = False
    in_flight: int = PLAIN_DEPTH


def resolve_device(device: str) -> str:
    """Turn the ``device`` setting into a torch device string, checking CUDA is there when asked for."""
    import torch

    dev = device.strip().lower() or "auto"
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu":
        return "cpu"
    if dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
        index = int(dev[5:]) if ":" in dev else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


def check_stride(size: tuple[int, int], stride: int, *, source: str = "") -> None:
    """Raise ConfigError naming the size and the nearest sizes that fit, unless both sides are multiples of stride.

    Args:
        size: (width, height) the model is to run at.
        stride: the model's largest stride.
        source: where the size came from when not the input-width/height properties ("imgsz": the metadata).
    """
    bad = [(name, value) for name, value in zip(("input-width", "input-height"), size) if value % stride]
    if not bad:
        return

    def choices(value: int) -> str:
        below = value // stride * stride
        return f"{below} or {below + stride}" if below else str(stride)

    where = f" (the model's {source})" if source else ""
    if len(bad) == 1:
        name, value = bad[0]
        raise ConfigError(
            f"{name} {value}{where} is not a multiple of the model's stride {stride}: use {choices(value)}"
        )
    (_, width), (_, height) = bad
    raise ConfigError(
        f"input-width {width} and input-height {height}{where} are not multiples of the model's stride {stride}: "
        f"use {choices(width)} for the width and {choices(height)} for the height"
    )


def _odd_multiple(value: int, stride: int) -> int:
    """The odd multiple of ``stride`` at or just below ``value`` (``stride`` itself for small values)."""
    k = max(1, value // stride)
    return stride * (k if k % 2 else k - 1)


def last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's text, or its type: TorchScript puts its trace first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def import_torch() -> None:
    """Import torch and torchvision, or raise DependencyError naming what is missing."""
    for name in ("torch", "torchvision"):
        try:
            __import__(name)
        except ImportError as exc:
            msg = f"pyinfer needs the '{name}' package ({exc}); install it: pip install {name}"
            raise DependencyError(msg) from exc


def on_fresh_thread(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` on a new thread that ends with it; return its result or raise its exception.

    torch's OpenMP runtime keeps a thread team for every thread that ran parallel torch code until that
    thread exits. Loading and warming up a model on the application's thread (which sets the pipeline
    state) would leave a second team alive beside the streaming thread's, and with more OpenMP threads than
    cores every parallel region then sleeps at its barriers: about 1.6x slower forwards measured on 2 cores.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="pyinfer-load")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


class Engine:
    """A loaded model with its decoder and labels; ``infer`` runs a batch of frames."""

    def __init__(
        self,
        model: LoadedModel,
        decoder_name: str,
        labels: tuple[str, ...],
        input_size: tuple[int, int],
        *,
        postprocess: str = "",
        in_flight: int = PLAIN_DEPTH,
    ):
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        self.model = model
        self.depth = in_flight
        self._postprocess = postprocess
        # "auto" is decided in warm_up, from the model's outputs; a named decoder (or hook) is checked now.
        self.decoder_choice = DecoderChoice(decoder_name.strip().lower(), "set by the decoder property")
        self.decoder = (
            None if self.decoder_choice.name == "auto" else get_decoder(decoder_name, postprocess=postprocess)
        )
        self._configure_decoder()
        self.labels = labels
        self.input_width, self.input_height = input_size
        self.num_classes: int | None = 0
        self._inputs: list = [None] * in_flight  # the plain path's model-input buffers, one per batch in flight
        self._busy = [False] * in_flight
        self._stream = None  # plain path on CUDA: the stream batches run on (so host work overlaps them)
        self.warnings: list[str] = []  # see take_warnings
        self.fast: FastPath | None = None  # the speed knobs' path (pyinfer.accel), None when all are off

    @classmethod
    def build(cls, cfg: EngineConfig) -> Engine:
        """Load, check and warm up a model. Raises pyinfer errors naming the problem."""
        import_torch()
        accel = AccelSettings(cfg.cuda_graphs, cfg.compile, cfg.channels_last)  # ConfigError for a bad compile mode
        device = resolve_device(cfg.device)
        model = load_model(
            cfg.model,
            device,
            backend=cfg.backend,
            precision=cfg.precision,
            allow_pickle=cfg.allow_pickle,
            max_batch=cfg.max_batch,
        )
        if cfg.input_width > 0 and cfg.input_height > 0:
            size = (cfg.input_width, cfg.input_height)
        elif model.input_size is not None:
            size = model.input_size
        else:
            raise ConfigError(
                f"model {cfg.model} carries no input size (imgsz) in its metadata: set input-width and input-height"
            )
        stride = stride_from_config(model.metadata or {})
        if stride is not None:  # before the model runs: a size it cannot take fails deep inside it
            check_stride(size, stride, source="" if cfg.input_width > 0 and cfg.input_height > 0 else "imgsz")
        labels = read_labels(cfg.labels_file) if cfg.labels_file else model.names
        engine = cls(model, cfg.decoder, labels, size, postprocess=cfg.postprocess, in_flight=cfg.in_flight)
        engine.warm_up()
        log.info("model %s: decoder %s", cfg.model, engine.decoder_choice)
        engine.fast = build_fast_path(
            engine.model, engine.decoder, size, accel, depth=cfg.in_flight, max_batch=cfg.max_batch
        )
        nc = engine.num_classes  # None: the decoder cannot tell (end-to-end rows, custom hook); the names stand
        if cfg.labels_file:
            check_label_count(labels, nc, cfg.labels_file)
        if nc is not None and not cfg.labels_file and len(labels) != nc:
            engine.labels = ()  # the model's own names do not fit its outputs: report class ids instead
        return engine

    def warm_up(self) -> None:
        """Run one batch of grey frames; checks the outputs fit the decoder and learns the class count."""
        import torch

        x = torch.full(
            (1, 3, self.input_height, self.input_width), 114 / 255, dtype=self.model.dtype, device=self.model.device
        )
        try:
            outputs = self.model.forward(x)
        except Exception as exc:
            summary = last_line(exc)
            stride = self._find_stride()  # a model without stride metadata: is the size what it cannot take?
            if stride is not None:
                try:
                    check_stride((self.input_width, self.input_height), stride)
                except ConfigError as size_error:
                    size_error.detail = (
                        f"the model carries no stride in its metadata; it runs on sizes that are multiples of "
                        f"{stride}, and failed on {self.input_width}x{self.input_height}: {summary}"
                    )
                    raise size_error from exc
            own = self.model.input_size
            if own is not None and own != (self.input_width, self.input_height) and self._runs_at(*own):
                raise ConfigError(
                    f"model {self.model.path} runs only at its own input size {own[0]}x{own[1]} (imgsz), not "
                    f"{self.input_width}x{self.input_height}: set input-width={own[0]} input-height={own[1]} "
                    "or leave them unset",
                    detail=f"the model failed on {self.input_width}x{self.input_height}: {summary}",
                ) from exc
            raise DecodeError(
                f"model {self.model.path} failed on a 1x3x{self.input_height}x{self.input_width} input: {summary}"
            ) from exc
        if self.decoder is None:
            hint = self.model.decoder or hint_from_metadata(getattr(self.model, "metadata", None) or {})
            self.decoder_choice = choose_decoder(
                outputs,
                hint=hint,
                output_names=getattr(self.model, "output_names", ()),
                num_names=len(self.model.names),
                postprocess=self._postprocess,
            )
            self.decoder = get_decoder(self.decoder_choice.name, postprocess=self._postprocess)
            self._configure_decoder()
        self.num_classes = check_fit(self.decoder, outputs, self.model)

    def _configure_decoder(self) -> None:
        """Give the decoder what the model's metadata says of its layout (keypoint shape, end-to-end rows)."""
        configure = getattr(self.decoder, "configure", None)
        if configure is not None:
            configure(getattr(self.model, "metadata", None) or {})

    def _find_stride(self) -> int | None:
        """The smallest of 8, 16, 32, 64 whose odd multiples (near the input size) the model runs on.

        Only asked after the model failed on the input size: a detector joins feature maps of several
        levels, and an input size that is not a multiple of its largest stride gives maps that do not fit.
        Odd multiples, so that a size fitting a larger stride does not pass for a smaller one (320 is a
        multiple of 16, but also of 32). None when the model fails on every probed size too.
        """
        for stride in (8, 16, 32, 64):
            width, height = (_odd_multiple(v, stride) for v in (self.input_width, self.input_height))
            if (width, height) == (self.input_width, self.input_height):
                continue  # the size is a multiple of this stride already, and failed
            if self._runs_at(width, height):
                return stride
        return None

    def _runs_at(self, width: int, height: int) -> bool:
        """Whether the model runs on one grey frame of this size (probing after a failure)."""
        import torch

        x = torch.full((1, 3, height, width), 114 / 255, dtype=self.model.dtype, device=self.model.device)
        try:
            self.model.forward(x)
        except Exception:
            return False
        return True

    def check_frames(self, batch: int, height: int, width: int, channels: int, fmt: str) -> None:
        """Run one grey batch shaped like the live frames; raises if the model or decoder cannot take it."""
        import torch

        frames = torch.full((batch, height, width, channels), 114, dtype=torch.uint8, device=self.model.device)
        self.infer(frames, channels=fmt)

    def infer(
        self,
        frames: torch.Tensor,
        *,
        channels: str = "RGB",
        conf_threshold: float = DEFAULT_PARAMS.conf_threshold,
        iou_threshold: float = DEFAULT_PARAMS.iou_threshold,
        max_detections: int = DEFAULT_PARAMS.max_detections,
    ) -> list[Detections]:
        """Detect objects in a batch of same-sized frames (:meth:`submit` then :meth:`collect`).

        Args:
            frames: (B, H, W, C) uint8 (a strided view is fine), or 4:2:0 planes (pyinfer.ops.colour.YuvFrames);
                on the model's device or in host memory (pinned is best).
            channels: channel order of packed frames (RGB, BGR, RGBA, BGRA, RGBx, BGRx).
            conf_threshold: drop detections scoring at or below this.
            iou_threshold: class-aware NMS IoU threshold.
            max_detections: keep at most this many detections per frame.

        Returns:
            One Detections per frame, boxes in frame pixels.
        """
        params = InferParams(conf_threshold, iou_threshold, max_detections)
        return self.collect(self.submit(frames, channels=channels, params=params))

    def submit(self, frames: Any, *, channels: str = "RGB", params: InferParams = DEFAULT_PARAMS) -> Ticket:
        """Start a batch. On a GPU this returns once the work is queued: up to two batches may be in flight.

        Frames in host memory are copied to the model's device here (asynchronously from pinned memory); the
        caller keeps the frames unchanged until the batch is collected. Two strategies run behind this one call:
        the fast path (pyinfer.accel: CUDA graphs, compile, fixed decode) when a speed knob is on, else the
        plain letterbox -> forward, whose decode runs at :meth:`collect`.
        """
        import torch

        from pyinfer.ops.colour import YuvFrames

        n = len(frames) if isinstance(frames, YuvFrames) else int(frames.shape[0])
        device = self.model.device
        if isinstance(frames, YuvFrames):
            channels = "RGB"  # the planes are converted to RGB as they are read
            if not same_device(frames.device, device):
                frames = _yuv_to(frames, device)
        if self.fast is not None:
            if (
                not isinstance(frames, YuvFrames)
                and not same_device(frames.device, device)
                and not self.fast.takes_host_frames
            ):
                frames = frames.to(device)
            ticket = Ticket(n, params)
            ticket.fast = self.fast.submit(
                frames,
                channels=channels,
                conf_threshold=params.conf_threshold,
                iou_threshold=params.iou_threshold,
                max_detections=params.max_detections,
            )
            return ticket
        slot = self._free_slot()
        ticket = Ticket(n, params, slot=slot)
        stream = self._plain_stream()
        with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else _nullcontext():
            if stream is not None:
                stream.wait_stream(torch.cuda.current_stream(device))
            if not isinstance(frames, YuvFrames) and not same_device(frames.device, device):
                frames = frames.to(device, non_blocking=True)
            x, geometry = letterbox(
                frames,
                self.input_width,
                self.input_height,
                out=self._inputs[slot],
                dtype=self.model.dtype,
                channels=channels,
                stretch=self.decoder.resize == "stretch",
            )
            self._inputs[slot] = x
            self._busy[slot] = True
            try:
                send = self.model.submit  # remote models: the request is in flight until collect
                ticket.outputs = send(x) if send is not None else self.model.forward(x)
            except BaseException:
                self._busy[slot] = False  # a failed batch gives its input buffer back
                raise
            ticket.geometry = geometry
        return ticket

    def collect(self, ticket: Ticket) -> list[Detections]:
        """Wait for a submitted batch and decode it: one Detections per frame, boxes in frame pixels."""
        return self.collect_batch(ticket).detections(self.labels)

    def collect_batch(self, ticket: Ticket) -> Any:
        """:meth:`collect` before the split into one Detections per frame: the batch's DecodedBatch (rows with their
        frame index), for callers that read many small frames at once (a secondary's crops)."""
        import torch

        if ticket.done:
            raise RuntimeError("this batch was collected already")
        ticket.done = True
        p = ticket.params
        if ticket.fast is not None:
            batch = self.fast.collect(ticket.fast)
            check_batch_size(batch, ticket.n, model=self.model.path)
            self._note(batch)
            return batch
        try:
            stream = self._stream
            if self.model.wait is not None:  # a remote model's request: its outputs arrive now
                try:
                    ticket.outputs = self.model.wait(ticket.outputs)
                finally:
                    if self.model.notes is not None:
                        self.warnings.extend(self.model.notes())
            with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else _nullcontext():
                check_classes(self.decoder, ticket.outputs, self.num_classes, model=self.model.path)
                batch = self.decoder.decode(
                    ticket.outputs,
                    ticket.geometry,
                    conf_threshold=p.conf_threshold,
                    iou_threshold=p.iou_threshold,
                    max_detections=p.max_detections,
                )
            check_batch_size(batch, ticket.n, model=self.model.path)
            self._note(batch)
            return batch
        finally:
            self._busy[ticket.slot] = False
            ticket.outputs = None

    def _note(self, batch) -> None:
        if getattr(batch, "warning", ""):
            self.warnings.append(batch.warning)
            del self.warnings[:-8]  # the newest few, for whoever reports them (the element posts WARNINGs)

    def take_warnings(self) -> list[str]:
        """Warnings of the batches collected since the last call (e.g. NaN/inf candidates dropped), oldest first."""
        out, self.warnings = self.warnings, []
        fast = getattr(self, "fast", None)
        if fast is not None and fast.notices:  # a knob that stopped working (e.g. a failed CUDA graph capture)
            out, fast.notices = fast.notices + out, []
        return out

    def _free_slot(self) -> int:
        for i, busy in enumerate(self._busy):
            if not busy:
                return i
        raise RuntimeError(f"at most {self.depth} batches may be in flight: collect one first")

    def _plain_stream(self):
        import torch

        if self.model.device.type != "cuda" or not is_torch_native_model(self.model):
            return None
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=self.model.device)
        return self._stream


def is_torch_native_model(model) -> bool:
    """Whether the model's forward runs torch kernels on the current stream (ONNX Runtime/TensorRT do not)."""
    return getattr(model, "module", None) is not None


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def same_device(a, b) -> bool:
    """Whether two torch devices are the same memory. torch compares ``cuda`` and ``cuda:0`` as different, and a
    model on ``cuda`` got frames viewed on ``cuda:0``: each batch then went through ``_yuv_to`` (no copy, but a
    dozen torch calls, each giving up the GIL and waiting for it again: 15% of a batch-group worker's time)."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    import torch

    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def _yuv_to(frames, device):
    """YUV planes moved to ``device`` (asynchronously from pinned memory)."""
    from pyinfer.ops.colour import YuvFrames

    y = frames.y.to(device, non_blocking=True)
    if frames.u.data_ptr() + 1 == frames.v.data_ptr() and frames.u.stride(-1) == 2:  # NV12: one interleaved plane
        uv = frames.u.as_strided((*frames.u.shape, 2), (*frames.u.stride(), 1)).to(device, non_blocking=True)
        return YuvFrames(y, uv[..., 0], uv[..., 1], frames.colour)
    return YuvFrames(y, frames.u.to(device, non_blocking=True), frames.v.to(device, non_blocking=True), frames.colour)
