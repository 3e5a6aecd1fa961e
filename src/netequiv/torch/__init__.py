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
    "WhitneyReport",
    "WhitneyWarning",
    "activations",
    "check_selection",
    "check_whitney",
    "cloud_activations",
    "jacobians",
    "list_layers",
    "propose_selection",
    "resolve_selection",
    "sample_ball",
    "sample_burst",
    "sequence_windows",
]
