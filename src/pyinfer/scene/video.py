"""Write a scene as an H.264 MP4 (through a GStreamer pipeline) plus its ground truth as JSON lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pyinfer.errors import ConfigError
from pyinfer.jsonl import write_jsonl
from pyinfer.scene.generator import Scene, SceneObject

# Constant quantizer 18 with B-frames (about 1.5 Mbit/s at 640x480, 30 fps): near-lossless, so a detector
# trained or evaluated on decoded frames sees clean shapes. x264's 4:2:0 needs even sizes; odd sizes are
# encoded as 4:4:4 (High 4:4:4 Predictive profile).
_ENCODER = "x264enc speed-preset=veryfast pass=quant quantizer=18 key-int-max={gop}"
_MAX_QUEUED_BYTES = 64 * 1024 * 1024


def render_frames(
    seed: int, width: int, height: int, frames: int, *, rotated: bool = False, marked: bool = False
) -> Iterator[tuple[np.ndarray, list[SceneObject]]]:
    """Yield ``(image, objects)`` for frames ``0 .. frames - 1`` of ``Scene(seed, width, height, rotated=rotated,
    marked=marked)``."""
    scene = Scene(seed, width, height, rotated=rotated, marked=marked)
    for index in range(frames):
        yield scene.frame(index)


def truth_record(index: int, pts_ns: int, width: int, height: int, objects: list[SceneObject]) -> dict[str, Any]:
    """One frame's ground truth in the schema of :mod:`pyinfer.jsonl` (boxes rounded to 0.01 px).

    Objects of rotated scenes add ``"cxcywhr": [cx, cy, w, h, angle]`` (pixels rounded to 0.01, the angle in
    radians to 1e-5; the canonical form of :mod:`pyinfer.scene.generator`). Objects of marked scenes add
    ``"mark"``: one of :data:`pyinfer.scene.MARKS`.
    """
    records = []
    for o in objects:
        rec: dict[str, Any] = {
            "bbox": [round(v, 2) for v in o.bbox],
            "confidence": 1.0,
            "class_id": o.class_id,
            "label": o.label,
            "object_id": o.object_id,
        }
        if o.cxcywhr is not None:
            rec["cxcywhr"] = [*(round(v, 2) for v in o.cxcywhr[:4]), round(o.cxcywhr[4], 5)]
        if o.mark is not None:
            rec["mark"] = o.mark
        records.append(rec)
    return {"frame": index, "pts_ns": pts_ns, "width": width, "height": height, "objects": records}


def _gst() -> Any:
    """GStreamer, imported on first use (keeps ``import pyinfer.scene.video`` light) and initialised."""
    from pyinfer._gi import Gst, ensure_init

    ensure_init()
    return Gst


def _raise_bus_error(msg: Any) -> None:
    err, debug = msg.parse_error()
    name = msg.src.get_name() if msg.src is not None else "pipeline"
    raise RuntimeError(f"GStreamer element {name!r} failed: {err.message}" + (f" ({debug})" if debug else ""))


def _check_bus(gst: Any, bus: Any, timeout_ns: int) -> None:
    """Raise if an ERROR message arrives on ``bus`` within ``timeout_ns``."""
    msg = bus.timed_pop_filtered(timeout_ns, gst.MessageType.ERROR)
    if msg is not None:
        _raise_bus_error(msg)


def write_scene(
    out_dir: str | Path,
    *,
    frames: int,
    seed: int,
    width: int,
    height: int,
    fps: int = 30,
    rotated: bool = False,
    marked: bool = False,
) -> tuple[Path, Path]:
    """Render ``frames`` frames of ``Scene(seed, width, height)`` to ``out_dir/video.mp4`` and ``out_dir/truth.jsonl``.

    The truth has one record per frame with ``pts_ns = round(frame * 1e9 / fps)``, ``confidence`` 1.0 and an
    ``object_id`` on every object. With ``rotated``, the scene is the rotated variant and every object also
    carries ``cxcywhr`` (see :func:`truth_record`). With ``marked``, every object carries a mark (drawn, and
    named as ``"mark"`` in the truth).

    Returns:
        ``(video_path, truth_path)``.

    Raises:
        ConfigError: on a non-positive frame count or fps (and on a bad scene size or seed, or ``marked`` with
            ``rotated``).
        RuntimeError: when the GStreamer pipeline fails; the message names the failing element.
    """
    if not isinstance(frames, int) or frames < 1:
        raise ConfigError(f"frames must be a positive integer, got {frames!r}")
    if not isinstance(fps, int) or fps < 1:
        raise ConfigError(f"fps must be a positive integer, got {fps!r}")
    scene = Scene(seed, width, height, rotated=rotated, marked=marked)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video_path, truth_path = out / "video.mp4", out / "truth.jsonl"
    records: list[dict[str, Any]] = []

    def images() -> Iterator[np.ndarray]:
        for index in range(frames):
            image, objects = scene.frame(index)
            records.append(truth_record(index, round(index * 1e9 / fps), width, height, objects))
            yield image

    encode_frames(video_path, images(), width=width, height=height, fps=fps)
    write_jsonl(truth_path, records)
    return video_path, truth_path


def encode_frames(path: str | Path, images: Iterator[np.ndarray], *, width: int, height: int, fps: int) -> int:
    """Encode (H, W, 3) uint8 RGB images to an H.264 MP4 at ``path``; returns the number of frames written.

    Raises:
        RuntimeError: when an element of the pipeline fails (named in the message) or EOS never arrives.
    """
    gst = _gst()
    chroma = "I420" if width % 2 == 0 and height % 2 == 0 else "Y444"
    desc = (
        f"appsrc name=src format=time block=false caps=video/x-raw,format=RGB,width={width},height={height},"
        f"framerate={fps}/1 ! videoconvert ! video/x-raw,format={chroma} ! {_ENCODER.format(gop=2 * fps)} ! "
        "h264parse ! mp4mux ! filesink name=sink"
    )
    pipeline = gst.parse_launch(desc)
    pipeline.get_by_name("sink").set_property("location", str(path))
    src, bus = pipeline.get_by_name("src"), pipeline.get_bus()
    stride = (width * 3 + 3) // 4 * 4  # GStreamer's default RGB row stride is 4-byte aligned
    duration = gst.util_uint64_scale(gst.SECOND, 1, fps)
    count = 0
    try:
        if pipeline.set_state(gst.State.PLAYING) == gst.StateChangeReturn.FAILURE:
            msg = bus.pop_filtered(gst.MessageType.ERROR)
            if msg is not None:
                _raise_bus_error(msg)
            raise RuntimeError(f"GStreamer pipeline would not start: {desc}")
        for image in images:
            if image.shape != (height, width, 3) or image.dtype != np.uint8:
                want = f"({height}, {width}, 3) uint8"
                raise ValueError(f"frame {count}: expected {want}, got {image.shape} {image.dtype}")
            if stride != width * 3:
                padded = np.zeros((height, stride), np.uint8)
                padded[:, : width * 3] = image.reshape(height, width * 3)
                image = padded
            buf = gst.Buffer.new_wrapped(np.ascontiguousarray(image).tobytes())
            buf.pts = gst.util_uint64_scale(count, gst.SECOND, fps)
            buf.duration = duration
            ret = src.emit("push-buffer", buf)
            count += 1
            _check_bus(gst, bus, 0)
            if ret != gst.FlowReturn.OK:
                raise RuntimeError(f"GStreamer appsrc refused frame {count - 1}: {ret.value_nick}")
            # Throttle: let the encoder drain the queue, stopping at the first error it posts.
            while src.get_property("current-level-bytes") > _MAX_QUEUED_BYTES:
                _check_bus(gst, bus, 10 * gst.MSECOND)
        src.emit("end-of-stream")
        msg = bus.timed_pop_filtered(120 * gst.SECOND, gst.MessageType.EOS | gst.MessageType.ERROR)
        if msg is None:
            raise RuntimeError(f"GStreamer pipeline did not reach EOS within 120 s writing {path}")
        if msg.type == gst.MessageType.ERROR:
            _raise_bus_error(msg)
    finally:
        pipeline.set_state(gst.State.NULL)
    return count
