"""Train a network on another task, for the non-equivalent example (other_task.toml).

The network is a 1-8-1 tanh network trained on f(x) = x^2 over [-1, 1], in the way
``netequiv reproduce`` trains its networks. Its output takes each value twice (at x and -x), so
it cannot be an invertible function of any network whose neurons tell x from -x, such as the
hidden neuron of the parabola experiment's network 1.

Run from the repository root (about 10 seconds on 2 CPU cores):

    python examples/train_other_task.py

It writes the state dict to netequiv-out/other-task/network.pt, or to the folder given with
``--out``.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from netequiv.experiments._common import mlp, train_regression


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="netequiv-out/other-task", help="output folder (default: netequiv-out/other-task)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x_train = rng.uniform(-1.0, 1.0, size=(2048, 1))
    x_val = rng.uniform(-1.0, 1.0, size=(256, 1))
    model, _, _ = train_regression(
        mlp([1, 8, 1]), x_train, x_train**2, x_val, x_val**2,
        epochs=100, batch_size=128, learning_rate=1e-2, seed=args.seed, progress=False, name="other-task network",
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Tensors only, so that torch.load(..., weights_only=True) reads them back.
    torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, out / "network.pt")
    print(f"wrote {out / 'network.pt'}")


if __name__ == "__main__":
    main()
