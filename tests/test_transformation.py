"""Tests of NetworkTransformation on manifolds seen through two known observation maps.

"Interior" test points are those at least 0.1 from the boundary of the unit segment or square:
diffusion-map coordinates are flat at the boundary, so inverting them is ill-conditioned there.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from _manifolds import (
    CircleObservation,
    FoldedObservation,
    RandomObservation,
    observe,
    sample_segment,
    sample_square,
)
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from netequiv import NetworkTransformation
from netequiv.local_metric import metric_from_jacobians



@pytest.fixture(autouse=True, scope="module")
def single_blas_thread():
    # The matrices here are small; threaded BLAS on cores shared with other jobs runs many times
    # slower than one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        yield

# A bandwidth wider than the default smooths the sampling noise of the eigenvectors, which
# matters when the two networks see different samples of the segment.
SEGMENT_SETTINGS = dict(n_components=1, n_neighbors=128, bandwidth_neighbor=40, random_state=0)
# On a surface, 128 neighbours keep the Gaussian kernel from being cut off above exp(-5).
SQUARE_SETTINGS = dict(n_components=2, n_neighbors=128, random_state=0)

SEGMENT_PATH = np.linspace(0.0, 1.0, 201)[:, None]
SEGMENT_INTERIOR = (SEGMENT_PATH[:, 0] >= 0.1) & (SEGMENT_PATH[:, 0] <= 0.9)
_grid = np.linspace(0.0, 1.0, 21)
SQUARE_GRID = np.array(np.meshgrid(_grid, _grid)).reshape(2, -1).T
SQUARE_INTERIOR = np.all((SQUARE_GRID >= 0.1) & (SQUARE_GRID <= 0.9), axis=1)


def fit_pair(f1, f2, x1, x2, x_pairs, settings, with_correspondences=True):
    Y1, Y2, C1, C2, pairs = observe(f1, f2, x1, x2, x_pairs)
    transformation = NetworkTransformation(**settings).fit(
        Y1,
        Y2,
        inverse_covariances_1=C1,
        inverse_covariances_2=C2,
        correspondences=pairs if with_correspondences else None,
    )
    return SimpleNamespace(
        T=transformation, f1=f1, f2=f2, Y1=Y1, Y2=Y2, C1=C1, C2=C2, pairs=pairs,
        inputs_2=np.concatenate([x2, x_pairs]),
    )


def interior_rmse(per_point, interior):
    return float(np.sqrt(np.mean(per_point[interior] ** 2)))


@pytest.fixture(scope="module")
def segment():
    """One segment through two random maps; the networks see different samples of it."""
    rng = np.random.default_rng(0)
    f1, f2 = RandomObservation(1, seed=1), RandomObservation(1, seed=2)
    x1, x2 = sample_segment(1500, rng), sample_segment(1200, rng)
    return fit_pair(f1, f2, x1, x2, rng.uniform(size=(10, 1)), SEGMENT_SETTINGS)


@pytest.fixture(scope="module")
def square():
    """One square through two random maps; both networks see the same inputs."""
    rng = np.random.default_rng(0)
    f1, f2 = RandomObservation(2, seed=1), RandomObservation(2, seed=2)
    x = sample_square(1200, rng)
    return fit_pair(f1, f2, x, x, rng.uniform(size=(10, 2)), SQUARE_SETTINGS)


@pytest.fixture(scope="module")
def folded():
    """Network 2 folds the segment at 0.6: it sees |x - 0.6| only."""
    rng = np.random.default_rng(1)
    f1, f2 = RandomObservation(1, seed=1), FoldedObservation(fold=0.6, seed=2)
    x1, x2 = sample_segment(1000, rng), sample_segment(800, rng)
    return fit_pair(f1, f2, x1, x2, rng.uniform(size=(10, 1)), SEGMENT_SETTINGS)


# --------------------------------------------------------------- ground truth


def test_segment_transform_interior_error(segment):
    scores = segment.T.evaluate(segment.f1(SEGMENT_PATH), segment.f2(SEGMENT_PATH))
    assert interior_rmse(scores.relative_error_per_point, SEGMENT_INTERIOR) < 0.02
    assert scores.alignment_residual < 0.05


def test_segment_inverse_transform_interior_error(segment):
    predicted = segment.T.inverse_transform(segment.f2(SEGMENT_PATH))
    per_point = np.linalg.norm(predicted - segment.f1(SEGMENT_PATH), axis=1) / segment.T.spread_1_
    assert interior_rmse(per_point, SEGMENT_INTERIOR) < 0.02


def test_segment_verdict_equivalent(segment):
    result = segment.T.equivalence_test(segment.f1(SEGMENT_PATH), segment.f2(SEGMENT_PATH), random_state=0)
    assert result.verdict == "equivalent", result.summary()
    assert result.equivalent
    assert result.criteria["alignment"].p_value <= 0.05
    assert result.criteria["transformation"].p_value <= 0.05
    assert result.criteria["spectrum"].statistic < result.criteria["spectrum"].threshold


def test_square_transform_interior_error(square):
    scores = square.T.evaluate(square.f1(SQUARE_GRID), square.f2(SQUARE_GRID))
    assert interior_rmse(scores.relative_error_per_point, SQUARE_INTERIOR) < 0.02
    assert [group.tolist() for group in square.T.coordinate_groups_] == [[0, 1]]


def test_square_verdict_equivalent(square):
    result = square.T.equivalence_test(square.f1(SQUARE_GRID), square.f2(SQUARE_GRID), random_state=0)
    assert result.verdict == "equivalent", result.summary()


def test_predict_function_output_layer(segment):
    def output_layer(x):
        return np.column_stack([np.sin(3.0 * x[:, 0]), x[:, 0] ** 2, np.tanh(4.0 * x[:, 0] - 2.0)])

    values_2 = output_layer(segment.inputs_2)
    predicted = segment.T.predict_function(values_2, segment.f1(SEGMENT_PATH))
    spread = np.sqrt(np.mean(np.sum((values_2 - values_2.mean(axis=0)) ** 2, axis=1)))
    per_point = np.linalg.norm(predicted - output_layer(SEGMENT_PATH), axis=1) / spread
    assert predicted.shape == (len(SEGMENT_PATH), 3)
    assert interior_rmse(per_point, SEGMENT_INTERIOR) < 0.02
    scalar = segment.T.predict_function(values_2[:, 0], segment.f1(SEGMENT_PATH))
    np.testing.assert_allclose(scalar, predicted[:, 0])


def test_evaluate_scores_are_consistent(segment):
    Y1_test, Y2_test = segment.f1(SEGMENT_PATH), segment.f2(SEGMENT_PATH)
    scores = segment.T.evaluate(Y1_test, Y2_test)
    assert scores.relative_error_per_point.shape == (len(SEGMENT_PATH),)
    assert scores.relative_rmse_per_neuron.shape == (segment.Y2.shape[1],)
    assert np.sqrt(np.mean(scores.relative_error_per_point**2)) == pytest.approx(scores.relative_rmse)
    predicted = segment.T.transform(Y1_test)
    expected = np.sqrt(np.mean((predicted - Y2_test) ** 2, axis=0)) / segment.Y2.std(axis=0)
    np.testing.assert_allclose(scores.relative_rmse_per_neuron, expected)


# ----------------------------------------------------------------- negatives


def test_segment_and_circle_not_equivalent():
    rng = np.random.default_rng(2)
    f1, f2 = RandomObservation(1, seed=1), CircleObservation(seed=2)
    settings = dict(SEGMENT_SETTINGS, n_components=2)
    pair = fit_pair(f1, f2, sample_segment(1000, rng), sample_segment(800, rng), rng.uniform(size=(10, 1)), settings)
    result = pair.T.equivalence_test(f1(SEGMENT_PATH), f2(SEGMENT_PATH), random_state=0)
    assert result.verdict == "not equivalent"
    assert not result.criteria["spectrum"].passed, result.summary()
    # The circle's first eigenvalue is four times the segment's (both of length 1).
    assert result.laplacian_eigenvalues_2[0] / result.laplacian_eigenvalues_1[0] == pytest.approx(4.0, rel=0.15)


def test_folded_segment_not_equivalent(folded):
    result = folded.T.equivalence_test(folded.f1(SEGMENT_PATH), folded.f2(SEGMENT_PATH), random_state=0)
    assert result.verdict == "not equivalent"
    assert not result.criteria["spectrum"].passed, result.summary()
    assert not result.criteria["transformation"].passed, result.summary()


def test_fold_located_from_jacobians(folded):
    result = folded.T.breakdown(folded.f1(SEGMENT_PATH), jacobians_2=folded.f2.jacobian(SEGMENT_PATH))
    assert result.fold_index is not None
    assert abs(SEGMENT_PATH[result.fold_index, 0] - 0.6) < 0.05
    assert result.conditioning_2[result.fold_index] < 0.1
    assert result.broken[result.fold_index]
    assert result.scores[result.fold_index] > 1.0


def test_fold_located_from_metrics_and_path(folded):
    path = np.linspace(0.0, 1.0, 200)[:, None]  # avoids x = 0.6, where the metric is zero
    metrics = metric_from_jacobians(folded.f2.jacobian(path))
    from_metrics = folded.T.breakdown(folded.f1(path), inverse_covariances_2=metrics)
    from_path = folded.T.breakdown(folded.f1(path), Y2_path=folded.f2(path))
    for result in (from_metrics, from_path):
        assert result.fold_index is not None
        assert abs(path[result.fold_index, 0] - 0.6) < 0.05


def test_breakdown_where_path_leaves_domain():
    # Trained on [0, 0.7]; network 2 folds at 0.85, outside the training domain.
    rng = np.random.default_rng(3)
    f1, f2 = RandomObservation(1, seed=1), FoldedObservation(fold=0.85, seed=2)
    x1, x2 = 0.7 * sample_segment(1000, rng), 0.7 * sample_segment(800, rng)
    pair = fit_pair(f1, f2, x1, x2, 0.7 * rng.uniform(size=(10, 1)), SEGMENT_SETTINGS)
    inside = 0.7 * SEGMENT_PATH
    verdict = pair.T.equivalence_test(f1(inside), f2(inside), random_state=0)
    assert verdict.verdict == "equivalent", verdict.summary()

    result = pair.T.breakdown(f1(SEGMENT_PATH), jacobians_1=f1.jacobian(SEGMENT_PATH), jacobians_2=f2.jacobian(SEGMENT_PATH))
    assert abs(SEGMENT_PATH[result.round_trip_index, 0] - 0.7) < 0.05
    assert abs(SEGMENT_PATH[result.fold_index, 0] - 0.85) < 0.05
    assert result.first_index == result.round_trip_index
    assert not np.any(result.broken[: result.first_index])
    interior = (SEGMENT_PATH[:, 0] >= 0.1) & (SEGMENT_PATH[:, 0] <= 0.6)
    assert np.all(result.round_trip_errors[interior] < 0.01)


# ------------------------------------------------------ degenerate eigenspace


def test_square_needs_two_pairs():
    # Network 2 sees a subset of network 1's inputs, so each eigensolver picks its own basis of
    # the degenerate eigenspace of cos(pi x) and cos(pi y).
    rng = np.random.default_rng(0)
    f1, f2 = RandomObservation(2, seed=1), RandomObservation(2, seed=2)
    x1 = sample_square(1200, rng)
    x2 = x1[rng.permutation(len(x1))[:1000]]
    pair = fit_pair(f1, f2, x1, x2, rng.uniform(0.1, 0.9, size=(10, 2)), SQUARE_SETTINGS)
    assert pair.T.min_correspondences_ == 2

    two = NetworkTransformation(**SQUARE_SETTINGS).fit(
        pair.Y1, pair.Y2, inverse_covariances_1=pair.C1, inverse_covariances_2=pair.C2,
        correspondences=pair.pairs[:2],
    )
    assert np.linalg.norm(two.orthogonal_map_ - pair.T.orthogonal_map_) < 0.05
    ten_pairs = pair.T.evaluate(f1(SQUARE_GRID), f2(SQUARE_GRID))
    two_pairs = two.evaluate(f1(SQUARE_GRID), f2(SQUARE_GRID))
    assert interior_rmse(two_pairs.relative_error_per_point, SQUARE_INTERIOR) < (
        interior_rmse(ten_pairs.relative_error_per_point, SQUARE_INTERIOR) + 0.01
    )

    with pytest.raises(ValueError, match="Pass at least 2 correspondences"):
        NetworkTransformation(**SQUARE_SETTINGS).fit(
            pair.Y1, pair.Y2, inverse_covariances_1=pair.C1, inverse_covariances_2=pair.C2,
            correspondences=pair.pairs[:1],
        )


# ---------------------------------------------------- without correspondences


def test_segment_without_correspondences():
    rng = np.random.default_rng(0)
    f1, f2 = RandomObservation(1, seed=1), RandomObservation(1, seed=2)
    x1, x2 = sample_segment(1500, rng, density_slope=1.5), sample_segment(1200, rng, density_slope=1.5)
    pair = fit_pair(f1, f2, x1, x2, rng.uniform(size=(10, 1)), SEGMENT_SETTINGS, with_correspondences=False)
    assert pair.T.correspondences_ is None
    assert pair.T.alignment_.method == "sign_search_icp"
    with_pairs = NetworkTransformation(**SEGMENT_SETTINGS).fit(
        pair.Y1, pair.Y2, inverse_covariances_1=pair.C1, inverse_covariances_2=pair.C2,
        correspondences=pair.pairs,
    )
    np.testing.assert_array_equal(pair.T.orthogonal_map_, with_pairs.orthogonal_map_)
    scores = pair.T.evaluate(f1(SEGMENT_PATH), f2(SEGMENT_PATH))
    assert interior_rmse(scores.relative_error_per_point, SEGMENT_INTERIOR) < 0.02


# ---------------------------------------------------------------- save / load


def assert_same_predictions(first, second, Y1, Y2):
    np.testing.assert_array_equal(first.transform(Y1), second.transform(Y1))
    np.testing.assert_array_equal(first.inverse_transform(Y2), second.inverse_transform(Y2))
    np.testing.assert_array_equal(first.orthogonal_map_, second.orthogonal_map_)
    first_scores, second_scores = first.evaluate(Y1, Y2), second.evaluate(Y1, Y2)
    assert first_scores.relative_rmse == second_scores.relative_rmse
    assert first_scores.alignment_residual == second_scores.alignment_residual


def test_save_load_round_trip(segment, tmp_path):
    path = tmp_path / "segment.npz"
    segment.T.save(path)
    loaded = NetworkTransformation.load(path)

    Y1, Y2 = segment.f1(SEGMENT_PATH), segment.f2(SEGMENT_PATH)
    assert_same_predictions(segment.T, loaded, Y1, Y2)
    values_2 = np.sin(3.0 * segment.inputs_2)
    np.testing.assert_array_equal(
        segment.T.predict_function(values_2, Y1), loaded.predict_function(values_2, Y1)
    )
    np.testing.assert_array_equal(loaded.correspondences_, segment.T.correspondences_)
    assert loaded.get_params() == segment.T.get_params()
    assert [g.tolist() for g in loaded.coordinate_groups_] == [g.tolist() for g in segment.T.coordinate_groups_]

    with np.load(path, allow_pickle=False) as data:
        metadata = json.loads(str(data["metadata"]))
    assert metadata["params"]["bandwidth_neighbor"] == 40


def test_save_load_without_metrics_or_correspondences(tmp_path):
    rng = np.random.default_rng(5)
    x1, x2 = sample_segment(400, rng, density_slope=1.5), sample_segment(350, rng, density_slope=1.5)
    line = np.array([[1.0, 2.0, -1.0]]) / np.sqrt(6.0)
    Y1, Y2 = x1 @ line, x2 @ line[:, ::-1]  # two isometric observations of the segment
    transformation = NetworkTransformation(n_components=1, remove_harmonics=True, random_state=0).fit(Y1, Y2)
    path = tmp_path / "euclidean"
    transformation.save(path)
    loaded = NetworkTransformation.load(tmp_path / "euclidean.npz")
    assert loaded.correspondences_ is None
    assert loaded.diffusion_map_1_.inverse_covariances_ is None
    np.testing.assert_array_equal(loaded.diffusion_map_1_.harmonic_residuals_, transformation.diffusion_map_1_.harmonic_residuals_)
    x_new = np.linspace(0.05, 0.95, 30)[:, None]
    assert_same_predictions(transformation, loaded, x_new @ line, x_new @ line[:, ::-1])


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(ValueError, match="no 'metadata' member"):
        NetworkTransformation.load(path)


# ---------------------------------------------------------------- validation


@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(0)
    f1, f2 = RandomObservation(1, seed=1), RandomObservation(1, seed=2)
    return observe(f1, f2, sample_segment(300, rng), sample_segment(300, rng), rng.uniform(size=(5, 1)))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: {**d, "Y1": np.where(np.arange(len(d["Y1"]))[:, None] == 7, np.nan, d["Y1"])}, "NaN.*row 7"),
        (lambda d: {**d, "Y2": d["Y2"][:, 0]}, r"Y2 has shape \(305,\)"),
        (lambda d: {**d, "correspondences": d["correspondences"][:, :1]}, r"expected \(p, 2\)"),
        (lambda d: {**d, "correspondences": d["correspondences"] + 0.0}, "integer row indices"),
        (lambda d: {**d, "correspondences": d["correspondences"] + [0, 100]}, "contains 400, not a row of Y2"),
        (lambda d: {**d, "correspondences": d["correspondences"][:0]}, "Pass at least 1 correspondence[.]"),
        (lambda d: {**d, "inverse_covariances_2": d["inverse_covariances_2"][:10]}, "inverse_covariances has shape"),
    ],
)
def test_fit_rejects_invalid_input(small_data, change, message):
    Y1, Y2, C1, C2, pairs = small_data
    arguments = change(
        {"Y1": Y1, "Y2": Y2, "inverse_covariances_1": C1, "inverse_covariances_2": C2, "correspondences": pairs}
    )
    with pytest.raises(ValueError, match=message):
        NetworkTransformation(n_components=1, random_state=0).fit(**arguments)


def test_methods_reject_invalid_input(segment):
    with pytest.raises(ValueError, match="fitted with 5"):
        segment.T.transform(np.ones((3, 4)))
    with pytest.raises(ValueError, match="row for row"):
        segment.T.evaluate(segment.Y1[:5], segment.Y2[:6])
    with pytest.raises(ValueError, match="Pass at least 5 pairs"):
        segment.T.equivalence_test(segment.Y1[:4], segment.Y2[:4])
    with pytest.raises(ValueError, match=r"values_2 has shape \(3,\)"):
        segment.T.predict_function(np.ones(3), segment.Y1[:2])
    with pytest.raises(ValueError, match="jacobians_2 has shape"):
        segment.T.breakdown(segment.Y1[:10], jacobians_2=np.ones((9, 5, 1)))


def test_unfitted_and_parameters():
    transformation = NetworkTransformation(n_components=3, interpolation="nearest", degeneracy_tol=0.2)
    with pytest.raises(NotFittedError):
        transformation.transform(np.ones((2, 5)))
    copy = clone(transformation)
    assert copy.get_params() == transformation.get_params()
    with pytest.raises(ValueError, match="interpolation"):
        NetworkTransformation(interpolation="cubic").fit(np.ones((20, 2)), np.ones((20, 2)))
