"""``pyosd``: draws the detections attached to each frame in place.

Boxes (rotated ones as polygons), and a tag per detection with its track id (when a tracker set one), label
and confidence, in a colour per class; predicted boxes (``pytracker`` on frames without inference) are drawn
with 1-pixel lines and no confidence. Frames without detections pass untouched (not even mapped); malformed
ROI metas of other producers are skipped with a rate-limited WARNING and counted in ``skipped-metas``.

Example::

    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \\
        pyinfer model-engine=... ! pytracker ! pyosd ! videoconvert ! autovideosink
"""

from __future__ import annotations

import time

from pyinfer._gi import GObject, Gst
from pyinfer.draw import draw_detections
from pyinfer.elements._base import format_exception, post_error, post_warning, writable
from pyinfer.elements._video import TEMPLATES, PackedVideoFilter
from pyinfer.frames.system import frame_array
from pyinfer.meta import read_detections_checked

WARNING_INTERVAL_S = 5.0  # malformed metadata posts at most one WARNING per this many seconds


class OsdElement(PackedVideoFilter):
    """Draws ROI-meta detections into the frame."""

    __gtype_name__ = "PyOsd"
    __gstmetadata__ = (
        "Python on-screen display",
        "Filter/Editor/Video",
        "Draws detections (boxes, rotated boxes, track ids, labels, confidences) from region-of-interest "
        "metadata into frames",
        "pyinfer developers",
    )
    __gsttemplates__ = TEMPLATES

    thickness = GObject.Property(
        type=int, default=2, minimum=1, maximum=64, nick="Line thickness",
        blurb="Box line width in pixels (predicted boxes are always 1 pixel)",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    @GObject.Property(
        type=GObject.TYPE_UINT64, nick="Skipped metas",
        blurb="Malformed region-of-interest metas (from other producers) skipped since start",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def skipped_metas(self) -> int:
        return self._skipped

    def __init__(self) -> None:
        super().__init__()
        self._skipped = 0
        self._last_warning = -WARNING_INTERVAL_S

    def do_start(self) -> bool:
        self._skipped = 0
        return True

    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        try:
            read = read_detections_checked(buf)
            if read.problems:
                self._report_malformed(read.problems)
            dets = read.detections
            if len(dets) == 0:
                return Gst.FlowReturn.OK
            layout = self._layout.for_buffer(buf)  # type: ignore[union-attr]  # set by do_set_caps, before buffers
            # BaseTransform made the buffer writable; mapping it for writing copies memory shared with other
            # buffers (a tee, a pool) first, so only this branch sees the drawing.
            with writable(buf):
                ok, info = buf.map(Gst.MapFlags.READ | Gst.MapFlags.WRITE)
                if not ok:
                    raise ValueError("could not map the buffer for writing")
                try:
                    frame = frame_array(info.data, layout, writeable=True)
                    draw_detections(frame, dets, layout.format, thickness=self.thickness)
                    del frame
                finally:
                    buf.unmap(info)
        except Exception as exc:
            post_error(self, Gst.StreamError.FAILED, f"drawing failed: {exc}", format_exception(exc))
            return Gst.FlowReturn.ERROR
        return Gst.FlowReturn.OK

    def _report_malformed(self, problems: list[str]) -> None:
        self._skipped += len(problems)
        now = time.monotonic()
        if now - self._last_warning >= WARNING_INTERVAL_S:  # rate-limited: a bad producer sends every frame
            self._last_warning = now
            post_warning(
                self, Gst.StreamError.FORMAT,
                f"skipped {len(problems)} malformed region-of-interest meta(s) ({self._skipped} so far): "
                f"{problems[0]}",
                "\n".join(problems),
            )  # fmt: skip
