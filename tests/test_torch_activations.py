import math

import numpy as np
import pytest
import torch

from _torch_models import MLP, SmallCNN, StructuredOutputs, train
from netequiv.torch import HookError, activations


@pytest.fixture(scope="module")
def trained_mlp():
    torch.manual_seed(0)
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    y = torch.sin(math.pi * x[:, :1]) * x[:, 1:]
    model = MLP(hidden=8).double()
    train(model, x, y, steps=100)
    return model


def test_mlp_hooks_equal_manual_forward(trained_mlp):
    model = trained_mlp
    x = np.random.default_rng(0).uniform(-1, 1, size=(300, 2))
    values = activations(model, x, "fc1:0,3 act1:1-2 act2 output input:1", batch_size=64)

    with torch.no_grad():
        inputs = torch.from_numpy(x)
        fc1 = model.fc1(inputs)
        act1 = torch.tanh(fc1)
        act2 = torch.tanh(model.fc2(act1))
        output = model.fc3(act2)
    expected = torch.cat([fc1[:, [0, 3]], act1[:, 1:3], act2, output, inputs[:, 1:]], dim=1).numpy()
    assert values.dtype == np.float64
    assert values.shape == (300, 2 + 2 + 8 + 1 + 1)
    np.testing.assert_array_equal(values, expected)


def test_batch_size_does_not_change_values(trained_mlp):
    x = np.random.default_rng(1).uniform(-1, 1, size=(50, 2))
    whole = activations(trained_mlp, x, "act2", batch_size=50)
    pieces = activations(trained_mlp, x, "act2", batch_size=7)
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-14)


def test_cnn_channel_and_position():
    torch.manual_seed(1)
    model = SmallCNN().double()
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    values = activations(model, x, "conv1:(0-3,2,5) relu2:(5,*,*)")
    with torch.no_grad():
        conv1 = model.conv1(x)
        relu2 = model.relu2(model.conv2(model.relu1(conv1)))
    expected = torch.cat([conv1[:, 0:4, 2, 5], relu2[:, 5].flatten(1)], dim=1).numpy()
    assert values.shape == (10, 4 + 64)
    np.testing.assert_array_equal(values, expected)


def test_tuple_and_dict_outputs():
    torch.manual_seed(2)
    model = StructuredOutputs().double()
    x = torch.randn(6, 3, dtype=torch.float64)
    values = activations(model, x, "split[0]:1 split[1][1][square]:0-1 output[sum]:3")
    with torch.no_grad():
        hidden = model.fc(x)
    expected = torch.cat(
        [torch.sin(hidden[:, 1:2]), hidden[:, 0:2] ** 2, torch.sin(hidden[:, 3:4]) + torch.cos(hidden[:, 3:4])],
        dim=1,
    ).numpy()
    np.testing.assert_allclose(values, expected, rtol=1e-15)


def test_tuple_output_without_key_lists_tensors():
    model = StructuredOutputs().double()
    with pytest.raises(TypeError, match=r"split\[0\]: shape \(4,\)"):
        activations(model, np.zeros((2, 3)), "split:0")
    with pytest.raises(KeyError, match="keys"):
        activations(model, np.zeros((2, 3)), "output[logits]:0")


def test_eval_mode_without_gradients_and_mode_restored():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1)).double()
    model.train()
    model[1].train(False)
    model[2].train(True)
    x = np.ones((20, 2))
    first = activations(model, x, "1")
    second = activations(model, x, "1")
    # Dropout in evaluation mode is the identity, so both runs and every row agree.
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, np.broadcast_to(first[0], first.shape))
    assert [module.training for module in model.modules()] == [True, True, False, True]
    assert all(parameter.grad is None for parameter in model.parameters())


def test_float32_model_casts_inputs():
    model = MLP().float()
    values = activations(model, np.zeros((3, 2)), "output")
    assert values.dtype == np.float64
    assert values.shape == (3, 1)


def test_hook_that_never_fires_raises():
    model = MLP().double()
    model.unused = torch.nn.Linear(2, 2)
    with pytest.raises(HookError, match="never fired"):
        activations(model, np.zeros((2, 2)), "unused:0")
    # The failed run leaves no hook behind.
    assert not model.unused._forward_hooks


def test_module_called_twice_raises():
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(2, 2)
            self.fc2 = torch.nn.Linear(2, 2)
            self.act = torch.nn.Tanh()

        def forward(self, x):
            return self.act(self.fc2(self.act(self.fc1(x))))

    with pytest.raises(HookError, match="called 2 times"):
        activations(Shared().double(), np.zeros((2, 2)), "act:0")


def test_batch_first_is_required():
    class SequenceFirst(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 3)

        def forward(self, x):
            return self.fc(x).repeat(4, 1, 1)

    with pytest.raises(ValueError, match="batch dimension first"):
        activations(SequenceFirst().double(), np.zeros((2, 2)), "output:0")


def test_domain_map_and_parametrization(trained_mlp):
    u = np.linspace(0, 1, 9)[:, None]

    def circle(t):
        return torch.cat([torch.cos(t), torch.sin(t)], dim=1)

    def halve(x):
        return 0.5 * x

    values = activations(trained_mlp, u, "act2", parametrization=circle, domain_map=halve)
    expected = activations(trained_mlp, 0.5 * np.hstack([np.cos(u), np.sin(u)]), "act2")
    np.testing.assert_allclose(values, expected, rtol=1e-14)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_exported_program_is_observable(trained_mlp):
    example = torch.zeros(4, 2, dtype=torch.float64)
    program = torch.export.export(
        trained_mlp, (example,), dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}}
    )
    x = np.random.default_rng(2).uniform(-1, 1, size=(5, 2))
    np.testing.assert_allclose(
        activations(program, x, "act1:0-3 fc3"), activations(trained_mlp, x, "act1:0-3 fc3"), rtol=1e-13
    )


def test_progress_bar_is_optional(trained_mlp, capsys):
    activations(trained_mlp, np.zeros((30, 2)), "act1", batch_size=2, progress=True)
    assert "activations" in capsys.readouterr().err
    activations(trained_mlp, np.zeros((30, 2)), "act1", batch_size=2, progress=False)
    assert capsys.readouterr().err == ""
