"""The convolutional autoencoder of the rotating-horse experiment and its training.

Encoder: four convolutions (filter sizes 9, 7, 5, 3; channels 8, 32, 64, 16; stride 1, "same"
padding), each followed by ReLU and 2 x 2 max pooling, then two dense layers of width 6. The first
dense layer has a ReLU; the second is the code and is linear. Decoder: the mirror image, with
nearest-neighbour upsampling in place of pooling, ReLU after every layer but the last, and a final
sigmoid.

Loss: the pixelwise binary cross-entropy between the decoded image and the clean image, plus
``range_weight * ((l - l*)^2 + (h - h*)^2)``. Here l and h are the minimum and maximum of the
codes over the batch and all code units, and (l*, h*) is the target ``code_range``.
"""

import logging
import time

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("netequiv.experiments")

KERNEL_SIZES = (9, 7, 5, 3)
CHANNELS = (8, 32, 64, 16)
MAX_INITIALISATIONS = 20
# A model whose validation loss is still above this fraction of the mean image's loss half way
# through training is restarted from new weights, at most MAX_RESTARTS times.
PLATEAU_FRACTION = 0.9
MAX_RESTARTS = 2


def build_autoencoder(image_size=64, code_size=6, kernel_sizes=KERNEL_SIZES, channels=CHANNELS):
    """Return the autoencoder for ``image_size`` x ``image_size`` grayscale images.

    The returned module has an ``encoder`` (images (N, 1, H, W) -> codes (N, code_size)), a
    ``decoder`` (codes -> logits (N, 1, H, W)), and its ``forward`` returns the decoded images
    (sigmoid of the logits).

    Raises
    ------
    ValueError
        When ``image_size`` is not divisible by ``2 ** len(kernel_sizes)``, one halving a pooling layer.
    """
    n_pool = len(kernel_sizes)
    if image_size % 2**n_pool:
        raise ValueError(
            f"image_size={image_size} is not divisible by {2**n_pool}, which the {n_pool} pooling layers need; "
            f"use a multiple of {2**n_pool}, for example 32 or 64."
        )
    bottleneck = image_size // 2**n_pool
    flat = channels[-1] * bottleneck**2

    encoder = []
    for kernel, width_in, width_out in zip(kernel_sizes, (1, *channels[:-1]), channels):
        encoder += [nn.Conv2d(width_in, width_out, kernel, padding="same"), nn.ReLU(), nn.MaxPool2d(2)]
    encoder += [nn.Flatten(), nn.Linear(flat, code_size), nn.ReLU(), nn.Linear(code_size, code_size)]

    decoder = [nn.Linear(code_size, code_size), nn.ReLU(), nn.Linear(code_size, flat), nn.ReLU()]
    decoder += [nn.Unflatten(1, (channels[-1], bottleneck, bottleneck))]
    mirrored = list(zip(kernel_sizes[::-1], channels[::-1], (*channels[-2::-1], 1)))
    for index, (kernel, width_in, width_out) in enumerate(mirrored):
        decoder += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width_in, width_out, kernel, padding="same")]
        if index < len(mirrored) - 1:
            decoder.append(nn.ReLU())
    model = Autoencoder(nn.Sequential(*encoder), nn.Sequential(*decoder))
    initialise(model)
    return model


def initialise(model, generator=None):
    """Draw Glorot-uniform weights and zero biases (Keras's defaults) for every layer.

    Torch's default initialisation kept this narrow network at the mean image for longer in trials.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight, generator=generator)
            nn.init.zeros_(module.bias)


def is_dead(model, images):
    """Return whether the decoded images, or the codes, are the same for every image in ``images``.

    With ReLU layers only 6 units wide, an initialisation can switch off every unit of one layer
    for all inputs. No gradient then reaches the layers before it, so training cannot start.
    """
    with torch.no_grad():
        codes = model.encoder(images)
        logits = model.decoder(codes)
    return bool(codes.std(dim=0).max() < 1e-6 or logits.std(dim=0).max() < 1e-6)


class Autoencoder(nn.Module):
    """An encoder and a decoder whose output is logits; ``forward`` applies the sigmoid."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, images):
        return torch.sigmoid(self.decoder(self.encoder(images)))


def autoencoder_loss(logits, targets, codes, code_range, range_weight):
    """Return the mean pixelwise binary cross-entropy plus the code-range penalty (a scalar tensor)."""
    reconstruction = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    low, high = code_range
    penalty = (codes.min() - low) ** 2 + (codes.max() - high) ** 2
    return reconstruction + range_weight * penalty


def add_noise(images, variance, generator):
    """Add |z| with z ~ N(0, variance) to every pixel and clip to [0, 1] (a tensor in, a tensor out)."""
    noise = torch.randn(images.shape, generator=generator) * np.sqrt(variance)
    return torch.clamp(images + noise.abs(), 0.0, 1.0)


def train_autoencoder(
    model,
    images,
    validation_images,
    *,
    epochs,
    batch_size=128,
    learning_rate=1e-4,
    noise_variance=0.1,
    code_range=(-1.0, 1.0),
    range_weight=1e-5,
    seed=0,
    progress=True,
    name="autoencoder",
):
    """Train ``model`` with NAdam to decode noisy images into clean ones.

    Each epoch draws fresh noise (:func:`add_noise`) for every training image; the targets and the
    validation inputs are clean. An initialisation that gives the same output for every training
    image is drawn again before training starts. Some initialisations stay at the mean training
    image (the plateau of a narrow code) for hundreds of steps. When the validation loss half way
    through is still above ``PLATEAU_FRACTION`` times the mean image's loss, training restarts
    from new weights, at most ``MAX_RESTARTS`` times, so it can run up to
    ``epochs * (1 + MAX_RESTARTS / 2)`` epochs.

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`build_autoencoder`.
    images, validation_images : ndarray of shape (n, H, W)
        Clean images with values in [0, 1].
    epochs, batch_size : int
    learning_rate : float
    noise_variance : float
        Variance of the normal variable whose absolute value is added to each pixel.
    code_range : (float, float)
        Target minimum l* and maximum h* of the codes.
    range_weight : float
        Weight of the code-range penalty.
    seed : int
    progress : bool
    name : str
        Label of the progress bar and the log lines.

    Returns
    -------
    model : torch.nn.Module
        The trained model, in evaluation mode, with the weights of the epoch of lowest validation
        loss (``history["best_epoch"]``, counted from 0).
    history : dict
        ``loss`` and ``validation_loss`` per epoch of the last start (training loss averaged over
        the epoch's batches, on noisy inputs; validation loss on clean inputs),
        ``seconds_per_epoch`` over all starts, ``best_epoch``, ``restarts`` and
        ``mean_image_loss`` (the mean training image's validation loss).

    Raises
    ------
    RuntimeError
        When every one of ``MAX_INITIALISATIONS`` initialisations gives the same output for all
        training images (see :func:`is_dead`).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))[:, None]
    x_val = torch.as_tensor(np.asarray(validation_images, dtype=np.float32))[:, None]
    model = model.float().train()
    mean_image_loss = _mean_image_loss(x, x_val)
    settings = dict(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, noise_variance=noise_variance,
        code_range=code_range, range_weight=range_weight, generator=generator, progress=progress, name=name,
    )
    start = time.perf_counter()
    epochs_run = 0
    for restart in range(MAX_RESTARTS + 1):
        _draw_live_initialisation(model, x, generator, name, redraw=restart > 0)
        # Unless this is the last attempt, stop half way when the model has not left the mean image.
        stop_if_plateau = mean_image_loss * PLATEAU_FRACTION if restart < MAX_RESTARTS else None
        history = _train_epochs(model, x, x_val, stop_if_plateau=stop_if_plateau, **settings)
        epochs_run += len(history["loss"])
        if len(history["loss"]) == epochs:
            break
        logger.warning(
            "%s: validation loss %.4f after %d epochs is above %.2f x the mean image's %.4f; restarting from new weights",
            name, min(history["validation_loss"]), len(history["loss"]), PLATEAU_FRACTION, mean_image_loss,
        )
    history["restarts"] = restart
    history["mean_image_loss"] = mean_image_loss
    history["seconds_per_epoch"] = (time.perf_counter() - start) / max(epochs_run, 1)
    history["best_epoch"] = int(np.argmin(history["validation_loss"]))
    logger.info(
        "%s trained: %d epochs (%d restarts), %.2f s per epoch, loss %.4f, best validation loss %.4f "
        "(mean image %.4f)",
        name, epochs, restart, history["seconds_per_epoch"], history["loss"][-1], min(history["validation_loss"]),
        mean_image_loss,
    )
    return model.eval(), history


def _draw_live_initialisation(model, x, generator, name, redraw):
    """Draw new weights until the model's output depends on its input (see :func:`is_dead`)."""
    for _ in range(MAX_INITIALISATIONS):
        if redraw:
            initialise(model, generator)
        if not is_dead(model, x[:256]):
            return
        logger.info("%s: the initial network gives one output for every image; drawing new weights", name)
        redraw = True
    raise RuntimeError(
        f"{name}: {MAX_INITIALISATIONS} initialisations all gave one output for every image; check that the "
        "training images are not all the same."
    )


def _mean_image_loss(x, x_val):
    """Return the binary cross-entropy of the mean training image against the validation images."""
    mean_image = x.mean(dim=0, keepdim=True).clamp(1e-6, 1 - 1e-6).expand_as(x_val)
    return float(torch.nn.functional.binary_cross_entropy(mean_image, x_val))


def _train_epochs(model, x, x_val, *, epochs, batch_size, learning_rate, noise_variance, code_range, range_weight,
                  generator, progress, name, stop_if_plateau):
    """Train from the model's current weights and keep the weights of the best validation epoch.

    With ``stop_if_plateau``, training stops after half the epochs when no validation loss so far
    is below that value. The returned history is then shorter than ``epochs``.
    """
    from tqdm.auto import tqdm

    optimizer = torch.optim.NAdam(model.parameters(), lr=learning_rate)
    history = {"loss": [], "validation_loss": []}
    best_loss, best_state = np.inf, None
    bar = tqdm(range(epochs), desc=f"training {name}", disable=None if progress else True, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for begin in range(0, len(x), batch_size):
            targets = x[order[begin : begin + batch_size]]
            inputs = add_noise(targets, noise_variance, generator)
            optimizer.zero_grad()
            codes = model.encoder(inputs)
            loss = autoencoder_loss(model.decoder(codes), targets, codes, code_range, range_weight)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(targets)
        history["loss"].append(total / len(x))
        history["validation_loss"].append(_validation_loss(model, x_val, code_range, range_weight, batch_size))
        if history["validation_loss"][-1] < best_loss:
            best_loss = history["validation_loss"][-1]
            best_state = {key: value.clone() for key, value in model.state_dict().items()}
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", validation=f"{history['validation_loss'][-1]:.4f}")
        if stop_if_plateau is not None and epoch + 1 == epochs // 2 and best_loss > stop_if_plateau:
            break
    bar.close()
    model.load_state_dict(best_state)
    return history


def _validation_loss(model, x_val, code_range, range_weight, batch_size):
    if len(x_val) == 0:
        return float("nan")
    model.eval()
    with torch.no_grad():
        codes = torch.cat([model.encoder(x_val[i : i + batch_size]) for i in range(0, len(x_val), batch_size)])
        logits = torch.cat([model.decoder(codes[i : i + batch_size]) for i in range(0, len(codes), batch_size)])
        return float(autoencoder_loss(logits, x_val, codes, code_range, range_weight))


def encode(model, images, batch_size=256):
    """Return the codes (n, code_size), float64, of images (n, H, W)."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))[:, None]
    with torch.no_grad():
        return torch.cat([model.encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()


def decode(model, codes, batch_size=256):
    """Return the images (n, H, W), float64 in [0, 1], decoded from codes (n, code_size)."""
    z = torch.as_tensor(np.asarray(codes, dtype=np.float32))
    with torch.no_grad():
        images = torch.cat([torch.sigmoid(model.decoder(z[i : i + batch_size])) for i in range(0, len(z), batch_size)])
    return images[:, 0].double().numpy()
