"""Helpers for tests: run pipelines, push frames, build small TorchScript models."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyinfer._gi import GLib, Gst, GstVideo
from pyinfer.detections import Detections
from pyinfer.meta import FrameInfo, read_detections, read_frame_info


@dataclass
class PipelineResult:
    """What a pipeline run left: the final message and what reached the appsink named ``sink``."""

    message: Gst.MessageType | None
    error: GLib.Error | None = None
    debug: str = ""
    error_source: str = ""
    pts: list[int] = field(default_factory=list)
    detections: list[Detections] = field(default_factory=list)
    frames: list[FrameInfo | None] = field(default_factory=list)  # pyinfer's frame record per buffer
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.message == Gst.MessageType.EOS


def run(pipeline: Gst.Pipeline, timeout_s: float = 60.0, feed=None) -> PipelineResult:
    """Play ``pipeline`` until EOS or ERROR (or timeout), collecting appsink buffers; always back to NULL."""
    result = PipelineResult(message=None)
    sink = pipeline.get_by_name("sink")
    if sink is not None:

        def on_sample(appsink: Gst.Element) -> Gst.FlowReturn:
            buf = appsink.emit("pull-sample").get_buffer()
            result.pts.append(buf.pts)
            result.detections.append(read_detections(buf))
            result.frames.append(read_frame_info(buf))
            return Gst.FlowReturn.OK

        sink.set_property("emit-signals", True)
        sink.set_property("sync", False)
        handler = sink.connect("new-sample", on_sample)
    bus = pipeline.get_bus()
    try:
        pipeline.set_state(Gst.State.PLAYING)
        if feed is not None:
            feed(pipeline)
        deadline = Gst.util_get_timestamp() + int(timeout_s * Gst.SECOND)
        while True:
            remaining = deadline - Gst.util_get_timestamp()
            if remaining <= 0:
                break
            msg = bus.timed_pop_filtered(
                remaining, Gst.MessageType.EOS | Gst.MessageType.ERROR | Gst.MessageType.WARNING
            )
            if msg is None:
                break
            if msg.type == Gst.MessageType.WARNING:
                result.warnings.append(msg.parse_warning()[0].message)
                continue
            result.message = msg.type
            if msg.type == Gst.MessageType.ERROR:
                result.error, result.debug = msg.parse_error()
                result.error_source = msg.src.get_name()
            break
    finally:
        pipeline.set_state(Gst.State.NULL)
        if sink is not None:
            sink.disconnect(handler)
    return result


def push_frames(
    appsrc: Gst.Element, frames: list[np.ndarray], fmt: str = "RGB", fps: int = 30, stride: int | None = None
) -> None:
    """Push (H, W, C) frames into an appsrc with their caps, rows padded as GstVideoInfo lays them out
    (or to ``stride`` bytes with a GstVideoMeta saying so), then EOS."""
    h, w, c = frames[0].shape
    caps = Gst.Caps.from_string(f"video/x-raw,format={fmt},width={w},height={h},framerate={fps}/1")
    appsrc.set_property("caps", caps)
    appsrc.set_property("format", Gst.Format.TIME)
    info = GstVideo.VideoInfo.new_from_caps(caps)
    row = stride or info.stride[0]
    for i, frame in enumerate(frames):
        padded = np.zeros((h, row), np.uint8)
        padded[:, : w * c] = frame.reshape(h, w * c)
        buf = Gst.Buffer.new_wrapped(padded.tobytes())
        if stride is not None:
            GstVideo.buffer_add_video_meta_full(
                buf, GstVideo.VideoFrameFlags.NONE, info.finfo.format, w, h, 1, [0, 0, 0, 0], [row, 0, 0, 0]
            )
        buf.pts = i * Gst.SECOND // fps
        buf.duration = Gst.SECOND // fps
        if appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            break
    appsrc.emit("end-of-stream")


def save_torchscript(module, path: Path, config: dict | None, example) -> Path:
    import torch

    traced = torch.jit.trace(module.eval(), example, check_trace=False)
    extra = {"config.txt": json.dumps(config)} if config is not None else {}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


class FixedBoxes:
    """A TorchScript model whose output is a fixed table of boxes (cx, cy, w, h, scores...) per frame."""

    @staticmethod
    def build(table: np.ndarray):
        import torch

        class _M(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.register_buffer("table", torch.from_numpy(table.astype(np.float32)))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                # Depends on x so the batch dimension is traced, not baked in.
                zero = x[:, :1, :1, :1].flatten(1).sum(1).view(-1, 1, 1) * 0
                return self.table.unsqueeze(0) + zero

        return _M()


#: Three boxes in a 320x320 input: two overlapping of class 0 (NMS keeps one), one of class 2.
FIXED_TABLE = np.array(
    [  # columns are anchors; rows cx, cy, w, h, score0, score1, score2
        [100.0, 104.0, 250.0, 160.0],
        [100.0, 100.0, 200.0, 160.0],
        [40.0, 40.0, 60.0, 320.0],
        [40.0, 40.0, 30.0, 320.0],
        [0.9, 0.8, 0.05, 0.1],
        [0.0, 0.0, 0.1, 0.05],
        [0.0, 0.0, 0.7, 0.2],
    ],
    dtype=np.float32,
)


def analytics_test(fn=None, *, oriented: bool = False):
    """Decorate a test of GstAnalytics (GStreamer >= 1.24; ``oriented``: oriented boxes, >= 1.26).

    Both CI legs run it: where this GStreamer has the feature, the test itself runs (the Debian 13 leg); where it
    has not (Debian 12: GStreamer 1.22), it checks instead that pyinfer says so clearly, naming the version and
    the way out, rather than being skipped.
    """
    import functools

    def decorate(test):
        @functools.wraps(test)
        def wrapper(*args, **kwargs):
            from pyinfer.meta import analytics
            from pyinfer.meta.codecs import codec

            version = Gst.version()[:2]
            if oriented and version < (1, 26):
                assert not analytics.oriented_available(), "oriented OD Mtds reported on GStreamer < 1.26"
                return None
            if version < (1, 24):
                assert not analytics.available(), "GstAnalytics reported on GStreamer < 1.24"
                import pytest

                with pytest.raises(ValueError, match=r"GStreamer >= 1\.24.*meta=roi"):
                    codec("analytics")
                return None
            return test(*args, **kwargs)

        return wrapper

    return decorate(fn) if fn is not None else decorate


def load_committed(path: Path, trainer: str) -> tuple:
    """A committed embedded model (TorchScript) on the CPU, in eval mode, and its ``config.txt`` metadata; the
    assertion names the training script that writes it when the file is missing."""
    import warnings

    import torch

    assert path.is_file(), f"{path} is missing: run train/{trainer} --export (docs/models.md)"
    extra = {"config.txt": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 marks TorchScript deprecated
        model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return model.eval(), json.loads(extra["config.txt"])
