"""Tests of netequiv.alignment: degenerate groups, Procrustes, alignment without correspondences."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from _manifolds import RandomObservation, observe, sample_segment, sample_square

from netequiv import MahalanobisDiffusionMap
from netequiv.alignment import (
    align_without_correspondences,
    alignment_residual,
    degenerate_groups,
    min_correspondences,
    orthogonal_procrustes,
)


def rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def block_diagonal(*blocks):
    size = sum(len(np.atleast_2d(block)) for block in blocks)
    result = np.zeros((size, size))
    start = 0
    for block in blocks:
        block = np.atleast_2d(block)
        result[start : start + len(block), start : start + len(block)] = block
        start += len(block)
    return result


def square_eigenfunctions(x):
    """The five leading Neumann eigenfunctions of the unit square, unit mean square."""
    cx, cy = np.cos(np.pi * x[:, 0]), np.cos(np.pi * x[:, 1])
    c2x, c2y = np.cos(2 * np.pi * x[:, 0]), np.cos(2 * np.pi * x[:, 1])
    return np.column_stack([np.sqrt(2) * cx, np.sqrt(2) * cy, 2 * cx * cy, np.sqrt(2) * c2x, np.sqrt(2) * c2y])


SQUARE_GROUPS = [[0, 1], [2], [3, 4]]


@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    # The matrices here are small; threaded BLAS on cores shared with other jobs runs many times
    # slower than one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ----------------------------------------------------------------- groups


def test_degenerate_groups_of_square_spectrum():
    groups = degenerate_groups([9.9, 10.1, 19.8, 39.0, 40.1])
    assert [group.tolist() for group in groups] == SQUARE_GROUPS
    assert min_correspondences(groups) == 2


def test_degenerate_groups_chain_within_tolerance():
    chained = degenerate_groups([1.0, 1.08, 1.16])
    assert [group.tolist() for group in chained] == [[0, 1, 2]]
    separate = degenerate_groups([1.0, 1.08, 1.16], rtol=0.05)
    assert [group.tolist() for group in separate] == [[0], [1], [2]]
    assert min_correspondences(separate) == 1


def test_degenerate_groups_merge_across_spectra():
    groups = degenerate_groups([1.0, 2.0, 4.0], [1.0, 1.05, 4.0])
    assert [group.tolist() for group in groups] == [[0, 1], [2]]


def test_degenerate_groups_reject_mismatched_spectra():
    with pytest.raises(ValueError, match="same length"):
        degenerate_groups([1.0, 2.0], [1.0, 2.0, 3.0])


# -------------------------------------------------------------- Procrustes


@pytest.fixture(scope="module")
def exact_square_embeddings():
    """Eigenfunctions of the square and the same coordinates under a block map with rotations."""
    rng = np.random.default_rng(0)
    phi = square_eigenfunctions(rng.uniform(size=(60, 2)))
    reflection = np.array([[1.0, 0.0], [0.0, -1.0]])
    true_map = block_diagonal(rotation(1.1), [[-1.0]], rotation(-2.3) @ reflection)
    return phi, phi @ true_map.T, true_map


def test_procrustes_recovers_block_map_from_two_pairs(exact_square_embeddings):
    phi, psi, true_map = exact_square_embeddings
    result = orthogonal_procrustes(phi[:2], psi[:2], SQUARE_GROUPS)
    np.testing.assert_allclose(result.orthogonal_map, true_map, atol=1e-10)
    assert result.residual < 1e-12
    assert np.linalg.det(result.orthogonal_map) == pytest.approx(1.0 * -1.0 * -1.0)
    assert alignment_residual(phi, psi, result.orthogonal_map) < 1e-12


def test_procrustes_keeps_reflections_unless_proper(exact_square_embeddings):
    phi, psi, true_map = exact_square_embeddings
    flipped = psi * np.array([1.0, 1.0, 1.0, 1.0, -1.0])
    improper = orthogonal_procrustes(phi[:5], flipped[:5], SQUARE_GROUPS)
    assert np.linalg.det(improper.orthogonal_map) == pytest.approx(-1.0)
    assert improper.residual < 1e-12
    proper = orthogonal_procrustes(phi[:5], flipped[:5], SQUARE_GROUPS, proper=True)
    assert np.linalg.det(proper.orthogonal_map) == pytest.approx(1.0)
    assert proper.residual > 0.1


def test_procrustes_too_few_pairs_message(exact_square_embeddings):
    phi, psi, _ = exact_square_embeddings
    with pytest.raises(ValueError, match="Pass at least 2 correspondences"):
        orthogonal_procrustes(phi[:1], psi[:1], SQUARE_GROUPS)
    with pytest.raises(ValueError, match="Pass at least 5 correspondences"):
        orthogonal_procrustes(phi[:2], psi[:2], [range(5)])


def test_procrustes_signs_from_one_pair(exact_square_embeddings):
    phi, _, _ = exact_square_embeddings
    signs = np.array([-1.0, 1.0, -1.0, -1.0, 1.0])
    result = orthogonal_procrustes(phi[:1], phi[:1] * signs)
    np.testing.assert_array_equal(result.orthogonal_map, np.diag(signs))


def test_procrustes_rejects_dependent_pairs(exact_square_embeddings):
    phi, psi, _ = exact_square_embeddings
    dependent = np.vstack([phi[0], 2.0 * phi[0]])
    with pytest.raises(ValueError, match="span only 1 of the 2"):
        orthogonal_procrustes(dependent, dependent, SQUARE_GROUPS)


def test_procrustes_rejects_invalid_input(exact_square_embeddings):
    phi, psi, _ = exact_square_embeddings
    with pytest.raises(ValueError, match="same l"):
        orthogonal_procrustes(phi[:3], psi[:3, :4])
    with pytest.raises(ValueError, match="row for row|same order"):
        orthogonal_procrustes(phi[:3], psi[:4])
    corrupted = psi[:3].copy()
    corrupted[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN.*row 1"):
        orthogonal_procrustes(phi[:3], corrupted)
    with pytest.raises(ValueError, match="exactly once"):
        orthogonal_procrustes(phi[:3], psi[:3], [[0, 1], [1, 2, 3, 4]])


# ------------------------------------------------- degenerate eigenspace, fitted


@pytest.fixture(scope="module")
def square_diffusion_maps():
    """Five-coordinate embeddings of the square by two networks, network 2 on a subset of inputs.

    The subset perturbs the kernel, so each eigensolver picks its own basis of the degenerate
    eigenspaces, as with any two data sets.
    """
    rng = np.random.default_rng(4)
    f1, f2 = RandomObservation(2, seed=1), RandomObservation(2, seed=2)
    x1 = sample_square(1200, rng)
    x2 = x1[rng.permutation(len(x1))[:1000]]
    x_pairs = rng.uniform(0.05, 0.95, size=(200, 2))
    Y1, Y2, C1, C2, pairs = observe(f1, f2, x1, x2, x_pairs)
    settings = dict(n_components=5, n_neighbors=128, random_state=0)
    dmap_1 = MahalanobisDiffusionMap(**settings).fit(Y1, inverse_covariances=C1)
    dmap_2 = MahalanobisDiffusionMap(**settings).fit(Y2, inverse_covariances=C2)
    return dmap_1.embedding_[pairs[:, 0]], dmap_2.embedding_[pairs[:, 1]], dmap_1, dmap_2


def test_square_spectra_give_degenerate_groups(square_diffusion_maps):
    _, _, dmap_1, dmap_2 = square_diffusion_maps
    groups = degenerate_groups(dmap_1.laplacian_eigenvalues_, dmap_2.laplacian_eigenvalues_)
    assert [group.tolist() for group in groups] == SQUARE_GROUPS


@pytest.mark.parametrize("angle", [0.4, 1.3, 2.8])
def test_square_rotation_recovered_from_two_pairs(square_diffusion_maps, angle):
    phi, psi, _, _ = square_diffusion_maps
    # Any orthonormal basis of a degenerate eigenspace is an eigenbasis, so rotating network 1's
    # coordinates inside the blocks gives another valid embedding; O must absorb the rotation.
    basis_change = block_diagonal(rotation(angle), [[1.0]], rotation(-angle) @ np.diag([1.0, -1.0]))
    rotated = phi @ basis_change.T
    oracle = orthogonal_procrustes(rotated, psi, SQUARE_GROUPS)
    two_pairs = orthogonal_procrustes(rotated[:2], psi[:2], SQUARE_GROUPS)
    assert np.linalg.norm(two_pairs.orthogonal_map - oracle.orthogonal_map) < 0.1
    assert alignment_residual(rotated, psi, two_pairs.orthogonal_map) < oracle.residual + 0.02
    assert oracle.residual < 0.1
    # Signs alone cannot undo the rotation.
    signs_only = orthogonal_procrustes(rotated, psi)
    assert signs_only.residual > 0.3


# ------------------------------------------- alignment without correspondences


@pytest.fixture(scope="module")
def segment_embeddings():
    """Two-coordinate embeddings of a segment sampled with density 1 + 1.5 x by two networks."""
    rng = np.random.default_rng(0)
    f1, f2 = RandomObservation(1, seed=1), RandomObservation(1, seed=2)
    x1, x2 = sample_segment(800, rng, density_slope=1.5), sample_segment(700, rng, density_slope=1.5)
    Y1, Y2, C1, C2, pairs = observe(f1, f2, x1, x2, rng.uniform(size=(50, 1)))
    settings = dict(n_components=2, n_neighbors=64, bandwidth_neighbor=20, random_state=0)
    dmap_1 = MahalanobisDiffusionMap(**settings).fit(Y1, inverse_covariances=C1)
    dmap_2 = MahalanobisDiffusionMap(**settings).fit(Y2, inverse_covariances=C2)
    groups = degenerate_groups(dmap_1.laplacian_eigenvalues_, dmap_2.laplacian_eigenvalues_)
    phi, psi = dmap_1.embedding_, dmap_2.embedding_
    truth = orthogonal_procrustes(phi[pairs[:, 0]], psi[pairs[:, 1]], groups).orthogonal_map
    return phi, psi, groups, truth


def test_segment_groups_are_single_coordinates(segment_embeddings):
    _, _, groups, truth = segment_embeddings
    assert [group.tolist() for group in groups] == [[0], [1]]
    np.testing.assert_array_equal(np.abs(truth), np.eye(2))


@pytest.mark.parametrize("signs", [(1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)])
def test_segment_signs_without_correspondences(segment_embeddings, signs):
    phi, psi, groups, truth = segment_embeddings
    flipped = phi * np.array(signs)
    result = align_without_correspondences(flipped, psi, groups, random_state=0)
    np.testing.assert_array_equal(result.orthogonal_map, truth * np.array(signs))
    assert result.method == "sign_search_icp"
    assert result.residual < 0.1


def test_block_rotation_without_correspondences():
    rng = np.random.default_rng(1)

    def sample(n):
        # An asymmetric cloud: a skewed, correlated 2-D part and a third coordinate tied to it.
        planar = rng.gamma(2.0, 0.5, size=(n, 2)) @ np.array([[1.0, 0.4], [0.0, 0.7]])
        return np.column_stack([planar, np.sin(planar[:, 0]) + 0.1 * rng.normal(size=n)])

    true_map = block_diagonal(rotation(2.0), [[-1.0]])
    source, target = sample(700), sample(600) @ true_map.T
    result = align_without_correspondences(source, target, [[0, 1], [2]], random_state=0)
    assert np.linalg.norm(result.orthogonal_map - true_map) < 0.15
    assert result.n_iter >= 1


def test_alignment_without_correspondences_rejects_single_points():
    with pytest.raises(ValueError, match="point sets"):
        align_without_correspondences(np.ones((1, 2)), np.ones((5, 2)))
