"""Forward hooks, evaluation mode, devices and batching shared by the torch adapter."""

import dataclasses
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

from .selection import (
    INPUT,
    OUTPUT,
    LayerNotFoundError,
    pseudo_layer,
    suggest_layer_names,
)

# Progress bars appear by default from this many batches on (and only on a terminal).
PROGRESS_MIN_BATCHES = 10


class HookError(RuntimeError):
    """A selected layer was not called exactly once in a forward pass."""


def as_module(model):
    """Return a callable module for ``model``; an ExportedProgram is unflattened first.

    Unflattening restores the module hierarchy of the exported program, so that layers can be
    selected by their original names.
    """
    if isinstance(model, torch.export.ExportedProgram):
        return torch.export.unflatten(model)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model of type {type(model).__name__} is invalid; expected a torch.nn.Module, a "
            "TorchScript module or a torch.export.ExportedProgram (see netequiv.torch.load_model)."
        )
    return model


def is_torchscript(model):
    return isinstance(model, torch.jit.ScriptModule)


@contextmanager
def evaluation_mode(model):
    """Put every submodule in evaluation mode, and restore each one's mode on exit."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
    except NotImplementedError:
        # The graph module of ExportedProgram.module() rejects eval(); its mode was fixed when
        # the program was exported.
        pass
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def model_device(model):
    """Device of the model's first parameter or buffer; the CPU for a model without either."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model):
    """Floating dtype of the model's first floating parameter or buffer, or None."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def target_device(model, device=None):
    """Return the device that batches are sent to: ``device``, or the model's when None."""
    # NOTE: the tests run on the CPU only; transfers to and from an accelerator are untested.
    return model_device(model) if device is None else torch.device(device)


def to_tensor(values, model, name="inputs"):
    """Convert an array to a tensor, floating values in the model's floating dtype.

    The tensor stays where it is (numpy arrays on the CPU), so that only one batch at a time is
    copied to the model's device.
    """
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if tensor.ndim == 0:
        raise ValueError(f"{name} is a scalar; expected a batch of shape (n, ...).")
    dtype = model_dtype(model) if tensor.is_floating_point() else None
    return tensor.detach().to(dtype=dtype or tensor.dtype)


def batches(n, batch_size, progress, description):
    """Yield ``(start, stop)`` of consecutive batches, with a tqdm progress bar.

    ``progress=None`` shows the bar for runs of at least PROGRESS_MIN_BATCHES batches on a
    terminal; True always shows it, False never.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; expected a positive integer.")
    starts = range(0, n, int(batch_size))
    if progress is None:
        disable = True if len(starts) < PROGRESS_MIN_BATCHES else None
    else:
        disable = not progress
    for start in tqdm(starts, desc=description, unit="batch", disable=disable):
        yield start, min(start + int(batch_size), n)


def module_table(model):
    return dict(model.named_modules())


def check_layer_names(model, selection):
    """Raise LayerNotFoundError for a layer of the selection that the model lacks."""
    modules = module_table(model)
    for reference, _ in selection.entries:
        if pseudo_layer(reference.module, modules) or reference.module in modules:
            continue
        valid = [name for name in modules if name] + [INPUT, OUTPUT]
        close = suggest_layer_names(reference.module, valid)
        hint = f"close names: {', '.join(close)}" if close else f"valid names start with: {', '.join(valid[:8])}"
        raise LayerNotFoundError(
            f"layer {reference.module!r} is not a module of {type(model).__name__} ({hint}). Names "
            "are those of model.named_modules(); list_layers(model, example_input) lists them with "
            "their output shapes."
        )


class OutputCapture:
    """Forward hooks that store the outputs of named modules for one forward pass at a time."""

    def __init__(self, model, names):
        self.outputs = {name: [] for name in names}
        self._handles = []
        if self.outputs and is_torchscript(model):
            raise ValueError(
                f"layers {sorted(self.outputs)} cannot be observed because {type(model).__name__} is "
                "a TorchScript module, and TorchScript modules do not support forward hooks. Select "
                "only 'input' and 'output', or save the model as a torch.export archive (.pt2) or a "
                "state dict, which keep the module hierarchy observable."
            )
        modules = module_table(model)
        for name in self.outputs:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def store(module, args, output):
            self.outputs[name].append(output)

        return store

    def clear(self):
        for calls in self.outputs.values():
            calls.clear()

    def remove(self):
        self.clear()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()

    def single_output(self, name):
        calls = self.outputs[name]
        if len(calls) == 1:
            return calls[0]
        if not calls:
            raise HookError(
                f"the forward hook on layer {name!r} never fired: the module exists but the model's "
                "forward pass does not call it (an unused module, or one replaced by a functional "
                "call). Select a module that forward() calls; list_layers() shows how often each "
                "module is called."
            )
        raise HookError(
            f"layer {name!r} was called {len(calls)} times in one forward pass (a module reused at "
            "several places, such as one activation module after every layer), so its output is "
            "ambiguous. Select a module that is called once, for example the layer before it."
        )


def extract(value, keys, layer):
    """Apply a key path to a layer output (tuple, list, mapping or dataclass-like object)."""
    for depth, key in enumerate(keys):
        where = f"{layer}" + "".join(f"[{k}]" for k in keys[:depth])
        if isinstance(value, (tuple, list)) and isinstance(key, int):
            if not -len(value) <= key < len(value):
                raise IndexError(f"{where} is a {type(value).__name__} of {len(value)} elements; key [{key}] is out of range.")
            value = value[key]
        elif isinstance(value, Mapping):
            if key not in value and str(key) in value:
                key = str(key)
            if key not in value:
                raise KeyError(f"{where} is a mapping with keys {list(value)}; key [{key}] is not among them.")
            value = value[key]
        elif isinstance(key, str) and hasattr(value, key):
            value = getattr(value, key)
        else:
            raise TypeError(
                f"{where} is a {type(value).__name__}, which key [{key}] cannot index; use an int "
                "key for tuples and lists and a string key for mappings and dataclasses."
            )
    if not isinstance(value, torch.Tensor):
        name = layer + "".join(f"[{k}]" for k in keys)
        raise TypeError(
            f"{name} is a {type(value).__name__}, not a tensor. {describe_structure(value, name)}. "
            "Select one tensor with its key path."
        )
    return value


def tensor_leaves(value, prefix=""):
    """Yield ``(key_path, tensor)`` for every tensor in a nested output."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, (tuple, list)):
        for index, element in enumerate(value):
            yield from tensor_leaves(element, f"{prefix}[{index}]")
    elif isinstance(value, Mapping):
        for key, element in value.items():
            yield from tensor_leaves(element, f"{prefix}[{key}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from tensor_leaves(getattr(value, field.name), f"{prefix}[{field.name}]")


def describe_structure(value, name):
    """List the tensors of a nested output by key path and per-sample shape."""
    leaves = [f"{name}{path}: shape {tuple(tensor.shape[1:])}" for path, tensor in tensor_leaves(value)]
    if not leaves:
        return "It contains no tensor"
    return "Its tensors are " + "; ".join(leaves[:8]) + ("; ..." if len(leaves) > 8 else "")
