"""Frames in system memory (``video/x-raw``): packed RGB-family formats mapped zero-copy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pyinfer._gi import Gst, GstVideo

#: Packed formats the element accepts, with their bytes per pixel.
FORMATS: dict[str, int] = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "RGBx": 4, "BGRx": 4}


@dataclass(frozen=True)
class FrameLayout:
    """Where the pixels of one frame are in a buffer's memory."""

    format: str
    width: int
    height: int
    channels: int
    stride: int
    offset: int

    @classmethod
    def from_caps(cls, caps: Gst.Caps) -> FrameLayout:
        """Layout from negotiated caps (strides as GstVideoInfo computes them: rows padded to 4 bytes)."""
        info = GstVideo.VideoInfo.new_from_caps(caps)
        fmt = GstVideo.VideoFormat.to_string(info.finfo.format)
        if fmt not in FORMATS:
            raise ValueError(f"unsupported video format {fmt}; supported: {', '.join(FORMATS)}")
        return cls(fmt, info.width, info.height, FORMATS[fmt], info.stride[0], info.offset[0])

    def for_buffer(self, buf: Gst.Buffer) -> FrameLayout:
        """The layout of ``buf``: its GstVideoMeta (if any) overrides the stride and offset of the caps."""
        meta = GstVideo.buffer_get_video_meta(buf)
        if meta is None or (meta.stride[0] == self.stride and meta.offset[0] == self.offset):
            return self
        return FrameLayout(self.format, self.width, self.height, self.channels, meta.stride[0], meta.offset[0])

    def span(self) -> tuple[int, int]:
        """The first byte the frame's pixels use and one past the last, counted from the buffer's start.

        Any stride sign: with a negative stride (bottom-up rows) the last row is the first in memory.
        """
        last_row = self.stride * (self.height - 1)
        return self.offset + min(0, last_row), self.offset + max(0, last_row) + self.width * self.channels


def frame_array(data: memoryview, layout: FrameLayout, *, writeable: bool = False) -> np.ndarray:
    """A (H, W, C) uint8 view of mapped memory honouring the row stride; no copy.

    The stride may be negative (a bottom-up layout: the first row last in memory, at ``offset``). Every byte
    the view addresses is checked to lie inside ``data``. ``writeable=True`` needs memory mapped for writing.

    Raises:
        ValueError: the frame does not fit in ``data`` (it would start before it or end after it).
    """
    start, end = layout.span()
    if start < 0:
        raise ValueError(
            f"a {layout.width}x{layout.height} {layout.format} frame with stride {layout.stride} and offset "
            f"{layout.offset} starts {-start} bytes before the buffer (a negative stride needs an offset of at "
            f"least {layout.offset - start})"
        )
    if len(data) < end:
        raise ValueError(
            f"buffer holds {len(data)} bytes, a {layout.width}x{layout.height} {layout.format} frame "
            f"with stride {layout.stride} needs {end}" + (f" (offset {layout.offset})" if layout.stride < 0 else "")
        )
    flat = np.frombuffer(data, dtype=np.uint8)
    # as_strided does no bounds checks of its own: the checks above are all that keeps the view inside ``data``.
    return np.lib.stride_tricks.as_strided(
        flat[layout.offset :],
        shape=(layout.height, layout.width, layout.channels),
        strides=(layout.stride, layout.channels, 1),
        writeable=writeable,
    )


@contextlib.contextmanager
def mapped_frame(buf: Gst.Buffer, layout: FrameLayout) -> Iterator[np.ndarray]:
    """Map ``buf`` for reading and yield its frame as a (H, W, C) uint8 view, valid inside the block only."""
    ok, info = buf.map(Gst.MapFlags.READ)
    if not ok:
        raise ValueError("could not map the buffer for reading")
    try:
        yield frame_array(info.data, layout.for_buffer(buf))
    finally:
        buf.unmap(info)
