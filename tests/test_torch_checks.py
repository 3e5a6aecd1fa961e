import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from _torch_models import MLP, SmallCNN, train
from netequiv.torch import (
    NeuronSelection,
    SelectionError,
    WhitneyWarning,
    activations,
    check_selection,
    check_whitney,
    jacobians,
    propose_selection,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


class Fold(torch.nn.Module):
    """Three neurons of one input whose derivatives all vanish at x = 0, a fold."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Identity()

    def forward(self, x):
        return self.features(torch.cat([x**2, x**4, torch.cos(x) - 1], dim=1))


@pytest.fixture(scope="module")
def trained_mlp():
    torch.manual_seed(0)
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    y = torch.sin(math.pi * x[:, :1]) * x[:, 1:]
    model = MLP(hidden=10).double()
    train(model, x, y, steps=100)
    return model


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(0).uniform(-1, 1, size=(100, 2))


def with_dead_neuron(model, neuron):
    """A copy of ``model`` whose act1 neuron ``neuron`` is constant (zero input weights)."""
    copy = MLP(hidden=model.fc1.out_features).double()
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        copy.fc1.weight[neuron] = 0.0
    return copy


def test_constant_neuron_raises_with_report(trained_mlp, points):
    model = with_dead_neuron(trained_mlp, 2)
    with pytest.raises(SelectionError, match=r"constant over the data.*act1\[2\]") as raised:
        check_selection(model, points, "act1")
    report = raised.value.report
    np.testing.assert_array_equal(report.constant_neurons, [2])
    assert report.labels[2] == "act1[2]"
    assert not report.passed


def test_too_small_selection_warns(trained_mlp, points):
    with pytest.warns(WhitneyWarning, match=r"d = 2 neurons is the lower bound.*2d \+ 1 = 5") as record:
        report = check_selection(trained_mlp, points, "act1:0-2")
    assert len(record) == 1
    assert report.passed
    assert not report.meets_guarantee


def test_enough_neurons_do_not_warn(trained_mlp, points):
    with warnings.catch_warnings():
        warnings.simplefilter("error", WhitneyWarning)
        report = check_selection(trained_mlp, points, "act1:0-4")
    assert report.meets_guarantee
    assert report.ranks.min() == 2


def test_fewer_neurons_than_dimension_raise(trained_mlp, points):
    with pytest.warns(WhitneyWarning), pytest.raises(SelectionError, match="fewer than d = 2"):
        check_selection(trained_mlp, points, "act1:0")


def test_fold_points_are_located():
    x = np.linspace(-1, 1, 21)[:, None]
    values = jacobians(Fold().double(), x, "features")
    with pytest.raises(SelectionError, match=r"1 of 21 point\(s\).*first at point 10, rank 0") as raised:
        check_whitney(values, 1)
    report = raised.value.report
    np.testing.assert_array_equal(report.deficient_points, [10])
    assert report.ranks.tolist() == [1] * 10 + [0] + [1] * 10
    assert report.smallest_singular_values[10] == 0.0
    assert np.isinf(report.condition_numbers[10])
    # Away from the fold the smallest singular value grows with the distance to it.
    assert np.all(np.diff(report.smallest_singular_values[10:]) > 0)


def test_fold_report_without_raising():
    x = np.linspace(-1, 1, 21)[:, None]
    values = jacobians(Fold().double(), x, "features")
    report = check_whitney(values, 1, raise_on_failure=False)
    assert not report.passed
    assert report.deficient_fraction == pytest.approx(1 / 21)
    assert "rank below 1 at 1 of 21 point(s)" in report.summary()
    assert check_whitney(values, 1, max_deficient_fraction=0.1).passed


def test_rank_tolerance_follows_dtype():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 10, 1, 2))
    # Rows a, a + 1e-8 b and 2a: rank 2 in float64, but rank 1 at float32 precision.
    values = np.concatenate([a, a + 1e-8 * b, 2 * a], axis=1)
    with pytest.warns(WhitneyWarning):
        assert check_whitney(values, 2).passed
    with pytest.warns(WhitneyWarning), pytest.raises(SelectionError, match="rank below d = 2 at 10 of 10"):
        check_whitney(values.astype(np.float32), 2)


def test_check_whitney_argument_errors():
    with pytest.raises(ValueError, match=r"expected \(n, m, k\)"):
        check_whitney(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="d=3 exceeds"):
        check_whitney(np.ones((3, 2, 2)), 3)
    with pytest.raises(ValueError, match="NaN"):
        check_whitney(np.full((3, 2, 1), np.nan))


def _criterion(model, points, indices, d=2, quantile=0.05):
    """The proposal's criterion for a given set of act1 neurons."""
    selection = NeuronSelection({"act1": list(indices)})
    values = jacobians(model, points, selection) / activations(model, points, selection).std(axis=0)[None, :, None]
    return np.quantile(np.linalg.svd(values, compute_uv=False)[:, d - 1], quantile)


def test_proposal_avoids_dead_neurons_and_is_well_conditioned(trained_mlp, points):
    model = with_dead_neuron(with_dead_neuron(trained_mlp, 1), 6)
    selection, scores = propose_selection(model, points, "act1", return_scores=True)
    (_, chosen), = selection.entries
    assert len(chosen) == 5
    assert 1 not in chosen
    assert 6 not in chosen
    assert np.all(np.diff(scores[1:]) >= 0)
    assert scores[-1] == pytest.approx(_criterion(model, points, chosen))

    # The greedy choice beats most of the other 5-subsets of the 8 live neurons.
    live = [i for i in range(10) if i not in (1, 6)]
    others = [_criterion(model, points, subset) for subset in itertools.combinations(live, 5)]
    assert scores[-1] >= np.quantile(others, 0.9)

    with warnings.catch_warnings():
        warnings.simplefilter("error", WhitneyWarning)
        assert check_selection(model, points, selection).passed


def test_proposal_candidates_and_count(trained_mlp, points):
    selection = propose_selection(trained_mlp, points, "act1", n_neurons=3, candidates="4-")
    (_, chosen), = selection.entries
    assert len(chosen) == 3
    assert min(chosen) >= 4
    with pytest.raises(ValueError, match="fewer than the 5 requested"):
        propose_selection(trained_mlp, points, "act1", candidates=[0, 1, 2])


def test_proposal_on_feature_map_position():
    torch.manual_seed(4)
    model = SmallCNN().double()
    images = torch.randn(30, 1, 8, 8, dtype=torch.float64).numpy()
    # Inputs vary along a 2-dimensional tangent plane at each image.
    basis = np.linalg.qr(np.random.default_rng(5).normal(size=(64, 2)))[0]
    selection = propose_selection(model, images, "relu2", 2, candidates="(*,4,4)", tangent_basis=basis)
    (_, chosen), = selection.entries
    channels, rows, columns = np.unravel_index(chosen, (6, 8, 8))
    assert len(chosen) == 5
    assert np.all(rows == 4)
    assert np.all(columns == 4)
    assert len(set(channels.tolist())) == 5
