"""Figures of the rotating-horse experiment: sample frames, embeddings, cross-decoded images, errors."""

import logging
from pathlib import Path

import numpy as np

from ._common import new_figure, save_figure

logger = logging.getLogger("netequiv.experiments")

N_SAMPLES = 8
N_STRIP = 10
N_GIF_FRAMES = 72


def draw_figures(out, frames, angles, n_range, centres, phi, psi, orthogonal_map, cross_decoded, errors, mae_limit,
                 onsets, histories):
    """Write samples.png, embeddings.png, cross_decoding.png, cross_decoding_error.png,
    training_loss.png and, when Pillow is installed, cross_decoding.gif to ``out``."""
    degrees = np.degrees(angles)
    range_end = 360.0 * n_range / len(angles)
    _samples(out, frames, degrees, n_range)
    _embeddings(out, degrees, centres, phi, psi, orthogonal_map)
    _strip(out, frames, cross_decoded, degrees, n_range)
    _errors(out, degrees, range_end, errors, mae_limit, onsets)
    _losses(out, histories)
    _animation(out, frames, cross_decoded, n_range)


def _image_axes(ax, image, title=None):
    ax.imshow(np.nan_to_num(image, nan=0.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)


def _samples(out, frames, degrees, n_range):
    columns = np.linspace(0, len(degrees), N_SAMPLES, endpoint=False).astype(int)
    figure, axes = new_figure(N_SAMPLES, 2, width=1.3, height=1.45)
    for column, frame in enumerate(columns):
        where = "training" if frame < n_range else "outside"
        _image_axes(axes[0, column], frames[0][frame], f"{degrees[frame]:.0f} deg ({where})")
        _image_axes(axes[1, column], frames[1][frame])
    axes[0, 0].set_ylabel("camera 1 (above)")
    axes[1, 0].set_ylabel("camera 2 (below)")
    figure.suptitle("Sample frames of the turn")
    save_figure(figure, out, "samples")


def _embeddings(out, degrees, centres, phi, psi, orthogonal_map):
    figure, axes = new_figure(3, 1, width=3.8)
    for ax, embedding, name in ((axes[0, 0], phi, "phi (camera 1)"), (axes[0, 1], psi, "psi (camera 2)")):
        points = ax.scatter(embedding[:, 0], embedding[:, 1], c=degrees[centres], s=6, cmap="viridis")
        ax.set(xlabel="coordinate 1", ylabel="coordinate 2", title=f"Diffusion map {name}")
    figure.colorbar(points, ax=axes[0, :2], label="angle (degrees)")
    ax = axes[0, 2]
    ax.plot(degrees[centres], (phi @ orthogonal_map.T)[:, 0], label="O phi, coordinate 1")
    ax.plot(degrees[centres], psi[:, 0], "--", label="psi, coordinate 1")
    ax.set(xlabel="angle (degrees)", ylabel="coordinate 1", title="First coordinate against the angle")
    ax.legend(fontsize=8)
    save_figure(figure, out, "embeddings")


def _strip(out, frames, cross_decoded, degrees, n_range):
    columns = np.linspace(0, len(degrees), N_STRIP, endpoint=False).astype(int)
    figure, axes = new_figure(N_STRIP, 3, width=1.2, height=1.35)
    for column, frame in enumerate(columns):
        where = "in" if frame < n_range else "out"
        _image_axes(axes[0, column], frames[0][frame], f"{degrees[frame]:.0f} deg ({where})")
        _image_axes(axes[1, column], cross_decoded[frame])
        _image_axes(axes[2, column], frames[1][frame])
    for row, label in enumerate(("camera 1 input", "cross-decoded", "camera 2 truth")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    figure.suptitle("Camera 1 -> encoder 1 -> T -> decoder 2, against the true camera-2 image ('in': training range)")
    save_figure(figure, out, "cross_decoding")


def _errors(out, degrees, range_end, errors, mae_limit, onsets):
    figure, axes = new_figure(1, 2, width=7.5, height=2.8)
    for ax, kind, label in ((axes[0, 0], "mae", "mean absolute error"), (axes[1, 0], "bce", "binary cross-entropy")):
        ax.axvspan(0, range_end, color="0.9", label="training range")
        ax.plot(degrees, errors[f"cross_{kind}"], lw=1, label="cross-decoded from camera 1")
        ax.plot(degrees, errors[f"reconstruction_{kind}"], lw=1, label="autoencoder 2 reconstruction")
        undecodable = np.isnan(errors[f"cross_{kind}"])
        if undecodable.any():
            ax.plot(degrees[undecodable], np.zeros(undecodable.sum()), "|", color="r", label="not cross-decodable")
        ax.set(xlabel="angle (degrees)", ylabel=label, xlim=(0, 360))
    axes[0, 0].axhline(mae_limit, color="k", ls=":", lw=1, label="1.5 x reconstruction MAE (training range)")
    for side, frame in onsets.items():
        if frame is not None:
            axes[0, 0].axvline(degrees[frame], color="r", lw=1)
            axes[0, 0].annotate(f"fails at {degrees[frame]:.0f}", (degrees[frame], mae_limit), fontsize=8, color="r")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[0, 0].set_title("Cross-decoding error against the angle")
    save_figure(figure, out, "cross_decoding_error")


def _losses(out, histories):
    figure, axes = new_figure()
    ax = axes[0, 0]
    for camera, history in enumerate(histories, start=1):
        line, = ax.plot(history["loss"], label=f"autoencoder {camera}, training (noisy inputs)")
        ax.plot(history["validation_loss"], "--", color=line.get_color(), label=f"autoencoder {camera}, validation")
        ax.axhline(history["mean_image_loss"], color=line.get_color(), ls=":", lw=1, label=f"mean image {camera}, validation")
    ax.set(xlabel="epoch (of the last start)", ylabel="loss", yscale="log", title="Autoencoder training")
    ax.legend(fontsize=7)
    save_figure(figure, out, "training_loss")


def _animation(out, frames, cross_decoded, n_range):
    """Write a GIF of the sweep: camera-1 input, cross-decoded image and camera-2 truth side by side."""
    try:
        from PIL import Image
    except ImportError:
        logger.info("Pillow is not installed; cross_decoding.gif is not written")
        return
    n_angles, size = len(frames[0]), frames[0].shape[1]
    scale = max(1, 128 // size)
    images = []
    for frame in np.linspace(0, n_angles, N_GIF_FRAMES, endpoint=False).astype(int):
        row = np.concatenate([frames[0][frame], np.nan_to_num(cross_decoded[frame]), frames[1][frame]], axis=1)
        # A bar under the images: white inside the training range, dark outside.
        bar = np.full((max(2, size // 16), row.shape[1]), 1.0 if frame < n_range else 0.25)
        pixels = np.kron(np.vstack([row, bar]), np.ones((scale, scale)))
        images.append(Image.fromarray(np.round(255 * np.clip(pixels, 0, 1)).astype(np.uint8)))
    images[0].save(Path(out) / "cross_decoding.gif", save_all=True, append_images=images[1:], duration=80, loop=0)
