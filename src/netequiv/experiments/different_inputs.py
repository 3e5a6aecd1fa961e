"""Internal neurons, different inputs: two 1-3-1 tanh networks see [0, 1] through different instruments.

Network 1 learns f(x) = -(x - 0.25)^2 - 1 on D1 = [0, 1]. Network 2 learns the same task on
D2 = S(D1), S(x) = 2 + 2x + sin(4 pi x) / (3 pi): its target at S(x) is f(x). Neighbourhoods of
q points are sampled in domain 1 and pushed through S for network 2, so both metrics are pulled
back to the same input manifold. With all three hidden neurons of each network (2d + 1 = 3 for
d = 1), the Mahalanobis embeddings agree up to sign; Euclidean diffusion maps of the same
activations do not, because S stretches the segment unevenly.

Settings (paper preset): 900 training and 100 validation points uniform on [0, 1];
n = 990 neighbourhood centres evenly spaced on [-0.1, 1.1], beyond the training set at both
ends; q = 11 points per neighbourhood, uniform in a ball of radius 0.01 (the radius is our
choice, because Bertalan, Dietrich and Kevrekidis do not state it). Their text gives 15 points per
neighbourhood and their table 11; the table's value is used.
"""

import numpy as np

from ..diffusion_maps import MahalanobisDiffusionMap
from ..local_metric import metric_from_clouds
from ._common import (
    StageTimer,
    abs_correlations,
    forward,
    mlp,
    new_figure,
    relative_rmse,
    save_figure,
    train_regression,
    write_outputs,
)

SETTINGS = {
    "paper": dict(n_train=900, n_val=100, epochs=2000, batch_size=64, n_centres=990, q=11, n_test=2000),
    "quick": dict(n_train=900, n_val=100, epochs=800, batch_size=64, n_centres=600, q=11, n_test=1000),
}
RADIUS = 0.01
CENTRE_RANGE = (-0.1, 1.1)
# Kernel bandwidth and training MSE as Bertalan, Dietrich and Kevrekidis report them.
PAPER = {"epsilon": [5.0], "training_mse": [1.48e-5, 8.60e-3]}


def task(x):
    return -((x - 0.25) ** 2) - 1.0


def domain_map(x):
    """S(x) = 2 + 2x + sin(4 pi x) / (3 pi), increasing (S' >= 2/3) and so invertible."""
    return 2.0 + 2.0 * x + np.sin(4.0 * np.pi * x) / (3.0 * np.pi)


def run(out, preset="paper", seed=0, progress=True):
    """Run the experiment; see the module docstring. Returns the metrics dict."""
    from ..torch import NeuronSelection, activations, sample_ball
    from ..transformation import NetworkTransformation

    settings = SETTINGS[preset]
    timer = StageTimer("different-inputs")
    rng = np.random.default_rng(seed)

    x = rng.uniform(0.0, 1.0, size=(settings["n_train"] + settings["n_val"], 1))
    x_train, x_val = x[: settings["n_train"]], x[settings["n_train"] :]
    with timer("training"):
        network_1, mse_1, val_1 = train_regression(
            mlp([1, 3, 1], seed=seed), x_train, task(x_train), x_val, task(x_val), epochs=settings["epochs"],
            batch_size=settings["batch_size"], learning_rate=1e-2, seed=seed, progress=progress, name="network_1",
        )
        network_2, mse_2, val_2 = train_regression(
            mlp([1, 3, 1], seed=seed + 1), domain_map(x_train), task(x_train), domain_map(x_val), task(x_val),
            epochs=settings["epochs"], batch_size=settings["batch_size"], learning_rate=1e-2, seed=seed + 1,
            progress=progress, name="network_2",
        )
    hidden = NeuronSelection.parse("act1:0-2")

    centres = np.linspace(*CENTRE_RANGE, settings["n_centres"])[:, None]
    with timer("neighbourhoods and metrics"):
        balls = sample_ball(centres, RADIUS, settings["q"], rng=rng)  # (n, q, 1) in domain 1
        n, q = balls.shape[:2]
        clouds_1 = activations(network_1, balls.reshape(-1, 1), hidden, progress=False).reshape(n, q, 3)
        clouds_2 = activations(network_2, domain_map(balls.reshape(-1, 1)), hidden, progress=False).reshape(n, q, 3)
        C1 = metric_from_clouds(clouds_1, rank=1)
        C2 = metric_from_clouds(clouds_2, rank=1)
        Y1 = activations(network_1, centres, hidden, progress=False)
        Y2 = activations(network_2, domain_map(centres), hidden, progress=False)

    pairs = np.searchsorted(centres[:, 0], [0.3, 0.7])
    with timer("Mahalanobis transformation"):
        transformation = NetworkTransformation(n_components=1, random_state=seed).fit(
            Y1, Y2, inverse_covariances_1=C1, inverse_covariances_2=C2,
            correspondences=np.stack([pairs, pairs], axis=1),
        )
    with timer("Euclidean diffusion maps"):
        euclidean_1 = MahalanobisDiffusionMap(n_components=1, random_state=seed).fit_transform(Y1)
        euclidean_2 = MahalanobisDiffusionMap(n_components=1, random_state=seed).fit_transform(Y2)
    phi, psi = transformation.diffusion_map_1_.embedding_, transformation.diffusion_map_2_.embedding_
    mahalanobis_correlation = float(abs_correlations(phi, psi)[0])
    euclidean_correlation = float(abs_correlations(euclidean_1, euclidean_2)[0])
    # Correlation near 1 hides visible mismatches; the RMSE between the sign-aligned
    # coordinates, relative to their spread, shows them.
    mahalanobis_mismatch = _aligned_mismatch(phi[:, 0], psi[:, 0])
    euclidean_mismatch = _aligned_mismatch(euclidean_1[:, 0], euclidean_2[:, 0])

    x_test = np.linspace(0.0, 1.0, settings["n_test"])[:, None]
    Y1_test = activations(network_1, x_test, hidden, progress=False)
    Y2_test = activations(network_2, domain_map(x_test), hidden, progress=False)
    predicted = transformation.transform(Y1_test)
    transformation_error = relative_rmse(predicted, Y2_test)

    metrics = {
        "settings": {**settings, "radius": RADIUS, "centre_range": CENTRE_RANGE},
        "training_mse": [mse_1, mse_2],
        "validation_mse": [val_1, val_2],
        "paper": PAPER,
        "epsilon": [transformation.diffusion_map_1_.epsilon_, transformation.diffusion_map_2_.epsilon_],
        "mahalanobis_embedding_abs_correlation": mahalanobis_correlation,
        "euclidean_embedding_abs_correlation": euclidean_correlation,
        "mahalanobis_embedding_relative_mismatch": mahalanobis_mismatch,
        "euclidean_embedding_relative_mismatch": euclidean_mismatch,
        "transformation_relative_rmse_on_training_domain": transformation_error,
        "seconds": timer.seconds,
        "checks": {
            "Mahalanobis embeddings agree up to sign (|correlation| > 0.999)": mahalanobis_correlation > 0.999,
            "Euclidean embeddings agree clearly less (10x the Mahalanobis mismatch)": (
                euclidean_mismatch > 10 * mahalanobis_mismatch and euclidean_correlation < mahalanobis_correlation
            ),
        },
    }
    _figures(out, centres, balls, x_test, network_1, network_2, Y1, Y2, phi, psi, euclidean_1, euclidean_2)
    summary = [
        f"training MSE: network 1 {mse_1:.2e}, network 2 {mse_2:.2e} (paper {PAPER['training_mse']})",
        f"epsilon (median rule): {metrics['epsilon'][0]:.3g}, {metrics['epsilon'][1]:.3g} (paper {PAPER['epsilon']})",
        f"|correlation| of the Mahalanobis embeddings: {mahalanobis_correlation:.6f}",
        f"|correlation| of the Euclidean embeddings: {euclidean_correlation:.6f}",
        f"relative RMSE between the aligned embeddings: Mahalanobis {mahalanobis_mismatch:.4f}, Euclidean {euclidean_mismatch:.4f}",
        f"relative RMSE of T on [0, 1]: {transformation_error:.4f}",
    ]
    write_outputs(out, "different-inputs", preset, seed, metrics, summary, {"network_1": network_1, "network_2": network_2})
    return metrics


def _aligned_mismatch(first, second):
    """RMSE between two coordinates after the better sign, relative to the first one's spread."""
    sign = np.sign(np.sum(first * second)) or 1.0
    return relative_rmse(sign * second, first)


def _figures(out, centres, balls, x_test, network_1, network_2, Y1, Y2, phi, psi, euclidean_1, euclidean_2):
    x = centres[:, 0]

    figure, axes = new_figure(2, 1)
    grid = np.linspace(*CENTRE_RANGE, 500)
    axes[0, 0].plot(grid, domain_map(grid))
    axes[0, 0].axvspan(0, 1, color="0.9", label="training domain D1")
    axes[0, 0].set(xlabel="x (domain 1)", ylabel="S(x) (domain 2)", title="Domain map S")
    axes[0, 0].legend(fontsize=8)
    samples = balls.reshape(-1)
    axes[0, 1].hist(samples, bins=80, density=True, alpha=0.6, label="domain 1")
    axes[0, 1].hist(domain_map(samples), bins=80, density=True, alpha=0.6, label="pushed through S")
    axes[0, 1].set(xlabel="input", ylabel="density", title="Neighbourhood samples in both domains")
    axes[0, 1].legend(fontsize=8)
    save_figure(figure, out, "domain_map")

    figure, axes = new_figure(2, 1)
    axes[0, 0].plot(grid, task(grid), "k--", label="task")
    axes[0, 0].plot(grid, forward(network_1, grid[:, None])[:, 0], label="network 1")
    axes[0, 0].axvspan(0, 1, color="0.9")
    axes[0, 0].set(xlabel="x", ylabel="output", title="Network 1 on domain 1")
    axes[0, 0].legend(fontsize=8)
    axes[0, 1].plot(domain_map(grid), task(grid), "k--", label="task")
    axes[0, 1].plot(domain_map(grid), forward(network_2, domain_map(grid)[:, None])[:, 0], label="network 2")
    axes[0, 1].axvspan(domain_map(0.0), domain_map(1.0), color="0.9")
    axes[0, 1].set(xlabel="S(x)", ylabel="output", title="Network 2 on domain 2")
    axes[0, 1].legend(fontsize=8)
    save_figure(figure, out, "tasks")

    figure, axes = new_figure(2, 1)
    axes[0, 0].plot(x, Y1)
    axes[0, 0].set(xlabel="x", ylabel="activation", title="Network 1 hidden neurons")
    axes[0, 1].plot(x, Y2)
    axes[0, 1].set(xlabel="x (network 2 sees S(x))", ylabel="activation", title="Network 2 hidden neurons")
    for ax in axes[0]:
        ax.axvspan(0, 1, color="0.9")
    save_figure(figure, out, "selected_activations")

    figure, axes = new_figure(2, 1)
    for ax, (first, second), title in (
        (axes[0, 0], (euclidean_1, euclidean_2), "Euclidean diffusion maps"),
        (axes[0, 1], (phi, psi), "Mahalanobis diffusion maps"),
    ):
        sign = np.sign(np.sum(first[:, 0] * second[:, 0]))
        ax.plot(x, first[:, 0], label="network 1")
        ax.plot(x, sign * second[:, 0], "--", label="network 2 (sign aligned)")
        ax.axvspan(0, 1, color="0.9")
        correlation = abs_correlations(first, second)[0]
        ax.set(xlabel="x", ylabel="first coordinate", title=f"{title}: |corr| = {correlation:.6f}")
        ax.legend(fontsize=8)
    save_figure(figure, out, "embeddings")
