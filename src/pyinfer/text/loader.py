"""Loading a text model named by a ``text-model`` property: ``package.module:factory`` or ``/path/file.py:factory``.

Only the module the property names is imported (a file path is run as a fresh module); the factory is then
called once, with no argument, or with ``model-config`` as its one argument when that is set. Nothing is
unpickled here; whatever the factory loads (a Hugging Face model from a local folder, say) is its business.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyinfer.errors import ConfigError, ModelError


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
    """Import what ``spec`` names and return the factory (see :func:`load_text_model` for the errors): the same
    resolution as ``model-engine=module:callable`` (pyinfer.backends.module), named ``text-model`` in messages."""
    from pyinfer.backends.module import resolve_factory

    spec = spec.strip()
    if not spec:
        raise ConfigError("text-model is not set: name a factory, e.g. mypkg.captioner:load or /path/vlm.py:load")
    return resolve_factory(spec, prop="text-model")
