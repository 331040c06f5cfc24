"""The base of pyinfer's in-place filters on packed RGB-family video in system memory."""

from __future__ import annotations

from pyinfer._gi import Gst, GstBase, GstVideo, structure
from pyinfer.elements._base import post_error
from pyinfer.frames.system import FORMATS, FrameLayout

CAPS = Gst.Caps.from_string(
    f"video/x-raw, format=(string){{ {', '.join(FORMATS)} }}, width=(int)[1, 32767], height=(int)[1, 32767]"
)
TEMPLATES = (
    Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, CAPS),
    Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, CAPS),
)
#: DeepStream batches (after nvstreammux ! nvvideoconvert): RGB is what pyservicemaker's extract() supports.
NVMM_FEATURE = "memory:NVMM"
NVMM_CAPS = Gst.Caps.from_string(
    f"video/x-raw({NVMM_FEATURE}), format=(string)RGB, width=(int)[1, 32767], height=(int)[1, 32767]"
)
SYSTEM_AND_NVMM_CAPS = CAPS.copy()
SYSTEM_AND_NVMM_CAPS.append(NVMM_CAPS.copy())
SYSTEM_AND_NVMM_TEMPLATES = (
    Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, SYSTEM_AND_NVMM_CAPS),
    Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, SYSTEM_AND_NVMM_CAPS),
)


def describe_caps(caps: Gst.Caps) -> str:
    """Caps for people, one alternative per structure: ``video/x-raw format I420``,
    ``video/x-raw format RGB, BGR or video/x-raw(memory:NVMM) format RGB``."""
    if caps.is_empty() or caps.is_any():
        return str(caps)
    texts: list[str] = []
    for i in range(caps.get_size()):
        features = caps.get_features(i)
        with structure(caps, i) as s:
            text = s.get_name()  # type: ignore[union-attr]  # caps have a structure at every index below get_size()
            formats = _formats(s)
        if features is not None and not features.is_any() and features.to_string() != "memory:SystemMemory":
            text += f"({features.to_string()})"
        if formats:
            text += f" format {', '.join(formats)}"
        if text not in texts:
            texts.append(text)
    return " or ".join(texts)


def _formats(s: Gst.Structure) -> list[str]:
    if not s.has_field("format"):
        return []
    value = s.get_value("format")
    if isinstance(value, str):
        return [value]
    try:
        return [str(value[i]) for i in range(len(value))]  # a GstValueList
    except TypeError:
        return []


def _check_offered_caps(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    """Sink pad probe: a CAPS event the pad cannot take gets an ERROR from the element naming the format.

    The pad refuses such caps before any element code runs (its accept-caps check), so without this the
    only message is upstream's "Internal data stream error" (not-negotiated). Queries are left alone: caps
    and accept-caps queries also come from elements merely asking, and a "no" to them is no error. A
    module-level function, not a bound method: the pad holding the element would be a reference cycle.
    """
    event = info.get_event()
    if event is not None and event.type in (Gst.EventType.CAPS, Gst.EventType.STREAM_START):
        element = pad.get_parent_element()
        if isinstance(element, PackedVideoFilter):
            if event.type == Gst.EventType.STREAM_START:
                element._refused_caps = ""  # a new stream (or a restart): report refused caps again
            else:
                element._on_offered_caps(pad, event.parse_caps())
    return Gst.PadProbeReturn.OK


def is_nvmm(caps: Gst.Caps) -> bool:
    """Whether the (fixed) caps carry DeepStream's NVMM memory feature."""
    features = caps.get_features(0)
    return features is not None and features.contains(NVMM_FEATURE)


class PackedVideoFilter(GstBase.BaseTransform):
    """In place, never passthrough; keeps the negotiated :class:`FrameLayout`; accepts GstVideoMeta strides."""

    def __init__(self) -> None:
        super().__init__()
        self.set_in_place(True)
        self.set_passthrough(False)
        self._layout: FrameLayout | None = None
        self._refused_caps = ""
        self.sinkpad.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, _check_offered_caps)

    def _on_offered_caps(self, pad: Gst.Pad, caps: Gst.Caps) -> None:
        """A CAPS event arrived (before the pad checks it): post an ERROR if this element cannot take it."""
        if caps.can_intersect(pad.get_pad_template_caps()):
            self._refused_caps = ""
            return
        offered = describe_caps(caps)
        if offered == self._refused_caps:
            return  # upstream sends the refused caps again with each buffer: one ERROR is enough
        self._refused_caps = offered
        post_error(
            self, Gst.CoreError.NEGOTIATION,
            f"cannot take {offered}: it accepts {describe_caps(pad.get_pad_template_caps())} (convert before "
            f"it, e.g. with videoconvert)",
            f"offered caps: {caps.to_string()}",
        )  # fmt: skip

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        try:
            self._layout = FrameLayout.from_caps(incaps)
        except ValueError as exc:
            post_error(self, Gst.CoreError.NEGOTIATION, str(exc))
            return False
        self.on_layout_changed()
        return True

    def on_layout_changed(self) -> None:
        """Called after new caps were accepted (subclasses drop state sized for the old frames)."""

    def do_propose_allocation(self, decide_query: Gst.Query | None, query: Gst.Query) -> bool:
        # Strides are read from GstVideoMeta, so upstream may hand us padded rows.
        query.add_allocation_meta(GstVideo.VideoMeta.get_info().api, None)
        return True
