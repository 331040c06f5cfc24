"""Loader of the native helper of :mod:`pyinfer.meta.analytics`: ``analytics_native.c``, built by setup.py as an
extension of the package where GStreamer >= 1.24 has its analytics development files
(``analytics_native.cpython-313-x86_64-linux-gnu.so``, found by :func:`pyinfer._clib.library_path`) and loaded
with ctypes; not named ``_analytics_native``, which Python would import in place of this module.

``read(buf_ptr, det_type, tracking, scratch)`` reads every object-detection Mtd of a buffer, with its related
pyinfer, classification and tracking Mtds, in one C call into reused numpy arrays (:class:`Scratch`);
``set_tracks`` adds the tracking Mtds of many objects in one call. :func:`load` returns ``None`` where the
library is missing or cannot be loaded, or where its ABI answers (``pyinfer_an_abi``: interface version,
pointer size, the sizes of ``GstAnalyticsMtd``, ``GstAnalyticsMtdImpl`` and the pyinfer record, byte order)
differ from :data:`ABI`; :mod:`pyinfer.meta.analytics` then uses its ctypes path (and also where the helper's
oriented-box support, ``features()``, differs from the library's). tests/meta/test_analytics_native.py compares
the two paths.

Threads: as :mod:`pyinfer.meta._roi_native`: the C functions keep no state between calls, and each read holds a
:class:`Scratch` of its own from a free list (not ``threading.local``: GStreamer's streaming threads enter
Python afresh for each buffer).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from ctypes import c_int, c_int64, c_uint64, c_void_p
from pathlib import Path

import numpy as np

from pyinfer._clib import library_path, load_helper

LIB_PATH = library_path(Path(__file__).parent, "analytics_native")
F_RECORD, F_TRACK, F_BAD = 1, 2, 4
#: The pyinfer detection Mtd's fixed fields as the C side copies them (analytics.DETECTION_STRUCT).
RECORD_DTYPE = np.dtype(
    [("class_id", "<i4"), ("unique_id", "<i4"), ("model_id", "<i4"), ("flags", "<u4"), ("index", "<i4"),
     ("od_id", "<u4"), ("frames_since_update", "<u4"), ("n_topk", "<u4"), ("left", "<f8"), ("top", "<f8"),
     ("width", "<f8"), ("height", "<f8"), ("rotated_cx", "<f8"), ("rotated_cy", "<f8"), ("rotated_width", "<f8"),
     ("rotated_height", "<f8"), ("angle_rad", "<f8")]
)  # fmt: skip
_MTD_IMPL_SIZE = 8 + 8 + 20 * 8  # analytics._MtdImpl: name, transform, 20 reserved pointers
#: What ``pyinfer_an_abi(0, 1, ...)`` must answer: the interface version (``PYINFER_AN_ABI``, with the ``F_*``
#: flags and the signatures below), the pointer size, ``sizeof(GstAnalyticsMtd)``, ``sizeof(GstAnalyticsMtdImpl)``,
#: the record size, and 1 for a little-endian machine (the record's byte order).
ABI = (1, 8, 16, _MTD_IMPL_SIZE, RECORD_DTYPE.itemsize, 1)
INITIAL_CAP = 256


class Scratch:
    """Output arrays of ``pyinfer_an_read``, for one read at a time.

    ``ids`` (OD Mtd ids, uint32), ``loc`` ((cap, 4) int32: x, y, w, h), ``rconf`` ((cap, 2) float32: angle,
    confidence), ``quark`` (label quark, uint32), ``rec`` (:data:`RECORD_DTYPE`), ``track`` (uint64), ``flags``
    (uint8, ``F_*``), ``box`` ((cap, 4) float64: the box the reader keeps, x1 y1 x2 y2) and ``rot`` ((cap, 5)
    float64: the rotated box, NaN where none).
    """

    def __init__(self, cap: int = INITIAL_CAP) -> None:
        self.grow(cap)

    def grow(self, cap: int) -> None:
        self.cap = cap
        self.ids = np.zeros(cap, np.uint32)
        self.loc = np.zeros((cap, 4), np.int32)
        self.rconf = np.zeros((cap, 2), np.float32)
        self.quark = np.zeros(cap, np.uint32)
        self.rec = np.zeros(cap, RECORD_DTYPE)
        self.track = np.zeros(cap, np.uint64)
        self.flags = np.zeros(cap, np.uint8)
        self.box = np.zeros((cap, 4), np.float64)
        self.rot = np.zeros((cap, 5), np.float64)
        arrays = (self.ids, self.loc, self.rconf, self.quark, self.rec, self.track, self.flags, self.box, self.rot)
        self.args = tuple(a.ctypes.data for a in arrays)


class AnalyticsNative:
    """The C functions; one instance per process (see :func:`load`), with a free list of :class:`Scratch`."""

    def __init__(self, path: Path = LIB_PATH) -> None:
        lib = ctypes.PyDLL(str(path))  # short calls: the GIL stays held (_clib.system_library)
        self.abi = lib.pyinfer_an_abi
        self.abi.restype = c_int64
        self.abi.argtypes = [c_int]
        features = lib.pyinfer_an_features
        features.restype = c_int
        features.argtypes = []
        self._features = features
        self._read = lib.pyinfer_an_read
        self._read.restype = c_int
        self._read.argtypes = [c_void_p, c_void_p, c_int, c_int, *[c_void_p] * 9]
        self._set = lib.pyinfer_an_set_tracks
        self._set.restype = c_int
        self._set.argtypes = [c_void_p, c_int, c_void_p, c_void_p, c_void_p, c_uint64]
        self._free: list[Scratch] = []  # scratch no read holds; list.pop and list.append are atomic

    @property
    def oriented(self) -> bool:
        """This build reads oriented OD Mtds (built against GStreamer >= 1.26)."""
        return bool(self._features())

    def acquire(self) -> Scratch:
        """Arrays for one read, held by no other read until :meth:`release` gives them back."""
        try:
            return self._free.pop()
        except IndexError:
            return Scratch()

    def release(self, scratch: Scratch) -> None:
        """Give back arrays from :meth:`acquire` (once), for the next read on any thread."""
        self._free.append(scratch)

    def read(self, buf: int, det_type: int, tracking: bool, out: Scratch) -> int:
        """Fill ``out`` (from :meth:`acquire`, growing it if needed) from buffer pointer ``buf``: the count, or -1
        where the buffer has no relation meta."""
        n = self._read(buf, det_type, int(tracking), out.cap, *out.args)
        if n < -1:
            out.grow(max(-2 - n, 2 * out.cap))
            n = self._read(buf, det_type, int(tracking), out.cap, *out.args)
        return n

    def set_tracks(self, meta: int, od_ids: np.ndarray, track_ids: np.ndarray, first_seen: np.ndarray,
                   pts: int) -> int:  # fmt: skip
        """Add a tracking Mtd to each OD Mtd id (uint32 arrays, uint64 ids and first-seen): how many were added."""
        assert od_ids.dtype == np.uint32 and track_ids.dtype == np.uint64 and first_seen.dtype == np.uint64
        n = min(len(od_ids), len(track_ids), len(first_seen))
        return int(self._set(meta, n, od_ids.ctypes.data, track_ids.ctypes.data, first_seen.ctypes.data, pts))


_STATE: list = []  # [AnalyticsNative | None] once loaded
_LOAD_LOCK = threading.Lock()
_log = logging.getLogger(__name__)


def load() -> AnalyticsNative | None:
    """The native helper, or ``None`` where it is not built, not loadable or fails its ABI check (logged), or
    ``PYINFER_NO_NATIVE=1``."""
    if not _STATE:
        with _LOAD_LOCK:
            if not _STATE:
                _STATE.append(
                    load_helper(AnalyticsNative, LIB_PATH, ABI, "native analytics helper", "ctypes path instead")
                )
    return _STATE[0]
