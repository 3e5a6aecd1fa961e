"""Activations of selected neurons, read from forward hooks in batches."""

import numpy as np
import torch

from ._hooks import (
    OutputCapture,
    as_module,
    batches,
    check_layer_names,
    evaluation_mode,
    extract,
    module_table,
    target_device,
    to_tensor,
)
from .selection import INPUT, MODULE, OUTPUT, NeuronSelection, pseudo_layer

__all__ = ["SelectedForward", "activations", "map_inputs", "resolve_selection"]


def map_inputs(inputs, parametrization=None, domain_map=None):
    """Map a batch to the network's inputs: coordinates -> parametrization -> domain map.

    Both maps take and return batched tensors (batch dimension first), act on each row
    separately, and must be differentiable torch functions for Jacobians.
    """
    if parametrization is not None:
        inputs = _call_map(parametrization, inputs, "parametrization")
    if domain_map is not None:
        inputs = _call_map(domain_map, inputs, "domain_map")
    return inputs


def _call_map(function, inputs, name):
    outputs = function(inputs)
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(
            f"{name} returned a {type(outputs).__name__}; it must map a batch tensor of shape "
            "(b, ...) to a batch tensor, with torch operations so that it can be differentiated."
        )
    if outputs.ndim == 0 or outputs.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"{name} mapped a batch of shape {tuple(inputs.shape)} to shape {tuple(outputs.shape)}; "
            "it must keep the batch dimension first and map each row separately."
        )
    return outputs


def selection_layers(selection, modules):
    """``(LayerReference, source)`` for each layer of a selection on a model's modules."""
    return [(reference, pseudo_layer(reference.module, modules) or MODULE) for reference, _ in selection.entries]


class SelectedForward:
    """A forward pass that returns the selected neurons, as a differentiable torch function.

    Registers forward hooks on the selected modules and resolves the selection's indices with
    one forward pass of ``example``. Calling the object with a batch ``x`` of network inputs
    returns a tensor of shape ``(b, m)``. Use it as a context manager, so that the hooks are
    removed afterwards.

    Parameters
    ----------
    model : torch.nn.Module
    selection : NeuronSelection
    example : torch.Tensor
        A batch of network inputs (one sample suffices) on the model's device.
    """

    def __init__(self, model, selection, example):
        self.model = model
        check_layer_names(model, selection)
        layers = selection_layers(selection, module_table(model))
        hooked = dict.fromkeys(reference.module for reference, source in layers if source == MODULE)
        self.capture = OutputCapture(model, list(hooked))
        try:
            with torch.no_grad():
                tensors = self._layer_tensors(layers, example, model(example))
            shapes = {str(reference): tuple(tensor.shape[1:]) for (reference, _), tensor in zip(layers, tensors)}
            self.resolved = selection.resolve(shapes, module_table(model))
        except BaseException:
            self.capture.remove()
            raise
        finally:
            self.capture.clear()
        self._indices = [torch.as_tensor(index, device=example.device) for index in self.resolved.indices]

    def _layer_tensors(self, layers, inputs, output):
        tensors = []
        for reference, source in layers:
            if source == INPUT:
                value = inputs
            elif source == OUTPUT:
                value = output
            else:
                value = self.capture.single_output(reference.module)
            tensor = extract(value, reference.keys, reference.module)
            if tensor.ndim == 0 or tensor.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"layer {str(reference)!r} has output shape {tuple(tensor.shape)} for a batch of "
                    f"{inputs.shape[0]}; netequiv needs outputs with the batch dimension first. "
                    "Select a layer whose output is batch-first."
                )
            tensors.append(tensor)
        return tensors

    def __call__(self, inputs):
        self.capture.clear()
        try:
            output = self.model(inputs)
            layers = zip(self.resolved.layers, self.resolved.sources)
            tensors = self._layer_tensors(layers, inputs, output)
        finally:
            self.capture.clear()
        columns = [
            tensor.reshape(tensor.shape[0], -1)[:, index] for tensor, index in zip(tensors, self._indices)
        ]
        return torch.cat(columns, dim=1)

    def close(self):
        """Remove the forward hooks."""
        self.capture.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def resolve_selection(model, example_input, selection, *, parametrization=None, domain_map=None, device=None):
    """Resolve a selection on a model: the neurons, their labels and their layers' shapes.

    Runs one forward pass of the first sample of ``example_input``.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
    example_input : array-like or torch.Tensor of shape (n, ...)
        Inputs, or manifold coordinates when ``parametrization`` is given.
    selection : NeuronSelection, str or dict
    parametrization, domain_map : callable, default=None
        As in :func:`activations`.
    device : str or torch.device, default=None
        Device of the inputs; None uses the model's.

    Returns
    -------
    ResolvedSelection
        ``.size`` is the number of neurons m, ``.labels`` one label per neuron.
    """
    model = as_module(model)
    selection = NeuronSelection.coerce(selection)
    inputs = to_tensor(example_input, model, "example_input")[:1].to(target_device(model, device))
    with evaluation_mode(model), torch.no_grad():
        with SelectedForward(model, selection, map_inputs(inputs, parametrization, domain_map)) as forward:
            return forward.resolved


def activations(
    model,
    inputs,
    selection,
    *,
    parametrization=None,
    domain_map=None,
    batch_size=1024,
    device=None,
    progress=None,
):
    """Compute the activations of the selected neurons, in evaluation mode and without gradients.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        The network. Every submodule is put in evaluation mode for the run and back in its own
        mode afterwards; the model is not moved between devices.
    inputs : array-like or torch.Tensor of shape (n, ...)
        Network inputs, batch first. Floating inputs are cast to the model's floating dtype.
        With ``parametrization``, manifold coordinates instead.
    selection : NeuronSelection, str or dict
        The neurons; see :class:`NeuronSelection`.
    parametrization : callable, default=None
        Maps a batch of manifold coordinates to network inputs (of network 1 when
        ``domain_map`` is given).
    domain_map : callable, default=None
        The map R from network 1's inputs to this network's inputs: the activations are those
        at ``R(inputs)``.
    batch_size : int, default=1024
        Samples per forward pass.
    device : str or torch.device, default=None
        Device the inputs are sent to; None uses the device of the model's parameters.
    progress : bool, default=None
        Show a tqdm progress bar. None shows it for runs of 10 batches or more on a terminal.

    Returns
    -------
    activations : ndarray of shape (n, m), float64
        One column per selected neuron, in the order of the selection.

    Raises
    ------
    LayerNotFoundError
        A layer name is not a module of the model; the message lists close names.
    HookError
        A selected module is not called, or called more than once, in a forward pass.
    """
    model = as_module(model)
    selection = NeuronSelection.coerce(selection)
    inputs = to_tensor(inputs, model)
    device = target_device(model, device)
    n = inputs.shape[0]

    with evaluation_mode(model), torch.no_grad():
        example = map_inputs(inputs[:1].to(device), parametrization, domain_map)
        with SelectedForward(model, selection, example) as forward:
            result = np.empty((n, forward.resolved.size), dtype=np.float64)
            for start, stop in batches(n, batch_size, progress, "activations"):
                batch = map_inputs(inputs[start:stop].to(device), parametrization, domain_map)
                result[start:stop] = forward(batch).to(torch.float64).cpu().numpy()
    return result
