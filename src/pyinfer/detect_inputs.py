"""The inputs of ``pyinfer detect``: what each command-line input is, its pipeline head, and its output paths.

An input is, in this order of checks:

- a ``scheme://`` URI: ``file://`` (the file must exist), ``rtsp://`` (and ``rtspt://``, ``rtspu://``...:
  read by ``rtspsrc``, see :class:`RtspInput`), ``http(s)://`` or anything else ``uridecodebin`` opens; only
  ``file://`` can be checked before the run;
- a directory: its ``.jpg``/``.jpeg``/``.png`` files, sorted by name, one frame each;
- a file: any file GStreamer decodes (``filesrc ! decodebin``);
- a glob (``*``, ``?``, ``[``): the image files it matches, sorted by name.

Images are decoded one by one in a feeder thread and pushed, as RGB frames, into one ``appsrc`` per input,
in name order: images of different sizes may follow each other (the caps change with them), and an image
that does not decode is skipped and reported (the run then ends with exit status 1, like a damaged video).
"""

from __future__ import annotations

import glob
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: URI schemes read by ``rtspsrc``: RTSP, over TCP only (``rtspt``), UDP only (``rtspu``), HTTP tunnel, TLS.
RTSP_SCHEMES = ("rtsp", "rtspt", "rtspu", "rtsph", "rtsps", "rtspst", "rtspsu", "rtspsh")
#: After an RTSP server's RTCP BYE, its input ends once no RTP packet has come for this long (:class:`RtspInput`).
BYE_QUIET_S = 2.0
#: Timestamps of image frames: 25 per second, so an annotated MP4 plays them at that rate.
IMAGE_FRAME_NS = 40_000_000


@dataclass(frozen=True)
class Source:
    """One input, resolved.

    Attributes:
        text: the input as given.
        kind: ``"file"``, ``"uri"`` or ``"images"``.
        location: the file path or URI (the directory or glob for images).
        images: the image files, in order (kind ``"images"``).
        name: a short name for output paths (``{name}``): the file or directory stem, the URI's last part.
    """

    text: str
    kind: str
    location: str
    images: tuple[str, ...] = ()
    name: str = ""

    @property
    def live(self) -> bool:
        """A network stream: it has no duration and may never end by itself."""
        return self.kind == "uri" and urlparse(self.location).scheme.lower() not in ("file", "")

    @property
    def rtsp(self) -> bool:
        """An RTSP stream (:data:`RTSP_SCHEMES`), read by ``rtspsrc`` rather than ``uridecodebin``."""
        return self.kind == "uri" and urlparse(self.location).scheme.lower() in RTSP_SCHEMES


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(path)


def _safe(text: str) -> str:
    """``text`` cut down to characters that are safe in a file name."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._")
    return out or "stream"


def resolve_input(text: str) -> Source:
    """What ``text`` names (module docstring). RuntimeError naming the input when there is nothing to read."""
    if "://" in text:
        uri = urlparse(text)
        if uri.scheme.lower() == "file":
            path = unquote(uri.path)
            if not os.path.isfile(path):
                raise RuntimeError(f"input {text} does not exist")
        return Source(text, "uri", text, name=_safe(Path(uri.path).stem or uri.hostname or "stream"))
    if os.path.isdir(text):
        images = tuple(sorted(str(p) for p in Path(text).iterdir() if _is_image(str(p))))
        if not images:
            raise RuntimeError(f"input {text} is a directory without images ({', '.join(IMAGE_SUFFIXES)})")
        return Source(text, "images", text, images, name=_safe(Path(text).resolve().name))
    if os.path.isfile(text):
        return Source(text, "file", text, name=_safe(Path(text).stem))
    if glob.has_magic(text):
        matched = sorted(glob.glob(text))
        images = tuple(p for p in matched if _is_image(p))
        if not images:
            what = "matches no file" if not matched else f"matches no image ({', '.join(IMAGE_SUFFIXES)})"
            raise RuntimeError(f"input {text} {what}")
        return Source(text, "images", text, images, name=_safe(Path(images[0]).parent.resolve().name))
    raise RuntimeError(f"input {text} does not exist")


def quote(value: str) -> str:
    """``value`` as a quoted gst-launch property value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def head_description(src: Source, suffix: str) -> str:
    """The pipeline from ``src`` to RGB frames; element names end with ``suffix`` (the stream index, or "")."""
    if src.kind == "file":
        head = f"filesrc name=src{suffix} location={quote(src.location)} ! decodebin name=dec{suffix}"
    elif src.rtsp:
        # The unbounded queue takes the packets from rtspsrc's jitterbuffer as they come, whatever the speed of
        # inference: a jitterbuffer holding a backlog when the media's end is near can stall with the EOS
        # inside it (RtspInput). Only the first video stream is set up (RtspInput.select_stream).
        head = (
            f"rtspsrc name=src{suffix} location={quote(src.location)} ! application/x-rtp,media=video ! "
            f"queue name=buf{suffix} max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! decodebin name=dec{suffix}"
        )
    elif src.kind == "uri":
        # Only the video stream is exposed: an audio pad left unlinked would end the stream as not-linked.
        head = (
            f'uridecodebin name=src{suffix} uri={quote(src.location)} caps="video/x-raw(ANY)" expose-all-streams=false'
        )
    else:
        head = f"appsrc name=src{suffix} format=time block=true max-buffers=4"
    return f"{head} ! videoconvert name=conv{suffix} ! video/x-raw,format=RGB"


def stream_path(pattern: str, index: int, src: Source, ext: str) -> str | None:
    """The output path of stream ``index`` from ``pattern``, or None for one shared file.

    ``{stream}`` (the index, also the messages' source-id) and ``{name}`` (:attr:`Source.name`) are replaced;
    a directory (existing, or ending with ``/``) gets ``DIR/{stream}-{name}{ext}``.
    """
    if "{stream}" in pattern or "{name}" in pattern:
        return pattern.replace("{stream}", str(index)).replace("{name}", src.name)
    if os.path.isdir(pattern) or pattern.endswith(os.sep):
        return os.path.join(pattern, f"{index}-{src.name}{ext}")
    return None


@dataclass
class ImageFeeder:
    """Decodes ``images`` in a thread and pushes them into ``appsrc``, one RGB frame each, then EOS.

    ``pushed`` holds the file names of the frames pushed, in order (frame N of the stream is ``pushed[N]``);
    ``problems`` the images that did not decode.
    """

    appsrc: Any
    images: tuple[str, ...]
    pushed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start pushing (the pipeline should be going to PLAYING)."""
        self._thread = threading.Thread(target=self._run, name="pyinfer-images", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop pushing (after the pipeline went to NULL, which unblocks a waiting push)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from pyinfer._gi import Gst, copy_buffer

        try:
            self._push_all(Gst, copy_buffer)
        except Exception as exc:  # never a silent end: the stream would wait for an EOS that never comes
            self.problems.append(f"feeding the images failed: {type(exc).__name__}: {exc}")
            self.appsrc.emit("end-of-stream")

    def _push_all(self, Gst: Any, copy_buffer: Any) -> None:
        for path in self.images:
            if self._stop.is_set():
                return
            try:
                sample = decode_image(path)
            except RuntimeError as exc:
                self.problems.append(f"{path}: {exc}")
                continue
            # A shallow copy the thread owns (Buffer.copy() is not writable on gst-python 1.26: see _gi.copy_buffer)
            buf = copy_buffer(sample.get_buffer())
            buf.pts = len(self.pushed) * IMAGE_FRAME_NS
            buf.duration = IMAGE_FRAME_NS
            self.pushed.append(os.path.basename(path))
            # push-sample sets the appsrc's caps from the sample's: images of another size renegotiate.
            flow = self.appsrc.emit("push-sample", Gst.Sample.new(buf, sample.get_caps(), None, None))
            if flow != Gst.FlowReturn.OK:  # EOS (Ctrl-C), flushing (stopped) or an error downstream
                self.pushed.pop()
                return
        self.appsrc.emit("end-of-stream")


class RtspInput:
    """What ``pyinfer detect`` adds to ``rtspsrc`` for one RTSP input: a stream choice and a safe end.

    - **One video stream.** Only the first video stream of the server's SDP is set up (``select-stream``): a
      camera's audio stream would otherwise give rtspsrc a second pad, left unlinked.
    - **The end of the server's media.** rtspsrc ends its stream (EOS) the moment the server's RTCP BYE
      arrives, and packets that come after that EOS are dropped. But a server may send its BYE before its
      last RTP packets: GstRtspServer sends it as soon as the media's end reaches its RTP session, while the
      last packets still wait for their time in the queue before its RTP sink. So the BYE is kept from
      rtspsrc (its ``on-bye-ssrc`` and ``on-bye-timeout`` handlers on the RTP session never run: the
      emission is stopped in ours, connected before theirs), and :meth:`due` says when the input should end:
      once no RTP packet has come for :data:`BYE_QUIET_S` after the BYE. :meth:`end` then sends EOS into
      rtspsrc, which pushes it behind the packets it has, so every frame the server sent is decoded.
      Other ends are rtspsrc's own: the server closing the connection, the RTP source timing out.

    The ``deep-element-added`` handler of the pipeline passes each element of this input to :meth:`added`.
    """

    def __init__(self, rtspsrc: Any) -> None:
        self.rtspsrc = rtspsrc
        self.bye: float | None = None  # monotonic() of the server's BYE
        self.last_packet = 0.0  # monotonic() of the last RTP packet after the BYE
        self.ended = False
        self._video: int | None = None  # the stream number set up
        self._pads: list[Any] = []  # the sink pads of the jitterbuffers (one per RTP source)
        self._lock = threading.Lock()
        rtspsrc.connect("select-stream", self.select_stream)

    def select_stream(self, rtspsrc: Any, num: int, caps: Any) -> bool:
        """rtspsrc's ``select-stream``: the first video stream only (the same one again on a reconnect)."""
        from pyinfer._gi import structure

        with structure(caps) as s:
            media = s.get_string("media") if s is not None else None
        if self._video is None and media == "video":
            self._video = num
        return num == self._video

    def added(self, element: Any) -> None:
        """An element of this input was added (``deep-element-added``, a streaming thread)."""
        factory = element.get_factory()
        kind = factory.get_name() if factory is not None else ""
        if kind == "rtpsession":  # added to rtpbin before rtspsrc connects to its session's signals
            session = element.get_property("internal-session")
            for signal in ("on-bye-ssrc", "on-bye-timeout"):
                session.connect(signal, self._on_bye, signal)
        elif kind == "rtpjitterbuffer":
            pad = element.get_static_pad("sink")
            with self._lock:
                self._pads.append(pad)
                if self.bye is not None:
                    self._watch(pad)

    def _on_bye(self, session: Any, source: Any, signal: str) -> None:
        session.stop_emission_by_name(signal)  # rtspsrc's handler would end the stream now
        with self._lock:
            if self.bye is None:
                self.bye = time.monotonic()
                for pad in self._pads:
                    self._watch(pad)

    def _watch(self, pad: Any) -> None:
        from pyinfer._gi import Gst

        def probe(pad: Any, info: Any) -> Any:
            self.last_packet = time.monotonic()
            return Gst.PadProbeReturn.OK

        pad.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, probe)

    def due(self, now: float) -> bool:
        """The server said BYE and has sent nothing for :data:`BYE_QUIET_S`: time to :meth:`end` the input."""
        return self.bye is not None and not self.ended and now - max(self.bye, self.last_packet) >= BYE_QUIET_S

    def end(self) -> None:
        """EOS into rtspsrc: it follows the packets already received through decoding, then the branch ends."""
        from pyinfer._gi import Gst

        self.ended = True
        self.rtspsrc.send_event(Gst.Event.new_eos())


def decode_image(path: str) -> Any:
    """One image file as a ``Gst.Sample`` of RGB video. RuntimeError with the decoder's reason."""
    from pyinfer._gi import Gst

    pipeline = Gst.parse_launch(
        f"filesrc location={quote(path)} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! "
        "appsink name=sink sync=false max-buffers=1"
    )
    try:
        pipeline.set_state(Gst.State.PAUSED)
        sample = pipeline.get_by_name("sink").emit("pull-preroll")
        if sample is None:
            msg = pipeline.get_bus().timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
            reason = msg.parse_error()[0].message if msg is not None else "no frame"
            raise RuntimeError(f"cannot be decoded: {reason}")
        return sample
    finally:
        pipeline.set_state(Gst.State.NULL)
