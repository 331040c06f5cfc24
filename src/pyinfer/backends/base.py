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


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a ``precision`` value."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def output_list(out: object) -> list[torch.Tensor]:
    """A model's return value as a list of tensors: a tensor, the tensors of a tuple/list, or of a dict's values.

    Nested lists are skipped (ultralytics' eval-mode forward returns ``(y, [feature maps])``: only ``y`` counts).
    """
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [o for o in out if isinstance(o, torch.Tensor)]
    if isinstance(out, dict):
        return [o for o in out.values() if isinstance(o, torch.Tensor)]
    return []


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
