"""Contract fake of NVIDIA's ``pyservicemaker`` (DeepStream Service Maker Python API), the subset pyinfer uses.

It enforces what ../shared/deepstream-contract.md §1 documents from NVIDIA's pybind11 sources:
- ``Buffer(gst_buffer)`` accepts only a Gst.Buffer (anything else gives an empty Buffer, silently) and pins the
  buffer while the wrapper lives (tracked in ``nvds.LIVE_BUFFER_WRAPPERS``);
- ``extract(batch_id)`` gives a falsy Tensor for non-RGB surfaces; touching a falsy Tensor raises
  :class:`nvds.Segfault` (the real one dereferences null). The pixels are a zero-copy view with strides
  (pitch, 3, 1). DIFFERENCE: on this CPU machine the DLPack device is the CPU (kDLCPU), not kDLCUDA;
- ``*_items`` iterators yield one aliased wrapper that is re-pointed by ``next()`` and nulled at the end:
  using an item after the loop raises :class:`nvds.Segfault`;
- ``ObjectMetadata`` cannot be constructed ("No constructor defined!"); objects come from
  ``BatchMetadata.acquire_object_meta()`` (an exhaustible pool: ``None`` when empty, an ASSUMPTION);
- ``label`` longer than 127 bytes raises :class:`nvds.Overflow`;
- ``FrameMetadata`` is read-only (no ``bInferDone``) and ``append`` accepts only DisplayMetadata,
  EventMessageUserMetadata and ObjectMetadata (TypeError otherwise);
- ``osd.Rect.rotation_angle`` exists only when the batch plays DeepStream >= 9.
"""

from __future__ import annotations

from typing import Any

import nvds

from pyservicemaker import osd

__version__ = "0.0.1"  # as the real package reports even in DS 9.1: useless for feature detection
__all__ = ["Buffer", "osd"]


class Tensor:
    """pyservicemaker.Tensor over one surface (or null)."""

    def __init__(self, surface: nvds.Surface | None):
        self._surface = surface
        self._view = None

    def __bool__(self) -> bool:
        return self._surface is not None

    def _pixels(self):
        if self._surface is None:
            raise nvds.Segfault("use of a null Tensor (extract() returned no tensor: check `if not t` first)")
        if self._view is None:
            self._view = self._surface.hwc()
        return self._view

    @property
    def shape(self) -> list[int]:
        return list(self._pixels().shape)

    @property
    def strides(self) -> list[int]:
        return list(self._pixels().strides)

    @property
    def dtype(self) -> str:
        self._pixels()
        return "uint8"

    def __dlpack__(self, stream: Any = None) -> Any:
        return self._pixels().__dlpack__()

    def __dlpack_device__(self) -> tuple[int, int]:
        self._pixels()
        return (1, 0)  # kDLCPU on the test machine (the real one always says kDLCUDA)


class _Null:
    """A wrapper whose C pointer is null or dangling."""


class _Wrapper:
    _target: Any

    def _t(self) -> Any:
        if self._target is None:
            raise nvds.Segfault(
                f"use of a {type(self).__name__} after its iterator moved on (the wrapper aliases the iterator slot)"
            )
        return self._target


class FrameMetadata(_Wrapper):
    """Read-only view of one NvDsFrameMeta."""

    _FIELDS = ("batch_id", "source_id", "pad_index", "frame_number", "buffer_pts")

    def __init__(self) -> None:
        object.__setattr__(self, "_target", None)

    def __getattr__(self, name: str) -> Any:
        if name in self._FIELDS:
            return getattr(self._t(), name)
        if name in ("source_width", "source_height", "pipeline_width", "pipeline_height"):
            return getattr(self._t(), name)
        raise AttributeError(f"'pyservicemaker.FrameMetadata' object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"FrameMetadata.{name} is read-only (pyservicemaker has no setter)")

    def append(self, item: Any) -> None:
        frame = self._t()
        if isinstance(item, ObjectMetadata):
            frame.batch.attach(frame, item._t())
        elif isinstance(item, EventMessageUserMetadata):
            frame.event_metas.append(item._event)
        elif isinstance(item, DisplayMetadata):
            frame.display_metas.append(item)
        else:
            raise TypeError(
                f"FrameMetadata.append(): incompatible function arguments: {type(item).__name__} "
                "(accepts DisplayMetadata, EventMessageUserMetadata, ObjectMetadata)"
            )

    @property
    def object_items(self):
        return _aliased(ObjectMetadata, self._t().objects)


class ObjectMetadata(_Wrapper):
    """NvDsObjectMeta; only the pool makes them."""

    _FIELDS = ("class_id", "object_id", "unique_component_id", "confidence", "tracker_confidence", "label")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("pyservicemaker.ObjectMetadata: No constructor defined!")

    @classmethod
    def _bind(cls, meta: nvds.ObjectMeta | None) -> ObjectMetadata:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_target", meta)
        return obj

    def __getattr__(self, name: str) -> Any:
        if name in self._FIELDS:
            return getattr(self._t(), name)
        if name in ("rect_params", "text_params", "mask_params"):
            return getattr(osd, "_" + name)(self._t())
        raise AttributeError(f"'pyservicemaker.ObjectMetadata' object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._FIELDS:
            raise AttributeError(f"ObjectMetadata has no settable attribute {name!r}")
        self._t().set(name, value)

    def append(self, user_meta: UserMetadata) -> None:
        if not isinstance(user_meta, UserMetadata):
            raise TypeError(f"ObjectMetadata.append(): expected UserMetadata, got {type(user_meta).__name__}")
        self._t().user_meta.append(user_meta._meta)
        self._t().record("user_meta", user_meta._meta.data)


class UserMetadata:
    """NvDsUserMeta from the batch pool; ``set_user_data_json`` stores a JSON copy."""

    def __init__(self, meta: nvds.UserMeta):
        self._meta = meta

    @property
    def meta_type(self) -> int:
        return self._meta.meta_type

    def set_user_data_json(self, obj: Any, meta_type: int) -> None:
        import json

        if meta_type < nvds.NVDS_START_USER_META:
            raise ValueError(f"custom user meta types start at NVDS_START_USER_META ({nvds.NVDS_START_USER_META})")
        self._meta.data = json.loads(json.dumps(obj))
        self._meta.meta_type = meta_type

    def get_user_data_json(self) -> Any:
        return self._meta.data


class EventMessageUserMetadata:
    """NvDsEventMsgMeta wrapper; ``generate`` fills it from an object and its frame."""

    def __init__(self) -> None:
        self._event = nvds.EventMeta()

    def generate(self, obj: ObjectMetadata, frame: FrameMetadata, sensor: str = "N/A", uri: str = "N/A",
                 labels: list[str] | None = None) -> None:  # fmt: skip
        self._event.object = obj._t()
        self._event.frame = frame._t()
        self._event.sensor, self._event.uri = sensor, uri
        self._event.labels = list(labels or [])


class DisplayMetadata:
    """NvDsDisplayMeta: ``add_text`` copies the string (g_strdup) into one of MAX_ELEMENTS_IN_DISPLAY_META (16)
    slots; a full meta drops the text silently (the C call returns FALSE and the binding discards it)."""

    MAX_ELEMENTS = 16

    def __init__(self) -> None:
        self.texts: list[dict] = []
        self.dropped = 0

    def add_text(self, text: Any) -> None:
        from pyservicemaker import osd

        if not isinstance(text, osd.Text):
            raise TypeError(f"DisplayMetadata.add_text(): incompatible function arguments: {type(text).__name__}")
        if len(self.texts) >= self.MAX_ELEMENTS:
            self.dropped += 1
            return
        raw = text.display_text
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        self.texts.append({"display_text": value, "x_offset": text.x_offset, "y_offset": text.y_offset})


class BatchMetadata:
    def __init__(self, bm: nvds.BatchMeta | None):
        self._bm = bm

    @property
    def n_frames(self) -> int:
        return 0 if self._bm is None else len(self._bm.frames)

    @property
    def frame_items(self):
        return _aliased(FrameMetadata, [] if self._bm is None else self._bm.frames)

    def acquire_object_meta(self) -> ObjectMetadata | None:
        meta = self._bm.acquire_object()
        return None if meta is None else ObjectMetadata._bind(meta)

    def acquire_user_meta(self) -> UserMetadata:
        meta = nvds.UserMeta()
        self._bm.user_metas.append(meta)
        return UserMetadata(meta)

    def acquire_event_message_meta(self) -> EventMessageUserMetadata:
        return EventMessageUserMetadata()

    def acquire_display_meta(self) -> DisplayMetadata:
        return DisplayMetadata()


def _aliased(cls: type, items: list):
    """A single-pass iterator yielding ONE wrapper re-pointed at each item and nulled at the end."""
    slot = ObjectMetadata._bind(None) if cls is ObjectMetadata else cls()
    for item in items:
        object.__setattr__(slot, "_target", item)
        yield slot
    object.__setattr__(slot, "_target", None)


class Buffer:
    """Wraps a Gst.Buffer (by its pointer, as the real binding does with ``__hash__``)."""

    def __init__(self, gst_buffer: Any = None):
        name = f"{type(gst_buffer).__module__}.{type(gst_buffer).__name__}"
        self._bm = None
        self.ptr = hash(gst_buffer) if gst_buffer is not None else 0  # which GstBuffer it pins (for tests)
        if type(gst_buffer).__name__ == "Buffer" and "Gst" in name:  # the real type check, then a silent no-op
            self._bm = nvds.lookup(hash(gst_buffer))
            nvds.LIVE_BUFFER_WRAPPERS.add(self)

    @property
    def batch_meta(self) -> BatchMetadata:
        return BatchMetadata(self._bm)

    @property
    def batch_size(self) -> int:
        return 0 if self._bm is None else max(len(self._bm.surfaces), 1)

    def extract(self, batch_id: int) -> Tensor:
        if self._bm is None or not 0 <= batch_id < len(self._bm.surfaces):
            return Tensor(None)
        surface = self._bm.surfaces[batch_id]
        if surface.color_format != "RGB":
            print("Only RGB format is supported for being extracted as a tensor")
            return Tensor(None)
        return Tensor(surface)
