"""batched_nms: greedy NMS per group, whatever the coordinates (negative, huge), against torchvision per group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import nms

from pyinfer.ops.boxes import batched_nms


def per_group_nms(xyxy: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, thr: float) -> list[int]:
    """Reference: torchvision's nms on each group alone (no offsets), kept indices best first."""
    kept = []
    for g in groups.unique().tolist():
        idx = (groups == g).nonzero()[:, 0]
        kept += idx[nms(xyxy[idx].double(), scores[idx].double(), thr)].tolist()
    return sorted(kept, key=lambda i: -float(scores[i]))


def boxes(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """(n, 4) xyxy boxes in clusters (so NMS has work), corners anywhere in [lo, hi]."""
    centres = rng.uniform(lo, hi, (max(1, n // 6), 2))
    c = centres[rng.integers(len(centres), size=n)] + rng.normal(0, 3, (n, 2))
    wh = rng.uniform(10, 60, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1)


CASES = {
    "inside the input": (0, 640, None),
    "negative coordinates": (-200, 200, None),  # the next group's boxes past the corner met the previous group's
    "one huge box": (0, 640, (1e30, 100, 1e30 + 20, 120)),
    "one huge negative box": (0, 640, (-1e30, -1e30, -1e30 + 5, -1e30 + 5)),
    "one box spanning everything": (0, 640, (-1e30, 10, 1e30, 50)),
}


@pytest.mark.parametrize("n", [60, 1200])  # torchvision offsets groups up to 1000 boxes on the CPU, loops above
@pytest.mark.parametrize("case", list(CASES))
def test_groups_never_suppress_each_other_whatever_the_coordinates(case, n):
    lo, hi, odd = CASES[case]
    rng = np.random.default_rng(len(case) + n)
    xyxy = boxes(rng, n, lo, hi)
    groups = rng.integers(0, 12, n)
    if odd is not None:
        xyxy[0] = odd
        groups[0] = 5
    scores = rng.permutation(n) / n + 0.001  # distinct
    xyxy_t, scores_t = torch.from_numpy(xyxy).float(), torch.from_numpy(scores).float()  # as decoders hold them
    groups_t = torch.from_numpy(groups)
    want = per_group_nms(xyxy_t, scores_t, groups_t, 0.45)
    got = batched_nms(xyxy_t, scores_t, groups_t, 0.45).tolist()
    assert len(want) < n  # something was suppressed
    assert got == want


def test_a_box_past_the_top_left_corner_is_not_suppressed_by_a_box_of_the_previous_group():
    xyxy = torch.tensor([[600.0, 600.0, 640.0, 640.0], [-40.0, -40.0, 20.0, 20.0]])
    got = batched_nms(xyxy, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.3)
    assert got.tolist() == [0, 1]


def test_no_boxes_keep_nothing():
    got = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert got.shape == (0,) and got.dtype == torch.int64
