"""Secondary inference (``process-mode=secondary``): a model run on the objects of an upstream pyinfer.

nvinfer's secondary mode, on plain GStreamer. Per buffer, on the streaming thread, :func:`select_objects` picks
the objects the element operates on (``operate-on-gie-id``, ``operate-on-class-ids``, ``input-object-min/max``
sizes) from the detections an upstream producer attached (GstAnalytics or ROI metas); objects a tracker follows
whose result is younger than ``secondary-reinfer-interval`` frames take it from :class:`ResultCache` instead of
the model. On the worker, :class:`SecondaryEngine` cuts every selected object of the job's frames out in one
batch on the frames' device (:func:`pyinfer.ops.crops.crop_resize`) and runs the model on the crops in calls of
at most ``batch-size`` objects; :func:`write_results` attaches each object's classification where the object is:
a classification Mtd and a ``pyinfer-secondary`` Mtd naming the producer (GstAnalytics), and a
``classification-<unique-id>`` param on its ROI meta (the fields of the ``classification`` param). README
"Metadata contract".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyinfer._gi import Gst, GstVideo

#: ROI param name prefix of a secondary classifier's result; the producer's unique-id follows.
PARAM_PREFIX = "classification-"


def param_name(unique_id: int) -> str:
    """The ROI param a secondary with ``unique_id`` writes (``classification-<unique-id>``)."""
    return f"{PARAM_PREFIX}{int(unique_id)}"


@dataclass(frozen=True)
class ObjectFilter:
    """Which upstream objects a secondary operates on (nvinfer's names; 0 / -1 / empty: no limit)."""

    gie_id: int = -1
    class_ids: frozenset[int] = frozenset()
    min_width: int = 0
    min_height: int = 0
    max_width: int = 0
    max_height: int = 0
    reinfer_interval: int = 0
    letterbox: bool = False


@dataclass
class FrameObjects:
    """One frame's selected objects: ROI ids, boxes (xyxy, frame pixels), track ids, and results from the cache."""

    roi_ids: np.ndarray  # (N,) int64: the objects' ROI meta ids
    boxes: np.ndarray  # (N, 4) float32 xyxy
    track_ids: np.ndarray | None  # (N,) uint64, or None: untracked
    infer: np.ndarray  # (N,) bool: run the model (else ``cached[i]`` is the result)
    cached: list = field(default_factory=list)  # per object: a cached result or None
    od_ids: np.ndarray | None = None  # (N,) the objects' GstAnalytics OD Mtd ids, when read from GstAnalytics

    @classmethod
    def empty(cls) -> FrameObjects:
        return cls(np.empty(0, np.int64), np.empty((0, 4), np.float32), None, np.empty(0, bool), [])

    def __len__(self) -> int:
        return len(self.roi_ids)


def select_objects(dets: Any, flt: ObjectFilter, cache: ResultCache | None, frame_no: int) -> FrameObjects:
    """The objects of one frame's detections (``pyinfer.meta.read_detections``) that ``flt`` lets through."""
    from pyinfer.detections import UNTRACKED_ID

    n = len(dets)
    if n == 0 or "roi_id" not in dets.extra:
        return FrameObjects.empty()
    xyxy = np.asarray(dets.xyxy, np.float32)
    keep = np.ones(n, bool)
    if flt.gie_id >= 0:
        keep &= np.asarray(dets.extra.get("unique_id", np.full(n, -1)), np.int64) == flt.gie_id
    if flt.class_ids:
        keep &= np.isin(np.asarray(dets.class_id), list(flt.class_ids))
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    keep &= (w > 0) & (h > 0)
    if flt.min_width:
        keep &= w >= flt.min_width
    if flt.min_height:
        keep &= h >= flt.min_height
    if flt.max_width:
        keep &= w <= flt.max_width
    if flt.max_height:
        keep &= h <= flt.max_height
    idx = np.flatnonzero(keep)
    tracks = None
    if dets.tracker_id is not None:
        tracks = np.asarray(dets.tracker_id, np.uint64)[idx]
    infer = np.ones(len(idx), bool)
    cached: list = [None] * len(idx)
    if cache is not None and tracks is not None and flt.reinfer_interval > 0:
        for k, t in enumerate(tracks.tolist()):
            if t == UNTRACKED_ID:
                continue
            hit = cache.get(t, frame_no, flt.reinfer_interval)
            if hit is not None:
                infer[k] = False
                cached[k] = hit
    roi_ids = np.asarray(dets.extra["roi_id"], np.int64)[idx]
    od_ids = np.asarray(dets.extra["mtd_id"], np.int64)[idx] if "mtd_id" in dets.extra else None
    return FrameObjects(roi_ids, xyxy[idx], tracks, infer, cached, od_ids)


class ResultCache:
    """Per track id, the last result and the frame it was inferred on (``secondary-reinfer-interval``)."""

    def __init__(self, limit: int = 4096) -> None:
        self._lock = threading.Lock()
        self._data: dict[int, tuple[int, Any]] = {}
        self._limit = limit

    def get(self, track_id: int, frame_no: int, interval: int) -> Any:
        with self._lock:
            hit = self._data.get(track_id)
        if hit is None or frame_no - hit[0] >= interval:
            return None
        return hit[1]

    def put(self, track_id: int, frame_no: int, result: Any) -> None:
        with self._lock:
            self._data[track_id] = (frame_no, result)
            if len(self._data) > self._limit:  # the oldest results go first
                for key, _ in sorted(self._data.items(), key=lambda kv: kv[1][0])[: len(self._data) // 4]:
                    del self._data[key]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


@dataclass
class Classified:
    """One object's top-k: class ids, labels and confidences, best first."""

    class_ids: list[int]
    labels: list[str]
    confidences: list[float]


class SecondaryEngine:
    """A job's engine in secondary mode: crops of the selected objects -> the model -> one result per object.

    ``submit`` runs the model (in calls of at most ``batch`` objects); ``collect`` hands back, per frame, the
    list of :class:`Classified` (or None where the model gave nothing above the threshold) in the order of the
    frame's :class:`FrameObjects`, cached results included.
    """

    def __init__(self, engine: Any, objects: list[FrameObjects], batch: int, letterbox: bool) -> None:
        self.engine = engine
        self.objects = objects
        self.batch = max(1, batch)
        self.letterbox = letterbox
        self.classify = is_classifier(engine)
        self.take_warnings = getattr(engine, "take_warnings", None)

    def submit(self, frames: Any, *, channels: str, params: Any) -> list:
        import torch

        from pyinfer.engine import _yuv_to, same_device
        from pyinfer.ops.colour import YuvFrames
        from pyinfer.ops.crops import crop_resize

        picks = [(f, k) for f, objs in enumerate(self.objects) for k in np.flatnonzero(objs.infer).tolist()]
        results: list = [list(objs.cached) for objs in self.objects]
        if not picks:
            return results
        eng = self.engine
        # Crops are cut where the model runs: host frames for a GPU model go up whole (one copy of a 1080p frame,
        # ~0.5 ms) instead of being cut on the CPU (hundreds of us per object there; the H200 run: 264 us per
        # object in the element against 10 for the crops on the GPU).
        device = getattr(getattr(eng, "model", None), "device", None)
        if device is not None and not same_device(frames.device, device):
            frames = _yuv_to(frames, device) if isinstance(frames, YuvFrames) else frames.to(device)
        if isinstance(frames, YuvFrames):
            frames, channels = frames.to_rgb(), "RGB"
        boxes = torch.from_numpy(np.stack([self.objects[f].boxes[k] for f, k in picks]))
        index = torch.tensor([f for f, _ in picks], dtype=torch.int64)
        iw, ih = eng.input_width, eng.input_height
        crops = crop_resize(frames, index, boxes, iw, ih, letterbox=self.letterbox)
        labels = tuple(eng.labels)
        regions = None
        if not self.classify:  # detections inside objects: back from crop pixels to frame pixels
            from pyinfer.ops.crops import pixel_boxes

            _, height, width, _ = (int(v) for v in frames.shape)
            regions = pixel_boxes(boxes, width, height).numpy()
        by_batch = regions is None and hasattr(eng, "collect_batch")
        for start in range(0, len(picks), self.batch):
            ticket = eng.submit(crops[start : start + self.batch], channels=channels, params=params)
            if by_batch:  # a classifier: its rows read at once, no Detections per crop (~10 us each)
                chunk = picks[start : start + self.batch]
                for j, found in _classified_rows(eng.collect_batch(ticket), labels):
                    f, k = chunk[j]
                    results[f][k] = found
                continue
            dets = eng.collect(ticket)
            for j, ((f, k), d) in enumerate(zip(picks[start : start + self.batch], dets)):
                if regions is None:
                    results[f][k] = _classified(d, labels)
                else:
                    inside = crop_to_frame(d, regions[start + j], iw, ih, self.letterbox)
                    results[f][k] = inside if len(inside) else None
        return results

    def collect(self, ticket: list) -> list:
        return ticket


def is_classifier(engine: Any) -> bool:
    """Whether ``engine``'s results are one classification per crop (else detections inside each object)."""
    return getattr(getattr(engine, "decoder", None), "name", "") == "classifier"


def crop_to_frame(dets: Any, region: np.ndarray, in_w: int, in_h: int, letterbox: bool) -> Any:
    """Detections made on one object's crop (model-input pixels) mapped to frame pixels: ``region`` is the
    crop's whole-pixel box (left, top, right, bottom) as :func:`pyinfer.ops.crops.crop_resize` cut it; boxes are
    clipped to it. Keypoints are mapped the same way."""
    import dataclasses

    left, top, right, bottom = (float(v) for v in region)
    rx, ry = (right - left) / in_w, (bottom - top) / in_h  # source pixels per input pixel
    px = py = 0.0
    if letterbox:
        rx = ry = max(rx, ry)
        px, py = (in_w - (right - left) / rx) / 2.0, (in_h - (bottom - top) / ry) / 2.0
    xyxy = np.asarray(dets.xyxy, np.float64).copy()
    xyxy[:, [0, 2]] = np.clip(left + (xyxy[:, [0, 2]] - px) * rx, left, right)
    xyxy[:, [1, 3]] = np.clip(top + (xyxy[:, [1, 3]] - py) * ry, top, bottom)
    keypoints = None
    if dets.keypoints is not None:
        keypoints = np.asarray(dets.keypoints, np.float32).copy()
        keypoints[..., 0] = left + (keypoints[..., 0] - px) * rx
        keypoints[..., 1] = top + (keypoints[..., 1] - py) * ry
    return dataclasses.replace(dets, xyxy=xyxy.astype(np.float32), keypoints=keypoints)


def concat_children(parts: list) -> Any:
    """One Detections of several objects' children (same labels, no rotated boxes or masks)."""
    from pyinfer.detections import Detections

    first = parts[0]
    kpts = None
    if all(p.keypoints is not None for p in parts):
        kpts = np.concatenate([p.keypoints for p in parts])
    return Detections(
        xyxy=np.concatenate([p.xyxy for p in parts]),
        confidence=np.concatenate([p.confidence for p in parts]),
        class_id=np.concatenate([p.class_id for p in parts]),
        labels=first.labels,
        keypoints=kpts,
    )


def write_children(
    buf: Gst.Buffer, objects: FrameObjects, results: list, unique_id: int, model_id: int
) -> int:  # fmt: skip
    """A detector secondary's detections inside the objects, added to the frame's objects (``buf`` writable):
    GstAnalytics OD Mtds (objects read from GstAnalytics) with ``parent CONTAIN child`` and ``child IS_PART_OF
    parent``, and ROI metas numbered after the frame's (where the frame has ROI metas) with a ``pyinfer-parent``
    param (``id``: the parent's ROI id). Returns how many were added."""
    from pyinfer.meta import analytics, roi

    parts, parent_rows = [], []
    for k, res in enumerate(results):
        if res is not None and len(res):
            parts.append(res)
            parent_rows += [k] * len(res)
    if not parts:
        return 0
    children = concat_children(parts)
    rows = np.asarray(parent_rows, np.int64)
    if objects.od_ids is not None:
        ids = analytics.write_children(buf, children, objects.od_ids[rows].tolist(), unique_id=unique_id,
                                       model_id=model_id)  # fmt: skip
        if roi.read_frame_info(buf) is None and not len(roi.roi_metas(buf)):
            return len(ids)
    metas = roi.write_detections(buf, children, unique_id=unique_id, model_id=model_id,
                                 first_id=len(roi.roi_metas(buf)))  # fmt: skip
    roi.set_parents(metas, objects.roi_ids[rows].tolist())
    return len(metas)


def _classified(dets: Any, labels: tuple[str, ...]) -> Classified | None:
    """A classifier's whole-crop detection -> its top-k; None when the crop scored below the threshold."""
    if len(dets) == 0:
        return None
    ids = dets.extra.get("topk_class_id")
    conf = dets.extra.get("topk_confidence")
    if ids is None or conf is None:  # a decoder without top-k: its best class
        ids, conf = np.asarray(dets.class_id[:1]).reshape(1, -1), np.asarray(dets.confidence[:1]).reshape(1, -1)
    ids_l = np.asarray(ids).reshape(len(dets), -1)[0].tolist()
    conf_l = np.asarray(conf, np.float64).reshape(len(dets), -1)[0].tolist()
    names = [labels[c] if 0 <= c < len(labels) else str(c) for c in ids_l]
    return Classified([int(c) for c in ids_l], names, [float(p) for p in conf_l])


def _classified_rows(batch: Any, labels: tuple[str, ...]) -> list[tuple[int, Classified]]:
    """A classifier's DecodedBatch -> (crop index, its top-k) for the crops that scored above the threshold (what
    :func:`_classified` gives crop by crop)."""
    n = len(batch.frame)
    if n == 0:
        return []
    ids = batch.extra.get("topk_class_id")
    conf = batch.extra.get("topk_confidence")
    if ids is None or conf is None:  # a decoder without top-k: its best class
        ids, conf = np.asarray(batch.class_id).reshape(n, 1), np.asarray(batch.confidence).reshape(n, 1)
    ids_l = np.asarray(ids).reshape(n, -1).tolist()
    conf_l = np.asarray(conf, np.float64).reshape(n, -1).tolist()
    out = []
    for j, row_ids, row_conf in zip(np.asarray(batch.frame).tolist(), ids_l, conf_l):
        names = [labels[c] if 0 <= c < len(labels) else str(c) for c in row_ids]
        out.append((int(j), Classified([int(c) for c in row_ids], names, [float(p) for p in row_conf])))
    return out


def write_results(buf: Gst.Buffer, objects: FrameObjects, results: list, unique_id: int) -> int:
    """Attach each classified object's top-k where the object is (``buf`` writable): its GstAnalytics OD Mtd
    (objects read from GstAnalytics) and its ROI meta (where the buffer has one with the object's id: ``meta=roi``
    or ``meta=both`` upstream); returns how many objects were written."""
    written = 0
    if objects.od_ids is not None:
        from pyinfer.meta import analytics

        topks = [None if r is None else (r.class_ids, r.labels, r.confidences) for r in results]
        written = analytics.write_object_classifications(buf, objects.od_ids.tolist(), topks, unique_id)
    return max(written, _write_roi(buf, objects, results, unique_id))


def _write_roi(buf: Gst.Buffer, objects: FrameObjects, results: list, unique_id: int) -> int:
    name = param_name(unique_id)
    written = 0
    for roi_id, res in zip(objects.roi_ids.tolist(), results):
        if res is None:
            continue
        meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, int(roi_id))
        if meta is None:
            continue
        s = Gst.Structure.new_empty(name)
        s.set_value("unique-id", int(unique_id))
        s.set_value("count", len(res.class_ids))
        for k, (c, label, p) in enumerate(zip(res.class_ids, res.labels, res.confidences)):
            s.set_value(f"class-id-{k}", int(c))
            s.set_value(f"label-{k}", label)
            s.set_value(f"confidence-{k}", float(p))
        meta.add_param(s)
        written += 1
    return written


def remember(cache: ResultCache, objects: FrameObjects, results: list, frame_no: int) -> None:
    """Keep the fresh results of tracked objects for ``secondary-reinfer-interval``."""
    from pyinfer.detections import UNTRACKED_ID

    if objects.track_ids is None:
        return
    for k, (t, res) in enumerate(zip(objects.track_ids.tolist(), results)):
        if objects.infer[k] and t != UNTRACKED_ID:
            cache.put(int(t), frame_no, res)
