"""The one place that picks GObject-introspection versions and imports GStreamer bindings.

It also hides the differences between the gst-python versions pyinfer runs on (1.22 to 1.26): use
:func:`structure` to read a caps', event's, query's, message's or context's structure, and :func:`copy_buffer`
to copy a buffer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator

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

__all__ = ["GLib", "GObject", "Gst", "GstBase", "GstVideo", "copy_buffer", "ensure_init", "gst_version", "structure"]


def ensure_init() -> None:
    """Initialise GStreamer once (a no-op inside gst-launch-1.0 or an app that already did)."""
    if not Gst.is_initialized():
        Gst.init(None)


def gst_version() -> tuple[int, int, int]:
    """The running GStreamer version as (major, minor, micro)."""
    major, minor, micro, _nano = Gst.version()
    return major, minor, micro


@contextlib.contextmanager
def structure(
    owner: Gst.Caps | Gst.Event | Gst.Query | Gst.Message | Gst.Context, index: int = 0
) -> Iterator[Gst.Structure | None]:
    """The structure of ``owner`` (for caps, the one at ``index``), valid inside the ``with`` block.

    gst-python 1.26 returns a context manager from ``Caps/Event/Query/Context.get_structure()`` (the structure
    inside it belongs to its owner, so it may only be used in a ``with`` block); 1.22 returns the structure
    itself (a copy). This yields a ``Gst.Structure`` on both, or None where the owner has none (an event
    without fields, a message without a structure)::

        with structure(caps) as s:
            width = s.get_value("width")
    """
    got = owner.get_structure(index) if isinstance(owner, Gst.Caps) else owner.get_structure()
    if hasattr(got, "__enter__"):
        with got as inner:
            yield inner
    else:
        yield got


# gst_buffer_copy()'s flags (GST_BUFFER_COPY_ALL is a C macro that introspection does not export).
_COPY_ALL = (
    Gst.BufferCopyFlags.FLAGS | Gst.BufferCopyFlags.TIMESTAMPS | Gst.BufferCopyFlags.META | Gst.BufferCopyFlags.MEMORY
)


def copy_buffer(buf: Gst.Buffer) -> Gst.Buffer:
    """A shallow copy of ``buf`` (memory shared, flags, timestamps and metadata copied) that the caller owns.

    Use it instead of ``buf.copy()``: through PyGObject, ``Gst.Buffer.copy()`` returns a buffer with one
    reference too many (it is never freed, and gst-python 1.26 refuses to set its timestamps because it is not
    writable). ``copy_region`` over the whole buffer does what ``gst_buffer_copy()`` does, with the right count.
    """
    return buf.copy_region(_COPY_ALL, 0, buf.get_size())
