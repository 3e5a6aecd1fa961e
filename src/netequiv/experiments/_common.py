"""Shared parts of the experiments: small tanh networks, their training, timing and output files."""

import dataclasses
import json
import logging
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

logger = logging.getLogger("netequiv.experiments")


def mlp(widths, activation="tanh", seed=None):
    """Build a fully connected network with the given layer widths, tanh hidden layers, linear output.

    Hidden layers are named ``fc1``, ``fc2``, ... and their activations ``act1``, ``act2``, ...,
    so that a selection such as ``"act2:0-4"`` picks the second hidden layer after tanh. With
    ``seed``, the initial weights depend on it alone, not on torch's global random state.
    """
    import torch

    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return mlp(widths, activation)
    layers = []
    for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        layers.append((f"fc{index}", torch.nn.Linear(width_in, width_out)))
        if index < len(widths) - 1:
            layers.append((f"act{index}", torch.nn.Tanh() if activation == "tanh" else torch.nn.ReLU()))
    from collections import OrderedDict

    return torch.nn.Sequential(OrderedDict(layers))


def train_regression(model, X, y, X_val, y_val, *, epochs, batch_size, learning_rate, seed, progress=True, name="network"):
    """Train ``model`` on mean squared error with Adam and a cosine learning-rate schedule.

    Returns the final training and validation mean squared errors. The model is trained in
    float32 and returned in float64, ready for Jacobians that finite differences can check.
    """
    import torch

    torch.manual_seed(seed)
    # Networks this small train fastest on one thread; more threads only contend for the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, train_mse, val_mse = _train(model, X, y, X_val, y_val, epochs, batch_size, learning_rate, seed, progress, name)
    finally:
        torch.set_num_threads(threads)
    logger.info("%s trained: training MSE %.2e, validation MSE %.2e", name, train_mse, val_mse)
    return model, train_mse, val_mse


def _train(model, X, y, X_val, y_val, epochs, batch_size, learning_rate, seed, progress, name):
    import torch
    from tqdm.auto import tqdm

    model = model.float()
    X_t = torch.as_tensor(X, dtype=torch.float32)
    y_t = torch.as_tensor(y, dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    n = len(X_t)
    bar = tqdm(range(epochs), desc=f"training {name}", disable=None if progress else True, leave=False, mininterval=1.0)
    for _ in bar:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.mean((model(X_t[batch]) - y_t[batch]) ** 2)
            loss.backward()
            optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.2e}")
    model = model.double().eval()
    with torch.no_grad():
        train_mse = float(torch.mean((model(torch.as_tensor(X, dtype=torch.float64)) - torch.as_tensor(y)) ** 2))
        val_mse = float(torch.mean((model(torch.as_tensor(X_val, dtype=torch.float64)) - torch.as_tensor(y_val)) ** 2))
    return model, train_mse, val_mse


def forward(model, X):
    """Evaluate a float64 model on a numpy array without gradients."""
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(X, dtype=float))).numpy()


class StageTimer:
    """Log one line per stage with its wall time, and keep the times for metrics.json."""

    def __init__(self, experiment):
        self.experiment = experiment
        self.seconds = {}

    @contextmanager
    def __call__(self, stage):
        start = time.perf_counter()
        logger.info("%s: %s ...", self.experiment, stage)
        yield
        elapsed = time.perf_counter() - start
        self.seconds[stage] = round(elapsed, 3)
        logger.info("%s: %s done in %.1f s", self.experiment, stage, elapsed)


def abs_correlations(A, B):
    """|Pearson correlation| between matching columns of A and B."""
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    return np.abs(np.sum(A * B, axis=0) / np.sqrt(np.sum(A**2, axis=0) * np.sum(B**2, axis=0)))


def relative_rmse(predicted, true):
    """RMSE of ``predicted`` divided by the RMS deviation of ``true`` from its mean, over all entries."""
    predicted = np.asarray(predicted, dtype=float)
    true = np.asarray(true, dtype=float)
    return float(np.sqrt(np.mean((predicted - true) ** 2)) / np.sqrt(np.mean((true - true.mean(axis=0)) ** 2)))


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable({item.name: getattr(value, item.name) for item in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def write_outputs(out, experiment, preset, seed, metrics, summary_lines, models):
    """Write metrics.json, summary.txt and the state dict of each model to ``out``."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "experiment": experiment,
        "preset": preset,
        "seed": seed,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        **metrics,
    }
    (out / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=2) + "\n")
    checks = metrics.get("checks", {})
    lines = [f"{experiment} ({preset} preset, seed {seed})", *summary_lines, ""]
    lines += [f"check {name}: {'met' if ok else 'NOT met'}" for name, ok in checks.items()]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    for name, model in models.items():
        # Tensors only, so that torch.load(..., weights_only=True) reads them back.
        torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, out / f"{name}.pt")
    return metrics


def new_figure(n_columns=1, n_rows=1, width=4.2, height=3.4, **kwargs):
    """Create a matplotlib figure and its axes without pyplot, so that no global backend is set."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_columns, height * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_columns, squeeze=False, **kwargs)
    return figure, axes


def save_figure(figure, out, name):
    """Save a matplotlib figure as ``out/name.png``."""
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / f"{name}.png"
    figure.savefig(path, dpi=110)
    return path
