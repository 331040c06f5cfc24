"""The one place that picks GObject-introspection versions and imports GStreamer bindings."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import gi


def _preload_libgcc_s() -> None:
    """Put GCC's unwinder in the global symbol scope before GStreamer loads libunwind.

    libgstreamer links libunwind.so.8, which exports the same ``_Unwind_*`` symbols as libgcc_s. Once
    GStreamer is loaded with global symbols, C++ code loaded later (torch) can bind ``_Unwind_Resume`` to
    libunwind while ``__cxa_throw`` uses libgcc_s, and the first C++ exception (a corrupt model file, a shape
    error inside a TorchScript model) aborts the process. Loading libgcc_s globally first keeps every
    binding on one unwinder. For gst-launch-1.0, ``pyinfer env`` exports LD_PRELOAD for the same reason.
    """
    name = ctypes.util.find_library("gcc_s") or "libgcc_s.so.1"
    with contextlib.suppress(OSError):  # not a glibc/GCC system: nothing to align
        ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)


_preload_libgcc_s()
gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")

from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

__all__ = ["GLib", "GObject", "Gst", "GstBase", "GstVideo", "ensure_init", "gst_version"]


def ensure_init() -> None:
    """Initialise GStreamer once (a no-op inside gst-launch-1.0 or an app that already did)."""
    if not Gst.is_initialized():
        Gst.init(None)


def gst_version() -> tuple[int, int, int]:
    """The running GStreamer version as (major, minor, micro)."""
    major, minor, micro, _nano = Gst.version()
    return major, minor, micro
