"""``pymsgconv``: turns each frame's detection metadata into JSON messages (schema v1) attached to the buffer.

The analogue of DeepStream's ``nvmsgconv``: it reads the detections (GstAnalytics or ROI metas, see
``pyinfer.meta``), builds messages with :mod:`pyinfer.messages` and attaches their text as metadata for
``pymsgbroker``.

Example::

    gst-launch-1.0 videotestsrc num-buffers=30 ! video/x-raw,format=RGB,width=640,height=480 ! \\
        pyinfer model-engine=$(pyinfer models --path shapes) ! pymsgconv frame-interval=1 source-id=0 ! \\
        pymsgbroker proto=file conn-str=/tmp/messages.jsonl ! fakesink

The payload travels as one more ``GstVideoRegionOfInterestMeta`` (Python can build it on GStreamer 1.20+
and read it back, unlike a GstCustomMeta whose structure is a copy on 1.22): type ``pyinfer-payload``, id
:data:`PAYLOAD_ID`, a zero-sized box at (0, 0), and a param ``pyinfer-payload`` with ``count`` (int),
``key`` (string: the source id) and ``payload-0`` ... ``payload-<count-1>`` (string, JSON text). Readers
of detections skip it: they walk ids 0..N-1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pyinfer._gi import GLib, GObject, Gst, GstBase, GstVideo, structure
from pyinfer.detections import Detections
from pyinfer.elements._base import format_exception, post_error, post_warning, writable
from pyinfer.elements._enums import MsgconvMessagePer, choice_property
from pyinfer.messages import FrameHeader, MessageBuilder
from pyinfer.meta import has_detection_meta, read_detections, read_frame_info, read_parents, read_secondary_results
from pyinfer.meta.roi import has_shapes, with_shapes
from pyinfer.meta.text import read_texts

PAYLOAD_ID = 2**31 - 2  # below the frame record's id (2**31 - 1), far above detection ids 0..N-1
PAYLOAD_ROI_TYPE = "pyinfer-payload"
PAYLOAD_PARAM = "pyinfer-payload"
WARNING_INTERVAL_S = 5.0  # malformed-metadata warnings: at most one per this many seconds

_RW = GObject.ParamFlags.READWRITE
_ANY = Gst.Caps.new_any()
TEMPLATES = (
    Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _ANY),
    Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _ANY),
)


@dataclass(frozen=True)
class Payloads:
    """The messages pymsgconv attached to a buffer."""

    texts: list[str]
    key: str | None


def attach_payloads(buf: Gst.Buffer, texts: list[str], key: str | None = None) -> None:
    """Attach ``texts`` (JSON messages) to ``buf`` (which must be writable) as the payload meta."""
    meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, PAYLOAD_ROI_TYPE, 0, 0, 0, 0)
    if meta is None:
        raise RuntimeError("could not add the payload meta: the buffer is not writable")
    meta.id = PAYLOAD_ID
    s = Gst.Structure.new_empty(PAYLOAD_PARAM)
    s.set_value("count", len(texts))
    if key is not None:
        s.set_value("key", key)
    for i, text in enumerate(texts):
        s.set_value(f"payload-{i}", text)
    meta.add_param(s)


def read_payloads(buf: Gst.Buffer) -> Payloads | None:
    """The payloads attached by :func:`attach_payloads`, or None if ``buf`` has none.

    Raises:
        ValueError: a payload meta is there but does not hold ``count`` strings.
    """
    meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, PAYLOAD_ID)
    if meta is None:
        return None
    s = meta.get_param(PAYLOAD_PARAM)
    if s is None:
        return None
    count = s.get_value("count")
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"payload meta: count is {count!r}, not a non-negative integer")
    texts = [s.get_value(f"payload-{i}") for i in range(count)]
    if not all(isinstance(t, str) for t in texts):
        raise ValueError(f"payload meta: expected {count} strings payload-0..payload-{count - 1}")
    key = s.get_value("key") if s.has_field("key") else None
    return Payloads(texts, key if isinstance(key, str) else None)


def _foreign_labels(buf: Gst.Buffer, dets: Detections) -> list[str | None] | None:
    """The ROI type as label for metas of other producers (class id -1, no label of their own)."""
    foreign = np.flatnonzero(dets.class_id < 0)
    if foreign.size == 0:
        return None
    labels: list[str | None] = [None] * len(dets)
    if "foreign_label" in dets.extra:  # GstAnalytics: the OD Mtd's type, read with the detections
        for i in foreign.tolist():
            labels[i] = str(dets.extra["foreign_label"][i]) or None
        return labels
    roi_ids = dets.extra["roi_id"]
    for i in foreign.tolist():
        meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, int(roi_ids[i]))
        if meta is not None:
            labels[i] = GLib.quark_to_string(meta.roi_type)
    return labels


class MsgConvElement(GstBase.BaseTransform):
    """Builds one JSON message per frame (or per object) from the frame's detections and attaches it."""

    __gtype_name__ = "PyMsgConv"
    _message_per: str  # set in __init__ and by the property's setter
    __gstmetadata__ = (
        "Python message converter",
        "Filter/Metadata",
        "Turns detection metadata into JSON messages (pyinfer schema v1) for pymsgbroker",
        "pyinfer developers",
    )
    __gsttemplates__ = TEMPLATES

    source_id = GObject.Property(
        type=int, default=0, minimum=0, maximum=2**31 - 1, nick="Source ID",
        blurb="The stream's id, written as source_id in every message", flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    frame_interval = GObject.Property(
        type=int, default=30, minimum=1, maximum=2**31 - 1, nick="Frame interval",
        blurb="Make messages for every Nth frame (frames 0, N, 2N, ...), as nvmsgconv",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    message_per = choice_property(
        "message-per",
        type=MsgconvMessagePer, default="frame", nick="Message per",
        blurb="frame: one message per frame with all its objects; object: one message per object",
        flags=_RW | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    @GObject.Property(type=GObject.TYPE_UINT64, nick="Messages", blurb="Messages made since start",
                      flags=GObject.ParamFlags.READABLE)  # fmt: skip
    def messages(self) -> int:
        return self._messages

    @GObject.Property(
        type=GObject.TYPE_UINT64, nick="Skipped buffers",
        blurb="Frames skipped (no message) because their metadata could not be read or encoded (named as pyinfer's "
        "skipped-buffers and pytracker's skipped-metas)",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def skipped_buffers(self) -> int:
        return self._malformed

    def __init__(self) -> None:
        self._message_per = "frame"
        self._builder: MessageBuilder | None = None
        super().__init__()
        self.set_in_place(True)
        self.set_passthrough(False)  # the payload meta needs a writable buffer
        self._messages = 0
        self._malformed = 0
        self._frame_number = 0
        self._size: tuple[int | None, int | None] = (None, None)
        self._last_warning = 0.0

    def do_start(self) -> bool:
        self._builder = MessageBuilder()
        self._messages = self._malformed = self._frame_number = 0
        self._last_warning = 0.0
        return True

    def do_stop(self) -> bool:
        self._builder = None
        return True

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        size = []
        with structure(incaps) as s:
            for name in ("width", "height"):
                ok, value = s.get_int(name)  # type: ignore[union-attr]  # negotiated caps have a structure
                size.append(value if ok and value > 0 else None)
        self._size = (size[0], size[1])
        return True

    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        try:
            index = self._frame_number
            self._frame_number += 1
            if index % self.frame_interval or self._builder is None:
                return Gst.FlowReturn.OK
            texts = self._convert(buf, index)
            if texts:
                with writable(buf):
                    attach_payloads(buf, texts, str(self.source_id))
                self._messages += len(texts)
        except Exception as exc:
            post_error(self, Gst.StreamError.FAILED, f"message conversion failed: {exc}", format_exception(exc))
            return Gst.FlowReturn.ERROR
        return Gst.FlowReturn.OK

    def _convert(self, buf: Gst.Buffer, index: int) -> list[str]:
        """The messages for ``buf``; none for a buffer without detection metadata or with malformed metadata."""
        if not has_detection_meta(buf):
            return []  # no metadata at all: the buffer passes untouched
        try:
            info = read_frame_info(buf)
            dets = read_detections(buf)
            if has_shapes(buf):  # masks and keypoints of segmentation and pose models (schema 1.1)
                dets = with_shapes(buf, dets)
            texts = read_texts(buf)  # pyvlm's answers (schema 1.3)
            if info is None and len(dets) == 0 and not texts:
                return []  # ROI metas of some other kind only
            header = FrameHeader(
                source_id=self.source_id,
                frame_number=index,
                pts_ns=None if buf.pts == Gst.CLOCK_TIME_NONE else int(buf.pts),
                timestamp_ns=time.time_ns(),
                width=self._size[0],
                height=self._size[1],
                inferred=None if info is None else info.inferred,
            )
            labels = _foreign_labels(buf, dets)
            secondary = read_secondary_results(buf) if len(dets) else None  # schema 1.2
            parents = read_parents(buf) if len(dets) else None
            return self._builder.build(header, dets, per_object=self._message_per == "object", labels=labels,  # type: ignore[union-attr]  # only called with a builder (do_transform_ip)
                                       secondary=secondary, parents=parents, texts=texts)  # fmt: skip
        except Exception as exc:  # metadata of another producer that does not follow the contract
            self._malformed += 1
            now = time.monotonic()
            if self._malformed == 1 or now - self._last_warning >= WARNING_INTERVAL_S:
                self._last_warning = now
                post_warning(self, Gst.StreamError.FORMAT, f"skipped frame {index}: malformed detection metadata "
                             f"({exc}); {self._malformed} frame(s) skipped so far", format_exception(exc))  # fmt: skip
            return []
