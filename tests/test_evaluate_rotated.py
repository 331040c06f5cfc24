"""pyinfer.evaluate in rotated mode: matching by the exact IoU of rotated boxes (``cxcywhr`` on every object)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyinfer.cli import main as cli_main
from pyinfer.errors import ConfigError
from pyinfer.evaluate import evaluate, evaluate_files
from pyinfer.jsonl import write_jsonl
from pyinfer.ops.rotated import corners


def _obj(cxcywhr: tuple[float, ...], class_id: int = 0, confidence: float = 1.0) -> dict[str, Any]:
    """An object whose bbox is the box enclosing its rotated box, as rotated truth and decoders write it."""
    pts = corners(np.array([cxcywhr], np.float64))[0]
    lo, hi = pts.min(0), pts.max(0)
    return {
        "bbox": [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])],
        "confidence": confidence,
        "class_id": class_id,
        "label": str(class_id),
        "cxcywhr": [float(v) for v in cxcywhr],
    }


def _rec(frame: int, *objects: dict[str, Any]) -> dict[str, Any]:
    return {"frame": frame, "pts_ns": 0, "width": 200, "height": 200, "objects": list(objects)}


DIAMOND = (100.0, 100.0, 40.0, 40.0, math.pi / 4)  # a square at 45 degrees: half of its enclosing box
UPRIGHT = (100.0, 100.0, 40.0 * math.sqrt(2), 40.0 * math.sqrt(2), 0.0)  # that enclosing box


def test_rotated_mode_scores_the_rotated_boxes_not_their_enclosing_boxes() -> None:
    preds, truth = [_rec(0, _obj(UPRIGHT))], [_rec(0, _obj(DIAMOND))]
    axis = evaluate(preds, truth, iou_threshold=0.6)
    rotated = evaluate(preds, truth, iou_threshold=0.6, rotated=True)
    assert (axis.true_positives, axis.mean_iou) == (1, pytest.approx(1.0))
    assert rotated.true_positives == 0  # IoU = area ratio = 1/2 < 0.6
    assert evaluate(preds, truth, iou_threshold=0.5, rotated=True).mean_iou == pytest.approx(0.5)


@pytest.mark.parametrize(
    "same_box",
    [
        (100.0, 100.0, 60.0, 20.0, 0.3),
        (100.0, 100.0, 20.0, 60.0, 0.3 + math.pi / 2),  # w and h swapped, turned a quarter
        (100.0, 100.0, 60.0, 20.0, 0.3 - math.pi),  # turned half a turn
        (100.0, 100.0, 60.0, 20.0, 0.3 + 4 * math.pi),
    ],
)
def test_any_way_of_writing_a_box_matches_it_with_iou_1(same_box: tuple[float, ...]) -> None:
    result = evaluate([_rec(0, _obj(same_box))], [_rec(0, _obj((100.0, 100.0, 60.0, 20.0, 0.3)))], rotated=True)
    assert result.true_positives == 1
    assert result.mean_iou == pytest.approx(1.0, abs=1e-5)  # Detections hold float32 boxes


def test_rotated_matching_is_greedy_by_confidence_and_class_aware() -> None:
    truth = [_rec(0, _obj((50.0, 50.0, 40.0, 20.0, 0.5), 0), _obj((150.0, 150.0, 40.0, 20.0, 1.0), 1))]
    preds = [
        _rec(
            0,
            _obj((52.0, 50.0, 40.0, 20.0, 0.5), 0, 0.6),  # a near miss, claims first place only by confidence
            _obj((50.0, 50.0, 40.0, 20.0, 0.5), 0, 0.9),  # the exact box: taken first
            _obj((150.0, 150.0, 40.0, 20.0, 1.0), 0, 0.8),  # right place, wrong class
        )
    ]
    result = evaluate(preds, truth, rotated=True)
    assert (result.true_positives, result.detections, result.truth_objects) == (1, 3, 2)
    assert result.mean_iou == pytest.approx(1.0)
    assert result.rotated is True


def test_a_missing_rotated_box_raises_config_error_naming_frame_and_object() -> None:
    plain = _obj(DIAMOND)
    del plain["cxcywhr"]
    with pytest.raises(ConfigError, match=r"predictions: frame 3 objects\[1\].*cxcywhr"):
        evaluate([_rec(3, _obj(DIAMOND), plain)], [_rec(3, _obj(DIAMOND))], rotated=True)
    with pytest.raises(ConfigError, match=r"truth: frame 0 objects\[0\]"):
        evaluate([_rec(0, _obj(DIAMOND))], [_rec(0, {**_obj(DIAMOND), "cxcywhr": [1, 2, 3]})], rotated=True)


def test_rotated_results_say_so_and_axis_aligned_ones_keep_their_keys() -> None:
    records = [_rec(0, _obj(DIAMOND))]
    rotated, axis = evaluate(records, records, rotated=True), evaluate(records, records)
    assert rotated.as_dict()["rotated"] is True
    assert "rotated" not in axis.as_dict()
    assert "@rotated iou>=0.5" in str(rotated)
    assert "rotated" not in str(axis)


def test_empty_frames_in_rotated_mode_follow_the_empty_set_conventions() -> None:
    result = evaluate([_rec(0)], [_rec(0, _obj(DIAMOND)), _rec(1)], rotated=True)
    assert (result.frames, result.true_positives, result.precision, result.recall) == (2, 0, 1.0, 0.0)


def test_evaluate_files_and_the_eval_command_take_rotated(tmp_path: Path, capsys) -> None:
    pred, truth = tmp_path / "pred.jsonl", tmp_path / "truth.jsonl"
    write_jsonl(pred, [_rec(0, _obj(UPRIGHT))])
    write_jsonl(truth, [_rec(0, _obj(DIAMOND))])
    assert evaluate_files(pred, truth, 0.6, rotated=True).true_positives == 0
    assert evaluate_files(pred, truth, 0.6).true_positives == 1
    assert cli_main(["eval", "--json", str(pred), "--truth", str(truth), "--iou", "0.4", "--rotated"]) == 0
    out = capsys.readouterr().out
    assert "tp=1" in out and "rotated" in out
