"""One CUDA context for GStreamer's CUDA elements and torch: the device's primary context.

GStreamer's CUDA elements (``nvh264dec`` and the other NVDEC decoders, ``cudaupload``, ``cudadownload``) look for
a ``gst.cuda.context`` when they open: a context query to their peers, then a need-context message on the bus;
when nobody answers, they create a context of their own (``cuCtxCreate``). torch runs in the device's primary
context. Kernels of two contexts never run at the same time on one GPU: the GPU time-slices between them, so the
decoder's per-frame work (mapping the decoded surface, copying it out) waits behind the model's kernels, and the
model's behind the decoder's.

This module wraps the primary context in a ``GstCudaContext`` (``gst_cuda_context_new_wrapped``, GStreamer >=
1.22) and answers with it, so that the decoders and the model share one context, as they do under DeepStream.
Everything goes through ctypes (libcuda, libgstcuda-1.0): nothing is imported that the plugin scanner would have
to load. Where either library is missing, there is no CUDA device, or the call fails, nothing is answered and
GStreamer does what it did before (logged once).
"""

from __future__ import annotations

import ctypes
import logging
import threading

from pyinfer._clib import system_library

_log = logging.getLogger(__name__)

#: GST_CUDA_CONTEXT_TYPE (gst/cuda/gstcudacontext.h).
CONTEXT_TYPE = "gst.cuda.context"

_lock = threading.Lock()
_contexts: dict[int, int] = {}  # device index -> GstCudaContext* (one reference, held for the process's life)
_failed: dict[int, str] = {}  # device index -> why no context could be made (logged once)
_libs: tuple[ctypes.CDLL, ctypes.CDLL, ctypes.CDLL] | None = None
#: How many context queries (``query``) and need-context messages (``bus``) were answered, for diagnostics.
ANSWERED = {"query": 0, "bus": 0}


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL, ctypes.CDLL]:
    global _libs
    if _libs is None:
        cuda = ctypes.CDLL("libcuda.so.1")
        cuda.cuInit.argtypes = [ctypes.c_uint]
        cuda.cuDeviceGet.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        cuda.cuDevicePrimaryCtxRetain.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        gstcuda = system_library("gstcuda-1.0")
        gstcuda.gst_cuda_context_new_wrapped.argtypes = [ctypes.c_void_p, ctypes.c_int]
        gstcuda.gst_cuda_context_new_wrapped.restype = ctypes.c_void_p
        gstcuda.gst_cuda_handle_context_query.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        gstcuda.gst_cuda_handle_context_query.restype = ctypes.c_int
        gstcuda.gst_context_new_cuda_context.argtypes = [ctypes.c_void_p]
        gstcuda.gst_context_new_cuda_context.restype = ctypes.c_void_p
        gstcuda.gst_cuda_context_get_handle.argtypes = [ctypes.c_void_p]
        gstcuda.gst_cuda_context_get_handle.restype = ctypes.c_void_p
        gst = system_library("gstreamer-1.0")
        gst.gst_element_set_context.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        gst.gst_element_set_context.restype = None
        gst.gst_mini_object_unref.argtypes = [ctypes.c_void_p]
        gst.gst_mini_object_unref.restype = None
        _libs = (cuda, gstcuda, gst)
    return _libs


def device_index(device: str) -> int | None:
    """The CUDA device index a ``device`` property names (``cuda`` and ``auto``: 0, ``cuda:N``: N), or None for
    any other device (``cpu``)."""
    device = device.strip().lower()
    if device in ("cuda", "auto", ""):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def primary_context(index: int) -> int | None:
    """The address of a ``GstCudaContext`` that wraps device ``index``'s primary context (the one torch uses),
    made once per process; None where it cannot be made (no CUDA driver, no libgstcuda-1.0, no such device)."""
    with _lock:
        if index in _contexts:
            return _contexts[index]
        if index in _failed:
            return None
        try:
            cuda, gstcuda, _ = _load()
            dev, ctx = ctypes.c_int(), ctypes.c_void_p()
            for name, rc in (("cuInit", cuda.cuInit(0)), ("cuDeviceGet", cuda.cuDeviceGet(ctypes.byref(dev), index))):
                if rc != 0:
                    raise OSError(f"{name} returned CUDA error {rc}")
            rc = cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev.value)
            if rc != 0 or not ctx.value:
                raise OSError(f"cuDevicePrimaryCtxRetain returned CUDA error {rc}")
            wrapped = gstcuda.gst_cuda_context_new_wrapped(ctx.value, dev.value)
            if not wrapped:
                raise OSError("gst_cuda_context_new_wrapped returned NULL")
        except (OSError, AttributeError) as exc:
            _failed[index] = str(exc)
            _log.info("CUDA context of device %d not shared with GStreamer: %s", index, exc)
            return None
        _contexts[index] = wrapped
        _log.debug("CUDA device %d: GStreamer's CUDA elements get the primary context %#x", index, ctx.value)
        return wrapped


def primary_handle(index: int) -> int | None:
    """The ``CUcontext`` that device ``index``'s shared ``GstCudaContext`` wraps, or None."""
    ctx = primary_context(index)
    if ctx is None:
        return None
    _, gstcuda, _ = _load()
    return gstcuda.gst_cuda_context_get_handle(ctx)


def element_handle(element) -> int | None:
    """The ``CUcontext`` a CUDA element (a decoder, after it opened) works in, from a ``gst.cuda.context`` query
    on its source pad; None where it answers none. For checks and diagnostics."""
    from pyinfer._gi import Gst, structure

    pad = element.get_static_pad("src")
    query = Gst.Query.new_context(CONTEXT_TYPE)
    if pad is None or not pad.query(query):
        return None
    context = query.parse_context()
    if context is None:
        return None
    _, gstcuda, _ = _load()
    with structure(context) as fields:
        for field in (CONTEXT_TYPE, "cuda-context"):  # the field's name in GStreamer 1.22 and its later spelling
            if fields is not None and fields.has_field(field):
                value = fields.get_value(field)
                return gstcuda.gst_cuda_context_get_handle(hash(value)) if value is not None else None
    return None


def answer_query(element, query, index: int) -> bool:
    """Answer a context query of type ``gst.cuda.context`` for ``element`` with device ``index``'s primary
    context. False (the query untouched) for any other query type, or where that context cannot be made."""
    ok, kind = query.parse_context_type()
    if not ok or kind != CONTEXT_TYPE:
        return False
    ctx = primary_context(index)
    if ctx is None:
        return False
    _, gstcuda, _ = _load()
    answered = bool(gstcuda.gst_cuda_handle_context_query(hash(element), hash(query), ctx))
    ANSWERED["query"] += answered
    return answered


def give_context(element, index: int) -> bool:
    """Set device ``index``'s primary context on ``element`` (the source of a need-context message, from a bus
    sync handler); False where that context cannot be made."""
    ctx = primary_context(index)
    if ctx is None:
        return False
    _, gstcuda, gst = _load()
    context = gstcuda.gst_context_new_cuda_context(ctx)
    if not context:
        return False
    gst.gst_element_set_context(hash(element), context)
    gst.gst_mini_object_unref(context)
    ANSWERED["bus"] += 1
    return True


def share_on_bus(bus, index: int = 0) -> None:
    """A sync handler on ``bus`` that answers every element's need-context for ``gst.cuda.context`` with device
    ``index``'s primary context: for an application whose pipeline has CUDA elements and no pyinfer (pyinfer
    answers the context query itself)."""
    from pyinfer._gi import Gst

    def handler(_bus, msg):
        if msg.type == Gst.MessageType.NEED_CONTEXT:
            ok, kind = msg.parse_context_type()
            if ok and kind == CONTEXT_TYPE and msg.src is not None:
                give_context(msg.src, index)
        return Gst.BusSyncReply.PASS

    bus.set_sync_handler(handler)
