"""The block-diagonal Kalman filter: the full 10x10 filter's results, and constant-velocity convergence."""

from __future__ import annotations

import numpy as np

from pyinfer.track import kalman


def _full_filter_step(mean, cov_full, z):
    """Textbook predict + update with 10x10 matrices, the reference for the block form."""
    n = len(mean)
    f = np.eye(10)
    f[:5, 5:] = np.eye(5)
    new_mean, cov_blocks = kalman.predict(mean, _blocks(cov_full))  # noise from the module (same scale rules)
    q = kalman.full_covariance(cov_blocks) - np.einsum("ij,tjk,lk->til", f, cov_full, f)
    p = np.einsum("ij,tjk,lk->til", f, cov_full, f) + q
    np.testing.assert_allclose(new_mean[:, :5], mean[:, :5] + mean[:, 5:])
    w, h = np.abs(new_mean[:, 2]), np.abs(new_mean[:, 3])
    r = np.zeros((n, 5, 5))
    std = np.stack([w / 20, h / 20, w / 20, h / 20, np.full(n, 0.05)], axis=1)
    r[:, np.arange(5), np.arange(5)] = std**2
    s = p[:, :5, :5] + r
    k = np.einsum("tij,tjk->tik", p[:, :, :5], np.linalg.inv(s))
    m = new_mean + np.einsum("tij,tj->ti", k, z - new_mean[:, :5])
    p = p - np.einsum("tij,tjk->tik", k, p[:, :5, :])
    return m, p


def _blocks(cov_full):
    i = np.arange(5)
    return np.stack([cov_full[:, i, i], cov_full[:, i, i + 5], cov_full[:, i + 5, i + 5]], axis=1)


def test_block_filter_equals_the_full_matrix_filter():
    rng = np.random.default_rng(0)
    z0 = np.column_stack([rng.uniform(0, 500, (6, 2)), rng.uniform(10, 80, (6, 2)), rng.uniform(-1, 1, 6)])
    mean, cov = kalman.initiate(z0)
    ref_mean, ref_cov = mean.copy(), kalman.full_covariance(cov)
    for _ in range(5):
        z = z0 + rng.normal(0, 2, z0.shape)
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, z)
        ref_mean, ref_cov = _full_filter_step(ref_mean, ref_cov, z)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(kalman.full_covariance(cov), ref_cov, rtol=1e-9, atol=1e-9)


def test_constant_velocity_is_learned_and_predicted_ahead():
    true_v = np.array([3.0, -2.0, 0.0, 0.0, 0.02])
    start = np.array([100.0, 200.0, 40.0, 30.0, 0.1])
    mean, cov = kalman.initiate(start[None])
    for k in range(1, 41):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, (start + k * true_v)[None])
    np.testing.assert_allclose(mean[0, 5:], true_v, atol=0.05)
    for _ in range(3):  # three frames without measurements
        mean, cov = kalman.predict(mean, cov)
    np.testing.assert_allclose(mean[0, :5], start + 43 * true_v, atol=0.5)
    assert (cov[:, 0] > 0).all() and (cov[:, 2] > 0).all()
    assert (cov[:, 1] ** 2 < cov[:, 0] * cov[:, 2]).all()  # every 2x2 block stays positive definite


def test_axis_aligned_measurements_keep_the_angle_exactly_zero():
    mean, cov = kalman.initiate(np.array([[10.0, 10.0, 5.0, 5.0, 0.0]]))
    for k in range(10):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, np.array([[10.0 + k, 10.0, 5.0, 5.0, 0.0]]))
    assert mean[0, 4] == 0.0 and mean[0, 9] == 0.0
