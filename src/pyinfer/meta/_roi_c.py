"""ctypes fast path of :mod:`pyinfer.meta.roi`: GStreamer's C API on a buffer's ROI metas.

PyGObject costs ~0.5 µs per call and ~2.5 µs per meta wrapper, so reading or writing one detection through it
costs ~15 µs. Here a meta is walked with ``gst_buffer_iterate_meta_filtered``, its public struct
(``GstVideoRegionOfInterestMeta``: ``GstMeta`` {flags, info*}, roi_type, id, parent_id, x, y, w, h, params
GList*; unchanged since 1.14 under GStreamer's 1.x ABI promise) read from memory, and a param structure's
fields read (``gst_structure_get``) or written (``gst_structure_new``) in one variadic call each.

Only the exact representation pyinfer writes is handled here (doubles, ints, a string, a guint64): every
call that finds anything else returns ``None`` and :mod:`pyinfer.meta.roi` reads that meta through PyGObject,
so results are the same in every case. :func:`load` returns ``None`` (PyGObject only) when a library or
symbol is missing, the platform is not 64-bit, or the self-test against PyGObject fails.

Threads: the :class:`RoiC` instance is shared by the process and holds nothing that a call changes. The
variadic reads write into output :class:`Slots`, and each read holds a set of its own, taken from a free list
(:meth:`RoiC.acquire`) and given back when done: ctypes releases the GIL during each C call, so two streaming
threads sharing slots would read each other's values. (A free list, not ``threading.local``: GStreamer's
streaming threads enter Python afresh for each buffer, which empties their thread-locals every time.)
"""

from __future__ import annotations

import ctypes
import struct
import threading
from ctypes import PYFUNCTYPE, byref, c_char_p, c_double, c_int, c_size_t, c_uint, c_uint32, c_uint64, c_void_p
from typing import Any

from pyinfer._clib import system_library

G_TYPE_BOOLEAN = 5 << 2
G_TYPE_INT = 6 << 2
G_TYPE_UINT64 = 11 << 2
G_TYPE_DOUBLE = 15 << 2
G_TYPE_STRING = 16 << 2
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
UINT64_MAX = 2**64 - 1

_ROI = struct.Struct("=IiiIIII4xQ")  # roi_type, id, parent_id, x, y, w, h, (pad), params: from offset 16
_ROI_OFFSET = 16  # sizeof(GstMeta) on 64-bit: flags (4, padded to 8) + info*
_ID_OFFSET = 20
_GLIST = struct.Struct("=QQ")  # data, next
_DETECTION_FIELDS = (b"left", b"top", b"width", b"height", b"confidence")
_ROTATED_FIELDS = (b"rotated-cx", b"rotated-cy", b"rotated-width", b"rotated-height", b"angle-rad")
_CTYPE = {G_TYPE_BOOLEAN: c_int, G_TYPE_INT: c_int, G_TYPE_UINT64: c_uint64, G_TYPE_DOUBLE: c_double,
          G_TYPE_STRING: c_char_p}  # fmt: skip


class RoiC:
    """The C functions; one instance per process (see :func:`load`), with a free list of :class:`Slots`."""

    def __init__(self) -> None:
        gst, video, glib = (
            system_library("gstreamer-1.0", hold_gil=True),
            system_library("gstvideo-1.0", hold_gil=True),
            system_library("glib-2.0", hold_gil=True),
        )

        def fn(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:  # ctypes prototypes: untyped
            return PYFUNCTYPE(restype, *argtypes)((name, lib))

        api_type = fn(video, "gst_video_region_of_interest_meta_api_get_type", c_size_t)
        self.api = api_type()
        self.iterate = fn(gst, "gst_buffer_iterate_meta_filtered", c_size_t, c_size_t, c_void_p, c_size_t)
        self.name_id = fn(gst, "gst_structure_get_name_id", c_uint32, c_size_t)
        self.has_field = fn(gst, "gst_structure_has_field", c_int, c_size_t, c_char_p)
        self.get_string = fn(gst, "gst_structure_get_string", c_char_p, c_size_t, c_char_p)
        self.get_int = fn(gst, "gst_structure_get_int", c_int, c_size_t, c_char_p, c_void_p)
        self.get_uint64 = fn(gst, "gst_structure_get_uint64", c_int, c_size_t, c_char_p, c_void_p)
        self.get_boolean = fn(gst, "gst_structure_get_boolean", c_int, c_size_t, c_char_p, c_void_p)
        self.add_meta = fn(
            video, "gst_buffer_add_video_region_of_interest_meta", c_size_t, c_size_t, c_char_p, c_uint, c_uint,
            c_uint, c_uint,
        )  # fmt: skip
        self.is_writable = fn(gst, "gst_mini_object_is_writable", c_int, c_size_t)
        self.add_param = fn(video, "gst_video_region_of_interest_meta_add_param", None, c_size_t, c_size_t)
        quark = fn(glib, "g_quark_from_string", c_uint32, c_char_p)
        self.q_detection, self.q_tracking, self.q_frame = (quark(n) for n in (b"detection", b"tracking", b"frame"))
        self._gst = gst
        self._new_protos: dict[tuple, Any] = {}  # filled under the GIL; a race only builds one twice
        # gst_structure_get without argtypes, on arguments converted once: ~1/3 cheaper per call than with.
        raw_get = gst.gst_structure_get
        raw_get.restype = c_int
        self._raw_get = raw_get
        self._free: list[Slots] = []  # slots no read holds; list.pop and list.append are atomic

    def acquire(self) -> Slots:
        """Output slots for one read, held by no other read until :meth:`release` gives them back."""
        try:
            return self._free.pop()
        except IndexError:
            return Slots(self._raw_get)

    def release(self, slots: Slots) -> None:
        """Give back slots from :meth:`acquire` (once), for the next read on any thread."""
        self._free.append(slots)

    def new_structure(self, types: tuple[int, ...]) -> Any:
        """``gst_structure_new(name, field, GType, value, ... NULL)`` for fields of these GTypes."""
        proto = self._new_protos.get(types)
        if proto is None:
            argtypes: list[Any] = [c_char_p]
            for t in types:
                argtypes += [c_char_p, c_size_t, _CTYPE[t]]
            argtypes.append(c_void_p)
            proto = self._new_protos[types] = PYFUNCTYPE(c_size_t, *argtypes)(("gst_structure_new", self._gst))
        return proto

    # -- reading ---------------------------------------------------------------------------------------------

    def walk(self, buf: int) -> list[tuple]:
        """``(meta*, roi_type, id, parent_id, x, y, w, h, params*)`` of every ROI meta of ``buf``, in order."""
        state = c_void_p(0)
        ref, it, api, at, unpack = byref(state), self.iterate, self.api, ctypes.string_at, _ROI.unpack
        out = []
        while m := it(buf, ref, api):
            out.append((m, *unpack(at(m + _ROI_OFFSET, _ROI.size))))
        return out

    def select(self, buf: int) -> tuple[list[tuple], int]:
        """The detection metas as ``roi._roi_metas`` walks them (ids 0, 1, ... first meta of each id), and
        the number of ROI metas."""
        metas = self.walk(buf)
        first: dict[int, tuple] = {}
        for rec in metas:
            first.setdefault(rec[2], rec)
        out: list[tuple] = []
        count = len(metas)
        while len(out) < count:
            nxt = first.get(len(out))
            if nxt is None:
                break
            out.append(nxt)
        return out, count

    def param(self, params: int, quark: int) -> int:
        """The first param structure named ``quark`` (0 if none): ``get_param``."""
        at, unpack, name_id = ctypes.string_at, _GLIST.unpack, self.name_id
        while params:
            s, params = unpack(at(params, 16))
            if s and name_id(s) == quark:
                return s
        return 0

    def params2(self, params: int) -> tuple[int, int]:
        """The first ``detection`` and ``tracking`` params (0 where none)."""
        det = trk = 0
        at, unpack, name_id = ctypes.string_at, _GLIST.unpack, self.name_id
        while params:
            s, params = unpack(at(params, 16))
            if s:
                q = name_id(s)
                if q == self.q_detection:
                    det = det or s
                elif q == self.q_tracking:
                    trk = trk or s
        return det, trk

    def rotated(self, s: int, slots: Slots) -> list[float] | bool | None:
        """The rotated box of a detection param: ``None`` without ``angle-rad``, ``False`` if not doubles."""
        if not self.has_field(s, b"angle-rad"):
            return None
        if not slots.get(s, slots.args_rot):
            return False
        return slots.dbl[:]

    def label(self, s: int) -> str | None:
        raw = self.get_string(s, b"label")
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return None

    # -- writing ---------------------------------------------------------------------------------------------

    def check_writable(self, buf: int) -> None:
        """Raise where ``gst_buffer_add_meta`` would fail (GStreamer's ROI adder then crashes on NULL)."""
        if not self.is_writable(buf):
            raise RuntimeError("could not add ROI meta: the buffer is not writable")

    def add(self, buf: int, roi_type: bytes, x: int, y: int, w: int, h: int, roi_id: int) -> int:
        meta = self.add_meta(buf, roi_type, x, y, w, h)
        if not meta:
            raise RuntimeError("could not add ROI meta: the buffer is not writable")
        c_int.from_address(meta + _ID_OFFSET).value = roi_id
        return meta


class Slots:
    """Output slots of the variadic reads and their argument tuples (converted once); one read at a time.

    ``get(s, args)`` fills ``dbl``/``int1``..``int3`` (``args_det``: left, top, width, height, confidence and
    class-id; ``args_det_uid`` adds unique-id; ``args_rot``: the rotated box; ``args_frame``: inferred,
    unique-id, model-id); ``u64_at`` and ``int3_at`` are out-pointers for the single-field getters.
    """

    __slots__ = (
        "_raw_get", "_s", "args_det", "args_det_uid", "args_frame", "args_rot", "dbl", "int1", "int2", "int3",
        "int3_at", "u64", "u64_at",
    )  # fmt: skip

    def __init__(self, raw_get: Any) -> None:
        self._raw_get = raw_get
        self._s = c_void_p()
        self.dbl = (c_double * 5)()
        self.int1, self.int2, self.int3 = c_int(), c_int(), c_int()
        self.u64 = c_uint64()
        self.u64_at, self.int3_at = ctypes.addressof(self.u64), ctypes.addressof(self.int3)
        dbl_at = [ctypes.addressof(self.dbl) + 8 * k for k in range(5)]
        det = [a for k, f in enumerate(_DETECTION_FIELDS) for a in (f, G_TYPE_DOUBLE, dbl_at[k])]
        cls = [b"class-id", G_TYPE_INT, ctypes.addressof(self.int1)]
        uid = [b"unique-id", G_TYPE_INT, ctypes.addressof(self.int2)]
        rot = [a for k, f in enumerate(_ROTATED_FIELDS) for a in (f, G_TYPE_DOUBLE, dbl_at[k])]
        model = [b"model-id", G_TYPE_INT, ctypes.addressof(self.int3)]
        frame = [b"inferred", G_TYPE_BOOLEAN, ctypes.addressof(self.int1), *uid, *model]
        self.args_det = _preconvert((*det, *cls, None))
        self.args_det_uid = _preconvert((*det, *cls, *uid, None))
        self.args_rot = _preconvert((*rot, None))
        self.args_frame = _preconvert((*frame, None))

    def get(self, s: int, args: tuple) -> bool:
        """``gst_structure_get(s, *args)``: True if every field is there with the given type."""
        self._s.value = s
        return bool(self._raw_get(self._s, *args))


def _preconvert(args: tuple) -> tuple:
    """Variadic arguments as ctypes objects: names as char*, GTypes and out-pointers as gsize."""
    return tuple(c_char_p(a) if isinstance(a, bytes) else None if a is None else c_size_t(a) for a in args)


def params_of(meta: int) -> int:
    """The ``params`` GList* of an ROI meta."""
    return c_size_t.from_address(meta + _ROI_OFFSET + _ROI.size - 8).value


def gtype_of(value: Any) -> int | None:
    """The GType PyGObject's ``Structure.set_value`` gives ``value``, where this module can write it."""
    t = type(value)
    if t is bool:
        return G_TYPE_BOOLEAN
    if t is int:
        return G_TYPE_INT if INT_MIN <= value <= INT_MAX else None
    if t is float:
        return G_TYPE_DOUBLE
    if t is str and "\0" not in value:
        return G_TYPE_STRING
    return None


def c_value(value: object) -> object:
    return value.encode() if type(value) is str else value


_STATE: list = []  # [RoiC | None] once loaded
_LOAD_LOCK = threading.Lock()


def load() -> RoiC | None:
    """The fast path, or ``None`` where it cannot be used (PyGObject only); checked once per process."""
    if not _STATE:
        with _LOAD_LOCK:  # streaming threads may get here first together
            if not _STATE:
                c = None
                try:
                    if ctypes.sizeof(c_void_p) == 8:
                        c = RoiC()
                        if not _self_test(c):
                            c = None
                except (OSError, AttributeError, ValueError, TypeError):
                    c = None
                _STATE.append(c)
    return _STATE[0]


def _self_test(c: RoiC) -> bool:
    """Write and read one meta both ways; the fast path is used only if PyGObject sees the same."""
    from pyinfer._gi import GLib, Gst, GstVideo

    buf = Gst.Buffer.new_allocate(None, 16, None)
    ptr = hash(buf)
    meta = c.add(ptr, "tést".encode(), 3, 4, 5, 6, 7)
    types = (G_TYPE_DOUBLE, G_TYPE_INT, G_TYPE_STRING, G_TYPE_UINT64, G_TYPE_BOOLEAN)
    s = c.new_structure(types)(
        b"detection", b"left", G_TYPE_DOUBLE, 0.1, b"class-id", G_TYPE_INT, -3, b"label", G_TYPE_STRING,
        "tést".encode(), b"track-id", G_TYPE_UINT64, UINT64_MAX - 1, b"ok", G_TYPE_BOOLEAN, True, None,
    )  # fmt: skip
    c.add_param(meta, s)
    wrapper = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, 7)
    if wrapper is None or hash(wrapper) != meta:
        return False
    if (wrapper.x, wrapper.y, wrapper.w, wrapper.h, GLib.quark_to_string(wrapper.roi_type)) != (3, 4, 5, 6, "tést"):
        return False
    p = wrapper.get_param("detection")
    expect = {"left": 0.1, "class-id": -3, "label": "tést", "track-id": UINT64_MAX - 1, "ok": True}
    if p is None or {k: p.get_value(k) for k in expect} != expect:
        return False
    recs, count = c.select(ptr)
    if count != 1 or recs or c.walk(ptr)[0][:8] != (meta, wrapper.roi_type, 7, 0, 3, 4, 5, 6):
        return False
    return c.param(c.walk(ptr)[0][8], c.q_detection) == s and c.label(s) == "tést"
