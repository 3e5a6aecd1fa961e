"""Neighbourhoods of inputs and their activation clouds, for metrics estimated from clouds.

Around each input point, q inputs are drawn and pushed through the network. The covariance of
each resulting cloud of activations estimates ``s^2 J J^T`` for a neighbourhood of spread s, and
:func:`netequiv.local_metric.metric_from_clouds` inverts it. Two distributions are available:

- :func:`sample_ball`: uniform in a ball of radius r (an ellipsoid for per-coordinate radii). In
  k dimensions each coordinate has variance ``r^2 / (k + 2)``.
- :func:`sample_burst`: Gaussian with standard deviation s per coordinate.

The displacement is drawn in the coordinates of the input manifold: the flattened input, a
tangent plane (``tangent_basis``), or the coordinates of a ``parametrization``. The sampled
points are then mapped, in this order, by the parametrization and by a ``domain_map`` R, so that
network 2 can be observed at R(x) around the inputs x of network 1. For data ordered along a
path, :func:`sequence_windows` uses the consecutive samples around each one as its neighbourhood.
"""

import math

import numpy as np
import torch

from .activations import activations

__all__ = ["cloud_activations", "sample_ball", "sample_burst", "sequence_windows"]


def _apply_map(function, points, name):
    """Apply a torch map to a numpy batch, without gradients; returns float64 numpy."""
    dtype = torch.float64
    if isinstance(function, torch.nn.Module):
        floating = [p.dtype for p in (*function.parameters(), *function.buffers()) if p.is_floating_point()]
        dtype = floating[0] if floating else dtype
    with torch.no_grad():
        mapped = function(torch.as_tensor(points, dtype=dtype))
    if not isinstance(mapped, torch.Tensor) or mapped.ndim == 0 or mapped.shape[0] != points.shape[0]:
        raise ValueError(
            f"{name} must map a batch tensor of shape (b, ...) to a batch tensor with the same b; "
            f"it returned {type(mapped).__name__} {tuple(getattr(mapped, 'shape', ()))} for a batch "
            f"of shape {points.shape}."
        )
    return mapped.detach().to(torch.float64).cpu().numpy()


def _check_count(q):
    if not isinstance(q, (int, np.integer)) or isinstance(q, bool) or q < 2:
        raise ValueError(f"q={q!r} is invalid; expected an integer >= 2, the number of samples per neighbourhood.")
    return int(q)


def _spread(value, shape, name):
    """Broadcast a radius or scale to the coordinate shape; every entry must be positive."""
    spread = np.asarray(value, dtype=float)
    try:
        spread = np.broadcast_to(spread, shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {np.shape(value)}, which does not broadcast to the coordinate shape "
            f"{shape}; pass a scalar or one value per coordinate."
        ) from None
    if not np.all(np.isfinite(spread)) or np.any(spread <= 0):
        raise ValueError(f"{name}={value!r} is invalid; every entry must be positive and finite.")
    return spread


def _sample(centers, q, rng, tangent_basis, parametrization, domain_map, draw):
    """Draw displacements with ``draw(rng, shape)``, add them to the centers and map them."""
    centers = np.asarray(centers.detach().cpu() if isinstance(centers, torch.Tensor) else centers, dtype=float)
    if centers.ndim < 2:
        raise ValueError(
            f"centers has shape {centers.shape}; expected (n, ...): a batch of inputs, or of "
            "coordinates (n, k) with a parametrization."
        )
    if tangent_basis is not None and parametrization is not None:
        raise ValueError("tangent_basis and parametrization are both given; pass one.")
    q = _check_count(q)
    rng = np.random.default_rng(rng)
    n, shape = centers.shape[0], centers.shape[1:]

    if tangent_basis is None:
        points = centers[:, None] + draw(rng, (n, q, *shape), shape)
    else:
        dimension = math.prod(shape)
        basis = np.asarray(tangent_basis, dtype=float)
        if basis.ndim == 2:
            basis = basis[None]
        if basis.ndim != 3 or basis.shape[0] not in (1, n) or basis.shape[1] != dimension:
            raise ValueError(
                f"tangent_basis has shape {np.shape(tangent_basis)}; expected ({dimension}, k) or "
                f"({n}, {dimension}, k), with {dimension} the flattened input dimension."
            )
        steps = draw(rng, (n, q, basis.shape[2]), (basis.shape[2],))
        displacement = np.einsum("ndk,nqk->nqd", np.broadcast_to(basis, (n, *basis.shape[1:])), steps)
        points = centers[:, None] + displacement.reshape(n, q, *shape)

    flat = points.reshape(n * q, *shape)
    if parametrization is not None:
        flat = _apply_map(parametrization, flat, "parametrization")
    if domain_map is not None:
        flat = _apply_map(domain_map, flat, "domain_map")
    return flat.reshape(n, q, *flat.shape[1:])


def sample_ball(centers, radius, q, rng=None, *, tangent_basis=None, parametrization=None, domain_map=None):
    """Draw q points uniformly in a ball around each center.

    Parameters
    ----------
    centers : array-like of shape (n, ...)
        Inputs (of network 1 when ``domain_map`` is given), or manifold coordinates with
        ``parametrization``.
    radius : float or array-like
        Radius of the ball, or per-coordinate semi-axes of an ellipsoid, broadcastable to one
        center's shape (or to (k,) with ``tangent_basis``).
    q : int
        Number of points per center, at least 2.
    rng : int, numpy.random.Generator or None, default=None
        Seed or generator.
    tangent_basis : array-like of shape (D, k) or (n, D, k), default=None
        Sample in the k-dimensional tangent plane spanned by these columns instead of the full
        D-dimensional input space.
    parametrization : callable, default=None
        Torch map from a batch of coordinates to network inputs, applied to the samples.
    domain_map : callable, default=None
        Torch map R from network-1 inputs to network-2 inputs, applied last.

    Returns
    -------
    samples : ndarray of shape (n, q, ...), float64
        The mapped samples; feed them to :func:`cloud_activations`.
    """

    def draw(rng, size, coordinate_shape):
        spread = _spread(radius, coordinate_shape, "radius")
        k = math.prod(coordinate_shape)
        # Uniform in the unit k-ball: a uniform direction times a radius distributed as U^(1/k).
        directions = rng.standard_normal(size).reshape(size[0], size[1], k)
        directions /= np.linalg.norm(directions, axis=2, keepdims=True)
        lengths = rng.uniform(size=(size[0], size[1], 1)) ** (1.0 / k)
        return (directions * lengths).reshape(size) * spread

    return _sample(centers, q, rng, tangent_basis, parametrization, domain_map, draw)


def sample_burst(centers, scale, q, rng=None, *, tangent_basis=None, parametrization=None, domain_map=None):
    """Draw q points from a Gaussian around each center.

    Parameters
    ----------
    centers : array-like of shape (n, ...)
        As in :func:`sample_ball`.
    scale : float or array-like
        Standard deviation of each coordinate, broadcastable to one center's shape (or to (k,)
        with ``tangent_basis``).
    q : int
        Number of points per center, at least 2.
    rng : int, numpy.random.Generator or None, default=None
        Seed or generator.
    tangent_basis, parametrization, domain_map
        As in :func:`sample_ball`.

    Returns
    -------
    samples : ndarray of shape (n, q, ...), float64
    """

    def draw(rng, size, coordinate_shape):
        return rng.standard_normal(size) * _spread(scale, coordinate_shape, "scale")

    return _sample(centers, q, rng, tangent_basis, parametrization, domain_map, draw)


def sequence_windows(inputs, window):
    """Stack, for each sample of an ordered sequence, the ``window`` consecutive samples around it.

    The window of sample i starts at ``clip(i - window // 2, 0, n - window)``: centred where it
    fits, shifted (not shrunk) at the ends, as in
    :func:`netequiv.local_metric.metric_from_sequence`.

    Parameters
    ----------
    inputs : array-like of shape (n, ...)
        Samples ordered along a path (video frames, angles).
    window : int
        Number of samples per window, ``2 <= window <= n``.

    Returns
    -------
    windows : ndarray of shape (n, window, ...)
    """
    inputs = np.asarray(inputs.detach().cpu() if isinstance(inputs, torch.Tensor) else inputs)
    if inputs.ndim < 1:
        raise ValueError("inputs is a scalar; expected an ordered batch of shape (n, ...).")
    n = inputs.shape[0]
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or not 2 <= window <= n:
        raise ValueError(f"window={window!r} is invalid; expected an integer in [2, n={n}].")
    starts = np.clip(np.arange(n) - window // 2, 0, n - window)
    return inputs[starts[:, None] + np.arange(window)]


def cloud_activations(model, samples, selection, *, batch_size=1024, device=None, progress=None):
    """Compute the activations of the selected neurons at every sample of every neighbourhood.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
    samples : array-like of shape (n, q, ...)
        Network inputs, q around each of n points, as :func:`sample_ball`,
        :func:`sample_burst` or :func:`sequence_windows` return them.
    selection : NeuronSelection, str or dict
    batch_size, device, progress
        As in :func:`netequiv.torch.activations`.

    Returns
    -------
    clouds : ndarray of shape (n, q, m), float64
        Input for :func:`netequiv.local_metric.metric_from_clouds`.
    """
    samples = samples if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if samples.ndim < 3:
        raise ValueError(
            f"samples has shape {tuple(samples.shape)}; expected (n, q, ...): q inputs around each "
            "of n points."
        )
    n, q = samples.shape[:2]
    flat = samples.reshape(n * q, *samples.shape[2:])
    values = activations(model, flat, selection, batch_size=batch_size, device=device, progress=progress)
    return values.reshape(n, q, values.shape[1])
