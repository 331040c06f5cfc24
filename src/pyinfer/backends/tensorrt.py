"""TensorRT: serialized engines (``.engine``/``.plan``), and ONNX models built into cached engines.

Written against TensorRT 10's Python API (named I/O tensors, ``execute_async_v3``). Verified here only against
the contract fake in ``tests/fakes/tensorrt`` (see docs/backends.md for what that does and does not prove).

Running: the input and torch-allocated outputs are bound by address (``set_tensor_address``, 256-byte
aligned as TensorRT requires), input shapes are set before output shapes are read, and the engine runs on
torch's current CUDA stream, so everything torch does before and after is ordered with it without a sync.

Building (``model-engine=m.onnx backend=tensorrt``): the first start parses the ONNX file, builds an engine
(FP16/BF16 builder flags for ``precision``; for a dynamic batch dimension one optimization profile with
min 1 and opt = max = ``batch-size``) and saves it next to the model as
``<model>.<gpu>-sm<cc>.trt<version>.<precision>.b<batch>.engine`` (in ``$PYINFER_CACHE_DIR/engines`` or
``~/.cache/pyinfer/engines`` when that folder is not writable), with the ONNX metadata in ``<engine>.json``.
Later starts load it; a change of GPU, TensorRT version, precision or batch size builds another, and an ONNX
file newer than its engine rebuilds it. A lock file keeps two processes from building the same engine.

Loading an engine deserializes no Python objects; ``Runtime.engine_host_code_allowed`` stays at its default
(False), so engines that embed host code are refused by TensorRT itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pyinfer.backends.base import LoadedModel, as_float32, in_batches
from pyinfer.backends.metadata import decoder_from_config, input_size_from_config, names_from_config, parse_props
from pyinfer.errors import ConfigError, DependencyError, ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ALIGNMENT = 256  # bytes; IExecutionContext::setTensorAddress: "The pointer must have at least 256-byte alignment"
BUILDER_FLAGS = {"fp16": "FP16", "bf16": "BF16"}  # precision -> trt.BuilderFlag member (fp32: none)
_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
           "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}  # fmt: skip
_PRECISION_OF = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}


class TorchCuda:
    """The CUDA facts the backend needs, from torch. Tests replace :data:`CUDA` with a fake device."""

    def check(self, device: torch.device) -> None:
        """Raise ConfigError unless ``device`` is a CUDA device."""
        if device.type != "cuda":
            raise ConfigError(f"backend tensorrt runs on CUDA devices only; device is {device}")

    def identity(self, device: torch.device) -> tuple[str, tuple[int, int]]:
        """(GPU name, compute capability) of ``device``: engines are specific to both."""
        import torch

        return torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)

    def stream(self, device: torch.device) -> int:
        """The handle of torch's current CUDA stream on ``device``."""
        import torch

        return torch.cuda.current_stream(device).cuda_stream

    def scope(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Make ``device`` current: TensorRT deserializes onto the current device."""
        import torch

        return torch.cuda.device(device)


CUDA: Any = TorchCuda()


def import_tensorrt() -> ModuleType:
    """Import tensorrt (version 10 or later), or raise DependencyError."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DependencyError(
            f"backend tensorrt needs the 'tensorrt' package ({exc}) and an NVIDIA GPU: pip install tensorrt"
        ) from exc
    major = int(str(getattr(tensorrt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise DependencyError(f"backend tensorrt needs TensorRT >= 10; found {tensorrt.__version__}")
    return tensorrt


# -- engine cache --------------------------------------------------------------------------------------------


def cache_name(model: Path, gpu: str, capability: tuple[int, int], version: str, precision: str, batch: int) -> str:
    """``<model>.<gpu-slug>-sm<cc>.trt<version>.<precision>.b<batch>.engine``: everything an engine is tied to."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
    return f"{model.name}.{slug}-sm{capability[0]}{capability[1]}.trt{version}.{precision}.b{batch}.engine"


def cache_dir() -> Path:
    """Where engines go when the model's folder is not writable."""
    root = os.environ.get("PYINFER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pyinfer"
    )
    return Path(root) / "engines"


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def cache_candidates(model: Path, name: str) -> tuple[Path, Path]:
    """(next to the model, in the cache dir); the latter's name carries a hash of the model's folder."""
    tag = hashlib.sha256(str(model.resolve().parent).encode()).hexdigest()[:8]
    return model.parent / name, cache_dir() / f"{tag}.{name}"


def _fresh(engine: Path, model: Path) -> bool:
    try:
        return engine.stat().st_mtime >= model.stat().st_mtime and engine.stat().st_size > 0
    except OSError:
        return False


@contextlib.contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """Hold ``<target>.lock`` (flock, per open file, so it also serialises threads of one process)."""
    with open(target.with_name(target.name + ".lock"), "ab") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", target)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_engine(model: Path, name: str, build: Callable[[], bytes], metadata: Callable[[], dict]) -> Path:
    """The path of a fresh engine for ``model``, building it (once, under a lock) when there is none.

    Args:
        model: the ONNX file.
        name: the engine's file name (:func:`cache_name`).
        build: returns the serialized engine.
        metadata: returns the model's metadata, saved beside the engine as ``<engine>.json``.
    """
    beside, fallback = cache_candidates(model, name)
    for path in (beside, fallback):
        if _fresh(path, model):
            return path
    target = beside if _writable(model.parent) else fallback
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        if _fresh(target, model):  # another process built it while this one waited
            return target
        log.info("building TensorRT engine %s from %s (once; later starts load it)", target, model)
        data = build()
        for suffix, content in ((".json", json.dumps(metadata()).encode()), ("", data)):  # metadata first
            tmp = target.with_name(f"{target.name}{suffix}.{os.getpid()}.tmp")
            tmp.write_bytes(content)
            os.replace(tmp, target.with_name(target.name + suffix))  # atomic: readers see none or all of it
    return target


def onnx_metadata(path: Path) -> dict[str, Any]:
    """An ONNX file's ``metadata_props`` (parsed as :func:`parse_props`), read with ``onnx`` if installed."""
    try:
        import onnx
    except ImportError:
        log.info("package onnx not installed: the engine built from %s carries no names/imgsz metadata", path)
        return {}
    model = onnx.load(str(path), load_external_data=False)
    return parse_props({p.key: p.value for p in model.metadata_props})


def build_engine(trt: ModuleType, onnx_path: Path, *, precision: str, max_batch: int) -> bytes:
    """Parse an ONNX file and build a serialized engine.

    Raises:
        ModelError: TensorRT cannot parse or build it, or its height/width are dynamic.
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch dimension
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT could not parse {onnx_path}: {errors or 'no reason given'}")
    config = builder.create_builder_config()
    if precision in BUILDER_FLAGS:
        config.set_flag(getattr(trt.BuilderFlag, BUILDER_FLAGS[precision]))
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ModelError(
                f"{onnx_path}: input {tensor.name} {list(shape)} has a dynamic size besides the batch; export it "
                "with a fixed height and width"
            )
        if shape and shape[0] < 0:
            rest = shape[1:]
            profile.set_shape(tensor.name, (1, *rest), (max_batch, *rest), (max_batch, *rest))
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build an engine from {onnx_path} (its log above says why)")
    return bytes(serialized)


def read_engine_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The engine bytes and metadata: ultralytics' header (4-byte length + JSON), else ``<engine>.json``."""
    data = path.read_bytes()
    n = int.from_bytes(data[:4], "little")
    if 0 < n < len(data) - 4:
        try:
            header = json.loads(data[4 : 4 + n].decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
        if isinstance(header, dict):
            return data[4 + n :], header
    sidecar = path.with_name(path.name + ".json")
    meta: dict[str, Any] = {}
    if sidecar.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError):
            loaded = json.loads(sidecar.read_text())
            meta = loaded if isinstance(loaded, dict) else {}
    return data, meta


# -- running -------------------------------------------------------------------------------------------------


def aligned_empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised contiguous tensor whose data starts on an :data:`ALIGNMENT`-byte boundary."""
    import torch

    size = math.prod(shape)
    item = torch.empty((), dtype=dtype).element_size()
    buf = torch.empty(size + ALIGNMENT // item, dtype=dtype, device=device)
    start = (-buf.data_ptr() % ALIGNMENT) // item
    return buf[start : start + size].view(shape)


class Runner:
    """Binds one engine's I/O tensors to torch tensors and runs it (one image input, any number of outputs)."""

    def __init__(self, trt: ModuleType, engine: Any, device: torch.device, path: Path) -> None:
        import torch

        self.engine, self.device = engine, device
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ModelError(f"TensorRT engine {path}: could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelError(f"TensorRT engine {path} has inputs {inputs}; pyinfer feeds one image tensor [B, 3, H, W]")
        self.input = inputs[0]
        self.outputs = [n for n in names if n != self.input]
        dtypes = {n: getattr(torch, _DTYPES.get(engine.get_tensor_dtype(n).name, "float32")) for n in names}
        self.input_dtype, self.output_dtypes = dtypes[self.input], [dtypes[n] for n in self.outputs]
        shape = tuple(engine.get_tensor_shape(self.input))
        if len(shape) != 4 or not self.input_dtype.is_floating_point:
            raise ModelError(f"TensorRT engine {path} input {self.input} is {list(shape)}; expected float [B, 3, H, W]")
        if shape[0] < 0:  # dynamic batch: the profile's maximum bounds a call
            _, _, largest = engine.get_tensor_profile_shape(self.input, 0)  # (min, opt, max) of profile 0
            self.fixed_batch, self.max_batch = None, int(largest[0])
        else:
            self.fixed_batch = self.max_batch = int(shape[0])
        self.static_size = (int(shape[3]), int(shape[2])) if shape[2] > 0 and shape[3] > 0 else None

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run one batch of at most ``max_batch`` frames (exactly ``fixed_batch`` for a fixed engine)."""
        x = x.to(self.input_dtype).contiguous()
        if x.data_ptr() % ALIGNMENT:
            x = aligned_empty(tuple(x.shape), x.dtype, x.device).copy_(x)
        ctx = self.context
        if not ctx.set_input_shape(self.input, tuple(x.shape)):
            raise RuntimeError(f"TensorRT refused input shape {list(x.shape)} for {self.input}")
        ctx.set_tensor_address(self.input, x.data_ptr())
        outputs = []
        for name, dtype in zip(self.outputs, self.output_dtypes):
            shape = tuple(ctx.get_tensor_shape(name))  # known once the input shape is set
            if any(d < 0 for d in shape):
                raise RuntimeError(f"TensorRT output {name} has a data-dependent shape {list(shape)}: not supported")
            out = aligned_empty(shape, dtype, self.device)
            ctx.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        # Same stream as torch: the letterbox before and the decoder after are ordered with the engine.
        if not ctx.execute_async_v3(CUDA.stream(self.device)):
            raise RuntimeError("TensorRT execute_async_v3 failed (its log says why)")
        return as_float32(outputs)


def load_tensorrt(path: Path, device: str, *, precision: str = "fp32", max_batch: int = 1) -> LoadedModel:
    """Load a serialized engine, or build (once) and load an engine from an ONNX file.

    Args:
        path: ``.engine``/``.plan`` (any other suffix but ``.onnx`` is read as an engine too), or ``.onnx``.
        device: a CUDA device.
        precision: builder precision for ONNX files (fp32, fp16, bf16); a prebuilt engine runs as built.
        max_batch: the element's batch size: the optimization profile's opt/max for dynamic-batch ONNX.

    Raises:
        DependencyError: tensorrt missing or older than 10.
        ConfigError: not a CUDA device.
        ModelError: cannot parse/build/deserialize, or not one image input.
    """
    import torch

    trt = import_tensorrt()
    dev = torch.device(device)
    CUDA.check(dev)
    if path.suffix.lower() == ".onnx":
        gpu, capability = CUDA.identity(dev)
        name = cache_name(path, gpu, capability, trt.__version__, precision, max_batch)

        def build() -> bytes:
            with CUDA.scope(dev):
                return build_engine(trt, path, precision=precision, max_batch=max_batch)

        engine_path = cached_engine(path, name, build, lambda: onnx_metadata(path))
    else:
        engine_path = path
        if precision != "fp32":
            log.info("precision %s applies to engines built from ONNX; %s runs as it was built", precision, path)
    data, metadata = read_engine_file(engine_path)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    with CUDA.scope(dev):
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelError(
                f"{engine_path} is not a TensorRT engine that TensorRT {trt.__version__} can load on this GPU "
                "(engines are tied to the TensorRT version and GPU that built them; rebuild it from ONNX)"
            )
        runner = Runner(trt, engine, dev, engine_path)
    runner.runtime = runtime  # type: ignore[attr-defined]  # the engine must not outlive its runtime

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        return in_batches(runner, x, runner.max_batch, pad=runner.fixed_batch is not None)

    return LoadedModel(
        forward=forward,
        device=dev,
        dtype=runner.input_dtype,
        input_size=input_size_from_config(metadata) or runner.static_size,
        names=names_from_config(metadata),
        decoder=decoder_from_config(metadata),
        path=str(engine_path),
        backend="tensorrt",
        # A prebuilt engine's inner precision is not visible: report its input's.
        precision=precision if path.suffix.lower() == ".onnx" else _PRECISION_OF.get(str(runner.input_dtype), "fp32"),
        fixed_batch=runner.fixed_batch,
        metadata=metadata,
        output_names=tuple(runner.outputs),
    )
