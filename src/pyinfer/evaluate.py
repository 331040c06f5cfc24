"""Score detections against ground truth: precision, recall and mean IoU at one IoU threshold.

Both sides are frame records in the schema of :mod:`pyinfer.jsonl`. Conventions for empty sets (no division by
zero anywhere): precision is 1.0 when there are no detections, recall is 1.0 when there is no truth, and mean IoU
is 0.0 when nothing matched. A frame without a prediction record counts its truth objects as misses; detections
in a frame without a truth record are all false positives.

Rotated mode (``rotated=True``) matches by the exact IoU of rotated boxes (:func:`pyinfer.ops.rotated.rotated_iou`):
every object on both sides must carry ``"cxcywhr": [cx, cy, w, h, angle]`` (pixels, radians, clockwise on screen),
as rotated-scene truth does (:func:`pyinfer.scene.video.truth_record`). The IoU does not depend on how a box is
written: ``(w, h, a)``, ``(h, w, a + pi/2)`` and ``(w, h, a + pi)`` are the same box.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyinfer.detections import Detections
from pyinfer.errors import ConfigError
from pyinfer.jsonl import read_jsonl, record_detections
from pyinfer.ops.boxes import box_iou
from pyinfer.ops.rotated import rotated_iou


@dataclass(frozen=True)
class EvalResult:
    """Counts and scores of one evaluation.

    Attributes:
        frames: distinct frame numbers seen in the truth or the predictions.
        truth_objects: ground-truth objects.
        detections: predicted objects.
        true_positives: detections matched to a truth object of the same class with IoU >= the threshold.
        precision: ``true_positives / detections`` (1.0 when there are no detections).
        recall: ``true_positives / truth_objects`` (1.0 when there is no truth).
        mean_iou: mean IoU of the matched pairs (0.0 when nothing matched).
        iou_threshold: the IoU a match needed.
        rotated: matched by rotated-box IoU.
        warnings: signs that the predictions and the truth are not of the same video (frame sizes or frame
            numbers that differ, hardly any match while both sides have objects), each a sentence; the
            figures are computed all the same.
    """

    frames: int
    truth_objects: int
    detections: int
    true_positives: int
    precision: float
    recall: float
    mean_iou: float
    iou_threshold: float = 0.5
    rotated: bool = False
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready); ``rotated`` only when True and ``warnings`` only when there are
        some (the keys of a plain axis-aligned evaluation stay as they were)."""
        out = asdict(self)
        if not self.rotated:
            del out["rotated"]
        if self.warnings:
            out["warnings"] = list(self.warnings)
        else:
            del out["warnings"]
        return out

    def __str__(self) -> str:
        """One line for humans: counts, then precision, recall and mean IoU to 4 decimals."""
        return (
            f"frames={self.frames} truth={self.truth_objects} detections={self.detections} "
            f"tp={self.true_positives} precision={self.precision:.4f} recall={self.recall:.4f} "
            f"mean_iou={self.mean_iou:.4f} @{'rotated ' if self.rotated else ''}iou>={self.iou_threshold:g}"
        )


def match_frame(pred: Detections, truth: Detections, iou_threshold: float, *, rotated: bool = False) -> np.ndarray:
    """Greedily match one frame's detections to its truth.

    Detections are taken by confidence, highest first (ties keep their order); each takes the unmatched truth
    object of the same class with the highest IoU, if that IoU is >= ``iou_threshold``. With ``rotated``, the IoU
    is that of the rotated boxes (``cxcywhr``, which both sides must then carry).

    Raises:
        ConfigError: when ``rotated`` and a side has no rotated boxes.

    Returns:
        (K,) float64 IoU of each matched pair.
    """
    return np.asarray([iou for _, _, iou in match_pairs(pred, truth, iou_threshold, rotated=rotated)], np.float64)


def match_pairs(
    pred: Detections, truth: Detections, iou_threshold: float, *, rotated: bool = False
) -> list[tuple[int, int, float]]:
    """:func:`match_frame`'s matches as ``(detection index, truth index, IoU)``."""
    if len(pred) == 0 or len(truth) == 0:
        return []
    if rotated:
        if pred.cxcywhr is None or truth.cxcywhr is None:
            side = "detections" if pred.cxcywhr is None else "truth"
            raise ConfigError(f"rotated matching needs rotated boxes (cxcywhr) on both sides; the {side} have none")
        iou = rotated_iou(pred.cxcywhr, truth.cxcywhr)
    else:
        iou = box_iou(pred.xyxy, truth.xyxy)
    iou[pred.class_id[:, None] != truth.class_id[None, :]] = -1.0
    taken = np.zeros(len(truth), bool)
    matched = []
    for i in np.argsort(-pred.confidence, kind="stable"):
        row = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= iou_threshold:
            taken[j] = True
            matched.append((int(i), j, float(row[j])))
    return matched


def _rotated_detections(rec: dict[str, Any], side: str) -> Detections:
    """A record's objects with their ``cxcywhr`` rotated boxes (ConfigError naming the frame if one lacks it)."""
    dets = record_detections(rec)
    boxes = []
    for j, obj in enumerate(rec["objects"]):
        box = obj.get("cxcywhr")
        if (
            not isinstance(box, list)
            or len(box) != 5
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        ):
            raise ConfigError(
                f"{side}: frame {rec['frame']} objects[{j}] has no rotated box: rotated evaluation needs "
                '"cxcywhr": [cx, cy, w, h, angle] on every object'
            )
        boxes.append(box)
    cxcywhr = np.asarray(boxes, np.float32).reshape(-1, 5)
    return Detections(dets.xyxy, dets.confidence, dets.class_id, cxcywhr=cxcywhr, labels=dets.labels, extra=dets.extra)


def _by_frame(records: Iterable[dict[str, Any]], side: str, *, rotated: bool = False) -> dict[int, Detections]:
    out: dict[int, Detections] = {}
    for rec in records:
        frame = rec["frame"]
        if frame in out:
            raise ConfigError(f"{side}: frame {frame} appears more than once")
        rec = _top_level(rec)[1]  # objects found inside others are not detections of the frame (secondary)
        out[frame] = _rotated_detections(rec, side) if rotated else record_detections(rec)
    return out


def _top_level(rec: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    """The indices of a record's objects that lie inside no other (no ``parent``: the frame's detections, not a
    secondary model's), and the record with those objects only (``rec`` itself when it has no child)."""
    objects = rec.get("objects", [])
    top = [i for i, o in enumerate(objects) if "parent" not in o]
    if len(top) == len(objects):
        return top, rec
    return top, {**rec, "objects": [objects[i] for i in top]}


def evaluate(
    pred_records: Iterable[dict[str, Any]],
    truth_records: Iterable[dict[str, Any]],
    *,
    iou_threshold: float = 0.5,
    rotated: bool = False,
) -> EvalResult:
    """Match predictions to truth frame by frame (by ``"frame"`` number) and count. Objects found inside others
    (records with ``parent``: a secondary detector's or keypoint model's) are not detections of the frame and are
    left out (see :func:`evaluate_vertices`).

    Args:
        pred_records: detection records (``confidence`` orders the greedy matching).
        truth_records: ground-truth records.
        iou_threshold: the IoU a detection needs with a same-class truth object to count as a true positive.
        rotated: match by rotated-box IoU; every object on both sides needs ``cxcywhr``.

    Raises:
        ConfigError: when a frame number appears twice on one side, the threshold is outside (0, 1], or (rotated)
            an object has no ``cxcywhr``.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    pred_records, truth_records = list(pred_records), list(truth_records)
    preds = _by_frame(pred_records, "predictions", rotated=rotated)
    truths = _by_frame(truth_records, "truth", rotated=rotated)
    empty = Detections.empty(rotated=rotated)
    n_truth = n_pred = 0
    ious = []
    for frame in preds.keys() | truths.keys():
        pred, truth = preds.get(frame, empty), truths.get(frame, empty)
        n_pred += len(pred)
        n_truth += len(truth)
        ious.append(match_frame(pred, truth, iou_threshold, rotated=rotated))
    matched = np.concatenate(ious) if ious else np.zeros(0)
    tp = len(matched)
    return EvalResult(
        frames=len(preds.keys() | truths.keys()),
        truth_objects=n_truth,
        detections=n_pred,
        true_positives=tp,
        precision=tp / n_pred if n_pred else 1.0,
        recall=tp / n_truth if n_truth else 1.0,
        mean_iou=float(matched.mean()) if tp else 0.0,
        iou_threshold=iou_threshold,
        rotated=rotated,
        warnings=tuple(
            _size_warnings(pred_records, truth_records)
            + _frame_warnings(preds.keys(), truths.keys())
            + _match_warnings(preds, truths, tp, n_pred, n_truth, iou_threshold, rotated=rotated)
        ),
    )


#: Matches at or below this share of the smaller side (detections or truth objects) read as "hardly any".
FEW_MATCHES = 0.05


def _frame_size(records: list[dict[str, Any]]) -> tuple[int, int] | None:
    """The most common (width, height) of the records that carry both, or None."""
    sizes = Counter(
        (rec["width"], rec["height"])
        for rec in records
        if isinstance(rec.get("width"), int) and isinstance(rec.get("height"), int)
    )
    return sizes.most_common(1)[0][0] if sizes else None


def _size_warnings(pred_records: list[dict[str, Any]], truth_records: list[dict[str, Any]]) -> list[str]:
    pred, truth = _frame_size(pred_records), _frame_size(truth_records)
    if pred is None or truth is None or pred == truth:
        return []
    return [
        f"the predictions are of {pred[0]}x{pred[1]} frames and the truth of {truth[0]}x{truth[1]}: "
        "they do not look like the same video"
    ]


def _span(frames: set[int]) -> str:
    return f"{len(frames)} frame{'s' if len(frames) != 1 else ''}" + (
        f" ({min(frames)}-{max(frames)})" if frames else ""
    )


def _frame_warnings(pred_frames: Iterable[int], truth_frames: Iterable[int]) -> list[str]:
    pred, truth = set(pred_frames), set(truth_frames)
    if pred == truth or not pred or not truth:
        return []
    if not pred & truth:
        return [
            f"the predictions ({_span(pred)}) and the truth ({_span(truth)}) have no frame number in common: "
            "they do not look like the same video"
        ]
    parts = []
    if truth - pred:
        parts.append(f"{len(truth - pred)} truth frame(s) have no prediction record (their objects count as misses)")
    if pred - truth:
        parts.append(
            f"{len(pred - truth)} prediction frame(s) have no truth (their detections count as false positives)"
        )
    return [f"the predictions cover {_span(pred)} and the truth {_span(truth)}: {' and '.join(parts)}"]


def _match_warnings(
    preds: dict[int, Detections],
    truths: dict[int, Detections],
    tp: int,
    n_pred: int,
    n_truth: int,
    iou_threshold: float,
    *,
    rotated: bool,
) -> list[str]:
    if not n_pred or not n_truth or tp > FEW_MATCHES * min(n_pred, n_truth):
        return []
    found = "no detection matched" if tp == 0 else f"only {tp} of the {n_pred} detections matched"
    # Would the boxes match if classes were ignored? Then the class ids, not the video, differ.
    anyclass = 0
    for frame in preds.keys() & truths.keys():
        pred, truth = preds[frame], truths[frame]
        if len(pred) and len(truth):
            pred = Detections(pred.xyxy, pred.confidence, np.zeros(len(pred), np.int32), cxcywhr=pred.cxcywhr)
            truth = Detections(truth.xyxy, truth.confidence, np.zeros(len(truth), np.int32), cxcywhr=truth.cxcywhr)
            anyclass += len(match_frame(pred, truth, iou_threshold, rotated=rotated))
    if anyclass > FEW_MATCHES * min(n_pred, n_truth):
        return [
            f"{found} a truth object of its class, but {anyclass} match one when classes are ignored: the "
            "predictions' class ids do not follow the truth's (another model or labels file?)"
        ]
    return [
        f"{found} any of the {n_truth} truth objects (same class, IoU >= {iou_threshold:g}): the predictions "
        "and the truth do not look like the same video"
    ]


def evaluate_files(
    pred_path: str | Path, truth_path: str | Path, iou_threshold: float = 0.5, *, rotated: bool = False
) -> EvalResult:
    """:func:`evaluate` on two JSON-lines files (see :func:`pyinfer.jsonl.read_jsonl` for the errors it raises)."""
    return evaluate(read_jsonl(pred_path), read_jsonl(truth_path), iou_threshold=iou_threshold, rotated=rotated)


@dataclass(frozen=True)
class AttributeResult:
    """A secondary classifier scored against a truth attribute on the detections matched to truth objects.

    Attributes:
        attribute: the truth objects' field (``mark`` in marked scenes).
        matched: matched detections whose truth object has the attribute.
        classified: of those, the ones a secondary classified (``classifications`` in the detection record).
        correct: of those, the ones whose best class (first secondary, lowest unique id) equals the attribute.
        per_value: per attribute value, ``(classified, correct)``.
    """

    attribute: str
    matched: int
    classified: int
    correct: int
    per_value: dict[str, tuple[int, int]]

    @property
    def accuracy(self) -> float:
        return self.correct / self.classified if self.classified else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute, "matched": self.matched, "classified": self.classified,
            "correct": self.correct, "accuracy": round(self.accuracy, 4),
            "per_value": {k: {"classified": c, "correct": ok, "accuracy": round(ok / c, 4) if c else 0.0}
                          for k, (c, ok) in sorted(self.per_value.items())},
        }  # fmt: skip

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {ok / c:.3f}" for k, (c, ok) in sorted(self.per_value.items()) if c)
        return (
            f"secondary vs truth {self.attribute}: {self.classified} of {self.matched} matched objects classified, "
            f"accuracy {self.accuracy:.3f} ({parts})"
        )


def evaluate_attribute(
    pred_records: Iterable[dict[str, Any]],
    truth_records: Iterable[dict[str, Any]],
    attribute: str = "mark",
    *,
    iou_threshold: float = 0.5,
) -> AttributeResult | None:
    """Score secondary classifications (``classifications`` of detection records) against the truth objects'
    ``attribute`` on the pairs :func:`match_pairs` matches; None when the truth has no such attribute or no
    detection carries a classification."""
    preds = {rec["frame"]: rec for rec in pred_records}
    truths = {rec["frame"]: rec for rec in truth_records}
    if not any(attribute in o for r in truths.values() for o in r["objects"]):
        return None
    if not any("classifications" in o for r in preds.values() for o in r["objects"]):
        return None
    matched = classified = correct = 0
    per_value: dict[str, list[int]] = {}
    for frame, prec in preds.items():
        trec = truths.get(frame)
        if trec is None:
            continue
        pairs = match_pairs(record_detections(prec), record_detections(trec), iou_threshold)
        for i, j, _ in pairs:
            want = trec["objects"][j].get(attribute)
            if want is None:
                continue
            matched += 1
            found = prec["objects"][i].get("classifications") or []
            if not found:
                continue
            got = min(found, key=lambda c: c.get("unique_id", 0)).get("label")
            slot = per_value.setdefault(str(want), [0, 0])
            classified += 1
            slot[0] += 1
            if got == want:
                correct += 1
                slot[1] += 1
    return AttributeResult(attribute, matched, classified, correct, {k: (v[0], v[1]) for k, v in per_value.items()})


def evaluate_attribute_files(
    pred_path: str | Path, truth_path: str | Path, attribute: str = "mark", iou_threshold: float = 0.5
) -> AttributeResult | None:
    """:func:`evaluate_attribute` on two JSON-lines files."""
    return evaluate_attribute(read_jsonl(pred_path), read_jsonl(truth_path), attribute, iou_threshold=iou_threshold)


@dataclass(frozen=True)
class MaskResult:
    """Instance masks scored against a synthetic scene's exact masks (:meth:`pyinfer.scene.Scene.instance_map`) on
    the detections matched to truth objects.

    Attributes:
        matched: matched detections.
        with_mask: of those, the ones whose record carries a ``mask``.
        ious: the mask IoU of each of those (the detection's box-local mask placed on the frame as
            :meth:`pyinfer.detections.Detections.frame_mask` does, against the object's visible pixels).
    """

    matched: int
    with_mask: int
    ious: tuple[float, ...]

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else 0.0

    @property
    def median_iou(self) -> float:
        return float(np.median(self.ious)) if self.ious else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"matched": self.matched, "with_mask": self.with_mask, "mask_iou_mean": round(self.mean_iou, 4),
                "mask_iou_median": round(self.median_iou, 4)}  # fmt: skip

    def __str__(self) -> str:
        return (
            f"masks vs the scene's exact masks: {self.with_mask} of {self.matched} matched objects with a mask, "
            f"mask IoU mean {self.mean_iou:.3f}, median {self.median_iou:.3f}"
        )


def evaluate_masks(
    pred_records: Iterable[dict[str, Any]],
    truth_records: Iterable[dict[str, Any]],
    scene_seed: int,
    *,
    iou_threshold: float = 0.5,
) -> MaskResult:
    """Score the ``mask`` of detection records (box-local RLE, :mod:`pyinfer.jsonl`) against the exact instance
    masks of the synthetic scene ``Scene(scene_seed, width, height)`` the truth file was rendered from (the size
    from the truth records), on the pairs :func:`match_pairs` matches."""
    from pyinfer.jsonl import rle_mask
    from pyinfer.scene import Scene

    preds = {rec["frame"]: rec for rec in pred_records}
    truths = {rec["frame"]: rec for rec in truth_records}
    scene: Scene | None = None
    matched = 0
    ious: list[float] = []
    for frame in sorted(preds):
        prec, trec = preds[frame], truths.get(frame)
        if trec is None:
            continue
        kept, frame_objects = _top_level(prec)
        pairs = match_pairs(record_detections(frame_objects), record_detections(trec), iou_threshold)
        matched += len(pairs)
        todo = [(kept[i], j) for i, j, _ in pairs if prec["objects"][kept[i]].get("mask")]
        if not todo:
            continue
        w, h = int(trec["width"]), int(trec["height"])
        if scene is None or (scene.width, scene.height) != (w, h):
            scene = Scene(scene_seed, w, h)
        ids = scene.instance_map(int(frame))
        for i, j in todo:
            obj = prec["objects"][i]
            left, top, bw, bh = (float(v) for v in obj["bbox"])
            cells = rle_mask(obj["mask"]).astype(np.uint8) * 255
            one = Detections(np.array([[left, top, left + bw, top + bh]], np.float32), np.ones(1, np.float32),
                             np.zeros(1, np.int32), masks=cells[None])  # fmt: skip
            got = one.frame_mask(0, w, h)
            want = ids == int(trec["objects"][j]["object_id"])
            union = np.logical_or(got, want).sum()
            ious.append(float(np.logical_and(got, want).sum() / union) if union else 0.0)
    return MaskResult(matched, len(ious), tuple(ious))


@dataclass(frozen=True)
class VertexResult:
    """Keypoints of child objects (a secondary keypoint model's, e.g. the embedded ``vertices``) scored against
    the synthetic scene's shape vertices (:func:`pyinfer.models.net_vertices.object_vertices`) of the truth object
    their parent is matched to. Only truth objects wholly inside the frame are scored (their vertices are exact).

    Attributes:
        objects: children scored.
        errors: per visible truth keypoint, the distance to the predicted one over the object's size (the larger
            side of its box).
    """

    objects: int
    errors: tuple[float, ...]

    @property
    def median_error(self) -> float:
        return float(np.median(self.errors)) if self.errors else 0.0

    def pck(self, threshold: float) -> float:
        """The share of keypoints within ``threshold`` of the object's size."""
        return float(np.mean(np.asarray(self.errors) <= threshold)) if self.errors else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"objects": self.objects, "keypoints": len(self.errors),
                "median_error_of_size": round(self.median_error, 5),
                "pck_0.05": round(self.pck(0.05), 4), "pck_0.1": round(self.pck(0.1), 4)}  # fmt: skip

    def __str__(self) -> str:
        return (
            f"keypoints vs the shapes' vertices: {self.objects} objects, {len(self.errors)} keypoints, median error "
            f"{100 * self.median_error:.2f}% of the object's size, PCK@0.05 {self.pck(0.05):.3f}, "
            f"PCK@0.1 {self.pck(0.1):.3f}"
        )


def evaluate_vertices(
    pred_records: Iterable[dict[str, Any]], truth_records: Iterable[dict[str, Any]], *, iou_threshold: float = 0.5
) -> VertexResult:
    """Score the ``keypoints`` of child objects (records with ``parent``) against the vertices of the truth object
    their parent matches (:func:`match_pairs` on the top-level objects)."""
    from pyinfer.models.net_vertices import object_vertices

    truths = {rec["frame"]: rec for rec in truth_records}
    objects = 0
    errors: list[float] = []
    for prec in pred_records:
        trec = truths.get(prec["frame"])
        if trec is None:
            continue
        kept, frame_objects = _top_level(prec)
        pairs = match_pairs(record_detections(frame_objects), record_detections(trec), iou_threshold)
        truth_of = {kept[i]: j for i, j, _ in pairs}
        w, h = float(trec["width"]), float(trec["height"])
        for o in prec["objects"]:
            j = truth_of.get(o.get("parent", -1))
            if j is None or not o.get("keypoints"):
                continue
            t = trec["objects"][j]
            left, tp, bw, bh = (float(v) for v in t["bbox"])
            if left <= 0 or tp <= 0 or left + bw >= w or tp + bh >= h:
                continue  # clipped by the frame: its vertices are not known exactly
            size = max(bw, bh)
            objects += 1
            for (px, py, *_), (tx, ty, visible) in zip(o["keypoints"], object_vertices(int(t["class_id"]), t["bbox"])):
                if visible:
                    errors.append(float(np.hypot(px - tx, py - ty)) / size)
    return VertexResult(objects, tuple(errors))
