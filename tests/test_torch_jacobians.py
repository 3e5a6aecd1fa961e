import math
import warnings

import numpy as np
import pytest
import torch

from _torch_models import MLP, ItemBranch, OneThreeOne, SmallCNN, StructuredOutputs, domain_map_s, train
from netequiv import MahalanobisDiffusionMap
from netequiv.local_metric import metric_from_jacobians
from netequiv.torch import activations, check_whitney, jacobians

STEP = 1e-6

# torch.func's forward mode loads decompositions through torch.jit.script, deprecated in torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def finite_differences(model, inputs, selection, directions=None, **options):
    """Central differences of the selected activations along each direction, shape (n, m, k).

    ``directions`` (k, *shape) or (n, k, *shape) defaults to the coordinate axes of one input.
    """
    inputs = np.asarray(inputs, dtype=float)
    n, shape = inputs.shape[0], inputs.shape[1:]
    if directions is None:
        directions = np.eye(math.prod(shape)).reshape(-1, *shape)
    directions = np.broadcast_to(directions, (n, *np.shape(directions)[-1 - len(shape) :]))
    k = directions.shape[1]
    plus = inputs[:, None] + STEP * directions
    minus = inputs[:, None] - STEP * directions
    both = np.concatenate([plus, minus]).reshape(2 * n * k, *shape)
    values = activations(model, both, selection, **options).reshape(2, n, k, -1)
    return np.swapaxes((values[0] - values[1]) / (2 * STEP), 1, 2)


def assert_matches_differences(jacobian, differences):
    # rtol 1e-4 on each entry; entries near zero are compared against the Jacobian's scale.
    atol = 1e-7 * np.abs(differences).max()
    np.testing.assert_allclose(jacobian, differences, rtol=1e-4, atol=atol)


@pytest.fixture(scope="module")
def trained_mlp():
    torch.manual_seed(0)
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    y = torch.sin(math.pi * x[:, :1]) * x[:, 1:]
    model = MLP(hidden=8).double()
    train(model, x, y, steps=100)
    return model


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(0).uniform(-1, 1, size=(40, 2))


@pytest.mark.parametrize("method", ["func", "autograd"])
def test_mlp_jacobian_matches_finite_differences(trained_mlp, points, method):
    selection = "fc1:0,3 act1:1-2 act2 output"
    jacobian = jacobians(trained_mlp, points, selection, method=method)
    assert jacobian.shape == (40, 13, 2)
    assert jacobian.dtype == np.float64
    assert_matches_differences(jacobian, finite_differences(trained_mlp, points, selection))


def test_func_and_autograd_agree(trained_mlp, points):
    selection = "act1 act2:0-4"
    by_func = jacobians(trained_mlp, points, selection, method="func", batch_size=16)
    by_autograd = jacobians(trained_mlp, points, selection, method="autograd", batch_size=7)
    np.testing.assert_allclose(by_func, by_autograd, rtol=1e-12, atol=1e-14)


def test_cnn_jacobian_matches_finite_differences():
    torch.manual_seed(1)
    model = SmallCNN().double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64).numpy()
    selection = "conv1:(0-3,4,4) relu2:(2,3,3),(5,0,7) output"
    by_func = jacobians(model, x, selection, method="func")
    by_autograd = jacobians(model, x, selection, method="autograd")
    assert by_func.shape == (3, 8, 64)
    assert_matches_differences(by_func, finite_differences(model, x, selection))
    np.testing.assert_allclose(by_func, by_autograd, rtol=1e-12, atol=1e-14)


def test_structured_outputs_jacobian():
    torch.manual_seed(2)
    model = StructuredOutputs().double()
    x = torch.randn(5, 3, dtype=torch.float64).numpy()
    selection = "split[1][0]:0-1 output[square]:2"
    assert_matches_differences(jacobians(model, x, selection), finite_differences(model, x, selection))


def test_untraceable_model_falls_back_to_autograd(trained_mlp, points):
    model = ItemBranch(hidden=8).double()
    model.load_state_dict(trained_mlp.state_dict())
    with pytest.warns(RuntimeWarning, match="falling back to autograd"):
        fallback = jacobians(model, points, "act2")
    np.testing.assert_allclose(fallback, jacobians(trained_mlp, points, "act2", method="func"), rtol=1e-12)
    with pytest.raises(RuntimeError, match="item"):
        jacobians(model, points, "act2", method="func")


def test_autograd_leaves_parameter_gradients_untouched(trained_mlp, points):
    trained_mlp.zero_grad(set_to_none=True)
    jacobians(trained_mlp, points, "act2", method="autograd")
    jacobians(trained_mlp, points, "act2", method="func")
    assert all(parameter.grad is None for parameter in trained_mlp.parameters())


def test_domain_map_chain_rule(trained_mlp, points):
    def twist(x):
        return torch.stack([x[:, 0] + 0.3 * torch.sin(2 * x[:, 1]), x[:, 1] ** 3 + x[:, 0]], dim=1)

    for method in ("func", "autograd"):
        jacobian = jacobians(trained_mlp, points, "act2", domain_map=twist, method=method)
        differences = finite_differences(trained_mlp, points, "act2", domain_map=twist)
        assert_matches_differences(jacobian, differences)


def test_tangent_basis_projects_jacobian(trained_mlp, points):
    rng = np.random.default_rng(3)
    shared = np.linalg.qr(rng.normal(size=(2, 1)))[0]
    per_point = np.linalg.qr(rng.normal(size=(40, 2, 1)))[0]
    full = jacobians(trained_mlp, points, "act1")
    for basis in (shared, per_point):
        projected = jacobians(trained_mlp, points, "act1", tangent_basis=basis)
        assert projected.shape == (40, 8, 1)
        np.testing.assert_allclose(projected, full @ np.broadcast_to(basis, (40, 2, 1)), rtol=1e-12, atol=1e-15)
    directions = np.swapaxes(per_point, 1, 2)
    assert_matches_differences(
        jacobians(trained_mlp, points, "act1", tangent_basis=per_point, method="autograd"),
        finite_differences(trained_mlp, points, "act1", directions=directions),
    )


def test_parametrization_coordinates(trained_mlp):
    def circle(angle):
        return torch.cat([0.8 * torch.cos(angle), 0.8 * torch.sin(angle)], dim=1)

    angles = np.linspace(0, 2 * np.pi, 25, endpoint=False)[:, None]
    for method in ("func", "autograd"):
        jacobian = jacobians(trained_mlp, angles, "act2 output", parametrization=circle, method=method)
        assert jacobian.shape == (25, 9, 1)
        assert_matches_differences(jacobian, finite_differences(trained_mlp, angles, "act2 output", parametrization=circle))


def test_argument_errors(trained_mlp, points):
    with pytest.raises(ValueError, match="method='numeric' is invalid"):
        jacobians(trained_mlp, points, "act1", method="numeric")
    with pytest.raises(ValueError, match="pass one"):
        jacobians(trained_mlp, points, "act1", tangent_basis=np.eye(2), parametrization=lambda u: u)
    with pytest.raises(ValueError, match="tangent_basis has shape"):
        jacobians(trained_mlp, points, "act1", tangent_basis=np.ones((3, 1)))
    with pytest.raises(TypeError, match="floating-point"):
        jacobians(trained_mlp, np.zeros((2, 2), dtype=int), "act1")


# The 1-3-1 experiment: network 2 learns the same function as network 1 on inputs S(x). With the
# domain map, both networks' Jacobians are taken with respect to x, so both Mahalanobis
# embeddings are intrinsic coordinates of [0, 1] and agree up to sign.


@pytest.fixture(scope="module")
def one_three_one_pair():
    x = torch.linspace(0, 1, 200, dtype=torch.float64)[:, None]
    target = torch.exp(-(((x - 0.5) / 0.2) ** 2))
    torch.manual_seed(0)
    first = OneThreeOne().double()
    assert train(first, x, target) < 1e-3
    torch.manual_seed(0)
    second = OneThreeOne().double()
    assert train(second, domain_map_s(x), target) < 1e-2
    return first, second


def _mahalanobis_embedding(Y, J):
    C = metric_from_jacobians(J, rank=1)
    return MahalanobisDiffusionMap(n_components=1, random_state=0).fit_transform(Y, inverse_covariances=C)[:, 0]


def test_domain_map_aligns_one_three_one_embeddings(one_three_one_pair):
    first, second = one_three_one_pair
    x = np.random.default_rng(0).uniform(0, 1, size=(500, 1))

    Y1 = activations(first, x, "act")
    Y2 = activations(second, x, "act", domain_map=domain_map_s)
    J1 = jacobians(first, x, "act")
    J2 = jacobians(second, x, "act", domain_map=domain_map_s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_whitney(J1, 1)
        check_whitney(J2, 1)

    phi1 = _mahalanobis_embedding(Y1, J1)
    phi2 = _mahalanobis_embedding(Y2, J2)
    assert abs(np.corrcoef(phi1, phi2)[0, 1]) > 0.999


def test_without_domain_map_embeddings_differ(one_three_one_pair):
    # Control: network 2 differentiated with respect to its own inputs S(x) measures distances
    # in S, not in x, so its embedding is a warped copy of network 1's.
    first, second = one_three_one_pair
    x = np.random.default_rng(0).uniform(0, 1, size=(500, 1))
    s = domain_map_s(torch.from_numpy(x)).numpy()

    phi1 = _mahalanobis_embedding(activations(first, x, "act"), jacobians(first, x, "act"))
    phi2 = _mahalanobis_embedding(activations(second, s, "act"), jacobians(second, s, "act"))
    assert abs(np.corrcoef(phi1, phi2)[0, 1]) < 0.999
