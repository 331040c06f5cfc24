"""Library exceptions. No GStreamer here: elements translate these into bus messages."""

from __future__ import annotations


class PyInferError(Exception):
    """Base class of every error pyinfer raises on purpose.

    ``missing`` is True when the cause is a file that does not exist (elements report it as NOT_FOUND).
    ``detail`` is what the debug text of the bus message says instead of the default (see
    ``pyinfer.elements._base.error_debug``): a short line, such as the runtime's own error a sentence translates.
    """

    def __init__(self, message: str, *, missing: bool = False, detail: str = "") -> None:
        super().__init__(message)
        self.missing = missing
        self.detail = detail


class ConfigError(PyInferError):
    """A setting or a combination of settings cannot work (bad property value, bad labels file)."""


class ModelError(PyInferError):
    """The model file is missing, unreadable or not a model this backend can load."""


class DependencyError(PyInferError):
    """A runtime the settings need (torch, onnxruntime, ...) cannot be imported."""


class DecodeError(PyInferError):
    """Model outputs do not fit the decoder (shape, count, dtype)."""
