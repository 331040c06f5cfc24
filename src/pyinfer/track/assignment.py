"""Matching rows to columns: a fast greedy matcher (the tracker) and an optimal one (the metrics).

scipy is not a dependency: ``greedy_match`` is what the tracker needs per frame (IoU matrices are sparse and
mostly unambiguous, and greedy takes well under a millisecond at 100 x 100), and ``linear_assignment`` is a
small Hungarian solver for the evaluation, where optimality is part of the definition (CLEAR MOT, IDF1).
"""

from __future__ import annotations

import numpy as np


def greedy_match(score: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Match rows to columns by descending score, each at most once, keeping pairs scoring >= ``threshold``.

    Args:
        score: (N, M) similarity (e.g. IoU); higher is better.
        threshold: the lowest score a pair may have.

    Returns:
        ``(rows, cols)``: (K,) int64 indices of the matched pairs, best first. Ties keep row-major order.
    """
    score = np.asarray(score)
    if score.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m = score.shape[1]
    flat = np.flatnonzero(score >= threshold)
    if len(flat) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flat = flat[np.argsort(-score.ravel()[flat], kind="stable")]
    rows, cols = (flat // m).tolist(), (flat % m).tolist()
    if len(flat) == 1:
        return np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    used_r, used_c = set(), set()
    out_r, out_c = [], []
    for r, c in zip(rows, cols):  # candidates are few (sparse IoU), so a plain loop is the fast path
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        out_r.append(r)
        out_c.append(c)
    return np.asarray(out_r, np.int64), np.asarray(out_c, np.int64)


def linear_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment (Hungarian method, O(n^2 m)): every row of the smaller side is matched.

    Args:
        cost: (N, M) finite costs.

    Returns:
        ``(rows, cols)``: (min(N, M),) int64 indices, sorted by row.
    """
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost: expected a 2-D matrix, got shape {cost.shape}")
    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not np.isfinite(cost).all():
        raise ValueError("cost: every entry must be finite")
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    # Potentials u (rows) and v (columns), 1-based with column 0 as the virtual start (e-maxx formulation).
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # row (1-based) assigned to each column; 0 = free
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.flatnonzero(owner[1:])
    rows = owner[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)
