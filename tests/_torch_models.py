"""Small torch models for the tests of netequiv.torch, and a quick trainer.

The model factories here also serve as ``factory="_torch_models:make_mlp"`` targets when state
dicts are loaded, because pytest puts the tests folder on sys.path.
"""

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected tanh network with named layers fc1, act1, fc2, act2, fc3."""

    def __init__(self, inputs=2, hidden=8, outputs=1):
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.act1 = nn.Tanh()
        self.fc2 = nn.Linear(hidden, hidden)
        self.act2 = nn.Tanh()
        self.fc3 = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


class OneThreeOne(nn.Module):
    """The 1-3-1 tanh network: one input, three hidden tanh neurons, one output."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(1, 3)
        self.act = nn.Tanh()
        self.out = nn.Linear(3, 1)

    def forward(self, x):
        return self.out(self.act(self.hidden(x)))


class StructuredOutputs(nn.Module):
    """A network whose submodule returns a tuple and whose forward returns a dict."""

    class Split(nn.Module):
        def forward(self, x):
            return torch.sin(x), (torch.cos(x), {"square": x * x})

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.split = self.Split()

    def forward(self, x):
        first, (second, extra) = self.split(self.fc(x))
        return {"sum": first + second, "square": extra["square"]}


class SmallCNN(nn.Module):
    """Two convolutions on 1 x 8 x 8 images, then a linear read-out."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.relu1 = nn.Softplus()
        self.conv2 = nn.Conv2d(4, 6, kernel_size=3, padding=1)
        self.relu2 = nn.Softplus()
        self.head = nn.Linear(6 * 8 * 8, 2)

    def forward(self, x):
        features = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.head(features.flatten(1))


class ItemBranch(MLP):
    """An MLP whose forward converts a tensor to a Python number, which torch.func cannot trace."""

    def forward(self, x):
        if float(x.abs().max().item()) > 1e6:
            raise ValueError("input out of range")
        return super().forward(x)


def make_mlp(inputs=2, hidden=8, outputs=1):
    """Build an untrained float64 MLP; the factory that state-dict loading tests name."""
    return MLP(inputs, hidden, outputs).double()


def train(model, inputs, targets, steps=200, seed=0):
    """Fit ``model`` to ``targets`` by L-BFGS on the mean squared error; returns the final loss."""
    torch.manual_seed(seed)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.mean((model(inputs) - targets) ** 2)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(torch.mean((model(inputs) - targets) ** 2))


def domain_map_s(x):
    """S(x) = 2 + 2x + sin(4 pi x) / (3 pi), a diffeomorphism of [0, 1] onto [2, 4]."""
    return 2.0 + 2.0 * x + torch.sin(4.0 * math.pi * x) / (3.0 * math.pi)
