"""The metadata codecs of plain GStreamer behind one interface: how a producer writes one frame's detections.

pyinfer's contract (README "Metadata contract") is one set of facts per detection (box, exact float box,
confidence, class id, label, producer ``unique-id``, ``model-id``, rotated box, top-k, track id) and per frame
(inferred or not); each codec is one representation of it:

- ``analytics``: GstAnalytics (:mod:`pyinfer.meta.analytics`, GStreamer >= 1.24);
- ``roi``: ``GstVideoRegionOfInterestMeta`` (:mod:`pyinfer.meta.roi`, every version);
- ``both``: the two, for pipelines mixing consumers.

Readers need no codec: :func:`pyinfer.meta.read_detections` reads whichever a buffer carries. DeepStream's
``NvDsObjectMeta`` (:mod:`pyinfer.meta.deepstream`) is written per batch through pyservicemaker or pyds and
stays outside this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pyinfer._gi import Gst
from pyinfer.detections import Detections
from pyinfer.meta import analytics, roi

NAMES = ("analytics", "roi", "both")


class Codec(Protocol):
    """Writes one frame's detections and its frame record onto a writable buffer."""

    @property
    def name(self) -> str:
        """What ``meta-used`` reports."""

    def write_detections(self, buf: Gst.Buffer, detections: Detections, *, unique_id: int, model_id: int) -> None:
        """The detections of ``buf`` (one frame), numbered 0..N-1."""

    def write_frame_info(self, buf: Gst.Buffer, *, inferred: bool, unique_id: int, model_id: int) -> None:
        """The frame record: whether the model ran on this frame."""


@dataclass(frozen=True)
class _Roi:
    name: str = "roi"

    def write_detections(self, buf: Gst.Buffer, detections: Detections, *, unique_id: int, model_id: int) -> None:
        roi.write_detections(buf, detections, unique_id=unique_id, model_id=model_id)

    def write_frame_info(self, buf: Gst.Buffer, *, inferred: bool, unique_id: int, model_id: int) -> None:
        roi.write_frame_info(buf, inferred=inferred, unique_id=unique_id, model_id=model_id)


@dataclass(frozen=True)
class _Analytics:
    name: str = "analytics"

    def write_detections(self, buf: Gst.Buffer, detections: Detections, *, unique_id: int, model_id: int) -> None:
        ids = analytics.write_detections(buf, detections, unique_id=unique_id, model_id=model_id)
        _instance_masks(buf, ids, detections)
        if detections.masks is not None or detections.keypoints is not None:
            # GstAnalytics has no place for them here yet: masks and keypoints ride on ROI metas numbered as the
            # object detections (roi.MASK_PARAM, roi.KEYPOINTS_PARAM), which readers match by index.
            roi.write_detections(buf, detections, unique_id=unique_id, model_id=model_id)

    def write_frame_info(self, buf: Gst.Buffer, *, inferred: bool, unique_id: int, model_id: int) -> None:
        analytics.write_frame_info(buf, inferred=inferred, unique_id=unique_id, model_id=model_id)


@dataclass(frozen=True)
class _Both:
    name: str = "analytics+roi"

    def write_detections(self, buf: Gst.Buffer, detections: Detections, *, unique_id: int, model_id: int) -> None:
        ids = analytics.write_detections(buf, detections, unique_id=unique_id, model_id=model_id)
        _instance_masks(buf, ids, detections)
        roi.write_detections(buf, detections, unique_id=unique_id, model_id=model_id)

    def write_frame_info(self, buf: Gst.Buffer, *, inferred: bool, unique_id: int, model_id: int) -> None:
        analytics.write_frame_info(buf, inferred=inferred, unique_id=unique_id, model_id=model_id)
        roi.write_frame_info(buf, inferred=inferred, unique_id=unique_id, model_id=model_id)


def _instance_masks(buf: Gst.Buffer, od_ids: list[int], detections: Detections) -> None:
    """Masks of a segmentation model as GstAnalytics instance segmentation Mtds too (GStreamer >= 1.26)."""
    if detections.masks is not None and len(od_ids) and analytics.segmentation_available():
        analytics.write_instance_masks(buf, od_ids, detections.masks)


def codec(name: str) -> Codec:
    """The codec called ``name`` (``auto``: analytics where GStreamer has it, else roi).

    Raises:
        ValueError: an unknown name, or analytics/both where GstAnalytics is not available.
    """
    if name == "auto":
        name = "analytics" if analytics.available() else "roi"
    if name not in NAMES:
        raise ValueError(f"unknown metadata codec {name!r}: expected auto, {', '.join(NAMES)}")
    if name != "roi" and not analytics.available():
        raise ValueError(
            f"meta={name} needs GstAnalytics: GStreamer >= 1.24 with libgstanalytics-1.0 (gstreamer1.0-plugins-bad); "
            f"this is GStreamer {Gst.version_string().split()[-1]}: use meta=roi or meta=auto"
        )
    table: dict[str, Codec] = {"analytics": _Analytics(), "roi": _Roi(), "both": _Both()}
    return table[name]
