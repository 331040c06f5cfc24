"""Loading a text model named by a ``text-model`` property: ``package.module:factory`` or ``/path/file.py:factory``.

Only the module the property names is imported (a file path is run as a fresh module); the factory is then
called once, with no argument, or with ``model-config`` as its one argument when that is set. Nothing is
unpickled here; whatever the factory loads (a Hugging Face model from a local folder, say) is its business.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyinfer.errors import ConfigError, DependencyError, ModelError

_IDENT = r"[A-Za-z_]\w*"
_SPEC = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")
_FILE_SPEC = re.compile(rf"^(.+\.py):({_IDENT}(?:\.{_IDENT})*)$")


def load_text_model(spec: str, config: str = "") -> Callable[[list, str], Any]:
    """The model callable the factory named by ``spec`` returns.

    Raises:
        ConfigError: ``spec`` is empty or malformed, or it (or what it returns) is not callable.
        ModelError: the module, file or attribute does not exist (``missing=True``), or the module or the
            factory raised.
        DependencyError: the module imports a package that is not installed.
    """
    factory = resolve(spec)
    try:
        model = factory(config) if config else factory()
    except Exception as exc:  # user code
        raise ModelError(f"text-model {spec}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not callable(model):
        raise ConfigError(
            f"text-model {spec}: the factory returned a {type(model).__name__}, not a callable "
            "model(images, prompt) -> list"
        )
    return model


def resolve(spec: str) -> Callable[..., Any]:
    """Import what ``spec`` names and return the factory (see :func:`load_text_model` for the errors)."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("text-model is not set: name a factory, e.g. mypkg.captioner:load or /path/vlm.py:load")
    file_match = _FILE_SPEC.match(spec)
    match = file_match or _SPEC.match(spec)
    if match is None:
        raise ConfigError(f"text-model {spec!r} is not package.module:factory nor /path/file.py:factory")
    modname, attr = match.groups()
    module = _import_file(spec, Path(modname)) if file_match else _import(spec, modname)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"text-model {spec}: {modname} has no attribute {attr!r}", missing=True)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"text-model {spec}: {attr} is a {type(obj).__name__}, not a callable factory")
    return obj


def _import(spec: str, modname: str) -> Any:
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name and (modname == exc.name or modname.startswith(exc.name + ".")):
            raise ModelError(
                f"text-model {spec}: no module named {modname!r} on the Python path; add its folder to PYTHONPATH",
                missing=True,
            ) from exc
        raise DependencyError(f"text-model {spec}: importing {modname} failed: {exc}") from exc
    except Exception as exc:  # the user's module failed at import time
        raise ModelError(f"text-model {spec}: importing {modname} raised {type(exc).__name__}: {exc}") from exc


def _import_file(spec: str, path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"text-model {spec}: file {path} does not exist", missing=True)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"pyinfer_text_{stem}_{digest}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ModelError(f"text-model {spec}: cannot load {path} as Python")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    try:
        mod_spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        del sys.modules[name]
        raise DependencyError(f"text-model {spec}: {path} imports a missing module: {exc}") from exc
    except Exception as exc:
        del sys.modules[name]
        raise ModelError(f"text-model {spec}: running {path} raised {type(exc).__name__}: {exc}") from exc
    return module
