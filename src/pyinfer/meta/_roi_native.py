"""Loader of the native helper of :mod:`pyinfer.meta.roi`: ``roi_native.c``, built by setup.py as an extension of
the package (``roi_native.cpython-311-x86_64-linux-gnu.so``, found by :func:`pyinfer._clib.library_path`) and
loaded with ctypes; not named ``_roi_native``, which Python would import in place of this module.

``read(buf_ptr, scratch)`` reads a buffer's detection ROI metas (as :meth:`pyinfer.meta._roi_c.RoiC.select`
selects them) in one C call into reused numpy arrays (:class:`Scratch`); ``set_tracks`` adds the ``tracking``
param to many metas in one call. :func:`load` returns ``None`` where the library is missing or cannot be
loaded, or where its ABI answers (``pyinfer_roi_abi``: interface version, pointer size, the layout of
``GstVideoRegionOfInterestMeta`` that :mod:`pyinfer.meta._roi_c` assumes) differ from :data:`ABI`;
:mod:`pyinfer.meta.roi` then uses its ctypes path. tests/meta/test_roi_native.py compares the two paths.

Threads: the C functions keep no state between calls (they write only into the arrays they are given), and
each read holds a :class:`Scratch` of its own, taken from a free list (:meth:`RoiNative.acquire`), grown by
that read alone and given back when done. Two streaming threads sharing one set of arrays would read each
other's detections, and a thread growing them would free the arrays another thread's C call is writing into.
(A free list, not ``threading.local``: GStreamer's streaming threads enter Python afresh for each buffer,
which empties their thread-locals every time.)
"""

from __future__ import annotations

import ctypes
import logging
import threading
from ctypes import c_int, c_int64, c_void_p
from pathlib import Path

import numpy as np

from pyinfer._clib import library_path, load_helper
from pyinfer.meta import _roi_c

LIB_PATH = library_path(Path(__file__).parent, "roi_native")
F_ROT, F_TRACK, F_PRED, F_UID, F_MODEL_BAD = 1, 2, 4, 8, 16
#: What ``pyinfer_roi_abi(0, 1, ...)`` must answer: the interface version (``PYINFER_ROI_ABI``, with the ``F_*``
#: flags and the signatures below), the pointer size, ``sizeof(GstMeta)``, the offsets of the ROI meta's ``id``
#: and ``params`` and its size, as :mod:`pyinfer.meta._roi_c` reads them.
ABI = (1, 8, _roi_c._ROI_OFFSET, _roi_c._ID_OFFSET, _roi_c._ROI_OFFSET + _roi_c._ROI.size - 8,
       _roi_c._ROI_OFFSET + _roi_c._ROI.size)  # fmt: skip
INITIAL_CAP = 256


class Scratch:
    """Output arrays of ``pyinfer_roi_read``, for one read at a time.

    ``ptrs`` (meta pointers, uint64), ``box`` ((cap, 5) float64: left, top, width, height, confidence), ``rot``
    ((cap, 5) float64: the rotated box), ``cls``, ``uid``, ``model`` (int32), ``track`` (uint64), ``flags``
    (uint8, ``F_*``) and ``labels`` (``const char *`` of each label, as uint64).
    """

    def __init__(self, cap: int = INITIAL_CAP) -> None:
        self.grow(cap)

    def grow(self, cap: int) -> None:
        self.cap = cap
        self.ptrs = np.zeros(cap, np.uint64)
        self.box = np.zeros((cap, 5), np.float64)
        self.rot = np.zeros((cap, 5), np.float64)
        self.cls = np.zeros(cap, np.int32)
        self.uid = np.zeros(cap, np.int32)
        self.model = np.zeros(cap, np.int32)
        self.track = np.zeros(cap, np.uint64)
        self.flags = np.zeros(cap, np.uint8)
        self.labels = np.zeros(cap, np.uint64)
        arrays = (self.ptrs, self.box, self.rot, self.cls, self.uid, self.model, self.track, self.flags, self.labels)
        self.args = tuple(a.ctypes.data for a in arrays)


class RoiNative:
    """The two C functions; one instance per process (see :func:`load`), with a free list of :class:`Scratch`."""

    def __init__(self, path: Path = LIB_PATH) -> None:
        lib = ctypes.PyDLL(str(path))  # short calls: the GIL stays held (_clib.system_library)
        self.abi = lib.pyinfer_roi_abi
        self.abi.restype = c_int64
        self.abi.argtypes = [c_int]
        self._read = lib.pyinfer_roi_read
        self._read.restype = c_int
        self._read.argtypes = [c_void_p, c_int, *[c_void_p] * 9]
        self._set = lib.pyinfer_roi_set_tracks
        self._set.restype = None
        self._set.argtypes = [c_int, c_void_p, c_void_p, c_int]
        self._free: list[Scratch] = []  # scratch no read holds; list.pop and list.append are atomic

    def acquire(self) -> Scratch:
        """Arrays for one read, held by no other read until :meth:`release` gives them back."""
        try:
            return self._free.pop()
        except IndexError:
            return Scratch()

    def release(self, scratch: Scratch) -> None:
        """Give back arrays from :meth:`acquire` (once), for the next read on any thread."""
        self._free.append(scratch)

    def read(self, buf: int, out: Scratch) -> int:
        """Fill ``out`` (from :meth:`acquire`, growing it if needed) from buffer pointer ``buf``: the count, or
        -1 where Python must read the buffer."""
        n = self._read(buf, out.cap, *out.args)
        if n < -1:
            out.grow(max(-2 - n, 2 * out.cap))
            n = self._read(buf, out.cap, *out.args)
        return n

    def set_tracks(self, metas: np.ndarray, track_ids: np.ndarray, predicted: bool) -> None:
        """Add ``tracking`` {track-id, predicted} to each meta (uint64 pointers) with the matching track id."""
        metas = np.ascontiguousarray(metas, np.uint64)
        track_ids = np.ascontiguousarray(track_ids, np.uint64)
        assert len(metas) == len(track_ids)
        self._set(len(metas), metas.ctypes.data, track_ids.ctypes.data, int(bool(predicted)))


_STATE: list = []  # [RoiNative | None] once loaded
_LOAD_LOCK = threading.Lock()
_log = logging.getLogger(__name__)


def load() -> RoiNative | None:
    """The native helper, or ``None`` where it is not built, not loadable or fails its ABI check (logged), or
    ``PYINFER_NO_NATIVE=1``."""
    if not _STATE:
        with _LOAD_LOCK:
            if not _STATE:
                _STATE.append(load_helper(RoiNative, LIB_PATH, ABI, "native metadata helper", "ctypes path instead"))
    return _STATE[0]
