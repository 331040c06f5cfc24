"""pyinfer's Python log records into GStreamer's debug log, category ``pyinfer``.

Under gst-launch-1.0 nobody configures Python logging, so the element's choices (model, device, backend,
decoder) and its diagnostics were invisible. :func:`install` adds a handler to the ``pyinfer`` logger that
forwards each record to GStreamer's debug system, where ``GST_DEBUG=pyinfer:4`` (INFO) or ``pyinfer:5``
(DEBUG) shows it with GStreamer's usual prefix (time, thread, level, category). Python logging keeps working
as before: records still propagate to the application's handlers.

PyGObject cannot create a debug category (``GST_DEBUG_CATEGORY_INIT`` is a macro), so the category is made and
written to through ctypes (``_gst_debug_category_new``, ``gst_debug_log_literal``), as GStreamer's own
Python overrides do not offer it on 1.22. Level mapping: ERROR/CRITICAL -> ERROR, WARNING -> WARNING,
INFO -> INFO, DEBUG -> DEBUG, below -> LOG.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from ctypes import c_char_p, c_int, c_uint, c_void_p

CATEGORY = "pyinfer"
_GST_ERROR, _GST_WARNING, _GST_INFO, _GST_DEBUG, _GST_LOG = 1, 2, 4, 5, 6
_lock = threading.Lock()
_installed: logging.Handler | None = None


def _gst_level(levelno: int) -> int:
    if levelno >= logging.ERROR:
        return _GST_ERROR
    if levelno >= logging.WARNING:
        return _GST_WARNING
    if levelno >= logging.INFO:
        return _GST_INFO
    if levelno >= logging.DEBUG:
        return _GST_DEBUG
    return _GST_LOG


def _python_level(gst_threshold: int) -> int:
    """The Python level that lets through what the GStreamer threshold shows."""
    return {0: logging.CRITICAL + 10, 1: logging.ERROR, 2: logging.WARNING, 3: logging.WARNING,
            4: logging.INFO}.get(gst_threshold, logging.DEBUG)  # fmt: skip


class GstDebugHandler(logging.Handler):
    """Writes log records to the GStreamer debug category :data:`CATEGORY`."""

    def __init__(self) -> None:
        super().__init__()
        name = ctypes.util.find_library("gstreamer-1.0") or "libgstreamer-1.0.so.0"
        gst = ctypes.CDLL(name)
        new = gst._gst_debug_category_new
        new.restype, new.argtypes = c_void_p, [c_char_p, c_uint, c_char_p]
        self._cat = new(CATEGORY.encode(), 0, b"pyinfer's Python log (model, device, decoder choices; warnings)")
        self._threshold = gst.gst_debug_category_get_threshold
        self._threshold.restype, self._threshold.argtypes = c_int, [c_void_p]
        self._log = gst.gst_debug_log_literal
        self._log.restype = None
        self._log.argtypes = [c_void_p, c_int, c_char_p, c_char_p, c_int, c_void_p, c_char_p]

    def threshold(self) -> int:
        """The category's GStreamer threshold (0 none ... 9 memdump)."""
        return int(self._threshold(self._cat))

    def emit(self, record: logging.LogRecord) -> None:
        level = _gst_level(record.levelno)
        if level > self.threshold():
            return
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self._log(self._cat, level, (record.pathname or "").encode(), (record.funcName or "").encode(),
                      int(record.lineno or 0), None, text.encode("utf-8", "replace"))  # fmt: skip
        except Exception:
            self.handleError(record)


FLOATING_WARNING = "The created element should be floating"
_silenced = False


def silence_floating_warning() -> None:
    """Drop exactly GStreamer's "The created element should be floating, this is probably caused by faulty
    bindings" CRITICAL in this process; every other GStreamer message goes to GLib's default handler as before.

    gst-python 1.22 prints it for every Python element a factory creates: PyGObject has already sunk the
    floating reference when the factory checks it. The reference counts are right (the Python wrapper owns
    the one reference, a bin adds its own, and everything is freed: tests/test_gstlog.py checks it), so the
    message only alarms users. Making the element floating again would hand the wrapper's reference to the
    bin, which is how a use-after-free starts.
    """
    global _silenced
    with _lock:
        if _silenced:
            return
        from gi.repository import GLib

        def handler(domain: str, level: GLib.LogLevelFlags, message: str, data: object) -> None:
            if message.startswith(FLOATING_WARNING):
                return
            GLib.log_default_handler(domain, level, message, data)

        flags = GLib.LogLevelFlags
        GLib.log_set_handler("GStreamer", flags.LEVEL_CRITICAL | flags.FLAG_FATAL | flags.FLAG_RECURSION, handler,
                             None)  # fmt: skip
        _silenced = True


def install() -> logging.Handler | None:
    """Forward the ``pyinfer`` logger to GStreamer's debug log (once per process); None if not possible.

    Call after ``Gst.init``. The logger's level is lowered to what ``GST_DEBUG`` asks for, unless the
    application set one.
    """
    global _installed
    with _lock:
        if _installed is not None:
            return _installed
        try:
            handler = GstDebugHandler()
        except (OSError, AttributeError):
            return None
        logger = logging.getLogger("pyinfer")
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            want = _python_level(handler.threshold())
            if want < logging.getLogger().getEffectiveLevel():
                logger.setLevel(want)
        _installed = handler
        return handler
