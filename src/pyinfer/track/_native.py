"""The native tracker core: ``track_native.c``, built by setup.py as an extension of the package
(``track_native.cpython-311-x86_64-linux-gnu.so``, found by :func:`pyinfer._clib.library_path`) and loaded with
ctypes.

:class:`NativeByteTracker` has :class:`pyinfer.track.bytetrack.NumpyByteTracker`'s interface and gives its
results: the C file is a port of the NumPy reference, operation for operation, and a frame costs one C call
instead of ~150 NumPy calls (about 0.5 ms at 100 objects, 1 ms with rotated IoU); tests/track/test_native.py
compares the two frame by frame, bit for bit. :func:`load` returns the library once its ABI answers
(``pyinfer_bt_abi``: interface version, the layout of :class:`Config`) are :data:`ABI`; otherwise ``None``,
and :class:`pyinfer.track.ByteTracker` runs the NumPy reference.

Inputs are read as float32 (boxes, scores) and int32 (classes), the dtypes :class:`~pyinfer.detections.Detections`
documents; other dtypes are converted first.
"""

from __future__ import annotations

import ctypes
import logging
import weakref
from ctypes import c_double, c_int, c_int32, c_int64, c_void_p
from pathlib import Path

import numpy as np

from pyinfer._clib import library_path, load_helper
from pyinfer.detections import Detections
from pyinfer.track.bytetrack import track_detections

LIB_PATH = library_path(Path(__file__).parent, "track_native")
_IOU_MODES = {"auto": 0, "axis": 1, "rotated": 2}
_log = logging.getLogger(__name__)


class Config(ctypes.Structure):
    """``bt_config`` of track_native.c."""

    _fields_ = [
        ("high_threshold", c_double),
        ("low_threshold", c_double),
        ("new_track_threshold", c_double),
        ("match_iou_threshold", c_double),
        ("max_age", c_int64),
        ("min_hits", c_int64),
        ("class_aware", c_int32),
        ("iou_mode", c_int32),
    ]


#: What ``pyinfer_bt_abi(0, 1, ...)`` must answer: the interface version (``PYINFER_BT_ABI``, with the signatures
#: in :class:`Library`), then ``bt_config``'s size and its fields' offsets, as :class:`Config` lays them out.
ABI = (1, ctypes.sizeof(Config), *(getattr(Config, field[0]).offset for field in Config._fields_))


class Library:
    """The C functions, typed."""

    def __init__(self, path: Path = LIB_PATH) -> None:
        lib = ctypes.CDLL(str(path))

        def fn(name: str, restype, *argtypes):
            f = getattr(lib, name)
            f.restype = restype
            f.argtypes = list(argtypes)
            return f

        p = c_void_p
        self.abi = fn("pyinfer_bt_abi", c_int64, c_int32)
        self.new = fn("pyinfer_bt_new", p, p)
        self.free = fn("pyinfer_bt_free", None, p)
        self.reset = fn("pyinfer_bt_reset", None, p)
        self.configure = fn("pyinfer_bt_configure", None, p, p)
        self.len = fn("pyinfer_bt_len", c_int64, p)
        self.update = fn("pyinfer_bt_update", c_int, p, c_int64, p, p, p, p, p)
        self.predict = fn("pyinfer_bt_predict", c_int64, p)
        self.export = fn("pyinfer_bt_export", c_int64, p, c_int32, c_int64, p, p, p, p, p, p, p)
        self.state = fn("pyinfer_bt_state", c_int64, p, c_int64, *([p] * 10))
        self.rotated_iou = fn("pyinfer_rotated_iou", None, c_int64, p, c_int64, p, c_double, p)
        self.enclosing_iou = fn("pyinfer_enclosing_iou", None, c_int64, p, c_int64, p, p)


def _config_struct(config) -> Config:
    return Config(
        float(config.high_threshold), float(config.low_threshold), float(config.new_track_threshold),
        float(config.match_iou_threshold), int(config.max_age), int(config.min_hits), int(bool(config.class_aware)),
        _IOU_MODES[config.iou_mode],
    )  # fmt: skip


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


class NativeByteTracker:
    """One stream's tracker state, held in C; the interface and results of ``NumpyByteTracker``.

    Args:
        config: a :class:`~pyinfer.track.bytetrack.TrackerConfig`; may be replaced between frames.
        lib: the loaded library (:func:`load`).
    """

    backend = "native"

    def __init__(self, config, lib: Library) -> None:
        self._lib = lib
        self._config = config
        self._cfg = _config_struct(config)
        handle = lib.new(ctypes.byref(self._cfg))
        if not handle:
            raise MemoryError("native tracker: out of memory")
        self._h = handle
        self._finalizer = weakref.finalize(self, lib.free, handle)
        self._cap = 0
        self._grow(256)

    def _grow(self, cap: int) -> None:
        self._cap = cap
        self._boxes = np.zeros((cap, 5))
        self._xyxy = np.zeros((cap, 4))
        self._score = np.zeros(cap, np.float32)
        self._cls = np.zeros(cap, np.int32)
        self._id = np.zeros(cap, np.uint64)
        self._since = np.zeros(cap, np.int64)
        self._rot = np.zeros(cap, np.uint8)
        arrays = (self._boxes, self._xyxy, self._score, self._cls, self._id, self._since, self._rot)
        self._export_args = tuple(a.ctypes.data for a in arrays)

    @property
    def config(self):
        return self._config

    @config.setter
    def config(self, value) -> None:
        self._cfg = _config_struct(value)
        self._lib.configure(self._h, ctypes.byref(self._cfg))
        self._config = value

    def reset(self) -> None:
        self._lib.reset(self._h)

    def __len__(self) -> int:
        return int(self._lib.len(self._h))

    @property
    def confirmed_count(self) -> int:
        return abs(int(self._lib.export(self._h, 1, 0, *self._export_args)))

    def update(self, detections: Detections) -> np.ndarray:
        n = len(detections)
        xyxy = _f32(detections.xyxy)
        rot = None if detections.cxcywhr is None else _f32(detections.cxcywhr)
        conf = _f32(detections.confidence)
        cls = np.ascontiguousarray(detections.class_id, np.int32)
        out = np.empty(n, np.uint64)
        rc = self._lib.update(
            self._h, n, xyxy.ctypes.data, None if rot is None else rot.ctypes.data, conf.ctypes.data,
            cls.ctypes.data, out.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            raise MemoryError("native tracker: out of memory (its tracks were reset)")
        return out

    def predict(self) -> Detections:
        if self._lib.predict(self._h) < 0:
            raise MemoryError("native tracker: out of memory")
        return self._export(0)

    def tracks(self) -> Detections:
        return self._export(1)

    def _export(self, which: int) -> Detections:
        k = int(self._lib.export(self._h, which, self._cap, *self._export_args))
        if k < 0:
            self._grow(max(-k, 2 * self._cap))
            k = int(self._lib.export(self._h, which, self._cap, *self._export_args))
        return track_detections(
            self._boxes[:k], self._xyxy[:k], self._score[:k], self._cls[:k], self._rot[:k], self._id[:k],
            self._since[:k],
        )  # fmt: skip

    def state(self) -> dict[str, np.ndarray]:
        """Every track's state (for tests): the arrays NumpyByteTracker keeps, same names without ``_``."""
        n = len(self)
        out: dict[str, np.ndarray] = {
            "mean": np.zeros((n, 10)), "cov": np.zeros((n, 3, 5)), "id": np.zeros(n, np.uint64),
            "hits": np.zeros(n, np.int64), "missed": np.zeros(n, np.int64), "since": np.zeros(n, np.int64),
            "class": np.zeros(n, np.int32), "score": np.zeros(n, np.float32), "rotated": np.zeros(n, np.uint8),
        }  # fmt: skip
        next_id = np.zeros(1, np.uint64)
        got = self._lib.state(self._h, n, *(a.ctypes.data for a in out.values()), next_id.ctypes.data)
        assert got == n
        out["rotated"] = out["rotated"].astype(bool)
        out["next_id"] = next_id
        return out


# -- loading and the ABI check ---------------------------------------------------------------------------

_STATE: list = []  # [Library | None] once loaded and checked


def load() -> Library | None:
    """The library once its ABI answers are :data:`ABI`, or ``None`` where it is not built, cannot be loaded,
    answers otherwise (logged) or ``PYINFER_NO_NATIVE=1``."""
    if not _STATE:
        _STATE.append(load_helper(Library, LIB_PATH, ABI, "native tracker", "the NumPy tracker runs instead"))
    return _STATE[0]
