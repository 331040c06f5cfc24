"""Tracking metrics on hand-made sequences whose MOTA, IDF1 and ID switches can be counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pyinfer.detections import Detections
from pyinfer.errors import ConfigError
from pyinfer.scene import Scene
from pyinfer.track import UNTRACKED_ID
from pyinfer.track.metrics import evaluate_tracking, evaluate_tracking_records, truth_detections


def _frame(boxes, ids, key, cls=None) -> Detections:
    xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(xyxy)
    cls_arr = np.zeros(n, np.int32) if cls is None else np.asarray(cls, np.int32)
    if key == "track_id":
        return Detections(xyxy, np.ones(n, np.float32), cls_arr, tracker_id=np.asarray(ids, np.uint64) if n else None)
    return Detections(xyxy, np.ones(n, np.float32), cls_arr, extra={key: np.asarray(ids, np.int64)} if n else {})


A, B = [0, 0, 10, 10], [100, 0, 110, 10]


def _truth(frames=10):
    return [_frame([A, B], [7, 8], "object_id") for _ in range(frames)]


def test_perfect_tracking_scores_one_with_no_switches():
    hyp = [_frame([B, A], [2, 1], "track_id") for _ in range(10)]
    r = evaluate_tracking(hyp, _truth())
    assert (r.mota, r.idf1, r.id_switches, r.misses, r.false_positives) == (1.0, 1.0, 0, 0, 0)
    assert r.motp == pytest.approx(1.0)
    assert (r.truth_ids, r.hypothesis_ids, r.matches) == (2, 2, 20)


def test_swapped_ids_halfway_count_two_switches_and_halve_idf1():
    hyp = [_frame([A, B], [1, 2] if k < 5 else [2, 1], "track_id") for k in range(10)]
    r = evaluate_tracking(hyp, _truth())
    assert r.id_switches == 2
    assert r.mota == pytest.approx(1 - 2 / 20)
    assert r.idf1 == pytest.approx(2 * 10 / 40)  # the best identity mapping holds for 5 of 10 frames each


def test_misses_false_positives_and_untracked_detections():
    hyp = []
    for k in range(10):
        boxes, ids = [A, B], [1, 2]
        if k == 3:
            boxes, ids = [A], [1]  # B missed once
        if k == 6:
            boxes, ids = [A, B, [300, 300, 320, 320]], [1, 2, 9]  # one false positive
        if k == 8:
            boxes, ids = [A, B], [1, int(UNTRACKED_ID)]  # an untracked detection is no hypothesis
        hyp.append(_frame(boxes, ids, "track_id"))
    r = evaluate_tracking(hyp, _truth())
    assert (r.misses, r.false_positives, r.id_switches) == (2, 1, 0)
    assert r.mota == pytest.approx(1 - 3 / 20)
    assert r.hypotheses == 19  # 20, one missed, one false positive, one untracked


def test_a_kept_match_is_not_switched_to_a_better_overlapping_hypothesis():
    # Hypothesis 1 follows the object loosely; hypothesis 2 appears later right on it. CLEAR MOT keeps 1.
    truth = [_frame([A], [5], "object_id") for _ in range(6)]
    loose = [1, 1, 11, 11]
    hyp = [_frame([loose], [1], "track_id") for _ in range(3)]
    hyp += [_frame([loose, A], [1, 2], "track_id") for _ in range(3)]
    r = evaluate_tracking(hyp, truth)
    assert r.id_switches == 0 and r.false_positives == 3


def test_class_aware_evaluation_refuses_a_box_of_the_wrong_class():
    truth = [_frame([A], [5], "object_id", cls=[1])]
    hyp = [_frame([A], [1], "track_id", cls=[2])]
    assert evaluate_tracking(hyp, truth).matches == 0
    assert evaluate_tracking(hyp, truth, class_aware=False).matches == 1


def test_records_with_track_ids_score_like_detections():
    def rec(frame, objs):
        return {"frame": frame, "width": 200, "height": 100, "objects": objs}

    def obj(box, key, value):
        return {"bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "class_id": 0, key: value}

    truth = [rec(k, [obj(A, "object_id", 7), obj(B, "object_id", 8)]) for k in range(4)]
    preds = [rec(k, [obj(A, "track_id", 1), obj(B, "track_id", 2 if k < 2 else 3)]) for k in range(4)]
    preds[3]["objects"].append({"bbox": [50, 50, 5, 5], "class_id": 0})  # untracked: ignored
    r = evaluate_tracking_records(preds, truth)
    assert (r.id_switches, r.false_positives, r.matches) == (1, 0, 8)


def test_truth_from_scene_objects_keeps_identities():
    _, objs = Scene(3, 320, 240).frame(5)
    truth = truth_detections(objs)
    assert truth.extra["object_id"].tolist() == [o.object_id for o in objs]
    np.testing.assert_allclose(truth.ltwh, [o.bbox for o in objs], atol=1e-3)


def test_frame_count_mismatch_and_missing_ids_are_config_errors():
    with pytest.raises(ConfigError, match="frames of hypotheses"):
        evaluate_tracking([], _truth(1))
    no_ids = Detections(np.array([A], np.float32), np.ones(1, np.float32), np.zeros(1, np.int32))
    with pytest.raises(ConfigError, match="tracker_id"):
        evaluate_tracking([no_ids], _truth(1))


def test_pyinfer_eval_adds_tracking_figures_when_predictions_carry_track_ids(tmp_path, capsys):
    import json

    from pyinfer.cli import main
    from pyinfer.jsonl import write_jsonl

    def rec(frame, objs):
        return {"frame": frame, "pts_ns": 0, "width": 200, "height": 100, "objects": objs}

    def obj(box, **ids):
        return {"bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "confidence": 0.9, "class_id": 0, **ids}

    write_jsonl(tmp_path / "truth.jsonl", [rec(k, [obj(A, object_id=7), obj(B, object_id=8)]) for k in range(6)])
    write_jsonl(tmp_path / "tracked.jsonl", [rec(k, [obj(A, track_id=1), obj(B, track_id=2 + (k > 2))])
                                             for k in range(6)])  # fmt: skip
    write_jsonl(tmp_path / "plain.jsonl", [rec(k, [obj(A), obj(B)]) for k in range(6)])
    args = ["eval", "--truth", str(tmp_path / "truth.jsonl"), "--out", str(tmp_path / "r.json"), "--json"]
    assert main([*args, str(tmp_path / "tracked.jsonl")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tracking"]["id_switches"] == 1 and report["true_positives"] == 12
    assert "IDF1=" in capsys.readouterr().out
    assert main([*args, str(tmp_path / "plain.jsonl")]) == 0
    assert "tracking" not in json.loads((tmp_path / "r.json").read_text())
    assert "IDF1=" not in capsys.readouterr().out
