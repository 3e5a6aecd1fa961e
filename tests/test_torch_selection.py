import numpy as np
import pytest
import torch

from _torch_models import MLP, SmallCNN, StructuredOutputs
from netequiv.torch import (
    LayerNotFoundError,
    NeuronSelection,
    activations,
    list_layers,
    resolve_selection,
)


def test_parse_matches_dict_form():
    parsed = NeuronSelection.parse("fc2:0,3,5 fc3:0-3")
    assert parsed == NeuronSelection({"fc2": [0, 3, 5], "fc3": slice(0, 4)})
    assert parsed.layers == ("fc2", "fc3")


@pytest.mark.parametrize(
    "text",
    [
        "fc2:0,3,5 fc3:0-3",
        "conv1:(0-3,5,5) conv2:(2,*,*),7 output",
        "lstm[0]:4- encoder[last_hidden_state]:(0,1-2)",
        "input:1",
    ],
)
def test_text_form_round_trips(text):
    selection = NeuronSelection.parse(text)
    assert str(selection) == text
    assert NeuronSelection.parse(str(selection)) == selection


def test_parse_accepts_semicolons_and_spaces():
    assert NeuronSelection.parse(" fc1:0 ;fc2:1  ") == NeuronSelection({"fc1": 0, "fc2": [1]})


def test_parse_keys_become_ints_or_strings():
    (reference, items), = NeuronSelection.parse("enc[0][hidden]:2").entries
    assert reference.module == "enc"
    assert reference.keys == (0, "hidden")
    assert items == (2,)


@pytest.mark.parametrize(
    "text, message",
    [
        ("fc2:", "no indices"),
        ("fc2:3-1", "empty"),
        ("fc2:a", "invalid"),
        ("fc2:0,,1", "empty index"),
        ("fc2:(0,1", "unmatched"),
        ("", "names no layer"),
        ("fc2:1 fc2:2", "appears twice"),
    ],
)
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        NeuronSelection.parse(text)


def test_invalid_index_types_raise():
    with pytest.raises(TypeError, match="bool"):
        NeuronSelection({"fc": True})
    with pytest.raises(TypeError, match="float"):
        NeuronSelection({"fc": [1.5]})


def test_coerce_accepts_all_forms():
    expected = NeuronSelection({"fc1": [0, 1]})
    assert NeuronSelection.coerce("fc1:0,1") == expected
    assert NeuronSelection.coerce("fc2:0-1") == NeuronSelection({"fc2": range(2)})
    assert NeuronSelection.coerce({"fc1": [0, 1]}) == expected
    assert NeuronSelection.coerce(expected) is expected
    with pytest.raises(TypeError, match="expected a NeuronSelection"):
        NeuronSelection.coerce(3)


def test_resolve_flat_and_multi_indices():
    model = SmallCNN().double()
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    resolved = resolve_selection(model, x, {"conv1": [(slice(0, 2), 2, 3), 5], "head": -1})
    first = np.ravel_multi_index(([0, 1], [2, 2], [3, 3]), (4, 8, 8))
    np.testing.assert_array_equal(resolved.indices[0], np.concatenate([first, [5]]))
    np.testing.assert_array_equal(resolved.indices[1], [1])
    assert resolved.size == 4
    assert resolved.labels == ["conv1[0,2,3]", "conv1[1,2,3]", "conv1[0,0,5]", "head[1]"]


def test_resolve_whole_layer_and_slices():
    model = MLP(hidden=6).double()
    x = torch.zeros(1, 2, dtype=torch.float64)
    resolved = resolve_selection(model, x, {"act1": None, "fc2": slice(None, None, 2)})
    np.testing.assert_array_equal(resolved.indices[0], np.arange(6))
    np.testing.assert_array_equal(resolved.indices[1], [0, 2, 4])


def test_resolve_out_of_range_and_wrong_arity():
    model = SmallCNN().double()
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(IndexError, match="out of range"):
        resolve_selection(model, x, "head:2")
    with pytest.raises(IndexError, match="range 0-2 reaches index 2"):
        resolve_selection(model, x, "head:0-2")
    with pytest.raises(IndexError, match="per-sample shape"):
        resolve_selection(model, x, "conv1:(0,1)")
    with pytest.raises(ValueError, match="more than once"):
        resolve_selection(model, x, "head:0-1,1")


def test_unknown_layer_lists_close_names():
    model = MLP().double()
    with pytest.raises(LayerNotFoundError, match="close names: fc2") as raised:
        activations(model, np.zeros((2, 2)), "fc22:0")
    assert "list_layers" in str(raised.value)


def test_list_layers_shapes_and_calls():
    model = SmallCNN().double()
    layers = {info.name: info for info in list_layers(model, np.zeros((3, 1, 8, 8)))}
    assert layers["input"].shape == (1, 8, 8)
    assert layers["conv2"].shape == (6, 8, 8)
    assert layers["conv2"].size == 384
    assert layers["conv2"].module_type == "Conv2d"
    assert layers["output"].shape == (2,)
    assert all(info.calls == 1 for info in layers.values())


def test_list_layers_expands_structured_outputs():
    model = StructuredOutputs().double()
    names = [info.name for info in list_layers(model, np.zeros((1, 3)))]
    assert names == ["input", "fc", "split[0]", "split[1][0]", "split[1][1][square]", "output[sum]", "output[square]"]


def test_list_layers_marks_unused_module():
    model = MLP().double()
    model.unused = torch.nn.Linear(2, 2)
    layers = {info.name: info for info in list_layers(model, np.zeros((1, 2)))}
    assert layers["unused"].calls == 0
    assert layers["unused"].shape is None
