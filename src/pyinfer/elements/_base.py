"""Helpers every element shares: posting errors and warnings, and buffer writability."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator

from pyinfer._gi import GObject, Gst
from pyinfer.elements._enums import enum_default, is_enum, nick_of


def _post(element: Gst.Element, kind: Gst.MessageType, code: GObject.GEnum, text: str, debug: str) -> None:
    caller = sys._getframe(2)
    element.message_full(
        kind, type(code).quark(), code, text, debug,
        caller.f_code.co_filename, caller.f_code.co_name, caller.f_lineno,
    )  # fmt: skip


def post_error(element: Gst.Element, code: GObject.GEnum, text: str, debug: str = "") -> None:
    """Post an ERROR on the bus with a GStreamer domain/code, the user-facing text and debug details."""
    Gst.error(f"{element.get_name()}: {text}")
    _post(element, Gst.MessageType.ERROR, code, text, debug)


def post_warning(element: Gst.Element, code: GObject.GEnum, text: str, debug: str = "") -> None:
    """Post a WARNING on the bus (same arguments as :func:`post_error`)."""
    Gst.warning(f"{element.get_name()}: {text}")
    _post(element, Gst.MessageType.WARNING, code, text, debug)


def format_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` as text, for the debug part of a bus message."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def error_debug(exc: BaseException) -> str:
    """The debug part of a bus message about ``exc``: a traceback only where one helps.

    A user's error (a setting, a file, a missing package: ConfigError, ModelError, DependencyError, and any
    pyinfer error with no other exception behind it) is said in full by its message; its debug text is one line
    (the error's own ``detail``, or its type, where it was raised and the exception behind it). A failure in code
    (an exception that is not pyinfer's, or a pyinfer error raised from one: a model or hook raising) keeps
    the whole traceback.
    """
    from pyinfer.errors import ConfigError, DependencyError, ModelError, PyInferError

    if not isinstance(exc, PyInferError):
        return format_exception(exc)
    if exc.detail:
        return exc.detail
    cause = exc.__cause__
    user = isinstance(exc, (ConfigError, ModelError, DependencyError))
    if cause is not None and not isinstance(cause, PyInferError) and not user:
        return format_exception(exc)
    text = type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})"
    if cause is not None:
        text += f", from {type(cause).__name__}: {_last_line(cause)}"
    return text + " (a user error: no traceback)"


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def writable(buf: Gst.Buffer) -> Iterator[Gst.Buffer]:
    """Let metadata be added to a buffer the element owns.

    PyGObject takes its own reference on every ``Gst.Buffer`` it wraps, so a buffer that BaseTransform has
    made writable for ``transform_ip`` (refcount 1) shows refcount 2 in Python and ``gst_buffer_add_meta``
    refuses it. Only call this on buffers the element owns: the one passed to ``do_transform_ip`` of an
    in-place, non-passthrough transform, or one it holds for batching. Extra references are hidden for the
    duration of the block and put back after.
    """
    mini = buf.mini_object
    refcount = mini.refcount
    if refcount > 1:
        mini.refcount = 1
    try:
        yield buf
    finally:
        if refcount > 1:
            mini.refcount = refcount


def describe_exception(exc: BaseException) -> str:
    """A failure as the bus shows it: its text, or its type when it has none (SystemExit(0), a bare raise).

    pyinfer's own errors are already sentences; others are prefixed with their type.
    """
    from pyinfer.errors import PyInferError

    if isinstance(exc, SystemExit):
        return f"user code called exit({exc.code!r}) (SystemExit); pyinfer contained it"
    text = str(exc)
    if not text:
        return type(exc).__name__
    return text if isinstance(exc, PyInferError) else f"{type(exc).__name__}: {text}"


def is_running(element: Gst.Element) -> bool:
    """Whether the element has started (PAUSED or PLAYING, or on its way there)."""
    if getattr(element, "_started", False):
        return True
    return element.current_state > Gst.State.READY


def ready_property(name: str, **spec: object) -> GObject.Property:
    """A property that may change in the NULL and READY states only (``Gst.PARAM_MUTABLE_READY``).

    GStreamer leaves enforcing the mutability flags to the element: a change asked for while the element
    runs is refused with a WARNING on the bus naming the property, and the value stays. ``spec`` is what
    ``GObject.Property`` takes (type, default, minimum, maximum, nick, blurb); the value is kept in
    ``_<name with underscores>``. A GEnum ``type`` (:mod:`pyinfer.elements._enums`) takes its ``default`` as a
    nick, and the value is kept as its nick too.
    """
    attr = "_" + name.replace("-", "_")
    default = spec.get("default")
    choice = is_enum(spec.get("type"))
    if choice:
        spec["default"] = enum_default(spec["type"], str(default))

    def getter(self: Gst.Element) -> object:
        return getattr(self, attr, default)

    def setter(self: Gst.Element, value: object) -> None:
        if choice:
            value = nick_of(value)
        if is_running(self):
            post_warning(
                self, Gst.CoreError.STATE_CHANGE,
                f"{name} can only change in the NULL or READY state: it stays {getter(self)!r} "
                f"(asked for {value!r} while {self.current_state.value_nick.upper()})",
            )  # fmt: skip
            return
        setattr(self, attr, value)

    flags = GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_READY
    return GObject.Property(getter=getter, setter=setter, flags=flags, **spec)


def _process_setup() -> None:
    """Once GStreamer is up: pyinfer's Python log into GStreamer's debug log (GST_DEBUG=pyinfer:5), and
    gst-python 1.22's harmless "element should be floating" CRITICAL silenced (see pyinfer._gstlog)."""
    from pyinfer import _gstlog

    _gstlog.silence_floating_warning()
    if Gst.is_initialized():
        _gstlog.install()


_process_setup()  # every element module imports this one: gst-launch-1.0 (loader shims) and pyinfer.register()
