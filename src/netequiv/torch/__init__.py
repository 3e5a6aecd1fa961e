"""PyTorch adapter: observe trained networks through selected neurons."""

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
    "WhitneyReport",
    "WhitneyWarning",
    "activations",
    "check_selection",
    "check_whitney",
    "jacobians",
    "list_layers",
    "propose_selection",
    "resolve_selection",
]
