r"""Orthogonal alignment of two diffusion-map embeddings of the same manifold.

With Mahalanobis metrics, two networks that observe the same manifold give embeddings phi
(network 1) and psi (network 2) that agree up to an orthogonal map O: ``psi = O phi``. Points are
rows here, so the map acts as ``target ~ source @ O.T``.

The structure of O follows from the eigenvalues. Each eigenvector is fixed only up to sign, so
for coordinates with well separated eigenvalues O is diagonal with entries +1 or -1. Inside a
degenerate eigenspace (equal eigenvalues, as for cos(pi x) and cos(pi y) on a square) any
orthonormal basis is an eigenbasis, so O has a full orthogonal block there. O is therefore block
diagonal over the *degenerate groups* of coordinates, and a block of size b needs at least b
corresponding points whose coordinates in that block span it.

Sign flips are reflections, so O ranges over the full orthogonal group: det(O) = -1 is allowed
unless ``proper=True`` requests a rotation.

Degeneracy tolerance
--------------------
Coordinates i and j are degenerate when their Laplace-Beltrami eigenvalue estimates (the
``laplacian_eigenvalues_`` of :class:`netequiv.MahalanobisDiffusionMap`) differ by at most
``rtol * max(mu_i, mu_j)`` in any of the spectra given, and groups are the connected sets of that
relation. The default ``rtol = 0.1`` is well above the sampling scatter of the estimates (a few
per cent for one to two thousand samples of a segment or a square) and well below the gaps
between distinct eigenvalues of simple domains (a factor 2 between the first two distinct
eigenvalues of a square). Merging coordinates that are in fact distinct costs correspondences,
never accuracy, because a block can represent a diagonal map; splitting a degenerate pair breaks
the alignment, so when in doubt a larger tolerance is the safe side.

Alignment without correspondences
---------------------------------
:func:`align_without_correspondences` assumes both data sets sample the same region of the
manifold with the same density (for example, the same input distribution fed to both networks).
It chooses the signs of the non-degenerate coordinates, and a starting map inside each degenerate
block, by maximising the overlap ``mean_ij exp(-|O a_i - b_j|^2 / (2 h^2))`` of the two point
sets, which is the part of their maximum mean discrepancy that depends on O. Iterative closest
point (ICP) then refines the blocks. A symmetry of the manifold that also preserves the sampling
density (the reflection x -> 1 - x of a uniformly sampled segment) cannot be resolved without
correspondences.
"""

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state

__all__ = [
    "Alignment",
    "DEGENERACY_RTOL",
    "degenerate_groups",
    "min_correspondences",
    "orthogonal_procrustes",
    "align_without_correspondences",
    "alignment_residual",
]

DEGENERACY_RTOL = 0.1

# Up to this many non-degenerate coordinates, every sign pattern is tried; above it, a greedy
# search flips one sign at a time.
MAX_EXHAUSTIVE_SIGNS = 8

# The overlap kernel's bandwidth h is this fraction of the median distance between target
# points. It is below the median heuristic of kernel two-sample tests, so that the overlap
# resolves the shape of the point sets and not only their spread.
OVERLAP_BANDWIDTH_FACTOR = 0.5

# Numerical rank tolerance, relative to the largest singular value, of a block's source
# coordinates at the correspondences.
_RANK_RTOL = 1e-8


@dataclass(frozen=True)
class Alignment:
    """An orthogonal map between two embeddings and how well it fits.

    Attributes
    ----------
    orthogonal_map : ndarray of shape (l, l)
        O, with ``target ~ source @ orthogonal_map.T``.
    residual : float
        Relative residual ``||source O^T - target||_F / ||target||_F`` on the points used for
        the fit: the correspondences, or for alignment without correspondences each source
        point and its nearest target point.
    groups : tuple of ndarray
        Degenerate groups of coordinates; O is block diagonal over them.
    method : str
        ``"procrustes"`` or ``"sign_search_icp"``.
    n_points : int
        Number of point pairs (correspondences) or source points used.
    overlap : float or None
        Kernel overlap of the two point sets under O (alignment without correspondences only).
    n_iter : int
        ICP iterations run (0 for Procrustes).
    """

    orthogonal_map: np.ndarray
    residual: float
    groups: tuple
    method: str
    n_points: int
    overlap: float | None = None
    n_iter: int = 0


# ----------------------------------------------------------------- groups


def degenerate_groups(*spectra, rtol=DEGENERACY_RTOL):
    """Group coordinates whose eigenvalues are equal within a relative tolerance.

    Parameters
    ----------
    *spectra : array-like of shape (l,)
        One or more spectra of the same l coordinates, for example the Laplace-Beltrami
        eigenvalue estimates of both networks. Coordinates i and j are linked when
        ``|mu_i - mu_j| <= rtol * max(|mu_i|, |mu_j|)`` in at least one spectrum. Groups are the
        connected components of that relation, so a chain of near-equal eigenvalues is one group.
    rtol : float, default=0.1
        Relative tolerance; see the module docstring for the choice of the default.

    Returns
    -------
    groups : tuple of ndarray
        Coordinate indices of each group, ascending, ordered by their smallest index.

    Examples
    --------
    >>> degenerate_groups([9.9, 10.1, 19.8, 39.0, 40.1])
    (array([0, 1]), array([2]), array([3, 4]))
    """
    if not spectra:
        raise ValueError("degenerate_groups needs at least one spectrum.")
    arrays = [np.asarray(mu, dtype=float) for mu in spectra]
    l = arrays[0].shape[0] if arrays[0].ndim == 1 else -1
    if any(mu.ndim != 1 or mu.shape[0] != l for mu in arrays):
        raise ValueError(
            f"the spectra have shapes {[mu.shape for mu in arrays]}; expected one-dimensional "
            "arrays of the same length, one eigenvalue per coordinate."
        )
    if not 0.0 <= rtol:
        raise ValueError(f"rtol={rtol} is invalid; expected a non-negative relative tolerance.")

    linked = np.zeros((l, l), dtype=bool)
    for mu in arrays:
        difference = np.abs(mu[:, None] - mu[None, :])
        scale = np.maximum(np.abs(mu[:, None]), np.abs(mu[None, :]))
        # NaN eigenvalues compare False and link nothing.
        linked |= difference <= rtol * scale
    _, labels = connected_components(csr_matrix(linked), directed=False)
    return _groups_from_labels(labels)


def _groups_from_labels(labels):
    labels = np.asarray(labels)
    groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    return tuple(sorted(groups, key=lambda group: group[0]))


def _labels_from_groups(groups, l):
    labels = np.full(l, -1)
    for label, group in enumerate(groups):
        labels[group] = label
    return labels


def _check_groups(groups, l):
    if groups is None:
        return tuple(np.array([k]) for k in range(l))
    groups = tuple(np.asarray(group, dtype=int).ravel() for group in groups)
    covered = np.sort(np.concatenate(groups)) if groups else np.array([], dtype=int)
    if not np.array_equal(covered, np.arange(l)):
        raise ValueError(
            f"groups {[group.tolist() for group in groups]} must contain each of the {l} "
            "coordinates exactly once."
        )
    return groups


def min_correspondences(groups):
    """Return the fewest correspondences that determine an orthogonal map with these groups.

    A group of size b is an orthogonal b x b block, which b pairs fix when their coordinates in
    the block are linearly independent. A group of size 1 (a sign) needs one pair.
    """
    return max((len(group) for group in groups), default=1)


# -------------------------------------------------------------- Procrustes


def _check_point_sets(source, target, same_rows=True):
    source = np.asarray(source, dtype=float)
    target = np.asarray(target, dtype=float)
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            f"source has shape {source.shape} and target {target.shape}; expected (p, l) arrays "
            "of embedding coordinates with the same l."
        )
    if same_rows and source.shape[0] != target.shape[0]:
        raise ValueError(
            f"source has {source.shape[0]} rows and target {target.shape[0]}; corresponding points "
            "must be given as rows in the same order."
        )
    for name, array in (("source", source), ("target", target)):
        if not np.all(np.isfinite(array)):
            bad = np.argwhere(~np.isfinite(array))[0][0]
            raise ValueError(f"{name} contains NaN or infinite coordinates (first in row {bad}); drop those points.")
    return source, target


def _block_procrustes(source, target, groups, proper=False):
    """O maximising tr(O^T target^T source) over block-diagonal orthogonal maps, no validation.

    Each block solves its own Procrustes problem by the SVD ``M = target_b^T source_b = U S V^T``,
    ``O_b = U V^T``. For ``proper=True`` with det(O) = -1, the block with the globally smallest
    singular value flips that singular direction, which is the least costly way to a rotation.
    """
    l = source.shape[1]
    orthogonal = np.zeros((l, l))
    determinant = 1.0
    smallest = (np.inf, None, None, None)
    for group in groups:
        cross = target[:, group].T @ source[:, group]
        u, s, vt = np.linalg.svd(cross)
        block = u @ vt
        orthogonal[np.ix_(group, group)] = block
        determinant *= np.sign(np.linalg.det(block))
        if s[-1] < smallest[0]:
            smallest = (s[-1], group, u, vt)
    if proper and determinant < 0:
        _, group, u, vt = smallest
        u = u.copy()
        u[:, -1] *= -1.0
        orthogonal[np.ix_(group, group)] = u @ vt
    return orthogonal


def alignment_residual(source, target, orthogonal_map):
    """Return the relative residual ``||source O^T - target||_F / ||target||_F``."""
    source, target = _check_point_sets(source, target)
    return _relative_residual(source, target, orthogonal_map)


def _relative_residual(source, target, orthogonal_map):
    norm = np.linalg.norm(target)
    if norm == 0.0:
        return float("nan")
    return float(np.linalg.norm(source @ orthogonal_map.T - target) / norm)


def orthogonal_procrustes(source, target, groups=None, *, proper=False):
    """Fit the orthogonal map between embeddings from corresponding points (Kabsch).

    Solves ``min ||source O^T - target||_F`` over orthogonal O that are block diagonal over
    ``groups`` (the full orthogonal group inside each block, so reflections are allowed). Points
    are not centred: the embeddings share their origin, so no translation is fitted.

    Parameters
    ----------
    source : array-like of shape (p, l)
        Network-1 embedding coordinates phi at the p correspondences.
    target : array-like of shape (p, l)
        Network-2 embedding coordinates psi at the same p correspondences, row for row.
    groups : sequence of array-like, default=None
        Degenerate groups of coordinates (see :func:`degenerate_groups`). None treats every
        coordinate as its own group, so O is a diagonal of signs; pass ``[range(l)]`` for an
        unstructured orthogonal map.
    proper : bool, default=False
        Constrain O to rotations (det = +1).

    Returns
    -------
    alignment : Alignment

    Raises
    ------
    ValueError
        When p is below :func:`min_correspondences` of the groups, or when the correspondences
        leave a block undetermined (their coordinates in it are linearly dependent).

    Examples
    --------
    >>> import numpy as np
    >>> phi = np.array([[1.0, 0.5], [0.2, -1.0]])
    >>> result = orthogonal_procrustes(phi, phi * [-1.0, 1.0])
    >>> result.orthogonal_map
    array([[-1.,  0.],
           [ 0.,  1.]])
    """
    source, target = _check_point_sets(source, target)
    p, l = source.shape
    groups = _check_groups(groups, l)
    required = min_correspondences(groups)
    if p < required:
        largest = max(groups, key=len)
        if len(largest) == 1:
            reason = "the signs of the coordinates need one pair"
        else:
            reason = (
                f"coordinates {largest.tolist()} form a degenerate group of size {len(largest)}, "
                f"whose orthogonal block needs at least {len(largest)} pairs"
            )
        raise ValueError(
            f"{p} correspondence(s) are too few: {reason}. Pass at least {required} "
            f"correspondence{'s' if required > 1 else ''}."
        )
    for group in groups:
        singular_values = np.linalg.svd(source[:, group], compute_uv=False)
        rank = int(np.sum(singular_values > _RANK_RTOL * max(singular_values[0], np.finfo(float).tiny)))
        if rank < len(group):
            raise ValueError(
                f"the {p} correspondences span only {rank} of the {len(group)} direction(s) of "
                f"coordinates {group.tolist()}, so the orthogonal map there is undetermined. Add "
                "correspondences at other points of the manifold."
            )
    orthogonal = _block_procrustes(source, target, groups, proper=proper)
    return Alignment(
        orthogonal_map=orthogonal,
        residual=_relative_residual(source, target, orthogonal),
        groups=groups,
        method="procrustes",
        n_points=p,
    )


# ------------------------------------------- alignment without correspondences


def _block_candidates(size, n_rotations, rng):
    """Starting maps for one degenerate block: rotations and reflections spread over O(size)."""
    if size == 2:
        angles = 2.0 * np.pi * np.arange(n_rotations) / n_rotations
        cos, sin = np.cos(angles), np.sin(angles)
        rotations = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)
        reflections = rotations * np.array([1.0, -1.0])  # flips the second column
        return np.concatenate([rotations, reflections])
    # Haar-distributed orthogonal matrices: QR of a Gaussian with the signs of R's diagonal fixed.
    gaussian = rng.normal(size=(2 * n_rotations - 1, size, size))
    q, r = np.linalg.qr(gaussian)
    q *= np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return np.concatenate([np.eye(size)[None], q])


class _KernelOverlap:
    """mean_ij exp(-|O a_i - b_j|^2 / (2 h^2)) for candidate maps O, on fixed subsamples.

    Every evaluated map is recorded in ``history`` as (overlap, map), so that ICP can start from
    the best few.
    """

    def __init__(self, source, target, bandwidth):
        self.source = source
        self.target = target
        self.scale = 1.0 / (2.0 * bandwidth**2)
        self.source_sq = np.sum(source**2, axis=1)[:, None]
        self.target_sq = np.sum(target**2, axis=1)[None, :]
        self.history = []

    def __call__(self, orthogonal):
        # |O a|^2 = |a|^2 for orthogonal O, so only the cross term depends on O.
        cross = (self.source @ orthogonal.T) @ self.target.T
        squared = np.maximum(self.source_sq + self.target_sq - 2.0 * cross, 0.0)
        value = float(np.mean(np.exp(-self.scale * squared)))
        self.history.append((value, orthogonal))
        return value

    def best_distinct(self, n_maps):
        """Return the ``n_maps`` distinct maps of highest overlap seen so far, best first."""
        chosen = []
        for value, orthogonal in sorted(self.history, key=lambda item: -item[0]):
            if all(not np.allclose(orthogonal, other) for _, other in chosen):
                chosen.append((value, orthogonal))
            if len(chosen) == n_maps:
                break
        return chosen


def _search_signs(orthogonal, singles, overlap, proper):
    """Choose the signs of the non-degenerate coordinates that maximise the overlap."""
    best = orthogonal.copy()
    best_value = overlap(best)
    if len(singles) <= MAX_EXHAUSTIVE_SIGNS:
        for signs in itertools.product((1.0, -1.0), repeat=len(singles)):
            candidate = orthogonal.copy()
            candidate[singles, singles] = signs
            if proper and np.linalg.det(candidate) < 0:
                continue
            value = overlap(candidate)
            if value > best_value:
                best, best_value = candidate, value
        return best, best_value
    # With proper=True, single flips change the determinant, so the greedy search flips pairs.
    moves = itertools.combinations(singles, 2) if proper else ((k,) for k in singles)
    moves = [list(move) for move in moves]
    improved = True
    while improved:
        improved = False
        for move in moves:
            candidate = best.copy()
            candidate[move, move] *= -1.0
            value = overlap(candidate)
            if value > best_value:
                best, best_value, improved = candidate, value, True
    return best, best_value


def _iterative_closest_point(source, target, groups, orthogonal, max_iter, tol, proper):
    tree = NearestNeighbors(n_neighbors=1).fit(target)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        nearest = tree.kneighbors(source @ orthogonal.T, return_distance=False)[:, 0]
        updated = _block_procrustes(source, target[nearest], groups, proper=proper)
        change = np.linalg.norm(updated - orthogonal)
        orthogonal = updated
        if change <= tol:
            break
    nearest = tree.kneighbors(source @ orthogonal.T, return_distance=False)[:, 0]
    residual = _relative_residual(source, target[nearest], orthogonal)
    return orthogonal, residual, n_iter


def align_without_correspondences(
    source,
    target,
    groups=None,
    *,
    proper=False,
    n_rotations=8,
    n_sweeps=3,
    n_starts=4,
    max_iter=50,
    tol=1e-8,
    max_samples=600,
    random_state=None,
):
    """Fit the orthogonal map between two embeddings of the same region, without correspondences.

    The signs of non-degenerate coordinates come from an exhaustive search (a greedy one above
    eight such coordinates). Each degenerate block starts from the best of a set of rotations
    and reflections. Both choices maximise the kernel overlap of the two point sets (see the
    module docstring), and a few sweeps alternate between signs and blocks. Iterative closest
    point then refines the ``n_starts`` maps of highest overlap that the search met. Each source
    point is paired with its nearest target point and the block-diagonal Procrustes problem is
    solved on those pairs, until O changes by at most ``tol``. The refined map of highest
    overlap is returned.

    Parameters
    ----------
    source : array-like of shape (n_source, l)
        Network-1 embedding phi.
    target : array-like of shape (n_target, l)
        Network-2 embedding psi of the same region, sampled with the same density.
    groups : sequence of array-like, default=None
        Degenerate groups of coordinates; None makes every coordinate its own group.
    proper : bool, default=False
        Constrain O to rotations.
    n_rotations : int, default=8
        Starting maps tried per degenerate block: ``n_rotations`` rotations and as many
        reflections (evenly spaced for 2 x 2 blocks, Haar-random for larger ones).
    n_sweeps : int, default=3
        Maximum alternations between the sign search and the block starts.
    n_starts : int, default=4
        ICP runs from this many distinct maps of highest overlap found by the search.
    max_iter : int, default=50
        Maximum ICP iterations.
    tol : float, default=1e-8
        ICP stops when the Frobenius change of O is at most this.
    max_samples : int, default=600
        The overlap is computed on random subsets of at most this many points of each set
        (its cost is quadratic in the number of points); ICP uses every source point.
    random_state : int, RandomState instance or None, default=None
        Seeds the subsets and the Haar-random starts.

    Returns
    -------
    alignment : Alignment
        ``residual`` is the relative ICP residual (each source point against its nearest target
        point); ``overlap`` the final kernel overlap.
    """
    source, target = _check_point_sets(source, target, same_rows=False)
    l = source.shape[1]
    groups = _check_groups(groups, l)
    if source.shape[0] < 2 or target.shape[0] < 2:
        raise ValueError(
            f"source has {source.shape[0]} and target {target.shape[0]} point(s); alignment "
            "without correspondences needs point sets that sample the manifold, not single points."
        )
    rng = np.random.default_rng(check_random_state(random_state).randint(2**31 - 1))

    def subsample(points):
        if len(points) <= max_samples:
            return points
        return points[rng.choice(len(points), size=max_samples, replace=False)]

    source_sample, target_sample = subsample(source), subsample(target)
    first, second = rng.integers(0, len(target_sample), size=(2, 20000))
    distances = np.linalg.norm(target_sample[first] - target_sample[second], axis=1)
    bandwidth = OVERLAP_BANDWIDTH_FACTOR * float(np.median(distances[first != second]))
    if not bandwidth > 0.0:
        raise ValueError("the target points coincide; alignment without correspondences needs a spread-out sample.")
    overlap = _KernelOverlap(source_sample, target_sample, bandwidth)

    singles = np.array([group[0] for group in groups if len(group) == 1], dtype=int)
    blocks = [group for group in groups if len(group) > 1]
    candidates = [_block_candidates(len(block), n_rotations, rng) for block in blocks]

    # Coordinate ascent over the signs and the block starts.
    orthogonal = np.eye(l)
    value = overlap(orthogonal)
    for _ in range(n_sweeps):
        previous = value
        orthogonal, value = _search_signs(orthogonal, singles, overlap, proper)
        for block, block_candidates in zip(blocks, candidates):
            for start in block_candidates:
                candidate = orthogonal.copy()
                candidate[np.ix_(block, block)] = start
                if proper and np.linalg.det(candidate) < 0:
                    # A reflection in the block is proper together with one sign flip.
                    if singles.size == 0:
                        continue
                    candidate[singles[0], singles[0]] *= -1.0
                candidate_value = overlap(candidate)
                if candidate_value > value:
                    orthogonal, value = candidate, candidate_value
        if value <= previous:
            break

    # ICP from the best few starts; the overlap picks among the refined maps.
    best = (-np.inf, None, None, 0)
    for _, start in overlap.best_distinct(n_starts):
        refined, residual, n_iter = _iterative_closest_point(source, target, groups, start, max_iter, tol, proper)
        value = overlap(refined)
        if value > best[0]:
            best = (value, refined, residual, n_iter)
    value, orthogonal, residual, n_iter = best
    return Alignment(
        orthogonal_map=orthogonal,
        residual=residual,
        groups=groups,
        method="sign_search_icp",
        n_points=source.shape[0],
        overlap=value,
        n_iter=n_iter,
    )
