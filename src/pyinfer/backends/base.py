"""What every backend returns (a loaded model with its input size and class names), and helpers they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: ``precision`` values; every backend accepts fp32, and says which others it can run.
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class LoadedModel:
    """A model ready to run on ``device``.

    Attributes:
        forward: (B, 3, H, W) input of ``dtype`` on ``device`` -> list of output tensors on ``device``. Any B
            works: a backend with a fixed batch size splits and pads inside ``forward``.
        device: the torch device the model runs on.
        dtype: the input dtype the model expects.
        input_size: (width, height) from the model's metadata, or None if it carries none.
        names: class names from the model's metadata (ultralytics ``names``), or empty.
        decoder: the decoder the model's metadata asks for, or None.
        path: the file it came from (or the ``module:callable`` spec).
        backend: the backend that loaded it (``torchscript``, ``export``, ``module``, ``onnx``, ``tensorrt``).
        precision: fp32, fp16 or bf16: what the weights run in.
        fixed_batch: the batch size the model was exported with, if fixed (forward splits/pads to it); None
            for models taking any batch size.
        metadata: the model's own metadata as read (ultralytics keys such as ``task``, ``stride``...), for
            decoders that want more than ``decoder``.
        output_names: the outputs' names where the runtime has them (ONNX, TensorRT), else empty.
        module: the ``torch.nn.Module`` behind ``forward`` for torch backends (channels-last converts it),
            else None.
        submit: for remote models (backend=triton): sends a batch and returns at once, a handle for ``wait``,
            which returns the outputs (the engine waits in ``collect``, so batches in flight overlap); None for
            models that run in ``forward``.
        wait: see ``submit``.
        notes: returns (and clears) messages the backend wants reported (e.g. a server reachable again).
        remote: the backend's connection object for remote models, else None.
    """

    forward: Callable[[torch.Tensor], list[torch.Tensor]]
    device: torch.device
    dtype: torch.dtype
    input_size: tuple[int, int] | None
    names: tuple[str, ...]
    decoder: str | None
    path: str
    backend: str = "torchscript"
    precision: str = "fp32"
    fixed_batch: int | None = None
    metadata: dict[str, Any] | None = None
    output_names: tuple[str, ...] = ()
    module: Any = None
    submit: Callable[[torch.Tensor], Any] | None = None
    wait: Callable[[Any], list[torch.Tensor]] | None = None
    notes: Callable[[], list[str]] | None = None
    remote: Any = None


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a ``precision`` value."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def output_list(out: object) -> list[torch.Tensor]:
    """A model's return value as a list of tensors: a tensor, the tensors of a tuple/list, or of a dict's values.

    Nested lists are skipped (ultralytics' eval-mode forward returns ``(y, [feature maps])``: only ``y`` counts).
    A torchvision detection model's list of dicts (one per image: ``boxes``, ``labels``, ``scores``) becomes
    padded tensors (:func:`pack_detection_dicts`), which the ``torchvision`` decoder reads.
    """
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    dicts = detection_dicts(out)
    if dicts is not None:
        return pack_detection_dicts(dicts)
    if isinstance(out, (list, tuple)):
        return [o for o in out if isinstance(o, torch.Tensor)]
    if isinstance(out, dict):
        return [o for o in out.values() if isinstance(o, torch.Tensor)]
    return []


#: The keys of a torchvision detection result every image has, in the order they are packed.
DETECTION_KEYS = ("boxes", "scores", "labels")
#: Per-detection keys packed after them when present (Keypoint R-CNN). ``masks`` (Mask R-CNN: a full-size
#: mask per detection, ``[N, 1, H, W]``) are left out: pyinfer carries boxes.
DETECTION_EXTRA_KEYS = ("keypoints", "keypoints_scores")


def detection_dicts(out: object) -> list[dict[str, Any]] | None:
    """The per-image result dicts of a torchvision detection model's return value, or None for anything else.

    Eager torchvision detectors (Faster R-CNN, RetinaNet, FCOS, SSD, Keypoint/Mask R-CNN) return a list of
    dicts, one per image, with ``boxes`` (N, 4) x1, y1, x2, y2, ``labels`` (N,) and ``scores`` (N,); scripted
    ones return ``(losses, detections)``.
    """
    import torch

    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict) and isinstance(out[1], list):
        out = out[1]  # torch.jit.script'ed detectors: (losses, detections)
    if not isinstance(out, (list, tuple)) or not out:
        return None
    if all(isinstance(d, dict) and all(isinstance(d.get(k), torch.Tensor) for k in DETECTION_KEYS) for d in out):
        return list(out)
    return None


def pack_detection_dicts(dicts: list[dict[str, Any]]) -> list[torch.Tensor]:
    """torchvision detection dicts as padded batch tensors, the layout the ``torchvision`` decoder reads.

    Args:
        dicts: one dict per image with ``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,), and optionally
            ``keypoints`` (N, K, 3) and ``keypoints_scores`` (N, K).

    Returns:
        ``boxes`` (B, M, 4), ``scores`` (B, M), ``labels`` (B, M) int64, then ``keypoints`` (B, M, K, 3) and
        ``keypoints_scores`` (B, M, K) when every image has them; M is the most detections of any image.
        Padding rows score -1 (below any threshold), label 0 and box zeros.
    """
    import torch

    keys = [
        *DETECTION_KEYS,
        *(k for k in DETECTION_EXTRA_KEYS if all(isinstance(d.get(k), torch.Tensor) for d in dicts)),
    ]
    m = max(int(d["boxes"].shape[0]) for d in dicts)
    packed = []
    for key in keys:
        first = dicts[0][key]
        fill = -1.0 if key == "scores" else 0
        out = torch.full((len(dicts), m, *first.shape[1:]), fill, dtype=first.dtype, device=first.device)
        for i, d in enumerate(dicts):
            out[i, : d[key].shape[0]] = d[key]
        packed.append(out)
    return packed


def as_float32(outputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Half/bfloat16 outputs cast to float32, so decoders see one dtype whatever the precision (outputs are small)."""
    import torch

    return [o.float() if o.dtype in (torch.float16, torch.bfloat16) else o for o in outputs]


def in_batches(
    run: Callable[[torch.Tensor], list[torch.Tensor]], x: torch.Tensor, size: int, *, pad: bool
) -> list[torch.Tensor]:
    """Run ``run`` over ``x`` in chunks of at most ``size`` frames and concatenate the outputs along dim 0.

    Args:
        run: the model call for one chunk.
        x: (B, ...) input.
        size: the model's batch size (fixed) or largest batch (dynamic with a maximum).
        pad: pad the last chunk to exactly ``size`` frames by repeating its last frame (fixed-batch models);
            the padded rows are dropped from the outputs.

    Returns:
        One tensor per model output, with B rows.
    """
    import torch

    n = int(x.shape[0])
    if n == size or (n < size and not pad):
        return run(x)
    parts: list[list[torch.Tensor]] = []
    for start in range(0, n, size):
        chunk = x[start : start + size]
        rows = int(chunk.shape[0])
        if pad and rows < size:
            chunk = torch.cat([chunk, chunk[-1:].expand(size - rows, *chunk.shape[1:])])
        parts.append([o[:rows] for o in run(chunk)])
    return [torch.cat(outs) for outs in zip(*parts)]
