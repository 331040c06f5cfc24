"""TorchScript archives (``torch.jit.save``; ultralytics ``format=torchscript``), and ``.pt`` checkpoints.

``torch.jit.load`` reads the archive's code and tensors with TorchScript's own C++ deserializer: its pickles
(``data.pkl``, ``constants.pkl``) may only name tensors and TorchScript types, so no Python object is built and
no Python code runs while loading. (The model then runs its own TorchScript graph: load models you trust.)

A ``.pt`` file is often not TorchScript but a pickled checkpoint (``torch.save(model)``, ultralytics'
``yolo11n.pt``): unpickling one can run any Python code, so it is refused unless ``allow-pickle=true``, and
then loaded by :func:`pyinfer.backends.module.load_checkpoint`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from pyinfer.backends.base import LoadedModel
from pyinfer.backends.metadata import input_size_from_config, names_from_config, parse_config
from pyinfer.errors import ConfigError, ModelError

__all__ = ["input_size_from_config", "load_torchscript", "names_from_config", "parse_config", "sniff"]


def sniff(path: Path) -> str:
    """What a torch file is, from its container alone (nothing is unpickled).

    Returns:
        "torchscript" (a zip with ``code/`` or ``constants.pkl``), "pickle" (a ``torch.save`` zip holding only
        ``data.pkl``, or a legacy pickle stream), or "unknown" (left for ``torch.jit.load`` to reject).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        with open(path, "rb") as f:
            head = f.read(2)
        # PROTO opcode + protocol 2..5: torch.save's legacy format and plain pickles start like this.
        return "pickle" if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5 else "unknown"
    parts = [n.split("/") for n in names]
    if any(p[1:2] == ["code"] or p[-1] == "constants.pkl" for p in parts):
        return "torchscript"
    if any(p[-1] == "data.pkl" for p in parts):
        return "pickle"
    return "unknown"


def pickle_refused(path: Path, what: str) -> ConfigError:
    """The error for a file that only loads by unpickling, with allow-pickle off."""
    return ConfigError(
        f"model file {path} is {what}: loading it unpickles Python objects, which can run arbitrary code, so it "
        "is refused; set allow-pickle=true only if you trust the file, or export the model to TorchScript, "
        ".pt2 or ONNX (docs/backends.md)"
    )


def load_torchscript(path: Path, device: str, *, precision: str = "fp32", allow_pickle: bool = False) -> LoadedModel:
    """Load a TorchScript archive (or, with ``allow_pickle``, a pickled checkpoint) onto ``device`` in eval mode.

    Args:
        path: the file.
        device: torch device string.
        precision: fp32 (as saved), fp16 or bf16 (weights cast; frozen archives cannot be).
        allow_pickle: load ``torch.save`` checkpoints (arbitrary code) instead of refusing them.

    Raises:
        ConfigError: a pickled checkpoint without ``allow_pickle``; a precision the archive cannot take.
        ModelError: not a TorchScript archive.
    """
    import warnings

    import torch

    from pyinfer.backends._torch import cast, wrap_module

    if sniff(path) == "pickle":
        if not allow_pickle:
            raise pickle_refused(path, "a pickled PyTorch checkpoint (torch.save), not a TorchScript archive")
        from pyinfer.backends.module import load_checkpoint

        return load_checkpoint(path, device, precision=precision)
    extra = {"config.txt": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 marks TorchScript deprecated
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError/zipfile errors for foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {path} is not a loadable TorchScript archive: {first}") from exc
    module.eval()
    raw = extra["config.txt"]
    cfg = parse_config(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
    dev = torch.device(device)
    module, precision = cast(module, precision, dev, str(path))
    return wrap_module(module, path=str(path), device=dev, precision=precision, backend="torchscript", metadata=cfg)
