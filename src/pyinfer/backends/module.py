"""``module:callable``: a Python factory, named explicitly, that builds an ``nn.Module`` (the mature PyTorch stack).

``model-engine=mypkg.detector:build`` imports ``mypkg.detector`` (and, as Python does, its parent packages)
and calls ``build()``, or ``build(device="cuda:0")`` when the factory has a ``device`` parameter (to load
weights straight onto the device, e.g. ``torch.jit.load(..., map_location=device)``: ``.to()`` cannot move
frozen TorchScript constants). Nothing else is imported: the factory is the only user code pyinfer runs,
and only because a property names it.

The protocol, all optional, read from the returned module first and then from the factory object:

- ``imgsz``: the input size, an int or ``(height, width)`` as ultralytics writes it;
- ``names``: class names, a list or ``{id: name}``;
- ``decoder``: the decoder name (e.g. ``"yolov8"``);
- ``preprocess(x)``: called on the letterboxed ``(B, 3, H, W)`` RGB input in [0, 1] (model dtype, model
  device) before the model; returns the tensor to feed it (e.g. ImageNet normalisation);
- ``postprocess(out)``: called on the model's return value; returns what the decoder reads (a tensor, or a
  tuple/list/dict of tensors whose first is the decoder's input).

This module also loads pickled checkpoints (``torch.save``), behind ``allow-pickle=true`` only.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyinfer.backends.base import LoadedModel
from pyinfer.errors import ConfigError, DependencyError, ModelError

if TYPE_CHECKING:
    import torch

_IDENT = r"[A-Za-z_]\w*"
_SPEC = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")


def is_module_spec(text: str) -> bool:
    """True when ``text`` reads as ``package.module:callable`` (dotted identifiers, one colon)."""
    return _SPEC.match(text) is not None


def resolve_factory(spec: str) -> Callable[..., Any]:
    """Import the module a ``module:callable`` spec names and return the callable.

    Raises:
        ConfigError: ``spec`` is malformed, or names something that is not callable.
        ModelError: the module or attribute does not exist (``missing=True``), or importing it failed.
        DependencyError: the module imports a package that is not installed.
    """
    match = _SPEC.match(spec)
    if match is None:
        raise ConfigError(
            f"model-engine {spec!r} is not a module:callable spec (e.g. mypkg.detector:build) nor a model file"
        )
    modname, attr = match.groups()
    try:
        obj: Any = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name and (modname == exc.name or modname.startswith(exc.name + ".")):
            raise ModelError(
                f"model-engine {spec}: no module named {modname!r} on the Python path; add its folder to PYTHONPATH",
                missing=True,
            ) from exc
        raise DependencyError(f"model-engine {spec}: importing {modname} failed: {exc}") from exc
    except Exception as exc:  # the user's module failed at import time
        raise ModelError(f"model-engine {spec}: importing {modname} raised {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"model-engine {spec}: {modname} has no attribute {attr!r}", missing=True)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model-engine {spec}: {attr} is a {type(obj).__name__}, not a callable factory")
    return obj


def protocol_metadata(*sources: object) -> dict[str, Any]:
    """The ``imgsz``/``names``/``decoder`` attributes of the first source that has each, as metadata."""
    cfg: dict[str, Any] = {}
    for key in ("imgsz", "names", "decoder"):
        for src in sources:
            value = getattr(src, key, None)
            if value is None and key == "imgsz":  # ultralytics models keep their training args
                args = getattr(src, "args", None)
                value = args.get("imgsz") if isinstance(args, dict) else None
            if value is not None and not callable(value):
                if key == "decoder":
                    cfg["pyinfer"] = {"decoder": value}
                else:
                    cfg[key] = list(value) if isinstance(value, tuple) else value
                break
    return cfg


def _hook(name: str, *sources: object) -> Callable[..., Any] | None:
    for src in sources:
        fn = getattr(src, name, None)
        if callable(fn):
            return fn
    return None


def load_module(spec: str, device: str, *, precision: str = "fp32") -> LoadedModel:
    """Build the model a ``module:callable`` spec names and place it on ``device`` in eval mode."""
    import torch

    from pyinfer.backends._torch import cast, wrap_module

    factory = resolve_factory(spec)
    try:
        takes_device = "device" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        takes_device = False
    try:
        module = factory(device=device) if takes_device else factory()
    except Exception as exc:
        raise ModelError(f"model-engine {spec}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"model-engine {spec}: the factory returned a {type(module).__name__}, not a torch.nn.Module")
    dev = torch.device(device)
    module = module.to(dev).eval()
    module, precision = cast(module, precision, dev, spec)
    return wrap_module(
        module,
        path=spec,
        device=dev,
        precision=precision,
        backend="module",
        metadata=protocol_metadata(module, factory),
        preprocess=_hook("preprocess", module, factory),
        postprocess=_hook("postprocess", module, factory),
    )


def _checkpoint_module(obj: Any, path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network inside an unpickled checkpoint, and metadata the checkpoint itself carries."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj, {}
    if isinstance(obj, dict):
        # ultralytics: {"model": DetectionModel (half), "ema": ..., "train_args": {...}}; prefer the EMA weights.
        for key in ("ema", "model"):
            if isinstance(obj.get(key), torch.nn.Module):
                args = obj.get("train_args")
                meta = {"imgsz": args["imgsz"]} if isinstance(args, dict) and "imgsz" in args else {}
                return obj[key].float(), meta
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ModelError(
                f"model file {path} is a state dict (weights without the network): build the network in a factory "
                "and load the weights there, then set model-engine=yourpkg.module:factory"
            )
    raise ModelError(f"model file {path} unpickles to a {type(obj).__name__}, not a torch.nn.Module or checkpoint")


def load_checkpoint(path: Path, device: str, *, precision: str = "fp32") -> LoadedModel:
    """Unpickle a ``torch.save`` checkpoint (a module, or an ultralytics-style dict); only with allow-pickle."""
    import torch

    from pyinfer.backends._torch import cast, wrap_module

    try:
        obj = torch.load(str(path), map_location=device, weights_only=False)  # allow-pickle=true asked for this
    except ModuleNotFoundError as exc:
        raise DependencyError(
            f"model file {path} was pickled with classes from {exc.name!r}, which is not installed"
        ) from exc
    except Exception as exc:
        raise ModelError(f"model file {path} could not be unpickled: {type(exc).__name__}: {exc}") from exc
    module, meta = _checkpoint_module(obj, path)
    dev = torch.device(device)
    module = module.to(dev).eval()
    module, precision = cast(module, precision, dev, str(path))
    return wrap_module(
        module,
        path=str(path),
        device=dev,
        precision=precision,
        backend="torchscript",
        metadata={**meta, **protocol_metadata(module)},
        preprocess=_hook("preprocess", module),
        postprocess=_hook("postprocess", module),
    )
