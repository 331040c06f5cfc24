"""Packed RGB-family frames in system memory: layouts from caps and GstVideoMeta, zero-copy views."""

from __future__ import annotations

import numpy as np
import pytest

from pyinfer._gi import Gst, GstVideo
from pyinfer.frames.system import FORMATS, FrameLayout, frame_array, mapped_frame

SIZES = [(641, 479), (1, 1), (3, 5), (640, 480)]


def _caps(fmt: str, w: int, h: int) -> Gst.Caps:
    return Gst.Caps.from_string(f"video/x-raw,format={fmt},width={w},height={h},framerate=30/1")


def _padded(frame: np.ndarray, stride: int, offset: int = 0, fill: int = 0xAB) -> bytes:
    """The frame's rows at ``stride`` bytes from ``offset``, everything else ``fill`` (so leaks show)."""
    h, w, c = frame.shape
    mem = np.full(offset + stride * h, fill, np.uint8)
    mem[offset:].reshape(h, stride)[:, : w * c] = frame.reshape(h, w * c)
    return mem.tobytes()


def _frame(rng: np.random.Generator, w: int, h: int, c: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize(("w", "h"), SIZES)
def test_layout_from_caps_has_gstvideoinfo_stride(fmt, w, h):
    caps = _caps(fmt, w, h)
    info = GstVideo.VideoInfo.new_from_caps(caps)
    layout = FrameLayout.from_caps(caps)
    assert layout == FrameLayout(fmt, w, h, FORMATS[fmt], info.stride[0], 0)
    assert layout.stride % 4 == 0
    assert layout.stride >= w * FORMATS[fmt]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_frame_array_returns_exactly_the_pixels_of_a_padded_buffer(fmt):
    w, h = 641, 479
    layout = FrameLayout.from_caps(_caps(fmt, w, h))
    frame = _frame(np.random.default_rng(1), w, h, layout.channels)
    data = _padded(frame, layout.stride)
    arr = frame_array(memoryview(data), layout)
    assert arr.shape == (h, w, layout.channels)
    assert arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, frame)
    assert not arr.flags.writeable


@pytest.mark.parametrize(("stride_extra", "offset"), [(0, 0), (37, 0), (64, 100), (1, 7)])
def test_gstvideometa_stride_and_offset_override_the_caps(stride_extra, offset):
    w, h, c = 641, 479, 3
    layout = FrameLayout.from_caps(_caps("RGB", w, h))
    stride = w * c + stride_extra
    frame = _frame(np.random.default_rng(2), w, h, c)
    buf = Gst.Buffer.new_wrapped(_padded(frame, stride, offset))
    GstVideo.buffer_add_video_meta_full(
        buf, GstVideo.VideoFrameFlags.NONE, GstVideo.VideoFormat.RGB, w, h, 1, [offset, 0, 0, 0], [stride, 0, 0, 0]
    )
    assert layout.for_buffer(buf) == FrameLayout("RGB", w, h, c, stride, offset)
    with mapped_frame(buf, layout) as arr:
        np.testing.assert_array_equal(arr, frame)


def test_for_buffer_without_meta_or_with_matching_meta_is_the_caps_layout():
    layout = FrameLayout.from_caps(_caps("BGRx", 641, 479))
    buf = Gst.Buffer.new_allocate(None, layout.stride * layout.height, None)
    assert layout.for_buffer(buf) is layout
    GstVideo.buffer_add_video_meta_full(
        buf, GstVideo.VideoFrameFlags.NONE, GstVideo.VideoFormat.BGRX, 641, 479, 1, [0, 0, 0, 0],
        [layout.stride, 0, 0, 0],
    )  # fmt: skip
    assert layout.for_buffer(buf) is layout


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_mapped_frame_reads_a_gst_buffer(fmt):
    w, h = 641, 479
    layout = FrameLayout.from_caps(_caps(fmt, w, h))
    frame = _frame(np.random.default_rng(3), w, h, layout.channels)
    buf = Gst.Buffer.new_wrapped(_padded(frame, layout.stride))
    with mapped_frame(buf, layout) as arr:
        np.testing.assert_array_equal(arr, frame)


@pytest.mark.parametrize(
    ("layout", "size"),
    [
        (FrameLayout("RGB", 641, 479, 3, 1924, 0), 1924 * 479 - 2),  # one byte short of 1924 * 478 + 1923
        (FrameLayout("RGBA", 4, 2, 4, 16, 0), 31),
        (FrameLayout("RGB", 4, 2, 3, 12, 10), 33),  # the offset counts
        (FrameLayout("RGB", 4, 2, 3, 12, 0), 0),
    ],
)
def test_a_buffer_too_small_raises_value_error_naming_sizes(layout, size):
    need = layout.offset + layout.stride * (layout.height - 1) + layout.width * layout.channels
    assert size < need
    match = (
        rf"holds {size} bytes, a {layout.width}x{layout.height} {layout.format} frame "
        rf"with stride {layout.stride} needs {need}"
    )
    with pytest.raises(ValueError, match=match):
        frame_array(memoryview(bytes(size)), layout)


def test_the_last_row_needs_no_padding():
    layout = FrameLayout("RGB", 3, 2, 3, 12, 0)  # rows padded to 12 bytes, last row 9 bytes
    data = bytes(range(21))
    arr = frame_array(memoryview(data), layout)
    assert arr[1].reshape(-1).tolist() == list(range(12, 21))


def test_writeable_view_writes_through_to_the_memory():
    layout = FrameLayout("RGB", 3, 2, 3, 12, 0)
    data = bytearray(24)
    arr = frame_array(memoryview(data), layout, writeable=True)
    arr[1, 2] = (1, 2, 3)
    assert data[12 + 6 : 12 + 9] == b"\x01\x02\x03"


@pytest.mark.parametrize("fmt", ["NV12", "I420", "GRAY8", "RGB16", "v210"])
def test_unsupported_format_raises_value_error_listing_supported_ones(fmt):
    supported = "RGB, BGR, RGBA, BGRA, RGBx, BGRx"
    with pytest.raises(ValueError, match=rf"unsupported video format {fmt}; supported: {supported}$"):
        FrameLayout.from_caps(_caps(fmt, 640, 480))


def _bottom_up(frame: np.ndarray, stride: int) -> bytes:
    """The frame's rows stored last row first (a bottom-up layout: stride -stride, offset stride * (h - 1))."""
    return _padded(frame[::-1], stride)


@pytest.mark.parametrize(("w", "h", "c", "pad"), [(37, 45, 3, 13), (1, 1, 4, 0), (5, 3, 3, 1)])
def test_a_bottom_up_layout_with_a_negative_stride_reads_the_rows_in_order(w, h, c, pad):
    stride = w * c + pad
    frame = _frame(np.random.default_rng(4), w, h, c)
    data = bytearray(_bottom_up(frame, stride))
    layout = FrameLayout("RGB" if c == 3 else "RGBA", w, h, c, -stride, stride * (h - 1))
    arr = frame_array(memoryview(data), layout, writeable=True)
    np.testing.assert_array_equal(arr, frame)
    arr[0, 0] = 255  # the top row is the last one in memory
    assert data[stride * (h - 1) : stride * (h - 1) + c] == b"\xff" * c


@pytest.mark.parametrize(
    ("layout", "size", "before"),
    [
        # pyosd's crash (issue #19): stride -row with offset 0 passed the size check and addressed the
        # h - 1 rows before the buffer's start.
        (FrameLayout("RGB", 37, 45, 3, -124, 0), 124 * 45, 124 * 44),
        (FrameLayout("RGB", 37, 45, 3, -124, 124 * 44 - 1), 124 * 45, 1),  # one byte short of bottom-up
        (FrameLayout("RGBA", 4, 2, 4, -16, 0), 32, 16),
    ],
)
def test_a_negative_stride_reaching_before_the_buffer_raises_value_error(layout, size, before):
    with pytest.raises(ValueError, match=rf"starts {before} bytes before the buffer"):
        frame_array(memoryview(bytearray(size)), layout, writeable=True)


@pytest.mark.parametrize(
    ("layout", "size"),
    [
        (FrameLayout("RGB", 37, 45, 3, -124, 124 * 44 + 1), 124 * 44 + 111),  # the top row ends 1 byte past it
        (FrameLayout("RGB", 37, 45, 3, -124, 124 * 45), 124 * 45),  # the offset alone is past the end
    ],
)
def test_a_negative_stride_reaching_past_the_end_raises_value_error(layout, size):
    with pytest.raises(ValueError, match=rf"holds {size} bytes"):
        frame_array(memoryview(bytearray(size)), layout)


@pytest.mark.parametrize("stride", [124, -124])
def test_every_byte_a_view_addresses_is_inside_the_buffer(stride):
    w, h, c = 37, 45, 3
    for offset in range(0, 124 * 45, 31):
        layout = FrameLayout("RGB", w, h, c, stride, offset)
        data = bytearray(124 * 45)
        try:
            arr = frame_array(memoryview(data), layout)
        except ValueError:
            continue
        base = np.frombuffer(data, np.uint8).ctypes.data
        first = arr.ctypes.data + min(0, stride * (h - 1)) - base
        last = arr.ctypes.data + max(0, stride * (h - 1)) + w * c - 1 - base
        assert first >= 0 and last < len(data), (offset, first, last)
