"""``module:callable``: a Python factory, named explicitly, that builds an ``nn.Module`` (the mature PyTorch stack).

``model-engine=mypkg.detector:build`` imports ``mypkg.detector`` (and, as Python does, its parent packages)
and ``model-engine=/path/to/detector.py:build`` runs that one file (again at every load, so a hot-swap
reads it anew, as ``postprocess=/path/file.py:function`` does); then it calls ``build()``, or
``build(device="cuda:0")`` when the factory has a ``device`` parameter (to load weights straight onto the
device, e.g. ``torch.jit.load(..., map_location=device)``: ``.to()`` cannot move frozen TorchScript
constants). Nothing else is imported: the factory is the only user code pyinfer runs, and only because a
property names it.

The protocol, all optional, read from the returned module first and then from the factory object:

- ``imgsz``: the input size, an int or ``(height, width)`` as ultralytics writes it;
- ``names``: class names, a list or ``{id: name}``;
- ``decoder``: the decoder name (e.g. ``"yolov8"``);
- ``preprocess(x)``: called on the letterboxed ``(B, 3, H, W)`` RGB input in [0, 1] (model dtype, model
  device) before the model; returns the tensor to feed it (e.g. ImageNet normalisation);
- ``postprocess(out)``: called on the model's return value; returns what the decoder reads (a tensor, or a
  tuple/list/dict of tensors whose first is the decoder's input).

torchvision detection models (Faster R-CNN, RetinaNet, FCOS, SSD...) need none of it: they get the
letterboxed frames as a list of ``(3, H, W)`` images, their input size defaults to what their
``GeneralizedRCNNTransform`` would resize to (``fixed_size``, else ``min_size`` high by ``max_size`` wide, so
it does not resize again), their names to ``weights.meta["categories"]`` when the module or the factory has
a ``weights`` attribute (a torchvision weights enum), and ``decoder=auto`` reads their list of dicts as
``torchvision``.

This module also loads pickled checkpoints (``torch.save``), behind ``allow-pickle=true`` only.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyinfer.backends.base import LoadedModel
from pyinfer.errors import ConfigError, DependencyError, ModelError

if TYPE_CHECKING:
    import torch

_IDENT = r"[A-Za-z_]\w*"
_SPEC = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")
_FILE_SPEC = re.compile(rf"^(.+\.py):({_IDENT}(?:\.{_IDENT})*)$")


def is_module_spec(text: str) -> bool:
    """True when ``text`` reads as ``package.module:callable`` or ``/path/to/file.py:callable``."""
    return _SPEC.match(text) is not None or _FILE_SPEC.match(text) is not None


def _import_file(spec: str, path: Path, prop: str = "model-engine") -> Any:
    """Run the Python file ``path`` as a fresh module (the one a ``/path/file.py:callable`` spec names)."""
    if not path.is_file():
        raise ModelError(f"{prop} {spec}: file {path} does not exist", missing=True)
    # A name of its own per file: two files called detector.py do not replace each other.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"pyinfer_model_{stem}_{digest}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ModelError(f"{prop} {spec}: cannot load {path} as Python")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        mod_spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        del sys.modules[name]
        raise DependencyError(f"{prop} {spec}: {path} imports a missing module: {exc}") from exc
    except Exception as exc:  # the user's file failed at import time
        del sys.modules[name]
        raise ModelError(f"{prop} {spec}: running {path} raised {type(exc).__name__}: {exc}") from exc
    return module


def resolve_factory(spec: str, prop: str = "model-engine") -> Callable[..., Any]:
    """Import the module a ``module:callable`` spec names and return the callable (``prop``: the property that
    named it, for the messages; pyvlm's ``text-model`` uses this too).

    Raises:
        ConfigError: ``spec`` is malformed, or names something that is not callable.
        ModelError: the module or attribute does not exist (``missing=True``), or importing it failed.
        DependencyError: the module imports a package that is not installed.
    """
    file_match = _FILE_SPEC.match(spec)
    match = _SPEC.match(spec) if file_match is None else file_match
    if match is None:
        raise ConfigError(
            f"{prop} {spec!r} is not a module:callable spec (e.g. mypkg.detector:build or "
            "/path/to/detector.py:build)" + (" nor a model file" if prop == "model-engine" else "")
        )
    modname, attr = match.groups()
    if file_match:
        return _attribute(spec, _import_file(spec, Path(modname), prop), Path(modname).name, attr, prop)
    try:
        obj: Any = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name and (modname == exc.name or modname.startswith(exc.name + ".")):
            raise ModelError(
                f"{prop} {spec}: no module named {modname!r} on the Python path; add its folder to PYTHONPATH",
                missing=True,
            ) from exc
        raise DependencyError(f"{prop} {spec}: importing {modname} failed: {exc}") from exc
    except Exception as exc:  # the user's module failed at import time
        raise ModelError(f"{prop} {spec}: importing {modname} raised {type(exc).__name__}: {exc}") from exc
    return _attribute(spec, obj, modname, attr, prop)


def _attribute(spec: str, obj: Any, modname: str, attr: str, prop: str = "model-engine") -> Callable[..., Any]:
    """The callable ``attr`` (dotted) of module ``obj``; ModelError when missing, ConfigError when not callable."""
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{prop} {spec}: {modname} has no attribute {attr!r}", missing=True)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{prop} {spec}: {attr} is a {type(obj).__name__}, not a callable factory")
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
    if "names" not in cfg:
        categories = _weights_categories(*sources)
        if categories is not None:
            cfg["names"] = categories
    transform = detector_transform(sources[0]) if sources else None
    if "imgsz" not in cfg and transform is not None:
        fixed = getattr(transform, "fixed_size", None)  # (width, height): SSD's fixed resize
        if fixed is not None:
            cfg["imgsz"] = [int(fixed[1]), int(fixed[0])]
        else:  # R-CNN/RetinaNet/FCOS resize the short side to min_size, the long one to at most max_size
            cfg["imgsz"] = [int(transform.min_size[-1]), int(transform.max_size)]
    return cfg


def detector_transform(module: object) -> Any:
    """The ``GeneralizedRCNNTransform`` of a torchvision detection model (eager or scripted), else None."""
    transform = getattr(module, "transform", None)
    kind = getattr(transform, "original_name", None) or type(transform).__name__  # scripted modules keep it
    return transform if kind == "GeneralizedRCNNTransform" else None


def image_list(x: torch.Tensor) -> list[torch.Tensor]:
    """A (B, 3, H, W) batch as the list of (3, H, W) images torchvision's detection models take."""
    return list(x.unbind(0))


def _default_preprocess(module: object) -> Callable[[torch.Tensor], Any] | None:
    """What feeds a module without a ``preprocess`` hook: torchvision detectors get a list of images."""
    return image_list if detector_transform(module) is not None else None


def _weights_categories(*sources: object) -> list[str] | None:
    """``weights.meta["categories"]`` of the first source with a torchvision weights enum as ``weights``."""
    for src in sources:
        meta = getattr(getattr(src, "weights", None), "meta", None)
        categories = meta.get("categories") if isinstance(meta, dict) else None
        if isinstance(categories, (list, tuple)) and all(isinstance(c, str) for c in categories):
            return list(categories)
    return None


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
        preprocess=_hook("preprocess", module, factory) or _default_preprocess(module),
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
