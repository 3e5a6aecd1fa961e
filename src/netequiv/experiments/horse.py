"""A rotating horse seen by two cameras: two convolutional autoencoders, one view cross-decoded from the other.

This is the rotating-horse experiment of Bertalan, Dietrich and Kevrekidis, "Transformations
between deep neural networks" (arXiv:2007.05646, 2021), called "the paper" below. A horse mesh
turns about its vertical axis, and frame k of n shows it at the angle 2 pi k / n. Camera 1 looks
at it from above its equator (elevation 25 degrees), camera 2 from below (-15 degrees), both from
the same side. One convolutional autoencoder per camera (:mod:`._autoencoder`) learns a 6-D code
of that camera's images. Both codes observe the same 1-D manifold, the turning angle, so a
Mahalanobis diffusion map of each gives the same coordinates up to an orthogonal map, and
T = psi^-1 o O o phi maps camera-1 codes to camera-2 codes. Decoding T(code) with autoencoder 2
turns a camera-1 image into the camera-2 image of the same angle (cross-decoding).

Data. The paper writes the training interval as "[pi, 0.6 pi]", which is empty read literally.
Its 2,160 consecutive training angles out of 3,600 per turn are 0.6 of a full turn, so it is read
here as the first 0.6 of a turn: frames 0 to 2,159, angles [0, 1.2 pi). The paper's table lists
1,943 training and 216 validation images, 2,159 in total. A 90/10 split of 2,159 frames
(``int(0.9 n)`` for training, as Keras's ``validation_split`` does) gives exactly these counts,
so the autoencoders train on frames 0 to 2,158 in random order, split 1,943 / 216. The inputs
carry noise |z|, z ~ N(0, 1/10), clipped to [0, 1]. The targets are the clean images.

Transformation. For each of the 2,160 frames of the training range, the metric is the
pseudo-inverse of the covariance of the codes of the q = 431 frames around it (shifted at the
ends of the range, never past it), truncated to rank 1, the dimension of the manifold. The
quick preset instead truncates at the largest gap of each window's spectrum (``metric_rank``
None). Its 32-pixel codes are noisier and its 72 centres sparse, and with rank 1, which gives no
cost across the arc that a window spans, frames far apart along the turn became Mahalanobis
neighbours (|Spearman| 0.4 to 0.96 in trials). On the 64-pixel codes the estimated rank in turn
gave a stepped, less isometric embedding (cross-decoding errors 1.7 to 2.4 times autoencoder 2's).
The diffusion maps use n = 649 frames evenly spaced over the training range, with 2 coordinates
each. Two corresponding frames (at 1/3 and 2/3 of the range) fix the orthogonal map, and psi^-1
is linear interpolation.

Checks, over all frames of the training range:

- cross-decoding error (binary cross-entropy and mean absolute error against the true camera-2
  image) at most 1.5 times autoencoder 2's own reconstruction error;
- |Spearman correlation| of each embedding's first coordinate with the angle above 0.99;
- each autoencoder's reconstruction error below 0.7 times that of its mean training image, so
  that the first check compares against autoencoders that learned the views.

A frame fails where its cross-decoding mean absolute error, as a running median over 1 % of a
turn, exceeds 1.5 times autoencoder 2's mean over the training range. Outside the training range
cross-decoding is expected to fail. The first failing angle on each side of the range and the
fraction of failing frames inside and outside it are reported.

Presets:

- ``paper``: 64 x 64 images, 3,600 frames, 220 epochs at learning rate 1e-4 with NAdam, batch
  128. One epoch took 13 s on one core of a shared 2-core machine, so an estimated 48 minutes
  per autoencoder.
- ``fast``: the paper's data and transformation, 30 epochs at learning rate 1e-3, batch 32.
  With seed 0 it took 12 minutes on one core of the same machine and met every check.
  Run it with ``netequiv reproduce horse --preset fast``.
- ``quick``: 32 x 32 images, 360 frames per turn (training range 216, window 43, 72 centres), 60
  epochs at learning rate 1e-3, batch 16, on one torch thread. It asserts the same thresholds as
  the paper preset and takes about a minute on 2 cores.
"""

import numpy as np
from scipy.stats import spearmanr

from ..local_metric import metric_from_sequence
from ._common import StageTimer, write_outputs
from ._horse_figures import draw_figures

SETTINGS = {
    "paper": dict(
        image_size=64, n_angles=3600, epochs=220, batch_size=128, learning_rate=1e-4, window=431, n_centres=649,
        metric_rank=1,
    ),
    "fast": dict(
        image_size=64, n_angles=3600, epochs=30, batch_size=32, learning_rate=1e-3, window=431, n_centres=649,
        metric_rank=1,
    ),
    "quick": dict(
        image_size=32, n_angles=360, epochs=60, batch_size=16, learning_rate=1e-3, window=43, n_centres=72,
        metric_rank=None, num_threads=1,
    ),
}
TRAINING_FRACTION = 0.6  # of a full turn, starting at angle 0
VALIDATION_FRACTION = 0.1
NOISE_VARIANCE = 0.1
CODE_SIZE = 6
# NOTE: the paper's target code range (l*, h*) was not checked against its text; [-1, 1] is assumed.
CODE_RANGE = (-1.0, 1.0)
RANGE_WEIGHT = 1e-5
N_COMPONENTS = 2
ERROR_RATIO_LIMIT = 1.5
BASELINE_RATIO_LIMIT = 0.7
SPEARMAN_LIMIT = 0.99
SMOOTHING_FRACTION = 0.01  # of a turn, for locating where cross-decoding fails
# The paper's data table, for comparison.
PAPER = {"n_train": 1943, "n_validation": 216, "n_frames": 3600, "n_training_range": 2160}


def _cameras():
    from ._render import Camera

    return Camera(elevation=25.0), Camera(elevation=-15.0)


def binary_cross_entropy(predicted, true):
    """Mean pixelwise binary cross-entropy of each image; rows are images, NaN where ``predicted`` is NaN."""
    predicted = np.clip(predicted, 1e-7, 1 - 1e-7)
    values = -(true * np.log(predicted) + (1 - true) * np.log(1 - predicted))
    return values.reshape(len(values), -1).mean(axis=1)


def mean_absolute_error(predicted, true):
    """Mean absolute pixel error of each image; NaN where ``predicted`` is NaN."""
    return np.abs(predicted - true).reshape(len(true), -1).mean(axis=1)


def failing_frames(errors, limit, window):
    """Return which frames of a full turn fail: the running median of ``errors`` over ``window``
    frames (centred, wrapping around the turn) exceeds ``limit``.

    NaN errors (frames that could not be cross-decoded) count as infinite.
    """
    values = np.where(np.isnan(errors), np.inf, errors)
    half = window // 2
    padded = np.concatenate([values[-half:], values, values[:half]]) if half else values
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1) > limit


def first_failure(failing, start, step):
    """Return the first failing frame walking from ``start`` by ``step`` (+1 or -1) around the turn, or None."""
    walk = (start + step * np.arange(len(failing))) % len(failing)
    hits = np.flatnonzero(failing[walk])
    return None if len(hits) == 0 else int(walk[hits[0]])


def run(out, preset="paper", seed=0, progress=True):
    """Run the experiment; see the module docstring. Returns the metrics dict."""
    import torch

    if preset not in SETTINGS:
        raise ValueError(f"unknown preset {preset!r} for the horse experiment; expected one of {sorted(SETTINGS)}.")
    # Torch's thread count is process-wide; the quick preset pins it and this restores it.
    previous_threads = torch.get_num_threads()
    if SETTINGS[preset].get("num_threads"):
        torch.set_num_threads(SETTINGS[preset]["num_threads"])
    try:
        return _run(out, preset, seed, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(out, preset, seed, progress):
    import torch

    from ..transformation import NetworkTransformation
    from ._autoencoder import build_autoencoder, decode, encode, train_autoencoder
    from ._render import load_horse, render_turn

    settings = SETTINGS[preset]
    timer = StageTimer("horse")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n_angles = settings["n_angles"]
    n_range = int(round(TRAINING_FRACTION * n_angles))
    angles = 2 * np.pi * np.arange(n_angles) / n_angles
    in_range = np.arange(n_angles) < n_range

    # Renders of a full turn from both cameras, cached under the output folder.
    with timer("rendering"):
        mesh = load_horse()
        frames = [
            render_turn(mesh, camera, n_angles, size=settings["image_size"], cache_dir=f"{out}/renders", progress=progress)
            for camera in _cameras()
        ]

    # The autoencoders train on the first n_range - 1 frames: a 90/10 split of them in random order.
    order = rng.permutation(n_range - 1)
    n_train = int((1 - VALIDATION_FRACTION) * len(order))
    train_frames, validation_frames = np.sort(order[:n_train]), np.sort(order[n_train:])
    with timer("training"):
        autoencoders, histories = [], []
        for camera, images in enumerate(frames, start=1):
            model, history = train_autoencoder(
                build_autoencoder(settings["image_size"], CODE_SIZE),
                images[train_frames], images[validation_frames],
                epochs=settings["epochs"], batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
                noise_variance=NOISE_VARIANCE, code_range=CODE_RANGE, range_weight=RANGE_WEIGHT,
                seed=seed + camera, progress=progress, name=f"autoencoder {camera}",
            )
            autoencoders.append(model)
            histories.append(history)
    codes = [encode(model, images) for model, images in zip(autoencoders, frames)]

    # Metrics from sequence windows over the training range, then the transformation on evenly spaced centres.
    with timer("transformation"):
        metrics_1 = metric_from_sequence(codes[0][:n_range], settings["window"], rank=settings["metric_rank"])
        metrics_2 = metric_from_sequence(codes[1][:n_range], settings["window"], rank=settings["metric_rank"])
        centres = np.unique(np.round(np.linspace(0, n_range - 1, settings["n_centres"])).astype(int))
        pairs = np.searchsorted(centres, [n_range // 3, 2 * n_range // 3])
        transformation = NetworkTransformation(n_components=N_COMPONENTS, random_state=seed).fit(
            codes[0][centres], codes[1][centres],
            inverse_covariances_1=metrics_1[centres], inverse_covariances_2=metrics_2[centres],
            correspondences=np.stack([pairs, pairs], axis=1),
        )
    phi = transformation.diffusion_map_1_.embedding_
    psi = transformation.diffusion_map_2_.embedding_
    spearman = [abs(spearmanr(embedding[:, 0], angles[centres]).statistic) for embedding in (phi, psi)]

    # Cross-decoding: camera-1 image -> code 1 -> T -> code 2 -> decoder 2, for every frame of the turn.
    with timer("cross-decoding"):
        predicted_codes = transformation.transform(codes[0])
        decodable = ~np.isnan(predicted_codes).any(axis=1)
        cross_decoded = np.full(frames[1].shape, np.nan)
        cross_decoded[decodable] = decode(autoencoders[1], predicted_codes[decodable])
        reconstructed = [decode(model, code) for model, code in zip(autoencoders, codes)]
    truth = frames[1].astype(float)
    errors = {
        "cross_bce": binary_cross_entropy(cross_decoded, truth),
        "cross_mae": mean_absolute_error(cross_decoded, truth),
        "reconstruction_bce": binary_cross_entropy(reconstructed[1], truth),
        "reconstruction_mae": mean_absolute_error(reconstructed[1], truth),
    }
    summary = {key: _region_means(values, in_range, validation_frames) for key, values in errors.items()}

    # Each camera's mean training image is the baseline that its autoencoder must beat to carry information.
    baseline_ratios = []
    for images, reconstruction in zip(frames, reconstructed):
        mean_image = np.broadcast_to(images[train_frames].mean(axis=0), images.shape)
        baseline_ratios.append(
            float(np.mean(mean_absolute_error(reconstruction, images)[in_range]) / np.mean(mean_absolute_error(mean_image, images)[in_range]))
        )
    ratios = {
        kind: summary[f"cross_{kind}"]["training_range"] / summary[f"reconstruction_{kind}"]["training_range"]
        for kind in ("bce", "mae")
    }

    # Where cross-decoding fails beyond each end of the training range.
    mae_limit = ERROR_RATIO_LIMIT * summary["reconstruction_mae"]["training_range"]
    window = max(3, int(round(SMOOTHING_FRACTION * n_angles)) | 1)
    failing = failing_frames(errors["cross_mae"], mae_limit, window)
    onsets = {
        "after_range_end": first_failure(failing, n_range, +1),
        "before_range_start": first_failure(failing, n_angles - 1, -1),
    }
    onset_degrees = {side: None if frame is None else float(np.degrees(angles[frame])) for side, frame in onsets.items()}

    metrics = {
        "settings": {
            **settings, "n_training_range": n_range, "n_train": len(train_frames), "n_validation": len(validation_frames),
            "noise_variance": NOISE_VARIANCE, "code_range": CODE_RANGE, "range_weight": RANGE_WEIGHT,
            "n_components": N_COMPONENTS, "cameras": [camera.__dict__ for camera in _cameras()],
        },
        "paper": PAPER,
        "training_loss": [history["loss"][-1] for history in histories],
        "best_validation_loss": [min(history["validation_loss"]) for history in histories],
        "mean_image_validation_loss": [history["mean_image_loss"] for history in histories],
        "training_restarts": [history["restarts"] for history in histories],
        "seconds_per_epoch": [history["seconds_per_epoch"] for history in histories],
        "epsilon": [transformation.diffusion_map_1_.epsilon_, transformation.diffusion_map_2_.epsilon_],
        "orthogonal_map": transformation.orthogonal_map_,
        "spearman_first_coordinate_vs_angle": spearman,
        "errors": summary,
        "autoencoder_1_reconstruction_bce_training_range": float(
            binary_cross_entropy(reconstructed[0], frames[0].astype(float))[in_range].mean()
        ),
        "cross_to_reconstruction_ratio": ratios,
        "reconstruction_to_mean_image_mae_ratio": baseline_ratios,
        "undecodable_frames_outside_range": int(np.sum(~decodable & ~in_range)),
        "failure_onset_frame": onsets,
        "failure_onset_degrees": onset_degrees,
        "training_range_degrees": [0.0, float(np.degrees(2 * np.pi * n_range / n_angles))],
        "seconds": timer.seconds,
        "checks": {
            f"both autoencoders beat the mean image (MAE ratio < {BASELINE_RATIO_LIMIT})": max(baseline_ratios)
            < BASELINE_RATIO_LIMIT,
            f"cross-decoding BCE within {ERROR_RATIO_LIMIT}x of autoencoder 2's over the training range": ratios["bce"]
            <= ERROR_RATIO_LIMIT,
            f"cross-decoding MAE within {ERROR_RATIO_LIMIT}x of autoencoder 2's over the training range": ratios["mae"]
            <= ERROR_RATIO_LIMIT,
            f"first coordinate orders the angle (|Spearman| > {SPEARMAN_LIMIT}, both embeddings)": min(spearman)
            > SPEARMAN_LIMIT,
            "cross-decoding fails outside the training range": onsets["after_range_end"] is not None
            or onsets["before_range_start"] is not None,
        },
        "failing_fraction": {
            "training_range": float(failing[in_range].mean()), "outside_range": float(failing[~in_range].mean())
        },
    }

    np.savez_compressed(
        f"{out}/codes.npz", angles=angles, codes_1=codes[0], codes_2=codes[1], predicted_codes_2=predicted_codes,
        centres=centres, phi=phi, psi=psi, **errors,
    )
    draw_figures(
        out, frames, angles, n_range, centres, phi, psi, transformation.orthogonal_map_, cross_decoded, errors,
        mae_limit, onsets, histories,
    )
    lines = [
        f"frames: {n_angles} per turn, training range {n_range} ({metrics['training_range_degrees'][1]:.0f} degrees), "
        f"{len(train_frames)} training / {len(validation_frames)} validation images of {settings['image_size']} px",
        f"training: {settings['epochs']} epochs, {histories[0]['seconds_per_epoch']:.2f} and "
        f"{histories[1]['seconds_per_epoch']:.2f} s per epoch, {histories[0]['restarts']} and "
        f"{histories[1]['restarts']} restarts; best validation loss {metrics['best_validation_loss'][0]:.4f}, "
        f"{metrics['best_validation_loss'][1]:.4f} (mean image {histories[0]['mean_image_loss']:.4f}, "
        f"{histories[1]['mean_image_loss']:.4f})",
        f"|Spearman| of the first coordinate with the angle: {spearman[0]:.4f} (camera 1), {spearman[1]:.4f} (camera 2)",
        "over the training range: cross-decoded BCE {:.4f}, MAE {:.4f}; autoencoder 2 BCE {:.4f}, MAE {:.4f} "
        "(ratios {:.2f}, {:.2f})".format(
            summary["cross_bce"]["training_range"], summary["cross_mae"]["training_range"],
            summary["reconstruction_bce"]["training_range"], summary["reconstruction_mae"]["training_range"],
            ratios["bce"], ratios["mae"],
        ),
        "reconstruction MAE / mean-image MAE over the training range: {:.3f} (camera 1), {:.3f} (camera 2)".format(
            *baseline_ratios
        ),
        "on the validation frames: cross-decoded MAE {:.4f}, autoencoder 2 MAE {:.4f}".format(
            summary["cross_mae"]["validation"], summary["reconstruction_mae"]["validation"]
        ),
        "outside the training range: cross-decoded MAE {:.4f}, autoencoder 2 MAE {:.4f}".format(
            summary["cross_mae"]["outside_range"], summary["reconstruction_mae"]["outside_range"]
        ),
        f"cross-decoding fails from {onset_degrees['after_range_end']} degrees on (after the range) and "
        f"from {onset_degrees['before_range_start']} degrees down (before it)",
    ]
    models = {"network_1": autoencoders[0], "network_2": autoencoders[1]}
    return write_outputs(out, "horse", preset, seed, metrics, lines, models)


def _region_means(values, in_range, validation_frames):
    """Mean of per-frame values over the training range, its validation frames and the rest of the turn."""
    outside = values[~in_range]
    return {
        "training_range": float(np.mean(values[in_range])),
        "validation": float(np.mean(values[validation_frames])),
        # NaN frames (not cross-decodable) are left out of this mean; they are counted separately.
        "outside_range": float(np.nanmean(outside)) if np.any(~np.isnan(outside)) else None,
    }

