from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyinfer.errors import ConfigError
from pyinfer.evaluate import EvalResult, evaluate, evaluate_files
from pyinfer.jsonl import write_jsonl
from pyinfer.ops.boxes import box_iou


def _obj(ltwh: tuple[float, float, float, float], class_id: int = 0, confidence: float = 1.0) -> dict[str, Any]:
    return {"bbox": list(ltwh), "confidence": confidence, "class_id": class_id, "label": str(class_id)}


def _rec(frame: int, *objects: dict[str, Any]) -> dict[str, Any]:
    return {"frame": frame, "pts_ns": frame * 1000, "width": 100, "height": 100, "objects": list(objects)}


A, B = (10.0, 10.0, 20.0, 20.0), (50.0, 50.0, 30.0, 10.0)
TRUTH = [_rec(0, _obj(A, 0), _obj(B, 1)), _rec(1, _obj(B, 2))]

# (case, predictions, truth, (frames, truth_objects, detections, true_positives, precision, recall, mean_iou))
CASES = [
    ("perfect", TRUTH, TRUTH, (2, 3, 3, 3, 1.0, 1.0, 1.0)),
    # A shifted by 10 px in x: IoU = 10*20 / (2*400 - 200) = 1/3 < 0.5.
    ("shifted below threshold", [_rec(0, _obj((20, 10, 20, 20)))], [_rec(0, _obj(A))], (1, 1, 1, 0, 0.0, 0.0, 0.0)),
    # Shifted by 4 px: IoU = 16*20 / (800 - 320) = 2/3.
    ("shifted above threshold", [_rec(0, _obj((14, 10, 20, 20)))], [_rec(0, _obj(A))], (1, 1, 1, 1, 1.0, 1.0, 2 / 3)),
    ("wrong class", [_rec(0, _obj(A, 1))], [_rec(0, _obj(A, 0))], (1, 1, 1, 0, 0.0, 0.0, 0.0)),
    (
        "duplicate is a false positive",
        [_rec(0, _obj(A, 0, 0.9), _obj(A, 0, 0.8))],
        [_rec(0, _obj(A, 0))],
        (1, 1, 2, 1, 0.5, 1.0, 1.0),
    ),
    ("missing prediction frame", [_rec(0, _obj(A, 0), _obj(B, 1))], TRUTH, (2, 3, 2, 2, 1.0, 2 / 3, 1.0)),
    ("prediction frame without truth", [*TRUTH, _rec(7, _obj(A, 0))], TRUTH, (3, 3, 4, 3, 0.75, 1.0, 1.0)),
    ("empty frames", [_rec(0), _rec(1)], [_rec(0), _rec(1)], (2, 0, 0, 0, 1.0, 1.0, 0.0)),
    ("no records at all", [], [], (0, 0, 0, 0, 1.0, 1.0, 0.0)),
    ("nothing detected", [_rec(0), _rec(1)], TRUTH, (2, 3, 0, 0, 1.0, 0.0, 0.0)),
    ("nothing to detect", TRUTH, [_rec(0), _rec(1)], (2, 0, 3, 0, 0.0, 1.0, 0.0)),
]


@pytest.mark.parametrize(("case", "preds", "truth", "want"), CASES, ids=[c[0] for c in CASES])
def test_evaluate_counts_and_scores(
    case: str, preds: list[dict[str, Any]], truth: list[dict[str, Any]], want: tuple[float, ...]
) -> None:
    res = evaluate(preds, truth)
    got = (res.frames, res.truth_objects, res.detections, res.true_positives, res.precision, res.recall, res.mean_iou)
    assert got[:4] == want[:4]
    assert got[4:] == pytest.approx(want[4:], abs=1e-6)


def test_higher_confidence_claims_the_truth_first() -> None:
    """The confident, worse box takes the only truth object; the better, less confident one is a false positive."""
    preds = [_rec(0, _obj((14, 10, 20, 20), 0, 0.5), _obj((12, 10, 20, 20), 0, 0.9))]
    res = evaluate(preds, [_rec(0, _obj(A, 0))])
    assert res.true_positives == 1
    assert res.mean_iou == pytest.approx(18 * 20 / (800 - 360))


def test_each_detection_takes_its_best_unmatched_truth() -> None:
    truth = [_rec(0, _obj(A, 0), _obj((14, 10, 20, 20), 0))]
    preds = [_rec(0, _obj((14, 10, 20, 20), 0, 0.9), _obj(A, 0, 0.8))]
    res = evaluate(preds, truth)
    assert (res.true_positives, res.mean_iou) == (2, pytest.approx(1.0))


@pytest.mark.parametrize(("threshold", "tp"), [(0.3, 1), (0.5, 1), (0.66, 1), (0.67, 0), (1.0, 0)])
def test_iou_threshold_is_inclusive_and_respected(threshold: float, tp: int) -> None:
    res = evaluate([_rec(0, _obj((14, 10, 20, 20), 0))], [_rec(0, _obj(A, 0))], iou_threshold=threshold)
    assert res.true_positives == tp
    assert res.iou_threshold == threshold


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_bad_iou_threshold_raises_config_error(threshold: float) -> None:
    with pytest.raises(ConfigError, match="iou_threshold"):
        evaluate([], [], iou_threshold=threshold)


def test_duplicate_frame_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="predictions: frame 0 appears more than once"):
        evaluate([_rec(0), _rec(0)], [_rec(0)])


def test_result_as_dict_and_str() -> None:
    res = evaluate(TRUTH, TRUTH)
    assert res.as_dict() == {
        "frames": 2,
        "truth_objects": 3,
        "detections": 3,
        "true_positives": 3,
        "precision": 1.0,
        "recall": 1.0,
        "mean_iou": 1.0,
        "iou_threshold": 0.5,
    }
    text = str(res)
    assert "\n" not in text
    for part in ("frames=2", "truth=3", "detections=3", "tp=3", "precision=1.0000", "recall=1.0000", "mean_iou=1.0000"):
        assert part in text


def _scene(shift: float = 0.0, *, frames: int = 40, size: tuple[int, int] = (100, 100), first: int = 0) -> list:
    """Three objects per frame moving right; ``shift`` moves every box down (another scene: no box overlaps)."""
    records = []
    for f in range(first, first + frames):
        objects = [_obj((2 * k + f % 5, 5 + 30 * k + shift, 10, 10), k % 3) for k in range(3)]
        records.append({**_rec(f, *objects), "width": size[0], "height": size[1]})
    return records


def test_the_same_video_gives_no_warning() -> None:
    res = evaluate(_scene(), _scene())
    assert res.warnings == ()
    assert "warnings" not in res.as_dict()


def test_truth_of_another_video_warns_that_nothing_matched() -> None:
    res = evaluate(_scene(), _scene(shift=15))
    assert res.true_positives == 0
    (warning,) = res.warnings
    assert warning == (
        "no detection matched any of the 120 truth objects (same class, IoU >= 0.5): "
        "the predictions and the truth do not look like the same video"
    )
    assert res.as_dict()["warnings"] == [warning]


def test_a_few_chance_matches_still_warn() -> None:
    preds, truth = _scene(), _scene(shift=15)
    preds[0] = truth[0]  # 3 of 120 detections on the truth's boxes: chance, not the same video
    res = evaluate(preds, truth)
    assert res.true_positives == 3
    assert any(w.startswith("only 3 of the 120 detections matched any") for w in res.warnings), res.warnings


def test_boxes_that_match_with_other_class_ids_blame_the_classes() -> None:
    preds = [{**r, "objects": [{**o, "class_id": o["class_id"] + 1} for o in r["objects"]]} for r in _scene()]
    (warning,) = evaluate(preds, _scene()).warnings
    assert "but 120 match one when classes are ignored" in warning and "class ids" in warning


def test_frame_sizes_that_differ_warn() -> None:
    res = evaluate(_scene(size=(640, 360)), _scene(size=(1280, 720)))
    assert res.warnings == (
        "the predictions are of 640x360 frames and the truth of 1280x720: they do not look like the same video",
    )


def test_frame_numbers_that_differ_warn() -> None:
    res = evaluate(_scene(frames=30), _scene(frames=40))
    assert res.warnings == (
        "the predictions cover 30 frames (0-29) and the truth 40 frames (0-39): 10 truth frame(s) have no "
        "prediction record (their objects count as misses)",
    )
    (disjoint,) = evaluate(_scene(first=100), _scene()).warnings[:1]
    assert "have no frame number in common" in disjoint


def test_evaluate_files_reads_jsonl(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "pred.jsonl", TRUTH[:1])
    write_jsonl(tmp_path / "truth.jsonl", TRUTH)
    res = evaluate_files(tmp_path / "pred.jsonl", tmp_path / "truth.jsonl")
    assert isinstance(res, EvalResult)
    assert (res.true_positives, res.truth_objects) == (2, 3)


def test_evaluate_files_names_a_missing_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "truth.jsonl", TRUTH)
    with pytest.raises(ConfigError, match=r"nope\.jsonl"):
        evaluate_files(tmp_path / "nope.jsonl", tmp_path / "truth.jsonl")


def _slow_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_box_iou_matches_a_per_pair_reference_on_random_boxes() -> None:
    rng = np.random.default_rng(0)
    lt = rng.uniform(0, 30, (70, 2))
    boxes = np.concatenate([lt, lt + rng.uniform(5, 40, (70, 2))], axis=1)
    boxes[:5, 2:] = boxes[:5, :2]  # degenerate boxes
    a, b = boxes[:30], boxes[30:]
    got = box_iou(a, b)
    assert got.shape == (30, 40)
    want = np.array([[_slow_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert (got > 0).mean() > 0.2  # the table is not trivially empty


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3),
        ((0, 0, 10, 10), (2, 2, 4, 4), 0.04),  # contained
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty union
    ],
)
def test_box_iou_table(a: tuple[float, ...], b: tuple[float, ...], want: float) -> None:
    assert box_iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(want)


@pytest.mark.parametrize(("n", "m"), list(itertools.product([0, 3], [0, 2])))
def test_box_iou_handles_empty_sets(n: int, m: int) -> None:
    assert box_iou(np.zeros((n, 4)), np.zeros((m, 4))).shape == (n, m)


def test_masks_are_scored_against_the_scenes_exact_masks():
    """evaluate_masks (pyinfer eval --masks-seed): a mask cut from the exact instance map scores near 1 (only the
    64-cell grid loses), a quarter of it scores low, and a detection without a mask is not scored."""
    from pyinfer.evaluate import evaluate_masks
    from pyinfer.jsonl import mask_rle
    from pyinfer.scene import Scene
    from pyinfer.scene.video import truth_record

    seed, w, h, s = 77, 320, 240, 64
    scene = Scene(seed, w, h)
    truths, good, bad = [], [], []
    for f in range(3):
        _img, objects = scene.frame(f)
        truths.append(truth_record(f, 0, w, h, objects))
        ids = Scene(seed, w, h).instance_map(f)
        g, b = [], []
        for k, o in enumerate(objects):
            left, top, bw, bh = o.bbox
            xs = np.clip((left + (np.arange(s) + 0.5) * bw / s).astype(int), 0, w - 1)
            ys = np.clip((top + (np.arange(s) + 0.5) * bh / s).astype(int), 0, h - 1)
            cells = ids[ys[:, None], xs[None, :]] == o.object_id
            rec = {"bbox": list(o.bbox), "class_id": o.class_id, "confidence": 0.9, "label": o.label}
            g.append({**rec, "mask": mask_rle(cells)})
            quarter = np.zeros_like(cells)  # only the top-left quarter of the object's cells
            quarter[: s // 2, : s // 2] = cells[: s // 2, : s // 2]
            b.append({**rec, "mask": mask_rle(quarter)} if k else rec)  # the first one without a mask
        good.append({"frame": f, "width": w, "height": h, "objects": g})
        bad.append({"frame": f, "width": w, "height": h, "objects": b})
    n = sum(len(t["objects"]) for t in truths)
    assert n > 3
    ok = evaluate_masks(good, truths, seed)
    assert ok.matched == n and ok.with_mask == n
    assert ok.mean_iou > 0.9, ok
    worse = evaluate_masks(bad, truths, seed)
    assert worse.with_mask == n - 3  # one per frame carries no mask
    assert worse.mean_iou < 0.45
    assert "mask IoU mean" in str(ok) and ok.as_dict()["matched"] == n
    # a child object (found inside another: a secondary model's) on each frame, with the box of a truth object, a
    # higher score and an empty mask: not a detection of the frame, so neither matched nor scored
    empty = mask_rle(np.zeros((s, s), bool))
    kids = [{**r, "objects": [*r["objects"], {**r["objects"][1], "confidence": 0.99, "parent": 0, "mask": empty}]}
            for r in good]  # fmt: skip
    assert evaluate_masks(kids, truths, seed) == ok


def test_child_keypoints_are_scored_against_the_shapes_vertices_and_children_are_not_detections():
    """evaluate_vertices (pyinfer eval --vertices) on a child keypoint object per detection: exact vertices score
    0 error and PCK 1; vertices moved by 10% of the size score 0.1; a clipped truth object is not scored; and the
    children do not count as detections of the frame (precision stays 1)."""
    from pyinfer.evaluate import evaluate_vertices
    from pyinfer.models.net_vertices import object_vertices

    w, h = 320, 240
    boxes = [(0, [40.0, 30.0, 60.0, 60.0]), (1, [150.0, 100.0, 50.0, 50.0]), (2, [0.0, 180.0, 40.0, 30.0])]
    truth = [{"frame": 0, "width": w, "height": h, "objects": [
        {"bbox": b, "class_id": c, "label": "x", "object_id": k} for k, (c, b) in enumerate(boxes)]}]  # fmt: skip

    def preds(shift: float) -> list[dict]:
        objs, kids = [], []
        for k, (c, b) in enumerate(boxes):
            objs.append({"bbox": b, "class_id": c, "confidence": 0.9, "label": "x"})
            size = max(b[2], b[3])
            kp = [[x + shift * size, y, 0.9] for x, y, _v in object_vertices(c, b)]
            kids.append({"bbox": b, "class_id": 0, "confidence": 0.9, "label": "vertices", "parent": k,
                         "keypoints": kp})  # fmt: skip
        return [{"frame": 0, "width": w, "height": h, "objects": objs + kids}]

    exact = evaluate_vertices(preds(0.0), truth)
    assert exact.objects == 2  # the third touches the frame's left edge: not scored
    assert len(exact.errors) == 4 + 4  # a circle's 4, a square's 4 (all visible)
    assert exact.median_error == 0.0 and exact.pck(0.05) == 1.0
    moved = evaluate_vertices(preds(0.1), truth)
    assert moved.median_error == pytest.approx(0.1) and moved.pck(0.05) == 0.0 and moved.pck(0.11) == 1.0
    result = evaluate(preds(0.0), truth)
    assert (result.detections, result.true_positives, result.precision) == (3, 3, 1.0)
