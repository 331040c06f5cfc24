"""The main job behind ``pyinfer detect``: file -> decode -> pyinfer -> (pyosd -> MP4) + JSON lines.

What a user relies on, in the order it happens:

- Output paths are checked (opened) before anything runs: a ``--json`` in a missing folder fails at once, not
  after the whole video.
- JSON lines are streamed: each frame's line is written, whole and flushed, as the frame leaves pyinfer (or
  pytracker), so an interrupted or failed run keeps every frame it finished.
- Ctrl-C (SIGINT) ends the stream with EOS, so the MP4 is finalised and plays; a second Ctrl-C stops at once.
- The encoder gets even frame sizes (x264's 4:2:0 needs them): odd sizes are padded by one black row or column,
  in the MP4 only.
- A damaged input whose decoder drops frames fails the run (exit 1) instead of reporting the frames that
  happened to decode.
- frames/s counts from the first frame, not from start (model loading).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyinfer.errors import ConfigError
from pyinfer.jsonl import frame_record

#: Bounds of the numeric options: the ``pyinfer`` element's property ranges (``gst-inspect-1.0 pyinfer``).
RANGES: dict[str, tuple[float, float]] = {
    "batch_size": (1, 1024),
    "confidence_threshold": (0.0, 1.0),
    "nms_iou_threshold": (0.0, 1.0),
    "interval": (0, 1_000_000),
    "input_width": (0, 16384),
    "input_height": (0, 16384),
}
#: How long an interrupted run waits for EOS to reach the sinks before giving up on finishing the outputs.
EOS_WAIT_S = 30.0


@dataclass(frozen=True)
class DetectOptions:
    """What to run; empty ``model_engine`` means the embedded shapes detector.

    ``model_engine`` may also name an embedded model (``shapes``, ``shapes-obb``: ``pyinfer models``), which
    brings its labels file. The other fields are the ``pyinfer`` element's properties of the same name; numeric
    ones must lie in :data:`RANGES` (ConfigError otherwise).
    """

    input: str
    model_engine: str = ""
    labels_file: str = ""
    json_out: str | None = None
    video_out: str | None = None
    device: str = "auto"
    backend: str = "auto"
    precision: str = "fp32"
    allow_pickle: bool = False
    batch_size: int = 1
    confidence_threshold: float = 0.25
    nms_iou_threshold: float = 0.45
    decoder: str = "auto"
    postprocess: str = ""
    interval: int = 0
    input_width: int = 0
    input_height: int = 0
    progress: bool = True
    publish: str | None = None  # a target for pymsgconv ! pymsgbroker (see pyinfer.brokers.parse_target)
    track: bool = False  # insert pytracker after pyinfer

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{name.replace('_', '-')} {value} is out of range: {low:g} to {high:g}")
        if (self.input_width > 0) != (self.input_height > 0):
            raise ConfigError("input-width and input-height go together: set both, or neither (model metadata)")


@dataclass
class DetectResult:
    """Counts and timing of a finished run.

    Attributes:
        frames: frames that went through pyinfer.
        detections: detections in them.
        seconds: from the first frame reaching pyinfer to the end of the stream (start-up left out).
        startup_seconds: from start to the first frame: loading the model, negotiating, decoding the first frame.
        outputs: what was written, for the summary.
        interrupted: the run was ended early by SIGINT (Ctrl-C); the outputs hold the frames before it.
        problem: why the run counts as failed although it reached the end (a damaged input), else "".
    """

    frames: int = 0
    detections: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    interrupted: bool = False
    problem: str = ""

    @property
    def fps(self) -> float:
        """Frames per second from the first frame on (decode, inference, drawing and encoding; not start-up)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people."""
        outs = f"; wrote {', '.join(self.outputs)}" if self.outputs else ""
        stopped = " (interrupted)" if self.interrupted else ""
        return (
            f"frames: {self.frames}{stopped}  time: {self.seconds:.1f} s  frames/s: {self.fps:.1f}  "
            f"detections: {self.detections}  (start-up {self.startup_seconds:.1f} s, not counted){outs}"
        )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def resolve_model(model_engine: str, labels_file: str = "") -> tuple[str, str]:
    """The model path and labels file to run.

    Empty ``model_engine`` is the embedded ``shapes`` detector; the name of an embedded model (``pyinfer
    models``) is that model, with its labels file unless ``labels_file`` is given. Anything else (a path,
    ``package.module:callable``) is passed on as it is; so is a file that exists under an embedded model's name.
    """
    from pyinfer.zoo import DEFAULT_MODEL, EMBEDDED

    name = model_engine or DEFAULT_MODEL
    if name in EMBEDDED and not Path(model_engine).is_file():
        embedded = EMBEDDED[name]
        return str(embedded.path), labels_file or str(embedded.labels_file)
    return model_engine, labels_file


def build_description(opts: DetectOptions, model: str, labels: str) -> str:
    """The gst-launch-style pipeline description for ``opts``."""
    props = {
        "model-engine": _quote(model),
        "backend": _quote(opts.backend),
        "precision": _quote(opts.precision),
        "device": _quote(opts.device),
        "batch-size": opts.batch_size,
        "confidence-threshold": opts.confidence_threshold,
        "nms-iou-threshold": opts.nms_iou_threshold,
        "decoder": _quote(opts.decoder),
        "interval": opts.interval,
    }
    if opts.allow_pickle:
        props["allow-pickle"] = "true"
    if opts.postprocess:
        props["postprocess"] = _quote(opts.postprocess)
    if opts.input_width and opts.input_height:
        props["input-width"], props["input-height"] = opts.input_width, opts.input_height
    if labels:
        props["labels-file"] = _quote(labels)
    infer = "pyinfer name=infer " + " ".join(f"{k}={v}" for k, v in props.items())
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
        # videobox "even" pads odd sizes by a black column/row (set from the caps: _pad_to_even_sizes).
        tail = (
            "pyosd ! videoconvert ! videobox name=even ! videoconvert ! video/x-raw,format=I420 ! "
            "x264enc speed-preset=veryfast tune=zerolatency ! h264parse ! mp4mux ! "
            f"filesink location={_quote(opts.video_out)}"
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


def check_outputs(opts: DetectOptions) -> None:
    """RuntimeError naming the option when an output path is the input or another output.

    filesink would truncate the video being read. Whether each path can be written is checked by opening it,
    before anything runs (:func:`run_detect`).
    """
    seen: dict[str, str] = {os.path.realpath(opts.input): "the input"}
    for option, path in (("--json", opts.json_out), ("--video", opts.video_out)):
        if path:
            real = os.path.realpath(path)
            if real in seen:
                raise RuntimeError(f"{option} {path} is {seen[real]}: give another path")
            seen[real] = f"the {option} output"


class _DecoderCount:
    """Frames in and out of each video decoder inside decodebin, to tell a damaged input.

    A decoder that cannot decode a damaged frame drops it (FFmpeg's H.264 decoder posts no bus message for
    that): fewer frames out than in.
    """

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}  # decoder name -> [frames in, frames out]

    def attach(self, pipeline, sub_bin, element) -> None:  # the deep-element-added signal (a streaming thread)
        from pyinfer._gi import Gst

        factory = element.get_factory()
        klass = factory.get_metadata("klass") if factory is not None else ""
        if "Decoder" not in klass or "Video" not in klass:
            return
        count = self.counts.setdefault(element.get_name(), [0, 0])

        def counter(index: int):
            def probe(pad, info) -> Gst.PadProbeReturn:
                if info.type & Gst.PadProbeType.BUFFER_LIST:
                    count[index] += info.get_buffer_list().length()
                else:
                    count[index] += 1
                return Gst.PadProbeReturn.OK

            return probe

        for index, pad_name in ((0, "sink"), (1, "src")):
            pad = element.get_static_pad(pad_name)
            if pad is not None:
                pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, counter(index))

    def problem(self, source: str, frames: int) -> str:
        """'' when every decoder gave as many frames as it was given; else what was lost."""
        for name, (fed, decoded) in self.counts.items():
            if decoded < fed:
                return (
                    f"{source} is damaged: its decoder {name} decoded {decoded} of the {fed} frames it was given; "
                    f"the outputs hold the {frames} frames that went through"
                )
        return ""


def _pad_to_even_sizes(videobox) -> None:
    """Have ``videobox`` add a black column/row to odd-sized frames (x264's 4:2:0 needs even sizes)."""
    from pyinfer._gi import Gst, structure

    def on_event(pad, info) -> Gst.PadProbeReturn:
        event = info.get_event()
        if event.type == Gst.EventType.CAPS:
            with structure(event.parse_caps()) as s:
                width, height = s.get_value("width"), s.get_value("height")  # type: ignore[union-attr]  # caps have a structure
            # Negative borders add pixels; set before videobox sees these caps, so it negotiates the new size.
            videobox.set_property("right", -(width % 2))
            videobox.set_property("bottom", -(height % 2))
        return Gst.PadProbeReturn.OK

    videobox.get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_event)


def run_detect(opts: DetectOptions) -> DetectResult:
    """Run the pipeline to the end (or to Ctrl-C). Raises RuntimeError with the bus error's text on failure.

    A damaged input that still reached the end is not raised: the result says so in ``problem``, with the
    frames that did decode written out.
    """
    import pyinfer
    from pyinfer._gi import Gst
    from pyinfer.jsonl import JsonLinesWriter

    if not Path(opts.input).is_file():
        raise RuntimeError(f"input {opts.input} does not exist")
    model, labels = resolve_model(opts.model_engine, opts.labels_file)
    check_outputs(opts)
    writer = None
    try:
        if opts.json_out:
            writer = JsonLinesWriter(opts.json_out)
    except OSError as exc:
        raise RuntimeError(f"cannot write --json {opts.json_out}: {exc.strerror or exc}") from exc
    try:
        if opts.video_out:
            open(opts.video_out, "wb").close()  # filesink opens it only once the pipeline runs
    except OSError as exc:
        if writer is not None:
            writer.close()
        raise RuntimeError(f"cannot write --video {opts.video_out}: {exc.strerror or exc}") from exc
    try:
        pyinfer.register()
        pipeline = Gst.parse_launch(build_description(opts, model, labels))
        return _run(pipeline, opts, writer)
    finally:
        if writer is not None:
            writer.close()


def _run(pipeline, opts: DetectOptions, writer) -> DetectResult:
    from pyinfer._gi import Gst, structure
    from pyinfer.meta import read_detections

    result = DetectResult()
    last_pts = [0]
    first_frame: list[float] = []  # perf_counter() when the first frame reached pyinfer
    write_error: list[str] = []

    def on_first(pad, info) -> Gst.PadProbeReturn:
        first_frame.append(time.perf_counter())
        return Gst.PadProbeReturn.REMOVE

    def on_buffer(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buf = info.get_buffer()
        with structure(pad.get_current_caps()) as s:
            width, height = s.get_value("width"), s.get_value("height")  # type: ignore[union-attr]  # caps have a structure
        dets = read_detections(buf)
        pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else None
        if pts is not None:
            last_pts[0] = pts
        if writer is not None and not write_error:
            try:
                writer.write(frame_record(result.frames, pts, width, height, dets))
            except OSError as exc:  # disk full...: reported by the main loop, which stops the run
                write_error.append(f"cannot write --json {opts.json_out}: {exc.strerror or exc}")
        result.frames += 1
        result.detections += len(dets)
        return Gst.PadProbeReturn.OK

    infer = pipeline.get_by_name("infer")
    infer.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_first)
    # After the tracker when there is one, so the JSON lines carry track ids.
    probed = pipeline.get_by_name("track") if opts.track else infer
    probed.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_buffer)
    if opts.video_out:
        _pad_to_even_sizes(pipeline.get_by_name("even"))
    decoders = _DecoderCount()
    pipeline.connect("deep-element-added", decoders.attach)
    progress = _Progress(opts.progress)
    bus = pipeline.get_bus()
    interrupted: list[float] = []  # monotonic() of the first SIGINT

    def on_sigint(signum, frame) -> None:
        if interrupted:  # the second Ctrl-C: stop now, outputs as they are
            raise KeyboardInterrupt
        interrupted.append(time.monotonic())
        print(
            "\npyinfer detect: interrupted; finishing the outputs (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        pipeline.send_event(Gst.Event.new_eos())  # from the source: every frame in flight is written, MP4 finalised

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    t0 = time.perf_counter()
    try:
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            msg = bus.timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
            raise RuntimeError(_error_text(msg) if msg else "the pipeline could not start")
        duration = -1
        while True:
            msg = bus.timed_pop_filtered(200 * Gst.MSECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
            if write_error:
                raise RuntimeError(write_error[0])
            if duration <= 0:
                ok, duration = pipeline.query_duration(Gst.Format.TIME)
                duration = duration if ok else -1
            progress.update(result.frames, last_pts[0], duration)
            if msg is None:
                if interrupted and time.monotonic() - interrupted[0] > EOS_WAIT_S:
                    raise RuntimeError(f"interrupted, and the pipeline did not finish within {EOS_WAIT_S:g} s")
                continue
            if msg.type == Gst.MessageType.ERROR:
                written = f" ({result.frames} frames written before it)" if result.frames and writer else ""
                raise RuntimeError(_error_text(msg) + written)
            break
    finally:
        end = time.perf_counter()
        if in_main and previous is not None:  # None: a handler not set from Python, which stays
            signal.signal(signal.SIGINT, previous)
        pipeline.set_state(Gst.State.NULL)
    start = first_frame[0] if first_frame else end
    result.seconds = end - start
    result.startup_seconds = start - t0
    result.interrupted = bool(interrupted)
    progress.update(result.frames, duration, duration, final=True)
    if not result.interrupted:
        result.problem = decoders.problem(opts.input, result.frames)
    if opts.json_out:
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
