r"""The transformation between two networks (Algorithm 2 of Bertalan, Dietrich and Kevrekidis).

Given activations Y1 of network 1 and Y2 of network 2 on the same input manifold, with their
local metrics, :class:`NetworkTransformation`

1. embeds each with a :class:`~netequiv.MahalanobisDiffusionMap` of the same settings, giving
   phi (network 1) and psi (network 2);
2. finds the orthogonal map O with ``psi = O phi`` from a few corresponding points, or without
   them (:mod:`netequiv.alignment`);
3. inverts psi by interpolation from the network-2 embedding back to the network-2 activations,
   so that ``T = psi^-1 o O o phi`` maps network-1 activations to network-2 activations, and
   ``T^-1 = phi^-1 o O^T o psi`` maps back. New points are embedded by the Nystrom extension.

It then measures how accurate T is (:meth:`~NetworkTransformation.evaluate`), decides whether the
two networks are equivalent on the sampled domain
(:meth:`~NetworkTransformation.equivalence_test`), and locates where T stops being valid along a
path of inputs (:meth:`~NetworkTransformation.breakdown`).

Conventions
-----------
- Rows are points. Embeddings are aligned as ``psi ~ phi @ O.T``.
- Relative errors divide by the spread of the *training* activations of the network predicted:
  ``s = sqrt(mean_i |y_i - mean(y)|^2)`` over all neurons, or each neuron's standard deviation
  for per-neuron errors. A relative RMSE of 0.02 is an RMS error of 2% of that spread.
- The interpolation that inverts an embedding never leaves the range, per neuron, of the values
  at the query's interpolation neighbours. Diffusion-map coordinates are flat at the manifold's
  boundary (Neumann eigenfunctions), so inverting them there is ill-conditioned, and an embedded
  point just beyond the outermost training points would otherwise be extrapolated far off.
"""

import json
import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm
from sklearn.base import BaseEstimator, clone
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .alignment import (
    DEGENERACY_RTOL,
    Alignment,
    _block_procrustes,
    _groups_from_labels,
    _labels_from_groups,
    _relative_residual,
    align_without_correspondences,
    degenerate_groups,
    min_correspondences,
    orthogonal_procrustes,
)
from .diffusion_maps import MahalanobisDiffusionMap, check_inverse_covariances
from .extension import INTERPOLATION_METHODS, Interpolator

__all__ = [
    "NetworkTransformation",
    "TransformationScores",
    "Criterion",
    "EquivalenceResult",
    "BreakdownResult",
]

_FILE_FORMAT = "netequiv.NetworkTransformation"
_FILE_VERSION = 1

# Training points whose round-trip errors set the reference for a point of a breakdown path.
_ROUND_TRIP_NEIGHBORS = 10

# Settings of NetworkTransformation that are passed on to both diffusion maps unchanged.
_DIFFUSION_MAP_PARAMS = (
    "n_components",
    "n_neighbors",
    "epsilon",
    "bandwidth_neighbor",
    "remove_harmonics",
    "harmonic_threshold",
    "n_eigenvectors",
    "eigen_solver",
    "eigen_tol",
    "n_candidates",
    "n_jobs",
    "random_state",
)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class TransformationScores:
    """Held-out errors of a transformation; see the module docstring for the normalisation.

    Attributes
    ----------
    relative_rmse : float
        RMS error of T over all test points and neurons, relative to the network-2 spread.
    relative_rmse_per_neuron : ndarray of shape (m2,)
        Each network-2 neuron's RMS error relative to its standard deviation (NaN for a neuron
        that is constant on the training points).
    relative_error_per_point : ndarray of shape (n_test,)
        ``|T(y1_i) - y2_i|`` relative to the network-2 spread.
    inverse_relative_rmse : float
        RMS error of T^-1 on the network-1 activations, relative to the network-1 spread.
    alignment_residual : float
        ``||phi O^T - psi||_F / ||psi||_F`` on the held-out pairs, phi and psi being their
        Nystrom embeddings.
    """

    relative_rmse: float
    relative_rmse_per_neuron: np.ndarray
    relative_error_per_point: np.ndarray
    inverse_relative_rmse: float
    alignment_residual: float


@dataclass(frozen=True)
class Criterion:
    """One piece of evidence of :meth:`NetworkTransformation.equivalence_test`.

    Attributes
    ----------
    name : str
        ``"spectrum"``, ``"alignment"`` or ``"transformation"``.
    statistic : float
        The observed discrepancy (smaller means closer to equivalent).
    threshold : float
        The tolerance the statistic is compared with.
    p_value : float
        p-value of the statistic under ``null_hypothesis``.
    null_statistics : ndarray
        Draws of the statistic under the null hypothesis, built from the data.
    passed : bool
        Whether this criterion supports equivalence; ``rule`` states when it does.
    null_hypothesis : str
    rule : str
    """

    name: str
    statistic: float
    threshold: float
    p_value: float
    null_statistics: np.ndarray
    passed: bool
    null_hypothesis: str
    rule: str


@dataclass(frozen=True)
class EquivalenceResult:
    """Verdict of :meth:`NetworkTransformation.equivalence_test` and the evidence behind it.

    Attributes
    ----------
    verdict : str
        ``"equivalent"`` or ``"not equivalent"``, on the domain the data sample.
    equivalent : bool
    alpha : float
        Significance level of the three tests.
    criteria : dict of str to Criterion
        ``"spectrum"``, ``"alignment"`` and ``"transformation"``.
    scores : TransformationScores
        The held-out errors of T.
    laplacian_eigenvalues_1, laplacian_eigenvalues_2 : ndarray of shape (K,)
        The compared Laplace-Beltrami eigenvalue estimates.
    spectrum_standard_errors : ndarray of shape (K,)
        Standard errors of ``ln mu1_k - ln mu2_k`` from refits on random subsamples.
    """

    verdict: str
    equivalent: bool
    alpha: float
    criteria: dict
    scores: TransformationScores
    laplacian_eigenvalues_1: np.ndarray
    laplacian_eigenvalues_2: np.ndarray
    spectrum_standard_errors: np.ndarray

    def summary(self):
        """Format the verdict and each criterion as a short plain-text table."""
        lines = [f"verdict: {self.verdict} (alpha = {self.alpha})"]
        for criterion in self.criteria.values():
            status = "pass" if criterion.passed else "FAIL"
            lines.append(
                f"  {criterion.name:<15} {status}  statistic {criterion.statistic:.4g}  "
                f"threshold {criterion.threshold:.4g}  p-value {criterion.p_value:.4g}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class BreakdownResult:
    """Per-point validity scores of a transformation along a path; see :meth:`NetworkTransformation.breakdown`.

    Attributes
    ----------
    scores : ndarray of shape (n_path,)
        ``max(round_trip_errors / round_trip_thresholds, fold_tol / conditioning)`` over the
        available conditioning arrays; a point is broken where its score exceeds 1.
    conditioning_1, conditioning_2 : ndarray of shape (n_path,) or None
        Smallest singular value of each network's Jacobian along the path, relative to its
        median over the path. It is near 0 at a fold, and None when nothing was given to
        compute it.
    round_trip_errors : ndarray of shape (n_path,)
        ``|T^-1(T(y)) - y|`` relative to the network-1 spread (inf where T is undefined).
    broken : ndarray of bool, shape (n_path,)
    first_index : int or None
        First broken point, None when every point is valid.
    fold_index : int or None
        The first fold: the point of lowest conditioning in the first run of consecutive points
        whose conditioning is below ``fold_tol``.
    round_trip_index : int or None
        First point where the round-trip error exceeds its threshold.
    round_trip_thresholds : ndarray of shape (n_path,)
        ``round_trip_tol`` plus the largest round-trip error of the point's nearest network-1
        training points.
    predictions_2 : ndarray of shape (n_path, m2)
        T along the path.
    """

    scores: np.ndarray
    conditioning_1: np.ndarray | None
    conditioning_2: np.ndarray | None
    round_trip_errors: np.ndarray
    broken: np.ndarray
    first_index: int | None
    fold_index: int | None
    round_trip_index: int | None
    round_trip_thresholds: np.ndarray
    predictions_2: np.ndarray = field(repr=False)


# ------------------------------------------------------------------ helpers


def _check_activations(Y, name, n_features=None, min_samples=1):
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2:
        raise ValueError(f"{name} has shape {Y.shape}; expected (n_samples, n_neurons).")
    if n_features is not None and Y.shape[1] != n_features:
        raise ValueError(
            f"{name} has {Y.shape[1]} neuron(s) per row; the transformation was fitted with "
            f"{n_features}. Pass activations of the same selected neurons."
        )
    if Y.shape[0] < min_samples:
        raise ValueError(f"{name} has {Y.shape[0]} row(s); at least {min_samples} are needed.")
    if not np.all(np.isfinite(Y)):
        bad = np.argwhere(~np.isfinite(Y))[0][0]
        raise ValueError(f"{name} contains NaN or infinite values (first in row {bad}); drop or recompute those rows.")
    return Y


def _check_correspondences(correspondences, n1, n2):
    pairs = np.asarray(correspondences)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(
            f"correspondences has shape {pairs.shape}; expected (p, 2): row i of Y1 and row j of "
            "Y2 observed at the same input, one pair per row."
        )
    if pairs.size and not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(f"correspondences has dtype {pairs.dtype}; expected integer row indices.")
    pairs = pairs.astype(np.intp)
    for column, (name, n) in enumerate((("Y1", n1), ("Y2", n2))):
        outside = (pairs[:, column] < 0) | (pairs[:, column] >= n)
        if np.any(outside):
            bad = pairs[np.argmax(outside), column]
            raise ValueError(
                f"correspondences column {column} contains {bad}, not a row of {name} (0 to "
                f"{n - 1}); pass non-negative row indices."
            )
    return pairs


def _spread(Y):
    """Root mean square distance of the rows of Y from their mean."""
    return float(np.sqrt(np.mean(np.sum((Y - Y.mean(axis=0)) ** 2, axis=1))))


def _relative_rmse(predicted, actual, spread):
    return float(np.sqrt(np.mean(np.sum((predicted - actual) ** 2, axis=1))) / spread)


def _laplacian_spectrum(dmap, n_values):
    """Estimate the Laplace-Beltrami eigenvalues of the ``n_values`` leading non-trivial eigenvectors.

    Uses the estimator's own conversion mu = -c ln(a), with c recovered from its kept
    coordinates, so that this function does not restate the bandwidth convention.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        factors = dmap.laplacian_eigenvalues_ / -np.log(dmap.eigenvalues_)
        factor = np.nanmedian(np.where(np.isfinite(factors), factors, np.nan))
        return -factor * np.log(dmap.all_eigenvalues_[1 : n_values + 1])


class _ClippedInverse:
    """Interpolation from embedding coordinates to values at the training points, clipped.

    Each prediction is clipped, per output, to the range of the values at the query's
    interpolation neighbours (see the module docstring). Queries with non-finite coordinates
    (points the Nystrom extension could not embed) give NaN.
    """

    # NOTE: with more coordinates than the manifold has dimensions (l > d), the "linear" and
    # "rbf" fits extrapolate off the embedded manifold; clipping bounds that error, not removes it.

    def __init__(self, method, embedding, values):
        values = np.asarray(values, dtype=float)
        self.value_shape = values.shape[1:]
        self.values = values.reshape(len(values), -1)
        self.interpolator = Interpolator(method=method).fit(embedding, self.values)
        self.n_neighbors = 1 if method == "nearest" else self.interpolator.n_neighbors_
        self.tree = NearestNeighbors().fit(embedding)

    def predict(self, Z):
        finite = np.all(np.isfinite(Z), axis=1)
        result = np.full((len(Z), self.values.shape[1]), np.nan)
        if np.any(finite):
            queries = Z[finite]
            predicted = self.interpolator.predict(queries).reshape(len(queries), -1)
            neighbors = self.tree.kneighbors(queries, n_neighbors=self.n_neighbors, return_distance=False)
            # A loop over the k neighbours, not the points, keeps memory at (n, outputs).
            low = self.values[neighbors[:, 0]].copy()
            high = low.copy()
            for column in range(1, neighbors.shape[1]):
                neighbor_values = self.values[neighbors[:, column]]
                np.minimum(low, neighbor_values, out=low)
                np.maximum(high, neighbor_values, out=high)
            result[finite] = np.clip(predicted, low, high)
        return result.reshape((len(Z),) + self.value_shape)


def _conditioning(jacobians, inverse_covariances, path, n_path, rank, name):
    """Compute the smallest singular value of the Jacobian along a path, over its median there.

    Returns None when neither Jacobians, metrics nor the path are given.
    """
    if jacobians is not None:
        jacobians = np.asarray(jacobians, dtype=float)
        if jacobians.ndim != 3 or jacobians.shape[0] != n_path:
            raise ValueError(
                f"jacobians_{name} has shape {jacobians.shape}; expected ({n_path}, m, d): "
                "one Jacobian per point of the path."
            )
        singular_values = np.linalg.svd(jacobians, compute_uv=False)
        n_values = singular_values.shape[1]
        if rank is not None and not 1 <= rank <= n_values:
            raise ValueError(
                f"rank={rank} is invalid for jacobians_{name} of shape {jacobians.shape}; expected "
                f"the manifold dimension, between 1 and {n_values}."
            )
        smallest = singular_values[:, (rank if rank is not None else n_values) - 1]
    elif inverse_covariances is not None:
        C = np.asarray(inverse_covariances, dtype=float)
        if C.ndim != 3 or C.shape[0] != n_path or C.shape[1] != C.shape[2]:
            raise ValueError(
                f"inverse_covariances_{name} has shape {C.shape}; expected ({n_path}, m, m)."
            )
        eigenvalues = np.linalg.eigvalsh(0.5 * (C + np.swapaxes(C, 1, 2)))
        largest = np.maximum(eigenvalues[:, -1], 0.0)
        # C = pinv(J J^T) has eigenvalues 1 / s_k^2, so its largest is set by the smallest s_k.
        with np.errstate(divide="ignore"):
            smallest = np.where(largest > 0.0, 1.0 / np.sqrt(largest), 0.0)
        # A metric of lower rank than the others (or than `rank`) has lost a direction: a fold
        # where the pseudo-inverse dropped the vanishing singular value instead of inverting it.
        tolerance = C.shape[1] * np.finfo(float).eps * largest[:, None]
        ranks = np.sum(eigenvalues > tolerance, axis=1)
        expected = rank if rank is not None else int(np.median(ranks))
        smallest[ranks < expected] = 0.0
    elif path is not None:
        # Speed along the path: the Jacobian's singular value in the path direction, provided
        # the path is sampled at equal steps of the input.
        smallest = np.linalg.norm(np.gradient(path, axis=0), axis=1)
    else:
        return None
    reference = np.median(smallest[np.isfinite(smallest)])
    if not reference > 0.0:
        raise ValueError(
            f"the median smallest singular value of network {name} along the path is {reference}; "
            "the path does not move through that network's activations."
        )
    return smallest / reference


def _first(mask):
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _first_minimum(values, mask):
    """Return the index of the smallest value in the first run of True entries of mask."""
    start = _first(mask)
    if start is None:
        return None
    stop = _first(~mask[start:])
    stop = len(mask) if stop is None else start + stop
    return start + int(np.argmin(values[start:stop]))


def _min_held_out_pairs(alpha):
    """Return the minimum number of held-out pairs whose permutations can give p <= alpha.

    A random permutation of n pairs is the identity with probability 1 / n!, which bounds the
    p-value from below; n is the smallest with 1 / n! <= alpha / 2, leaving room for the
    other permutations that fit as well as the identity.
    """
    n = 1
    while 1.0 / math.factorial(n) > alpha / 2.0:
        n += 1
    return n


# ---------------------------------------------------------------- estimator


class NetworkTransformation(BaseEstimator):
    """Map the activations of one network to those of another: T = psi^-1 o O o phi.

    Parameters
    ----------
    n_components : int, default=2
        Embedding coordinates l of both diffusion maps.
    n_neighbors, epsilon, bandwidth_neighbor, remove_harmonics, harmonic_threshold, \
n_eigenvectors, eigen_solver, eigen_tol, n_candidates, n_jobs, random_state
        Settings of both :class:`~netequiv.MahalanobisDiffusionMap` instances, with the same
        meaning and defaults, except ``eigen_tol``, whose default here is 1e-10.
        ``random_state`` also seeds alignment without correspondences.
    interpolation : {"nearest", "linear", "rbf"}, default="linear"
        Interpolation that inverts the embeddings (psi^-1 and phi^-1), see
        :mod:`netequiv.extension`, with the result clipped as described in the module docstring.
    degeneracy_tol : float, default=0.1
        Relative tolerance under which two coordinates count as one degenerate eigenspace; see
        :func:`netequiv.alignment.degenerate_groups`.
    proper_rotation : bool, default=False
        Constrain O to rotations (det = +1). The default allows reflections, which sign flips of
        eigenvectors are.

    Attributes
    ----------
    diffusion_map_1_, diffusion_map_2_ : MahalanobisDiffusionMap
        The fitted embeddings phi of Y1 and psi of Y2.
    orthogonal_map_ : ndarray of shape (l, l)
        O, with ``psi ~ phi @ orthogonal_map_.T``.
    alignment_ : Alignment
        The fit of O and its residual on the correspondences.
    coordinate_groups_ : tuple of ndarray
        Degenerate groups of coordinates; O is block diagonal over them.
    min_correspondences_ : int
        The fewest correspondences that determine O for these groups.
    correspondences_ : ndarray of shape (p, 2) or None
    n_features_in_ : int
        Neurons of network 1.
    n_features_out_ : int
        Neurons of network 2.
    spread_1_, spread_2_ : float
        Root mean square deviation of the training activations from their mean.
    neuron_std_2_ : ndarray of shape (m2,)
        Standard deviation of each network-2 neuron on its training points.

    See Also
    --------
    netequiv.MahalanobisDiffusionMap : the embedding of one network.
    netequiv.alignment : orthogonal alignment of two embeddings.

    References
    ----------
    T. Bertalan, F. Dietrich and I. G. Kevrekidis, "Transformations between deep neural
    networks", arXiv:2007.05646, 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from netequiv import NetworkTransformation
    >>> from netequiv.local_metric import metric_from_jacobians
    >>> x = np.linspace(0.0, 1.0, 600)[:, None]
    >>> Y1 = np.hstack([x, x**2]); J1 = np.stack([np.ones_like(x), 2 * x], axis=1)
    >>> Y2 = np.hstack([np.sin(x), np.exp(x)]); J2 = np.stack([np.cos(x), np.exp(x)], axis=1)
    >>> pairs = np.array([[100, 100], [400, 400]])
    >>> T = NetworkTransformation(n_components=1).fit(
    ...     Y1, Y2, inverse_covariances_1=metric_from_jacobians(J1),
    ...     inverse_covariances_2=metric_from_jacobians(J2), correspondences=pairs)
    >>> x_new = np.array([[0.3], [0.6]])
    >>> bool(np.allclose(T.transform(np.hstack([x_new, x_new**2])), np.hstack([np.sin(x_new), np.exp(x_new)]), atol=0.01))
    True
    """

    _parameter_constraints = {
        **MahalanobisDiffusionMap._parameter_constraints,
        "interpolation": [StrOptions(set(INTERPOLATION_METHODS))],
        "degeneracy_tol": [Interval(numbers.Real, 0, None, closed="left")],
        "proper_rotation": ["boolean"],
    }
    _parameter_constraints.pop("inverse_transform_method")

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
        eigen_tol=1e-10,
        n_candidates=None,
        interpolation="linear",
        degeneracy_tol=DEGENERACY_RTOL,
        proper_rotation=False,
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
        self.interpolation = interpolation
        self.degeneracy_tol = degeneracy_tol
        self.proper_rotation = proper_rotation
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    def _new_diffusion_map(self):
        settings = {name: getattr(self, name) for name in _DIFFUSION_MAP_PARAMS}
        return MahalanobisDiffusionMap(inverse_transform_method=self.interpolation, **settings)

    def fit(self, Y1, Y2, inverse_covariances_1=None, inverse_covariances_2=None, correspondences=None):
        """Embed both networks, align the embeddings and build the inverse interpolation.

        Parameters
        ----------
        Y1 : array-like of shape (n1, m1)
            Activations of network 1's selected neurons.
        Y2 : array-like of shape (n2, m2)
            Activations of network 2's selected neurons; the rows need not be the inputs of Y1.
        inverse_covariances_1 : array-like of shape (n1, m1, m1), default=None
            Local metrics of Y1 (:mod:`netequiv.local_metric`). None gives a Euclidean diffusion
            map, which is invariant to the observation map only when it is an isometry.
        inverse_covariances_2 : array-like of shape (n2, m2, m2), default=None
            Local metrics of Y2.
        correspondences : array-like of int, shape (p, 2), default=None
            Row pairs (i, j) where ``Y1[i]`` and ``Y2[j]`` come from the same input. At least
            ``min_correspondences_`` pairs are needed: 1 when all eigenvalues are distinct, and
            the size of the largest degenerate group otherwise. None aligns the embeddings
            without correspondences, assuming Y1 and Y2 sample the same region with the same
            density.

        Returns
        -------
        self : NetworkTransformation

        Raises
        ------
        ValueError
            On inputs of the wrong shape or with NaN, on too few correspondences (the message
            gives the number needed), and when the two embeddings have different numbers of
            coordinates.
        """
        self._validate_params()
        Y1 = _check_activations(Y1, "Y1", min_samples=2)
        Y2 = _check_activations(Y2, "Y2", min_samples=2)
        pairs = None
        if correspondences is not None:
            pairs = _check_correspondences(correspondences, len(Y1), len(Y2))

        # Step 1: one diffusion map per network, with the same settings.
        self.diffusion_map_1_ = self._new_diffusion_map().fit(Y1, inverse_covariances=inverse_covariances_1)
        self.diffusion_map_2_ = self._new_diffusion_map().fit(Y2, inverse_covariances=inverse_covariances_2)
        phi, psi = self.diffusion_map_1_.embedding_, self.diffusion_map_2_.embedding_
        if phi.shape[1] != psi.shape[1]:
            raise ValueError(
                f"network 1 has {phi.shape[1]} embedding coordinate(s) and network 2 has "
                f"{psi.shape[1]}: harmonic removal kept different numbers of eigenvectors. Raise "
                "n_eigenvectors or lower n_components."
            )
        indices_1 = self.diffusion_map_1_.component_indices_
        indices_2 = self.diffusion_map_2_.component_indices_
        if not np.array_equal(indices_1, indices_2):
            warnings.warn(
                f"harmonic removal kept eigenvectors {indices_1.tolist()} of network 1 and "
                f"{indices_2.tolist()} of network 2; isometric manifolds keep the same ones, so "
                "the embeddings may not be related by an orthogonal map.",
                RuntimeWarning,
                stacklevel=2,
            )

        # Step 2: the orthogonal map, block diagonal over degenerate eigenspaces.
        # NOTE: a degenerate eigenspace cut by n_components (a partner eigenvector not kept) is
        # not detected here; the alignment residual then stays large.
        groups = degenerate_groups(
            self.diffusion_map_1_.laplacian_eigenvalues_,
            self.diffusion_map_2_.laplacian_eigenvalues_,
            rtol=self.degeneracy_tol,
        )
        if pairs is not None:
            alignment = orthogonal_procrustes(
                phi[pairs[:, 0]], psi[pairs[:, 1]], groups, proper=self.proper_rotation
            )
        else:
            alignment = align_without_correspondences(
                phi, psi, groups, proper=self.proper_rotation, random_state=self.random_state
            )

        # Step 3: the inverse maps psi^-1 and phi^-1 by interpolation, and the error scales.
        self._set_fitted_state(alignment, pairs)
        return self

    def _set_fitted_state(self, alignment, pairs):
        """Set every attribute derived from the two fitted diffusion maps and the alignment."""
        dmap_1, dmap_2 = self.diffusion_map_1_, self.diffusion_map_2_
        self.alignment_ = alignment
        self.orthogonal_map_ = alignment.orthogonal_map
        self.coordinate_groups_ = alignment.groups
        self.min_correspondences_ = min_correspondences(alignment.groups)
        self.correspondences_ = pairs
        self.n_features_in_ = dmap_1.n_features_in_
        self.n_features_out_ = dmap_2.n_features_in_
        self.spread_1_ = _spread(dmap_1.X_fit_)
        self.spread_2_ = _spread(dmap_2.X_fit_)
        self.neuron_std_2_ = dmap_2.X_fit_.std(axis=0)
        self.inverse_1_ = _ClippedInverse(self.interpolation, dmap_1.embedding_, dmap_1.X_fit_)
        self.inverse_2_ = _ClippedInverse(self.interpolation, dmap_2.embedding_, dmap_2.X_fit_)

    # ------------------------------------------------------------ transforms

    def _embed_1(self, Y1, inverse_covariances=None, name="Y1_new"):
        Y1 = _check_activations(Y1, name, self.n_features_in_)
        return self.diffusion_map_1_.transform(Y1, inverse_covariances=inverse_covariances)

    def _embed_2(self, Y2, inverse_covariances=None, name="Y2_new"):
        Y2 = _check_activations(Y2, name, self.n_features_out_)
        return self.diffusion_map_2_.transform(Y2, inverse_covariances=inverse_covariances)

    def transform(self, Y1_new, inverse_covariances=None):
        """Predict network-2 activations from network-1 activations: T(y) = psi^-1(O phi(y)).

        Parameters
        ----------
        Y1_new : array-like of shape (n_new, m1)
        inverse_covariances : array-like of shape (n_new, m1, m1), default=None
            Metrics of the new points for the Nystrom extension; None uses each point's nearest
            training metric.

        Returns
        -------
        Y2_predicted : ndarray of shape (n_new, m2)
            NaN for points too far from every training point to be embedded.
        """
        check_is_fitted(self, "orthogonal_map_")
        phi = self._embed_1(Y1_new, inverse_covariances)
        return self.inverse_2_.predict(phi @ self.orthogonal_map_.T)

    def inverse_transform(self, Y2_new, inverse_covariances=None):
        """Predict network-1 activations from network-2 activations: phi^-1(O^T psi(y)).

        Parameters
        ----------
        Y2_new : array-like of shape (n_new, m2)
        inverse_covariances : array-like of shape (n_new, m2, m2), default=None
            Metrics of the new points; None uses each point's nearest training metric.

        Returns
        -------
        Y1_predicted : ndarray of shape (n_new, m1)
        """
        check_is_fitted(self, "orthogonal_map_")
        psi = self._embed_2(Y2_new, inverse_covariances)
        return self.inverse_1_.predict(psi @ self.orthogonal_map_)

    def predict_function(self, values_2, Y1_new, inverse_covariances=None):
        """Predict any network-2 quantity from network-1 activations.

        Network 2's selected neurons embed the manifold, so every other quantity of network 2
        (another layer, its output) is a function of the embedding psi. This interpolates that
        function from its values at the network-2 training points and evaluates it at
        ``O phi(Y1_new)``, with the same clipped interpolation as :meth:`transform`.

        Parameters
        ----------
        values_2 : array-like of shape (n2, ...)
            The quantity at each training row of Y2, in the order of Y2.
        Y1_new : array-like of shape (n_new, m1)
            Network-1 activations at the new inputs.
        inverse_covariances : array-like of shape (n_new, m1, m1), default=None
            Metrics of the new points; None uses each point's nearest training metric.

        Returns
        -------
        predicted : ndarray of shape (n_new, ...)
        """
        check_is_fitted(self, "orthogonal_map_")
        values_2 = np.asarray(values_2, dtype=float)
        n2 = self.diffusion_map_2_.embedding_.shape[0]
        if values_2.ndim == 0 or values_2.shape[0] != n2:
            raise ValueError(
                f"values_2 has shape {values_2.shape}; expected ({n2}, ...): one value per training "
                "row of Y2, in the same order."
            )
        if not np.all(np.isfinite(values_2)):
            raise ValueError("values_2 contains NaN or infinite values; interpolation needs finite values.")
        if values_2.ndim == 1:
            values_2 = values_2[:, None]
            squeeze = True
        else:
            squeeze = False
        function = _ClippedInverse(self.interpolation, self.diffusion_map_2_.embedding_, values_2)
        phi = self._embed_1(Y1_new, inverse_covariances)
        predicted = function.predict(phi @ self.orthogonal_map_.T)
        return predicted[:, 0] if squeeze else predicted

    # ------------------------------------------------------------ evaluation

    def evaluate(self, Y1_test, Y2_test, inverse_covariances_1=None, inverse_covariances_2=None):
        """Measure T and T^-1 on held-out corresponding activations.

        Parameters
        ----------
        Y1_test : array-like of shape (n_test, m1)
        Y2_test : array-like of shape (n_test, m2)
            Row i of both comes from the same input.
        inverse_covariances_1, inverse_covariances_2 : array-like, default=None
            Metrics of the test points for the Nystrom extension; None uses each point's nearest
            training metric.

        Returns
        -------
        scores : TransformationScores
            Errors are NaN when a test point could not be embedded.
        """
        check_is_fitted(self, "orthogonal_map_")
        Y1_test = _check_activations(Y1_test, "Y1_test", self.n_features_in_)
        Y2_test = _check_activations(Y2_test, "Y2_test", self.n_features_out_)
        if len(Y1_test) != len(Y2_test):
            raise ValueError(
                f"Y1_test has {len(Y1_test)} rows and Y2_test {len(Y2_test)}; held-out pairs must "
                "be given row for row."
            )
        phi = self._embed_1(Y1_test, inverse_covariances_1, "Y1_test")
        psi = self._embed_2(Y2_test, inverse_covariances_2, "Y2_test")
        return self._scores(phi, psi, Y1_test, Y2_test)

    def _scores(self, phi, psi, Y1_test, Y2_test):
        O = self.orthogonal_map_
        predicted_2 = self.inverse_2_.predict(phi @ O.T)
        predicted_1 = self.inverse_1_.predict(psi @ O)
        errors = predicted_2 - Y2_test
        with np.errstate(divide="ignore", invalid="ignore"):
            per_neuron = np.sqrt(np.mean(errors**2, axis=0)) / self.neuron_std_2_
        per_neuron[self.neuron_std_2_ == 0.0] = np.nan
        return TransformationScores(
            relative_rmse=_relative_rmse(predicted_2, Y2_test, self.spread_2_),
            relative_rmse_per_neuron=per_neuron,
            relative_error_per_point=np.linalg.norm(errors, axis=1) / self.spread_2_,
            inverse_relative_rmse=_relative_rmse(predicted_1, Y1_test, self.spread_1_),
            alignment_residual=_relative_residual(phi, psi, O),
        )

    def equivalence_test(
        self,
        Y1_test,
        Y2_test,
        inverse_covariances_1=None,
        inverse_covariances_2=None,
        *,
        alpha=0.05,
        spectrum_tol=0.1,
        residual_tol=0.1,
        error_tol=0.1,
        n_permutations=999,
        n_subsamples=10,
        subsample_fraction=0.5,
        random_state=None,
    ):
        r"""Decide whether the two networks are equivalent on the sampled domain.

        Equivalent networks see isometric manifolds through their selected neurons, so the
        construction of T succeeds. Three pieces of evidence test that, each a discrepancy
        statistic compared with a tolerance and with a null distribution built from the data:

        (a) **Spectra.** Isometric manifolds have the same Laplace-Beltrami eigenvalues. The
            statistic is ``max_k |ln mu1_k - ln mu2_k|`` over the K = ``n_components`` leading
            non-trivial eigenvalues. Each diffusion map is refitted on ``n_subsamples`` random
            subsets of a fraction f of its points. The variance of ``ln mu_k`` over the refits,
            times ``f / (1 - f)``, estimates the variance at the full sample size. The null
            hypothesis is that both spectra are equal, so ``z_k = (ln mu1_k - ln mu2_k) / se_k``
            is standard normal. The p-value is the Bonferroni-corrected two-sided normal
            p-value of the largest ``|z_k|``. The spectra disagree when p <= alpha *and* the
            statistic exceeds ``spectrum_tol``: a difference must be both beyond sampling noise
            and beyond the tolerance, because the estimates carry a bias of their own that
            depends on the sample size and density (a few per cent).
        (b) **Alignment.** The relative residual ``||phi O^T - psi||_F / ||psi||_F`` of the
            held-out pairs, each embedded by the Nystrom extension. The null hypothesis is that
            the pairing carries no information: the training correspondences and the held-out
            pairs are shuffled, O is refitted on the shuffled correspondences (when the fit used
            correspondences) and the residual is computed on the shuffled held-out pairs, in
            ``n_permutations`` permutations. The p-value is
            ``(1 + #{null <= observed}) / (1 + n_permutations)``. This passes when p <= alpha
            and the residual is at most ``residual_tol``.
        (c) **Transformation.** The held-out relative RMSE of T (see
            :class:`TransformationScores`). The null hypothesis is a mismatched pairing: the
            same predictions against the held-out network-2 activations in shuffled order,
            p-value as in (b). This passes when p <= alpha and the error is at most
            ``error_tol``.

        The verdict is "equivalent" when all three pass, and "not equivalent" otherwise. It
        holds for the domain the training and held-out data sample; :meth:`breakdown` shows
        where T stops being valid beyond it.

        Parameters
        ----------
        Y1_test : array-like of shape (n_test, m1)
        Y2_test : array-like of shape (n_test, m2)
            Held-out pairs: row i of both comes from the same input, inside the training domain.
            At least 5 pairs are needed for alpha = 0.05 (as many as make ``1 / n_test!`` at
            most ``alpha / 2``).
        inverse_covariances_1, inverse_covariances_2 : array-like, default=None
            Metrics of the held-out points; None uses each point's nearest training metric.
        alpha : float, default=0.05
            Significance level of each test.
        spectrum_tol : float, default=0.1
            Tolerance on ``max_k |ln mu1_k - ln mu2_k|`` (0.1 is about 10%).
        residual_tol : float, default=0.1
            Tolerance on the held-out relative alignment residual.
        error_tol : float, default=0.1
            Tolerance on the held-out relative RMSE of T.
        n_permutations : int, default=999
            Permutations in the null distributions of (b) and (c).
        n_subsamples : int, default=10
            Refits of each diffusion map for the standard errors of (a). These 2 x
            ``n_subsamples`` fits dominate the cost of the test.
        subsample_fraction : float, default=0.5
            Fraction f of the training points in each refit.
        random_state : int, RandomState instance or None, default=None
            Seeds the permutations and the subsets.

        Returns
        -------
        result : EquivalenceResult
            The verdict, and for each criterion its statistic, threshold, p-value and null
            draws; ``result.summary()`` formats them.
        """
        check_is_fitted(self, "orthogonal_map_")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha={alpha} is invalid; expected a significance level in (0, 1).")
        if not 0.0 < subsample_fraction < 1.0:
            raise ValueError(f"subsample_fraction={subsample_fraction} is invalid; expected a fraction in (0, 1).")
        if n_permutations < 1 or n_subsamples < 2:
            raise ValueError(
                f"n_permutations={n_permutations} and n_subsamples={n_subsamples} are invalid; "
                "expected at least 1 permutation and 2 subsamples."
            )
        Y1_test = _check_activations(Y1_test, "Y1_test", self.n_features_in_)
        Y2_test = _check_activations(Y2_test, "Y2_test", self.n_features_out_)
        if len(Y1_test) != len(Y2_test):
            raise ValueError(
                f"Y1_test has {len(Y1_test)} rows and Y2_test {len(Y2_test)}; held-out pairs must "
                "be given row for row."
            )
        needed = _min_held_out_pairs(alpha)
        if len(Y1_test) < needed:
            raise ValueError(
                f"{len(Y1_test)} held-out pair(s) are too few: their permutations cannot give a "
                f"p-value of {alpha} or less. Pass at least {needed} pairs."
            )
        rng = np.random.default_rng(check_random_state(random_state).randint(2**31 - 1))

        phi = self._embed_1(Y1_test, inverse_covariances_1, "Y1_test")
        psi = self._embed_2(Y2_test, inverse_covariances_2, "Y2_test")
        scores = self._scores(phi, psi, Y1_test, Y2_test)
        spectrum, mu_1, mu_2, standard_errors = self._spectrum_criterion(
            alpha, spectrum_tol, n_subsamples, subsample_fraction, rng
        )
        alignment = self._alignment_criterion(phi, psi, scores, alpha, residual_tol, n_permutations, rng)
        predicted_2 = self.inverse_2_.predict(phi @ self.orthogonal_map_.T)
        transformation = self._transformation_criterion(
            predicted_2, Y2_test, scores, alpha, error_tol, n_permutations, rng
        )

        criteria = {"spectrum": spectrum, "alignment": alignment, "transformation": transformation}
        equivalent = all(criterion.passed for criterion in criteria.values())
        return EquivalenceResult(
            verdict="equivalent" if equivalent else "not equivalent",
            equivalent=equivalent,
            alpha=alpha,
            criteria=criteria,
            scores=scores,
            laplacian_eigenvalues_1=mu_1,
            laplacian_eigenvalues_2=mu_2,
            spectrum_standard_errors=standard_errors,
        )

    def _subsample_log_spectra(self, dmap, n_values, n_subsamples, fraction, rng, name):
        X, C = dmap.X_fit_, dmap.inverse_covariances_
        size = int(round(fraction * len(X)))
        log_spectra = np.empty((n_subsamples, n_values))
        for b in range(n_subsamples):
            rows = np.sort(rng.choice(len(X), size=size, replace=False))
            refit = clone(dmap)
            try:
                refit.fit(X[rows], inverse_covariances=None if C is None else C[rows])
            except ValueError as error:
                raise ValueError(
                    f"refitting the diffusion map of {name} on {size} random points failed "
                    f"({error}); raise subsample_fraction."
                ) from error
            log_spectra[b] = np.log(_laplacian_spectrum(refit, n_values))
        return log_spectra

    def _spectrum_criterion(self, alpha, tolerance, n_subsamples, fraction, rng):
        n_values = self.orthogonal_map_.shape[0]
        mu_1 = _laplacian_spectrum(self.diffusion_map_1_, n_values)
        mu_2 = _laplacian_spectrum(self.diffusion_map_2_, n_values)
        difference = np.log(mu_1) - np.log(mu_2)
        statistic = float(np.max(np.abs(difference)))

        # Standard errors at the full sample size, from refits on random subsets.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            refits_1 = self._subsample_log_spectra(self.diffusion_map_1_, n_values, n_subsamples, fraction, rng, "Y1")
            refits_2 = self._subsample_log_spectra(self.diffusion_map_2_, n_values, n_subsamples, fraction, rng, "Y2")
        scale = fraction / (1.0 - fraction)
        variance = (np.var(refits_1, axis=0, ddof=1) + np.var(refits_2, axis=0, ddof=1)) * scale
        standard_errors = np.sqrt(variance)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.abs(difference) / standard_errors
        p_value = float(min(1.0, n_values * 2.0 * norm.sf(np.max(z))))
        # Null draws: centred refit deviations of the difference, scaled to the full sample.
        deviations = (refits_1 - refits_1.mean(axis=0)) - (refits_2 - refits_2.mean(axis=0))
        null_statistics = np.max(np.abs(deviations), axis=1) * np.sqrt(scale)

        # Non-finite eigenvalue estimates (an eigenvalue of 0 or below) count against equivalence.
        passed = bool(np.isfinite(statistic) and (statistic <= tolerance or p_value > alpha))
        criterion = Criterion(
            name="spectrum",
            statistic=statistic,
            threshold=tolerance,
            p_value=p_value,
            null_statistics=null_statistics,
            passed=passed,
            null_hypothesis="both networks have the same Laplace-Beltrami eigenvalues",
            rule="fails when p <= alpha and the statistic exceeds the threshold",
        )
        return criterion, mu_1, mu_2, standard_errors

    def _alignment_criterion(self, phi, psi, scores, alpha, tolerance, n_permutations, rng):
        statistic = scores.alignment_residual
        n_test = len(phi)
        pairs = self.correspondences_
        if pairs is not None:
            train_phi = self.diffusion_map_1_.embedding_[pairs[:, 0]]
            train_psi = self.diffusion_map_2_.embedding_[pairs[:, 1]]
        null_statistics = np.empty(n_permutations)
        for b in range(n_permutations):
            orthogonal = self.orthogonal_map_
            if pairs is not None:
                shuffled = train_psi[rng.permutation(len(pairs))]
                orthogonal = _block_procrustes(train_phi, shuffled, self.coordinate_groups_, self.proper_rotation)
            null_statistics[b] = _relative_residual(phi, psi[rng.permutation(n_test)], orthogonal)
        return self._permutation_criterion(
            "alignment",
            statistic,
            null_statistics,
            alpha,
            tolerance,
            "the pairing of network-1 and network-2 points carries no information (shuffled "
            "correspondences)",
        )

    def _transformation_criterion(self, predicted_2, Y2_test, scores, alpha, tolerance, n_permutations, rng):
        statistic = scores.relative_rmse
        null_statistics = np.empty(n_permutations)
        for b in range(n_permutations):
            null_statistics[b] = _relative_rmse(predicted_2, Y2_test[rng.permutation(len(Y2_test))], self.spread_2_)
        return self._permutation_criterion(
            "transformation",
            statistic,
            null_statistics,
            alpha,
            tolerance,
            "T's predictions are unrelated to the network-2 activations (mismatched pairing)",
        )

    @staticmethod
    def _permutation_criterion(name, statistic, null_statistics, alpha, tolerance, null_hypothesis):
        # A NaN statistic (a held-out point that could not be embedded) counts against equivalence.
        if np.isfinite(statistic):
            p_value = (1.0 + np.sum(null_statistics <= statistic)) / (1.0 + len(null_statistics))
        else:
            p_value = 1.0
        passed = bool(np.isfinite(statistic) and p_value <= alpha and statistic <= tolerance)
        return Criterion(
            name=name,
            statistic=float(statistic),
            threshold=tolerance,
            p_value=float(p_value),
            null_statistics=null_statistics,
            passed=passed,
            null_hypothesis=null_hypothesis,
            rule="passes when p <= alpha and the statistic is at most the threshold",
        )

    # -------------------------------------------------------------- breakdown

    def breakdown(
        self,
        Y1_path,
        *,
        inverse_covariances_1=None,
        jacobians_1=None,
        Y2_path=None,
        inverse_covariances_2=None,
        jacobians_2=None,
        rank=None,
        fold_tol=0.1,
        round_trip_tol=0.05,
    ):
        """Score, point by point along a path of inputs, where T stops being valid.

        T is valid where both networks' selected neurons embed the manifold and the data cover
        it. Two scores detect where that ends:

        - **Folds.** Where a network's Jacobian loses rank (its local metric degenerates), the
          neurons stop embedding the manifold and T or T^-1 is no longer a function. The
          conditioning of each network is the smallest singular value of its Jacobian,
          relative to its median along the path, computed from (in this order of preference)
          ``jacobians_k``, ``inverse_covariances_k`` (the largest eigenvalue of
          C = pinv(J J^T) is ``1 / s_min^2``, and a metric of lower rank than expected counts
          as 0), or the speed along ``Y1_path`` / ``Y2_path`` (which assumes the path takes
          equal steps in the input). A fold is where it falls below ``fold_tol``.
        - **Round trip.** ``|T^-1(T(y)) - y|`` relative to the network-1 spread. Beyond the
          training domain the Nystrom extension and the interpolation no longer reproduce the
          point (and return NaN, counted as infinite, once the kernel weights vanish). Inside
          it, the error is near zero except in a thin layer at the domain's boundary, where
          the diffusion coordinates are flat and inverting them is ill-conditioned (on the
          segments of the tests, 10-20% of the spread). So the round trip breaks where its
          error exceeds, by more than ``round_trip_tol``, the largest round-trip error of the
          point's 10 nearest network-1 training points.

        Parameters
        ----------
        Y1_path : array-like of shape (n_path, m1)
            Network-1 activations along the path, in order.
        inverse_covariances_1 : array-like of shape (n_path, m1, m1), default=None
            Network-1 metrics along the path; also used to embed the path.
        jacobians_1 : array-like of shape (n_path, m1, d), default=None
            Network-1 Jacobians with respect to the input along the path.
        Y2_path : array-like of shape (n_path, m2), default=None
            Network-2 activations along the path.
        inverse_covariances_2 : array-like of shape (n_path, m2, m2), default=None
        jacobians_2 : array-like of shape (n_path, m2, d), default=None
        rank : int, default=None
            The manifold dimension d: the Jacobians' d-th singular value is the one that must
            not vanish, and every metric should have rank d. None uses the Jacobians' column
            count and the median rank of the metrics along the path.
        fold_tol : float, default=0.1
            A conditioning below this marks a fold.
        round_trip_tol : float, default=0.05
            Excess of the relative round-trip error over that of the nearest training points
            that marks the end of the valid domain.

        Returns
        -------
        result : BreakdownResult
            Per-point scores, the first broken index, and the first fold and round-trip
            failures separately.
        """
        check_is_fitted(self, "orthogonal_map_")
        Y1_path = _check_activations(Y1_path, "Y1_path", self.n_features_in_, min_samples=3)
        if Y2_path is not None:
            Y2_path = _check_activations(Y2_path, "Y2_path", self.n_features_out_, min_samples=3)
            if len(Y2_path) != len(Y1_path):
                raise ValueError(
                    f"Y2_path has {len(Y2_path)} rows and Y1_path {len(Y1_path)}; both follow the "
                    "same path, point for point."
                )
        if inverse_covariances_1 is not None:
            inverse_covariances_1 = check_inverse_covariances(
                inverse_covariances_1, len(Y1_path), self.n_features_in_, "inverse_covariances_1"
            )

        # Round trip y -> T(y) -> T^-1(T(y)), compared with that of the nearest training points.
        dmap_1 = self.diffusion_map_1_
        round_trip, predicted_2 = self._round_trip(Y1_path, inverse_covariances_1)
        training_round_trip, _ = self._round_trip(dmap_1.X_fit_, dmap_1.inverse_covariances_)
        n_reference = min(_ROUND_TRIP_NEIGHBORS, len(dmap_1.X_fit_))
        nearest = dmap_1.tree_.kneighbors(Y1_path, n_neighbors=n_reference, return_distance=False)
        thresholds = round_trip_tol + np.max(training_round_trip[nearest], axis=1)

        # Folds: the conditioning of each network along the path.
        n_path = len(Y1_path)
        conditioning_1 = _conditioning(jacobians_1, inverse_covariances_1, Y1_path, n_path, rank, "1")
        conditioning_2 = _conditioning(jacobians_2, inverse_covariances_2, Y2_path, n_path, rank, "2")
        available = [c for c in (conditioning_1, conditioning_2) if c is not None]
        worst = np.min(available, axis=0)
        with np.errstate(divide="ignore"):
            scores = np.maximum(round_trip / thresholds, fold_tol / worst)
        fold = worst < fold_tol
        breaks_round_trip = round_trip > thresholds
        broken = fold | breaks_round_trip
        return BreakdownResult(
            scores=scores,
            conditioning_1=conditioning_1,
            conditioning_2=conditioning_2,
            round_trip_errors=round_trip,
            broken=broken,
            first_index=_first(broken),
            fold_index=_first_minimum(worst, fold),
            round_trip_index=_first(breaks_round_trip),
            round_trip_thresholds=thresholds,
            predictions_2=predicted_2,
        )

    def _round_trip(self, Y1, inverse_covariances=None):
        """Relative error |T^-1(T(y)) - y| of each row (inf where T is undefined), and T(y)."""
        O = self.orthogonal_map_
        with warnings.catch_warnings():
            # Points beyond the domain are expected to fall off the kernel; they become NaN.
            warnings.simplefilter("ignore", RuntimeWarning)
            phi = self.diffusion_map_1_.transform(Y1, inverse_covariances=inverse_covariances)
            predicted_2 = self.inverse_2_.predict(phi @ O.T)
            valid = np.all(np.isfinite(predicted_2), axis=1)
            psi = np.full_like(phi, np.nan)
            if np.any(valid):
                psi[valid] = self.diffusion_map_2_.transform(predicted_2[valid])
            returned = self.inverse_1_.predict(psi @ O)
        errors = np.linalg.norm(returned - Y1, axis=1) / self.spread_1_
        errors[~np.isfinite(errors)] = np.inf
        return errors, predicted_2

    # ------------------------------------------------------------ persistence

    def save(self, path):
        """Write the fitted transformation to one ``.npz`` file, with its settings as JSON.

        Arrays are stored as ``.npy`` members; the settings and scalars as a JSON document in
        the member ``metadata``. Nothing is pickled, so :meth:`load` reads the file with
        ``allow_pickle=False``. numpy appends ``.npz`` to a path without that suffix.

        Parameters
        ----------
        path : str or path-like
        """
        check_is_fitted(self, "orthogonal_map_")
        arrays = {
            "orthogonal_map": self.orthogonal_map_,
            "group_labels": _labels_from_groups(self.coordinate_groups_, self.orthogonal_map_.shape[0]),
        }
        if self.correspondences_ is not None:
            arrays["correspondences"] = self.correspondences_
        metadata = {
            "format": _FILE_FORMAT,
            "version": _FILE_VERSION,
            "params": _json_params(self.get_params()),
            "alignment": {
                "residual": self.alignment_.residual,
                "method": self.alignment_.method,
                "n_points": self.alignment_.n_points,
                "overlap": self.alignment_.overlap,
                "n_iter": self.alignment_.n_iter,
            },
        }
        for name, dmap in (("map_1", self.diffusion_map_1_), ("map_2", self.diffusion_map_2_)):
            dmap_arrays, dmap_scalars = _diffusion_map_state(dmap)
            arrays.update({f"{name}.{key}": value for key, value in dmap_arrays.items()})
            metadata[name] = dmap_scalars
        arrays["metadata"] = np.array(json.dumps(metadata))
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path):
        """Read a transformation written by :meth:`save`; it gives identical results.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        transformation : NetworkTransformation
        """
        with np.load(path, allow_pickle=False) as data:
            if "metadata" not in data.files:
                raise ValueError(f"{path} has no 'metadata' member; it was not written by NetworkTransformation.save.")
            metadata = json.loads(str(data["metadata"]))
            if metadata.get("format") != _FILE_FORMAT or metadata.get("version") != _FILE_VERSION:
                raise ValueError(
                    f"{path} has format {metadata.get('format')!r} version {metadata.get('version')!r}; "
                    f"expected {_FILE_FORMAT!r} version {_FILE_VERSION}."
                )
            arrays = {key: data[key] for key in data.files if key != "metadata"}

        transformation = cls(**metadata["params"])
        for name, attribute in (("map_1", "diffusion_map_1_"), ("map_2", "diffusion_map_2_")):
            prefix = f"{name}."
            dmap_arrays = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
            dmap = transformation._new_diffusion_map()
            _restore_diffusion_map(dmap, dmap_arrays, metadata[name])
            setattr(transformation, attribute, dmap)
        info = metadata["alignment"]
        alignment = Alignment(
            orthogonal_map=arrays["orthogonal_map"],
            residual=info["residual"],
            groups=_groups_from_labels(arrays["group_labels"]),
            method=info["method"],
            n_points=info["n_points"],
            overlap=info["overlap"],
            n_iter=info["n_iter"],
        )
        transformation._set_fitted_state(alignment, arrays.get("correspondences"))
        return transformation


# ------------------------------------------------------------ persistence helpers

# Fitted array attributes of MahalanobisDiffusionMap that transform and inverse_transform use;
# those that may be None are left out of the file when they are.
_DIFFUSION_MAP_ARRAYS = (
    "X_fit_",
    "inverse_covariances_",
    "embedding_",
    "eigenvalues_",
    "rescaled_eigenvalues_",
    "laplacian_eigenvalues_",
    "all_eigenvalues_",
    "component_indices_",
    "harmonic_residuals_",
    "kernel_row_sums_",
    "eigen_residuals_",
    "landmark_indices_",
    "landmark_weights_",
)


def _json_params(params):
    """Convert estimator parameters to JSON values; a RandomState instance is stored as None."""
    converted = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        if key == "random_state" and not (value is None or isinstance(value, int)):
            value = None
        converted[key] = value
    return converted


def _diffusion_map_state(dmap):
    arrays = {
        name: getattr(dmap, name) for name in _DIFFUSION_MAP_ARRAYS if getattr(dmap, name) is not None
    }
    scalars = {
        "epsilon_": float(dmap.epsilon_),
        "n_neighbors_": int(dmap.n_neighbors_),
        "n_features_in_": int(dmap.n_features_in_),
        "mode_": str(getattr(dmap, "mode_", "exact")),
    }
    return arrays, scalars


def _restore_diffusion_map(dmap, arrays, scalars):
    # NOTE: this rebuilds MahalanobisDiffusionMap's fitted state attribute by attribute; it must
    # follow any new fitted attribute of that estimator, which would better own its save/load.
    for name in _DIFFUSION_MAP_ARRAYS:
        setattr(dmap, name, arrays.get(name))
    for name, value in scalars.items():
        setattr(dmap, name, value)
    dmap.tree_ = NearestNeighbors(n_jobs=dmap.n_jobs).fit(dmap.X_fit_)
    dmap.inverse_interpolator_ = Interpolator(method=dmap.inverse_transform_method).fit(
        dmap.embedding_, dmap.X_fit_
    )
