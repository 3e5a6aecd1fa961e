r"""Sparse Mahalanobis k-nearest-neighbour kernel and its bandwidth rule.

Conventions, fixed once for the whole package:

- ``inverse_covariances[i]`` is the metric C_i (a precision matrix, see
  :mod:`netequiv.local_metric`), not a covariance.
- Distances are *squared* everywhere in this module:

  .. math:: d_M^2(y_i, y_j) = (y_i - y_j)^T (C_i + C_j) (y_i - y_j).

  With C_i = pinv(J_i J_i^T), d_M^2 is about 2 |x_i - x_j|^2 on the input manifold.
- The kernel has the factor 2 in its denominator:

  .. math:: k_{ij} = \exp\left(-\frac{d^2_{ij}}{2 \varepsilon}\right).

- Without metrics, d^2 is the plain squared Euclidean distance |y_i - y_j|^2.

Neighbour search
----------------
Candidates come from a Euclidean tree search and are re-ranked by the exact Mahalanobis
distance. The candidate set of query point i is large enough when no point outside it can be
nearer than its k-th Mahalanobis neighbour. Let c_i be the smallest non-zero eigenvalue of C_i
and c_min the smallest such eigenvalue over the indexed points. For a displacement dy in the
range of C_i and C_j (the tangent space, to first order for neighbours on the manifold),
``d_M^2 = dy^T C_i dy + dy^T C_j dy >= (c_i + c_min) |dy|^2``. Every point
outside the candidate set is at least as far as the farthest candidate, R_i, so the set is
certified when ``(c_i + c_min) R_i^2 >= d_k^2`` (d_k^2 the k-th re-ranked squared distance).
Points whose set is not certified are searched again with twice as many candidates, until every
point is certified or the candidate count reaches the number of points.

Unless set, the first candidate count is the one that certifies 95% of a pilot sample of query
points, because a fixed multiple of k either wastes work or leaves most points for a second
search: 2 k candidates left 94% of the 100,000 points of benchmarks/dmap_scaling.py uncertified.
"""

import warnings

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors

__all__ = [
    "mahalanobis_neighbors",
    "median_bandwidth",
    "kernel_matrix",
    "check_connected",
    "row_graph",
]

# Query rows processed at once. It bounds the gathered metric factors to about
# chunk * n_candidates * m * r floats, r being the metric rank.
_CHUNK_ELEMENTS = 2**24

# Query points in the pilot search that sets the first candidate count, and the share of them
# that count must certify.
_PILOT_SAMPLES = 1000
_PILOT_QUANTILE = 95.0


def _metric_factors(inverse_covariances):
    """Factor each metric as C_i = L_i L_i^T, L_i of shape (m, r), r the largest rank among them.

    Also returns c_i, the smallest non-zero eigenvalue of each C_i, for the certificate.

    d^T C_i d = |L_i^T d|^2 then costs m r products instead of m^2, and the factors of all points
    take r / m of the memory the metrics take: a Jacobian metric of a 2-d manifold in R^5 has r = 2.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(inverse_covariances)
    m = eigenvalues.shape[1]
    tolerance = m * np.finfo(float).eps * np.maximum(eigenvalues[:, -1:], 0.0)
    eigenvalues = np.where(eigenvalues > tolerance, eigenvalues, 0.0)
    rank = max(1, int(np.count_nonzero(eigenvalues, axis=1).max()))
    smallest_positive = np.where(eigenvalues > 0.0, eigenvalues, np.inf).min(axis=1)
    # eigh sorts ascending, so the last `rank` columns hold every non-zero eigenvalue.
    factors = eigenvectors[:, :, m - rank :] * np.sqrt(eigenvalues[:, None, m - rank :])
    return factors, smallest_positive


def _squared_mahalanobis(Y_index, L_index, Y_query, L_query, candidates):
    """Exact d_M^2 between each query point and its candidate points, chunked over queries.

    ``L_index`` and ``L_query`` are metric factors from :func:`_metric_factors`.
    """
    n_query, n_candidates = candidates.shape
    m = Y_query.shape[1]
    rank = max(L_index.shape[2], L_query.shape[2])
    result = np.empty((n_query, n_candidates))
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_candidates * m * rank))
    for start in range(0, n_query, chunk):
        stop = min(start + chunk, n_query)
        block = candidates[start:stop]
        diff = Y_index[block] - Y_query[start:stop, None, :]  # (b, k, m)
        query_part = np.matmul(diff, L_query[start:stop])  # (b, k, r), batched BLAS
        index_part = np.einsum("bki,bkir->bkr", diff, L_index[block])
        result[start:stop] = np.einsum("bkr,bkr->bk", query_part, query_part)
        result[start:stop] += np.einsum("bkr,bkr->bk", index_part, index_part)
    return result


def _pilot_candidate_count(Y, factors, Y_query, factors_query, lower_bounds, n_neighbors, tree):
    """Return the candidate count that certifies ``_PILOT_QUANTILE`` % of a sample of queries."""
    n, n_query = Y.shape[0], Y_query.shape[0]
    default = max(2 * n_neighbors, n_neighbors + 16)
    if n_query <= _PILOT_SAMPLES or n <= 8 * n_neighbors:
        return default
    # A fixed seed keeps the fit deterministic; the sample only sets a work size.
    sample = np.random.default_rng(0).choice(n_query, size=_PILOT_SAMPLES, replace=False)
    euclidean, candidates = tree.kneighbors(Y_query[sample], n_neighbors=8 * n_neighbors)
    exact = _squared_mahalanobis(Y, factors, Y_query[sample], factors_query[sample], candidates)
    kth = np.partition(exact, n_neighbors - 1, axis=1)[:, n_neighbors - 1]
    certified = lower_bounds[sample, None] * euclidean**2 >= kth[:, None]
    # Points that 8 k candidates do not certify count as needing 16 k.
    needed = np.where(certified.any(axis=1), np.argmax(certified, axis=1) + 1, 16 * n_neighbors)
    return max(n_neighbors, int(np.ceil(np.percentile(needed, _PILOT_QUANTILE))))


def mahalanobis_neighbors(
    Y,
    inverse_covariances=None,
    n_neighbors=32,
    *,
    Y_query=None,
    inverse_covariances_query=None,
    n_candidates=None,
    tree=None,
    n_jobs=None,
):
    """Find the k nearest neighbours under the Mahalanobis distance d_M.

    Parameters
    ----------
    Y : ndarray of shape (n, m)
        Indexed points.
    inverse_covariances : ndarray of shape (n, m, m) or None
        Metric of each indexed point. None gives Euclidean neighbours.
    n_neighbors : int
        Number of neighbours k per query point, at most n. When the query points are the indexed
        points, each point is its own first neighbour at distance 0.
    Y_query : ndarray of shape (n_query, m), default=None
        Query points; None queries the indexed points themselves.
    inverse_covariances_query : ndarray of shape (n_query, m, m), default=None
        Metrics of the query points; required when ``Y_query`` is given with metrics.
    n_candidates : int, default=None
        Initial number of Euclidean candidates per query point; None sets it from a pilot search
        on up to 1000 query points (see the module docstring). It is doubled where the candidate
        set is not certified.
    tree : fitted :class:`sklearn.neighbors.NearestNeighbors`, default=None
        A Euclidean index of ``Y`` to reuse.
    n_jobs : int, default=None
        Threads for the Euclidean search.

    Returns
    -------
    distances_sq : ndarray of shape (n_query, k)
        Squared distances d^2, ascending along each row.
    indices : ndarray of shape (n_query, k)
        Indices into ``Y``.
    """
    n = Y.shape[0]
    if not 1 <= n_neighbors <= n:
        raise ValueError(f"n_neighbors={n_neighbors} must lie in [1, {n}], the number of indexed points.")
    self_query = Y_query is None
    if self_query:
        Y_query, inverse_covariances_query = Y, inverse_covariances
    if tree is None:
        tree = NearestNeighbors(n_jobs=n_jobs).fit(Y)

    if inverse_covariances is None:
        distances, indices = tree.kneighbors(Y_query, n_neighbors=n_neighbors)
        return distances**2, indices
    if inverse_covariances_query is None:
        raise ValueError("inverse_covariances_query is required when the indexed points have metrics.")

    factors, lower_bounds = _metric_factors(inverse_covariances)
    index_bound = lower_bounds.min()
    if not self_query:
        factors_query, lower_bounds = _metric_factors(inverse_covariances_query)
    else:
        factors_query = factors
    lower_bounds = lower_bounds + index_bound
    n_query = Y_query.shape[0]
    distances_sq = np.empty((n_query, n_neighbors))
    indices = np.empty((n_query, n_neighbors), dtype=np.intp)
    pending = np.arange(n_query)
    if n_candidates is None:
        n_candidates = _pilot_candidate_count(Y, factors, Y_query, factors_query, lower_bounds, n_neighbors, tree)
    n_cand = min(n, n_candidates)
    while pending.size:
        euclidean, candidates = tree.kneighbors(Y_query[pending], n_neighbors=n_cand)
        exact = _squared_mahalanobis(Y, factors, Y_query[pending], factors_query[pending], candidates)
        order = np.argsort(exact, axis=1, kind="stable")[:, :n_neighbors]
        kth = np.take_along_axis(exact, order[:, -1:], axis=1)[:, 0]
        certified = (n_cand >= n) | (lower_bounds[pending] * euclidean[:, -1] ** 2 >= kth)
        done = pending[certified]
        distances_sq[done] = np.take_along_axis(exact, order, axis=1)[certified]
        indices[done] = np.take_along_axis(candidates, order, axis=1)[certified]
        pending = pending[~certified]
        n_cand = min(n, 2 * n_cand)

    if self_query:
        # A point is at distance 0 from itself; put it first even when duplicates tie with it.
        rows = np.arange(n_query)
        is_self = indices == rows[:, None]
        has_self = is_self.any(axis=1)
        first = np.argmax(is_self, axis=1)
        swap = has_self & (first > 0)
        r = rows[swap]
        indices[r, first[swap]] = indices[r, 0]
        distances_sq[r, first[swap]] = distances_sq[r, 0]
        indices[r, 0] = r
        distances_sq[r, 0] = 0.0
    return distances_sq, indices


def median_bandwidth(distances_sq, bandwidth_neighbor=10):
    """Compute eps as the median squared distance to the ``bandwidth_neighbor``-th neighbour.

    Parameters
    ----------
    distances_sq : ndarray of shape (n, k)
        Squared neighbour distances of each point, ascending, the point itself first (column 0).
    bandwidth_neighbor : int, default=10
        Which neighbour, not counting the point itself.

    Returns
    -------
    epsilon : float
    """
    if bandwidth_neighbor >= distances_sq.shape[1]:
        raise ValueError(
            f"bandwidth_neighbor={bandwidth_neighbor} needs at least {bandwidth_neighbor + 1} "
            f"neighbours per point, but only {distances_sq.shape[1]} were computed; raise "
            "n_neighbors or lower bandwidth_neighbor."
        )
    epsilon = float(np.median(distances_sq[:, bandwidth_neighbor]))
    if not epsilon > 0.0:
        raise ValueError(
            f"the median squared distance to the {bandwidth_neighbor}th neighbour is {epsilon}: "
            f"most points have more than {bandwidth_neighbor} duplicates. Remove duplicate points "
            "or pass epsilon explicitly."
        )
    return epsilon


def kernel_matrix(distances_sq, indices, epsilon, n_columns=None):
    """Build the sparse kernel exp(-d^2 / (2 eps)) on the neighbour graph.

    Parameters
    ----------
    distances_sq, indices : ndarray of shape (n_rows, k)
        Output of :func:`mahalanobis_neighbors`.
    epsilon : float
        Bandwidth; note the factor 2 in the exponent's denominator.
    n_columns : int, default=None
        Number of indexed points. None means the rows are the indexed points themselves, and the
        matrix is symmetrised: k_ij is kept when j is a neighbour of i or i of j. d_M^2 is
        symmetric in i and j, so both directions carry the same value.

    Returns
    -------
    kernel : scipy.sparse.csr_matrix of shape (n_rows, n_columns)
    """
    values = np.exp(-distances_sq / (2.0 * epsilon))
    kernel = row_graph(values, indices, indices.shape[0] if n_columns is None else n_columns)
    if n_columns is None:
        kernel = kernel.maximum(kernel.T).tocsr()
    kernel.eliminate_zeros()
    return kernel


def check_connected(indices, n_neighbors_name="n_neighbors"):
    """Raise when the symmetrised neighbour graph has more than one connected component."""
    n = indices.shape[0]
    graph = row_graph(np.ones(indices.shape, dtype=np.int8), indices, n)
    n_components, labels = connected_components(graph, directed=False)
    if n_components > 1:
        sizes = np.bincount(labels)
        raise ValueError(
            f"the k-nearest-neighbour graph has {n_components} connected components (sizes "
            f"{sorted(sizes.tolist(), reverse=True)[:5]}); the diffusion map needs one. Raise "
            f"{n_neighbors_name} or sample the manifold more densely."
        )


def row_graph(values, indices, n_columns):
    """Build the CSR matrix whose row i contains ``values[i]`` at the columns ``indices[i]``.

    The indices of one row are distinct neighbours, so the arrays become the CSR arrays directly.
    """
    n_rows, k = indices.shape
    indptr = np.arange(0, n_rows * k + 1, k)
    return sparse.csr_matrix((values.ravel(), indices.ravel(), indptr), shape=(n_rows, n_columns))


def warn_duplicates(distances_sq, stacklevel=3):
    """Warn when some points coincide with a neighbour (zero distance to a point other than self)."""
    duplicates = int(np.count_nonzero(distances_sq[:, 1] == 0.0)) if distances_sq.shape[1] > 1 else 0
    if duplicates:
        warnings.warn(
            f"{duplicates} point(s) coincide with another point under the metric; duplicates "
            "weigh twice in the kernel density. Remove them if they are not intended.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
