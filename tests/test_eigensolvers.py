"""Tests of the Chebyshev-filtered block eigensolver against analytic spectra and dense LAPACK."""

import warnings

import numpy as np
import pytest
from scipy import linalg, sparse

import netequiv.diffusion_maps as diffusion_maps
from netequiv import MahalanobisDiffusionMap
from netequiv import eigensolvers
from netequiv.eigensolvers import EigensolverNoConvergence, chebyshev_eigsh


def _ring(n):
    """The random walk on an n-cycle, (shift + shift^T) / 2: eigenvalues cos(2 pi k / n)."""
    shift = sparse.eye(n, k=1, format="csr") + sparse.eye(n, k=1 - n, format="csr")
    return (0.5 * (shift + shift.T)).tocsr()


def _kernel_matrix(n, seed):
    """The symmetric diffusion-map matrix of random points on a 1 x 0.5 rectangle, 20 neighbours."""
    dmap = MahalanobisDiffusionMap(n_components=2, n_neighbors=20, random_state=0)
    points = np.random.default_rng(seed).uniform(size=(n, 2)) * [1.0, 0.5]
    captured = {}

    def capture(symmetric, n_eig):
        captured["matrix"] = symmetric
        return linalg.eigh(symmetric.toarray())[0][-n_eig:][::-1], np.eye(symmetric.shape[0], n_eig), np.zeros(n_eig)

    dmap._eigenpairs = capture
    dmap.fit(points)
    return captured["matrix"]


def test_ring_eigenvalues_match_cosines():
    # An even ring has eigenvalue -1, the bottom of the allowed spectrum, and double eigenvalues.
    n = 400
    values, vectors, residuals = chebyshev_eigsh(_ring(n), 9, tol=1e-10, random_state=0)
    expected = np.cos(2 * np.pi * np.array([0, 1, 1, 2, 2, 3, 3, 4, 4]) / n)
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12)
    assert residuals.max() <= 1e-10
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(9), atol=1e-10)
    # Each double eigenvalue's pair spans the cosine and sine of its frequency.
    angle = 2 * np.pi * np.arange(n) / n
    for k, columns in ((1, [1, 2]), (2, [3, 4]), (4, [7, 8])):
        waves = np.stack([np.cos(k * angle), np.sin(k * angle)], axis=1)
        waves /= np.linalg.norm(waves, axis=0)
        np.testing.assert_allclose(np.linalg.svd(waves.T @ vectors[:, columns])[1], 1.0, atol=1e-8)


@pytest.mark.parametrize("tol", [1e-7, 1e-11])
def test_kernel_eigenpairs_match_dense_lapack(tol):
    matrix = _kernel_matrix(2000, seed=1)
    reference_values, reference_vectors = linalg.eigh(matrix.toarray())
    reference_values, reference_vectors = reference_values[::-1][:8], reference_vectors[:, ::-1][:, :8]
    values, vectors, residuals = chebyshev_eigsh(matrix, 8, tol=tol, random_state=3)

    assert residuals.max() <= tol
    # A residual r bounds the eigenvalue error by about r^2 / gap, far below r itself.
    np.testing.assert_allclose(values, reference_values, rtol=0, atol=max(tol, 1e-13))
    overlaps = np.abs(np.sum(vectors * reference_vectors, axis=0))
    gaps = np.minimum(np.abs(np.diff(reference_values, prepend=2.0)), np.abs(np.diff(reference_values, append=-2.0)))
    # The sine of the angle to the true vector is at most residual * |a| / gap.
    np.testing.assert_array_less(np.sqrt(np.maximum(1.0 - overlaps**2, 0.0)), 2.0 * tol / gaps + 1e-7)


def test_block_size_and_seed_invariance():
    matrix = _kernel_matrix(1500, seed=2)
    first = chebyshev_eigsh(matrix, 5, tol=1e-10, random_state=0)
    second = chebyshev_eigsh(matrix, 5, tol=1e-10, block_size=12, random_state=7)
    np.testing.assert_allclose(first[0], second[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.abs(np.sum(first[1] * second[1], axis=0)), 1.0, atol=1e-8)


def test_spent_budget_raises_with_residuals():
    with pytest.raises(EigensolverNoConvergence, match="budget of 100 products") as caught:
        chebyshev_eigsh(_ring(400), 5, tol=1e-10, max_products=100, random_state=0)
    assert caught.value.residuals.shape == (5,)
    assert caught.value.residuals.max() > 1e-10


def test_n_eig_out_of_range_rejected():
    with pytest.raises(ValueError, match="n_eig=10 must be between 1 and n - 1 = 9"):
        chebyshev_eigsh(_ring(10), 10)


def test_arpack_fallback_warns(monkeypatch):
    original = diffusion_maps.chebyshev_eigsh
    monkeypatch.setattr(
        diffusion_maps, "chebyshev_eigsh", lambda *args, **kwargs: original(*args, **kwargs, max_products=50)
    )
    points = np.random.default_rng(4).uniform(size=(1500, 2))
    with pytest.warns(RuntimeWarning, match="Falling back to ARPACK for 1500 samples"):
        dmap = MahalanobisDiffusionMap(n_components=3, eigen_solver="chebyshev", random_state=0).fit(points)
    reference = MahalanobisDiffusionMap(n_components=3, eigen_solver="dense", random_state=0).fit(points)
    np.testing.assert_allclose(dmap.all_eigenvalues_, reference.all_eigenvalues_, rtol=0, atol=1e-9)


def test_auto_solver_picks_chebyshev(monkeypatch):
    calls = []
    original = diffusion_maps.chebyshev_eigsh

    def spy(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(diffusion_maps, "chebyshev_eigsh", spy)
    points = np.random.default_rng(5).uniform(size=(diffusion_maps.DENSE_SOLVER_MAX_SAMPLES + 200, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dmap = MahalanobisDiffusionMap(n_components=3, random_state=0).fit(points)
    assert calls == [points.shape[0]]
    assert dmap.eigen_residuals_.max() <= 10 * dmap.eigen_tol


def test_float32_stall_switches_to_float64(monkeypatch):
    # With no floor to reach, only the stall rule can move the solve to float64 products.
    monkeypatch.setattr(eigensolvers, "FLOAT32_FLOOR", 0.0)
    matrix = _kernel_matrix(2000, seed=1)
    values, vectors, residuals = chebyshev_eigsh(matrix, 6, tol=1e-11, random_state=0)
    assert residuals.max() <= 1e-11


def test_unreachable_tolerance_raises():
    matrix = _kernel_matrix(1500, seed=3)
    with pytest.raises(EigensolverNoConvergence, match="stopped improving after") as caught:
        chebyshev_eigsh(matrix, 4, tol=1e-17, random_state=0)
    assert caught.value.residuals.max() < 1e-12
