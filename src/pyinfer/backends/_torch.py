"""What the torch backends share: precision casting and wrapping an ``nn.Module`` into a LoadedModel."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyinfer.backends.base import LoadedModel, as_float32, output_list, torch_dtype
from pyinfer.backends.metadata import decoder_from_config, input_size_from_config, names_from_config
from pyinfer.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def frozen_weights(module: object) -> bool:
    """True when a ScriptModule in ``module`` keeps its weights as graph constants (``torch.jit.freeze``, or
    a trace of tensors made under ``no_grad``): ``.to()`` cannot reach those, so their dtype cannot change."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        for node in module.inlined_graph.nodes():
            if node.kind() == "prim::Constant" and node.output().type().kind() == "TensorType":
                value: Any = node.output().toIValue()  # a tensor here (TensorType)
                if value.is_floating_point() and value.numel() > 1:
                    return True
        return False
    if isinstance(module, torch.nn.Module):  # a Python module wrapping scripted parts
        return any(frozen_weights(child) for child in module.children())
    return False


def native_precision(module: torch.nn.Module) -> str:
    """The precision of a module's first floating-point parameter or buffer (fp32 if it has none)."""
    import torch

    names = {torch.float16: "fp16", torch.bfloat16: "bf16"}
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return names.get(tensor.dtype, "fp32")
    return "fp32"


def cast(module: torch.nn.Module, precision: str, device: torch.device, path: str) -> tuple[torch.nn.Module, str]:
    """``module`` with its parameters and buffers in ``precision``, and the precision it now runs in.

    fp32 (the default) leaves the model as it was saved: a model exported in half precision keeps it.

    Raises:
        ConfigError: the weights cannot be cast (frozen TorchScript constants).
    """
    import torch

    if precision == "fp32":
        return module, native_precision(module)
    if frozen_weights(module):
        raise ConfigError(
            f"model {path} keeps weights as frozen TorchScript constants, which cannot be cast to {precision}: "
            "set precision=fp32, or export it as .pt2 or ONNX (or trace it without freezing)"
        )
    if precision == "fp16" and device.type == "cpu":
        # Runs, but torch's CPU half convolutions are emulated: ~25x slower than fp32 on an AVX-512 CPU
        # (docs/backends.md); bf16 is the CPU's fast reduced precision.
        log.warning("precision fp16 on the CPU is much slower than fp32 in torch; bf16 is the fast CPU choice")
    dtype = torch_dtype(precision)
    module = module.to(dtype)
    if isinstance(module, torch.fx.GraphModule):
        # A torch.export program keeps lifted constants (e.g. weights of a converted TorchScript model) as plain
        # tensor attributes, which .to() does not reach.
        for sub in module.modules():
            for name, value in list(vars(sub).items()):
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    setattr(sub, name, value.to(dtype))
    return module, precision


def wrap_module(
    module: Callable[..., Any],
    *,
    path: str,
    device: torch.device,
    precision: str,
    backend: str,
    metadata: dict[str, Any],
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    postprocess: Callable[[Any], Any] | None = None,
    fixed_batch: int | None = None,
    input_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """A LoadedModel running ``module`` (already on ``device``, in ``precision``) under inference mode.

    Args:
        module: the callable model.
        path: where it came from (for messages).
        device: its device.
        precision: fp32, fp16 or bf16: the input dtype.
        backend: the backend name recorded on the LoadedModel.
        metadata: ultralytics-style metadata (``imgsz``, ``names``, ``pyinfer.decoder``...).
        preprocess: optional hook on the letterboxed (B, 3, H, W) input before the model.
        postprocess: optional hook on the model's raw return value, before it becomes a list of tensors.
        fixed_batch: the batch size the model only accepts, if any (forward splits and pads).
        input_size: (width, height) when the metadata has no ``imgsz`` (e.g. from a static input shape).
    """
    import torch

    from pyinfer.backends.base import in_batches

    def run_native(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            if preprocess is not None:
                x = preprocess(x)
            out = module(x)
            if postprocess is not None:
                out = postprocess(out)
        return output_list(out)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        return as_float32(run_native(x))

    forward = run
    # The outputs in the model's own dtype, for accel's in-graph decode, which casts only what it reads.
    run.native_outputs = run_native  # type: ignore[attr-defined]
    if fixed_batch is not None:

        def forward(x: torch.Tensor) -> list[torch.Tensor]:
            return in_batches(run, x, fixed_batch, pad=True)

    return LoadedModel(
        forward=forward,
        device=device,
        dtype=torch_dtype(precision),
        input_size=input_size_from_config(metadata) or input_size,
        names=names_from_config(metadata),
        decoder=decoder_from_config(metadata),
        path=path,
        backend=backend,
        precision=precision,
        fixed_batch=fixed_batch,
        metadata=metadata,
        module=module,
    )
