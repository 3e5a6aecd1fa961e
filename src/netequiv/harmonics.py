r"""Select non-harmonic eigenvectors by local linear regression.

Diffusion-map eigenvectors are often functions of earlier ones (harmonics): on a 2.5 x 1
rectangle, cos(2 pi x / 2.5) = 2 cos^2(pi x / 2.5) - 1 comes before cos(pi y). Following Dsilva,
Talmon, Coifman and Kevrekidis, "Parsimonious representation of nonlinear dynamical systems
through manifold learning" (Applied and Computational Harmonic Analysis 44, 2018), each
eigenvector phi_k is fitted by a leave-one-out local linear regression on phi_1 .. phi_{k-1}, and
its normalised leave-one-out error

.. math:: r_k = \sqrt{\sum_i (\phi_k(i) - \hat\phi_k(i))^2 / \sum_i \phi_k(i)^2}

is near 0 for a harmonic and near 1 for a new direction (r_1 = 1 by definition).

The regression kernel is exp(-|phi_i - phi_j|^2 / sigma^2) with sigma one third of the median
pairwise distance in the predictor coordinates, as in that paper. To avoid an n x n matrix, the
residuals are computed on a random subset of at most ``max_samples`` points, each regressed on
its ``n_neighbors`` nearest neighbours within that subset.
"""

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state

__all__ = ["local_linear_residuals", "select_non_harmonic"]


def _median_pairwise_distance(X, rng, n_pairs=20000):
    n = len(X)
    first = rng.integers(0, n, size=n_pairs)
    second = rng.integers(0, n, size=n_pairs)
    distinct = first != second
    distances = np.linalg.norm(X[first[distinct]] - X[second[distinct]], axis=1)
    return float(np.median(distances))


def _loo_local_linear_fit(predictors, target, n_neighbors, rng):
    """Leave-one-out local linear fit of ``target`` from ``predictors`` at every sample."""
    n, p = predictors.shape
    sigma = _median_pairwise_distance(predictors, rng) / 3.0
    if not sigma > 0.0:
        return np.zeros_like(target)
    k = min(n, n_neighbors + 1)
    distances, indices = NearestNeighbors().fit(predictors).kneighbors(predictors, n_neighbors=k)
    # Leave one out: drop each point from its own neighbour list.
    not_self = indices != np.arange(n)[:, None]
    weights = np.exp(-((distances / sigma) ** 2)) * not_self
    offsets = predictors[indices] - predictors[:, None, :]
    design = np.concatenate([np.ones((n, k, 1)), offsets], axis=2)
    weighted = design * weights[:, :, None]
    gram = np.einsum("nki,nkj->nij", weighted, design)
    rhs = np.einsum("nki,nk->ni", weighted, target[indices])
    ridge = 1e-10 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(p + 1)
    coefficients = np.linalg.solve(gram + ridge, rhs[:, :, None])[:, :, 0]
    return coefficients[:, 0]


def local_linear_residuals(eigenvectors, n_neighbors=128, max_samples=4000, random_state=None):
    """Compute the local linear regression residual r_k of each eigenvector.

    Parameters
    ----------
    eigenvectors : ndarray of shape (n, K)
        Non-trivial eigenvectors, ordered by decreasing eigenvalue.
    n_neighbors : int, default=128
        Neighbours of each point in its regression.
    max_samples : int, default=4000
        Residuals are computed on a random subset of this many points when n is larger.
    random_state : int, RandomState instance or None
        Seeds the subset and the pair sample of the bandwidth.

    Returns
    -------
    residuals : ndarray of shape (K,)
        r_k in [0, about 1]; r_0 = 1.
    """
    rng = np.random.default_rng(check_random_state(random_state).randint(2**31 - 1))
    eigenvectors = np.asarray(eigenvectors, dtype=float)
    n, n_vectors = eigenvectors.shape
    if n > max_samples:
        eigenvectors = eigenvectors[np.sort(rng.choice(n, size=max_samples, replace=False))]
    residuals = np.ones(n_vectors)
    for k in range(1, n_vectors):
        target = eigenvectors[:, k]
        fitted = _loo_local_linear_fit(eigenvectors[:, :k], target, n_neighbors, rng)
        residuals[k] = np.sqrt(np.sum((target - fitted) ** 2) / np.sum(target**2))
    return residuals


def select_non_harmonic(residuals, n_components, threshold):
    """Indices of the first ``n_components`` eigenvectors whose residual exceeds ``threshold``."""
    selected = np.flatnonzero(np.asarray(residuals) > threshold)
    return selected[:n_components]
