"""``.onnx`` models through ONNX Runtime: CPU, or the CUDA execution provider when present and asked for.

Tensors never leave torch: the input is bound by address (``IOBinding.bind_input`` with ``data_ptr()``),
outputs are allocated by ONNX Runtime on the same device and handed to torch through DLPack, on the CPU as
on a GPU (the CPU run exercises the same binding code the CUDA one does).

Batch: a model exported with a dynamic batch dimension takes any batch; one with a fixed batch N runs the
element's batches in chunks of N, the last one padded by repeating its last frame (padded rows dropped).
Precision is the model's own: an fp16 export takes fp16 input; ``precision`` may only name that precision.
ultralytics' ``metadata_props`` (``imgsz``, ``names``, ``task``, ``stride``...) become input size and names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pyinfer.backends.base import LoadedModel, as_float32, in_batches, torch_dtype
from pyinfer.backends.metadata import decoder_from_config, input_size_from_config, names_from_config, parse_props
from pyinfer.errors import ConfigError, DependencyError, ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: ONNX Runtime input types pyinfer can feed: (precision, ONNX TensorProto element type for IOBinding).
INPUT_TYPES = {"tensor(float)": ("fp32", 1), "tensor(float16)": ("fp16", 10), "tensor(bfloat16)": ("bf16", 16)}


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime, or raise DependencyError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyError(
            f"backend onnx needs the 'onnxruntime' package ({exc}): pip install onnxruntime, or the onnx extra: "
            "pip install 'pyinfer-gst[onnx]' (or onnxruntime-gpu for the CUDA execution provider)"
        ) from exc
    return onnxruntime


def load_onnx(path: Path, device: str, *, precision: str = "fp32") -> LoadedModel:
    """Open an ONNX model in an ONNX Runtime session for ``device``.

    With a CUDA ``device`` and no CUDA execution provider in this onnxruntime (the plain ``onnxruntime``
    wheel), the model runs on the CPU and says so in the log; the LoadedModel's device is then ``cpu``.

    Raises:
        DependencyError: onnxruntime is missing.
        ModelError: not an ONNX model, or not one image input.
        ConfigError: ``precision`` asks for a precision the model was not exported in.
    """
    import torch

    ort = import_onnxruntime()
    dev = torch.device(device)
    available = ort.get_available_providers()
    if dev.type == "cuda" and "CUDAExecutionProvider" not in available:
        log.warning(
            "onnxruntime %s has no CUDAExecutionProvider (providers: %s): %s runs on the CPU; install onnxruntime-gpu",
            ort.__version__, ", ".join(available), path,
        )  # fmt: skip
        dev = torch.device("cpu")
    if dev.type == "cuda":
        providers: list = [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings about graph optimisations are noise here
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {path} is not a loadable ONNX model: {first}") from exc
    if dev.type == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        log.warning("onnxruntime could not start the CUDA execution provider for %s: it runs on the CPU", path)

    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(
            f"model {path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); pyinfer feeds one "
            "image tensor [B, 3, H, W]"
        )
    inp = inputs[0]
    if inp.type not in INPUT_TYPES or len(inp.shape) != 4:
        raise ModelError(f"model {path} input {inp.name} is {inp.type} {inp.shape}; expected a float [B, 3, H, W]")
    model_precision, element_type = INPUT_TYPES[inp.type]
    if precision not in ("fp32", model_precision):
        raise ConfigError(
            f"precision {precision}: ONNX model {path} was exported in {model_precision} and ONNX Runtime runs it "
            f"as exported; export it in {precision} or use backend=tensorrt precision={precision}"
        )
    batch, _, height, width = inp.shape
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    static_size = (width, height) if isinstance(width, int) and isinstance(height, int) else None
    metadata = parse_props(session.get_modelmeta().custom_metadata_map)
    output_names = [o.name for o in session.get_outputs()]
    device_id = dev.index or 0

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        x = x.contiguous()
        binding = session.io_binding()
        binding.bind_input(inp.name, dev.type, device_id, element_type, tuple(x.shape), x.data_ptr())
        for name in output_names:
            binding.bind_output(name, dev.type, device_id)
        if dev.type == "cuda":
            torch.cuda.current_stream(dev).synchronize()  # ORT runs on its own stream, which does not wait for torch's
        session.run_with_iobinding(binding)
        return as_float32([_to_torch(v) for v in binding.get_outputs()])

    forward = run
    if fixed is not None:

        def forward(x: torch.Tensor) -> list[torch.Tensor]:
            return in_batches(run, x, fixed, pad=True)

    return LoadedModel(
        forward=forward,
        device=dev,
        dtype=torch_dtype(model_precision),
        input_size=input_size_from_config(metadata) or static_size,
        names=names_from_config(metadata),
        decoder=decoder_from_config(metadata),
        path=str(path),
        backend="onnx",
        precision=model_precision,
        fixed_batch=fixed,
        metadata=metadata,
        output_names=tuple(output_names),
    )


def _to_torch(value: object) -> torch.Tensor:
    import torch

    if hasattr(value, "__dlpack__"):  # OrtValue speaks DLPack (1.32 here): zero copy, CPU or CUDA
        return torch.from_dlpack(value)
    return torch.from_numpy(value.numpy())  # type: ignore[attr-defined]  # older onnxruntime: a copy
