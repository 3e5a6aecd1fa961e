r"""Diffusion maps with a Mahalanobis metric (Algorithm 1 of Bertalan, Dietrich and Kevrekidis).

Given activations y_i of a network's selected neurons and local metrics C_i (see
:mod:`netequiv.local_metric`), the estimator

1. builds the sparse kernel k_ij = exp(-d_M^2(y_i, y_j) / (2 eps)) on a k-nearest-neighbour
   graph, with d_M^2 = (y_i - y_j)^T (C_i + C_j) (y_i - y_j) (:mod:`netequiv.kernels`);
2. removes the sampling density (alpha = 1): W = P^-1 K P^-1, P = diag(K 1);
3. conjugates to the symmetric matrix S = Q^-1/2 W Q^-1/2, Q = diag(W 1), and computes its
   leading eigenpairs (a_k, v_k);
4. returns phi_k = Q^-1/2 v_k, without the trivial (constant) eigenvector and, optionally,
   without harmonics (:mod:`netequiv.harmonics`).

Because C_i is the pull-back of the input manifold's metric, the kernel, and so the embedding, is
the same for every observation map of that manifold: the embedding depends on the manifold, not
on the network that observed it.

Scale conventions
-----------------
- Eigenvectors are normalised so that ``sum_i Q_i phi_k(i)^2 / sum_i Q_i = 1``. With alpha = 1,
  Q_i is proportional to the inverse sampling density, so this approximates the mean of
  phi_k^2 over the manifold's volume, whatever the sample size and density: on [0, 1] the first
  coordinate approximates sqrt(2) cos(pi x).
- Signs are fixed so that the entry of largest magnitude of each phi_k is positive.
- ``laplacian_eigenvalues_`` estimates the Laplace-Beltrami eigenvalues mu_k in the units of the
  metric. The kernel is a Gaussian of variance eps / s in manifold coordinates, where s = 2 with
  metrics (d_M^2 is about 2 |dx|^2 for C = pinv(J J^T)) and s = 1 without, and the normalised
  operator is about exp((eps / (2 s)) Laplacian), so mu_k = -2 s ln(a_k) / eps.
  NOTE: the k-nearest-neighbour graph truncates the Gaussian (at 32 neighbours on a surface, where
  it is still about 0.2 of its peak), which biases mu_k low: about half of pi^2 on the unit square.
  Two embeddings made with the same settings share the bias, so their ratios stay comparable.
"""

import logging
import numbers
import time
import warnings

import numpy as np
from scipy import linalg
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .eigensolvers import EigensolverNoConvergence, chebyshev_eigsh, rayleigh_ritz, relative_residuals
from .extension import INTERPOLATION_METHODS, Interpolator
from .harmonics import local_linear_residuals, select_non_harmonic
from .kernels import (
    check_connected,
    kernel_matrix,
    mahalanobis_neighbors,
    median_bandwidth,
    row_graph,
    warn_duplicates,
)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(estimator, X, reset=True, **kwargs):
        return estimator._validate_data(X, reset=reset, **kwargs)


__all__ = ["MahalanobisDiffusionMap", "check_inverse_covariances"]

logger = logging.getLogger("netequiv")

# Problems up to this size use the dense eigensolver when eigen_solver="auto".
DENSE_SOLVER_MAX_SAMPLES = 1000

# mode="auto" fits every point up to this size and switches to landmarks above it.
EXACT_MODE_MAX_SAMPLES = 200_000

# Landmarks used when n_landmarks is None: this many, or every point when there are fewer.
DEFAULT_N_LANDMARKS = 50_000

# ARPACK multiplies in float32 when eigen_tol is at least this, because float32 round-off (about
# 6e-8 relative) then stays below the requested accuracy.
SINGLE_PRECISION_MIN_TOL = 1e-7

# Smallest eigen_tol handed to the Chebyshev solver. float64 round-off in the products stops it
# just below 1e-12, so eigen_tol=0 (machine precision, as for ARPACK) becomes this value.
CHEBYSHEV_MIN_TOL = 1e-12

# Lanczos basis size for ARPACK. For 11 eigenpairs of the 100,000-point kernel of
# benchmarks/dmap_scaling.py, 40 took the fewest seconds of 24, 40, 60 and 100, and 24 (scipy's
# default of 2 k + 1 is 23) needed 40% more products.
ARPACK_MIN_NCV = 40


def check_inverse_covariances(inverse_covariances, n_samples, n_features, name="inverse_covariances"):
    """Validate a stack of metrics: shape (n, m, m), finite, symmetric, no zero matrix.

    Returns the symmetrised float64 array.
    """
    C = np.asarray(inverse_covariances, dtype=float)
    if C.shape != (n_samples, n_features, n_features):
        raise ValueError(
            f"{name} has shape {C.shape}; expected ({n_samples}, {n_features}, {n_features}): one "
            "m x m metric per row of the activations."
        )
    if not np.all(np.isfinite(C)):
        bad = np.argwhere(~np.isfinite(C))[0][0]
        raise ValueError(f"{name} contains NaN or infinite values (first at point {bad}); recompute that metric.")
    C = 0.5 * (C + np.swapaxes(C, 1, 2))
    traces = np.trace(C, axis1=1, axis2=2)
    zero = np.flatnonzero(traces <= 0.0)
    if zero.size:
        raise ValueError(
            f"{name} is zero or negative at {zero.size} point(s) (first at point {zero[0]}): the "
            "selected neurons do not vary there, so no distance can be measured. Select other "
            "neurons or drop those points."
        )
    return C


class MahalanobisDiffusionMap(TransformerMixin, BaseEstimator):
    """Diffusion map with a Mahalanobis metric, as a scikit-learn transformer.

    Parameters
    ----------
    n_components : int, default=2
        Number of embedding coordinates l.
    n_neighbors : int, default=32
        Neighbours per point in the sparse kernel, the point itself included. Clipped to the
        number of samples.
    epsilon : "median" or float, default="median"
        Kernel bandwidth; the kernel is exp(-d^2 / (2 eps)). "median" sets eps to the median over
        points of the squared distance to the ``bandwidth_neighbor``-th neighbour.
    bandwidth_neighbor : int, default=10
        Which neighbour the median rule uses (the point itself not counted).
    remove_harmonics : bool, default=False
        Keep only eigenvectors that are not functions of earlier ones.
    harmonic_threshold : float, default=0.1
        An eigenvector is a harmonic when its local linear regression residual is at most this.
    n_eigenvectors : int, default=None
        Non-trivial eigenvectors computed to choose from when removing harmonics; None uses
        ``max(3 * n_components, n_components + 6)``.
    eigen_solver : {"auto", "dense", "arpack", "chebyshev"}, default="auto"
        "dense" uses LAPACK on the full matrix, "arpack" the sparse Lanczos solver, "chebyshev"
        the Chebyshev-filtered block solver of :mod:`netequiv.eigensolvers` (about 3x faster than
        ARPACK at 100,000 samples). "auto" picks dense up to 1000 samples and chebyshev above.
        A Chebyshev solve that does not converge falls back to ARPACK with a warning.
    eigen_tol : float, default=1e-7
        Relative residual ``|S v - a v| / |a|`` targeted by the sparse solvers. 0 means machine
        precision for ARPACK, and the Chebyshev solver targets no less than 1e-12. Both multiply
        in float32 while that suffices and check the result in float64. A loose tolerance
        (1e-3, say) can return a later eigenpair in place of an earlier one when their
        eigenvalues lie closer than the tolerance. ARPACK repeats its solve in float64, with a
        warning, when a residual exceeds ``10 * eigen_tol``.
    n_candidates : int, default=None
        Initial Euclidean candidates per point for the Mahalanobis neighbour search; see
        :func:`netequiv.kernels.mahalanobis_neighbors`.
    inverse_transform_method : {"nearest", "linear", "rbf"}, default="linear"
        Interpolation used by :meth:`inverse_transform`; see :mod:`netequiv.extension`.
    mode : {"auto", "exact", "landmark"}, default="auto"
        "exact" builds the kernel on every point. "landmark" builds it on ``n_landmarks`` points
        drawn at random, each weighted by the points of its Voronoi cell (``landmark_weights_``),
        and extends the embedding to every point by the Nystrom formula of :meth:`transform`.
        "auto" picks exact up to 200,000 samples and logs its choice to the ``netequiv`` logger;
        ``mode_`` stores it.
    n_landmarks : int, default=None
        Landmarks in landmark mode; None uses 50,000 (every point when there are fewer).
    n_jobs : int, default=None
        Threads for the neighbour search.
    random_state : int, RandomState instance or None, default=None
        Seeds the ARPACK start vector, the landmark draw and the harmonic-removal subsample.

    Attributes
    ----------
    embedding_ : ndarray of shape (n_samples, n_components)
        The coordinates phi of the training points.
    eigenvalues_ : ndarray of shape (n_components,)
        Eigenvalues a_k of the kept coordinates, as computed (in (0, 1]).
    rescaled_eigenvalues_ : ndarray of shape (n_components,)
        ``a_k ** (1 / (2 eps))``.
    laplacian_eigenvalues_ : ndarray of shape (n_components,)
        Laplace-Beltrami eigenvalue estimates mu_k; see the module docstring.
    all_eigenvalues_ : ndarray
        Every computed eigenvalue, the trivial one first.
    eigen_residuals_ : ndarray
        Relative residual ``|S v_k - a_k v_k| / |a_k|`` of each computed eigenpair of the
        symmetric matrix S, in float64, in the order of ``all_eigenvalues_``.
    component_indices_ : ndarray of shape (n_components,)
        Positions of the kept coordinates among the non-trivial eigenvectors (0 is the first).
    harmonic_residuals_ : ndarray or None
        Local linear regression residual of each non-trivial eigenvector, when harmonics were
        removed.
    epsilon_ : float
        The bandwidth used.
    n_neighbors_ : int
        The neighbour count used.
    kernel_row_sums_ : ndarray of shape (n_samples,)
        P_i, the kernel density estimate at each training point. In landmark mode it sums the
        kernel over landmarks, each weighted by its Voronoi cell.
    mode_ : {"exact", "landmark"}
        The mode used.
    landmark_indices_ : ndarray or None
        Rows of X used as landmarks, ascending; None in exact mode.
    landmark_weights_ : ndarray or None
        Number of training points whose nearest landmark (under the metric) is each landmark,
        its Voronoi cell. Every kernel sum over landmarks weighs a landmark by its cell, so the
        landmark graph approximates the kernel over all points. None in exact mode.
    n_features_in_ : int

    References
    ----------
    T. Bertalan, F. Dietrich and I. G. Kevrekidis, "Transformations between deep neural
    networks", arXiv:2007.05646, 2021.

    R. R. Coifman and S. Lafon, "Diffusion maps", Applied and Computational Harmonic Analysis
    21(1), 2006.

    Examples
    --------
    >>> import numpy as np
    >>> from netequiv import MahalanobisDiffusionMap
    >>> x = np.linspace(0, 1, 400)[:, None]
    >>> dmap = MahalanobisDiffusionMap(n_components=2, random_state=0)
    >>> phi = dmap.fit_transform(x)
    >>> bool(abs(np.corrcoef(phi[:, 0], np.cos(np.pi * x[:, 0]))[0, 1]) > 0.999)
    True
    """

    _parameter_constraints = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(numbers.Integral, 2, None, closed="left")],
        "epsilon": [StrOptions({"median"}), Interval(numbers.Real, 0, None, closed="neither")],
        "bandwidth_neighbor": [Interval(numbers.Integral, 1, None, closed="left")],
        "remove_harmonics": ["boolean"],
        "harmonic_threshold": [Interval(numbers.Real, 0, 1, closed="both")],
        "n_eigenvectors": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "eigen_solver": [StrOptions({"auto", "dense", "arpack", "chebyshev"})],
        "eigen_tol": [Interval(numbers.Real, 0, None, closed="left")],
        "n_candidates": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "inverse_transform_method": [StrOptions(set(INTERPOLATION_METHODS))],
        "mode": [StrOptions({"auto", "exact", "landmark"})],
        "n_landmarks": [Interval(numbers.Integral, 3, None, closed="left"), None],
        "n_jobs": [numbers.Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=2,
        *,
        n_neighbors=32,
        epsilon="median",
        bandwidth_neighbor=10,
        remove_harmonics=False,
        harmonic_threshold=0.1,
        n_eigenvectors=None,
        eigen_solver="auto",
        eigen_tol=1e-7,
        n_candidates=None,
        inverse_transform_method="linear",
        mode="auto",
        n_landmarks=None,
        n_jobs=None,
        random_state=None,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.epsilon = epsilon
        self.bandwidth_neighbor = bandwidth_neighbor
        self.remove_harmonics = remove_harmonics
        self.harmonic_threshold = harmonic_threshold
        self.n_eigenvectors = n_eigenvectors
        self.eigen_solver = eigen_solver
        self.eigen_tol = eigen_tol
        self.n_candidates = n_candidates
        self.inverse_transform_method = inverse_transform_method
        self.mode = mode
        self.n_landmarks = n_landmarks
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    def fit(self, X, y=None, inverse_covariances=None):
        """Compute the embedding of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Activations of the selected neurons.
        y : None
            Ignored.
        inverse_covariances : array-like of shape (n_samples, n_features, n_features), default=None
            The metric C_i of each sample. None gives an ordinary (Euclidean) diffusion map.

        Returns
        -------
        self : MahalanobisDiffusionMap
        """
        self._validate_params()
        X = _validate_data(self, X, reset=True, dtype=np.float64, ensure_min_samples=1)
        n, m = X.shape
        n_vectors = self._n_vectors()
        if n < n_vectors + 2:
            raise ValueError(
                f"n_samples={n} is too few for {n_vectors} embedding coordinate(s); at least "
                f"{n_vectors + 2} samples are needed."
            )
        C = None
        if inverse_covariances is not None:
            C = check_inverse_covariances(inverse_covariances, n, m)

        mode = self._choose_mode(n)
        if mode == "landmark":
            landmarks = self._choose_landmarks(n, n_vectors)
            X_graph = X[landmarks]
            C_graph = None if C is None else C[landmarks]
            # Every point's neighbours among the landmarks serve twice: the nearest landmark
            # gives each landmark the weight of its Voronoi cell, and the rest extend the embedding.
            start = time.perf_counter()
            landmark_tree = NearestNeighbors(n_jobs=self.n_jobs).fit(X_graph)
            query = mahalanobis_neighbors(
                X_graph,
                C_graph,
                min(self.n_neighbors, landmarks.size),
                Y_query=X,
                inverse_covariances_query=C,
                n_candidates=self.n_candidates,
                tree=landmark_tree,
                n_jobs=self.n_jobs,
            )
            _log_stage("landmark neighbours", start)
            weights = _cell_weights(query[1][:, 0], landmarks)
        else:
            landmarks, landmark_tree, weights = None, None, None
            X_graph, C_graph = X, C
        graph = self._fit_graph(X_graph, C_graph, n_vectors, weights=weights, tree=landmark_tree)
        eigenvalues = graph["eigenvalues"]
        epsilon = graph["epsilon"]

        nontrivial = graph["phi"][:, 1:]
        if self.remove_harmonics:
            residuals = local_linear_residuals(nontrivial, random_state=self.random_state)
            selected = select_non_harmonic(residuals, self.n_components, self.harmonic_threshold)
            if selected.size < self.n_components:
                warnings.warn(
                    f"only {selected.size} of the {nontrivial.shape[1]} computed eigenvectors are not "
                    f"harmonics (residual > {self.harmonic_threshold}), fewer than n_components="
                    f"{self.n_components}; the embedding has {selected.size} coordinate(s). Raise "
                    "n_eigenvectors, or the manifold has fewer dimensions than requested.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self.harmonic_residuals_ = residuals
        else:
            selected = np.arange(self.n_components)
            self.harmonic_residuals_ = None

        self.mode_ = mode
        self.component_indices_ = selected
        self.all_eigenvalues_ = eigenvalues
        self.eigen_residuals_ = graph["residuals"]
        self.eigenvalues_ = eigenvalues[1:][selected]
        if np.any(self.eigenvalues_ <= 0.0):
            warnings.warn(
                f"{np.count_nonzero(self.eigenvalues_ <= 0.0)} of the {self.eigenvalues_.size} "
                f"embedding eigenvalues are not positive (smallest {self.eigenvalues_.min():.3g}): "
                "those coordinates oscillate from point to point, and their rescaled and Laplacian "
                "eigenvalues are NaN. Lower n_components or give more samples.",
                RuntimeWarning,
                stacklevel=2,
            )
        scale = 2.0 if C is not None else 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            self.rescaled_eigenvalues_ = self.eigenvalues_ ** (1.0 / (2.0 * epsilon))
            self.laplacian_eigenvalues_ = -2.0 * scale * np.log(self.eigenvalues_) / epsilon
        self.epsilon_ = epsilon
        self.n_neighbors_ = graph["n_neighbors"]
        self.X_fit_ = X
        self.inverse_covariances_ = C
        graph_embedding = nontrivial[:, selected]

        if mode == "landmark":
            # Step 5 (landmark mode): extend the landmark embedding to every point by Nystrom.
            start = time.perf_counter()
            self._landmark_tree = landmark_tree
            self.tree_ = NearestNeighbors(n_jobs=self.n_jobs).fit(X)
            embedding, density = self._extend(*query, graph_embedding, graph["row_sums"], weights)
            _log_stage("extension", start)
            embedding[landmarks] = graph_embedding
            density[landmarks] = graph["row_sums"]
            self.landmark_indices_ = landmarks
            self.landmark_weights_ = weights
            self.embedding_ = embedding
            self.kernel_row_sums_ = density
        else:
            self.landmark_indices_ = None
            self.landmark_weights_ = None
            self.tree_ = graph["tree"]
            self.embedding_ = graph_embedding
            self.kernel_row_sums_ = graph["row_sums"]
        self.inverse_interpolator_ = Interpolator(method=self.inverse_transform_method).fit(
            self.embedding_, X
        )
        return self

    def _choose_mode(self, n):
        if self.mode != "auto":
            return self.mode
        mode = "exact" if n <= EXACT_MODE_MAX_SAMPLES else "landmark"
        # Landmark mode approximates, so it is announced; exact mode is logged for debugging only.
        logger.log(
            logging.INFO if mode == "landmark" else logging.DEBUG,
            "MahalanobisDiffusionMap: mode='auto' chose %r for %d samples (landmarks above %d).",
            mode,
            n,
            EXACT_MODE_MAX_SAMPLES,
        )
        return mode

    def _choose_landmarks(self, n, n_vectors):
        """Draw the landmark rows uniformly at random, sorted; alpha = 1 removes their density."""
        n_landmarks = DEFAULT_N_LANDMARKS if self.n_landmarks is None else self.n_landmarks
        n_landmarks = min(n, n_landmarks)
        if n_landmarks < n_vectors + 2:
            raise ValueError(
                f"n_landmarks={n_landmarks} is too few for {n_vectors} embedding coordinate(s); at "
                f"least {n_vectors + 2} are needed. Raise n_landmarks."
            )
        rng = check_random_state(self.random_state)
        return np.sort(rng.choice(n, size=n_landmarks, replace=False))

    def _fit_graph(self, X, C, n_vectors, weights=None, tree=None):
        """Run steps 1 to 4 of the diffusion map on the points X with metrics C.

        ``weights`` (landmark mode) counts the points each row represents. Every sum over points
        then weighs row j by w_j, as if w_j points sat at X[j]; None means all ones.
        """
        n = X.shape[0]
        w = np.ones(n) if weights is None else weights

        # Step 1: neighbours, bandwidth and kernel.
        start = time.perf_counter()
        k = min(self.n_neighbors, n)
        if tree is None:
            tree = NearestNeighbors(n_jobs=self.n_jobs).fit(X)
        distances_sq, indices = mahalanobis_neighbors(
            X, C, k, n_candidates=self.n_candidates, tree=tree, n_jobs=self.n_jobs
        )
        start = _log_stage("neighbours", start)
        check_connected(indices)
        warn_duplicates(distances_sq, stacklevel=4)
        if self.epsilon == "median":
            neighbor = min(self.bandwidth_neighbor, k - 1)
            if neighbor < self.bandwidth_neighbor:
                warnings.warn(
                    f"bandwidth_neighbor={self.bandwidth_neighbor} is not below the neighbour count "
                    f"{k}; using neighbour {neighbor} for the bandwidth.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            epsilon = median_bandwidth(distances_sq, neighbor)
        else:
            epsilon = float(self.epsilon)
        kernel = kernel_matrix(distances_sq, indices, epsilon)
        del distances_sq, indices

        # Step 2: alpha = 1 normalisation W = P^-1 K P^-1 removes the sampling density, with
        # P = K w. Entries are scaled in place by (s_i * s_j), a product that is the same for
        # (i, j) and (j, i), so W and S stay exactly symmetric.
        rows = np.repeat(np.arange(n, dtype=kernel.indices.dtype), np.diff(kernel.indptr))
        row_sums = kernel @ w
        inv_p = 1.0 / row_sums
        kernel.data *= inv_p[rows] * inv_p[kernel.indices]
        q = kernel @ w

        # Step 3: the Markov matrix Q^-1 W D_w is similar to the symmetric
        # S = (D_w Q^-1)^1/2 W (D_w Q^-1)^1/2, which gives its leading eigenpairs.
        scale = np.sqrt(w / q)
        kernel.data *= scale[rows] * scale[kernel.indices]
        symmetric = kernel
        del kernel, rows
        start = _log_stage("kernel", start)
        eigenvalues, eigenvectors, residuals = self._eigenpairs(symmetric, n_vectors + 1)
        _log_stage("eigensolver", start)

        # Step 4: phi = (D_w Q)^-1/2 v, normalised to unit mean square over the manifold (each
        # point weighted by w q), signs fixed.
        phi = eigenvectors / np.sqrt(w * q)[:, None] * np.sqrt((w * q).sum())
        largest = np.argmax(np.abs(phi), axis=0)
        phi *= np.sign(phi[largest, np.arange(phi.shape[1])])
        return {
            "tree": tree,
            "epsilon": epsilon,
            "n_neighbors": k,
            "row_sums": row_sums,
            "eigenvalues": eigenvalues,
            "residuals": residuals,
            "phi": phi,
        }

    def fit_transform(self, X, y=None, inverse_covariances=None):
        """Compute the embedding of X and return it; see :meth:`fit`."""
        return self.fit(X, y, inverse_covariances=inverse_covariances).embedding_

    def _n_vectors(self):
        if not self.remove_harmonics:
            return self.n_components
        if self.n_eigenvectors is not None:
            return max(self.n_eigenvectors, self.n_components)
        return max(3 * self.n_components, self.n_components + 6)

    def _eigenpairs(self, symmetric, n_eig):
        """Return the n_eig largest eigenpairs of S, descending, and their relative residuals."""
        n = symmetric.shape[0]
        solver = self.eigen_solver
        if solver == "auto":
            solver = "dense" if n <= DENSE_SOLVER_MAX_SAMPLES else "chebyshev"
        if solver in ("arpack", "chebyshev") and n_eig >= n - 1:
            solver = "dense"
        if solver == "chebyshev":
            try:
                return chebyshev_eigsh(
                    symmetric, n_eig, tol=max(self.eigen_tol, CHEBYSHEV_MIN_TOL), random_state=self.random_state
                )
            except EigensolverNoConvergence as error:
                warnings.warn(
                    f"{error} Falling back to ARPACK for {n} samples.", RuntimeWarning, stacklevel=4
                )
                solver = "arpack"
        if solver == "arpack":
            try:
                values, vectors = self._arpack(symmetric, n_eig)
            except ArpackNoConvergence:
                warnings.warn(
                    f"ARPACK did not converge for {n} samples; falling back to the dense solver, "
                    "which needs n x n memory.",
                    RuntimeWarning,
                    stacklevel=4,
                )
                solver = "dense"
        if solver == "dense":
            values, vectors = linalg.eigh(symmetric.toarray(), subset_by_index=[n - n_eig, n - 1])
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        return values, vectors, relative_residuals(symmetric, values, vectors)

    def _arpack(self, symmetric, n_eig):
        """Run ARPACK (Lanczos) for the largest eigenvalues of S.

        With ``eigen_tol >= SINGLE_PRECISION_MIN_TOL`` the products S v are computed in float32,
        about twice as fast as float64, and the Ritz vectors are then refined by one float64
        Rayleigh-Ritz step. When a float64 residual ``|S v - a v| / |a|`` still exceeds
        ``10 * eigen_tol``, the solve is repeated in float64 with a warning.
        """
        n = symmetric.shape[0]
        rng = check_random_state(self.random_state)
        v0 = rng.uniform(-1.0, 1.0, size=n)
        ncv = min(n, max(2 * n_eig + 1, ARPACK_MIN_NCV))
        single = self.eigen_tol >= SINGLE_PRECISION_MIN_TOL
        operator = _single_precision_operator(symmetric) if single else symmetric
        # ARPACK's dense steps act on n x ncv blocks and are memory bound. One BLAS thread made
        # this call 3x faster than two on a 2-core machine shared with other jobs.
        # NOTE: not measured on an idle machine with many cores, where more threads may help.
        with threadpool_limits(limits=1, user_api="blas"):
            values, vectors = eigsh(operator, k=n_eig, which="LA", v0=v0, tol=self.eigen_tol, ncv=ncv)
        if not single:
            return values, vectors
        values, vectors = rayleigh_ritz(symmetric, vectors)
        worst = float(relative_residuals(symmetric, values, vectors).max())
        if worst <= 10.0 * self.eigen_tol:
            return values, vectors
        warnings.warn(
            f"the float32 ARPACK solve reached a relative residual of {worst:.1e}, above "
            f"10 * eigen_tol = {10.0 * self.eigen_tol:.1e}; repeating it in float64.",
            RuntimeWarning,
            stacklevel=5,
        )
        with threadpool_limits(limits=1, user_api="blas"):
            return eigsh(symmetric, k=n_eig, which="LA", v0=vectors.sum(axis=1), tol=self.eigen_tol, ncv=ncv)

    # ---------------------------------------------------------- transforms

    def transform(self, X, inverse_covariances=None):
        """Embed new points by the Nystrom extension.

        Each new point's kernel row k(y, y_j) to its training neighbours is normalised exactly as
        the training rows (alpha = 1, then to a Markov row m_j), and
        ``phi_k(y) = sum_j m_j phi_k(y_j) / a_k``. In landmark mode the neighbours are landmarks.
        On a training point this equals its embedding only when the point's ``n_neighbors``
        nearest neighbours are its whole kernel row. The symmetrised kernel usually adds a few
        rows, so ``transform(X_fit_)`` differs from ``embedding_`` slightly: by a median of 6e-4
        and at most 2e-2 of each coordinate's largest absolute value on 5,000 points of a
        square. In landmark mode the points that are not landmarks are the exception, because
        their embedding is this extension.

        Parameters
        ----------
        X : array-like of shape (n_new, n_features)
        inverse_covariances : array-like of shape (n_new, n_features, n_features), default=None
            Metrics of the new points. When the estimator was fitted with metrics and none are
            given, each new point uses the metric of its nearest training point (Euclidean), an
            approximation that holds inside the sampled region.

        Returns
        -------
        embedding : ndarray of shape (n_new, n_components)
        """
        check_is_fitted(self, "embedding_")
        X = _validate_data(self, X, reset=False, dtype=np.float64)
        C_new = None
        if self.inverse_covariances_ is not None:
            if inverse_covariances is None:
                nearest = self.tree_.kneighbors(X, n_neighbors=1, return_distance=False)[:, 0]
                C_new = self.inverse_covariances_[nearest]
            else:
                C_new = check_inverse_covariances(inverse_covariances, X.shape[0], X.shape[1])
        embedding, density = self._nystrom(X, C_new, self._graph_state())
        far = density == 0.0
        if np.any(far):
            warnings.warn(
                f"{far.sum()} new point(s) lie too far from every training point for the kernel "
                "(zero weight); their embedding is set to NaN.",
                RuntimeWarning,
                stacklevel=2,
            )
        return embedding

    def _graph_state(self):
        """Return the kernel graph's points, metrics, tree, embedding, row sums P and weights.

        The graph contains every training point in exact mode (weights None, meaning ones) and
        the landmarks in landmark mode. Only public fitted attributes are read (the landmark tree
        is rebuilt when missing), so an estimator restored from them transforms as the fitted
        one did.
        """
        landmarks = getattr(self, "landmark_indices_", None)
        if landmarks is None:
            return self.X_fit_, self.inverse_covariances_, self.tree_, self.embedding_, self.kernel_row_sums_, None
        X = self.X_fit_[landmarks]
        C = None if self.inverse_covariances_ is None else self.inverse_covariances_[landmarks]
        tree = getattr(self, "_landmark_tree", None)
        if tree is None or tree.n_samples_fit_ != len(landmarks):
            tree = NearestNeighbors(n_jobs=self.n_jobs).fit(X)
        weights = getattr(self, "landmark_weights_", None)
        return X, C, tree, self.embedding_[landmarks], self.kernel_row_sums_[landmarks], weights

    def _nystrom(self, X, C_new, graph_state):
        """Extend the graph embedding to X; return it (NaN where the kernel row is zero) and P."""
        graph_X, graph_C, graph_tree, graph_embedding, graph_row_sums, weights = graph_state
        distances_sq, indices = mahalanobis_neighbors(
            graph_X,
            graph_C,
            self.n_neighbors_,
            Y_query=X,
            inverse_covariances_query=C_new,
            n_candidates=self.n_candidates,
            tree=graph_tree,
        )
        return self._extend(distances_sq, indices, graph_embedding, graph_row_sums, weights)

    def _extend(self, distances_sq, indices, graph_embedding, graph_row_sums, weights):
        """Apply the Nystrom formula to query points with graph neighbours ``indices``.

        Returns the embedding (NaN where the kernel row is zero) and the density P of each query
        point. ``weights`` (landmark mode) weighs each graph point by its Voronoi cell.
        """
        kernel = np.exp(-distances_sq / (2.0 * self.epsilon_))
        if weights is not None:
            kernel *= weights[indices]
        density = kernel.sum(axis=1)
        # A point far from every training point has a zero kernel row; nothing can be extended.
        far = density == 0.0
        markov = kernel / (np.where(far, 1.0, density)[:, None] * graph_row_sums[indices])
        markov /= np.maximum(markov.sum(axis=1, keepdims=True), np.finfo(float).tiny)
        # A sparse product avoids the (n_query, k, n_components) array of neighbour embeddings.
        markov_rows = row_graph(markov, indices, graph_embedding.shape[0])
        embedding = (markov_rows @ graph_embedding) / self.eigenvalues_
        embedding[far] = np.nan
        return embedding, density

    def inverse_transform(self, X):
        """Map embedding coordinates back to activations by interpolation.

        Parameters
        ----------
        X : array-like of shape (n_new, n_components)
            Embedding coordinates.

        Returns
        -------
        activations : ndarray of shape (n_new, n_features)
            Interpolated with ``inverse_transform_method`` from the training pairs
            (embedding_, X).
        """
        check_is_fitted(self, "embedding_")
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.embedding_.shape[1]:
            raise ValueError(
                f"X has shape {X.shape}; expected (n_new, {self.embedding_.shape[1]}) embedding "
                "coordinates."
            )
        return self.inverse_interpolator_.predict(X)


def _cell_weights(nearest, landmarks):
    """Count the points whose nearest landmark is each landmark (its Voronoi cell), at least 1.

    ``nearest`` indexes into ``landmarks``. A landmark belongs to its own cell even when a
    duplicate point ties with it.
    """
    nearest = nearest.copy()
    nearest[landmarks] = np.arange(landmarks.size)
    return np.bincount(nearest, minlength=landmarks.size).astype(float)


def _log_stage(name, start):
    """Log the seconds since ``start`` for one fit stage at DEBUG level; return the time now."""
    now = time.perf_counter()
    logger.debug("stage %s took %.3f s", name, now - start)
    return now


def _single_precision_operator(matrix):
    """Wrap a sparse matrix as a float64 operator whose products are computed in float32."""
    matrix32 = matrix.astype(np.float32)

    def matvec(x):
        return (matrix32 @ x.astype(np.float32)).astype(np.float64)

    return LinearOperator(matrix.shape, matvec=matvec, dtype=np.float64)
