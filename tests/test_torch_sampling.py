import numpy as np
import pytest
import torch

from _torch_models import MLP
from netequiv.local_metric import metric_from_clouds, metric_from_jacobians, metric_from_sequence
from netequiv.torch import (
    activations,
    cloud_activations,
    jacobians,
    sample_ball,
    sample_burst,
    sequence_windows,
)

# torch.func's forward mode loads decompositions through torch.jit.script, deprecated in torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def test_ball_is_uniform_inside_radius():
    centers = np.array([[0.0, 0.0, 0.0], [5.0, -1.0, 2.0]])
    samples = sample_ball(centers, 0.1, 20000, rng=0)
    assert samples.shape == (2, 20000, 3)
    offsets = samples - centers[:, None]
    radii = np.linalg.norm(offsets, axis=2)
    assert radii.max() <= 0.1
    # Uniform in a 3-ball: P(|x| <= r / 2) = 1/8, and each coordinate has variance r^2 / 5.
    np.testing.assert_allclose((radii <= 0.05).mean(), 1 / 8, atol=0.01)
    np.testing.assert_allclose(offsets.var(axis=1), 0.1**2 / 5, rtol=0.05)


def test_ball_per_coordinate_radius_is_ellipsoid():
    samples = sample_ball(np.zeros((1, 2)), [1.0, 0.01], 5000, rng=1)[0]
    assert np.all((samples[:, 0] / 1.0) ** 2 + (samples[:, 1] / 0.01) ** 2 <= 1 + 1e-12)
    assert np.abs(samples[:, 1]).max() > 0.009


def test_burst_has_requested_scale():
    samples = sample_burst(np.zeros((3, 2, 2)), 0.5, 20000, rng=2)
    assert samples.shape == (3, 20000, 2, 2)
    np.testing.assert_allclose(samples.std(axis=1), 0.5, rtol=0.03)


def test_samples_are_reproducible():
    first = sample_burst(np.zeros((2, 2)), 1.0, 5, rng=3)
    np.testing.assert_array_equal(first, sample_burst(np.zeros((2, 2)), 1.0, 5, rng=3))


def test_tangent_basis_keeps_samples_in_plane():
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.normal(size=(4, 4, 2)))[0]  # a 2-plane at each of 4 points
    centers = rng.normal(size=(4, 2, 2))  # inputs of shape (2, 2), D = 4
    samples = sample_ball(centers, 0.2, 300, rng=5, tangent_basis=basis)
    offsets = (samples - centers[:, None]).reshape(4, 300, 4)
    normal_part = offsets - np.einsum("ndk,nek,nqe->nqd", basis, basis, offsets)
    assert np.abs(normal_part).max() < 1e-12
    assert np.linalg.norm(offsets, axis=2).max() <= 0.2 + 1e-12


def test_parametrization_and_domain_map_are_applied_in_order():
    def circle(angle):
        return torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)

    def shift(x):
        return x + torch.tensor([10.0, 0.0], dtype=x.dtype)

    angles = np.array([[0.0], [np.pi / 2]])
    samples = sample_burst(angles, 0.01, 50, rng=6, parametrization=circle, domain_map=shift)
    assert samples.shape == (2, 50, 2)
    np.testing.assert_allclose(np.linalg.norm(samples - [10.0, 0.0], axis=2), 1.0, rtol=1e-12)
    np.testing.assert_allclose(samples.mean(axis=1), [[11.0, 0.0], [10.0, 1.0]], atol=0.01)


def test_sampling_argument_errors():
    with pytest.raises(ValueError, match="q=1 is invalid"):
        sample_ball(np.zeros((1, 2)), 0.1, 1)
    with pytest.raises(ValueError, match="positive"):
        sample_burst(np.zeros((1, 2)), -1.0, 5)
    with pytest.raises(ValueError, match="does not broadcast"):
        sample_ball(np.zeros((1, 2)), [0.1, 0.2, 0.3], 5)
    with pytest.raises(ValueError, match="centers has shape"):
        sample_ball(np.zeros(3), 0.1, 5)


def test_sequence_windows_match_metric_from_sequence():
    t = np.linspace(0, 1, 30)
    frames = np.stack([np.cos(3 * t), np.sin(3 * t), t**2], axis=1)
    windows = sequence_windows(frames, 5)
    assert windows.shape == (30, 5, 3)
    np.testing.assert_array_equal(windows[0], frames[0:5])
    np.testing.assert_array_equal(windows[10], frames[8:13])
    np.testing.assert_array_equal(windows[29], frames[25:30])
    np.testing.assert_allclose(
        metric_from_clouds(windows, rank=1), metric_from_sequence(frames, 5, rank=1), rtol=1e-10
    )
    with pytest.raises(ValueError, match="window=31 is invalid"):
        sequence_windows(frames, 31)


def test_cloud_metric_matches_jacobian_metric():
    # A ball of radius r in k = 2 dimensions has covariance r^2 / 4 I, so the cloud of a smooth
    # map has covariance about (r^2 / 4) J J^T and its metric about (4 / r^2) pinv(J J^T).
    torch.manual_seed(0)
    model = MLP(hidden=5).double()
    centers = np.random.default_rng(7).uniform(-1, 1, size=(6, 2))
    radius = 1e-3
    clouds = cloud_activations(model, sample_ball(centers, radius, 4000, rng=8), "act2", batch_size=5000)
    assert clouds.shape == (6, 4000, 5)
    from_clouds = metric_from_clouds(clouds, rank=2) * radius**2 / 4
    from_jacobians = metric_from_jacobians(jacobians(model, centers, "act2"), rank=2)
    scale = np.abs(from_jacobians).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(from_clouds / scale, from_jacobians / scale, atol=0.06)


def test_cloud_activations_equal_flat_activations():
    torch.manual_seed(1)
    model = MLP().double()
    samples = sample_burst(np.zeros((3, 2)), 0.1, 4, rng=9)
    clouds = cloud_activations(model, samples, "fc2:0-2")
    np.testing.assert_array_equal(clouds.reshape(12, 3), activations(model, samples.reshape(12, 2), "fc2:0-2"))
    with pytest.raises(ValueError, match=r"expected \(n, q, ...\)"):
        cloud_activations(model, samples[0], "fc2:0")
