"""Neuron selections: which neurons of which layers a network is observed through.

A selection maps layer references to neuron indices. A layer reference is a module name as
``model.named_modules()`` gives it (``"fc2"``, ``"encoder.layers.0.mlp"``), or one of the
pseudo-layers ``"input"`` and ``"output"`` (the model's input and return value). When a model has
a submodule called ``"input"`` or ``"output"``, the plain name selects that submodule, and
``"<input>"`` or ``"<output>"`` selects the pseudo-layer. A module whose output is a tuple, a list,
a dict or a dataclass is followed by a key path in brackets: ``"lstm[0]"``,
``"encoder[last_hidden_state]"``, ``"output[1][logits]"``.

Layer outputs are batch-first: a layer's output for a batch of b samples has shape
``(b, *shape)``, and neuron indices refer to one sample's ``shape``. An index is either

- a flat index into the row-major flattened ``shape`` (an int, a slice, or a list of them), or
- a multi-index, a tuple with one int or slice per axis of ``shape``. It selects the Cartesian
  product of its components in row-major order. ``(3, 5, 7)`` is channel 3 at row 5, column 7
  of a convolutional feature map, and ``(slice(0, 4), 5, 7)`` is channels 0-3 there.

Text form
---------
:meth:`NeuronSelection.parse` reads the form that a command line takes. Entries are separated by
whitespace or ``;``. Each entry is ``LAYER`` (every neuron of the layer) or ``LAYER:ITEMS``, with
comma-separated items:

==================  ===================================================================
``5``               flat index 5
``0-3``             flat indices 0 to 3, both included
``4-``              flat indices 4 to the end
``(3,5,7)``         multi-index; each component is an index, a range ``a-b`` or ``a-``,
                    or ``*`` for the whole axis: ``(0-3,5,7)``, ``(2,*,*)``
==================  ===================================================================

For example ``"fc2:0,3,5 fc3:0-3 conv1:(0-3,5,5) output"``. ``str(selection)`` writes this form
back when every index is a non-negative int or a range of step 1.
"""

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "INPUT",
    "OUTPUT",
    "LayerNotFoundError",
    "LayerReference",
    "NeuronSelection",
    "ResolvedSelection",
    "suggest_layer_names",
]

INPUT = "input"
OUTPUT = "output"
MODULE = "module"
# These spellings always name the pseudo-layers, even when a submodule is called "input" or
# "output" (the plain names then refer to the submodule).
INPUT_ALIAS = "<input>"
OUTPUT_ALIAS = "<output>"

_REFERENCE_PATTERN = re.compile(r"^(?P<module>[^\[\]\s:;]*)(?P<keys>(?:\[[^\[\]]*\])*)$")
_KEY_PATTERN = re.compile(r"\[([^\[\]]*)\]")
_INTEGER_PATTERN = re.compile(r"^-?\d+$")


class LayerNotFoundError(ValueError):
    """A selection names a layer that the model does not have."""


@dataclass(frozen=True)
class LayerReference:
    """A module name, or a pseudo-layer, and the key path into its output.

    Attributes
    ----------
    module : str
        Module name as ``named_modules()`` gives it, ``"input"`` or ``"output"``.
    keys : tuple of (int or str)
        Keys applied in turn to the module's output: int keys index tuples and lists, str keys
        index mappings or name attributes of dataclass-like outputs.
    """

    module: str
    keys: tuple = ()

    @classmethod
    def parse(cls, text):
        """Parse ``"name"`` or ``"name[key][key]..."``; keys that look like integers become ints."""
        match = _REFERENCE_PATTERN.match(text.strip())
        if match is None or not match.group("module"):
            raise ValueError(
                f"layer reference {text!r} is invalid; expected a module name followed by optional "
                "keys in brackets, such as 'fc2', 'lstm[0]' or 'encoder[last_hidden_state]'."
            )
        keys = tuple(
            int(key) if _INTEGER_PATTERN.match(key) else key
            for key in _KEY_PATTERN.findall(match.group("keys"))
        )
        return cls(match.group("module"), keys)

    def __str__(self):
        return self.module + "".join(f"[{key}]" for key in self.keys)


def _check_index(value, where):
    """Normalise one index item; raise TypeError naming ``where`` for anything else."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {value!r} is a bool; neuron indices are ints, slices or tuples.")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, range):
        value = slice(value.start, value.stop, value.step)
    if isinstance(value, slice):
        for part in (value.start, value.stop, value.step):
            if part is not None and not isinstance(part, (int, np.integer)):
                raise TypeError(f"{where}: slice {value!r} has a non-integer bound.")
        if value.step == 0:
            raise ValueError(f"{where}: slice {value!r} has step 0.")
        start, stop, step = (None if part is None else int(part) for part in (value.start, value.stop, value.step))
        # Step 1 is stored as None, so that equal slices compare equal.
        return slice(start, stop, None if step == 1 else step)
    if isinstance(value, tuple):
        components = []
        for component in value:
            if isinstance(component, tuple):
                raise TypeError(f"{where}: multi-index {value!r} contains a nested tuple.")
            components.append(_check_index(component, where))
        if not components:
            raise ValueError(f"{where}: the multi-index () is empty.")
        return tuple(components)
    raise TypeError(
        f"{where}: index {value!r} of type {type(value).__name__} is invalid; expected an int, a "
        "slice, a range, a tuple (multi-index) or a list of them."
    )


def _normalise_indices(indices, layer):
    """Turn a layer's index specification into a tuple of items, or None for every neuron."""
    if indices is None:
        return None
    where = f"layer {layer!r}"
    if isinstance(indices, np.ndarray):
        indices = indices.tolist()
    if isinstance(indices, list):
        items = tuple(_check_index(item, where) for item in indices)
        if not items:
            raise ValueError(f"{where}: the index list is empty; pass None to select every neuron.")
        return items
    return (_check_index(indices, where),)


def _parse_component(text, entry):
    """Parse one component of a text item: ``5``, ``0-3``, ``4-`` or ``*``."""
    text = text.strip()
    if text == "*":
        return slice(None)
    match = re.fullmatch(r"(\d+)(?:-(\d*))?", text)
    if match is None:
        raise ValueError(
            f"index {text!r} in {entry!r} is invalid; expected a non-negative integer, a range "
            "such as 0-3 or 4-, '*', or a multi-index such as (0-3,5,5)."
        )
    start = int(match.group(1))
    if match.group(2) is None:
        return start
    if match.group(2) == "":
        return slice(start, None)
    stop = int(match.group(2))
    if stop < start:
        raise ValueError(f"range {text!r} in {entry!r} is empty; write the smaller index first.")
    return slice(start, stop + 1)


def _split_items(text, entry):
    """Split ``a,b,(c,d),e`` at the commas outside parentheses."""
    items, depth, current = [], 0, ""
    for character in text:
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{entry!r} has an unmatched ')'.")
        if character == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += character
    if depth != 0:
        raise ValueError(f"{entry!r} has an unmatched '('.")
    items.append(current)
    return items


def _parse_items(text, entry):
    items = []
    for item in _split_items(text, entry):
        item = item.strip()
        if not item:
            raise ValueError(f"{entry!r} has an empty index; remove the extra comma.")
        if item.startswith("(") and item.endswith(")"):
            components = item[1:-1].split(",")
            items.append(tuple(_parse_component(component, entry) for component in components))
        else:
            items.append(_parse_component(item, entry))
    return tuple(items)


def _format_component(value):
    if isinstance(value, int) and value >= 0:
        return str(value)
    if isinstance(value, slice) and value.step in (None, 1):
        start = 0 if value.start is None else value.start
        if start >= 0 and value.stop is None:
            return "*" if start == 0 else f"{start}-"
        if start >= 0 and value.stop is not None and value.stop > start:
            return str(start) if value.stop == start + 1 else f"{start}-{value.stop - 1}"
    return None


def _format_item(item):
    if isinstance(item, tuple):
        parts = [_format_component(component) for component in item]
        if None in parts:
            return None
        return "(" + ",".join(parts) + ")"
    text = _format_component(item)
    # A bare '*' would read as a glob; a whole-layer slice is written as '0-'.
    return "0-" if text == "*" else text


def _range_of(item, size, layer):
    """Flat indices that an int or slice item selects among ``size`` positions."""
    if isinstance(item, slice):
        # A range that runs past the layer would be cut short silently, so it is rejected.
        for bound in (item.start, item.stop):
            if bound is not None and not -size <= bound <= size:
                last = bound - 1 if bound is item.stop else bound
                raise IndexError(
                    f"neuron range {_format_component(item)} reaches index {last}, out of range for "
                    f"layer {layer!r}, which has {size} neuron(s) on that axis; use indices in "
                    f"[0, {size - 1}]."
                )
        return np.arange(size)[item]
    if not -size <= item < size:
        raise IndexError(
            f"neuron index {item} is out of range for layer {layer!r}, which has {size} neuron(s) "
            f"on that axis; use an index in [0, {size - 1}]."
        )
    return np.array([item % size])


def _flat_indices(items, shape, layer):
    """Resolve normalised index items against one sample's output shape."""
    size = math.prod(shape)
    if items is None:
        return np.arange(size)
    parts = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != len(shape):
                raise IndexError(
                    f"multi-index {item} has {len(item)} component(s), but layer {layer!r} has "
                    f"per-sample shape {tuple(shape)}; give one component per axis, or a flat index."
                )
            axes = [_range_of(component, extent, layer) for component, extent in zip(item, shape)]
            grid = np.meshgrid(*axes, indexing="ij")
            parts.append(np.ravel_multi_index([axis.ravel() for axis in grid], shape))
        else:
            parts.append(_range_of(item, size, layer))
    flat = np.concatenate(parts).astype(np.int64)
    if flat.size == 0:
        raise IndexError(f"the indices of layer {layer!r} select no neuron of its {size}.")
    unique, counts = np.unique(flat, return_counts=True)
    if np.any(counts > 1):
        repeated = unique[counts > 1][:5].tolist()
        raise ValueError(
            f"layer {layer!r} selects flat neuron index(es) {repeated} more than once; each neuron "
            "may appear once in a selection."
        )
    return flat


class NeuronSelection:
    """Neurons chosen by layer and index, in a fixed column order.

    Parameters
    ----------
    layers : mapping or iterable of (str, indices) pairs
        Layer reference -> indices. A reference is a module name, ``"input"``, ``"output"``, or
        one of them followed by a key path such as ``"lstm[0]"``. Indices are None for every
        neuron of the layer, or an int, a slice, a range, a tuple (multi-index), or a list or
        integer array of them, as the module docstring describes. The activations have one column per selected neuron, layer
        by layer in this order, and within a layer in the order of the indices.

    Examples
    --------
    >>> from netequiv.torch import NeuronSelection
    >>> selection = NeuronSelection({"fc2": [0, 3, 5], "fc3": slice(0, 4)})
    >>> selection == NeuronSelection.parse("fc2:0,3,5 fc3:0-3")
    True
    >>> str(selection)
    'fc2:0,3,5 fc3:0-3'
    """

    def __init__(self, layers):
        pairs = layers.items() if isinstance(layers, Mapping) else layers
        entries = []
        seen = set()
        for name, indices in pairs:
            reference = name if isinstance(name, LayerReference) else LayerReference.parse(str(name))
            if reference in seen:
                raise ValueError(
                    f"layer {str(reference)!r} appears twice in the selection; merge its indices."
                )
            seen.add(reference)
            entries.append((reference, _normalise_indices(indices, str(reference))))
        if not entries:
            raise ValueError("the selection is empty; name at least one layer.")
        self._entries = tuple(entries)

    @classmethod
    def parse(cls, text):
        """Parse the text form, for example ``"fc2:0,3,5 fc3:0-3"``; see the module docstring."""
        if not isinstance(text, str):
            raise TypeError(f"expected a selection string, got {type(text).__name__}.")
        pairs = []
        for entry in re.split(r"[\s;]+", text.strip()):
            if not entry:
                continue
            # The layer part ends at the first ':' outside brackets.
            depth, split = 0, None
            for position, character in enumerate(entry):
                depth += character == "["
                depth -= character == "]"
                if character == ":" and depth == 0:
                    split = position
                    break
            if split is None:
                pairs.append((LayerReference.parse(entry), None))
                continue
            layer, items = entry[:split], entry[split + 1 :]
            if not items:
                raise ValueError(
                    f"{entry!r} has no indices after ':'; write {layer!r} alone to select every neuron."
                )
            pairs.append((LayerReference.parse(layer), list(_parse_items(items, entry))))
        if not pairs:
            raise ValueError(f"selection {text!r} names no layer; write for example 'fc2:0,3,5'.")
        return cls(pairs)

    @classmethod
    def coerce(cls, value):
        """Return ``value`` as a NeuronSelection: a selection, its text form, or a mapping."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            return cls(value)
        raise TypeError(
            f"selection of type {type(value).__name__} is invalid; expected a NeuronSelection, a "
            "string such as 'fc2:0,3,5' or a dict such as {'fc2': [0, 3, 5]}."
        )

    @property
    def layers(self):
        """Layer references in column order, as strings."""
        return tuple(str(reference) for reference, _ in self._entries)

    @property
    def entries(self):
        """``(LayerReference, indices)`` pairs; indices is None or a tuple of normalised items."""
        return self._entries

    def resolve(self, shapes, module_names=None):
        """Resolve the indices against per-sample output shapes.

        Parameters
        ----------
        shapes : mapping
            Layer reference string -> per-sample output shape (without the batch dimension).
        module_names : sequence of str, default=None
            The model's module names, used to decide whether ``"input"`` and ``"output"`` name a
            submodule. None treats them as the pseudo-layers.

        Returns
        -------
        ResolvedSelection
        """
        names = set(module_names or ())
        layers, sources, indices, layer_shapes = [], [], [], []
        for reference, items in self._entries:
            key = str(reference)
            layers.append(reference)
            sources.append(pseudo_layer(reference.module, names) or MODULE)
            layer_shapes.append(tuple(shapes[key]))
            indices.append(_flat_indices(items, tuple(shapes[key]), key))
        return ResolvedSelection(tuple(layers), tuple(sources), tuple(indices), tuple(layer_shapes))

    def __eq__(self, other):
        # Selections are equal when their entries are written alike; [0, 1] and 0-1 differ.
        if not isinstance(other, NeuronSelection):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self):
        return hash(repr(self))

    def __str__(self):
        texts = []
        for reference, items in self._entries:
            if items is None:
                texts.append(str(reference))
                continue
            parts = [_format_item(item) for item in items]
            if None in parts:
                return repr(self)
            texts.append(f"{reference}:" + ",".join(parts))
        return " ".join(texts)

    def __repr__(self):
        inner = ", ".join(
            f"{str(reference)!r}: {None if items is None else list(items)!r}" for reference, items in self._entries
        )
        return f"NeuronSelection({{{inner}}})"


def pseudo_layer(module, module_names):
    """Return INPUT or OUTPUT when ``module`` names a pseudo-layer of a model, else None.

    The plain names ``"input"`` and ``"output"`` name the pseudo-layers unless the model has a
    submodule of that name; ``"<input>"`` and ``"<output>"`` always do.
    """
    if module in (INPUT_ALIAS, OUTPUT_ALIAS):
        return INPUT if module == INPUT_ALIAS else OUTPUT
    if module in (INPUT, OUTPUT) and module not in module_names:
        return module
    return None


@dataclass(frozen=True, eq=False)
class ResolvedSelection:
    """A selection whose indices are resolved against the layers' output shapes.

    Attributes
    ----------
    layers : tuple of LayerReference
        One per selected layer, as the selection names it.
    sources : tuple of str
        Where each layer's values come from: ``"input"`` (the model's input), ``"output"`` (its
        return value) or ``"module"`` (a forward hook on the named module).
    indices : tuple of ndarray of int64
        Flat per-sample indices of the selected neurons of each layer.
    shapes : tuple of tuple
        Per-sample output shape of each layer.
    """

    layers: tuple
    sources: tuple
    indices: tuple
    shapes: tuple

    @property
    def size(self):
        """Number of selected neurons m."""
        return int(sum(index.size for index in self.indices))

    @property
    def labels(self):
        """One label per neuron, such as ``"fc2[3]"`` or ``"conv1[0,5,5]"``."""
        labels = []
        for layer, index, shape in zip(self.layers, self.indices, self.shapes):
            if len(shape) <= 1:
                labels.extend(f"{layer}[{i}]" for i in index.tolist())
                continue
            positions = np.stack(np.unravel_index(index, shape), axis=1)
            labels.extend(f"{layer}[" + ",".join(map(str, position)) + "]" for position in positions.tolist())
        return labels


def suggest_layer_names(name, valid_names, limit=5):
    """Return up to ``limit`` valid layer names close to ``name``, closest first."""
    valid_names = list(valid_names)
    close = difflib.get_close_matches(name, valid_names, n=limit, cutoff=0.5)
    # A name that extends or is extended by the requested one (a missing or extra prefix) is close.
    for candidate in valid_names:
        if len(close) >= limit:
            break
        if candidate not in close and name and (candidate.endswith(name) or name.endswith(candidate)):
            close.append(candidate)
    return close
