r"""Jacobians of selected neurons with respect to the input (manifold) coordinates.

For each sample the Jacobian :math:`J = \partial y / \partial c` of the m selected neurons y is
taken with respect to coordinates c of the input manifold, which are, by the arguments given:

- the flattened network input x (no extra argument): c = x, of dimension D;
- coordinates u of a parametrization P (``parametrization``): the input is x = P(u);
- displacements t along a tangent basis T at x (``tangent_basis``): the input is x + T t,
  at t = 0, so J = (dy/dx) T.

With a domain map R (``domain_map``), the network observed is network 2, and its input is R(x)
for an input x of network 1. J is then the derivative of network 2's neurons with respect to
network 1's coordinates, by the chain rule through R. Both networks' metrics
C = pinv(J J^T) (:func:`netequiv.local_metric.metric_from_jacobians`) then live on the same
input manifold.

Two methods compute J:

- ``"func"``: :func:`torch.func.jacrev` (reverse mode, when m <= the number of coordinates) or
  :func:`torch.func.jacfwd` (forward mode, otherwise), vectorised over the batch with
  :func:`torch.func.vmap`.
- ``"autograd"``: one :func:`torch.autograd.grad` call per neuron on the summed batch. The sum
  gives each sample's own gradient because samples do not interact in evaluation mode. A model
  that mixes the samples of a batch (batch normalisation in training mode) breaks this.

``"auto"`` tries ``"func"`` and falls back to ``"autograd"``, with a RuntimeWarning, for models
that :mod:`torch.func` cannot trace (data-dependent Python control flow, ``.item()``, in-place
updates of captured state).
"""

import math
import warnings

import numpy as np
import torch
from torch.func import jacfwd, jacrev, vmap

from ._hooks import HookError, as_module, batches, evaluation_mode, target_device, to_tensor
from .activations import SelectedForward, map_inputs
from .selection import LayerNotFoundError, NeuronSelection

__all__ = ["jacobians", "JACOBIAN_METHODS"]

JACOBIAN_METHODS = ("auto", "func", "autograd")

# Errors that torch.func raises for models it cannot trace. Errors of netequiv's own checks are
# excluded, because the autograd method would raise them again.
_TRACING_ERRORS = (RuntimeError, NotImplementedError, TypeError, AssertionError)
_OWN_ERRORS = (HookError, LayerNotFoundError)


class _InputMap:
    """Coordinates c -> network inputs, for a batch: parametrization or tangent plane, then R."""

    def __init__(self, parametrization, domain_map):
        self.parametrization = parametrization
        self.domain_map = domain_map

    def __call__(self, coordinates, base, basis):
        if basis is not None:
            displacement = torch.einsum("bdk,bk->bd", basis, coordinates)
            points = base + displacement.reshape(base.shape)
            return map_inputs(points, None, self.domain_map)
        return map_inputs(coordinates, self.parametrization, self.domain_map)


def _check_basis(tangent_basis, inputs):
    n = inputs.shape[0]
    dimension = math.prod(inputs.shape[1:])
    basis = tangent_basis
    if basis.ndim == 2:
        basis = basis.expand(n, *basis.shape)
    if basis.ndim != 3 or basis.shape[0] != n or basis.shape[1] != dimension:
        raise ValueError(
            f"tangent_basis has shape {tuple(tangent_basis.shape)}; expected ({dimension}, k) for one "
            f"basis of all points or ({n}, {dimension}, k) for one basis per point, with {dimension} the "
            "flattened input dimension and k the manifold dimension."
        )
    return basis


def _as_batch_of_one(value):
    return None if value is None else value.unsqueeze(0)


def _jacobian_func(forward, input_map, coordinates, base, basis):
    """J of one batch by torch.func; shape (b, m, k)."""
    shape = coordinates.shape[1:]

    # vmap hands over one sample at a time, and the model expects a batch.
    def selected(point, point_base, point_basis):
        inputs = input_map(_as_batch_of_one(point), _as_batch_of_one(point_base), _as_batch_of_one(point_basis))
        return forward(inputs)[0]

    m = forward.resolved.size
    k = math.prod(shape)
    transform = jacrev if m <= k else jacfwd
    in_dims = (0, None if base is None else 0, None if basis is None else 0)
    result = vmap(transform(selected), in_dims=in_dims)(coordinates, base, basis)
    return result.reshape(coordinates.shape[0], m, k)


def _jacobian_autograd(forward, input_map, coordinates, base, basis):
    """J of one batch by reverse-mode autograd, one backward pass per neuron; shape (b, m, k)."""
    b = coordinates.shape[0]
    k = math.prod(coordinates.shape[1:])
    coordinates = coordinates.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        outputs = forward(input_map(coordinates, base, basis))
        m = outputs.shape[1]
        result = torch.zeros(b, m, k, dtype=coordinates.dtype, device=coordinates.device)
        if not outputs.requires_grad:
            return result
        for neuron in range(m):
            (gradient,) = torch.autograd.grad(
                outputs[:, neuron].sum(), coordinates, retain_graph=neuron < m - 1, allow_unused=True
            )
            if gradient is not None:
                result[:, neuron] = gradient.reshape(b, k)
    return result


def _first_line(error, limit=160):
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def jacobians(
    model,
    inputs,
    selection,
    *,
    domain_map=None,
    tangent_basis=None,
    parametrization=None,
    method="auto",
    batch_size=256,
    device=None,
    progress=None,
):
    """Compute the Jacobians of the selected neurons with respect to the input coordinates.

    See the module docstring for the coordinates and the methods.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        The network (network 2 when ``domain_map`` is given). Evaluated in evaluation mode.
    inputs : array-like or torch.Tensor of shape (n, ...)
        Network inputs (of network 1 with ``domain_map``), or manifold coordinates u of shape
        (n, k) with ``parametrization``. Must be floating point; they are cast to the model's
        dtype, so use a float64 model for accurate derivatives.
    selection : NeuronSelection, str or dict
        The m neurons.
    domain_map : callable, default=None
        R: a batch of network-1 inputs -> a batch of this network's inputs, a differentiable
        torch function that maps each row separately.
    tangent_basis : array-like of shape (D, k) or (n, D, k), default=None
        Columns spanning the tangent space of the input manifold at each input, D being the
        flattened input dimension. Orthonormal columns make the metric that of the manifold's
        embedding in input space. Excludes ``parametrization``.
    parametrization : callable, default=None
        P: a batch of coordinates u of shape (b, k) -> a batch of network inputs, a
        differentiable torch function. Excludes ``tangent_basis``.
    method : {"auto", "func", "autograd"}, default="auto"
        See the module docstring.
    batch_size : int, default=256
        Samples per vectorised Jacobian evaluation.
    device : str or torch.device, default=None
        Device the inputs are sent to; None uses the device of the model's parameters.
    progress : bool, default=None
        Show a tqdm progress bar. None shows it for runs of 10 batches or more on a terminal.

    Returns
    -------
    jacobians : ndarray of shape (n, m, k), float64
        ``jacobians[i, j, a]`` is the derivative of neuron j with respect to coordinate a at
        sample i. k is D, the number of coordinates of the parametrization, or the number of
        tangent basis columns.

    Warns
    -----
    RuntimeWarning
        When ``method="auto"`` falls back from torch.func to autograd.
    """
    if method not in JACOBIAN_METHODS:
        raise ValueError(f"method={method!r} is invalid; expected one of {', '.join(map(repr, JACOBIAN_METHODS))}.")
    if tangent_basis is not None and parametrization is not None:
        raise ValueError(
            "tangent_basis and parametrization are both given; pass one: a tangent basis at each "
            "input, or a parametrization whose coordinates are the inputs."
        )
    model = as_module(model)
    selection = NeuronSelection.coerce(selection)
    inputs = to_tensor(inputs, model)
    device = target_device(model, device)
    if not inputs.is_floating_point():
        raise TypeError(
            f"inputs have dtype {inputs.dtype}; Jacobians need floating-point inputs or coordinates."
        )
    n = inputs.shape[0]
    input_map = _InputMap(parametrization, domain_map)

    # Coordinates at which J is taken, and the base points and bases of the tangent planes.
    base = basis = None
    coordinates = inputs
    if tangent_basis is not None:
        basis = _check_basis(to_tensor(tangent_basis, model, "tangent_basis"), inputs)
        base = inputs
        coordinates = torch.zeros(n, basis.shape[2], dtype=inputs.dtype)

    def batch_at(start, stop):
        return tuple(None if part is None else part[start:stop].to(device) for part in (coordinates, base, basis))

    with evaluation_mode(model):
        with torch.no_grad():
            example = input_map(*batch_at(0, 1))
        with SelectedForward(model, selection, example) as forward:
            result = np.empty((n, forward.resolved.size, math.prod(coordinates.shape[1:])))
            chosen = method
            for start, stop in batches(n, batch_size, progress, "Jacobians"):
                batch = batch_at(start, stop)
                if chosen == "autograd":
                    values = _jacobian_autograd(forward, input_map, *batch)
                elif chosen == "func":
                    values = _jacobian_func(forward, input_map, *batch)
                else:
                    try:
                        values = _jacobian_func(forward, input_map, *batch)
                        chosen = "func"
                    except _OWN_ERRORS:
                        raise
                    except _TRACING_ERRORS as error:
                        warnings.warn(
                            f"torch.func cannot differentiate {type(model).__name__} "
                            f"({type(error).__name__}: {_first_line(error)}); falling back to "
                            "autograd, one backward pass per neuron. Pass method='autograd' to skip "
                            "the attempt.",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                        chosen = "autograd"
                        values = _jacobian_autograd(forward, input_map, *batch)
                result[start:stop] = values.detach().to(torch.float64).cpu().numpy()
    return result
