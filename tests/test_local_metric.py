import numpy as np
import pytest

from netequiv.local_metric import (
    estimate_rank,
    metric_from_clouds,
    metric_from_jacobians,
    metric_from_sequence,
    pinv_psd,
)


def _line_clouds(n=5, q=400, seed=0):
    """Clouds along the line y = (x, 2x, -x) in R^3, uniform of half-width 0.05 in x."""
    rng = np.random.default_rng(seed)
    centers = np.linspace(0.0, 1.0, n)
    x = centers[:, None] + rng.uniform(-0.05, 0.05, size=(n, q))
    direction = np.array([1.0, 2.0, -1.0])
    return x[:, :, None] * direction, direction


def test_clouds_metric_is_pinv_of_covariance():
    clouds, direction = _line_clouds()
    C = metric_from_clouds(clouds, rank=1)
    centered = clouds - clouds.mean(axis=1, keepdims=True)
    covariance = np.einsum("nqi,nqj->nij", centered, centered) / (clouds.shape[1] - 1)
    expected = np.linalg.pinv(covariance, rcond=1e-8, hermitian=True)
    np.testing.assert_allclose(C, expected, rtol=1e-8, atol=1e-8)


def test_clouds_metric_measures_input_distance():
    # Uniform on [-h, h] has variance h^2 / 3, so dy^T C dy = 3 dx^2 / h^2 along the line.
    clouds, direction = _line_clouds(q=20000)
    C = metric_from_clouds(clouds, rank=1)
    quadratic = direction @ C @ direction
    np.testing.assert_allclose(quadratic, 3.0 / 0.05**2, rtol=0.03)


def test_clouds_rank_estimated_from_gap():
    rng = np.random.default_rng(1)
    # A plane in R^4 plus noise 1e-4 times smaller.
    plane = rng.normal(size=(10, 300, 2)) @ rng.normal(size=(2, 4))
    clouds = plane + 1e-4 * rng.normal(size=plane.shape)
    C = metric_from_clouds(clouds)
    ranks = np.linalg.matrix_rank(C, tol=1e-6 * np.abs(C).max())
    assert np.all(ranks == 2)


def test_clouds_return_means():
    clouds, _ = _line_clouds()
    _, means = metric_from_clouds(clouds, rank=1, return_means=True)
    np.testing.assert_allclose(means, clouds.mean(axis=1))


def test_jacobian_metric_is_pullback():
    rng = np.random.default_rng(2)
    J = rng.normal(size=(50, 5, 2))
    C = metric_from_jacobians(J)
    dx = rng.normal(size=(50, 2))
    dy = np.einsum("nmd,nd->nm", J, dx)
    np.testing.assert_allclose(np.einsum("ni,nij,nj->n", dy, C, dy), np.sum(dx**2, axis=1), rtol=1e-10)
    np.testing.assert_allclose(C, np.linalg.pinv(J @ np.swapaxes(J, 1, 2), hermitian=True), atol=1e-8)


def test_jacobian_rank_truncation_and_zero():
    J = np.zeros((3, 4, 2))
    J[:, 0, 0] = 1.0
    J[:, 1, 1] = 1e-3
    C = metric_from_jacobians(J, rank=1)
    assert np.all(np.linalg.matrix_rank(C) == 1)
    J[1] = 0.0
    with pytest.raises(ValueError, match="zero"):
        metric_from_jacobians(J)


def test_sequence_window_shifted_at_ends():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 1, 40)
    Y = np.stack([t, t**2, np.sin(t)], axis=1) + 1e-3 * rng.normal(size=(40, 3))
    window = 7
    C = metric_from_sequence(Y, window, rank=3)
    for i, start in [(0, 0), (2, 0), (3, 0), (20, 17), (39, 33), (37, 33)]:
        cov = np.cov(Y[start : start + window].T)
        np.testing.assert_allclose(C[i], np.linalg.inv(cov), rtol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metric_from_clouds(np.zeros((3, 4))), r"expected \(n, q, m\)"),
        (lambda: metric_from_clouds(np.full((3, 4, 2), np.nan)), "NaN"),
        (lambda: metric_from_clouds(np.ones((3, 1, 2))), "q=1"),
        (lambda: metric_from_clouds(np.random.default_rng(0).normal(size=(3, 5, 2)), rank=3), "rank=3"),
        (lambda: metric_from_jacobians(np.zeros((3, 4))), r"expected \(n, m, d\)"),
        (lambda: metric_from_jacobians(np.array([[[np.inf]]])), "NaN or infinite"),
        (lambda: metric_from_sequence(np.zeros((5, 2)), 6), "window=6"),
        (lambda: metric_from_sequence(np.zeros((5, 2)), 1), "window=1"),
        (lambda: metric_from_sequence(np.zeros(5), 2), r"expected \(n, m\)"),
        (lambda: metric_from_sequence(np.random.default_rng(0).normal(size=(9, 2)), 4, rank=3), "rank=3"),
    ],
)
def test_invalid_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_rank_deficient_points_warn():
    clouds, _ = _line_clouds()
    clouds[2] = clouds[2, :1]  # one cloud collapses to a point
    with pytest.raises(ValueError, match="zero"), pytest.warns(RuntimeWarning, match="rank below 1"):
        metric_from_clouds(clouds, rank=1)


def test_estimate_rank_and_pinv_psd():
    values = np.array([[5.0, 4.0, 1e-9, 1e-10], [3.0, 2.5, 1e-8, 0.0]])
    assert estimate_rank(values) == 2
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    A = basis @ np.diag([4.0, 2.0, 1.0, 0.5]) @ basis.T
    inverse, ranks = pinv_psd(A[None], rank=2)
    expected = basis[:, :2] @ np.diag([0.25, 0.5]) @ basis[:, :2].T
    np.testing.assert_allclose(inverse[0], expected, atol=1e-12)
    assert ranks[0] == 2
