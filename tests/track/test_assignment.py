"""Greedy matching (the tracker) and the Hungarian solver (the metrics) against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pyinfer.track.assignment import greedy_match, linear_assignment


def _brute_force_cost(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    return min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))


@pytest.mark.parametrize(("n", "m"), [(1, 1), (3, 3), (4, 6), (6, 4), (5, 5), (2, 7)])
def test_linear_assignment_finds_the_minimum_cost_of_brute_force(n, m):
    rng = np.random.default_rng(n * 10 + m)
    for _ in range(5):
        cost = rng.integers(0, 20, (n, m)).astype(float)  # integer costs: many ties
        rows, cols = linear_assignment(cost)
        assert len(rows) == min(n, m)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert cost[rows, cols].sum() == pytest.approx(_brute_force_cost(cost))


def test_linear_assignment_of_empty_and_bad_matrices():
    assert [len(x) for x in linear_assignment(np.zeros((0, 3)))] == [0, 0]
    with pytest.raises(ValueError, match="finite"):
        linear_assignment(np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        linear_assignment(np.zeros(3))


def test_greedy_takes_the_best_pair_first_and_each_row_and_column_once():
    score = np.array([[0.9, 0.8, 0.0], [0.85, 0.1, 0.0], [0.0, 0.0, 0.05]])
    rows, cols = greedy_match(score, 0.2)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0)]  # row 1 lost column 0; its 0.1 is too low
    rows, cols = greedy_match(score, 0.05)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1), (2, 2)]


def test_greedy_on_unambiguous_random_iou_equals_the_optimal_assignment():
    rng = np.random.default_rng(4)
    perm = rng.permutation(50)
    score = rng.uniform(0, 0.1, (50, 50))
    score[np.arange(50), perm] = rng.uniform(0.6, 1.0, 50)
    rows, cols = greedy_match(score, 0.3)
    assert np.array_equal(cols[np.argsort(rows)], perm)
    assert greedy_match(np.zeros((0, 4)), 0.1)[0].size == 0
