"""The main job behind ``pyinfer detect``: inputs -> decode -> pyinfer -> (pyosd -> MP4) + JSON lines.

What a user relies on, in the order it happens:

- Output paths are checked (opened) before anything runs: a ``--json`` in a missing folder fails at once, not
  after the whole video.
- JSON lines are streamed: each frame's line is written, whole and flushed, as the frame leaves pyinfer (or
  pytracker), so an interrupted or failed run keeps every frame it finished.
- Ctrl-C (SIGINT) ends the stream with EOS sent into every source, so every frame already read (an RTSP
  input's packets received, a decoder's frames held for reordering) is finished and the MP4 is finalised and
  plays; a second Ctrl-C stops at once. Every wait after it is bounded (:data:`LIVE_EOS_WAIT_S`,
  :data:`EOS_WAIT_S`, :data:`STOP_WAIT_S`): the run never hangs on a source that passes on no EOS or an
  element that does not stop.
- The encoder gets even frame sizes (x264's 4:2:0 needs them): odd sizes are padded by one black row or column,
  in the MP4 only.
- A damaged input whose decoder drops frames fails the run (exit 1) instead of reporting the frames that
  happened to decode.
- frames/s counts from the first frame, not from start (model loading).

Several inputs (files, URIs, image directories or globs: :mod:`pyinfer.detect_inputs`) run in one pipeline:
one ``pyinfer`` per input, all in one ``batch-group`` (one model, one batch of up to ``batch-size`` frames
from every input), each followed by its own pytracker, ``pymsgconv source-id=N`` and outputs. JSON goes to
one file per input (a ``{stream}``/``{name}`` pattern or a directory) or to one file whose records carry
``"stream"``. An input that fails while running (an RTSP server that does not answer, a damaged file) is
ended alone: the others run to their end, and the run then fails naming it (exit 1).

An RTSP input runs until Ctrl-C, or until its server ends the media (RTCP BYE, then no packet for
:data:`~pyinfer.detect_inputs.BYE_QUIET_S`; the server closing the connection): it then ends like a file
ends, the others go on (:class:`~pyinfer.detect_inputs.RtspInput`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfer.detect_inputs import (
    ImageFeeder,
    RtspInput,
    Source,
    head_description,
    quote,
    resolve_input,
    stream_path,
)
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
    "secondary_reinfer_interval": (0, 1_000_000),
}
#: The unique-id of ``pyinfer detect``'s detector and of its secondary classifier (``--secondary``).
PRIMARY_ID, SECONDARY_ID = 1, 2
#: An interrupted run gives up on finishing the outputs when no frame has moved for this long (exit 1).
EOS_WAIT_S = 30.0
#: An interrupted live input (RTSP, HTTP) whose EOS has not reached pyinfer, and none of whose frames has come
#: out of it, for this long gets its EOS at pyinfer instead (named on stderr: frames not yet decoded are lost).
LIVE_EOS_WAIT_S = 5.0
#: How long stopping the pipeline (state NULL) may take; past it the run is left to the process's exit.
STOP_WAIT_S = 10.0
#: What could not be stopped within STOP_WAIT_S in this process (the CLI then exits without tearing it down).
LEFT_RUNNING: list[str] = []


@dataclass(frozen=True)
class DetectOptions:
    """What to run; empty ``model_engine`` means the embedded shapes detector.

    ``model_engine`` may also name an embedded model (``shapes``, ``shapes-obb``: ``pyinfer models``), which
    brings its labels file. The other fields are the ``pyinfer`` element's properties of the same name; numeric
    ones must lie in :data:`RANGES` (ConfigError otherwise).
    """

    input: str
    inputs: tuple[str, ...] = ()  # every input when there are several (``input`` is the first); () -> (input,)
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
    secondary: str = ""  # a model run on each object (pyinfer process-mode=secondary), after the tracker
    secondary_reinfer_interval: int = 0  # its secondary-reinfer-interval (needs track)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every input, in order."""
        return self.inputs or (self.input,)

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{name.replace('_', '-')} {value} is out of range: {low:g} to {high:g}")
        if (self.input_width > 0) != (self.input_height > 0):
            raise ConfigError("input-width and input-height go together: set both, or neither (model metadata)")


@dataclass
class StreamResult:
    """One input's share of a run.

    Attributes:
        input: the input as given.
        index: its stream number: the messages' source-id, ``{stream}`` in output paths, ``"stream"`` in records.
        frames: frames of this input that went through pyinfer.
        detections: detections in them.
        seconds: from its first frame reaching pyinfer to its last frame leaving it (pytracker).
        json_out: its own JSON lines file, if any (None when it shares one or has none).
        video_out: its annotated MP4, if any.
        failed: why this input stopped before its end (the others went on), else "".
    """

    input: str
    index: int
    frames: int = 0
    detections: int = 0
    seconds: float = 0.0
    json_out: str | None = None
    video_out: str | None = None
    failed: str = ""

    @property
    def fps(self) -> float:
        """This input's frames per second from its first frame on."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people."""
        outs = [p for p in (self.json_out, self.video_out) if p]
        wrote = f"; wrote {', '.join(outs)}" if outs else ""
        failed = "  FAILED" if self.failed else ""
        return (
            f"  stream {self.index} {self.input}: frames: {self.frames}{failed}  frames/s: {self.fps:.1f}  "
            f"detections: {self.detections}{wrote}"
        )


@dataclass
class DetectResult:
    """Counts and timing of a finished run.

    Attributes:
        frames: frames that went through pyinfer (every input).
        detections: detections in them.
        seconds: from the first frame reaching pyinfer to the end of the stream (start-up left out).
        startup_seconds: from start to the first frame: loading the model, negotiating, decoding the first frame.
        outputs: what was written, for the summary.
        interrupted: the run was ended early by SIGINT (Ctrl-C); the outputs hold the frames before it.
        problem: why the run counts as failed although it reached the end (a damaged or failed input), else "".
        streams: each input's share, in input order (one entry when there is one input).
    """

    frames: int = 0
    detections: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    interrupted: bool = False
    problem: str = ""
    streams: list[StreamResult] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames per second from the first frame on (decode, inference, drawing and encoding; not start-up)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people; with several inputs, one more line per input."""
        outs = f"; wrote {', '.join(self.outputs)}" if self.outputs else ""
        stopped = " (interrupted)" if self.interrupted else ""
        several = f"  streams: {len(self.streams)}" if len(self.streams) > 1 else ""
        line = (
            f"frames: {self.frames}{stopped}  time: {self.seconds:.1f} s  frames/s: {self.fps:.1f}  "
            f"detections: {self.detections}{several}  (start-up {self.startup_seconds:.1f} s, not counted){outs}"
        )
        if len(self.streams) > 1:
            line += "".join("\n" + s.summary() for s in self.streams)
        return line


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


#: The batch-group of the pyinfer elements of a run with several inputs.
BATCH_GROUP = "pyinfer-detect"


def _name(role: str, suffix: str) -> str:
    return f"{role}{suffix}"


def build_description(opts: DetectOptions, model: str, labels: str, sources: list[Source] | None = None) -> str:
    """The gst-launch-style pipeline description for ``opts``: one branch per input.

    ``sources`` default to the inputs taken as files (nothing is checked on disk). With one input, the
    elements are named ``infer``, ``track``, ``broker``, ``even``; with several, they end with the stream
    number (``infer0``, ``infer1``...), and the pyinfer elements share :data:`BATCH_GROUP`.
    """
    if sources is None:
        sources = [Source(text, "file", text) for text in opts.sources]
    props = {
        "model-engine": quote(model),
        "backend": quote(opts.backend),
        "precision": quote(opts.precision),
        "device": quote(opts.device),
        "batch-size": opts.batch_size,
        "confidence-threshold": opts.confidence_threshold,
        "nms-iou-threshold": opts.nms_iou_threshold,
        "decoder": quote(opts.decoder),
        "interval": opts.interval,
        "unique-id": PRIMARY_ID,
    }
    if opts.allow_pickle:
        props["allow-pickle"] = "true"
    if opts.postprocess:
        props["postprocess"] = quote(opts.postprocess)
    if opts.input_width and opts.input_height:
        props["input-width"], props["input-height"] = opts.input_width, opts.input_height
    if labels:
        props["labels-file"] = quote(labels)
    if opts.secondary:
        # A secondary detector's keypoints ride on ROI metas numbered as the objects: with GstAnalytics, the
        # detector writes both forms so that they have ids to follow.
        from pyinfer.meta import analytics

        props["meta"] = "both" if analytics.available() else "roi"
    several = len(sources) > 1
    if several:
        props["batch-group"] = quote(BATCH_GROUP)
    branches = []
    for index, src in enumerate(sources):
        suffix = str(index) if several else ""
        infer = f"pyinfer name=infer{suffix} " + " ".join(f"{k}={v}" for k, v in props.items())
        head = f"{head_description(src, suffix)} ! {infer}"
        if opts.track:
            head += f" ! pytracker name=track{suffix}"
        if opts.secondary:
            # After the tracker, as DeepStream's pgie ! nvtracker ! sgie: tracked objects keep their result.
            sec_model, sec_labels = resolve_model(opts.secondary)
            head += (
                f" ! pyinfer name=secondary{suffix} process-mode=secondary model-engine={quote(sec_model)} "
                f"unique-id={SECONDARY_ID} operate-on-gie-id={PRIMARY_ID} "
                f"device={quote(opts.device)} batch-size=32 confidence-threshold=0 "
                f"secondary-reinfer-interval={opts.secondary_reinfer_interval}"
            )
            if sec_labels:
                head += f" labels-file={quote(sec_labels)}"
        if opts.publish:
            # Every frame, one message each; the broker sits in line (a pass-through), so no tee is needed.
            head += f" ! pymsgconv frame-interval=1 source-id={index} ! pymsgbroker name=broker{suffix} "
            head += _broker_props(opts.publish, index, several=several)
        video = _video_path(opts, index, src, several)
        if video:
            # videobox "even" pads odd sizes by a black column/row (set from the caps: _pad_to_even_sizes).
            tail = (
                f"pyosd ! videoconvert ! videobox name=even{suffix} ! videoconvert ! video/x-raw,format=I420 ! "
                "x264enc speed-preset=veryfast tune=zerolatency ! h264parse ! mp4mux ! "
                f"filesink location={quote(video)}"
            )
        else:
            tail = "fakesink sync=false"
        branches.append(f"{head} ! {tail}")
    return "  ".join(branches)


def _broker_props(publish: str, index: int, *, several: bool) -> str:
    """pymsgbroker's properties for stream ``index``: ``{stream}`` in the target is the stream number."""
    from pyinfer.brokers import BrokerError, parse_target

    target = publish.replace("{stream}", str(index))
    try:
        proto, conn_str, topic = parse_target(target)
    except BrokerError as exc:
        raise RuntimeError(f"--publish {publish}: {exc}") from exc
    if proto == "file" and several and target == publish:
        raise RuntimeError(f"--publish {publish}: with several inputs, a file target needs {{stream}} (one per input)")
    return f"proto={proto} conn-str={quote(conn_str)} topic={quote(topic)}"


def _json_path(opts: DetectOptions, index: int, src: Source, several: bool) -> str | None:
    """Stream ``index``'s own JSON file; None: no JSON, or one file shared by every input."""
    if not opts.json_out:
        return None
    return stream_path(opts.json_out, index, src, ".jsonl") or (None if several else opts.json_out)


def _video_path(opts: DetectOptions, index: int, src: Source, several: bool) -> str | None:
    if not opts.video_out:
        return None
    path = stream_path(opts.video_out, index, src, ".mp4")
    if path is None and several:
        raise RuntimeError(
            f"--video {opts.video_out}: with several inputs, give a directory or a pattern with {{stream}} or "
            "{name} (one MP4 per input)"
        )
    return path or opts.video_out


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def update(self, fraction: float | None, text: str, *, final: bool = False) -> None:
        """Print ``text`` after a bar at ``fraction`` (None: no bar, a live input), at most every 0.2 s (5 s
        when stderr is not a terminal)."""
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < (0.2 if self.tty else 5.0)):
            return
        self.last = now
        line = text
        if fraction is not None:
            frac = min(1.0, fraction)
            line = f"[{'#' * int(frac * 30):<30}] {frac * 100:5.1f}%  {text}"
        print(
            ("\r" + line) if self.tty else line, end="" if self.tty and not final else "\n", file=sys.stderr, flush=True
        )


def check_outputs(opts: DetectOptions, sources: list[Source] | None = None) -> list[tuple[str, str]]:
    """The output files, as (option, path): RuntimeError naming the option when one is an input or another output.

    filesink would truncate the video being read. Whether each path can be written is checked by opening it,
    before anything runs (:func:`run_detect`).
    """
    if sources is None:
        sources = [Source(text, "file", text) for text in opts.sources]
    seen: dict[str, str] = {}
    for src in sources:
        for read in (src.location, *src.images):
            if src.kind != "uri":
                seen[os.path.realpath(read)] = "the input" if len(sources) == 1 else f"the input {src.text}"
    several = len(sources) > 1
    outputs: list[tuple[str, str]] = []
    for index, src in enumerate(sources):
        json_path = _json_path(opts, index, src, several)
        if json_path is None and opts.json_out and index == 0:
            json_path = opts.json_out  # one file for every input
        paths: tuple[tuple[str, str | None], ...] = (
            ("--json", json_path),
            ("--video", _video_path(opts, index, src, several)),
        )
        for option, path in paths:
            if path:
                real = os.path.realpath(path)
                if real in seen:
                    raise RuntimeError(f"{option} {path} is {seen[real]}: give another path")
                seen[real] = f"the {option} output" if not several else f"the {option} output of {src.text}"
                outputs.append((option, path))
    return outputs


class _DecoderCount:
    """Frames in and out of each video decoder inside decodebin, to tell a damaged input.

    A decoder that cannot decode a damaged frame drops it (FFmpeg's H.264 decoder posts no bus message for
    that): fewer frames out than in.
    """

    def __init__(self, stream_of) -> None:
        self.stream_of = stream_of  # element -> stream index or None
        self.counts: dict[tuple[int, str], list[int]] = {}  # (stream, decoder name) -> [frames in, frames out]

    def attach(self, pipeline, sub_bin, element) -> None:  # the deep-element-added signal (a streaming thread)
        from pyinfer._gi import Gst

        factory = element.get_factory()
        klass = factory.get_metadata("klass") if factory is not None else ""
        if "Decoder" not in klass or "Video" not in klass:
            return
        stream = self.stream_of(element)
        if stream is None:  # a decoder of the image feeder's own pipelines
            return
        count = self.counts.setdefault((stream, element.get_name()), [0, 0])

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

    def problem(self, stream: int, source: str, frames: int) -> str:
        """'' when every decoder of ``stream`` gave as many frames as it was given; else what was lost."""
        for (at, name), (fed, decoded) in self.counts.items():
            if at == stream and decoded < fed:
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
    frames that did decode written out; so is an input that failed while the others went on.
    """
    import pyinfer
    from pyinfer._gi import Gst
    from pyinfer.jsonl import JsonLinesWriter

    sources = [resolve_input(text) for text in opts.sources]
    model, labels = resolve_model(opts.model_engine, opts.labels_file)
    outputs = check_outputs(opts, sources)
    writers: dict[str, Any] = {}
    try:
        for option, path in outputs:
            try:
                if option == "--json":
                    writers[path] = JsonLinesWriter(path)
                else:
                    open(path, "wb").close()  # filesink opens it only once the pipeline runs
            except OSError as exc:
                raise RuntimeError(f"cannot write {option} {path}: {exc.strerror or exc}") from exc
        pyinfer.register()
        pipeline = Gst.parse_launch(build_description(opts, model, labels, sources))
        return _Run(pipeline, opts, sources, writers).run()
    finally:
        for writer in writers.values():
            writer.close()


class _Run:
    """One run of a built pipeline: probes, the bus loop, Ctrl-C, and the result."""

    def __init__(self, pipeline, opts: DetectOptions, sources: list[Source], writers: dict[str, Any]) -> None:
        from pyinfer._gi import Gst

        self.pipeline, self.opts, self.sources = pipeline, opts, sources
        self.several = len(sources) > 1
        suffixes = [str(i) if self.several else "" for i in range(len(sources))]
        self.result = DetectResult(streams=[StreamResult(src.text, i) for i, src in enumerate(sources)])
        self.first: list[float | None] = [None] * len(sources)  # perf_counter() of each stream's first frame
        self.last: list[float] = [0.0] * len(sources)  # ... and of its last frame out
        self.last_pts = [0] * len(sources)
        self.write_error: list[str] = []
        self.lock = threading.Lock()  # the counts and the shared JSON file, written from each stream's thread
        self.owners: dict[str, int] = {}  # name of a stream's source-side element -> stream
        self.feeders: dict[int, ImageFeeder] = {}
        self.rtsp: dict[int, RtspInput] = {}
        self.at_end = [False] * len(sources)  # EOS reached the stream's pyinfer
        self.moved = time.perf_counter()  # the last frame out of pyinfer (pytracker) or EOS into it, any stream
        self.forced: set[int] = set()  # live streams given their EOS at pyinfer after Ctrl-C
        shared = writers.get(opts.json_out or "") if self.several else None
        for i, (src, suffix) in enumerate(zip(sources, suffixes)):
            stream = self.result.streams[i]
            stream.json_out = _json_path(opts, i, src, self.several)
            stream.video_out = _video_path(opts, i, src, self.several)
            writer = writers.get(stream.json_out or "", shared)
            for role in ("src", "buf", "dec", "conv"):
                self.owners[_name(role, suffix)] = i
            if src.kind == "images":
                self.feeders[i] = ImageFeeder(pipeline.get_by_name(_name("src", suffix)), src.images)
            if src.rtsp:
                self.rtsp[i] = RtspInput(pipeline.get_by_name(_name("src", suffix)))
            infer = pipeline.get_by_name(_name("infer", suffix))
            infer.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._on_first(i))
            infer.get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, self._on_eos(i))
            # After the tracker when there is one, so the JSON lines carry track ids.
            last = "secondary" if opts.secondary else "track" if opts.track else "infer"
            probed = pipeline.get_by_name(_name(last, suffix))
            probed.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_buffer(i, writer))
            if stream.video_out:
                _pad_to_even_sizes(pipeline.get_by_name(_name("even", suffix)))
        self.decoders = _DecoderCount(self.stream_of)
        pipeline.connect("deep-element-added", self.decoders.attach)
        if self.rtsp:
            pipeline.connect("deep-element-added", self._rtsp_element_added)

    def stream_of(self, element) -> int | None:
        """The stream whose source side ``element`` is in (its source, decoder or converter), else None."""
        while element is not None:
            if element.get_name() in self.owners and element.get_parent() is self.pipeline:
                return self.owners[element.get_name()]
            element = element.get_parent()
        return None

    def _rtsp_element_added(self, pipeline, sub_bin, element) -> None:
        i = self.stream_of(element)
        if i in self.rtsp:
            self.rtsp[i].added(element)

    def _on_eos(self, i: int):
        from pyinfer._gi import Gst

        def probe(pad, info) -> Gst.PadProbeReturn:
            if info.get_event().type == Gst.EventType.EOS:
                self.at_end[i] = True
                self.moved = time.perf_counter()
            return Gst.PadProbeReturn.OK

        return probe

    def _on_first(self, i: int):
        from pyinfer._gi import Gst

        def probe(pad, info) -> Gst.PadProbeReturn:
            self.first[i] = time.perf_counter()
            return Gst.PadProbeReturn.REMOVE

        return probe

    def _on_buffer(self, i: int, writer):
        from pyinfer._gi import Gst, structure
        from pyinfer.meta import read_detections, read_parents, read_secondary_results
        from pyinfer.meta.roi import with_shapes

        stream, feeder = self.result.streams[i], self.feeders.get(i)

        def probe(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            buf = info.get_buffer()
            with structure(pad.get_current_caps()) as s:
                width, height = s.get_value("width"), s.get_value("height")  # type: ignore[union-attr]  # caps have a structure
            dets = with_shapes(buf, read_detections(buf))  # masks and keypoints of segmentation and pose models
            pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else None
            if pts is not None:
                self.last_pts[i] = pts
            secondary = read_secondary_results(buf) if self.opts.secondary else None
            parents = read_parents(buf) if self.opts.secondary else None
            rec = frame_record(stream.frames, pts, width, height, dets, secondary, parents)
            if feeder is not None:  # frame N of an image input is the Nth image pushed
                rec = {"frame": rec.pop("frame"), "file": feeder.pushed[stream.frames], **rec}
            if self.several:
                rec = {"stream": i, **rec}
            with self.lock:
                if writer is not None and not self.write_error:
                    try:
                        writer.write(rec)
                    except OSError as exc:  # disk full...: reported by the main loop, which stops the run
                        self.write_error.append(f"cannot write --json {writer.path}: {exc.strerror or exc}")
                stream.frames += 1
                stream.detections += len(dets)
                self.result.frames += 1
                self.result.detections += len(dets)
            self.last[i] = self.moved = time.perf_counter()
            return Gst.PadProbeReturn.OK

        return probe

    def _fraction(self) -> float | None:
        """How far the inputs are, on average; None when one has no duration (a live stream)."""
        from pyinfer._gi import Gst

        fractions = []
        for i, src in enumerate(self.sources):  # durations are asked again until known (a file's soon is)
            if src.kind == "images":
                fractions.append(self.result.streams[i].frames / len(src.images))
                continue
            if src.live:
                return None
            suffix = str(i) if self.several else ""
            ok, duration = self.pipeline.get_by_name(_name("infer", suffix)).query_duration(Gst.Format.TIME)
            fractions.append(self.last_pts[i] / duration if ok and duration > 0 else 0.0)
        return sum(fractions) / len(fractions)

    def _rates(self) -> str:
        now = time.perf_counter()
        starts = [t for t in self.first if t is not None]
        total = self.result.frames / (now - min(starts)) if starts else 0.0
        text = f"{self.result.frames} frames  {total:.1f} frames/s"
        if self.several:
            each = []
            for i, stream in enumerate(self.result.streams):
                first = self.first[i]
                fps = stream.frames / (now - first) if first is not None and now > first else 0.0
                each.append(f"{i}: {stream.frames} at {fps:.1f}/s")
            text += f"  ({', '.join(each)})"
        return text

    def _end_stream(self, i: int, text: str) -> None:
        """Input ``i`` failed: end its branch with EOS so its outputs are finished; the others go on."""
        from pyinfer._gi import Gst

        self.result.streams[i].failed = text
        suffix = str(i) if self.several else ""
        self.pipeline.get_by_name(_name("infer", suffix)).get_static_pad("sink").send_event(Gst.Event.new_eos())
        print(f"pyinfer detect: {text}; the other inputs go on", file=sys.stderr, flush=True)

    def _after_interrupt(self, since: float) -> None:
        """Bound the wait for the EOS sent at Ctrl-C (``since``, perf_counter): see LIVE_EOS_WAIT_S, EOS_WAIT_S."""
        from pyinfer._gi import Gst

        now = time.perf_counter()
        for i, src in enumerate(self.sources):
            stalled = now - max(since, self.last[i]) > LIVE_EOS_WAIT_S
            if src.live and stalled and not self.at_end[i] and i not in self.forced:
                self.forced.add(i)
                infer = self.pipeline.get_by_name(_name("infer", str(i) if self.several else ""))
                infer.get_static_pad("sink").send_event(Gst.Event.new_eos())
                print(
                    f"pyinfer detect: input {src.text} passed on no end of stream within {LIVE_EOS_WAIT_S:g} s of "
                    "Ctrl-C: ended at pyinfer; frames it had not decoded yet are not in the outputs",
                    file=sys.stderr,
                    flush=True,
                )
        if now - max(since, self.moved) > EOS_WAIT_S:
            left = [src.text for i, src in enumerate(self.sources) if not self.at_end[i]]
            where = f"inputs not ended: {', '.join(left)}" if left else "every input ended, the outputs did not"
            raise RuntimeError(
                f"interrupted, and the pipeline did not finish: nothing moved for {EOS_WAIT_S:g} s ({where})"
            )

    def _stop(self) -> None:
        """Set the pipeline to NULL, waiting at most STOP_WAIT_S: an element that hangs while stopping is named
        in LEFT_RUNNING (and on stderr), and left to the process's exit."""
        from pyinfer._gi import Gst

        done = threading.Event()

        def stop() -> None:
            self.pipeline.set_state(Gst.State.NULL)
            done.set()

        threading.Thread(target=stop, name="pyinfer-stop", daemon=True).start()
        if done.wait(STOP_WAIT_S):
            return
        # The elements in the middle of a state change (read without locks: the stuck thread may hold them).
        children = [el for el in self.pipeline.children if el.current_state != Gst.State.NULL]
        stuck = [el.get_name() for el in children if el.pending_state != Gst.State.VOID_PENDING]
        stuck = stuck or [el.get_name() for el in children]
        LEFT_RUNNING.append(
            f"the pipeline did not stop within {STOP_WAIT_S:g} s (still stopping: {', '.join(stuck) or 'unknown'})"
        )
        print(f"pyinfer detect: {LEFT_RUNNING[-1]}", file=sys.stderr, flush=True)

    def run(self) -> DetectResult:
        from pyinfer._gi import Gst

        pipeline, result, opts = self.pipeline, self.result, self.opts
        progress = _Progress(opts.progress)
        bus = pipeline.get_bus()
        interrupted: list[float] = []  # perf_counter() of the first SIGINT

        def on_sigint(signum, frame) -> None:
            if interrupted:  # the second Ctrl-C: stop now, outputs as they are
                raise KeyboardInterrupt
            interrupted.append(time.perf_counter())
            print(
                "\npyinfer detect: interrupted; finishing the outputs (Ctrl-C again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
            # Into every source (rtspsrc pushes it behind the packets it has): every frame read is finished.
            pipeline.send_event(Gst.Event.new_eos())

        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
        t0 = time.perf_counter()
        try:
            if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
                msg = bus.timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
                raise RuntimeError(self._failure(msg) if msg else "the pipeline could not start")
            for feeder in self.feeders.values():
                feeder.start()
            while True:
                msg = bus.timed_pop_filtered(200 * Gst.MSECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
                if self.write_error:
                    raise RuntimeError(self.write_error[0])
                progress.update(self._fraction(), self._rates())
                now = time.monotonic()
                for rtsp in self.rtsp.values():
                    if rtsp.due(now):  # the server ended its media: this input ends as a file ends
                        rtsp.end()
                if msg is None:
                    if interrupted:
                        self._after_interrupt(interrupted[0])
                    continue
                if msg.type == Gst.MessageType.ERROR:
                    i = self.stream_of(msg.src)
                    streams = result.streams
                    if self.several and i is not None and not all(s.failed for j, s in enumerate(streams) if j != i):
                        if not streams[i].failed:
                            self._end_stream(i, self._failure(msg))
                        continue
                    written = f" ({result.frames} frames written before it)" if result.frames and opts.json_out else ""
                    raise RuntimeError(self._failure(msg) + written)
                break
        finally:
            end = time.perf_counter()
            try:
                self._stop()  # a Ctrl-C while stopping is still this run's (its summary follows)
            finally:
                if in_main and previous is not None:  # None: a handler not set from Python, which stays
                    signal.signal(signal.SIGINT, previous)
            for feeder in self.feeders.values():
                feeder.stop()
        return self._finish(t0, end, interrupted=bool(interrupted), progress=progress)

    def _failure(self, msg) -> str:
        """The bus error's text, naming the input it came from when there are several."""
        i = self.stream_of(msg.src)
        text = _error_text(msg)
        return f"input {self.sources[i].text} failed: {text}" if i is not None and self.several else text

    def _finish(self, t0: float, end: float, *, interrupted: bool, progress: _Progress) -> DetectResult:
        result, opts = self.result, self.opts
        starts = [t for t in self.first if t is not None]
        start = min(starts) if starts else end
        result.seconds = end - start
        result.startup_seconds = start - t0
        result.interrupted = interrupted
        problems = []
        for i, stream in enumerate(result.streams):
            first = self.first[i]
            stream.seconds = self.last[i] - first if first is not None and self.last[i] > first else 0.0
            if stream.failed:
                problems.append(stream.failed)
            elif not interrupted:
                problems.append(self.decoders.problem(i, self.sources[i].text, stream.frames))
            if i in self.feeders:
                problems.extend(f"input {self.sources[i].text}: {p}" for p in self.feeders[i].problems)
        result.problem = "; ".join(p for p in problems if p)
        fraction = self._fraction()
        progress.update(1.0 if fraction is not None and not interrupted else fraction, self._rates(), final=True)
        if opts.json_out and not any(s.json_out for s in result.streams):
            result.outputs.append(opts.json_out)  # one file for every input
        if not self.several:
            result.outputs.extend(p for p in (result.streams[0].json_out, result.streams[0].video_out) if p)
        brokers = [
            self.pipeline.get_by_name(_name("broker", str(i) if self.several else "")) for i in range(len(self.sources))
        ]
        brokers = [b for b in brokers if b is not None]
        if brokers:
            published = sum(b.get_property("published") for b in brokers)
            lost = sum(b.get_property("dropped") + b.get_property("failed") for b in brokers)
            result.outputs.append(f"{opts.publish} ({published} messages, {lost} lost)")
        return result


def _error_text(msg) -> str:
    err, _debug = msg.parse_error()
    return f"{msg.src.get_name()}: {err.message}"
