"""Model runtimes. ``load_model(path, device)`` picks one from the file's extension, or the ``backend`` setting.

| backend | model-engine | module |
|---|---|---|
| torchscript | ``.torchscript``, ``.ts``, ``.pt`` (a pickled ``.pt`` only with allow-pickle) | torchscript.py |
| export | ``.pt2`` (``torch.export.save``) | export.py |
| module | ``package.module:callable`` returning an ``nn.Module`` | module.py |
| onnx | ``.onnx`` through ONNX Runtime | onnx.py |
| tensorrt | ``.engine``/``.plan``; ``.onnx`` with backend=tensorrt builds and caches an engine | tensorrt.py |
| triton | ``triton://host:port/model`` (gRPC), ``http://host:port/model``: a Triton Inference Server | triton.py |
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfer.backends.base import PRECISIONS
from pyinfer.backends.module import is_module_spec
from pyinfer.backends.triton import is_triton_url
from pyinfer.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from pyinfer.backends.base import LoadedModel

#: File extensions and the backend that loads them when ``backend`` is auto.
EXTENSIONS: dict[str, str] = {
    ".torchscript": "torchscript",
    ".ts": "torchscript",
    ".pt": "torchscript",
    ".pt2": "export",
    ".onnx": "onnx",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
}
#: ``backend`` property values.
BACKENDS = ("auto", "torchscript", "export", "module", "onnx", "tensorrt", "triton")


def supported_kinds() -> str:
    """The model kinds pyinfer loads, for error messages."""
    return f"{', '.join(sorted(EXTENSIONS))} files, or a module:callable factory (e.g. mypkg.detector:build)"


def resolve_backend(path: str, backend: str = "auto") -> str:
    """The backend that loads ``path``: ``backend`` unless auto, else by extension (or module:callable syntax).

    Raises:
        ConfigError: unknown ``backend``; with auto, an extension no backend reads.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if is_triton_url(path):
        return "triton"
    if is_module_spec(path) and not Path(path).exists():
        return "module"
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ConfigError(
            f"model file {path}: unsupported kind {suffix or '(no extension)'}; supported: {supported_kinds()}; "
            f"or name the backend ({', '.join(BACKENDS[1:])})"
        )
    return EXTENSIONS[suffix]


def check_model_file(path: str, backend: str = "auto") -> Path:
    """Raise ModelError/ConfigError unless ``path`` names a readable file that ``backend`` (or auto) can take."""
    if not path:
        raise ConfigError(
            f"property model-engine is empty: set it to a model ({supported_kinds()}), "
            "e.g. the embedded model from `pyinfer models`"
        )
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {path} does not exist", missing=True)
    if not p.is_file():
        raise ModelError(f"model file {path} is not a regular file")
    resolve_backend(path, backend)  # an unsupported kind is reported before the file is opened
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read: {exc.strerror or exc}") from exc
    return p


def load_model(
    path: str,
    device: str,
    *,
    backend: str = "auto",
    precision: str = "fp32",
    allow_pickle: bool = False,
    max_batch: int = 1,
) -> LoadedModel:
    """Load a model with the backend its extension (or ``backend``) names.

    Args:
        path: model file, or ``package.module:callable``.
        device: torch device string ("cpu", "cuda", "cuda:N").
        backend: one of :data:`BACKENDS`; auto picks by extension.
        precision: fp32, fp16 or bf16 (what each backend allows: docs/backends.md).
        allow_pickle: let formats that unpickle Python objects load (pickled ``.pt`` checkpoints, some .pt2).
        max_batch: the largest batch the caller sends (TensorRT builds its optimization profile for it).

    Raises:
        ConfigError, ModelError, DependencyError: naming the problem.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if max_batch < 1:
        raise ConfigError(f"batch size must be at least 1, not {max_batch}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if path and (backend == "triton" or (backend == "auto" and is_triton_url(path))):
        from pyinfer.backends.triton import load_triton

        return load_triton(path, device, precision=precision, max_batch=max_batch)
    if path and (backend == "module" or (backend == "auto" and is_module_spec(path) and not Path(path).exists())):
        from pyinfer.backends.module import load_module

        return load_module(path, device, precision=precision)
    p = check_model_file(path, backend)
    kind = resolve_backend(path, backend)
    if kind == "torchscript":
        from pyinfer.backends.torchscript import load_torchscript

        return load_torchscript(p, device, precision=precision, allow_pickle=allow_pickle)
    if kind == "export":
        from pyinfer.backends.export import load_export

        return load_export(p, device, precision=precision, allow_pickle=allow_pickle)
    if kind == "onnx":
        from pyinfer.backends.onnx import load_onnx

        return load_onnx(p, device, precision=precision)
    if kind == "tensorrt":
        from pyinfer.backends.tensorrt import load_tensorrt

        return load_tensorrt(p, device, precision=precision, max_batch=max_batch)
    raise ConfigError(f"no backend {kind!r}")  # pragma: no cover - BACKENDS and this list agree
