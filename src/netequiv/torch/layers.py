"""Selectable layers of a model, with their output shapes."""

import math
import warnings
from dataclasses import dataclass

import torch

from ._hooks import (
    OutputCapture,
    as_module,
    evaluation_mode,
    is_torchscript,
    target_device,
    tensor_leaves,
    to_tensor,
)
from .selection import INPUT, INPUT_ALIAS, OUTPUT, OUTPUT_ALIAS

__all__ = ["LayerInfo", "list_layers"]


@dataclass(frozen=True)
class LayerInfo:
    """One selectable layer output.

    Attributes
    ----------
    name : str
        The reference to select it with, such as ``"fc2"``, ``"lstm[0]"`` or ``"output"``.
    module_type : str
        Class name of the module; empty for the pseudo-layers.
    shape : tuple or None
        Output shape of one sample (batch dimension removed); None when the module was not called.
    size : int
        Number of neurons, the product of ``shape``.
    calls : int
        How often the module ran in one forward pass. Only modules called once can be selected.
    """

    name: str
    module_type: str
    shape: tuple
    size: int
    calls: int


def _rows(name, module_type, value, calls):
    return [
        LayerInfo(name + path, module_type, tuple(tensor.shape[1:]), math.prod(tensor.shape[1:]), calls)
        for path, tensor in tensor_leaves(value)
        if tensor.ndim >= 1
    ]


def list_layers(model, example_input, *, device=None):
    """List the layers of a model that a selection can name, from one forward pass.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
    example_input : array-like or torch.Tensor of shape (n, ...)
        Inputs; only the first sample is used.
    device : str or torch.device, default=None
        Device of the input; None uses the model's.

    Returns
    -------
    layers : list of LayerInfo
        The input first, then every submodule in ``named_modules()`` order (tensor outputs of
        tuples and dicts listed with their key paths), then the output. TorchScript modules
        list only the input and the output, because they do not support forward hooks.
    """
    model = as_module(model)
    inputs = to_tensor(example_input, model, "example_input")[:1].to(target_device(model, device))
    modules = {name: module for name, module in model.named_modules() if name}
    input_name = INPUT_ALIAS if INPUT in modules else INPUT
    output_name = OUTPUT_ALIAS if OUTPUT in modules else OUTPUT
    if is_torchscript(model):
        warnings.warn(
            f"{type(model).__name__} is a TorchScript module, which does not support forward hooks; "
            "only its input and output are listed and selectable.",
            RuntimeWarning,
            stacklevel=2,
        )
        modules = {}

    with evaluation_mode(model), torch.no_grad(), OutputCapture(model, list(modules)) as capture:
        output = model(inputs)
        rows = _rows(input_name, "", inputs, 1)
        for name, module in modules.items():
            calls = capture.outputs[name]
            if not calls:
                rows.append(LayerInfo(name, type(module).__name__, None, 0, 0))
                continue
            rows.extend(_rows(name, type(module).__name__, calls[0], len(calls)))
        rows.extend(_rows(output_name, "", output, 1))
    return rows
