"""The base of pyinfer's in-place filters on packed RGB-family video in system memory."""

from __future__ import annotations

from pyinfer._gi import Gst, GstBase, GstVideo
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
