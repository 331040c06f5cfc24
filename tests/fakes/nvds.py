"""The state behind the DeepStream fakes: batch/frame/object metas, pools, surfaces and a buffer registry.

Both fakes (``pyservicemaker`` and ``pyds``) are views onto these plain objects, as both real bindings are views
onto the same C structs. Every write to a fake object meta is recorded in ``writes`` (field, value) in order.

What is enforced here (from ../shared/deepstream-contract.md):
- object metas come only from the batch's pool, which is exhaustible (``pool_size``); an exhausted pool yields
  ``None`` (ASSUMPTION: the real behaviour is UNVERIFIED; pyinfer's docs say so);
- a pool object starts with the fields of an un-initialised meta (object_id 0, no label, no text), so a writer
  that forgets a field is caught by the tests;
- labels are limited to 127 bytes (``obj_label[128]``): a longer one raises :class:`Overflow` (the real
  bindings overflow the buffer);
- ``rotation_angle`` exists only when the fake plays DeepStream >= 9 (``ds_major``);
- ``mask_params.data`` belongs to DeepStream once set: it is freed with the real ``g_free`` when the batch is
  released (:func:`reset`), as DeepStream frees nvinfer's g_malloc'd masks. pyservicemaker's ``mask_array``
  setter stores the array's pointer without copying, so memory NumPy owns (it would be freed twice) raises
  :class:`Overflow`-like :class:`BadFree` at the setter, and a mask set twice on one object (the first block would
  leak) raises too. At release the block must still hold the values it held when set (a freed block would not).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNTRACKED_OBJECT_ID = 0xFFFF_FFFF_FFFF_FFFF
NVDS_START_USER_META = 8193
MAX_LABEL_SIZE = 128

#: GstBuffer pointer (hash(Gst.Buffer)) -> BatchMeta, as gst_buffer_get_nvds_batch_meta finds it.
REGISTRY: dict[int, BatchMeta] = {}
#: Every batch meta made, in order (tests read the written fields from here).
HISTORY: list[BatchMeta] = []
#: Live wrappers that pin a GstBuffer (pyservicemaker.Buffer) and live extracted pixel views.
LIVE_BUFFER_WRAPPERS: weakref.WeakSet = weakref.WeakSet()
_PIXEL_VIEWS: list[weakref.ref] = []


def live_pixel_views() -> int:
    """How many extracted pixel views (and so tensors made from them) are still alive."""
    _PIXEL_VIEWS[:] = [r for r in _PIXEL_VIEWS if r() is not None]
    return len(_PIXEL_VIEWS)


class BadFree(RuntimeError):
    """Memory handed to DeepStream that it cannot free with g_free (the real one corrupts the heap)."""


@dataclass
class MaskParams:
    """NvOSD_MaskParams: ``data`` is a float* (an address), ``size`` its byte size."""

    data: int = 0
    size: int = 0
    threshold: float = 0.0
    width: int = 0
    height: int = 0
    values: np.ndarray | None = None  # a copy taken when set (what a release checks the block still holds)


#: Masks handed to DeepStream, freed with g_free by reset() (the batch's release).
MASKS: list[MaskParams] = []


def _g_free() -> Any:
    import ctypes

    fn = ctypes.CDLL("libglib-2.0.so.0").g_free
    fn.argtypes, fn.restype = [ctypes.c_void_p], None
    return fn


def release_masks() -> None:
    """What DeepStream does with each object's mask when the batch is released: check it, then g_free it."""
    import ctypes

    g_free = _g_free()
    masks, MASKS[:] = list(MASKS), []
    for m in masks:
        now = np.ctypeslib.as_array((ctypes.c_float * (m.width * m.height)).from_address(m.data)).copy()
        if m.values is not None and not np.array_equal(now.reshape(m.height, m.width), m.values):
            raise BadFree(f"mask_params.data at 0x{m.data:x} changed before DeepStream released it (freed early?)")
        g_free(m.data)


class Overflow(RuntimeError):
    """A write past a fixed-size C buffer (the real bindings corrupt memory here)."""


class Segfault(RuntimeError):
    """Use of a null or dangling pointer (the real bindings crash here)."""


def reset() -> None:
    release_masks()
    REGISTRY.clear()
    HISTORY.clear()


@dataclass
class Surface:
    """One NvBufSurfaceParams: pixels with a row pitch, in a colour format."""

    pixels: np.ndarray  # (height, pitch) uint8, the whole pitched plane
    width: int
    height: int
    color_format: str  # "RGB", "RGBA", "NV12"

    @property
    def pitch(self) -> int:
        return self.pixels.shape[1]

    def hwc(self) -> np.ndarray:
        """(H, W, C) view with strides (pitch, C, 1), as extract/get_nvds_buf_surface hand it out."""
        c = {"RGB": 3, "RGBA": 4}[self.color_format]
        view = np.lib.stride_tricks.as_strided(
            self.pixels, shape=(self.height, self.width, c), strides=(self.pitch, c, 1), writeable=True
        )
        _PIXEL_VIEWS.append(weakref.ref(view))
        return view


def make_surface(frame: np.ndarray, color_format: str = "RGB", pad: int = 64) -> Surface:
    """A surface holding ``frame`` (H, W, 3 RGB) with ``pad`` extra bytes per row (pitch > width * C)."""
    h, w, _ = frame.shape
    c = 4 if color_format == "RGBA" else 3
    pixels = np.full((h, w * c + pad), 7, np.uint8)
    if color_format in ("RGB", "RGBA"):
        rows = pixels[:, : w * c].reshape(h, w, c)
        rows[..., :3] = frame
        if c == 4:
            rows[..., 3] = 255
    return Surface(pixels, w, h, color_format)


class Rect:
    """NvOSD_RectParams."""

    def __init__(self, meta: ObjectMeta, rotation: bool):
        object.__setattr__(self, "_meta", meta)
        object.__setattr__(self, "_rotation", rotation)
        self.left = self.top = self.width = self.height = 0.0
        self.border_width = 0
        self.border_color = (0.0, 0.0, 0.0, 0.0)
        self.has_bg_color = 0
        self.bg_color = (0.0, 0.0, 0.0, 0.0)
        if rotation:
            self.rotation_angle = 0.0

    def __setattr__(self, name: str, value: Any) -> None:
        allowed = {"left", "top", "width", "height", "border_width", "border_color", "has_bg_color", "bg_color"}
        if self._rotation:
            allowed.add("rotation_angle")
        if name not in allowed:
            raise AttributeError(f"NvOSD_RectParams has no field {name!r}")
        if name == "border_width" and int(value) < 0:
            raise TypeError("border_width is unsigned")
        object.__setattr__(self, name, value)
        self._meta.record(f"rect_params.{name}", value)


class TextParams:
    """NvOSD_TextParams (display_text is a char*; offsets are unsigned)."""

    def __init__(self, meta: ObjectMeta):
        object.__setattr__(self, "_meta", meta)
        self.display_text = None
        self.x_offset = 0
        self.y_offset = 0
        self.font_params = FontParams(meta)
        self.set_bg_clr = 0
        self.text_bg_clr = (0.0, 0.0, 0.0, 0.0)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("x_offset", "y_offset") and int(value) < 0:
            raise TypeError(f"{name} is unsigned, got {value}")
        object.__setattr__(self, name, value)
        self._meta.record(f"text_params.{name}", value)


class FontParams:
    """NvOSD_FontParams (font_name must be a fontconfig name, e.g. Serif)."""

    def __init__(self, meta: ObjectMeta):
        object.__setattr__(self, "_meta", meta)
        self.name = None
        self.size = 0
        self.color = (0.0, 0.0, 0.0, 0.0)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ("name", "size", "color"):
            raise AttributeError(f"NvOSD_FontParams has no field {name!r}")
        object.__setattr__(self, name, value)
        self._meta.record(f"text_params.font_params.{name}", value)


class ObjectMeta:
    """NvDsObjectMeta, as a pool hands it out: fields not initialised to useful values."""

    def __init__(self, batch: BatchMeta, index: int):
        self.batch = batch
        self.index = index
        self.writes: list[tuple[str, Any]] = []
        self.class_id = 0
        self.object_id = 0  # a pool object is not UNTRACKED until someone says so
        self.unique_component_id = 0
        self.confidence = 0.0
        self.tracker_confidence = 0.0
        self.label = ""
        self.rect_params = Rect(self, rotation=batch.ds_major >= 9)
        self.text_params = TextParams(self)
        self.mask_params = MaskParams()
        self.user_meta: list[UserMeta] = []
        self.writes.clear()
        self.attached_to: FrameMeta | None = None

    def record(self, name: str, value: Any) -> None:
        self.writes.append((name, value))

    def set(self, name: str, value: Any) -> None:
        if name == "label":
            raw = str(value).encode()
            if len(raw) >= MAX_LABEL_SIZE:
                raise Overflow(f"obj_label[{MAX_LABEL_SIZE}] overflow: {len(raw)} bytes")
        if name == "object_id" and not (0 <= int(value) <= UNTRACKED_OBJECT_ID):
            raise TypeError(f"object_id is a guint64, got {value}")
        setattr(self, name, value)
        self.record(name, value)


@dataclass
class UserMeta:
    """NvDsUserMeta carrying JSON (pyservicemaker's set_user_data_json)."""

    meta_type: int = 0
    data: Any = None


@dataclass
class EventMeta:
    """NvDsEventMsgMeta as pyservicemaker's EventMessageUserMetadata.generate fills it."""

    object: ObjectMeta | None = None
    frame: FrameMeta | None = None
    sensor: str = ""
    uri: str = ""
    labels: list[str] = field(default_factory=list)


@dataclass
class FrameMeta:
    """NvDsFrameMeta."""

    batch: BatchMeta
    batch_id: int
    source_id: int
    pad_index: int
    frame_number: int
    buffer_pts: int
    source_width: int
    source_height: int
    pipeline_width: int
    pipeline_height: int
    objects: list[ObjectMeta] = field(default_factory=list)
    event_metas: list[EventMeta] = field(default_factory=list)
    display_metas: list[Any] = field(default_factory=list)
    bInferDone: int = 0


@dataclass
class BatchMeta:
    """NvDsBatchMeta with its object pool; ``surfaces[batch_id]`` are the pixels."""

    frames: list[FrameMeta]
    surfaces: list[Surface]
    pool_size: int = 1024
    ds_major: int = 9
    acquired: int = 0
    lock_depth: int = 0
    lock_taken: int = 0
    user_metas: list[UserMeta] = field(default_factory=list)

    def acquire_object(self) -> ObjectMeta | None:
        if self.acquired >= self.pool_size:
            return None
        self.acquired += 1
        return ObjectMeta(self, self.acquired - 1)

    def attach(self, frame: FrameMeta, obj: ObjectMeta) -> None:
        if obj.batch is not self:
            raise RuntimeError("object meta from another batch's pool")
        if obj.attached_to is not None:
            raise RuntimeError("object meta attached twice")
        obj.attached_to = frame
        frame.objects.append(obj)

    @property
    def objects(self) -> list[ObjectMeta]:
        return [o for f in self.frames for o in f.objects]


def make_batch(
    frames: list[np.ndarray],
    *,
    color_format: str = "RGB",
    pool_size: int = 1024,
    ds_major: int = 9,
    first_frame_number: int = 0,
    pts: int = 0,
    source_ids: list[int] | None = None,
) -> BatchMeta:
    """A batch of RGB frames as nvstreammux would produce (one surface and one frame meta per frame)."""
    surfaces = [make_surface(f, color_format) for f in frames]
    bm = BatchMeta(frames=[], surfaces=surfaces, pool_size=pool_size, ds_major=ds_major)
    for i, f in enumerate(frames):
        h, w, _ = f.shape
        sid = source_ids[i] if source_ids else i
        bm.frames.append(FrameMeta(bm, i, sid, sid, first_frame_number, pts, w, h, w, h))
    HISTORY.append(bm)
    return bm


def register(gst_buffer: Any, bm: BatchMeta) -> None:
    """Attach ``bm`` to a buffer (the fake stand-in for gst_buffer_add_nvds_meta)."""
    REGISTRY[hash(gst_buffer)] = bm


def lookup(pointer: int) -> BatchMeta | None:
    return REGISTRY.get(pointer)
