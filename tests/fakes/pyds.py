"""Contract fake of the legacy DeepStream Python bindings (``pyds``, deepstream_python_apps), the subset pyinfer uses.

Enforced (../shared/deepstream-contract.md §2):
- ``gst_buffer_get_nvds_batch_meta(hash(buf))`` takes the GstBuffer pointer (an int), ``None`` if no batch meta;
- lists are GList nodes (``.data``, ``.next``) cast with ``NvDsFrameMeta.cast``;
- ``nvds_acquire_obj_meta_from_pool`` hands out pool objects, ``None`` once the pool is empty (ASSUMPTION);
- ``obj_label`` has no bounds check in the real binding: 128 bytes or more raises :class:`nvds.Overflow`;
- ``text_params.display_text`` reads back as an int address (use ``get_string``);
- writes go under ``nvds_acquire_meta_lock`` (pyinfer's contract: adding an object without the lock raises);
- ``NvDsFrameMeta.bInferDone`` is writable;
- ``get_nvds_buf_surface`` gives an (H, W, C) view of RGB/RGBA surfaces only.
"""

from __future__ import annotations

from typing import Any

import nvds

__version__ = "1.2.0"


class _GList:
    def __init__(self, items: list, i: int = 0):
        self.data = items[i]
        self._items, self._i = items, i

    @property
    def next(self) -> _GList | None:
        return _GList(self._items, self._i + 1) if self._i + 1 < len(self._items) else None


def _glist(items: list) -> _GList | None:
    return _GList(items) if items else None


class NvOSD_ColorParams:
    def __init__(self, owner: Any, name: str):
        self._owner, self._name = owner, name

    def set(self, r: float, g: float, b: float, a: float) -> None:
        setattr(self._owner, self._name, (float(r), float(g), float(b), float(a)))


class _Struct:
    """By-reference view of a struct inside an object meta; colour fields are NvOSD_ColorParams."""

    def __init__(self, target: Any, renames: dict[str, str] | None = None):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_renames", renames or {})

    def __getattr__(self, name: str) -> Any:
        real = self._renames.get(name, name)
        if real.endswith("color") or real.endswith("clr"):
            return NvOSD_ColorParams(self._target, real)
        if name == "font_params":
            return _Struct(self._target.font_params, {"font_name": "name", "font_size": "size", "font_color": "color"})
        if name == "display_text":
            return id(self._target.display_text) if self._target.display_text is not None else 0  # an address
        return getattr(self._target, real)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, self._renames.get(name, name), value)


class NvDsObjectMeta:
    _FIELDS = ("class_id", "object_id", "unique_component_id", "confidence", "tracker_confidence", "obj_label")

    def __init__(self, meta: nvds.ObjectMeta):
        object.__setattr__(self, "_meta", meta)

    @classmethod
    def cast(cls, data: Any) -> NvDsObjectMeta:
        return cls(data)

    def __getattr__(self, name: str) -> Any:
        if name == "rect_params":
            return _Struct(self._meta.rect_params)
        if name == "text_params":
            return _Struct(self._meta.text_params)
        if name == "obj_label":
            return self._meta.label
        if name in self._FIELDS:
            return getattr(self._meta, name)
        raise AttributeError(f"NvDsObjectMeta has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._FIELDS:
            raise AttributeError(f"NvDsObjectMeta has no attribute {name!r}")
        self._meta.set("label" if name == "obj_label" else name, value)


class NvDsFrameMeta:
    _READ = ("batch_id", "pad_index", "source_id", "buf_pts", "frame_num", "source_frame_width",
             "source_frame_height", "bInferDone", "num_obj_meta")  # fmt: skip

    def __init__(self, frame: nvds.FrameMeta):
        object.__setattr__(self, "_frame", frame)

    @classmethod
    def cast(cls, data: Any) -> NvDsFrameMeta:
        return cls(data)

    def __getattr__(self, name: str) -> Any:
        f = self._frame
        mapping = {"buf_pts": f.buffer_pts, "frame_num": f.frame_number, "source_frame_width": f.source_width,
                   "source_frame_height": f.source_height, "num_obj_meta": len(f.objects)}  # fmt: skip
        if name in mapping:
            return mapping[name]
        if name in self._READ:
            return getattr(f, name)
        if name == "obj_meta_list":
            return _glist(f.objects)
        raise AttributeError(f"NvDsFrameMeta has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "bInferDone":
            raise AttributeError(f"NvDsFrameMeta.{name} is not writable here")
        self._frame.bInferDone = int(bool(value))


class NvDsBatchMeta:
    def __init__(self, bm: nvds.BatchMeta):
        self._bm = bm

    @property
    def frame_meta_list(self) -> _GList | None:
        return _glist(self._bm.frames)

    @property
    def num_frames_in_batch(self) -> int:
        return len(self._bm.frames)


def gst_buffer_get_nvds_batch_meta(pointer: int) -> NvDsBatchMeta | None:
    if not isinstance(pointer, int):
        raise TypeError("gst_buffer_get_nvds_batch_meta(): pass hash(gst_buffer), an int")
    bm = nvds.lookup(pointer)
    return None if bm is None else NvDsBatchMeta(bm)


def nvds_acquire_meta_lock(batch_meta: NvDsBatchMeta) -> None:
    batch_meta._bm.lock_depth += 1
    batch_meta._bm.lock_taken += 1


def nvds_release_meta_lock(batch_meta: NvDsBatchMeta) -> None:
    if batch_meta._bm.lock_depth <= 0:
        raise RuntimeError("nvds_release_meta_lock without nvds_acquire_meta_lock")
    batch_meta._bm.lock_depth -= 1


def nvds_acquire_obj_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsObjectMeta | None:
    meta = batch_meta._bm.acquire_object()
    return None if meta is None else NvDsObjectMeta(meta)


def nvds_add_obj_meta_to_frame(frame_meta: NvDsFrameMeta, obj_meta: NvDsObjectMeta, parent: Any) -> None:
    bm = frame_meta._frame.batch
    if bm.lock_depth <= 0:
        raise RuntimeError("nvds_add_obj_meta_to_frame without the batch meta lock")
    if parent is not None:
        raise TypeError("parent must be None for detector objects")
    bm.attach(frame_meta._frame, obj_meta._meta)


def get_string(address: int) -> str:
    raise NotImplementedError("the fake keeps strings in nvds.ObjectMeta; read them there")


def get_nvds_buf_surface(pointer: int, batch_id: int):
    bm = nvds.lookup(pointer)
    if bm is None:
        raise RuntimeError("get_nvds_buf_surface: no NvBufSurface in this buffer")
    surface = bm.surfaces[batch_id]
    if surface.color_format not in ("RGB", "RGBA"):
        raise RuntimeError(f"get_nvds_buf_surface: only RGB/RGBA surfaces, got {surface.color_format}")
    return surface.hwc()


def unmap_nvds_buf_surface(pointer: int, batch_id: int) -> None:
    """Needed on Jetson after get_nvds_buf_surface; a no-op on x86 (and here)."""
