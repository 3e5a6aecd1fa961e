r"""Whitney and collapse checks of a neuron selection, and a well-conditioned selection helper.

m selected neurons observe a d-dimensional input manifold through their Jacobian J (m x k at
each point, k >= d coordinates). They can only embed the manifold where J has rank d, so d neurons
are the lower bound. Whitney's embedding theorem guarantees an embedding by 2d + 1 generic
functions, because with fewer the image may fold over or cross itself even where J has full
rank. The checks here are local: they find

- neurons that are constant over the data (their Jacobian row is zero at every point), and
- points where J has rank below d (the selection collapses a direction of the manifold there,
  as at a fold), with per-point ranks, the d-th singular values and condition numbers, which
  locate where a transformation between networks breaks down.

Rank tolerance
--------------
A singular value counts as zero when it is at most ``rtol`` times the median over points of the
largest singular value, one tolerance for all points, so that a point where every derivative
is tiny counts as rank-deficient. The default ``rtol`` is ``max(m, k)`` times the machine epsilon
of the Jacobians' dtype, the rule of :func:`numpy.linalg.matrix_rank`. A Jacobian row counts as
zero under the same tolerance.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ._hooks import as_module, model_dtype
from .activations import activations, resolve_selection
from .jacobians import jacobians
from .selection import LayerReference, NeuronSelection

__all__ = [
    "SelectionError",
    "WhitneyReport",
    "WhitneyWarning",
    "check_selection",
    "check_whitney",
    "propose_selection",
]


class WhitneyWarning(UserWarning):
    """Fewer than 2d + 1 neurons are selected for a d-dimensional input manifold."""


class SelectionError(ValueError):
    """A selection does not embed the input manifold; ``report`` contains the per-point results."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True, eq=False)
class WhitneyReport:
    """Per-point rank diagnostics of a neuron selection.

    Attributes
    ----------
    dimension : int
        The manifold dimension d.
    n_neurons : int
        The number of selected neurons m.
    singular_values : ndarray of shape (n, min(m, k))
        Singular values of J at each point, largest first.
    ranks : ndarray of shape (n,)
        Rank of J at each point under ``tolerance``.
    smallest_singular_values : ndarray of shape (n,)
        sigma_d, the d-th largest singular value at each point: the smallest one that must be
        nonzero for the selection to embed the manifold there (the smallest of all when k = d).
    condition_numbers : ndarray of shape (n,)
        sigma_1 / sigma_d at each point; inf where sigma_d counts as zero. The pulled-back metric
        pinv(J J^T) has condition number ``condition_numbers ** 2`` on its rank-d part.
    constant_neurons : ndarray of int
        Neurons whose Jacobian row is zero at every point.
    deficient_points : ndarray of int
        Points where the rank is below d.
    tolerance : float
        Absolute tolerance under which a singular value or row norm counts as zero.
    max_deficient_fraction : float
        The largest fraction of rank-deficient points that passes.
    labels : tuple of str or None
        Neuron labels, such as ``"fc2[3]"``, when known.
    """

    dimension: int
    n_neurons: int
    singular_values: np.ndarray
    ranks: np.ndarray
    smallest_singular_values: np.ndarray
    condition_numbers: np.ndarray
    constant_neurons: np.ndarray
    deficient_points: np.ndarray
    tolerance: float
    max_deficient_fraction: float = 0.0
    labels: tuple = None

    @property
    def n_points(self):
        """Number of points n."""
        return int(self.ranks.size)

    @property
    def deficient_fraction(self):
        """Fraction of points where the rank is below d."""
        return self.deficient_points.size / max(self.n_points, 1)

    @property
    def meets_guarantee(self):
        """Whether at least 2d + 1 neurons are selected (Whitney's guarantee)."""
        return self.n_neurons >= 2 * self.dimension + 1

    @property
    def passed(self):
        """Whether no neuron is constant and few enough points are rank-deficient."""
        return self.constant_neurons.size == 0 and self.deficient_fraction <= self.max_deficient_fraction

    def neuron_names(self, indices):
        """Labels of the given neurons, or ``"neuron i"`` when no labels are known."""
        if self.labels is None:
            return [f"neuron {i}" for i in np.asarray(indices).tolist()]
        return [self.labels[i] for i in np.asarray(indices).tolist()]

    def summary(self):
        """Describe the result in a few lines of text."""
        d, m = self.dimension, self.n_neurons
        finite = self.condition_numbers[np.isfinite(self.condition_numbers)]
        lines = [
            f"{m} neuron(s) for a {d}-dimensional manifold: d = {d} is the lower bound, 2d + 1 = "
            f"{2 * d + 1} the Whitney guarantee ({'met' if self.meets_guarantee else 'not met'}).",
            f"constant neurons: {', '.join(self.neuron_names(self.constant_neurons)) or 'none'}.",
            f"rank below {d} at {self.deficient_points.size} of {self.n_points} point(s) "
            f"({100 * self.deficient_fraction:.1f}%).",
        ]
        if finite.size:
            lines.append(
                f"condition number sigma_1 / sigma_d: median {np.median(finite):.3g}, max "
                f"{finite.max():.3g} over the points of full rank."
            )
        return "\n".join(lines)


def _check_dimension(d, k):
    if d is None:
        return k
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
        raise ValueError(f"d={d!r} is invalid; expected a positive integer, the manifold dimension.")
    if d > k:
        raise ValueError(
            f"d={d} exceeds the number of input coordinates k={k} of the Jacobians; J of shape "
            f"(n, m, {k}) has rank at most {k}. Pass the manifold dimension d <= {k}."
        )
    return int(d)


def check_whitney(
    jacobians,
    d=None,
    *,
    rtol=None,
    max_deficient_fraction=0.0,
    labels=None,
    raise_on_failure=True,
    stacklevel=2,
):
    """Check that a selection's Jacobians can embed a d-dimensional manifold.

    Parameters
    ----------
    jacobians : array-like of shape (n, m, k)
        Jacobians of m neurons with respect to k input coordinates at n points.
    d : int, default=None
        Manifold dimension; None uses k.
    rtol : float, default=None
        Relative rank tolerance; see the module docstring. For Jacobians of a float32 model
        that are stored as float64, pass ``max(m, k) * numpy.finfo(numpy.float32).eps`` or use
        :func:`check_selection`, which sets it from the model's dtype.
    max_deficient_fraction : float, default=0.0
        Raise when the fraction of points of rank below d exceeds this.
    labels : sequence of str, default=None
        Neuron labels for the messages.
    raise_on_failure : bool, default=True
        False returns the report without raising, for example to scan where a map breaks down.
    stacklevel : int, default=2
        Stack level of the warning.

    Returns
    -------
    WhitneyReport

    Raises
    ------
    SelectionError
        A neuron is constant over the data, or the rank is below d at more than
        ``max_deficient_fraction`` of the points. The exception's ``report`` contains the result.

    Warns
    -----
    WhitneyWarning
        Fewer than 2d + 1 neurons are selected.
    """
    values = np.asarray(jacobians)
    if values.ndim != 3:
        raise ValueError(
            f"jacobians has shape {values.shape}; expected (n, m, k): m neurons differentiated with "
            "respect to k coordinates at n points."
        )
    eps = np.finfo(values.dtype if values.dtype in (np.float32, np.float64) else np.float64).eps
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"jacobians contains NaN or infinite values (first at point {bad[0]}, neuron {bad[1]}).")
    n, m, k = values.shape
    if n == 0 or m == 0:
        raise ValueError(f"jacobians has shape {values.shape}; expected at least one point and one neuron.")
    d = _check_dimension(d, k)
    if not 0.0 <= max_deficient_fraction <= 1.0:
        raise ValueError(f"max_deficient_fraction={max_deficient_fraction!r} is invalid; expected a fraction in [0, 1].")
    if labels is not None and len(labels) != m:
        raise ValueError(f"labels has {len(labels)} entries for m={m} neurons.")
    rtol = max(m, k) * eps if rtol is None else float(rtol)

    # One absolute tolerance for all points, relative to the typical largest singular value.
    singular_values = np.linalg.svd(values, compute_uv=False)
    tolerance = rtol * float(np.median(singular_values[:, 0]))
    ranks = (singular_values > tolerance).sum(axis=1)
    if d <= singular_values.shape[1]:
        sigma_d = singular_values[:, d - 1]
    else:
        sigma_d = np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        condition = np.where(sigma_d > tolerance, singular_values[:, 0] / sigma_d, np.inf)
    row_norms = np.linalg.norm(values, axis=2)
    constant = np.flatnonzero(row_norms.max(axis=0) <= tolerance)
    deficient = np.flatnonzero(ranks < d)
    report = WhitneyReport(
        dimension=d,
        n_neurons=m,
        singular_values=singular_values,
        ranks=ranks,
        smallest_singular_values=sigma_d,
        condition_numbers=condition,
        constant_neurons=constant,
        deficient_points=deficient,
        tolerance=tolerance,
        max_deficient_fraction=float(max_deficient_fraction),
        labels=None if labels is None else tuple(labels),
    )

    if m < 2 * d + 1:
        warnings.warn(
            f"{m} neuron(s) are selected for a {d}-dimensional input manifold. d = {d} neurons is "
            f"the lower bound for an embedding, and 2d + 1 = {2 * d + 1} the number for which "
            "Whitney's theorem guarantees one: with fewer, the selected neurons may fold the "
            f"manifold or cross it over itself. Select at least {2 * d + 1} neurons "
            "(propose_selection chooses well-conditioned ones).",
            WhitneyWarning,
            stacklevel=stacklevel,
        )
    if not raise_on_failure:
        return report
    if constant.size:
        raise SelectionError(
            f"{constant.size} selected neuron(s) are constant over the data, their Jacobian row is "
            f"zero at all {n} points: {', '.join(report.neuron_names(constant[:10]))}"
            f"{', ...' if constant.size > 10 else ''}. A constant neuron (dead or saturated) carries "
            "no information about the input; remove it from the selection.",
            report,
        )
    if report.deficient_fraction > max_deficient_fraction:
        first = deficient[0]
        reason = (
            f"only {m} neuron(s) are selected, fewer than d = {d}"
            if m < d
            else f"first at point {first}, rank {ranks[first]}"
        )
        raise SelectionError(
            f"the Jacobian of the {m} selected neuron(s) has rank below d = {d} at "
            f"{deficient.size} of {n} point(s) ({100 * report.deficient_fraction:.1f}%, more "
            f"than max_deficient_fraction = {max_deficient_fraction}; {reason}), so the selection "
            "does not embed the input manifold there. The exception's report contains the "
            "per-point ranks and singular values. Select more or other neurons, or restrict the "
            "inputs to where the selection has full rank.",
            report,
        )
    return report


def check_selection(
    model,
    inputs,
    selection,
    d=None,
    *,
    domain_map=None,
    tangent_basis=None,
    parametrization=None,
    method="auto",
    rtol=None,
    max_deficient_fraction=0.0,
    raise_on_failure=True,
    batch_size=256,
    device=None,
    progress=None,
):
    """Compute a selection's Jacobians on a model and check them with :func:`check_whitney`.

    Parameters
    ----------
    model, inputs, selection, domain_map, tangent_basis, parametrization, method, batch_size, device, progress
        As in :func:`netequiv.torch.jacobians`.
    d : int, default=None
        Manifold dimension; None uses the number of input coordinates.
    rtol : float, default=None
        Relative rank tolerance; None uses ``max(m, k)`` times the epsilon of the model's dtype.
    max_deficient_fraction, raise_on_failure
        As in :func:`check_whitney`.

    Returns
    -------
    WhitneyReport
        With neuron labels such as ``"fc2[3]"``.
    """
    model = as_module(model)
    values = jacobians(
        model,
        inputs,
        selection,
        domain_map=domain_map,
        tangent_basis=tangent_basis,
        parametrization=parametrization,
        method=method,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    if rtol is None:
        dtype = model_dtype(model) or torch.get_default_dtype()
        rtol = max(values.shape[1:]) * torch.finfo(dtype).eps
    resolved = resolve_selection(
        model, inputs[:1], selection, parametrization=parametrization, domain_map=domain_map, device=device
    )
    return check_whitney(
        values,
        d,
        rtol=rtol,
        max_deficient_fraction=max_deficient_fraction,
        labels=resolved.labels,
        raise_on_failure=raise_on_failure,
        stacklevel=3,
    )


def _kth_singular_values(gram_selected, cross, diagonal, rank, chunk):
    """sigma_rank of [J_S; J_c] at every point for every candidate c, from Gram blocks.

    ``gram_selected`` (n, s, s) = J_S J_S^T, ``cross`` (n, s, r) = J_S J_c^T and ``diagonal``
    (n, r) = |J_c|^2. Returns (n, r).
    """
    n, s, r = cross.shape
    result = np.empty((n, r))
    for start in range(0, r, chunk):
        stop = min(start + chunk, r)
        width = stop - start
        gram = np.empty((n, width, s + 1, s + 1))
        gram[:, :, :s, :s] = gram_selected[:, None]
        gram[:, :, :s, s] = np.swapaxes(cross[:, :, start:stop], 1, 2)
        gram[:, :, s, :s] = np.swapaxes(cross[:, :, start:stop], 1, 2)
        gram[:, :, s, s] = diagonal[:, start:stop]
        eigenvalues = np.linalg.eigvalsh(gram)  # ascending
        result[:, start:stop] = np.sqrt(np.maximum(eigenvalues[:, :, s + 1 - rank], 0.0))
    return result


def propose_selection(
    model,
    inputs,
    layer,
    d=None,
    *,
    n_neurons=None,
    candidates=None,
    quantile=0.05,
    domain_map=None,
    tangent_basis=None,
    parametrization=None,
    method="auto",
    batch_size=256,
    device=None,
    progress=None,
    return_scores=False,
):
    r"""Propose a well-conditioned selection of 2d + 1 neurons from one layer.

    The choice of neurons changes the numerical conditioning of the pulled-back metric
    C = pinv(J J^T), whose largest eigenvalue on the manifold is 1 / sigma_d^2. Where sigma_d is
    small, C is large and noisy, as near a fold. The helper therefore chooses neurons greedily.
    Each step adds the candidate that most increases the criterion, the ``quantile`` over the
    points of sigma_r of the selection's standardised Jacobian, with r = min(size of the
    selection, d). Each neuron's Jacobian row is divided by the neuron's standard deviation over
    ``inputs``, which makes the criterion independent of each neuron's scale, as the Mahalanobis
    metric is. Constant neurons are never chosen.

    Parameters
    ----------
    model, inputs, domain_map, tangent_basis, parametrization, method, batch_size, device, progress
        As in :func:`netequiv.torch.jacobians`. A few hundred inputs that cover the data suffice.
    layer : str
        The layer to choose from, such as ``"fc2"`` or ``"lstm[0]"``.
    d : int, default=None
        Manifold dimension; None uses the number of input coordinates.
    n_neurons : int, default=None
        Neurons to choose; None chooses 2d + 1.
    candidates : indices or str, default=None
        Neurons of the layer to choose from, in the index forms of :class:`NeuronSelection`
        (for example ``"(*,7,7)"`` for every channel at one position of a feature map); None
        considers every neuron of the layer.
    quantile : float, default=0.05
        The quantile over points that is maximised; 0 maximises the worst point.
    return_scores : bool, default=False
        Also return the criterion after each step.

    Returns
    -------
    selection : NeuronSelection
        The chosen neurons of ``layer`` as flat indices, in increasing order.
    scores : ndarray of shape (n_neurons,)
        The criterion after each greedy step; only when ``return_scores`` is True.
    """
    model = as_module(model)
    reference = LayerReference.parse(layer)
    if isinstance(candidates, str):
        pool = NeuronSelection.parse(f"{reference}:{candidates}")
    else:
        pool = NeuronSelection({reference: candidates})
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile={quantile!r} is invalid; expected a number in [0, 1].")
    maps = {"domain_map": domain_map, "parametrization": parametrization}
    options = {"batch_size": batch_size, "device": device, "progress": progress}

    resolved = resolve_selection(model, inputs[:1], pool, device=device, **maps)
    values = jacobians(model, inputs, pool, tangent_basis=tangent_basis, method=method, **maps, **options)
    n, m, k = values.shape
    d = _check_dimension(d, k)
    count = 2 * d + 1 if n_neurons is None else int(n_neurons)
    if count < 1:
        raise ValueError(f"n_neurons={n_neurons!r} is invalid; expected a positive integer.")

    # Standardise each neuron and drop constant ones.
    spread = activations(model, inputs, pool, **maps, **options).std(axis=0)
    row_norms = np.linalg.norm(values, axis=2).max(axis=0)
    dtype = model_dtype(model) or torch.get_default_dtype()
    tolerance = max(m, k) * torch.finfo(dtype).eps * max(float(row_norms.max()), np.finfo(float).tiny)
    usable = np.flatnonzero((row_norms > tolerance) & (spread > 0))
    if usable.size < count:
        raise ValueError(
            f"layer {str(reference)!r} has {usable.size} non-constant candidate neuron(s) on these "
            f"inputs, fewer than the {count} requested (2d + 1 = {2 * d + 1} for d = {d}). Choose "
            "a wider layer, more candidates, or combine layers by hand."
        )
    standardised = values[:, usable] / spread[usable][None, :, None]
    squared_norms = np.einsum("nck,nck->nc", standardised, standardised)

    chosen, scores = [], []
    remaining = np.arange(usable.size)
    for step in range(count):
        rank = min(step + 1, d)
        selected_rows = standardised[:, chosen]
        gram_selected = np.einsum("nsk,ntk->nst", selected_rows, selected_rows)
        cross = np.einsum("nsk,nck->nsc", selected_rows, standardised[:, remaining])
        # Candidates per eigenvalue batch, so that the stacked Gram matrices stay near 2**24 entries.
        chunk = max(1, 2**24 // (n * (step + 1) ** 2))
        sigma = _kth_singular_values(gram_selected, cross, squared_norms[:, remaining], rank, chunk)
        criterion = np.quantile(sigma, quantile, axis=0)
        best = int(np.argmax(criterion))
        chosen.append(int(remaining[best]))
        scores.append(float(criterion[best]))
        remaining = np.delete(remaining, best)

    flat_indices = resolved.indices[0][usable[chosen]]
    selection = NeuronSelection({reference: sorted(int(i) for i in flat_indices)})
    if return_scores:
        return selection, np.asarray(scores)
    return selection
