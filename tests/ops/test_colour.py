"""YUV 4:2:0 -> RGB (pyinfer.ops.colour) against GStreamer's own videoconvert, on the same frames.

The CUDA-memory path runs this same code on CUDA tensors; here it runs on CPU tensors. The frames come from the
scene generator (textured background, sharp-edged coloured shapes) and GStreamer's test patterns, converted to
YUV by videoconvert with each matrix, range and chroma siting, and back to RGB by videoconvert as the reference.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pyinfer._gi import Gst, GstVideo
from pyinfer.frames.video import VideoLayout, map_frame
from pyinfer.ops.colour import YuvColour, YuvFrames, yuv_rgb_at
from pyinfer.ops.letterbox import letterbox
from pyinfer.scene.generator import Scene

W, H = 320, 240


def _convert(frame: np.ndarray, caps: str) -> tuple[Gst.Buffer, Gst.Caps, np.ndarray]:
    """RGB frame -> videoconvert -> ``caps`` (the YUV buffer) -> videoconvert -> RGB (the reference)."""
    pipeline = Gst.parse_launch(
        f"appsrc name=src caps=video/x-raw,format=RGB,width={W},height={H},framerate=1/1 format=time ! "
        f"videoconvert ! {caps} ! tee name=t ! queue ! appsink name=yuv t. ! queue ! videoconvert ! "
        "video/x-raw,format=RGB ! appsink name=rgb"
    )
    pipeline.set_state(Gst.State.PLAYING)
    try:
        src = pipeline.get_by_name("src")
        buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(frame).tobytes())
        buf.pts = 0
        src.emit("push-buffer", buf)
        src.emit("end-of-stream")
        yuv = pipeline.get_by_name("yuv").emit("try-pull-sample", 10 * Gst.SECOND)
        rgb = pipeline.get_by_name("rgb").emit("try-pull-sample", 10 * Gst.SECOND)
        assert yuv is not None and rgb is not None
        _ok, info = rgb.get_buffer().map(Gst.MapFlags.READ)
        ref = np.frombuffer(info.data, np.uint8).reshape(H, W * 3)[:, : W * 3].reshape(H, W, 3).copy()
        rgb.get_buffer().unmap(info)
        return yuv.get_buffer(), yuv.get_caps(), ref
    finally:
        pipeline.set_state(Gst.State.NULL)


def _scene_frame() -> np.ndarray:
    frame, _ = Scene(seed=7, width=W, height=H).frame(5)
    return frame[..., :3]


@pytest.mark.parametrize("fmt", ["NV12", "I420"])
@pytest.mark.parametrize(
    "colorimetry",
    ["bt709", "bt601", "bt2020", "1:4:0:0"],  # 1:4:0:0: full range, BT.601 matrix (JPEG)
)
@pytest.mark.parametrize("site", ["jpeg", "mpeg2"])
def test_yuv_to_rgb_matches_videoconvert_within_its_fixed_point_error(fmt, colorimetry, site):
    buf, caps, ref = _convert(_scene_frame(), f"video/x-raw,format={fmt},colorimetry={colorimetry},chroma-site={site}")
    layout = VideoLayout.from_caps(caps)
    assert layout.colour.cosited == (site == "mpeg2")
    if fmt == "I420":  # videoconvert 1.22 converts I420 through a fast path that repeats chroma samples
        layout = dataclasses.replace(layout, colour=dataclasses.replace(layout.colour, nearest_chroma=True))
    frame = map_frame(buf, layout)
    try:
        got = frame.frames().to_rgb()[0].numpy().astype(int)
    finally:
        frame.close()
    diff = np.abs(got - ref.astype(int))
    # videoconvert 1.22 rounds its matrix to 6 fractional bits (limited-range Y 235 -> 253): a few levels off.
    assert diff.mean() < 2.6, diff.mean()
    assert np.percentile(diff, 99.9) <= 6
    assert diff.max() <= 12


@pytest.mark.parametrize(
    ("yuv", "colour", "rgb"),
    [
        ((16, 128, 128), YuvColour("bt709"), (0, 0, 0)),
        ((235, 128, 128), YuvColour("bt709"), (255, 255, 255)),
        ((126, 128, 128), YuvColour("bt709"), (128, 128, 128)),
        ((63, 102, 240), YuvColour("bt709"), (255, 0, 0)),  # BT.709 limited-range red
        ((173, 42, 26), YuvColour("bt709"), (0, 255, 0)),  # green
        ((32, 240, 118), YuvColour("bt709"), (0, 0, 255)),  # blue
        ((81, 90, 240), YuvColour("bt601"), (255, 0, 0)),  # BT.601 red
        ((16, 128, 128), YuvColour("bt601", full_range=True), (16, 16, 16)),  # full range: Y is the grey level
    ],
)
def test_the_conversion_gives_the_standard_colours(yuv, colour, rgb):
    y, u, v = (
        torch.full(shape, value, dtype=torch.uint8) for shape, value in zip(((1, 4, 6), (1, 2, 3), (1, 2, 3)), yuv)
    )
    got = YuvFrames(y, u, v, colour).to_rgb()
    assert torch.all((got.to(torch.int16) - torch.tensor(rgb, dtype=torch.int16)).abs() <= 1), got[0, 0, 0]


def test_letterbox_of_yuv_planes_is_letterbox_of_their_rgb():
    y = torch.randint(0, 256, (2, 90, 160), dtype=torch.uint8)
    uv = torch.randint(0, 256, (2, 45, 80, 2), dtype=torch.uint8)
    frames = YuvFrames(y, uv[..., 0], uv[..., 1], YuvColour("bt709"))
    rgb = frames.to_rgb()
    got, geo = letterbox(frames, 64, 64)
    from pyinfer.ops.letterbox import PAD_VALUE, resize_gather

    expected = torch.full_like(got, PAD_VALUE / 255.0)
    picture = expected[:, :, int(geo.pad_y) : int(geo.pad_y) + geo.resized_h, :]
    resize_gather(rgb, geo.resized_w, geo.resized_h, "RGB", picture)
    assert torch.equal(got, expected)  # the conversion inside the gather is the same as converting first


def test_odd_sizes_take_the_last_chroma_sample():
    y = torch.full((1, 5, 7), 100, dtype=torch.uint8)
    u = torch.full((1, 3, 4), 128, dtype=torch.uint8)
    v = torch.full((1, 3, 4), 128, dtype=torch.uint8)
    rgb = yuv_rgb_at(YuvFrames(y, u, v, YuvColour()), torch.arange(5), torch.arange(7))
    assert rgb.shape == (1, 5, 7, 3)
    assert len(torch.unique(rgb)) == 1


def test_padded_and_offset_planes_from_a_video_meta_are_read_where_they_are():
    frame = _scene_frame()
    buf, caps, _ = _convert(frame, "video/x-raw,format=NV12")
    layout = VideoLayout.from_caps(caps)
    plain = map_frame(buf, layout)
    expected = plain.frames().to_rgb()
    plain.close()
    # The same planes with 64 bytes of padding per row and the UV plane 1000 bytes further on.
    _ok, info = buf.map(Gst.MapFlags.READ)
    data = np.frombuffer(info.data, np.uint8)
    yp = data[: W * H].reshape(H, W)
    uvp = data[W * H : W * H * 3 // 2].reshape(H // 2, W)
    buf.unmap(info)
    stride = W + 64
    padded = np.zeros(stride * H + 1000 + stride * H // 2, np.uint8)
    padded[: stride * H].reshape(H, stride)[:, :W] = yp
    uv_off = stride * H + 1000
    padded[uv_off:].reshape(H // 2, stride)[:, :W] = uvp
    pbuf = Gst.Buffer.new_wrapped(padded.tobytes())
    GstVideo.buffer_add_video_meta_full(
        pbuf, GstVideo.VideoFrameFlags.NONE, GstVideo.VideoFormat.NV12, W, H, 2, [0, uv_off, 0, 0],
        [stride, stride, 0, 0],
    )  # fmt: skip
    mapped = map_frame(pbuf, layout)
    try:
        assert torch.equal(mapped.frames().to_rgb(), expected)
    finally:
        mapped.close()


def test_a_video_meta_pointing_outside_the_buffer_is_refused():
    from pyinfer.frames.video import FrameError

    _buf, caps, _ = _convert(_scene_frame(), "video/x-raw,format=NV12")
    layout = VideoLayout.from_caps(caps)
    bad = Gst.Buffer.new_wrapped(bytes(W * H))  # a Y plane only
    GstVideo.buffer_add_video_meta_full(
        bad, GstVideo.VideoFrameFlags.NONE, GstVideo.VideoFormat.NV12, W, H, 2, [0, W * H, 0, 0], [W, W, 0, 0]
    )
    with pytest.raises(FrameError, match="plane 1"):
        map_frame(bad, layout)
    neg = Gst.Buffer.new_wrapped(bytes(W * H * 3 // 2))
    GstVideo.buffer_add_video_meta_full(
        neg, GstVideo.VideoFrameFlags.NONE, GstVideo.VideoFormat.NV12, W, H, 2, [0, W * H, 0, 0], [-W, W, 0, 0]
    )
    with pytest.raises(FrameError, match="plane 0"):
        map_frame(neg, layout)
