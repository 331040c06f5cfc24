"""The reference tests' own tolerance: which candidates count as too close to call (reference/ultra.py)."""

from __future__ import annotations

import numpy as np
import pytest

from reference.ultra import IOU_MARGIN, SCORE_MARGIN, candidates, rotated_iou

pytestmark = pytest.mark.reference


def _v8(rows: list[tuple[float, float, float, float, int, float]], nc: int = 2) -> np.ndarray:
    """(4 + nc, N) head output from (cx, cy, w, h, class, score) rows."""
    out = np.zeros((4 + nc, len(rows)), np.float32)
    for i, (cx, cy, w, h, c, s) in enumerate(rows):
        out[:4, i] = (cx, cy, w, h)
        out[4 + c, i] = s
    return out


def _shift(w: float, iou: float) -> float:
    return w * (1 - iou) / (1 + iou)  # same-sized boxes shifted sideways by this overlap by ``iou``


def test_close_calls_and_their_cascades_are_uncertain_and_the_rest_is_not():
    thr = 0.5
    rows = [
        (100, 100, 50, 50, 0, 0.9),  # A
        (100 + _shift(50, thr + IOU_MARGIN / 4), 100, 50, 50, 0, 0.8),  # B: IoU with A just above thr
        (100 + 2 * _shift(50, thr + IOU_MARGIN / 4), 100, 50, 50, 0, 0.7),  # C: suppressed by B only if B is kept
        (300, 300, 50, 50, 0, 0.6),  # far away: certain
        (100, 100, 50, 50, 1, 0.25 + SCORE_MARGIN / 2),  # other class, just above conf: uncertain
        (100 + _shift(50, 0.9), 100, 50, 50, 0, 0.85),  # D: clearly suppressed by A: certain
    ]
    cand = candidates(_v8(rows), kind="yolov8", conf=0.25, iou=thr)
    unsure = {round(float(s), 4): bool(u) for s, u in zip(cand.scores, cand.uncertain)}
    assert [unsure[s] for s in (0.9, 0.85, 0.8, 0.7, 0.6)] == [False, False, True, True, False]
    assert unsure[round(0.25 + SCORE_MARGIN / 2, 4)] is True


def test_rotated_iou_of_a_box_with_itself_turned_a_quarter_is_the_square_overlap():
    a = np.array([0.0, 0.0, 40.0, 20.0, 0.0])
    b = np.array([0.0, 0.0, 40.0, 20.0, np.pi / 2])
    assert rotated_iou(a, a) == pytest.approx(1.0)
    assert rotated_iou(a, b) == pytest.approx(400 / (800 + 800 - 400))
    assert rotated_iou(a, a + np.array([100.0, 0, 0, 0, 0])) == 0.0
