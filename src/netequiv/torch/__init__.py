"""PyTorch adapter: observe trained networks through selected neurons.

The only part of netequiv that imports torch. It turns a model and inputs into the arrays that the
numeric core takes:

- :class:`NeuronSelection` names neurons by layer and index (``"fc2:0,3,5 conv1:(0-3,5,5)"``);
  :func:`list_layers` lists the layers and their output shapes.
- :func:`activations` returns the selected neurons' activations, shape (n, m).
- :func:`jacobians` returns their Jacobians with respect to the input coordinates, shape
  (n, m, k), for :func:`netequiv.local_metric.metric_from_jacobians`. They can be taken through
  a domain map R between two networks' inputs, along a tangent basis, or with respect to the
  coordinates of a parametrization of the input manifold.
- :func:`sample_ball`, :func:`sample_burst`, :func:`sequence_windows` and
  :func:`cloud_activations` return activation clouds, shape (n, q, m), for
  :func:`netequiv.local_metric.metric_from_clouds`.
- :func:`check_whitney`, :func:`check_selection` and :func:`propose_selection` check that a
  selection can embed the input manifold and propose a well-conditioned one.
- :func:`load_model` loads TorchScript, torch.export and state-dict files without unpickling
  arbitrary objects.

Examples
--------
>>> import torch
>>> from netequiv.torch import activations, jacobians
>>> model = torch.nn.Sequential(torch.nn.Linear(1, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
>>> x = torch.linspace(0, 1, 20, dtype=torch.float64)[:, None]
>>> activations(model, x, "1:0-2").shape
(20, 3)
>>> jacobians(model, x, "1:0-2").shape
(20, 3, 1)
"""

from ._hooks import HookError
from .activations import activations, resolve_selection
from .checks import (
    SelectionError,
    WhitneyReport,
    WhitneyWarning,
    check_selection,
    check_whitney,
    propose_selection,
)
from .jacobians import JACOBIAN_METHODS, jacobians
from .layers import LayerInfo, list_layers
from .loading import UnsafeModelFileError, load_model, model_format
from .sampling import cloud_activations, sample_ball, sample_burst, sequence_windows
from .selection import LayerNotFoundError, LayerReference, NeuronSelection, ResolvedSelection

__all__ = [
    "HookError",
    "JACOBIAN_METHODS",
    "LayerInfo",
    "LayerNotFoundError",
    "LayerReference",
    "NeuronSelection",
    "ResolvedSelection",
    "SelectionError",
    "UnsafeModelFileError",
    "WhitneyReport",
    "WhitneyWarning",
    "activations",
    "check_selection",
    "check_whitney",
    "cloud_activations",
    "jacobians",
    "list_layers",
    "load_model",
    "model_format",
    "propose_selection",
    "resolve_selection",
    "sample_ball",
    "sample_burst",
    "sequence_windows",
]
