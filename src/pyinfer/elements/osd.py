"""``pyosd``: draws the detections attached to each frame in place.

Boxes (rotated ones as polygons), and a tag per detection with its track id (when a tracker set one), label
and confidence, in a colour per class; predicted boxes (``pytracker`` on frames without inference) are drawn
with thinner lines and no confidence. Line width and text size follow the frame height unless ``thickness``
and ``text-size`` set them; tags are placed so that none covers another. ``display-bbox``, ``display-text``,
``display-confidence`` and ``display-track-id`` (nvdsosd's names for the first two) choose what is drawn.
Frames without detections pass untouched (not even mapped); malformed ROI metas of other producers are
skipped with a rate-limited WARNING and counted in ``skipped-metas``.

Example::

    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \\
        pyinfer model-engine=... ! pytracker ! pyosd ! videoconvert ! autovideosink
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from pyinfer._gi import GObject, Gst
from pyinfer.detections import Detections
from pyinfer.draw import SECONDARY_LABELS, draw_captions, draw_detections
from pyinfer.elements._base import format_exception, post_error, post_warning, writable
from pyinfer.elements._video import TEMPLATES, PackedVideoFilter
from pyinfer.frames.system import frame_array
from pyinfer.meta import read_detections_checked, read_secondary_results
from pyinfer.meta.roi import _roi_api, has_shapes, with_shapes

WARNING_INTERVAL_S = 5.0  # malformed metadata posts at most one WARNING per this many seconds


class Drawing(NamedTuple):
    """What the drawing reads from the properties (``draw_detections``'s keywords)."""

    thickness: int
    text_size: int
    display_bbox: bool
    display_text: bool
    display_confidence: bool
    display_track_id: bool
    display_mask: bool
    display_keypoints: bool


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
        type=int, default=0, minimum=0, maximum=64, nick="Line thickness",
        blurb="Box line width in pixels; 0: from the frame height (2 up to 720p, 3 at 1080p, 6 at 4K). "
        "Predicted boxes get a third of it, at least 1 pixel",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    text_size = GObject.Property(
        type=int, default=0, minimum=0, maximum=512, nick="Text size",
        blurb="Tag text size in pixels; 0: from the frame height (12 at 480p, 18 at 720p, 24 at 1080p, 48 at 4K)",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    display_bbox = GObject.Property(
        type=bool, default=True, nick="Display boxes",
        blurb="Draw the boxes (as nvdsosd's display-bbox)",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    display_text = GObject.Property(
        type=bool, default=True, nick="Display text",
        blurb="Draw the tags: track id, label and confidence (as nvdsosd's display-text)",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    display_confidence = GObject.Property(
        type=bool, default=True, nick="Display confidence",
        blurb="Put the confidence in the tags (false: '#track label')",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    display_track_id = GObject.Property(
        type=bool, default=True, nick="Display track id",
        blurb="Put the track id in the tags (false: 'label confidence')",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip

    display_mask = GObject.Property(
        type=bool, default=True, nick="Display masks",
        blurb="Fill instance masks (segmentation models), translucent in the class colour (as nvdsosd's "
        "display-mask)",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING,
    )  # fmt: skip
    display_keypoints = GObject.Property(
        type=bool, default=True, nick="Display keypoints",
        blurb="Draw keypoints (pose models) with confidence >= 0.5, and the person skeleton for 17 keypoints",
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

    def _settings(self) -> Drawing:
        """The drawing properties, read at each buffer (about 1 µs for all; a ``notify`` handler connected in
        ``__init__``, as pyinfer caches its settings, made the element factory crash creating this element)."""
        return Drawing(
            self.thickness, self.text_size, self.display_bbox, self.display_text, self.display_confidence,
            self.display_track_id, self.display_mask, self.display_keypoints,
        )  # fmt: skip

    def do_start(self) -> bool:
        self._skipped = 0
        return True

    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        try:
            read = read_detections_checked(buf)
            if read.problems:
                self._report_malformed(read.problems)
            dets = read.detections
            settings = self._settings()
            # pyvlm's texts are ROI metas (one id lookup finds whether there are any)
            texts = settings.display_text and buf.get_n_meta(_roi_api()) > 0
            if len(dets) == 0 and not texts:
                return Gst.FlowReturn.OK
            if (settings.display_mask or settings.display_keypoints) and has_shapes(buf):
                dets = with_shapes(buf, dets)
            if settings.display_text and len(dets):
                dets = _with_secondary_labels(buf, dets)
            captions: list[str] = []
            if texts:
                dets, captions = _with_texts(buf, dets)
                if len(dets) == 0 and not captions:
                    return Gst.FlowReturn.OK
            shapes = dets.masks is not None or dets.keypoints is not None
            if not (settings.display_bbox or settings.display_text or shapes or captions):
                return Gst.FlowReturn.OK  # nothing to draw: the frame is not mapped
            layout = self._layout.for_buffer(buf)  # type: ignore[union-attr]  # set by do_set_caps, before buffers
            # BaseTransform made the buffer writable; mapping it for writing copies memory shared with other
            # buffers (a tee, a pool) first, so only this branch sees the drawing.
            with writable(buf):
                ok, info = buf.map(Gst.MapFlags.READ | Gst.MapFlags.WRITE)
                if not ok:
                    raise ValueError("could not map the buffer for writing")
                try:
                    frame = frame_array(info.data, layout, writeable=True)
                    if len(dets):
                        draw_detections(frame, dets, layout.format, **settings._asdict())
                    if captions:
                        draw_captions(frame, captions, layout.format, text_size=settings.text_size)
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


def _with_secondary_labels(buf: Gst.Buffer, dets: Detections) -> Detections:
    """``dets`` with each object's secondary classes (best first, by unique id) for its tag, where any."""
    import dataclasses

    found = read_secondary_results(buf)
    if not any(found):
        return dets
    ids = dets.extra.get("roi_id")
    rows = [int(v) for v in ids] if ids is not None else list(range(len(dets)))
    texts = np.empty(len(dets), object)
    for i, row in enumerate(rows):
        entry = found[row] if 0 <= row < len(found) else {}
        texts[i] = " ".join(topk[0][1] for _, topk in sorted(entry.items()) if topk)
    return dataclasses.replace(dets, extra={**dets.extra, SECONDARY_LABELS: texts})


def _with_texts(buf: Gst.Buffer, dets: Detections) -> tuple[Detections, list[str]]:
    """pyvlm's texts (:mod:`pyinfer.meta.text`): an object's follow its tag, the frame's become captions."""
    import dataclasses

    from pyinfer.meta.text import read_texts

    texts = read_texts(buf)
    if not texts:
        return dets, []
    captions = [t.text for t in texts if t.object_index < 0]
    per: list[list[str]] = [[] for _ in range(len(dets))]
    for t in texts:
        if 0 <= t.object_index < len(dets):
            per[t.object_index].append(t.text)
    if not any(per):
        return dets, captions
    old = dets.extra.get(SECONDARY_LABELS)
    heads = np.empty(len(dets), object)
    for i, lines in enumerate(per):
        parts = ([str(old[i])] if old is not None and old[i] else []) + lines
        heads[i] = " ".join(parts)
    return dataclasses.replace(dets, extra={**dets.extra, SECONDARY_LABELS: heads}), captions
