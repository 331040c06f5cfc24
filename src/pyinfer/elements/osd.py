"""``pyosd``: draws the detections attached to each frame (boxes, labels, confidences) in place.

Example::

    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \\
        pyinfer model-engine=... ! pyosd ! videoconvert ! autovideosink
"""

from __future__ import annotations

from pyinfer._gi import Gst, GstBase, GstVideo
from pyinfer.draw import draw_detections
from pyinfer.elements._base import format_exception, post_error, writable
from pyinfer.frames.system import FORMATS, FrameLayout, frame_array
from pyinfer.meta.roi import read_detections

_CAPS = Gst.Caps.from_string(
    f"video/x-raw, format=(string){{ {', '.join(FORMATS)} }}, width=(int)[1, 32767], height=(int)[1, 32767]"
)


class OsdElement(GstBase.BaseTransform):
    """Draws ROI-meta detections into the frame."""

    __gtype_name__ = "PyOsd"
    __gstmetadata__ = (
        "Python on-screen display",
        "Filter/Editor/Video",
        "Draws detections (boxes, labels, confidences) from region-of-interest metadata into frames",
        "pyinfer developers",
    )
    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS),
    )

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
        return True

    def do_propose_allocation(self, decide_query: Gst.Query | None, query: Gst.Query) -> bool:
        query.add_allocation_meta(GstVideo.VideoMeta.get_info().api, None)
        return True

    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        try:
            dets = read_detections(buf)
            if len(dets) == 0:
                return Gst.FlowReturn.OK
            layout = self._layout.for_buffer(buf)
            with writable(buf):
                ok, info = buf.map(Gst.MapFlags.READ | Gst.MapFlags.WRITE)
                if not ok:
                    raise ValueError("could not map the buffer for writing")
                try:
                    frame = frame_array(info.data, layout, writeable=True)
                    draw_detections(frame, dets, layout.format)
                    del frame
                finally:
                    buf.unmap(info)
        except Exception as exc:
            post_error(self, Gst.StreamError.FAILED, f"drawing failed: {exc}", format_exception(exc))
            return Gst.FlowReturn.ERROR
        return Gst.FlowReturn.OK
