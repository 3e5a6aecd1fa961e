"""The figures of a compare report, drawn on :class:`matplotlib.figure.Figure` without pyplot.

Each function returns a figure; :func:`png_bytes` renders it. No global matplotlib state (backend,
style, rcParams) is changed.
"""

import io

import numpy as np

__all__ = ["breakdown_figure", "embeddings_figure", "held_out_figure", "png_bytes", "spectra_figure"]

# At most this many coordinates or neurons get a panel of their own.
MAX_PANELS = 4


def _figure(n_columns=1, n_rows=1, width=4.0, height=3.3):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_columns, height * n_rows), layout="constrained")
    return figure, figure.subplots(n_rows, n_columns, squeeze=False)


def png_bytes(figure, dpi=100):
    """Render a figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _diagonal(ax, x, y):
    values = np.concatenate([np.ravel(x), np.ravel(y)])
    values = values[np.isfinite(values)]
    if values.size:
        low, high = values.min(), values.max()
        ax.plot([low, high], [low, high], color="0.5", lw=1, ls=":", zorder=0)


def spectra_figure(spectra):
    """Plot the diffusion-map eigenvalues of both networks side by side, and their Laplacian estimates.

    Isometric input manifolds have the same Laplace-Beltrami eigenvalues, so matching spectra
    are evidence of equivalence.
    """
    figure, axes = _figure(2, 1)
    for ax, key, label in (
        (axes[0, 0], "eigenvalues", "diffusion-map eigenvalue"),
        (axes[0, 1], "laplacian_eigenvalues", "Laplace-Beltrami estimate"),
    ):
        for offset, (name, marker) in zip((-0.12, 0.12), (("a", "o"), ("b", "s"))):
            values = np.asarray(spectra[name][key], dtype=float)
            ax.plot(np.arange(1, values.size + 1) + offset, values, marker, label=f"model {name.upper()}")
        ax.set(xlabel="coordinate k", ylabel=label)
        ax.legend(fontsize=8)
    axes[0, 0].set_title("Kept eigenvalues")
    axes[0, 1].set_title("Laplacian eigenvalues")
    return figure


def embeddings_figure(phi, psi, orthogonal_map):
    """Plot held-out embedding coordinates of model B against model A's, before and after alignment."""
    aligned = phi @ np.asarray(orthogonal_map).T
    n_coordinates = min(phi.shape[1], MAX_PANELS)
    figure, axes = _figure(n_coordinates, 2, width=3.2, height=3.0)
    for k in range(n_coordinates):
        for row, (source, title) in enumerate(((phi, "before alignment"), (aligned, "after alignment"))):
            ax = axes[row, k]
            ax.scatter(source[:, k], psi[:, k], s=6, alpha=0.7)
            _diagonal(ax, source[:, k], psi[:, k])
            ax.set(xlabel=f"A coordinate {k + 1}", ylabel=f"B coordinate {k + 1}", title=title)
    return figure


def held_out_figure(predicted, true, labels):
    """Plot predicted against true held-out activations of model B, one panel a neuron (up to 4)."""
    order = np.argsort(-np.std(true, axis=0))[:MAX_PANELS] if true.shape[1] > MAX_PANELS else np.arange(true.shape[1])
    figure, axes = _figure(len(order), 1, width=3.2, height=3.0)
    for ax, j in zip(axes[0], order):
        ax.scatter(true[:, j], predicted[:, j], s=6, alpha=0.7)
        _diagonal(ax, true[:, j], predicted[:, j])
        ax.set(xlabel=f"true {labels[j]}", ylabel="predicted from model A", title=labels[j])
    return figure


def breakdown_figure(score, threshold, first_break):
    """Plot the breakdown score along the path beyond the training data, with its threshold."""
    figure, axes = _figure(1, 1, width=6.0)
    ax = axes[0, 0]
    score = np.asarray(score, dtype=float)
    # Infinite scores (points that could not be embedded) are drawn at the top of the axes.
    finite = score[np.isfinite(score)]
    ceiling = 10 * finite.max() if finite.size else 10.0
    score = np.where(np.isfinite(score), score, ceiling)
    ax.plot(np.arange(score.size), score, label="breakdown score")
    if threshold is not None:
        ax.axhline(float(threshold), color="k", ls=":", label="threshold")
    if first_break is not None:
        ax.axvline(int(first_break), color="r", label=f"first break at point {int(first_break)}")
    if np.all(score > 0):
        ax.set_yscale("log")
    ax.set(xlabel="point along the path", ylabel="score", title="Where the transformation stops being valid")
    ax.legend(fontsize=8)
    return figure
