"""Score detections against ground truth: precision, recall and mean IoU at one IoU threshold.

Both sides are frame records in the schema of :mod:`pyinfer.jsonl`. Conventions for empty sets (no division by
zero anywhere): precision is 1.0 when there are no detections, recall is 1.0 when there is no truth, and mean IoU
is 0.0 when nothing matched. A frame without a prediction record counts its truth objects as misses; detections
in a frame without a truth record are all false positives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyinfer.detections import Detections
from pyinfer.errors import ConfigError
from pyinfer.jsonl import read_jsonl, record_detections
from pyinfer.ops.boxes import box_iou


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
    """

    frames: int
    truth_objects: int
    detections: int
    true_positives: int
    precision: float
    recall: float
    mean_iou: float
    iou_threshold: float = 0.5

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)

    def __str__(self) -> str:
        """One line for humans: counts, then precision, recall and mean IoU to 4 decimals."""
        return (
            f"frames={self.frames} truth={self.truth_objects} detections={self.detections} "
            f"tp={self.true_positives} precision={self.precision:.4f} recall={self.recall:.4f} "
            f"mean_iou={self.mean_iou:.4f} @iou>={self.iou_threshold:g}"
        )


def match_frame(pred: Detections, truth: Detections, iou_threshold: float) -> np.ndarray:
    """Greedily match one frame's detections to its truth.

    Detections are taken by confidence, highest first (ties keep their order); each takes the unmatched truth
    object of the same class with the highest IoU, if that IoU is >= ``iou_threshold``.

    Returns:
        (K,) float64 IoU of each matched pair.
    """
    if len(pred) == 0 or len(truth) == 0:
        return np.zeros(0)
    iou = box_iou(pred.xyxy, truth.xyxy)
    iou[pred.class_id[:, None] != truth.class_id[None, :]] = -1.0
    taken = np.zeros(len(truth), bool)
    matched = []
    for i in np.argsort(-pred.confidence, kind="stable"):
        row = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= iou_threshold:
            taken[j] = True
            matched.append(row[j])
    return np.asarray(matched, np.float64)


def _by_frame(records: Iterable[dict[str, Any]], side: str) -> dict[int, Detections]:
    out: dict[int, Detections] = {}
    for rec in records:
        frame = rec["frame"]
        if frame in out:
            raise ConfigError(f"{side}: frame {frame} appears more than once")
        out[frame] = record_detections(rec)
    return out


def evaluate(
    pred_records: Iterable[dict[str, Any]], truth_records: Iterable[dict[str, Any]], *, iou_threshold: float = 0.5
) -> EvalResult:
    """Match predictions to truth frame by frame (by ``"frame"`` number) and count.

    Args:
        pred_records: detection records (``confidence`` orders the greedy matching).
        truth_records: ground-truth records.
        iou_threshold: the IoU a detection needs with a same-class truth object to count as a true positive.

    Raises:
        ConfigError: when a frame number appears twice on one side, or the threshold is outside (0, 1].
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    preds, truths = _by_frame(pred_records, "predictions"), _by_frame(truth_records, "truth")
    empty = Detections.empty()
    n_truth = n_pred = 0
    ious = []
    for frame in preds.keys() | truths.keys():
        pred, truth = preds.get(frame, empty), truths.get(frame, empty)
        n_pred += len(pred)
        n_truth += len(truth)
        ious.append(match_frame(pred, truth, iou_threshold))
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
    )


def evaluate_files(pred_path: str | Path, truth_path: str | Path, iou_threshold: float = 0.5) -> EvalResult:
    """:func:`evaluate` on two JSON-lines files (see :func:`pyinfer.jsonl.read_jsonl` for the errors it raises)."""
    return evaluate(read_jsonl(pred_path), read_jsonl(truth_path), iou_threshold=iou_threshold)
