"""Synthetic manifolds seen through smooth random observation maps, with analytic Jacobians.

An observation map plays the part of a network's selected neurons: it sends points x of a
d-dimensional manifold to m activations y = f(x). Every map here returns its Jacobian dy/dx with
respect to the manifold's own coordinates (arc length for the circle), so that
``metric_from_jacobians(f.jacobian(x))`` is the exact pull-back metric.
"""

import numpy as np

__all__ = [
    "RandomObservation",
    "FoldedObservation",
    "CircleObservation",
    "sample_segment",
    "sample_square",
    "observe",
]


def _random_matrix(rng, rows, columns, singular_values):
    """A random matrix with the given singular values (length min(rows, columns))."""
    left, _ = np.linalg.qr(rng.normal(size=(rows, rows)))
    right, _ = np.linalg.qr(rng.normal(size=(columns, columns)))
    k = min(rows, columns)
    return left[:, :k] * np.asarray(singular_values, dtype=float) @ right[:, :k].T


class RandomObservation:
    """A smooth random embedding of R^d into R^m (m > d), shaped like a one-layer tanh network.

    ``f(x) = M (Q x + g(x)) + c`` with Q an m x d matrix of orthonormal columns,
    ``g(x) = B tanh(W x + b)`` scaled so that its Lipschitz constant is ``nonlinearity`` < 1, and
    M an invertible m x m matrix with singular values in [0.5, 2]. Because
    ``|Q x - Q x'| = |x - x'|`` and ``|g(x) - g(x')| <= nonlinearity |x - x'|``, the map
    ``Q x + g(x)`` is bi-Lipschitz, so f is an embedding with a full-rank Jacobian everywhere.
    """

    def __init__(self, d, m=5, width=16, nonlinearity=0.7, frequency=3.0, seed=0):
        if not 0.0 <= nonlinearity < 1.0:
            raise ValueError(f"nonlinearity={nonlinearity} must lie in [0, 1) for f to be an embedding.")
        rng = np.random.default_rng(seed)
        self.d, self.m = d, m
        self.Q = _random_matrix(rng, m, d, np.ones(d))
        self.W = frequency * rng.normal(size=(width, d))
        self.b = rng.uniform(-np.pi, np.pi, size=width)
        B = rng.normal(size=(m, width))
        # |tanh'| <= 1, so Lip(g) <= ||B||_2 ||W||_2; rescale B to make that bound `nonlinearity`.
        self.B = B * nonlinearity / (np.linalg.norm(B, 2) * np.linalg.norm(self.W, 2))
        self.M = _random_matrix(rng, m, m, np.geomspace(2.0, 0.5, m))
        self.c = rng.normal(size=m)

    def __call__(self, x):
        x = np.atleast_2d(np.asarray(x, dtype=float).reshape(len(x), -1))
        inner = x @ self.Q.T + np.tanh(x @ self.W.T + self.b) @ self.B.T
        return inner @ self.M.T + self.c

    def jacobian(self, x):
        """dy/dx at each point, shape (n, m, d)."""
        x = np.asarray(x, dtype=float).reshape(len(x), -1)
        slope = 1.0 - np.tanh(x @ self.W.T + self.b) ** 2  # (n, width)
        inner = self.Q[None] + np.einsum("mw,nw,wd->nmd", self.B, slope, self.W)
        return np.einsum("ij,njd->nid", self.M, inner)


class FoldedObservation:
    """An observation of the segment that folds it at ``fold``: f(x) = h((x - fold)^2 / scale).

    h is a :class:`RandomObservation` of R^1. Points at equal distance on either side of the fold
    give the same activations, and the Jacobian vanishes at the fold, so the neurons embed
    [0, fold] and [fold, 1] separately but not the segment.
    """

    def __init__(self, fold=0.6, m=5, seed=0, **kwargs):
        self.fold = fold
        self.scale = max(fold, 1.0 - fold)
        self.inner = RandomObservation(1, m=m, seed=seed, **kwargs)

    def _fold(self, x):
        x = np.asarray(x, dtype=float).reshape(len(x), 1)
        return (x - self.fold) ** 2 / self.scale, 2.0 * (x - self.fold) / self.scale

    def __call__(self, x):
        folded, _ = self._fold(x)
        return self.inner(folded)

    def jacobian(self, x):
        folded, slope = self._fold(x)
        return self.inner.jacobian(folded) * slope[:, None, :]


class CircleObservation:
    """A circle of circumference 1 seen through a :class:`RandomObservation` of R^2.

    The manifold coordinate is the arc length t in [0, 1); the circle is
    ``(cos 2 pi t, sin 2 pi t) / (2 pi)``.
    """

    def __init__(self, m=5, seed=0, **kwargs):
        self.inner = RandomObservation(2, m=m, seed=seed, **kwargs)

    @staticmethod
    def _circle(t):
        angle = 2.0 * np.pi * np.asarray(t, dtype=float).reshape(-1)
        points = np.column_stack([np.cos(angle), np.sin(angle)]) / (2.0 * np.pi)
        tangents = np.column_stack([-np.sin(angle), np.cos(angle)])[:, :, None]  # (n, 2, 1)
        return points, tangents

    def __call__(self, t):
        points, _ = self._circle(t)
        return self.inner(points)

    def jacobian(self, t):
        points, tangents = self._circle(t)
        return self.inner.jacobian(points) @ tangents


def sample_segment(n, rng, density_slope=0.0):
    """Sample n points of [0, 1] with density proportional to 1 + density_slope * x, shape (n, 1)."""
    u = rng.uniform(size=n)
    if density_slope == 0.0:
        return u[:, None]
    # Inverse of the CDF (x + s x^2 / 2) / (1 + s / 2).
    s = density_slope
    x = (-1.0 + np.sqrt(1.0 + 2.0 * s * u * (1.0 + s / 2.0))) / s
    return x[:, None]


def sample_square(n, rng):
    """Sample n points of the unit square uniformly, shape (n, 2)."""
    return rng.uniform(size=(n, 2))


def observe(f1, f2, x1, x2, x_pairs):
    """Activations and Jacobian metrics of two networks, with correspondences at ``x_pairs``.

    Network 1 sees the inputs ``x1`` and network 2 the inputs ``x2``; both also see ``x_pairs``,
    appended after their own rows, so ``correspondences`` pairs those appended rows.

    Returns
    -------
    Y1, Y2, C1, C2, correspondences
    """
    from netequiv.local_metric import metric_from_jacobians

    inputs_1 = np.concatenate([x1, x_pairs])
    inputs_2 = np.concatenate([x2, x_pairs])
    p = len(x_pairs)
    correspondences = np.column_stack([len(x1) + np.arange(p), len(x2) + np.arange(p)])
    return (
        f1(inputs_1),
        f2(inputs_2),
        metric_from_jacobians(f1.jacobian(inputs_1)),
        metric_from_jacobians(f2.jacobian(inputs_2)),
        correspondences,
    )
