"""Local metrics C_i = J_i^T J_i of the inverse observation map, from three sources.

A network's selected neurons y = f(x) observe a d-dimensional input manifold. Near a point,
dy = J_net dx, so the pull-back of the input metric to activation space is the pseudo-inverse of
J_net J_net^T: with C_i = pinv(J_net J_net^T) at point i, dy^T C_i dy = |dx|^2 for displacements
along the manifold. Every function here returns that matrix (the *inverse* covariance, or
precision), stacked as an array of shape (n, m, m) for n points and m neurons. Covariances that
estimate J_net J_net^T up to a constant factor give C up to the inverse factor, which the kernel
bandwidth rule absorbs.

Three sources are supported:

- :func:`metric_from_clouds`: q activations of inputs sampled around each point.
- :func:`metric_from_jacobians`: Jacobians dy/dx of the selected neurons.
- :func:`metric_from_sequence`: samples ordered along a path (video frames, angles), using the
  window of consecutive samples around each one as its cloud.

Rank tolerance
--------------
A covariance eigenvalue (or squared Jacobian singular value) counts as zero when it is below
``rtol`` times the largest one at that point, or below ``rtol`` times the median over points of their largest eigenvalues (so
that a neighbourhood that collapses to a point counts as rank 0, whatever its round-off). The
default ``rtol`` is
``max(m, q) * machine epsilon`` of the input dtype, the tolerance that :func:`numpy.linalg.pinv`
and :func:`numpy.linalg.matrix_rank` use. When ``rank`` is given, only the ``rank`` largest
eigenvalues are inverted, whatever their size above the tolerance.
"""

import warnings

import numpy as np

__all__ = [
    "metric_from_clouds",
    "metric_from_jacobians",
    "metric_from_sequence",
    "estimate_rank",
    "pinv_psd",
]


def _check_finite(array, name):
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name} contains NaN or infinite values (first at index {tuple(bad.tolist())}); "
            "remove or recompute those samples before estimating the metric."
        )


def _check_rank(rank, m, name="rank"):
    if rank is None:
        return
    if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"{name}={rank!r} is invalid; expected a positive integer (the intrinsic dimension d).")
    if rank > m:
        raise ValueError(
            f"{name}={rank} is larger than the number of neurons m={m}; the metric of m neurons has "
            "rank at most m. Pass the intrinsic dimension d <= m."
        )


def estimate_rank(eigenvalues, rtol=None):
    """Estimate the intrinsic dimension from covariance spectra by their largest gap.

    For each point, the eigenvalues ``s_1 >= s_2 >= ...`` above the tolerance are compared in
    consecutive ratios ``s_k / s_{k+1}``. The k with the largest ratio is that point's rank, so
    a point whose eigenvalues are all below the tolerance but the first has rank 1. The returned
    rank is the median of the per-point ranks, rounded down, so that a few noisy points do not
    change it.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n, m)
        Covariance eigenvalues of each point, in any order.
    rtol : float, default=None
        Relative tolerance below which an eigenvalue counts as zero; see the module docstring.

    Returns
    -------
    rank : int
        The estimated intrinsic dimension.
    """
    s = np.sort(np.asarray(eigenvalues, dtype=float), axis=1)[:, ::-1]
    if rtol is None:
        rtol = s.shape[1] * np.finfo(float).eps
    floor = rtol * s[:, :1]
    valid = s > floor
    # Eigenvalues below the tolerance are set to the tolerance, so that the ratio to the first
    # zero eigenvalue is large but finite.
    s_clipped = np.maximum(s, np.maximum(floor, np.finfo(float).tiny))
    if s.shape[1] == 1:
        return 1
    ratios = s_clipped[:, :-1] / s_clipped[:, 1:]
    # Ratios between two zero eigenvalues carry no information.
    ratios[~valid[:, :-1]] = 0.0
    per_point = np.argmax(ratios, axis=1) + 1
    return int(np.floor(np.median(per_point)))


def pinv_psd(covariances, rank=None, rtol=None):
    """Pseudo-invert a stack of symmetric positive semi-definite matrices.

    Parameters
    ----------
    covariances : ndarray of shape (n, m, m)
        Symmetric positive semi-definite matrices.
    rank : int, default=None
        Keep only the ``rank`` largest eigenvalues of each matrix. None keeps every eigenvalue
        above the tolerance.
    rtol : float, default=None
        Eigenvalues below ``rtol`` times the largest one count as zero; see the module docstring.

    Returns
    -------
    inverse : ndarray of shape (n, m, m)
        The pseudo-inverses, truncated to ``rank``.
    ranks : ndarray of shape (n,)
        Number of eigenvalues inverted at each point.
    """
    covariances = np.asarray(covariances, dtype=float)
    m = covariances.shape[-1]
    if rtol is None:
        rtol = m * np.finfo(covariances.dtype).eps
    eigenvalues, eigenvectors = np.linalg.eigh(covariances)  # ascending order
    largest = np.maximum(eigenvalues[:, -1:], 0.0)
    keep = (eigenvalues > rtol * largest) & (eigenvalues > rtol * np.median(largest))
    if rank is not None:
        keep[:, : m - rank] = False
    inverse_values = np.zeros_like(eigenvalues)
    inverse_values[keep] = 1.0 / eigenvalues[keep]
    inverse = np.einsum("nik,nk,njk->nij", eigenvectors, inverse_values, eigenvectors)
    return inverse, keep.sum(axis=1)


def _warn_rank_deficit(ranks, rank, source):
    if rank is None:
        zero = np.flatnonzero(ranks == 0)
        if zero.size:
            raise ValueError(
                f"the {source} of {zero.size} point(s) is zero (first at point {zero[0]}), so the "
                "metric there is zero: the selected neurons do not vary around those points. "
                "Select other neurons or sample larger neighbourhoods."
            )
        return
    short = np.flatnonzero(ranks < rank)
    if short.size:
        warnings.warn(
            f"the {source} has rank below {rank} at {short.size} of {ranks.size} point(s) (first at "
            f"point {short[0]}, rank {ranks[short[0]]}); the metric is degenerate there, as at a "
            "fold where the selected neurons stop embedding the manifold.",
            RuntimeWarning,
            stacklevel=3,
        )
        if np.any(ranks == 0):
            zero = np.flatnonzero(ranks == 0)
            raise ValueError(
                f"the {source} of {zero.size} point(s) is zero (first at point {zero[0]}): the "
                "selected neurons do not vary around those points. Select other neurons or sample "
                "larger neighbourhoods."
            )


def _covariances(samples):
    """Sample covariances of a stack of clouds, shape (n, q, m) -> (n, m, m)."""
    centered = samples - samples.mean(axis=1, keepdims=True)
    return np.einsum("nqi,nqj->nij", centered, centered) / (samples.shape[1] - 1)


def metric_from_clouds(clouds, rank=None, rtol=None, return_means=False):
    """Estimate local metrics from clouds of activations sampled around each point.

    For point i, the q inputs of its neighbourhood are pushed through the network. The covariance
    of the resulting activations is approximately ``s^2 J_net J_net^T`` for a neighbourhood of
    spread s, so its pseudo-inverse, truncated to the intrinsic dimension, is the metric up to the
    constant factor ``1 / s^2``.

    Parameters
    ----------
    clouds : array-like of shape (n, q, m)
        Activations of m neurons at q samples around each of n points (q >= 2).
    rank : int, default=None
        The intrinsic dimension d: only the d largest covariance eigenvalues are inverted. None
        estimates it from the spectra's largest gap (see :func:`estimate_rank`).
    rtol : float, default=None
        Relative eigenvalue tolerance; see the module docstring.
    return_means : bool, default=False
        Also return the cloud means, the points' locations in activation space.

    Returns
    -------
    inverse_covariances : ndarray of shape (n, m, m)
        The metric C_i of each point.
    means : ndarray of shape (n, m)
        The cloud means; only when ``return_means`` is True.

    Examples
    --------
    >>> import numpy as np
    >>> from netequiv.local_metric import metric_from_clouds
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(-0.05, 0.05, size=(4, 200, 1)) + np.linspace(0, 1, 4)[:, None, None]
    >>> clouds = np.concatenate([x, 2 * x], axis=2)  # a line in R^2
    >>> C = metric_from_clouds(clouds, rank=1)
    >>> C.shape
    (4, 2, 2)
    """
    clouds = np.asarray(clouds, dtype=float)
    if clouds.ndim != 3:
        raise ValueError(
            f"clouds has shape {clouds.shape}; expected (n, q, m): q activations of m neurons "
            "around each of n points."
        )
    n, q, m = clouds.shape
    if q < 2:
        raise ValueError(f"each cloud has q={q} sample(s); at least 2 are needed for a covariance.")
    _check_finite(clouds, "clouds")
    _check_rank(rank, m)
    if rank is not None and rank > q - 1:
        raise ValueError(
            f"rank={rank} exceeds q - 1 = {q - 1}, the largest rank a covariance of q={q} samples "
            "can have; sample more points per cloud."
        )

    covariances = _covariances(clouds)
    if rank is None:
        rank = estimate_rank(np.linalg.eigvalsh(covariances), rtol=rtol)
    inverse, ranks = pinv_psd(covariances, rank=rank, rtol=rtol)
    _warn_rank_deficit(ranks, rank, "cloud covariance")
    if return_means:
        return inverse, clouds.mean(axis=1)
    return inverse


def metric_from_jacobians(jacobians, rank=None, rtol=None):
    """Compute local metrics pinv(J J^T) from Jacobians of the selected neurons.

    Parameters
    ----------
    jacobians : array-like of shape (n, m, d)
        Jacobian dy/dx of the m selected neurons with respect to d input (or manifold)
        coordinates at each of n points.
    rank : int, default=None
        Keep only the ``rank`` largest singular values. None keeps all above the tolerance.
    rtol : float, default=None
        Relative tolerance on squared singular values; see the module docstring.

    Returns
    -------
    inverse_covariances : ndarray of shape (n, m, m)
        ``pinv(J_i J_i^T)`` for each point, so that ``dy^T C_i dy = |dx|^2`` for dy = J_i dx.
    """
    jacobians = np.asarray(jacobians, dtype=float)
    if jacobians.ndim != 3:
        raise ValueError(
            f"jacobians has shape {jacobians.shape}; expected (n, m, d): the derivatives of m "
            "neurons with respect to d input coordinates at each of n points."
        )
    n, m, d = jacobians.shape
    _check_finite(jacobians, "jacobians")
    _check_rank(rank, min(m, d))

    # J = U S V^T, so J J^T = U S^2 U^T and its pseudo-inverse is U S^-2 U^T.
    u, s, _ = np.linalg.svd(jacobians, full_matrices=False)
    squared = s**2
    if rtol is None:
        rtol = max(m, d) * np.finfo(float).eps
    keep = (squared > rtol * squared[:, :1]) & (squared > rtol * np.median(squared[:, 0]))
    if rank is not None:
        keep[:, rank:] = False
    inverse_values = np.zeros_like(squared)
    inverse_values[keep] = 1.0 / squared[keep]
    _warn_rank_deficit(keep.sum(axis=1), rank, "Jacobian")
    return np.einsum("nik,nk,njk->nij", u, inverse_values, u)


def metric_from_sequence(Y, window, rank=None, rtol=None):
    """Estimate local metrics from samples ordered along a path.

    The cloud of sample i is the ``window`` consecutive samples centred on i. Near the ends of
    the sequence the window is shifted, not shrunk, so that every covariance uses the same number
    of samples: sample i uses rows ``start .. start + window - 1`` with
    ``start = clip(i - window // 2, 0, n - window)``.

    Parameters
    ----------
    Y : array-like of shape (n, m)
        Activations of m neurons at n samples ordered along a path.
    window : int
        Number of consecutive samples in each cloud, ``2 <= window <= n``.
    rank : int, default=None
        The intrinsic dimension d. None estimates it from the spectra's largest gap.
    rtol : float, default=None
        Relative eigenvalue tolerance; see the module docstring.

    Returns
    -------
    inverse_covariances : ndarray of shape (n, m, m)
    """
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2:
        raise ValueError(f"Y has shape {Y.shape}; expected (n, m): n ordered samples of m neurons.")
    n, m = Y.shape
    _check_finite(Y, "Y")
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 2:
        raise ValueError(f"window={window!r} is invalid; expected an integer >= 2.")
    if window > n:
        raise ValueError(
            f"window={window} is larger than the number of samples n={n}; use a window of at most n."
        )
    _check_rank(rank, m)

    # Every possible window once, then each sample picks its (shifted) window.
    windows = np.lib.stride_tricks.sliding_window_view(Y, window, axis=0)  # (n - window + 1, m, window)
    window_covariances = _covariances(np.swapaxes(windows, 1, 2))
    starts = np.clip(np.arange(n) - window // 2, 0, n - window)
    covariances = window_covariances[starts]
    if rank is None:
        rank = estimate_rank(np.linalg.eigvalsh(covariances), rtol=rtol)
    inverse, ranks = pinv_psd(covariances, rank=rank, rtol=rtol)
    _warn_rank_deficit(ranks, rank, "window covariance")
    return inverse
