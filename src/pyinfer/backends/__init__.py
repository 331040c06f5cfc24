"""Model runtimes. ``load_model(path, device)`` picks one from the file's extension."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfer.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from pyinfer.backends.base import LoadedModel

#: File extensions and the backend that loads them.
EXTENSIONS: dict[str, str] = {".torchscript": "torchscript", ".pt": "torchscript", ".ts": "torchscript"}


def check_model_file(path: str) -> Path:
    """Raise ModelError/ConfigError unless ``path`` names a readable file of a supported kind."""
    if not path:
        raise ConfigError(
            "property model-engine is empty: set it to a model file "
            f"({', '.join(sorted(EXTENSIONS))}), e.g. the embedded model from `pyinfer models`"
        )
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {path} does not exist", missing=True)
    if not p.is_file():
        raise ModelError(f"model file {path} is not a regular file")
    if p.suffix.lower() not in EXTENSIONS:
        raise ConfigError(
            f"model file {path}: unsupported kind {p.suffix or '(no extension)'}; "
            f"supported: {', '.join(sorted(EXTENSIONS))}"
        )
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read: {exc.strerror or exc}") from exc
    return p


def load_model(path: str, device: str) -> LoadedModel:
    """Load a model file with the backend its extension names."""
    p = check_model_file(path)
    backend = EXTENSIONS[p.suffix.lower()]
    if backend == "torchscript":
        from pyinfer.backends.torchscript import load_torchscript

        return load_torchscript(p, device)
    raise ConfigError(f"no backend {backend!r}")  # pragma: no cover - EXTENSIONS and this list agree
