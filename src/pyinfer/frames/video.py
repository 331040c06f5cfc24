"""pyinfer's frame reader: packed RGB-family or 4:2:0 YUV frames, in system memory or CUDA memory.

:class:`VideoLayout` says where each plane of a frame is (from the caps, overridden per buffer by its
GstVideoMeta); :func:`map_frame` maps one buffer and returns a :class:`MappedFrame` whose planes are torch
views of the buffer's memory, no copy:

- system memory (``video/x-raw``): mapped for reading, the planes are CPU tensors over the mapping;
- CUDA memory (``video/x-raw(memory:CUDAMemory)``, from NVIDIA's decoders in gst-plugins-bad): mapped with
  ``GST_MAP_READ | GST_MAP_CUDA``, which gives a device pointer; the planes are CUDA tensors over it
  (``__cuda_array_interface__``), read by torch in its own context.

The mapping stays open until :meth:`MappedFrame.close`: the element keeps it open while the frame's batch is in
flight, and closes it before the buffer is pushed.

Every plane's extent is checked against the mapped size first, for any sign of stride: a view never reaches
outside the buffer.
"""

from __future__ import annotations

import collections
import ctypes
import threading
from dataclasses import dataclass
from typing import Any

from pyinfer._gi import Gst, GstVideo
from pyinfer.frames.pinning import host_pinning
from pyinfer.ops.colour import YUV_FORMATS, YuvColour

#: Packed formats with their bytes per pixel.
PACKED_FORMATS: dict[str, int] = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "RGBx": 4, "BGRx": 4}
#: Every format pyinfer reads.
FORMATS = (*PACKED_FORMATS, *YUV_FORMATS)
CUDA_FEATURE = "memory:CUDAMemory"
#: GST_MAP_CUDA (gst/cuda/gstcudamemory.h): GST_MAP_FLAG_LAST << 1.
MAP_CUDA = int(Gst.MapFlags.FLAG_LAST) << 1


class FrameError(ValueError):
    """A buffer whose memory does not hold the frame its caps and video meta describe."""


@dataclass(frozen=True)
class VideoLayout:
    """Where the planes of one frame are.

    Attributes:
        format: a name of FORMATS.
        width: frame width.
        height: frame height.
        offsets: byte offset of each plane.
        strides: row stride of each plane (may be negative: bottom-up rows).
        memory: "system" or "cuda".
        colour: the YUV matrix, range and chroma siting (YUV formats only).
    """

    format: str
    width: int
    height: int
    offsets: tuple[int, ...]
    strides: tuple[int, ...]
    memory: str = "system"
    colour: YuvColour | None = None

    @property
    def channels(self) -> int:
        """Bytes per pixel of a packed format; 3 (the RGB it becomes) for YUV."""
        return PACKED_FORMATS.get(self.format, 3)

    @property
    def yuv(self) -> bool:
        return self.format in YUV_FORMATS

    @classmethod
    def from_caps(cls, caps: Gst.Caps) -> VideoLayout:
        """From negotiated caps; ValueError naming the format if pyinfer cannot read it."""
        info = GstVideo.VideoInfo.new_from_caps(caps)
        if info is None:
            raise ValueError(f"caps are not raw video: {caps.to_string()}")
        fmt = GstVideo.VideoFormat.to_string(info.finfo.format)
        if fmt not in FORMATS:
            raise ValueError(f"pyinfer cannot read video format {fmt}; it reads {', '.join(FORMATS)}")
        features = caps.get_features(0)
        memory = "cuda" if features is not None and features.contains(CUDA_FEATURE) else "system"
        n = info.finfo.n_planes
        colour = YuvColour.from_video_info(info) if fmt in YUV_FORMATS else None
        return cls(
            fmt,
            info.width,
            info.height,
            tuple(int(info.offset[i]) for i in range(n)),
            tuple(int(info.stride[i]) for i in range(n)),
            memory,
            colour,
        )

    def for_buffer(self, buf: Gst.Buffer) -> VideoLayout:
        """The layout of ``buf``: its GstVideoMeta (if any) gives the plane offsets and strides."""
        return self.for_pointer(hash(buf))

    def for_pointer(self, ptr: int) -> VideoLayout:
        """:meth:`for_buffer` for a GstBuffer's address (one C call, the GIL kept: see :func:`_gst`)."""
        meta = _video_meta(ptr)
        if not meta:
            return self
        meta = meta.contents
        n = len(self.offsets)
        offsets = tuple(meta.offset[:n])
        strides = tuple(meta.stride[:n])
        if offsets == self.offsets and strides == self.strides:
            return self
        return VideoLayout(self.format, self.width, self.height, offsets, strides, self.memory, self.colour)

    def plane_shapes(self) -> list[tuple[int, ...]]:
        """(rows, columns, bytes per pixel) of each plane as pyinfer views it."""
        w, h = self.width, self.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        if self.format == "NV12":
            return [(h, w, 1), (ch, cw, 2)]
        if self.format == "I420":
            return [(h, w, 1), (ch, cw, 1), (ch, cw, 1)]
        return [(h, w, self.channels)]

    def check(self, size: int) -> None:
        """FrameError unless every byte of every plane lies in [0, size)."""
        for i, (rows, cols, px) in enumerate(self.plane_shapes()):
            offset, stride = self.offsets[i], self.strides[i]
            row = cols * px
            if abs(stride) < row and rows > 1:
                raise FrameError(f"{self.format} plane {i}: stride {stride} is shorter than a row of {row} bytes")
            first = offset + min(0, stride * (rows - 1))
            last = offset + max(0, stride * (rows - 1)) + row
            if first < 0 or last > size:
                raise FrameError(
                    f"buffer holds {size} bytes, but a {self.width}x{self.height} {self.format} frame's plane {i} "
                    f"(offset {offset}, stride {stride}) spans bytes {first} to {last}"
                )


class _GstMapInfo(ctypes.Structure):
    _fields_ = [
        ("memory", ctypes.c_void_p),
        ("flags", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("maxsize", ctypes.c_size_t),
        ("user_data", ctypes.c_void_p * 4),
        ("_gst_reserved", ctypes.c_void_p * 4),
    ]


class _GstVideoMeta(ctypes.Structure):
    """The head of GstVideoMeta (gst/video/gstvideometa.h) up to the plane strides."""

    _fields_ = [
        ("meta_flags", ctypes.c_uint),  # GstMeta
        ("meta_info", ctypes.c_void_p),
        ("buffer", ctypes.c_void_p),
        ("flags", ctypes.c_int),
        ("format", ctypes.c_int),
        ("id", ctypes.c_int),
        ("width", ctypes.c_uint),
        ("height", ctypes.c_uint),
        ("n_planes", ctypes.c_uint),
        ("offset", ctypes.c_size_t * 4),
        ("stride", ctypes.c_int * 4),
    ]


_LIB: ctypes.PyDLL | None = None


def _gst() -> ctypes.PyDLL:
    """map, unmap and memory count of a buffer, called with the GIL held.

    These calls return at once, so they need not let other Python threads run; through ``ctypes.CDLL`` each one
    released the GIL and took it back, which on a busy pipeline (streaming thread, worker and copy threads all
    running Python) meant waiting for another thread to give it back, several times per frame.
    """
    global _LIB
    if _LIB is None:
        lib = ctypes.PyDLL("libgstreamer-1.0.so.0")
        lib.gst_buffer_map.argtypes = [ctypes.c_void_p, ctypes.POINTER(_GstMapInfo), ctypes.c_int]
        lib.gst_buffer_map.restype = ctypes.c_int
        lib.gst_buffer_unmap.argtypes = [ctypes.c_void_p, ctypes.POINTER(_GstMapInfo)]
        lib.gst_buffer_unmap.restype = None
        lib.gst_buffer_n_memory.argtypes = [ctypes.c_void_p]
        lib.gst_buffer_n_memory.restype = ctypes.c_uint
        _LIB = lib
    return _LIB


_VIDEO_META: Any = None


def _video_meta(ptr: int) -> Any:
    """gst_buffer_get_video_meta of a GstBuffer's address (a NULL pointer if it has none); the GIL is kept."""
    global _VIDEO_META
    if _VIDEO_META is None:
        fn = ctypes.PyDLL("libgstvideo-1.0.so.0").gst_buffer_get_video_meta
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.POINTER(_GstVideoMeta)
        _VIDEO_META = fn
    return _VIDEO_META(ptr)


#: Plane views by (address, mapped size, device, layout): decoders, upload elements and buffer pools recycle their
#: buffers, so the same few addresses come back frame after frame, and building the views (a tensor from
#: ``__cuda_array_interface__``: tens of microseconds; host memory: a NumPy array, a tensor and a strided view
#: per plane, with the extent check) costs more than the rest of the frame's mapping. A view is only an address
#: with a shape; it is used only while a buffer mapped at that address with that layout is mapped, and a key is
#: only made for a layout whose extent was checked against that mapped size.
_VIEWS: collections.OrderedDict = collections.OrderedDict()
_VIEWS_MAX = 4096  # many streams: each decoder recycles its own pool (NVDEC: ~20-30 buffers per stream)
_VIEWS_LOCK = threading.Lock()


def _views_get(key: tuple) -> list | None:
    with _VIEWS_LOCK:
        planes = _VIEWS.get(key)
        if planes is not None:
            _VIEWS.move_to_end(key)
        return planes


def _views_put(key: tuple, planes: list) -> None:
    with _VIEWS_LOCK:
        _VIEWS[key] = planes
        while len(_VIEWS) > _VIEWS_MAX:
            _VIEWS.popitem(last=False)


class _CudaArray:
    """A device pointer with a shape, for ``torch.as_tensor`` (``__cuda_array_interface__`` version 3)."""

    def __init__(self, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": "|u1",
            "data": (ptr, False),  # read only in fact; torch takes a "read-only" device array less readily
            "strides": strides,
            "version": 3,
        }


class MappedFrame:
    """One buffer mapped for reading; ``planes`` are uint8 torch views of it, valid until :meth:`close`."""

    def __init__(self, buf: Gst.Buffer, layout: VideoLayout, device: str = "cuda", *, pin: bool = False) -> None:
        self._buf = buf
        self._ptr = hash(buf)  # the GstBuffer's address
        self.layout = layout.for_pointer(self._ptr)
        self._cinfo: _GstMapInfo | None = None
        self.device = device  # where CUDA memory planes are viewed from
        #: host memory that is page-locked (see :mod:`pyinfer.frames.pinning`): copied to the GPU without staging
        self.pinned = False
        if layout.memory == "cuda":
            self._map_cuda(device)
        else:
            self._map_system(pin)

    def _map_system(self, pin: bool = False) -> None:
        info = _GstMapInfo()
        if not _gst().gst_buffer_map(self._ptr, ctypes.byref(info), int(Gst.MapFlags.READ)):
            raise FrameError("could not map the buffer for reading")
        self._cinfo = info
        try:
            layout, base, size = self.layout, int(info.data or 0), int(info.size)
            if pin:
                pinning = host_pinning()
                self.pinned = pinning is not None and pinning.pinned(int(info.memory or 0), base, size)
            key = (base, size, "cpu", layout.format, layout.width, layout.height, layout.offsets, layout.strides)
            planes = _views_get(key) if base else None
            if planes is None:
                layout.check(size)
                planes = self._system_planes(base, size)
                if all(stride > 0 for stride in layout.strides):  # not copies (see _view): kept for the next time
                    _views_put(key, planes)
            self.planes = list(planes)
        except BaseException:
            self.close()
            raise

    def _system_planes(self, base: int, size: int) -> list:
        import numpy as np
        import torch

        if size == 0:
            flat = torch.empty(0, dtype=torch.uint8)
        else:
            flat = torch.from_numpy(np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(base)))
        return [self._view(flat, i, shape) for i, shape in enumerate(self.layout.plane_shapes())]

    def _view(self, flat, i: int, shape: tuple[int, ...]):
        rows, cols, px = shape
        offset, stride = self.layout.offsets[i], self.layout.strides[i]
        if stride < 0:  # bottom-up rows: torch has no negative strides, so this plane is copied upright
            top = offset + stride * (rows - 1)
            return flat.as_strided((rows, cols, px), (-stride, px, 1), top).flip(0)
        return flat.as_strided((rows, cols, px), (stride, px, 1), offset)

    def _map_cuda(self, device: str) -> None:
        import torch

        lib, ptr = _gst(), self._ptr
        if lib.gst_buffer_n_memory(ptr) != 1:
            raise FrameError(f"a CUDA memory buffer with {lib.gst_buffer_n_memory(ptr)} memories (pyinfer reads one)")
        info = _GstMapInfo()
        if not lib.gst_buffer_map(ptr, ctypes.byref(info), int(Gst.MapFlags.READ) | MAP_CUDA):
            raise FrameError("could not map the CUDA memory buffer for reading (GST_MAP_CUDA)")
        self._cinfo = info
        try:
            layout, base, size = self.layout, int(info.data), int(info.size)
            key = (base, size, device, layout.format, layout.width, layout.height, layout.offsets, layout.strides)
            planes = _views_get(key)
            if planes is None:
                layout.check(size)
                planes = []
                for i, (rows, cols, px) in enumerate(layout.plane_shapes()):
                    offset, stride = layout.offsets[i], layout.strides[i]
                    if stride <= 0:
                        raise FrameError(f"CUDA memory plane {i} has stride {stride}: pyinfer reads top-down planes")
                    arr = _CudaArray(base + offset, (rows, cols, px), (stride, px, 1))
                    planes.append(torch.as_tensor(arr, device=device))
                _views_put(key, planes)
            self.planes = list(planes)
        except BaseException:
            self.close()
            raise

    def frames(self):
        """The frame as the engine takes it: (1, H, W, C) packed, or YUV planes with a batch of one."""
        from pyinfer.ops.colour import YuvFrames

        layout, p = self.layout, self.planes
        if layout.format == "NV12":
            uv = p[1]
            return YuvFrames(p[0][None, ..., 0], uv[None, ..., 0], uv[None, ..., 1], layout.colour)
        if layout.format == "I420":
            return YuvFrames(p[0][None, ..., 0], p[1][None, ..., 0], p[2][None, ..., 0], layout.colour)
        return p[0][None]

    def close(self) -> None:
        """Unmap (the views must not be used after this)."""
        self.planes = []
        if self._cinfo is not None:
            cinfo, self._cinfo = self._cinfo, None
            _gst().gst_buffer_unmap(self._ptr, ctypes.byref(cinfo))
        self._buf = None


def map_frame(buf: Gst.Buffer, layout: VideoLayout, device: str = "cuda", *, pin: bool = False) -> MappedFrame:
    """Map ``buf`` (see :class:`MappedFrame`); FrameError if its memory does not hold the frame. ``pin``: host
    memory that a pool recycles is page-locked in place (:mod:`pyinfer.frames.pinning`), for a GPU model."""
    return MappedFrame(buf, layout, device, pin=pin)
