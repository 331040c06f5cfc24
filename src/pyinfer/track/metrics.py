"""Tracking metrics against ground-truth identities: CLEAR MOT (MOTA, MOTP, ID switches) and IDF1.

Both sides are sequences of per-frame :class:`~pyinfer.detections.Detections` aligned by frame: the truth
with ``extra["object_id"]`` (as :func:`pyinfer.jsonl.record_detections` reads scene truth, or
:func:`truth_detections` builds from :class:`~pyinfer.scene.SceneObject`), the tracker's output with
``tracker_id`` (detections without an id, :data:`~pyinfer.track.UNTRACKED_ID`, are not hypotheses).

Definitions (Bernardin & Stiefelhagen 2008; Ristani et al. 2016, as py-motmetrics computes them):

- a truth object and a hypothesis can match in a frame when their IoU is >= ``iou_threshold`` (and, with
  ``class_aware``, their classes agree); rotated IoU is used when both sides carry rotated boxes;
- per frame, matches of the previous frame are kept while still allowed, the rest are assigned optimally
  (maximum total IoU); a truth object matched to another hypothesis than at its last match is an ID switch;
- ``MOTA = 1 - (misses + false positives + ID switches) / truth objects``; ``MOTP`` is the mean IoU of the
  matches;
- IDF1 matches whole identities once (optimal, maximising frames matched with the same identity):
  ``IDF1 = 2 IDTP / (truth objects + hypotheses)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyinfer.detections import Detections
from pyinfer.errors import ConfigError
from pyinfer.ops.boxes import box_iou
from pyinfer.ops.rotated import rotated_iou
from pyinfer.track.assignment import linear_assignment
from pyinfer.track.bytetrack import UNTRACKED_ID


@dataclass(frozen=True)
class TrackingResult:
    """Counts and scores of one tracking evaluation (see the module docs for the definitions).

    Attributes:
        frames: frames evaluated.
        truth_objects: truth boxes over all frames.
        hypotheses: tracked boxes over all frames.
        matches: matched (truth, hypothesis) pairs over all frames.
        misses: truth boxes left unmatched (false negatives).
        false_positives: hypotheses left unmatched.
        id_switches: truth objects matched to a different hypothesis id than at their last match.
        truth_ids: distinct truth identities.
        hypothesis_ids: distinct track ids.
        mota: multi-object tracking accuracy (can be negative).
        motp: mean IoU of the matches (0 when there are none).
        idf1: identity F1 score.
        idp: identity precision, ``IDTP / hypotheses``.
        idr: identity recall, ``IDTP / truth_objects``.
        iou_threshold: the IoU a match needed.
    """

    frames: int
    truth_objects: int
    hypotheses: int
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    truth_ids: int
    hypothesis_ids: int
    mota: float
    motp: float
    idf1: float
    idp: float
    idr: float
    iou_threshold: float = 0.5

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)

    def __str__(self) -> str:
        """One line for people."""
        return (
            f"frames={self.frames} truth={self.truth_objects} tracked={self.hypotheses} "
            f"ids={self.hypothesis_ids}/{self.truth_ids} MOTA={self.mota:.4f} IDF1={self.idf1:.4f} "
            f"IDSW={self.id_switches} FP={self.false_positives} FN={self.misses} MOTP={self.motp:.4f} "
            f"@iou>={self.iou_threshold:g}"
        )


def truth_detections(objects: Sequence[Any]) -> Detections:
    """Detections with ``extra["object_id"]`` from scene ground truth (objects with ``bbox`` as ltwh,
    ``class_id`` and ``object_id``, such as :class:`pyinfer.scene.SceneObject`)."""
    if not objects:
        return Detections.empty()
    ltwh = np.array([o.bbox for o in objects], np.float32).reshape(-1, 4)
    xyxy = np.concatenate([ltwh[:, :2], ltwh[:, :2] + ltwh[:, 2:]], axis=1)
    return Detections(
        xyxy=xyxy,
        confidence=np.ones(len(objects), np.float32),
        class_id=np.array([o.class_id for o in objects], np.int32),
        extra={"object_id": np.array([o.object_id for o in objects], np.int64)},
    )


def _ids(dets: Detections, key: str, side: str, frame: int) -> np.ndarray:
    if len(dets) == 0:
        return np.zeros(0, np.int64)
    if key == "tracker_id":
        if dets.tracker_id is None:
            raise ConfigError(f"{side} frame {frame}: detections carry no tracker_id")
        return dets.tracker_id
    if key not in dets.extra:
        raise ConfigError(f"{side} frame {frame}: detections carry no {key!r}")
    return dets.extra[key]


def _iou(truth: Detections, hyp: Detections, class_aware: bool) -> np.ndarray:
    if truth.cxcywhr is not None and hyp.cxcywhr is not None:
        iou = rotated_iou(truth.cxcywhr, hyp.cxcywhr)
    else:
        iou = box_iou(truth.xyxy, hyp.xyxy)
    if class_aware:
        iou[truth.class_id[:, None] != hyp.class_id[None, :]] = 0.0
    return iou


def evaluate_tracking(
    hypotheses: Sequence[Detections],
    truth: Sequence[Detections],
    *,
    iou_threshold: float = 0.5,
    class_aware: bool = True,
) -> TrackingResult:
    """Score a tracker's output against ground truth, frame by frame.

    Args:
        hypotheses: per frame, the tracker's detections with ``tracker_id``.
        truth: per frame, the truth with ``extra["object_id"]``; as many frames as ``hypotheses``.
        iou_threshold: the IoU a (truth, hypothesis) pair needs to match.
        class_aware: pairs must also have the same class.

    Raises:
        ConfigError: on different frame counts, a threshold outside (0, 1], or missing id arrays.
    """
    if len(hypotheses) != len(truth):
        raise ConfigError(f"{len(hypotheses)} frames of hypotheses but {len(truth)} frames of truth")
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    n_truth = n_hyp = n_match = switches = 0
    iou_sum = 0.0
    last_match: dict[int, int] = {}  # truth id -> hypothesis id at its last match
    previous: dict[int, int] = {}  # matches of the previous frame
    pair_counts: dict[tuple[int, int], int] = {}  # (truth id, hyp id) -> frames they could match (IDF1)
    truth_totals: dict[int, int] = {}
    hyp_totals: dict[int, int] = {}
    for frame, (hyp, gt) in enumerate(zip(hypotheses, truth)):
        hyp_ids = _ids(hyp, "tracker_id", "hypotheses", frame)
        keep = hyp_ids != UNTRACKED_ID if hyp_ids.dtype == np.uint64 else np.ones(len(hyp_ids), bool)
        if not keep.all():
            hyp, hyp_ids = hyp[keep], hyp_ids[keep]
        gt_ids = _ids(gt, "object_id", "truth", frame)
        hyp_list, gt_list = [int(x) for x in hyp_ids], [int(x) for x in gt_ids]
        n_truth += len(gt_list)
        n_hyp += len(hyp_list)
        for g in gt_list:
            truth_totals[g] = truth_totals.get(g, 0) + 1
        for h in hyp_list:
            hyp_totals[h] = hyp_totals.get(h, 0) + 1
        if not gt_list or not hyp_list:
            previous = {}
            continue
        iou = _iou(gt, hyp, class_aware)
        allowed = iou >= iou_threshold
        for gi, hi in zip(*np.nonzero(allowed)):
            key = (gt_list[gi], hyp_list[hi])
            pair_counts[key] = pair_counts.get(key, 0) + 1
        # CLEAR MOT: keep last frame's matches that are still allowed, assign the rest optimally.
        matched: dict[int, int] = {}  # truth row -> hyp column
        hyp_col = {h: j for j, h in enumerate(hyp_list)}
        for gi, g in enumerate(gt_list):
            j = hyp_col.get(previous.get(g, -1))
            if j is not None and allowed[gi, j] and j not in matched.values():
                matched[gi] = j
        rows = [i for i in range(len(gt_list)) if i not in matched]
        cols = [j for j in range(len(hyp_list)) if j not in set(matched.values())]
        if rows and cols:
            sub = np.where(allowed[np.ix_(rows, cols)], iou[np.ix_(rows, cols)], 0.0)
            r, c = linear_assignment(-sub)
            for ri, ci in zip(r, c):
                if sub[ri, ci] >= iou_threshold:
                    matched[rows[ri]] = cols[ci]
        previous = {}
        for gi, hj in matched.items():
            g, h = gt_list[gi], hyp_list[hj]
            if g in last_match and last_match[g] != h:
                switches += 1
            last_match[g] = h
            previous[g] = h
            iou_sum += float(iou[gi, hj])
        n_match += len(matched)
    idtp = _identity_true_positives(pair_counts, truth_totals, hyp_totals)
    misses, fps = n_truth - n_match, n_hyp - n_match
    return TrackingResult(
        frames=len(truth),
        truth_objects=n_truth,
        hypotheses=n_hyp,
        matches=n_match,
        misses=misses,
        false_positives=fps,
        id_switches=switches,
        truth_ids=len(truth_totals),
        hypothesis_ids=len(hyp_totals),
        mota=1.0 - (misses + fps + switches) / n_truth if n_truth else 1.0,
        motp=iou_sum / n_match if n_match else 0.0,
        idf1=2 * idtp / (n_truth + n_hyp) if n_truth + n_hyp else 1.0,
        idp=idtp / n_hyp if n_hyp else 1.0,
        idr=idtp / n_truth if n_truth else 1.0,
        iou_threshold=iou_threshold,
    )


def _identity_true_positives(
    pair_counts: dict[tuple[int, int], int], truth_totals: dict[int, int], hyp_totals: dict[int, int]
) -> int:
    """Frames matched under the best one-to-one mapping of truth identities to track ids."""
    if not pair_counts:
        return 0
    gts, hyps = sorted(truth_totals), sorted(hyp_totals)
    gi, hi = {g: i for i, g in enumerate(gts)}, {h: j for j, h in enumerate(hyps)}
    counts = np.zeros((len(gts), len(hyps)))
    for (g, h), c in pair_counts.items():
        counts[gi[g], hi[h]] = c
    rows, cols = linear_assignment(-counts)
    return int(counts[rows, cols].sum())


def evaluate_tracking_records(
    pred_records: Iterable[dict[str, Any]],
    truth_records: Iterable[dict[str, Any]],
    *,
    iou_threshold: float = 0.5,
    class_aware: bool = True,
) -> TrackingResult:
    """:func:`evaluate_tracking` on JSON-lines records (:mod:`pyinfer.jsonl`): objects of the predictions
    need ``"track_id"`` (objects without one are untracked), those of the truth ``"object_id"``. Frames are
    aligned by their ``"frame"`` number; a frame missing on one side is empty there.
    """
    from pyinfer.jsonl import record_detections

    def by_frame(records: Iterable[dict[str, Any]], key: str, dtype: type) -> dict[int, Detections]:
        out = {}
        for rec in records:
            dets = record_detections(rec)
            ids = [o.get(key) for o in rec["objects"]]
            known = np.array([i is not None for i in ids], bool)
            values: np.ndarray
            values = np.array([i if i is not None else 0 for i in ids], np.uint64 if dtype is np.uint64 else dtype)
            if dtype is np.uint64:
                values[~known] = UNTRACKED_ID
            elif not known.all():
                raise ConfigError(f"frame {rec['frame']}: truth objects need {key!r}")
            if dtype is np.uint64:
                out[rec["frame"]] = Detections(
                    dets.xyxy, dets.confidence, dets.class_id, tracker_id=values if len(dets) else None
                )
            else:
                out[rec["frame"]] = Detections(
                    dets.xyxy, dets.confidence, dets.class_id, extra={key: values} if len(dets) else {}
                )
        return out

    preds = by_frame(pred_records, "track_id", np.uint64)
    truths = by_frame(truth_records, "object_id", np.int64)
    frames = sorted(preds.keys() | truths.keys())
    empty = Detections.empty()
    return evaluate_tracking(
        [preds.get(f, empty) for f in frames],
        [truths.get(f, empty) for f in frames],
        iou_threshold=iou_threshold,
        class_aware=class_aware,
    )


def evaluate_tracking_files(
    pred_path: str | Path, truth_path: str | Path, *, iou_threshold: float = 0.5, class_aware: bool = True
) -> TrackingResult | None:
    """:func:`evaluate_tracking_records` on two JSON-lines files, or None when no prediction has a
    ``"track_id"`` (the detections were not tracked). Raises ConfigError as :func:`pyinfer.jsonl.read_jsonl`."""
    from pyinfer.jsonl import read_jsonl

    if not any("track_id" in o for rec in read_jsonl(pred_path) for o in rec["objects"]):
        return None
    return evaluate_tracking_records(
        read_jsonl(pred_path), read_jsonl(truth_path), iou_threshold=iou_threshold, class_aware=class_aware
    )
