"""State and helpers behind the fake ``tensorrt`` package (test-only; the real package has no ``_fake``).

- :data:`stats` counts builds, deserializations and executions, so tests can assert an engine was built once.
- :data:`violations` collects every call that breaks TensorRT's documented contract (the call also returns
  False or None, as the real API does); tests assert it stays empty.
- :class:`FakeCuda` stands in for ``pyinfer.backends.tensorrt.CUDA``: a "GPU" whose memory is the host's, so
  CPU torch tensors' ``data_ptr()`` play device addresses. It accepts any torch device.
- The serialized engine format: ``MAGIC`` + 4-byte little-endian header length + JSON header (I/O tensors,
  profile, builder flags, TensorRT version) + the ONNX model bytes, which the fake runs with onnxruntime on
  the memory the bound addresses point to.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
from typing import Any

import numpy as np

MAGIC = b"FAKETRT\x00"
stats: dict[str, int] = {"builds": 0, "deserializations": 0, "executions": 0}
violations: list[str] = []
log: list[str] = []  # what the fake logged through the application's ILogger
last_build: dict[str, Any] = {}  # header of the most recent build (flags, profile)


def reset() -> None:
    """Forget counts, violations, logs (call at the start of each test)."""
    for key in stats:
        stats[key] = 0
    violations.clear()
    log.clear()
    last_build.clear()


def violate(message: str) -> None:
    violations.append(message)
    log.append(f"ERROR: {message}")


class FakeCuda:
    """The CUDA seam of pyinfer.backends.tensorrt, backed by host memory."""

    name = "Fake GPU 9000"
    capability = (8, 9)
    stream_handle = 0x5EED

    def check(self, device: object) -> None:
        """Any device is a fake GPU."""

    def identity(self, device: object) -> tuple[str, tuple[int, int]]:
        return self.name, self.capability

    def stream(self, device: object) -> int:
        return self.stream_handle

    def scope(self, device: object) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def serialize(header: dict[str, Any], onnx_bytes: bytes) -> bytes:
    head = json.dumps(header).encode()
    return MAGIC + len(head).to_bytes(4, "little") + head + onnx_bytes


def deserialize(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    if not data.startswith(MAGIC):
        return None
    n = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "little")
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start : start + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header, data[start + n :]


_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
       "UINT8": np.uint8, "BOOL": np.bool_}  # fmt: skip


def host_array(address: int, shape: tuple[int, ...], dtype_name: str) -> np.ndarray:
    """A writable NumPy view of ``shape`` elements at ``address`` (the fake GPU's memory is the host's)."""
    dtype = np.dtype(_NP[dtype_name])
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = (ctypes.c_ubyte * nbytes).from_address(address)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)
