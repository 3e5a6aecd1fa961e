"""PyTorch adapter: observe trained networks through selected neurons."""

from ._hooks import HookError
from .activations import activations, resolve_selection
from .layers import LayerInfo, list_layers
from .selection import LayerNotFoundError, LayerReference, NeuronSelection, ResolvedSelection

__all__ = [
    "HookError",
    "LayerInfo",
    "LayerNotFoundError",
    "LayerReference",
    "NeuronSelection",
    "ResolvedSelection",
    "activations",
    "list_layers",
    "resolve_selection",
]
