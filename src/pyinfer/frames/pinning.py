"""Page-locking the host memory that upstream buffer pools recycle, so frames reach the GPU by DMA, without a CPU copy.

A host frame bound for a GPU model must be copied to the device. From ordinary (pageable) memory that copy is
either synchronous and slow, or needs a CPU copy into page-locked staging first (what pyinfer does otherwise):
a 1080p RGB frame is 6.2 MB, ~0.5 ms of one core's memcpy, and at batch 16 those copies, not the GPU, bounded
the element. Upstream elements that allocate from a buffer pool (decoders, ``videoconvert``, ``videoscale``,
an application's own ``GstBufferPool`` behind ``appsrc``) hand the same few memories over again and again. A
memory seen a second time is therefore page-locked in place once (``cudaHostRegister``) and from then on copied
to the GPU asynchronously by the copy engine, overlapped with the model.

The state lives on each GstMemory as qdata, so nothing can go stale: a freed memory takes its marks with it, and a
new memory at a recycled address starts unmarked (a frame allocated afresh for every buffer is never page-locked:
its memory is never seen twice). The registration is undone when the memory is freed: its qdata's destroy
function *is* ``cudaHostUnregister`` (a ``GDestroyNotify`` receives the data pointer, which is the registered
address), so no Python runs in whatever thread frees it.

Only a memory that is not a share of another (``parent`` NULL) and whose registration succeeds is used; a memory
that cannot be registered (file- or device-backed, already registered by someone else) is marked and left to the
staging copy. ``PYINFER_NO_PIN=1`` turns this off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

_log = logging.getLogger(__name__)

#: cudaHostRegisterPortable: the memory counts as page-locked for every CUDA context.
_REGISTER_PORTABLE = 1
#: A memory smaller than this is not worth page-locking (the staging copy of a small frame is cheap).
MIN_BYTES = 256 * 1024


class _MiniObject(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_size_t),
        ("refcount", ctypes.c_int),
        ("lockstate", ctypes.c_int),
        ("flags", ctypes.c_uint),
        ("copy", ctypes.c_void_p),
        ("dispose", ctypes.c_void_p),
        ("free", ctypes.c_void_p),
        ("priv_uint", ctypes.c_uint),
        ("priv_pointer", ctypes.c_void_p),
    ]


class _Memory(ctypes.Structure):
    """The public head of GstMemory (gst/gstmemory.h)."""

    _fields_ = [
        ("mini_object", _MiniObject),
        ("allocator", ctypes.c_void_p),
        ("parent", ctypes.c_void_p),
        ("maxsize", ctypes.c_size_t),
        ("align", ctypes.c_size_t),
        ("offset", ctypes.c_size_t),
        ("size", ctypes.c_size_t),
    ]


_PARENT_OFFSET = _Memory.parent.offset
#: qdata value of a memory that cannot be page-locked (a registered one holds its address, never 1).
_UNPINNABLE = 1


def _cudart_path() -> str | None:
    """The CUDA runtime library this process (torch) loaded, from /proc/self/maps."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(" ")[-1]
                if "/libcudart.so" in path:
                    return path
    except OSError:
        pass
    return None


class HostPinning:
    """Decides, frame by frame, whether a host frame's memory is page-locked (registering it where a pool recycles
    it). One per process (:func:`host_pinning`); thread-safe."""

    def __init__(self, cudart: ctypes.CDLL) -> None:
        from pyinfer._clib import system_library

        gst = system_library("gstreamer-1.0", hold_gil=True)  # returns at once: the GIL is kept
        glib = system_library("glib-2.0", hold_gil=True)
        self._get = gst.gst_mini_object_get_qdata
        self._get.argtypes, self._get.restype = [ctypes.c_void_p, ctypes.c_uint32], ctypes.c_void_p
        self._set = gst.gst_mini_object_set_qdata
        self._set.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p]
        self._set.restype = None
        glib.g_quark_from_string.argtypes, glib.g_quark_from_string.restype = [ctypes.c_char_p], ctypes.c_uint32
        self._seen = glib.g_quark_from_string(b"pyinfer-host-seen")
        self._pinned = glib.g_quark_from_string(b"pyinfer-host-pinned")
        self._register = cudart.cudaHostRegister  # takes milliseconds: the GIL is released around it (CDLL)
        self._register.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
        self._register.restype = ctypes.c_int
        self._last_error = cudart.cudaGetLastError
        self._last_error.restype = ctypes.c_int
        # GDestroyNotify(gpointer data) called with the registered address: cudaHostUnregister(void *ptr) itself.
        self._unregister = ctypes.cast(cudart.cudaHostUnregister, ctypes.c_void_p).value
        self._lock = threading.Lock()
        self.registered = 0  # memories page-locked so far (for tests and logs)
        self.refused = 0  # memories whose registration failed

    def pinned(self, memory: int, data: int, size: int) -> bool:
        """Whether the memory at ``memory`` (a GstMemory address, mapped at ``data``, ``size`` bytes) is page-locked
        from ``data`` on; it is registered here the second time it is seen."""
        if not memory or not data or size < MIN_BYTES:
            return False
        mark = self._get(memory, self._pinned)
        if mark:
            return mark == data  # registered at this address (system memory maps at the same place every time)
        if not self._get(memory, self._seen):
            self._set(memory, self._seen, 1, None)  # first sight: recycled if it comes back alive
            return False
        with self._lock:  # two elements (a tee) may see the same memory at once: one registers it
            mark = self._get(memory, self._pinned)
            if mark:
                return mark == data
            if ctypes.c_void_p.from_address(memory + _PARENT_OFFSET).value:
                self._set(memory, self._pinned, _UNPINNABLE, None)  # a share of another memory: not ours to lock
                return False
            err = self._register(data, size, _REGISTER_PORTABLE)
            if err:
                self._last_error()  # clear it, or torch's next launch check on this thread would raise it
                self._set(memory, self._pinned, _UNPINNABLE, None)
                self.refused += 1
                _log.debug("pyinfer: could not page-lock %d bytes at 0x%x (cudaError %d): staged instead",
                           size, data, err)  # fmt: skip
                return False
            self._set(memory, self._pinned, data, self._unregister)
            self.registered += 1
            return True


_PINNING: HostPinning | None = None
_PINNING_TRIED = False
_PINNING_LOCK = threading.Lock()


def host_pinning() -> HostPinning | None:
    """The process's :class:`HostPinning`, or None: ``PYINFER_NO_PIN=1``, or no CUDA runtime loaded (torch without
    CUDA, or CUDA not initialised yet)."""
    global _PINNING, _PINNING_TRIED
    if _PINNING_TRIED:
        return _PINNING
    with _PINNING_LOCK:
        if _PINNING_TRIED:
            return _PINNING
        _PINNING_TRIED = True
        if os.environ.get("PYINFER_NO_PIN") == "1":
            return None
        path = _cudart_path()
        if path is None:
            _log.info("pyinfer: no CUDA runtime loaded: host frames are staged, not page-locked in place")
            return None
        try:
            _PINNING = HostPinning(ctypes.CDLL(path))
        except (OSError, AttributeError) as exc:
            _log.warning("pyinfer: cannot page-lock host frames (%s): they are staged", exc)
        return _PINNING
