"""``pyosd``: draws the detections attached to each frame (boxes, labels, confidences) in place.

Example::

    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \\
        pyinfer model-engine=... ! pyosd ! videoconvert ! autovideosink
"""

from __future__ import annotations

from pyinfer._gi import Gst
from pyinfer.draw import draw_detections
from pyinfer.elements._base import format_exception, post_error, writable
from pyinfer.elements._video import TEMPLATES, PackedVideoFilter
from pyinfer.frames.system import frame_array
from pyinfer.meta.roi import read_detections


class OsdElement(PackedVideoFilter):
    """Draws ROI-meta detections into the frame."""

    __gtype_name__ = "PyOsd"
    __gstmetadata__ = (
        "Python on-screen display",
        "Filter/Editor/Video",
        "Draws detections (boxes, labels, confidences) from region-of-interest metadata into frames",
        "pyinfer developers",
    )
    __gsttemplates__ = TEMPLATES

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
