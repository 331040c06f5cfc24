"""``pytracker``: multi-object tracking of the detections attached to each frame (ByteTrack-style).

Reads the detections of each frame from GstAnalytics object-detection Mtds when the buffer has them (any
producer), else from ROI metas, and writes track ids where it read them:

- GstAnalytics: one tracking Mtd (``tracking_id``; ``first_seen``, ``last_seen`` as PTS) per detection of a
  confirmed track, related ``od RELATE_TO tracking``; a pyinfer ``meta=both`` frame's ROI metas get the same
  ids as below;
- ROI metas: a ``tracking`` param (``track-id``, guint64; ``predicted``, boolean).

On frames that pyinfer's frame record marks as not inferred (``interval``) it predicts the tracks and adds one
detection per confirmed track matched at the last inferred frame, written as pyinfer writes detections (the
track's predicted box, last class, label and score, the frame record's unique-id and model-id) and flagged
predicted (ROI: ``predicted=true`` and ``frames-since-update`` in the ``tracking`` param; GstAnalytics: the
pyinfer Mtd's predicted flag and frames_since_update). Frames without a frame record are treated as
inferred. One element holds the tracks of one stream; they are forgotten at flush and stream start.

Example::

    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \\
        pyinfer model-engine=... interval=2 ! pytracker ! pyosd ! videoconvert ! autovideosink
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from pyinfer._gi import GObject, Gst, GstBase, GstVideo
from pyinfer.detections import UNTRACKED_ID, Detections
from pyinfer.elements._base import format_exception, post_error, post_warning, writable
from pyinfer.elements._enums import TrackerCore, TrackerIouMode, choice_property
from pyinfer.errors import ConfigError
from pyinfer.meta import analytics, read_detections_checked, read_frame_info
from pyinfer.meta.roi import has_shapes, roi_metas, set_track_id, set_track_ids, with_shapes, write_detections
from pyinfer.meta.roi import read_frame_info as roi_frame_info
from pyinfer.track.bytetrack import BACKENDS, IOU_MODES, ByteTracker, Tracker, TrackerConfig

_RW = GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_PLAYING
WARNING_INTERVAL_S = 5.0  # malformed metadata posts at most one WARNING per this many seconds

# Any raw video in system memory: the tracker reads metadata only, never pixels.
# Metadata only: any raw video, in any memory (system, CUDA from NVIDIA decoders, ...): pixels are never read.
_CAPS = Gst.Caps.from_string("video/x-raw(ANY)")
_TEMPLATES = (
    Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS),
    Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS),
)


class TrackerElement(GstBase.BaseTransform):
    """Gives the detections of each frame stable track ids; predicts tracks on frames without inference."""

    __gtype_name__ = "PyTracker"
    __gstmetadata__ = (
        "Python multi-object tracker",
        "Filter/Analyzer/Video",
        "Tracks region-of-interest detections across frames (ByteTrack-style, Kalman motion, rotated IoU) and "
        "writes stable track ids into their metadata",
        "pyinfer developers",
    )
    __gsttemplates__ = _TEMPLATES

    high_threshold = GObject.Property(
        type=float, default=0.5, minimum=0.0, maximum=1.0, nick="High threshold",
        blurb="Detections scoring at least this are matched first and may start tracks", flags=_RW,
    )  # fmt: skip
    low_threshold = GObject.Property(
        type=float, default=0.1, minimum=0.0, maximum=1.0, nick="Low threshold",
        blurb="Detections scoring below this are ignored; between low and high they only continue tracks",
        flags=_RW,
    )  # fmt: skip
    new_track_threshold = GObject.Property(
        type=float, default=0.6, minimum=0.0, maximum=1.0, nick="New track threshold",
        blurb="An unmatched detection starts a track only when scoring at least this (and high-threshold)",
        flags=_RW,
    )  # fmt: skip
    match_iou_threshold = GObject.Property(
        type=float, default=0.2, minimum=0.0, maximum=1.0, nick="Match IoU threshold",
        blurb="Lowest IoU between a high-scoring detection and a track's predicted box to match them", flags=_RW,
    )  # fmt: skip
    max_age = GObject.Property(
        type=int, default=30, minimum=0, maximum=1_000_000, nick="Maximum age",
        blurb="Frames a track survives without a matched detection", flags=_RW,
    )  # fmt: skip
    min_hits = GObject.Property(
        type=int, default=2, minimum=1, maximum=1000, nick="Minimum hits",
        blurb="Matched inferred frames before a track is confirmed and gets an id (at once in the first frame)",
        flags=_RW,
    )  # fmt: skip
    class_aware = GObject.Property(
        type=bool, default=False, nick="Class aware",
        blurb="Match detections only to tracks of the same class", flags=_RW,
    )  # fmt: skip

    iou_mode = choice_property(
        "iou-mode",
        type=TrackerIouMode, default="auto", nick="IoU mode",
        blurb="auto (rotated IoU when detections carry rotated boxes), axis (enclosing boxes) or rotated",
        flags=_RW, setter=lambda self, value: self._set_choice("iou-mode", value, IOU_MODES),
    )  # fmt: skip
    core = choice_property(
        "core",
        type=TrackerCore, default="auto", nick="Tracker core",
        blurb="Tracker core: auto (native C when built and its ABI matches, else NumPy), native or numpy; applies at "
        "start (called core, not backend: pyinfer's backend is the model runtime)",
        flags=GObject.ParamFlags.READWRITE | Gst.PARAM_MUTABLE_READY,
        setter=lambda self, value: self._set_choice("core", value, BACKENDS),
    )  # fmt: skip

    def _set_choice(self, name: str, value: str, choices: tuple[str, ...]) -> None:
        """Sets choice property ``name`` (stored as ``_<name>``) to the nick ``value``, one of ``choices``.

        GObject refuses values outside the property's GEnum when they are set; one of the enum outside
        ``choices`` (the tracker's own list) is a WARNING, and the old value stays.
        """
        attr = "_" + name.replace("-", "_")
        if value not in choices:
            post_warning(
                self, Gst.ResourceError.SETTINGS,
                f"{name} must be one of {', '.join(choices)}, not {value!r}; keeping {getattr(self, attr)}",
            )  # fmt: skip
            return
        setattr(self, attr, value)

    @GObject.Property(
        type=str, nick="Tracker core used", blurb="The tracker core running: native or numpy (empty before start)",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def core_used(self) -> str:
        return self._tracker.backend if self._tracker is not None else ""

    @GObject.Property(
        type=GObject.TYPE_UINT64, nick="Skipped metas",
        blurb="Malformed region-of-interest metas (from other producers) skipped since start",
        flags=GObject.ParamFlags.READABLE,
    )  # fmt: skip
    def skipped_metas(self) -> int:
        return self._skipped

    def __init__(self) -> None:
        self._iou_mode = "auto"
        self._core = "auto"
        self._tracker: Tracker | None = None
        self._first_seen: dict[int, int] = {}  # track id -> PTS of its first report
        super().__init__()
        self.set_in_place(True)
        self.set_passthrough(False)
        self._skipped = 0
        self._last_warning = -WARNING_INTERVAL_S
        self._bad_config = ""
        self._size: tuple[int, int] | None = None
        self._labels: dict[int, str] = {}

    def _config(self) -> TrackerConfig:
        return TrackerConfig(
            high_threshold=self.high_threshold,
            low_threshold=self.low_threshold,
            new_track_threshold=self.new_track_threshold,
            match_iou_threshold=self.match_iou_threshold,
            max_age=self.max_age,
            min_hits=self.min_hits,
            class_aware=self.class_aware,
            iou_mode=self._iou_mode,
        )

    # -- state -------------------------------------------------------------------------------------------
    def do_start(self) -> bool:
        try:
            self._tracker = ByteTracker(self._config(), backend=self._core)
        except ConfigError as exc:
            post_error(self, Gst.ResourceError.SETTINGS, str(exc))
            return False
        self._skipped = 0
        self._bad_config = ""
        self._labels = {}
        self._shapes: dict[int, tuple] = {}  # track id -> (mask, box-relative keypoints) of its last detection
        return True

    def do_stop(self) -> bool:
        self._tracker = None
        self._size = None
        return True

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        info = GstVideo.VideoInfo.new_from_caps(incaps)
        self._size = (info.width, info.height) if info is not None and info.width > 0 else None
        return True

    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type in (Gst.EventType.FLUSH_STOP, Gst.EventType.STREAM_START) and self._tracker is not None:
            self._tracker.reset()  # a seek or a new stream: old tracks would match unrelated objects
            self._first_seen.clear()
        return GstBase.BaseTransform.do_sink_event(self, event)

    # -- buffers -----------------------------------------------------------------------------------------
    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        tracker = self._tracker
        if tracker is None:
            return Gst.FlowReturn.FLUSHING
        try:
            self._refresh_config(tracker)
            info = read_frame_info(buf)
            if info is not None and not info.inferred:
                self._predict(buf, tracker, info.unique_id, info.model_id)
            else:
                self._update(buf, tracker)
        except Exception as exc:
            post_error(self, Gst.StreamError.FAILED, f"tracking failed: {exc}", format_exception(exc))
            return Gst.FlowReturn.ERROR
        return Gst.FlowReturn.OK

    def _refresh_config(self, tracker: Tracker) -> None:
        """Apply property changes; a combination the tracker refuses keeps the last good one (WARNING once)."""
        try:
            cfg = self._config()
        except ConfigError as exc:
            if str(exc) != self._bad_config:
                self._bad_config = str(exc)
                post_warning(self, Gst.ResourceError.SETTINGS, f"{exc}; keeping the previous settings")
            return
        self._bad_config = ""
        if cfg != tracker.config:
            tracker.config = cfg

    def _update(self, buf: Gst.Buffer, tracker: Tracker) -> None:
        read = read_detections_checked(buf, tracking=False)
        if read.problems:
            self._report_malformed(read.problems)
        dets = read.detections
        if dets.labels:
            for c in np.unique(dets.class_id).tolist():
                if 0 <= c < len(dets.labels):
                    self._labels[c] = dets.labels[c]
        ids = tracker.update(dets)
        tracked = np.flatnonzero(ids != UNTRACKED_ID).tolist()
        if not tracked:
            return
        track_ids = ids[tracked].tolist()
        if has_shapes(buf):  # masks and keypoints, for the boxes this track gets on frames not inferred
            self._keep_shapes(with_shapes(buf, dets), tracked, track_ids)
        with writable(buf):
            if isinstance(read, analytics.CheckedDetections):
                pts = int(buf.pts)
                firsts = [self._first_seen_pts(t, pts) for t in track_ids]
                analytics.set_track_ids(buf, [read.metas[i] for i in tracked], track_ids, pts=pts, first_seen=firsts)
                self._mirror_to_roi(buf, dets, tracked, track_ids)
            else:
                set_track_ids(read.metas, tracked, track_ids, predicted=False)

    def _keep_shapes(self, dets: Detections, tracked: list[int], track_ids: list[int]) -> None:
        """Remember each tracked detection's mask (box-local) and keypoints (relative to its box)."""
        if dets.masks is None and dets.keypoints is None:
            return
        shapes = self._shapes
        for i, tid in zip(tracked, track_ids):
            rel = None
            if dets.keypoints is not None:
                x0, y0, x1, y1 = (float(v) for v in dets.xyxy[i])
                rel = dets.keypoints[i].astype(np.float32).copy()
                rel[:, 0] = (rel[:, 0] - x0) / max(x1 - x0, 1e-6)
                rel[:, 1] = (rel[:, 1] - y0) / max(y1 - y0, 1e-6)
            shapes[tid] = (None if dets.masks is None else dets.masks[i], rel)
        if len(shapes) > 4096:  # tracks long gone: keep the newest half
            for key in list(shapes)[:2048]:
                del shapes[key]

    def _predicted_shapes(self, pred: Detections) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The kept masks and keypoints of predicted boxes (keypoints moved with the box), where every box has
        them alike (else None)."""
        if not self._shapes or pred.tracker_id is None or len(pred) == 0:
            return None, None
        kept = [self._shapes.get(int(t)) for t in pred.tracker_id.tolist()]
        if any(k is None for k in kept):
            return None, None
        masks = [k[0] for k in kept]  # type: ignore[index]  # checked: none is None
        rels = [k[1] for k in kept]  # type: ignore[index]
        out_masks = None
        if all(m is not None for m in masks) and len({m.shape for m in masks}) == 1:
            out_masks = np.stack(masks)
        out_kpts = None
        if all(r is not None for r in rels) and len({r.shape for r in rels}) == 1:
            out_kpts = np.stack(rels).astype(np.float32)
            x0, y0 = pred.xyxy[:, 0:1], pred.xyxy[:, 1:2]
            w, h = pred.xyxy[:, 2:3] - x0, pred.xyxy[:, 3:4] - y0
            out_kpts[:, :, 0] = x0 + out_kpts[:, :, 0] * w
            out_kpts[:, :, 1] = y0 + out_kpts[:, :, 1] * h
        return out_masks, out_kpts

    def _first_seen_pts(self, track_id: int, pts: int) -> int:
        """The PTS at which ``track_id`` was first reported (for the tracking Mtd's first_seen)."""
        first = self._first_seen.setdefault(track_id, pts)
        if len(self._first_seen) > 65536:  # tracks long gone: keep the newest half
            for key in list(self._first_seen)[:32768]:
                del self._first_seen[key]
        return first

    @staticmethod
    def _mirror_to_roi(buf: Gst.Buffer, dets: Detections, tracked: list[int], track_ids: list[int]) -> None:
        """meta=both: the ROI metas pyinfer wrote beside the analytics get the same track ids."""
        metas = roi_metas(buf)
        if len(metas) == 0:
            return
        by_id = {int(m.id): m for m in metas}
        index = dets.extra["roi_id"].tolist()
        uid = dets.extra["unique_id"].tolist()
        for i, tid in zip(tracked, track_ids):
            meta = by_id.get(index[i])
            if meta is not None and uid[i] >= 0:
                s = meta.get_param("detection")
                if s is not None and s.has_field("unique-id") and s.get_value("unique-id") == uid[i]:
                    set_track_id(meta, tid, predicted=False)

    def _predict(self, buf: Gst.Buffer, tracker: Tracker, unique_id: int, model_id: int) -> None:
        pred = tracker.predict()
        if len(pred) == 0:
            return
        xyxy = pred.xyxy
        if self._size is not None:
            w, h = self._size
            xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
        visible = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])  # gone out of the frame: not drawn
        cls = pred.class_id[visible]
        labels = tuple(self._labels.get(c, str(c)) for c in range(int(cls.max()) + 1)) if len(cls) else ()
        pred = Detections(
            xyxy[visible], pred.confidence[visible], cls,
            cxcywhr=None if pred.cxcywhr is None else pred.cxcywhr[visible], labels=labels,
            extra={k: v[visible] for k, v in pred.extra.items()},
            tracker_id=None if pred.tracker_id is None else pred.tracker_id[visible],
        )  # fmt: skip
        if len(pred) == 0 or pred.tracker_id is None:
            return
        ids = pred.tracker_id.tolist()
        masks, keypoints = self._predicted_shapes(pred)
        if masks is not None or keypoints is not None:
            pred = dataclasses.replace(pred, masks=masks, keypoints=keypoints)
        since = pred.extra["frames_since_update"].tolist()
        if analytics.has_analytics(buf):
            pts = int(buf.pts)
            with writable(buf):
                od_ids = analytics.write_predicted(buf, pred, unique_id=unique_id, model_id=model_id, pts=pts,
                                                   first_seen=[self._first_seen_pts(t, pts) for t in ids])  # fmt: skip
                if masks is not None and analytics.segmentation_available():
                    analytics.write_instance_masks(buf, od_ids, masks)
            # meta=both also has the ROI record: predict there too; masks and keypoints ride on ROI metas beside
            # the analytics objects (as pyinfer writes them)
            if roi_frame_info(buf) is None and masks is None and keypoints is None:
                return
        first_id = len(roi_metas(buf))
        with writable(buf):
            metas = write_detections(buf, pred, unique_id=unique_id, model_id=model_id, first_id=first_id)
            for meta, track_id, age in zip(metas, ids, since):
                set_track_id(meta, track_id, predicted=True, frames_since_update=age)

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
