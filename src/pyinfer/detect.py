"""The main job behind ``pyinfer detect``: file -> decode -> pyinfer -> (pyosd -> MP4) + JSON lines."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyinfer.jsonl import frame_record


@dataclass(frozen=True)
class DetectOptions:
    """What to run; empty ``model_engine`` means the embedded shapes detector."""

    input: str
    model_engine: str = ""
    labels_file: str = ""
    json_out: str | None = None
    video_out: str | None = None
    device: str = "auto"
    batch_size: int = 1
    confidence_threshold: float = 0.25
    progress: bool = True
    publish: str | None = None  # a target for pymsgconv ! pymsgbroker (see pyinfer.brokers.parse_target)
    track: bool = False  # insert pytracker after pyinfer


@dataclass
class DetectResult:
    """Counts and timing of a finished run."""

    frames: int = 0
    detections: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames per second over the whole run (decode, inference, drawing and encoding)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people."""
        outs = f"; wrote {', '.join(self.outputs)}" if self.outputs else ""
        return (
            f"frames: {self.frames}  time: {self.seconds:.1f} s  frames/s: {self.fps:.1f}  "
            f"detections: {self.detections}{outs}"
        )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_description(opts: DetectOptions, model: str, labels: str) -> str:
    """The gst-launch-style pipeline description for ``opts``."""
    infer = (
        f"pyinfer name=infer model-engine={_quote(model)} device={opts.device} batch-size={opts.batch_size} "
        f"confidence-threshold={opts.confidence_threshold}"
    )
    if labels:
        infer += f" labels-file={_quote(labels)}"
    head = f"filesrc location={_quote(opts.input)} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! {infer}"
    if opts.track:
        head += " ! pytracker name=track"
    if opts.publish:
        from pyinfer.brokers import BrokerError, parse_target

        try:
            proto, conn_str, topic = parse_target(opts.publish)
        except BrokerError as exc:
            raise RuntimeError(f"--publish {opts.publish}: {exc}") from exc
        # Every frame, one message each; the broker sits in line (a pass-through), so no tee is needed.
        head += (
            f" ! pymsgconv frame-interval=1 ! pymsgbroker name=broker proto={proto} conn-str={_quote(conn_str)} "
            f"topic={_quote(topic)}"
        )
    if opts.video_out:
        tail = (
            "pyosd ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=veryfast tune=zerolatency ! "
            f"h264parse ! mp4mux ! filesink location={_quote(opts.video_out)}"
        )
    else:
        tail = "fakesink sync=false"
    return f"{head} ! {tail}"


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def update(self, frames: int, position_ns: int, duration_ns: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < (0.2 if self.tty else 5.0)):
            return
        self.last = now
        frac = min(1.0, position_ns / duration_ns) if duration_ns > 0 else 0.0
        bar = "#" * int(frac * 30)
        line = f"[{bar:<30}] {frac * 100:5.1f}%  {frames} frames"
        print(
            ("\r" + line) if self.tty else line, end="" if self.tty and not final else "\n", file=sys.stderr, flush=True
        )


def run_detect(opts: DetectOptions) -> DetectResult:
    """Run the pipeline to the end. Raises RuntimeError with the bus error's text on failure."""
    import pyinfer
    from pyinfer._gi import Gst, structure
    from pyinfer.jsonl import write_jsonl
    from pyinfer.meta.roi import read_detections
    from pyinfer.zoo import get_model

    if not Path(opts.input).is_file():
        raise RuntimeError(f"input {opts.input} does not exist")
    model, labels = opts.model_engine, opts.labels_file
    if not model:
        embedded = get_model()
        model, labels = str(embedded.path), labels or str(embedded.labels_file)
    pyinfer.register()
    pipeline = Gst.parse_launch(build_description(opts, model, labels))
    result = DetectResult()
    records: list[dict] = []
    last_pts = [0]

    def on_buffer(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buf = info.get_buffer()
        with structure(pad.get_current_caps()) as s:
            width, height = s.get_value("width"), s.get_value("height")
        dets = read_detections(buf)
        pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else None
        if pts is not None:
            last_pts[0] = pts
        records.append(frame_record(result.frames, pts, width, height, dets))
        result.frames += 1
        result.detections += len(dets)
        return Gst.PadProbeReturn.OK

    # After the tracker when there is one, so the JSON lines carry track ids.
    probed = pipeline.get_by_name("track" if opts.track else "infer")
    probed.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_buffer)
    progress = _Progress(opts.progress)
    bus = pipeline.get_bus()
    t0 = time.perf_counter()
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        msg = bus.timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
        pipeline.set_state(Gst.State.NULL)
        raise RuntimeError(_error_text(msg) if msg else "the pipeline could not start")
    duration = -1
    try:
        while True:
            msg = bus.timed_pop_filtered(200 * Gst.MSECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
            if duration <= 0:
                ok, duration = pipeline.query_duration(Gst.Format.TIME)
                duration = duration if ok else -1
            progress.update(result.frames, last_pts[0], duration)
            if msg is None:
                continue
            if msg.type == Gst.MessageType.ERROR:
                raise RuntimeError(_error_text(msg))
            break
    finally:
        pipeline.set_state(Gst.State.NULL)
    result.seconds = time.perf_counter() - t0
    progress.update(result.frames, duration, duration, final=True)
    if opts.json_out:
        write_jsonl(opts.json_out, records)
        result.outputs.append(opts.json_out)
    if opts.video_out:
        result.outputs.append(opts.video_out)
    broker = pipeline.get_by_name("broker")
    if broker is not None:
        lost = broker.get_property("dropped") + broker.get_property("failed")
        result.outputs.append(f"{opts.publish} ({broker.get_property('published')} messages, {lost} lost)")
    return result


def _error_text(msg) -> str:
    err, _debug = msg.parse_error()
    return f"{msg.src.get_name()}: {err.message}"
