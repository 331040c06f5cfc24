"""Contract fake of TensorRT 10's Python API (``import tensorrt``), the subset pyinfer.backends.tensorrt uses.

It enforces what the TensorRT 10 Python/C++ API documentation states, recording each breach in
``tensorrt._fake.violations`` and answering as the real call does (False / None):

- ``Runtime``, ``Builder`` and ``OnnxParser`` take an ``ILogger``; errors are logged through it.
- ``Builder.create_network(flags)``: an int of ``NetworkDefinitionCreationFlag`` bits (TensorRT 10 networks
  always have an explicit batch dimension; EXPLICIT_BATCH is deprecated and ignored).
- ``OnnxParser.parse_from_file(path)`` -> bool, with ``num_errors`` / ``get_error(i)`` on failure.
- ``IOptimizationProfile.set_shape(name, min, opt, max)``: an input of the network, same rank,
  ``min <= opt <= max`` per dimension, fixed dimensions unchanged.
- ``Builder.build_serialized_network(network, config)`` -> ``IHostMemory`` (buffer protocol) or None; None when
  a dynamic input has no optimization profile.
- ``Runtime.deserialize_cuda_engine(buffer)`` -> ``ICudaEngine`` or None (not an engine, or built by another
  TensorRT version).
- ``ICudaEngine``: ``num_io_tensors``, ``get_tensor_name(i)``, ``get_tensor_mode``, ``get_tensor_shape`` (-1
  for dynamic dimensions), ``get_tensor_dtype``, ``get_tensor_profile_shape(name, profile)`` -> [min, opt,
  max], ``create_execution_context()``.
- ``IExecutionContext.set_input_shape(name, dims)`` -> bool: an input, same rank, inside the profile.
  ``get_tensor_shape(output)`` has -1s until every dynamic input's shape is set.
  ``set_tensor_address(name, ptr)`` -> bool: an I/O tensor, pointer with at least 256-byte alignment.
  ``execute_async_v3(stream_handle: int)`` -> bool: every input shape set, every I/O address set.

Not modelled: real GPU memory (addresses are host pointers, see ``_fake.FakeCuda``), kernels and precision
(execution is onnxruntime in fp32 whatever the flags; flags are recorded in ``_fake.last_build``), plugins,
multiple profiles, data-dependent output shapes, streams' ordering (execution is synchronous).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import numpy as np

from . import _fake

__version__ = "10.7.0"

_ORT_TO_DTYPE = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int64)": "INT64",
                 "tensor(int32)": "INT32", "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8"}  # fmt: skip


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class BuilderFlag(enum.Enum):
    FP16 = 0
    INT8 = 1
    TF32 = 7
    BF16 = 18


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        _fake.log.append(f"{severity.name}: {msg}")


class Logger(ILogger):
    INTERNAL_ERROR = ILogger.Severity.INTERNAL_ERROR
    ERROR = ILogger.Severity.ERROR
    WARNING = ILogger.Severity.WARNING
    INFO = ILogger.Severity.INFO
    VERBOSE = ILogger.Severity.VERBOSE

    def __init__(self, min_severity: ILogger.Severity = ILogger.Severity.WARNING) -> None:
        if not isinstance(min_severity, ILogger.Severity):
            _fake.violate(f"Logger(min_severity): expected a Logger.Severity, got {min_severity!r}")
        self.min_severity = min_severity


class Dims(tuple):
    """``trt.Dims``: a sequence of ints, -1 for dynamic dimensions."""


class IHostMemory(bytes):
    """Serialized engine memory; supports the buffer protocol (``bytes(mem)``, ``f.write(mem)``)."""

    @property
    def nbytes(self) -> int:
        return len(self)


def _need_logger(where: str, logger: object) -> None:
    if not isinstance(logger, ILogger):
        _fake.violate(f"{where}: expected an ILogger, got {type(logger).__name__}")


# -- building ------------------------------------------------------------------------------------------------


class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, Dims(shape), dtype


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.onnx: bytes | None = None
        self._inputs: list[ITensor] = []
        self._outputs: list[tuple[str, DataType]] = []

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        _need_logger("OnnxParser", logger)
        if not isinstance(network, INetworkDefinition):
            _fake.violate("OnnxParser: expected an INetworkDefinition")
        self.network, self._errors = network, []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        return self._errors[index]

    def parse_from_file(self, path: str) -> bool:
        import onnxruntime as ort

        if not isinstance(path, str):
            _fake.violate(f"OnnxParser.parse_from_file: path must be a str, got {type(path).__name__}")
            return False
        try:
            data = Path(path).read_bytes()
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as exc:
            self._errors.append(f"ModelImporter: failed to parse ONNX model {path}: {exc}")
            return False
        net = self.network
        net.onnx = data
        for i in session.get_inputs():
            dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in i.shape)
            net._inputs.append(ITensor(i.name, dims, DataType[_ORT_TO_DTYPE[i.type]]))
        net._outputs = [(o.name, DataType[_ORT_TO_DTYPE[o.type]]) for o in session.get_outputs()]
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # TensorRT's argument names
        lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
        if not (len(lo) == len(mid) == len(hi)) or not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
            _fake.violate(f"IOptimizationProfile.set_shape({input}): needs min <= opt <= max, same rank")
        if lo[0] < 1:
            _fake.violate(f"IOptimizationProfile.set_shape({input}): dimensions must be positive")
        self.shapes[input] = (lo, mid, hi)


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags: set[BuilderFlag] = set()
        self.profiles: list[IOptimizationProfile] = []

    def set_flag(self, flag: BuilderFlag) -> None:
        if not isinstance(flag, BuilderFlag):
            _fake.violate(f"IBuilderConfig.set_flag: expected a BuilderFlag, got {flag!r}")
        self.flags.add(flag)

    def get_flag(self, flag: BuilderFlag) -> bool:
        return flag in self.flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Builder:
    def __init__(self, logger: ILogger) -> None:
        _need_logger("Builder", logger)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        if not isinstance(flags, int):
            _fake.violate(f"Builder.create_network: flags must be an int of bits, got {flags!r}")
        return INetworkDefinition(int(flags))

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        if network.onnx is None or not network._inputs:
            _fake.violate("build_serialized_network: the network is empty (was the ONNX file parsed?)")
            return None
        profile = config.profiles[0].shapes if config.profiles else {}
        inputs = []
        for t in network._inputs:
            shape = tuple(t.shape)
            if any(d < 0 for d in shape):
                if t.name not in profile:
                    _fake.violate(f"build_serialized_network: dynamic input {t.name} {list(shape)} has no profile")
                    return None
                lo, _, hi = profile[t.name]
                if any(s >= 0 and (s != a or s != b) for s, a, b in zip(shape, lo, hi)):
                    _fake.violate(f"build_serialized_network: profile of {t.name} changes a fixed dimension")
                    return None
            inputs.append({"name": t.name, "shape": list(shape), "dtype": t.dtype.name,
                           "profile": [list(s) for s in profile.get(t.name, (shape, shape, shape))]})  # fmt: skip
        dims = _output_dims(network)
        outputs = [{"name": n, "dtype": d.name, "shape": s} for (n, d), s in zip(network._outputs, dims)]
        header = {"version": __version__, "flags": sorted(f.name for f in config.flags),
                  "inputs": inputs, "outputs": outputs}  # fmt: skip
        _fake.stats["builds"] += 1
        _fake.last_build.clear()
        _fake.last_build.update(header)
        return IHostMemory(_fake.serialize(header, network.onnx))


def _output_dims(network: INetworkDefinition) -> list[list[int]]:
    """Output shapes as a build's shape inference gives them: -1 where a dimension follows the batch size."""
    import onnxruntime as ort

    session = ort.InferenceSession(network.onnx, providers=["CPUExecutionProvider"])
    inp = network._inputs[0]

    def shapes(batch: int) -> list[tuple[int, ...]]:
        dims = tuple(batch if d < 0 else d for d in inp.shape)
        x = np.zeros(dims, dtype=np.float16 if inp.dtype is DataType.HALF else np.float32)
        return [o.shape for o in session.run(None, {inp.name: x})]

    if inp.shape[0] >= 0:
        return [list(s) for s in shapes(inp.shape[0])]
    return [[-1 if a != b else a for a, b in zip(s1, s2)] for s1, s2 in zip(shapes(1), shapes(2))]


# -- running -------------------------------------------------------------------------------------------------


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        _need_logger("Runtime", logger)
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        parsed = _fake.deserialize(bytes(serialized_engine))
        if parsed is None:
            _fake.log.append("ERROR: IRuntime::deserializeCudaEngine: not a serialized engine (magic mismatch)")
            return None
        header, onnx = parsed
        if header.get("version") != __version__:
            _fake.log.append(f"ERROR: engine built by TensorRT {header.get('version')}, this is {__version__}")
            return None
        _fake.stats["deserializations"] += 1
        return ICudaEngine(header, onnx)


class ICudaEngine:
    def __init__(self, header: dict[str, Any], onnx: bytes) -> None:
        self.header, self.onnx = header, onnx
        self._io = {t["name"]: (TensorIOMode.INPUT, t) for t in header["inputs"]}
        self._io.update({t["name"]: (TensorIOMode.OUTPUT, t) for t in header["outputs"]})
        self._names = list(self._io)

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._io[name][0] if name in self._io else TensorIOMode.NONE

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._io[name][1]["shape"])

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._io[name][1]["dtype"]]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if self.get_tensor_mode(name) is not TensorIOMode.INPUT or profile_index != 0:
            _fake.violate(f"get_tensor_profile_shape({name!r}, {profile_index}): not an input of profile 0")
            return []
        return [Dims(s) for s in self._io[name][1]["profile"]]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        import onnxruntime as ort

        self.engine = engine
        self._session = ort.InferenceSession(engine.onnx, providers=["CPUExecutionProvider"])
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    def _inputs(self) -> list[dict[str, Any]]:
        return self.engine.header["inputs"]

    def set_input_shape(self, name: str, shape: Any) -> bool:
        if self.engine.get_tensor_mode(name) is not TensorIOMode.INPUT:
            _fake.violate(f"set_input_shape({name!r}): not an input tensor")
            return False
        dims = tuple(int(d) for d in shape)
        lo, _, hi = (tuple(s) for s in self.engine._io[name][1]["profile"])
        if len(dims) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, dims, hi)):
            _fake.violate(f"set_input_shape({name!r}, {list(dims)}): outside the profile {list(lo)}..{list(hi)}")
            return False
        self._shapes[name] = dims
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        mode, spec = self.engine._io[name]
        if mode is TensorIOMode.INPUT:
            return Dims(self._shapes.get(name, spec["shape"]))
        batch = self._shapes.get(self._inputs()[0]["name"], (-1,))[0]
        return Dims(batch if d < 0 else d for d in spec["shape"])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self.engine.get_tensor_mode(name) is TensorIOMode.NONE:
            _fake.violate(f"set_tensor_address({name!r}): not an I/O tensor")
            return False
        if not isinstance(memory, int) or memory == 0 or memory % 256:
            _fake.violate(f"set_tensor_address({name!r}, {memory!r}): needs a non-null, 256-byte aligned pointer")
            return False
        self._addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if not isinstance(stream_handle, int):
            _fake.violate(f"execute_async_v3: stream_handle must be an int, got {type(stream_handle).__name__}")
            return False
        missing_shapes = [t["name"] for t in self._inputs() if -1 in t["shape"] and t["name"] not in self._shapes]
        missing_addresses = [n for n in self.engine._names if n not in self._addresses]
        if missing_shapes or missing_addresses:
            _fake.violate(f"execute_async_v3: shapes not set for {missing_shapes}, addresses for {missing_addresses}")
            return False
        feeds = {}
        for t in self._inputs():
            shape = tuple(self.get_tensor_shape(t["name"]))
            feeds[t["name"]] = _fake.host_array(self._addresses[t["name"]], shape, t["dtype"]).copy()
        results = self._session.run([t["name"] for t in self.engine.header["outputs"]], feeds)
        for t, value in zip(self.engine.header["outputs"], results):
            shape = tuple(self.get_tensor_shape(t["name"]))
            if tuple(value.shape) != shape:
                _fake.violate(f"execute_async_v3: output {t['name']} is {list(value.shape)}, engine said {list(shape)}")
                return False
            _fake.host_array(self._addresses[t["name"]], shape, t["dtype"])[...] = value
        _fake.stats["executions"] += 1
        return True
