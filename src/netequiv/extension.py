"""Out-of-sample maps: interpolate a function known at training points to new points.

Used for the inverse maps of the method (from an embedding back to activations, psi^-1) and for
predicting any other quantity known at the training points. The Nystrom extension of the
embedding itself lives with the estimator, in :mod:`netequiv.diffusion_maps`.

Methods
-------
``"nearest"``
    The value at the nearest training point.
``"linear"``
    A local linear least-squares fit on the ``n_neighbors`` nearest training points, weighted by
    a Gaussian of the distance scaled to the farthest of them. Exact for affine functions, and
    continuous in the query point except where the neighbour set changes.
``"rbf"``
    Thin-plate-spline radial basis function interpolation on the ``n_neighbors`` nearest training
    points (:class:`scipy.interpolate.RBFInterpolator`), with a linear polynomial term.
"""

import numpy as np
from scipy.interpolate import RBFInterpolator
from sklearn.neighbors import NearestNeighbors

__all__ = ["Interpolator", "INTERPOLATION_METHODS"]

INTERPOLATION_METHODS = ("nearest", "linear", "rbf")


class Interpolator:
    """Interpolate values known at training points to new points.

    Parameters
    ----------
    method : {"nearest", "linear", "rbf"}, default="linear"
        See the module docstring.
    n_neighbors : int, default=None
        Neighbours used by ``"linear"`` and ``"rbf"``; None uses ``max(2 * (dim + 1), 8)``, dim
        being the number of input coordinates.
    smoothing : float, default=0.0
        Smoothing of the ``"rbf"`` interpolant (0 interpolates exactly).

    Attributes
    ----------
    X_ : ndarray of shape (n, dim)
        Training points.
    values_ : ndarray of shape (n, p)
        Training values.
    """

    def __init__(self, method="linear", n_neighbors=None, smoothing=0.0):
        self.method = method
        self.n_neighbors = n_neighbors
        self.smoothing = smoothing

    def fit(self, X, values):
        X = np.asarray(X, dtype=float)
        values = np.asarray(values, dtype=float)
        if self.method not in INTERPOLATION_METHODS:
            raise ValueError(f"method={self.method!r} is invalid; expected one of {INTERPOLATION_METHODS}.")
        if X.ndim != 2 or values.shape[0] != X.shape[0]:
            raise ValueError(
                f"X has shape {X.shape} and values {values.shape}; expected (n, dim) and (n, ...) "
                "with the same n."
            )
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(values))):
            raise ValueError("X or values contain NaN or infinite entries; interpolation needs finite data.")
        self._value_shape = values.shape[1:]
        self.X_ = X
        self.values_ = values.reshape(len(X), -1)
        dim = X.shape[1]
        k = self.n_neighbors if self.n_neighbors is not None else max(2 * (dim + 1), 8)
        self.n_neighbors_ = int(min(k, len(X)))
        self._tree = NearestNeighbors().fit(X)
        if self.method == "rbf":
            self._rbf = RBFInterpolator(
                X, self.values_, neighbors=self.n_neighbors_, kernel="thin_plate_spline",
                smoothing=self.smoothing, degree=1,
            )
        return self

    def predict(self, X_new):
        X_new = np.asarray(X_new, dtype=float)
        if X_new.ndim != 2 or X_new.shape[1] != self.X_.shape[1]:
            raise ValueError(f"X_new has shape {X_new.shape}; expected (n_new, {self.X_.shape[1]}).")
        if self.method == "nearest":
            index = self._tree.kneighbors(X_new, n_neighbors=1, return_distance=False)[:, 0]
            result = self.values_[index]
        elif self.method == "rbf":
            result = self._rbf(X_new)
        else:
            result = self._local_linear(X_new)
        return result.reshape((len(X_new),) + self._value_shape)

    def _local_linear(self, X_new):
        distances, indices = self._tree.kneighbors(X_new, n_neighbors=self.n_neighbors_)
        scale = np.maximum(distances[:, -1:], np.finfo(float).tiny)
        weights = np.exp(-((distances / scale) ** 2))  # (n_new, k)
        # Design matrix [1, x_j - x_new] for each neighbour j.
        offsets = self.X_[indices] - X_new[:, None, :]
        design = np.concatenate([np.ones(offsets.shape[:2] + (1,)), offsets], axis=2)
        weighted = design * weights[:, :, None]
        gram = np.einsum("nki,nkj->nij", weighted, design)
        rhs = np.einsum("nki,nkp->nip", weighted, self.values_[indices])
        # A small ridge keeps the solve stable where the neighbours span fewer than dim directions;
        # it is scaled to the Gram matrix and leaves well-posed fits unchanged to round-off.
        ridge = 1e-10 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(gram.shape[1])
        coefficients = np.linalg.solve(gram + ridge, rhs)
        # The intercept is the fitted value at the query point.
        return coefficients[:, 0, :]
