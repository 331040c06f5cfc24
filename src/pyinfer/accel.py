"""Speed knobs for the engine: CUDA graphs, torch.compile, channels_last, one CUDA stream, no host syncs.

With any knob on, :class:`FastPath` replaces the engine's plain ``letterbox -> forward -> decode``. On CUDA a
batch of frames in host memory then costs the host one copy of the frames into a preallocated device buffer,
one CUDA-graph replay (letterbox, model and a fixed-shape YOLOv8 decode with NMS, captured together), one
device-to-host copy of a fixed-size result into pinned memory, and one wait for that copy. Frames already on
the device are not copied whole: the letterbox reads them where they are and writes the graph's static model
input (~50x smaller at 1080p), and the graph holds model + decode. With the fixed decode the graph keeps the
model's own output dtype: a fp16 model's (B, 84, 8400) output is not cast to float32 whole; the decode casts
the per-anchor best score and the candidates it keeps (exact, so the same detections).

Nothing before the copy waits for the GPU: the plain decoder's ``nonzero`` and torchvision's NMS (whose CUDA
kernel finishes its greedy scan on the host) are replaced by :func:`decode_fixed`, which keeps every shape
fixed, so it can live inside the graph.

:func:`decode_fixed` gives exactly the plain decoder's detections unless a frame has more than ``candidates``
boxes above the threshold or its NMS needs more than ``NMS_ITERATIONS`` rounds; it says so in the result, and
:class:`FastPath` then decodes that batch with the plain decoder from the graph's outputs (and doubles
``candidates`` for the next batches).

Knobs (``EngineConfig`` fields, ``pyinfer`` properties):

- ``cuda_graphs``: capture one graph per input shape; a partial batch is padded into the graph of a larger
  one. Ignored on the CPU (logged once).
- ``compile``: ``off``, ``default``, ``reduce-overhead`` or ``max-autotune``. torch.compile (inductor) of the
  model, and on CUDA of the letterbox and the decode too. On CUDA ``reduce-overhead`` means inductor kernels
  inside pyinfer's own graph (as ``default`` with ``cuda_graphs``): torch's own graph trees cannot run inside
  that capture. Compiling costs tens of seconds per input shape, at the first batch of that shape.
- ``channels_last``: model weights and input in NHWC memory order (faster fp16/bf16 convolutions on GPUs).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pyinfer.backends.base import as_float32
from pyinfer.decoders.base import DecodedBatch, nonfinite_warning
from pyinfer.errors import ConfigError
from pyinfer.ops.letterbox import PAD_VALUE, LetterboxGeometry, letterbox
from pyinfer.params import DEFAULT_PARAMS

if TYPE_CHECKING:
    import torch

    from pyinfer.backends.base import LoadedModel

log = logging.getLogger(__name__)

#: Values of the ``compile`` setting.
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
#: Inductor mode for each ``compile`` value on CUDA, where pyinfer captures the graphs itself.
_INDUCTOR_MODE = {"default": None, "reduce-overhead": None, "max-autotune": "max-autotune-no-cudagraphs"}
#: Candidates per frame kept for the in-graph NMS at first (doubled on overflow, up to MAX_CANDIDATES).
DEFAULT_CANDIDATES = 512
MAX_CANDIDATES = 4096
#: Rounds of the fixed-point NMS inside the graph: enough for suppression chains up to this deep.
NMS_ITERATIONS = 4
#: Batches that may be submitted and not yet collected (one graph instance each).
PIPELINE_DEPTH = 2
#: Input shapes kept captured per engine; the least recently used one is dropped beyond this.
MAX_SHAPES = 8
#: Untimed runs before a capture: compiles, picks cuDNN algorithms, fills the allocator.
WARMUP_RUNS = 3


@dataclass(frozen=True)
class AccelSettings:
    """The speed knobs of one engine.

    Attributes:
        cuda_graphs: capture letterbox + model + decode in CUDA graphs (CUDA only).
        compile: torch.compile mode, one of COMPILE_MODES.
        channels_last: NHWC weights and input.
        candidates: boxes per frame entering the in-graph NMS at first.
    """

    cuda_graphs: bool = False
    compile: str = "off"
    channels_last: bool = False
    candidates: int = DEFAULT_CANDIDATES

    def __post_init__(self) -> None:
        check_compile_mode(self.compile)

    @property
    def active(self) -> bool:
        """Whether any knob is on (else the engine runs its plain path)."""
        return self.cuda_graphs or self.compile != "off" or self.channels_last


def check_compile_mode(mode: str) -> str:
    """Return ``mode`` if it is a known compile mode; ConfigError naming the known ones otherwise."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
    return mode


def model_function(
    model: LoadedModel, settings: AccelSettings, *, native_outputs: bool = False
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """The model's forward with channels_last and torch.compile applied as the settings ask.

    With ``native_outputs`` the forward returns the outputs in the model's own dtype where the backend offers
    that (torch backends: fp16/bf16 models skip the float32 cast of the whole output; :func:`decode_fixed`
    casts only what it reads). Both knobs change the model's module in place, once per LoadedModel, so engines
    built on the same loaded model (one per batch size in a benchmark, say) share one compiled module and its
    compiled shapes.
    """
    import torch

    done = model.__dict__.setdefault("_pyinfer_accel", set())
    forward = model.forward
    if native_outputs:
        forward = getattr(forward, "native_outputs", forward)
    if not is_torch_native(model):
        return forward
    module = model.module
    if settings.channels_last:
        if "channels_last" not in done and isinstance(module, torch.nn.Module):
            module.to(memory_format=torch.channels_last)  # weights converted once, here
            done.add("channels_last")
        plain = forward

        def forward(x: torch.Tensor) -> list[torch.Tensor]:
            return plain(x.contiguous(memory_format=torch.channels_last))

    if settings.compile != "off" and f"compile:{settings.compile}" not in done:
        if getattr(module, "_compiled_call_impl", None) is not None:
            pass  # compiled in place by an engine built earlier on the same module: its compiled shapes serve
        elif isinstance(module, torch.jit.ScriptModule):
            log.info("compile: %s is TorchScript, which torch.compile cannot trace; the model runs as is", model.path)
        elif isinstance(module, torch.nn.Module):
            # The module itself is compiled, not the backend's forward: that runs the module under
            # torch.inference_mode, and a compiled region that enters inference mode itself fails on view ops of
            # weights (pytorch/pytorch#180823); entered outside the compiled region it works.
            _limits()
            module.compile(mode=_inductor_mode(settings.compile, model.device.type), dynamic=None)
            done.add(f"compile:{settings.compile}")
    return forward


def mark_batch_dynamic(x: torch.Tensor) -> None:
    """Let a compiled model take any batch size > 1 with one compilation, whatever order sizes come in.

    Batch 1 always compiles on its own (torch specialises sizes 0 and 1); every other batch size then shares
    one graph, so engines on copies of a model (an element restarted, a hot-swapped copy) hit the compile cache.
    """
    import torch

    if x.shape[0] > 1:
        torch._dynamo.maybe_mark_dynamic(x, 0)


def is_torch_native(model: LoadedModel) -> bool:
    """Whether the model runs as torch code (torch backends): what compile, channels_last and graphs need.

    ONNX Runtime and TensorRT run their own kernels on their own streams: compiling cannot see into them, and a
    CUDA graph capture would silently leave their work out of the graph.
    """
    return getattr(model, "module", None) is not None


#: Compiled letterbox/decode functions per (function, mode), shared by every engine of the process.
_COMPILED: dict[tuple[str, str], Callable] = {}


def _compiled(fn: Callable, mode: str) -> Callable:
    key = (fn.__name__, mode)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(fn, mode, "cuda")
    return _COMPILED[key]


def _limits() -> None:
    import torch._dynamo.config as dynamo_config

    # Dynamo keeps compiled code per code object, shared by every engine whose model runs through the same
    # function; each input shape and model is one entry, and past the limit (8) it silently runs eagerly.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))


def _inductor_mode(mode: str, device_type: str) -> str | None:
    if device_type == "cuda":
        return _INDUCTOR_MODE[mode]
    return "max-autotune" if mode == "max-autotune" else None


def _compile(fn: Callable, mode: str, device_type: str) -> Callable:
    import torch

    _limits()
    # dynamic=None (torch's default): the first shape compiles static, a second one recompiles once with a
    # symbolic batch size that then serves every other batch size (only the batch varies per engine).
    return torch.compile(fn, mode=_inductor_mode(mode, device_type), dynamic=None)


def decode_fixed(
    out: torch.Tensor,
    conf: torch.Tensor,
    iou: torch.Tensor,
    *,
    geometry: LetterboxGeometry,
    candidates: int,
    max_det: int,
    iterations: int = NMS_ITERATIONS,
) -> torch.Tensor:
    """YOLOv8 decode with fixed shapes and no host sync: threshold, class-aware NMS, top ``max_det``, unletterbox.

    The same detections as :class:`pyinfer.decoders.yolo.YoloV8Decoder` (torchvision's greedy NMS: a box is
    dropped when a better-scoring kept box of its class overlaps it by IoU > ``iou``), computed as the fixed
    point of ``keep = valid & ~any(keep[j] & overlaps[j, i] for better j)``, reached after at most as many
    rounds as the longest suppression chain.

    Args:
        out: (B, 4 + nc, N) model output: cx, cy, w, h in input pixels, then class scores.
        conf: 0-d float tensor, confidence threshold (a detection scores above it).
        iou: 0-d float tensor, NMS IoU threshold.
        geometry: the letterbox of the frames (to map boxes back to frame pixels).
        candidates: boxes above the threshold per frame that fit (more: the frame is flagged ``overflow``).
        max_det: detections kept per frame.
        iterations: fixed-point rounds.

    Candidates with a NaN or infinite box or score are dropped and counted, as the plain decoder does
    (:func:`pyinfer.decoders.base.finite_candidates`).

    Returns:
        (B, 1 + K, 6) float32, K = min(candidates, N, max_det). Row 0 of each frame: [count, overflow,
        unconverged, nonfinite, 0, 0]; rows 1..count: x1, y1, x2, y2 (frame pixels), score, class, best first;
        the rows after them are 0. A frame with ``overflow`` (more than ``candidates`` boxes above the
        threshold) or ``unconverged`` (NMS needed more rounds) must be decoded again by the plain decoder;
        ``nonfinite`` counts the candidates dropped for NaN or infinite values.
    """
    import torch

    b, _, n = out.shape
    c = min(candidates, n)
    k = min(c, max_det)
    dev = out.device
    scores, cls = out[:, 4:, :].max(dim=1)  # (B, N), in the outputs' dtype (fp16 outputs are not cast whole)
    # The plain decoder sees the outputs cast to float32 (exact from fp16/bf16) and compares `scores > threshold`
    # in float32: cast the per-anchor best score (B x N, not B x (4 + nc) x N) and compare the same way.
    scores = scores.float()
    # Candidates with a NaN/inf box or score take no slot, as in the plain decoder's finite_candidates (the same
    # float32 sum: finite exactly when every value is; a float16 overflow is an inf there).
    finite = (out[:, :4, :].sum(dim=1, dtype=torch.float32) + scores).abs() < float("inf")
    suspect = ~(scores <= conf.to(scores.dtype))  # above the threshold, or NaN
    above = suspect & finite
    count_above = above.sum(dim=1)
    nonfinite = suspect.sum(dim=1) - count_above
    overflow = count_above > c
    # No top-k and no sort (a top-k over 8400 anchors is one block per frame, 54 us on an H200 whatever the batch,
    # half of the decode at batch 1): the boxes above the threshold take slots 0, 1, ... in anchor order (a prefix
    # sum and a scatter), and "better" below is a pairwise comparison of scores instead of positions in a sort.
    slot = above.cumsum(dim=1) - 1
    slot = torch.where(above & (slot < c), slot, c)  # c: a dummy slot for the rest
    anchors = torch.arange(n, device=dev).expand(b, n)
    idx = torch.zeros((b, c + 1), dtype=torch.int64, device=dev).scatter_(1, slot, anchors)[:, :c]
    order = torch.arange(c, device=dev)
    valid = order[None, :] < count_above.clamp(max=c)[:, None]  # (B, C) slots holding a box above the threshold
    top = scores.gather(1, idx)
    cls = cls.gather(1, idx)
    box = out[:, :4, :].gather(2, idx.unsqueeze(1).expand(b, 4, c)).float()  # (B, 4, C) cx, cy, w, h
    cx, cy, w, h = box.unbind(1)
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    # The NMS: a few Triton launches on CUDA (the same booleans), the eager pairwise tensors elsewhere.
    from pyinfer.ops import nms_triton

    nms = nms_triton.try_keep_rank(x1, y1, x2, y2, top, cls, valid, iou, iterations)
    if nms is None:
        nms = nms_fixed_point(x1, y1, x2, y2, top, cls, valid, iou, iterations)
    keep, rank, unconverged = nms
    keep = keep & (rank < max_det)
    count = keep.sum(dim=1)
    xyxy = torch.stack((x1, y1, x2, y2), dim=2)
    xyxy = geometry.to_frame(xyxy.reshape(b * c, 4)).reshape(b, c, 4)  # the plain decoder's arithmetic
    rows = torch.cat((xyxy, top[..., None], cls[..., None].float()), dim=2)  # (B, C, 6)
    dest = torch.where(keep, rank, k)  # kept boxes to rows 0..count-1 in score order; the rest to a dummy row k
    placed = torch.zeros((b, k + 1, 6), dtype=torch.float32, device=dev).scatter_(
        1, dest[:, :, None].expand(b, c, 6), rows
    )
    zero = torch.zeros_like(count)
    head = torch.stack((count, overflow.long(), unconverged.long(), nonfinite, zero, zero), dim=1)  # few kernels
    return torch.cat((head.float()[:, None, :], placed[:, :k]), dim=1)


def nms_fixed_point(
    x1: torch.Tensor,
    y1: torch.Tensor,
    x2: torch.Tensor,
    y2: torch.Tensor,
    score: torch.Tensor,
    cls: torch.Tensor,
    valid: torch.Tensor,
    iou: torch.Tensor,
    iterations: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The class-aware greedy NMS of :func:`decode_fixed` on (B, C) candidates, eagerly: (keep, rank, unconverged).

    ``keep``: the fixed point of ``keep = valid & ~any(keep[j] & suppresses[j, i])`` after ``iterations`` rounds;
    ``rank``: kept boxes better than each box; ``unconverged`` (B,): one more round would change ``keep``.
    :func:`pyinfer.ops.nms_triton.keep_rank` computes the same on CUDA in a few kernel launches.
    """
    import torch

    c = int(x1.shape[1])
    order = torch.arange(c, device=x1.device)
    # Pairwise IoU as torchvision's NMS kernel computes it; [j, i]: does better box j suppress box i? Boxes of
    # other frames never meet here, and a huge box (cx=1e30) has IoU 0 (or NaN: no suppression) with the others,
    # as in the plain decoder's NMS.
    iw = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp(min=0)
    ih = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp(min=0)
    inter = iw * ih
    area = (x2 - x1) * (y2 - y1)
    overlap = inter / (area[:, :, None] + area[:, None, :] - inter)
    # Greedy NMS order: higher score first, equal scores in anchor order (a strict total order).
    sj, si = score[:, :, None], score[:, None, :]
    better = (sj > si) | ((sj == si) & (order[:, None] < order[None, :]))
    suppresses = (overlap > iou) & (cls[:, :, None] == cls[:, None, :]) & better & valid[:, :, None] & valid[:, None, :]
    keep = valid
    for _ in range(iterations):
        keep = valid & ~(suppresses & keep[:, :, None]).any(dim=1)
    unconverged = (keep != (valid & ~(suppresses & keep[:, :, None]).any(dim=1))).any(dim=1)
    # Rank of each kept box among the kept ones, best first: the per-frame cap and its row in the result.
    rank = (better & keep[:, :, None]).sum(dim=1)
    return keep, rank, unconverged


def unpack_fixed(
    packed: np.ndarray, n: int, where: str = "decoder yolov8 (in-graph): model output 0"
) -> tuple[DecodedBatch, bool]:
    """Host side of :func:`decode_fixed` for the first ``n`` frames; also whether any of them needs a redo.

    A model that returned fewer than ``n`` frames gives a batch of the frames it has (the engine's
    check_batch_size reports it); ``where`` names the output in the warning about NaN/inf candidates.
    """
    n = min(n, len(packed))
    head = packed[:n, 0]
    counts = head[:, 0].astype(np.int64)
    redo = bool((head[:, 1:3] != 0).any())
    nonfinite = int(head[:, 3].sum())
    rows = packed[:n, 1:]
    sel = rows[np.arange(rows.shape[1])[None, :] < counts[:, None]]  # (M, 6), frame by frame
    batch = DecodedBatch(
        xyxy=np.ascontiguousarray(sel[:, :4], dtype=np.float32),
        confidence=np.ascontiguousarray(sel[:, 4], dtype=np.float32),
        class_id=sel[:, 5].astype(np.int32),
        frame=np.repeat(np.arange(n, dtype=np.int64), counts),
        batch_size=n,
        nonfinite=nonfinite,
        warning=nonfinite_warning(where, nonfinite),
    )
    return batch, redo


@dataclass
class _Instance:
    """One input shape's preallocated buffers and (on CUDA, with graphs) its captured graph."""

    frames: torch.Tensor | None  # (B, H, W, C) uint8 static device input; None: frames letterboxed before the graph
    geometry: LetterboxGeometry
    input: torch.Tensor | None = None  # (B, 3, h, w) static model input, when ``frames`` is None
    host: torch.Tensor | None = None  # pinned copy of ``packed``
    event: Any = None  # torch.cuda.Event recorded after the copy to ``host``
    graph: Any = None  # torch.cuda.CUDAGraph, or None: the stage runs eagerly each time
    outputs: list = field(default_factory=list)  # static model outputs (the graph writes them)
    packed: torch.Tensor | None = None  # static decode_fixed result
    stage: Callable | None = None  # runs (letterbox +) model (+ decode_fixed) on ``frames`` (or ``input``)
    busy: bool = False


@dataclass
class Ticket:
    """A submitted batch; :meth:`FastPath.collect` turns it into the decoded batch."""

    instance: _Instance | None
    n: int
    conf_threshold: float
    iou_threshold: float
    max_detections: int
    result: Any = None  # CPU: the decoded batch, computed at submit


class FastPath:
    """Letterbox + model + decode with the speed knobs applied; one per engine (so one CUDA stream per element).

    ``infer`` is synchronous. ``submit``/``collect`` let a caller keep up to ``depth`` batches in flight
    (host work of one batch overlaps the GPU work of the next); frames handed to ``submit`` must stay unchanged
    until their batch is collected.
    """

    def __init__(
        self,
        model: LoadedModel,
        decoder: Any,
        input_size: tuple[int, int],
        settings: AccelSettings,
        *,
        fixed_decode: bool | None = None,
        direct: bool = True,
        depth: int = PIPELINE_DEPTH,
        max_batch: int = 1,
    ):
        """Apply the knobs to ``model`` (channels_last converts its weights in place) and prepare the stream.

        Args:
            model: the loaded model (already warmed up by the engine).
            decoder: the engine's decoder.
            input_size: model input (width, height).
            settings: the knobs.
            fixed_decode: use :func:`decode_fixed` and the preallocated per-shape buffers; None: on CUDA with
                the yolov8 decoder. On the CPU it only serves tests of this module's logic (no faster there).
            direct: frames already on the engine's device are letterboxed straight from the caller's tensor into
                the graph's static model input (the graph holds model + decode only), instead of being copied
                whole into a static frame buffer first (100 MB per batch of 16 1080p frames). Frames elsewhere
                (host memory) always take the copy, with the letterbox inside the graph.
            depth: batches that may be submitted and not yet collected (one graph instance each per shape).
            max_batch: the largest batch expected (the element's batch-size): a smaller batch is captured at this
                size (padded), so the partial batches a stream starts and ends with, or a batch-group's batches
                while its streams come and go, share one capture per shape instead of one per batch size (each
                capture runs warm-ups and cuDNN's algorithm search: on the H200 8 streams in a group spent most
                of their time capturing batches of 1, 2, 3, ... frames).
        """
        import torch

        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self.depth = depth
        self.max_batch = max(1, int(max_batch))
        self.model = model
        self.decoder = decoder
        self.input_width, self.input_height = input_size
        self.settings = settings
        self.device = model.device
        self.cuda = self.device.type == "cuda"
        self.candidates = settings.candidates
        if settings.cuda_graphs and not self.cuda:
            log.info("cuda-graphs is ignored on %s: CUDA graphs need a CUDA device", self.device)
        self.use_graphs = self.cuda and (settings.cuda_graphs or settings.compile == "reduce-overhead")
        if not is_torch_native(model) and settings.active:
            log.info(
                "%s runs on %s, not torch: no CUDA graphs; compile applies to letterbox and decode only",
                model.path, getattr(model, "backend", "?"),
            )  # fmt: skip
            self.use_graphs = False
        # The sync-free decode knows the YOLOv8 layout only; other decoders run eagerly after the graph.
        if fixed_decode is None:
            fixed_decode = self.cuda and getattr(decoder, "name", "") == "yolov8"
        self.fixed_decode = fixed_decode
        self.direct = direct
        self.redos = 0  # batches the fixed decode handed back to the plain decoder
        self.notices: list[str] = []  # knobs that stopped working (the engine hands them on with its warnings)
        # With the fixed decode the graph keeps the model's own output dtype (a fp16 model: no float32 cast of
        # the whole output; decode_fixed casts what it reads, the plain decoder gets float32 in collect).
        self._model_fn = model_function(model, settings, native_outputs=bool(fixed_decode))
        self.stretch = getattr(decoder, "resize", "letterbox") == "stretch"
        self._letterbox_fn: Callable = _letterbox_stage
        self._letterbox_into_fn: Callable = _letterbox_into
        self._decode_fn: Callable = decode_fixed
        if self.cuda and settings.compile != "off":
            self._letterbox_fn = _compiled(_letterbox_stage, settings.compile)
            self._letterbox_into_fn = _compiled(_letterbox_into, settings.compile)
            self._decode_fn = _compiled(decode_fixed, settings.compile)
        self._instances: dict[tuple, list[_Instance]] = {}
        self._geometries: dict[tuple[int, int], LetterboxGeometry] = {}
        self._cpu_input: torch.Tensor | None = None
        self.stream = None
        self.copy_stream = None
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once per shape
            self.stream = torch.cuda.Stream(device=self.device)
            # Host frames are copied in on a stream of their own, so batch N+1's copy overlaps batch N's compute.
            self.copy_stream = torch.cuda.Stream(device=self.device)
        self._conf = torch.zeros((), dtype=torch.float32, device=self.device)
        self._iou = torch.zeros((), dtype=torch.float32, device=self.device)
        self._thresholds: tuple[float, float] | None = None
        log.info(
            "fast path on %s: cuda-graphs=%s compile=%s channels-last=%s in-graph decode=%s",
            self.device, self.use_graphs, settings.compile, settings.channels_last, self.fixed_decode,
        )  # fmt: skip

    @property
    def takes_host_frames(self) -> bool:
        """Whether ``infer`` accepts frames in host memory (copied straight into its device buffer; pinned is best)."""
        return self.cuda

    @property
    def _instanced(self) -> bool:
        """Whether batches run through the per-shape instances (else: plain letterbox/decode around the model)."""
        return self.cuda or self.fixed_decode

    def _on_stream(self) -> Any:
        import contextlib

        import torch

        return torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()

    # -- public ------------------------------------------------------------------------------------------
    def infer(
        self,
        frames: torch.Tensor,
        *,
        channels: str = "RGB",
        conf_threshold: float = DEFAULT_PARAMS.conf_threshold,
        iou_threshold: float = DEFAULT_PARAMS.iou_threshold,
        max_detections: int = DEFAULT_PARAMS.max_detections,
    ) -> Any:
        """Decode one batch of (B, H, W, C) uint8 frames; returns what the decoder's ``decode`` returns."""
        ticket = self.submit(
            frames,
            channels=channels,
            conf_threshold=conf_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
        )
        return self.collect(ticket)

    def submit(
        self,
        frames: torch.Tensor,
        *,
        channels: str = "RGB",
        conf_threshold: float = DEFAULT_PARAMS.conf_threshold,
        iou_threshold: float = DEFAULT_PARAMS.iou_threshold,
        max_detections: int = DEFAULT_PARAMS.max_detections,
    ) -> Ticket:
        """Start a batch; on CUDA this returns as soon as the work is queued on the engine's stream."""

        from pyinfer.ops.colour import YuvFrames

        yuv = isinstance(frames, YuvFrames)
        n = int(frames.shape[0])
        ticket = Ticket(None, n, conf_threshold, iou_threshold, max_detections)
        if not self._instanced:
            ticket.result = self._infer_cpu(frames, channels, conf_threshold, iou_threshold, max_detections)
            return ticket
        # YUV planes are copied into the instance's static planes and converted + letterboxed inside its graph
        # (one replay; read where they are, the conversion was dozens of eager kernels a batch).
        direct = self.direct and not yuv and self._on_device(frames)
        if yuv and not self._on_device(frames):
            raise ValueError(f"YUV frames must be on {self.device} (the engine moves them there)")
        inst = self._acquire(frames, channels, max_detections, direct)
        ticket.instance = inst
        try:
            self._launch(inst, frames, yuv, n, channels, conf_threshold, iou_threshold)
        except BaseException:
            inst.busy = False  # a failed batch gives its instance back
            raise
        return ticket

    def _launch(self, inst: _Instance, frames: Any, yuv: bool, n: int, channels: str, conf: float, iou: float) -> None:
        """Queue one batch's work on the engine's stream (see :meth:`submit`)."""
        import torch

        caller = torch.cuda.current_stream(self.device) if frames.device.type == "cuda" else None
        with torch.inference_mode(), self._on_stream():
            if caller is not None:
                # Frames made on the caller's stream: wait for them, and keep their memory until we are done.
                self.stream.wait_stream(caller)
                for t in (frames.y, frames.u, frames.v) if yuv else (frames,):
                    t.record_stream(self.stream)
            if inst.frames is None:
                self._letterbox_direct(frames, channels, inst.input[:n])
            elif yuv:  # three device-side copies into the static planes, in one call
                static = inst.frames
                torch._foreach_copy_(
                    [static.y[:n], static.u[:n], static.v[:n]], [frames.y, frames.u, frames.v], non_blocking=True
                )
            elif self.copy_stream is not None and frames.device.type == "cpu":
                # The instance is free (collected), so nothing reads its frame buffer: copy on the copy stream
                # while the compute stream may still run the previous batch, and let the compute wait for it.
                # The caller keeps the (pinned) host frames until this batch is collected.
                with torch.cuda.stream(self.copy_stream):
                    inst.frames[:n].copy_(frames, non_blocking=True)
                    copied = torch.cuda.Event()
                    copied.record(self.copy_stream)
                self.stream.wait_event(copied)
            else:
                inst.frames[:n].copy_(frames, non_blocking=True)
            self._set_thresholds(conf, iou)
            self._run(inst)
            if inst.packed is not None:
                inst.host.copy_(inst.packed, non_blocking=True)  # the one device-to-host copy
            if inst.event is not None:
                inst.event.record(self.stream)

    def collect(self, ticket: Ticket) -> Any:
        """Wait for a submitted batch and return its decoded result."""
        import torch

        if ticket.instance is None:
            return ticket.result
        inst = ticket.instance
        try:
            if inst.event is not None:
                inst.event.synchronize()
            if inst.packed is not None:
                batch, redo = unpack_fixed(inst.host.numpy(), ticket.n)
                if not redo:
                    return batch
                self.redos += 1
                self._grow_candidates(inst)
            # Plain decoder on the graph's outputs: other decoders always, YOLOv8 when the fixed decode says so.
            with torch.inference_mode(), self._on_stream():
                outputs = as_float32([o[: ticket.n] for o in inst.outputs])
                return self.decoder.decode(
                    outputs,
                    inst.geometry,
                    conf_threshold=ticket.conf_threshold,
                    iou_threshold=ticket.iou_threshold,
                    max_detections=ticket.max_detections,
                )
        finally:
            inst.busy = False

    def release(self) -> None:
        """Drop every captured graph and buffer (their memory returns to torch's allocator)."""
        self._instances.clear()

    # -- internals ---------------------------------------------------------------------------------------
    def _infer_cpu(self, frames: torch.Tensor, channels: str, conf: float, iou: float, max_det: int) -> Any:
        import torch

        x, geometry = letterbox(
            frames,
            self.input_width,
            self.input_height,
            out=self._cpu_input,
            dtype=self.model.dtype,
            channels=channels,
            stretch=self.stretch,
        )
        self._cpu_input = x
        with torch.inference_mode():
            outputs = self._model_fn(x)
        return self.decoder.decode(
            outputs, geometry, conf_threshold=conf, iou_threshold=iou, max_detections=max_det
        )  # fmt: skip

    def _set_thresholds(self, conf: float, iou: float) -> None:
        # Device scalars read by the graph: refilled (one tiny kernel on our stream) only when they change.
        if self._thresholds != (conf, iou):
            self._conf.fill_(conf)
            self._iou.fill_(iou)
            self._thresholds = (conf, iou)

    def _on_device(self, frames: torch.Tensor) -> bool:
        """Whether ``frames`` are in the engine's device memory (so the letterbox can read them where they are)."""
        dev = frames.device
        if dev.type != self.device.type:
            return False
        if dev.type != "cuda":
            return True
        import torch

        return dev.index == (self.device.index if self.device.index is not None else torch.cuda.current_device())

    def _letterbox_direct(self, frames: torch.Tensor, channels: str, out: torch.Tensor) -> None:
        """Letterbox the caller's frames into the static model input ``out`` on the engine's stream."""
        args = (frames, out, self.input_width, self.input_height, channels, self.stretch)
        try:
            self._letterbox_into_fn(*args)
        except Exception as exc:  # compiling failed (nothing ran yet): the eager letterbox does the same
            if self._letterbox_into_fn is _letterbox_into:
                raise
            log.warning("compiled letterbox failed, running it eagerly: %s", exc)
            self.notices.append(f"compile: the letterbox could not be compiled and runs eagerly: {exc}")
            self._letterbox_into_fn = _letterbox_into
            _letterbox_into(*args)

    def _acquire(self, frames: torch.Tensor, channels: str, max_det: int, direct: bool = False) -> _Instance:
        """A free instance whose batch holds these frames (padding a partial batch), capturing one if needed."""
        n, h, w, c = (int(v) for v in frames.shape)
        colour = getattr(frames, "colour", None)  # YUV frames: the conversion is part of the graph
        rest = (h, w, c, channels, max_det, direct, colour, self.candidates)
        fits = sorted((key for key in self._instances if key[1:] == rest and key[0] >= n), key=lambda key: key[0])
        key = fits[0] if fits else (max(n, self.max_batch), *rest)
        ring = self._instances.pop(key, [])
        self._instances[key] = ring  # most recently used last
        while len(self._instances) > MAX_SHAPES:
            self._instances.pop(next(iter(self._instances)))
        for inst in ring:
            if not inst.busy:
                inst.busy = True
                return inst
        if len(ring) >= self.depth:
            raise RuntimeError(f"at most {self.depth} batches may be in flight: collect one first")
        inst = self._capture(key)
        inst.busy = True
        ring.append(inst)
        return inst

    def _stage(self, inst: _Instance, channels: str, max_det: int) -> tuple[list, Any]:
        if inst.frames is None:
            x = inst.input  # letterboxed before the graph (direct frames)
        else:
            x = self._letterbox_fn(
                inst.frames,
                self.input_width,
                self.input_height,
                self.model.dtype,
                channels,
                self.stretch,
                self.settings.channels_last,
            )
        if self.settings.compile != "off":
            mark_batch_dynamic(x)
        outputs = self._model_fn(x)
        packed = None
        if self.fixed_decode:
            packed = self._decode_fn(
                outputs[0],
                self._conf,
                self._iou,
                geometry=inst.geometry,
                candidates=self.candidates,
                max_det=max_det,
            )
        return outputs, packed

    def _capture(self, key: tuple) -> _Instance:
        import torch

        from pyinfer.ops.colour import YuvFrames

        b, h, w, c, channels, max_det, direct, colour, _ = key
        geometry = self._geometry(w, h)
        inst = _Instance(frames=None, geometry=geometry, event=torch.cuda.Event() if self.cuda else None)
        with self._on_stream():  # grey until first use; made on the stream that uses them
            if direct:
                shape = (b, 3, self.input_height, self.input_width)
                fmt = torch.channels_last if self.settings.channels_last else torch.contiguous_format
                grey = torch.full(shape, PAD_VALUE / 255.0, dtype=self.model.dtype, device=self.device)
                inst.input = grey.contiguous(memory_format=fmt)
            elif colour is not None:
                ch, cw = (h + 1) // 2, (w + 1) // 2

                def plane(shape: tuple, value: int) -> torch.Tensor:
                    return torch.full(shape, value, dtype=torch.uint8, device=self.device)

                inst.frames = YuvFrames(plane((b, h, w), 16), plane((b, ch, cw), 128), plane((b, ch, cw), 128), colour)
            else:
                inst.frames = torch.full((b, h, w, c), PAD_VALUE, dtype=torch.uint8, device=self.device)
        inst.stage = lambda: self._stage(inst, channels, max_det)
        # One warm-up and capture at a time in the process: several engines (one pyinfer per camera) warming up
        # while another captures made cuDNN's algorithm search (cudnn.benchmark) touch the capturing stream:
        # "operation not permitted when stream is capturing" (cudaErrorStreamCaptureUnsupported), seen on the H200.
        with _CAPTURE_LOCK, torch.inference_mode(), self._on_stream():
            for _ in range(WARMUP_RUNS if self.cuda else 1):  # compiles, picks cuDNN algorithms, builds module state
                outputs, packed = inst.stage()
            if self.cuda:
                self.stream.synchronize()
            if self.use_graphs:
                graph = torch.cuda.CUDAGraph()
                try:
                    # thread_local: a hot-swap capture on the loader thread must not break the serving thread.
                    with _no_gc(), torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                        outputs, packed = inst.stage()
                    inst.graph = graph
                except Exception as exc:  # a model that syncs or allocates on the host side cannot be captured
                    log.warning("CUDA graph capture failed, running without graphs: %s", exc)
                    self.notices.append(f"cuda-graphs: the capture failed, the model runs without graphs: {exc}")
                    self.use_graphs = False
                    outputs, packed = inst.stage()
        inst.outputs, inst.packed = list(outputs), packed
        if packed is not None:
            inst.host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=self.cuda)
        log.debug("captured %s for frames %s (graph: %s)", self.device, (b, h, w, c), inst.graph is not None)
        return inst

    def _geometry(self, w: int, h: int) -> LetterboxGeometry:
        # One object per frame size: compiled code guards on the values it reads, and sharing the object keeps
        # every instance of a shape on the same compiled entry.
        if (w, h) not in self._geometries:
            self._geometries[(w, h)] = LetterboxGeometry.compute(
                w, h, self.input_width, self.input_height, stretch=self.stretch
            )
        return self._geometries[(w, h)]

    def _run(self, inst: _Instance) -> None:
        if inst.graph is not None:
            inst.graph.replay()
        else:
            outputs, packed = inst.stage()
            inst.outputs = list(outputs)
            if packed is not None:
                inst.packed = packed

    def _grow_candidates(self, inst: _Instance) -> None:
        """After a redo: if a frame had more candidates than fit, let the next captures take twice as many."""
        n_anchors = int(inst.outputs[0].shape[-1])
        if self.candidates < min(MAX_CANDIDATES, n_anchors) and bool((inst.host[:, 0, 1] != 0).any()):
            self.candidates = min(self.candidates * 2, MAX_CANDIDATES, n_anchors)
            # Shapes captured with the old size are not used again (the key holds the size): free them.
            self._instances = {k: v for k, v in self._instances.items() if k[-1] == self.candidates}
            log.info("more boxes above the threshold than the in-graph NMS takes: now %d per frame", self.candidates)


_CAPTURE_LOCK = threading.Lock()  # engines' warm-ups and graph captures, one at a time (see FastPath._capture)
_GC_LOCK = threading.Lock()
_GC_HOLDS = [0]


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection while a graph is captured.

    A collection that frees an unreachable CUDA graph (an engine dropped earlier: its instances and FastPath
    refer to each other) destroys it during the capture, which invalidates the capture ("operation not permitted
    when stream is capturing"): seen once at batch 8 on the H200, where the pipelined run fell back to no graphs.
    ``torch.cuda.graph`` collects before it starts capturing; this keeps the collector off until it is done.
    """
    with _GC_LOCK:
        if _GC_HOLDS[0] == 0:
            _GC_HOLDS.append(gc.isenabled())
            gc.disable()
        _GC_HOLDS[0] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_HOLDS[0] -= 1
            if _GC_HOLDS[0] == 0 and _GC_HOLDS.pop():
                gc.enable()


def _letterbox_stage(
    frames: torch.Tensor,
    input_w: int,
    input_h: int,
    dtype: torch.dtype,
    channels: str,
    stretch: bool,
    channels_last: bool,
) -> Any:
    """Letterbox as the plain path does (same function), returning only the model input.

    With ``channels_last`` it writes straight into an NHWC buffer, so the model's input needs no transposition.
    """
    import torch

    out = None
    if channels_last:
        shape = (int(frames.shape[0]), 3, input_h, input_w)
        out = torch.empty(shape, dtype=dtype, device=frames.device, memory_format=torch.channels_last)
    return letterbox(frames, input_w, input_h, out=out, dtype=dtype, channels=channels, stretch=stretch)[0]


def _letterbox_into(
    frames: torch.Tensor, out: torch.Tensor, input_w: int, input_h: int, channels: str, stretch: bool
) -> None:
    """Letterbox ``frames`` into ``out`` (a static model input, any memory format): the plain path's function."""
    letterbox(frames, input_w, input_h, out=out, dtype=out.dtype, channels=channels, stretch=stretch)


def build_fast_path(
    model: LoadedModel, decoder: Any, input_size: tuple[int, int], settings: AccelSettings, *,
    depth: int = PIPELINE_DEPTH, max_batch: int = 1,
) -> FastPath | None:  # fmt: skip
    """A FastPath when any knob is on, else None (the engine keeps its plain path)."""
    if not settings.active:
        return None
    return FastPath(model, decoder, input_size, settings, depth=depth, max_batch=max_batch)
