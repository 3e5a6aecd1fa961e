"""The compare pipeline: inputs -> activations and local metrics -> transformation -> verdict.

:func:`prepare` loads the models, the inputs and the correspondences and checks that they fit
together (shapes, layer names, index ranges) with one forward pass a model, so that every input
error is reported before the heavy work. :func:`run_compare` then computes the activations and
local metrics of both networks, fits :class:`~netequiv.transformation.NetworkTransformation`,
tests it on held-out correspondences, and writes the output folder.
"""

import json
import logging
import math
from contextlib import contextmanager
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..local_metric import estimate_rank, metric_from_clouds, metric_from_jacobians, metric_from_sequence
from .config import ConfigError
from .loading import load_array, load_function, load_network

logger = logging.getLogger("netequiv.compare")

__all__ = ["CompareFailedError", "OutputExistsError", "Prepared", "TRANSFORMATION_FILE", "prepare", "run_compare"]

# Name of the fitted transformation in the output folder (NetworkTransformation.save).
TRANSFORMATION_FILE = "transformation.npz"


class OutputExistsError(FileExistsError):
    """The output folder exists and is not empty, and overwriting it was not requested."""


class CompareFailedError(RuntimeError):
    """A stage of the comparison failed on valid input; the message names the stage and the settings to change."""


@dataclass
class Prepared:
    """Models, inputs and row choices of a compare run, checked against each other.

    Attributes
    ----------
    inputs_a, inputs_b : ndarray of shape (N, ...)
        Network inputs of model A, and of model B (``inputs_b`` is ``inputs_a`` with same inputs
        or a domain map, whose map is applied when model B is evaluated).
    train_a, train_b : ndarray of int
        Rows of the centres of each embedding.
    alignment : ndarray of shape (p, 2)
        Correspondences as row indices into the centres of A and of B.
    test_a, test_b : ndarray of int
        Held-out corresponding rows.
    labels_a, labels_b : list of str
        One label a selected neuron.
    """

    config: object
    model_a: object
    model_b: object
    domain_map: object
    inputs_a: np.ndarray
    inputs_b: np.ndarray
    train_a: np.ndarray
    train_b: np.ndarray
    alignment: np.ndarray
    test_a: np.ndarray
    test_b: np.ndarray
    labels_a: list
    labels_b: list
    breakdown_inputs: np.ndarray | None
    rank: int | None = None


# ----------------------------------------------------------------------------- preparation


def _sample_inputs(config, rng):
    inputs = config.inputs
    if inputs.sampler == "box":
        low, high = np.array(inputs.low), np.array(inputs.high)
        return rng.uniform(low, high, size=(inputs.n_samples, low.size))
    centre = np.array(inputs.center)
    directions = rng.standard_normal((inputs.n_samples, centre.size))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = inputs.radius * rng.uniform(size=(inputs.n_samples, 1)) ** (1.0 / centre.size)
    return centre + directions * lengths


def _as_inputs(array, key):
    array = np.asarray(array)
    if array.dtype.kind not in "fiu" or array.ndim == 0:
        raise ConfigError([f"{key}: array of dtype {array.dtype} and shape {array.shape} is invalid; expected numbers of shape (n, ...), one input a row."])
    if array.ndim == 1:
        array = array[:, None]
    if not np.all(np.isfinite(array)):
        raise ConfigError([f"{key}: the inputs contain NaN or infinite values; remove those rows."])
    return array.astype(np.float64)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_model_inputs(model, inputs, selection, section, inputs_key, domain_map=None):
    """Report inputs the model rejects, then layers and neurons it lacks; return the neuron labels.

    A plain forward pass of two inputs comes first, and an error there is reported against the
    inputs. An error while resolving the selection (a missing layer, an index out of range, a
    layer that cannot be observed) is then reported against the selection.
    """
    import torch

    from ..torch import NeuronSelection, resolve_selection
    from ..torch._hooks import as_module, evaluation_mode, to_tensor
    from ..torch.activations import map_inputs

    key = f"[{section}] selection"
    try:
        parsed = NeuronSelection.parse(selection)
    except (ValueError, TypeError) as error:
        raise ConfigError([f"{key}: {selection!r} is invalid ({error})"]) from error

    module = as_module(model)
    try:
        with evaluation_mode(module), torch.no_grad():
            module(map_inputs(to_tensor(inputs[:2], module), domain_map=domain_map))
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        through = " after the domain map" if domain_map is not None else ""
        raise ConfigError([
            f"{inputs_key}: [{section}] rejects inputs of per-sample shape {tuple(inputs.shape[1:])}{through} "
            f"({type(error).__name__}: {_first_line(error)}); give inputs of the shape the model expects."
        ]) from error

    try:
        resolved = resolve_selection(module, inputs[:2], parsed, domain_map=domain_map)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        # LayerNotFoundError and HookError are ValueError and RuntimeError subclasses.
        raise ConfigError([f"{key}: {selection!r}: {error}"]) from error
    return resolved.labels


def _load_pairs(config, n_a, n_b):
    correspondence = config.correspondence
    key = "[correspondence] index_file"
    pairs = load_array(correspondence.index_file, key, name="index pairs")
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
        raise ConfigError([f"{key}: array of shape {pairs.shape} and dtype {pairs.dtype} is invalid; expected integers of shape (p, 2), rows (row of A's inputs, row of B's inputs)."])
    bad = (pairs[:, 0] < 0) | (pairs[:, 0] >= n_a) | (pairs[:, 1] < 0) | (pairs[:, 1] >= n_b)
    if np.any(bad):
        raise ConfigError([f"{key}: {int(bad.sum())} pair(s), the first {pairs[bad][0].tolist()}, are out of range for {n_a} inputs of A and {n_b} of B."])
    needed = correspondence.pairs + correspondence.held_out
    if len(pairs) < needed:
        raise ConfigError([f"{key}: {len(pairs)} pairs are fewer than [correspondence] pairs + held_out = {needed}; lower them or add pairs."])
    return pairs.astype(np.int64)


def _choose_rows(config, n_a, n_b, pairs, rng):
    """Pick the centres, the aligned pairs (first among the centres) and the held-out pairs."""
    centres = config.neighbourhoods.centres
    n_align, n_held_out = config.correspondence.pairs, config.correspondence.held_out
    if pairs is None:
        if centres + n_held_out > n_a:
            raise ConfigError([f"[neighbourhoods] centres: {centres} centres + {n_held_out} held-out inputs exceed the {n_a} inputs; lower centres or held_out, or give more inputs."])
        order = rng.permutation(n_a)
        test = np.sort(order[:n_held_out])
        train = order[n_held_out : n_held_out + centres]
        if config.neighbourhoods.kind == "sequence":
            train = np.sort(train)
        aligned = rng.choice(centres, size=n_align, replace=False)
        return train, train, np.stack([aligned, aligned], axis=1), test, test

    order = rng.permutation(len(pairs))
    held_out_pairs, aligned = pairs[order[:n_held_out]], pairs[order[n_held_out : n_held_out + n_align]]
    trains = []
    for column, n in ((0, n_a), (1, n_b)):
        free = np.setdiff1d(np.arange(n), np.concatenate([held_out_pairs[:, column], aligned[:, column]]))
        extra = centres - n_align
        if extra > free.size:
            side = "AB"[column]
            raise ConfigError([f"[neighbourhoods] centres: {centres} centres need {extra} inputs of {side} besides the pairs, but only {free.size} are free; lower centres."])
        trains.append(np.concatenate([aligned[:, column], rng.choice(free, size=extra, replace=False)]))
    alignment = np.repeat(np.arange(n_align)[:, None], 2, axis=1)
    return trains[0], trains[1], alignment, held_out_pairs[:, 0], held_out_pairs[:, 1]


def prepare(config):
    """Load and cross-check everything a compare run needs; no heavy computation.

    Parameters
    ----------
    config : CompareConfig

    Returns
    -------
    Prepared

    Raises
    ------
    ConfigError
        A model, function or array cannot be loaded, or they do not fit together.
    """
    import torch

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    folder = config.folder

    model_a, _ = load_network(config.model_a, folder)
    model_b, _ = load_network(config.model_b, folder)
    domain_map = None
    if config.correspondence.kind == "domain-map":
        domain_map = load_function(config.correspondence.domain_map, folder, "[correspondence] domain_map")

    inputs = config.inputs
    if inputs.file is not None:
        inputs_a = _as_inputs(load_array(inputs.file, "[inputs] file", inputs.key, name="inputs"), "[inputs] file")
        inputs_key = "[inputs] file"
    else:
        inputs_a = _sample_inputs(config, rng)
        inputs_key = "[inputs] low / high" if inputs.sampler == "box" else "[inputs] center"
    inputs_b, inputs_key_b = inputs_a, inputs_key
    if inputs.file_b is not None:
        inputs_b = _as_inputs(load_array(inputs.file_b, "[inputs] file_b", inputs.key_b, name="inputs"), "[inputs] file_b")
        inputs_key_b = "[inputs] file_b"

    if domain_map is not None:
        _check_domain_map(domain_map, inputs_a)
    labels_a = _check_model_inputs(model_a, inputs_a, config.model_a.selection, "model_a", inputs_key)
    labels_b = _check_model_inputs(model_b, inputs_b, config.model_b.selection, "model_b", inputs_key_b, domain_map)

    dimension = inputs.dimension
    for section, labels in (("model_a", labels_a), ("model_b", labels_b)):
        if dimension is not None and dimension > len(labels):
            raise ConfigError([
                f"[inputs] dimension: d = {dimension} exceeds the {len(labels)} neuron(s) that "
                f"[{section}] selection selects, which can then not embed the inputs; select at "
                f"least d (2d + 1 = {2 * dimension + 1} suffice for generic neurons) or lower d."
            ])

    breakdown_inputs = None
    if inputs.breakdown_path is not None:
        key = "[inputs] breakdown_path"
        breakdown_inputs = _as_inputs(load_array(inputs.breakdown_path, key, inputs.breakdown_key, name="inputs"), key)
        if breakdown_inputs.shape[1:] != inputs_a.shape[1:]:
            raise ConfigError([f"{key}: per-sample shape {breakdown_inputs.shape[1:]} differs from the inputs' {inputs_a.shape[1:]}; give points of model A's input space."])

    pairs = _load_pairs(config, len(inputs_a), len(inputs_b)) if config.correspondence.kind == "index-file" else None
    train_a, train_b, alignment, test_a, test_b = _choose_rows(config, len(inputs_a), len(inputs_b), pairs, rng)
    if config.neighbourhoods.kind == "sequence" and config.neighbourhoods.window > len(inputs_a):
        raise ConfigError([f"[neighbourhoods] window: {config.neighbourhoods.window} exceeds the {len(inputs_a)} inputs; lower it."])
    logger.info(
        "model A observed through %d neurons, model B through %d; %d centres, %d aligned pairs, %d held out",
        len(labels_a), len(labels_b), len(train_a), len(alignment), len(test_a),
    )
    return Prepared(
        config=config, model_a=model_a, model_b=model_b, domain_map=domain_map,
        inputs_a=inputs_a, inputs_b=inputs_b, train_a=train_a, train_b=train_b, alignment=alignment,
        test_a=test_a, test_b=test_b, labels_a=labels_a, labels_b=labels_b, breakdown_inputs=breakdown_inputs,
    )


def _check_domain_map(domain_map, inputs):
    import torch

    key = "[correspondence] domain_map"
    try:
        mapped = domain_map(torch.as_tensor(inputs[:2]))
    except Exception as error:
        raise ConfigError([f"{key}: calling it on a batch of shape {inputs[:2].shape} failed ({type(error).__name__}: {error}); it must map a batch tensor of A's inputs to B's inputs with torch operations."]) from error
    if not isinstance(mapped, torch.Tensor) or mapped.ndim == 0 or mapped.shape[0] != 2:
        raise ConfigError([f"{key}: it returned {type(mapped).__name__} {getattr(mapped, 'shape', '')} for a batch of 2; it must return a batch tensor with the batch dimension first."])


# ----------------------------------------------------------------------------- computation


@dataclass
class Observations:
    """Activations and local metrics of one network at its centres and held-out inputs."""

    Y: np.ndarray
    C: np.ndarray
    Y_test: np.ndarray
    C_test: np.ndarray
    Y_path: np.ndarray | None = None
    C_path: np.ndarray | None = None
    J_path: np.ndarray | None = None


def _spectra(kind, raw):
    """Compute the eigenvalues of the local covariances (J J^T for Jacobians) for the dimension estimate."""
    if kind == "jacobian":
        return np.linalg.svd(raw, compute_uv=False) ** 2
    centred = raw - raw.mean(axis=1, keepdims=True)
    return np.linalg.svd(centred, compute_uv=False) ** 2


def _raw_neighbourhoods(prepared, side, inputs, progress, rng):
    """Jacobians (n, m, D) or activation clouds (n, q, m) around ``inputs`` for model A or B."""
    from ..torch import jacobians
    from ..torch.sampling import cloud_activations, sample_ball, sample_burst

    settings = prepared.config.neighbourhoods
    model = prepared.model_a if side == "a" else prepared.model_b
    selection = (prepared.config.model_a if side == "a" else prepared.config.model_b).selection
    domain_map = prepared.domain_map if side == "b" else None
    if settings.kind == "jacobian":
        return jacobians(model, inputs, selection, domain_map=domain_map, progress=progress)
    if settings.kind == "ball":
        samples = sample_ball(inputs, settings.radius, settings.points, rng=rng, domain_map=domain_map)
    else:
        samples = sample_burst(inputs, settings.scale, settings.points, rng=rng, domain_map=domain_map)
    return cloud_activations(model, samples, selection, progress=progress)


def _metrics(kind, raw, rank):
    if kind == "jacobian":
        return metric_from_jacobians(raw, rank=rank)
    return metric_from_clouds(raw, rank=rank)


def _observe(prepared, side, rank, progress, rng):
    """Compute the activations and metrics of model A or B; return them and the dimension d used."""
    from ..torch import activations

    config = prepared.config
    model = prepared.model_a if side == "a" else prepared.model_b
    selection = (config.model_a if side == "a" else config.model_b).selection
    inputs = prepared.inputs_a if side == "a" else prepared.inputs_b
    train, test = (prepared.train_a, prepared.test_a) if side == "a" else (prepared.train_b, prepared.test_b)
    domain_map = prepared.domain_map if side == "b" else None

    def observe(x):
        return activations(model, x, selection, domain_map=domain_map, progress=progress)

    kind = config.neighbourhoods.kind
    if kind == "sequence":
        from ..torch.sampling import sequence_windows

        Y_all = observe(inputs)
        if rank is None:
            rank = estimate_rank(_spectra("clouds", sequence_windows(Y_all, config.neighbourhoods.window)))
        C_all = metric_from_sequence(Y_all, config.neighbourhoods.window, rank=rank)
        result = Observations(Y=Y_all[train], C=C_all[train], Y_test=Y_all[test], C_test=C_all[test])
    else:
        n_neurons = len(prepared.labels_a if side == "a" else prepared.labels_b)
        C, rank, _ = _chunked_metrics(prepared, side, inputs[train], rank, n_neurons, progress, rng)
        C_test, _, _ = _chunked_metrics(prepared, side, inputs[test], rank, n_neurons, progress, rng)
        result = Observations(Y=observe(inputs[train]), C=C, Y_test=observe(inputs[test]), C_test=C_test)

    _check_observed_neurons(result.Y, prepared.labels_a if side == "a" else prepared.labels_b, rank, side)

    if prepared.breakdown_inputs is not None:
        path = prepared.breakdown_inputs
        result.Y_path = observe(path)
        if kind == "sequence":
            result.C_path = metric_from_sequence(result.Y_path, min(config.neighbourhoods.window, len(path)), rank=rank)
        else:
            n_neurons = result.Y_path.shape[1]
            keep = kind == "jacobian"
            result.C_path, _, result.J_path = _chunked_metrics(prepared, side, path, rank, n_neurons, progress, rng, keep_jacobians=keep)
    return result, rank


def _check_observed_neurons(Y, labels, rank, side):
    """Reject constant neurons and warn below Whitney's 2d + 1 neurons, before any fit."""
    key = f"[model_{side}] selection"
    scale = np.max(np.abs(Y)) if Y.size else 0.0
    constant = np.flatnonzero(np.ptp(Y, axis=0) <= 1e-12 * max(scale, 1.0))
    if constant.size:
        names = ", ".join(labels[j] for j in constant[:5])
        raise ConfigError([
            f"{key}: {constant.size} selected neuron(s) are constant over the inputs ({names}); a "
            "constant neuron carries no information about the input. Remove it from the selection."
        ])
    if rank is not None and len(labels) < 2 * rank + 1:
        logger.warning(
            "%s: %d neuron(s) observe a %d-dimensional input manifold; d = %d is the least that can "
            "embed it and 2d + 1 = %d the number that guarantees an embedding (Whitney). Select at "
            "least %d neurons unless these are known to embed it.",
            key, len(labels), rank, rank, 2 * rank + 1, 2 * rank + 1,
        )


# Float64 values of raw neighbourhoods (Jacobians or clouds) held at a time: 2**24 is 128 MiB.
CHUNK_VALUES = 2**24


def _chunked_metrics(prepared, side, inputs, rank, n_neurons, progress, rng, keep_jacobians=False):
    """Compute local metrics chunk by chunk, so that Jacobians of large inputs fit in memory.

    A Jacobian has m x D entries (D input values, which for images are many), but the metric
    only m x m. When ``rank`` is None it is estimated from the first chunk; the inputs come in
    random order, so that chunk is a random sample.

    Returns
    -------
    inverse_covariances : ndarray of shape (n, m, m)
    rank : int
    jacobians : ndarray of shape (n, m, D) or None
        Only with ``keep_jacobians``.
    """
    settings = prepared.config.neighbourhoods
    per_point = n_neurons * (math.prod(inputs.shape[1:]) if settings.kind == "jacobian" else settings.points)
    size = int(np.clip(CHUNK_VALUES // max(per_point, 1), 16, 8192))
    metrics, kept = [], []
    for start in range(0, len(inputs), size):
        raw = _raw_neighbourhoods(prepared, side, inputs[start : start + size], progress, rng)
        if rank is None:
            rank = estimate_rank(_spectra(settings.kind, raw))
        metrics.append(_metrics(settings.kind, raw, rank))
        if keep_jacobians:
            kept.append(raw)
    return np.concatenate(metrics), rank, (np.concatenate(kept) if keep_jacobians else None)


class _Timer:
    """Log the start and the wall time of each stage, and keep the times for metrics.json."""

    def __init__(self):
        self.seconds = {}

    @contextmanager
    def stage(self, name):
        start = time.perf_counter()
        logger.info("%s ...", name)
        yield
        elapsed = time.perf_counter() - start
        self.seconds[name] = round(elapsed, 3)
        logger.info("%s done in %.1f s", name, elapsed)


# Files a compare run writes; --force replaces these and leaves anything else in the folder.
OUTPUT_FILES = ("metrics.json", "report.html", TRANSFORMATION_FILE)
FIGURE_NAMES = ("spectra", "embeddings", "held_out", "breakdown")


def _check_output(out, force):
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {out} is a file, not a folder; choose another --out.")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"output folder {out} exists and is not empty; pass --force to overwrite it or choose another --out.")


def _prepare_output(out, force):
    """Create the output folder, or with ``force`` remove the files an earlier run wrote there."""
    out = Path(out)
    _check_output(out, force)
    out.mkdir(parents=True, exist_ok=True)
    # A stale figure of an earlier run (a breakdown scan without a path now) must not remain.
    stale = [out / name for name in OUTPUT_FILES] + [out / "figures" / f"{name}.png" for name in FIGURE_NAMES]
    for path in stale:
        if path.is_file():
            path.unlink()
    return out


def run_compare(config, out, *, force=False, progress=None):
    """Compare the two networks of ``config`` and write the output folder.

    Parameters
    ----------
    config : CompareConfig
    out : path-like
        Output folder, created when missing. A non-empty folder is written to only with
        ``force=True``, which replaces the files of an earlier run and keeps any other file.
    force : bool, default=False
    progress : bool, default=None
        Show progress bars; None shows them on a terminal for long runs.

    Returns
    -------
    metrics : dict
        The content of ``metrics.json``; ``metrics["verdict"]["equivalent"]`` is the verdict.

    Raises
    ------
    ConfigError
        The inputs do not fit the models (found before the heavy work).
    OutputExistsError
        ``out`` exists, is not empty, and ``force`` is False.
    CompareFailedError
        Fitting or testing the transformation failed; the output folder is not written.
    """
    from ..transformation import NetworkTransformation
    from . import results

    out_path = Path(out)
    _check_output(out_path, force)
    timer = _Timer()
    with timer.stage("loading models and inputs"):
        prepared = prepare(config)
    rng = np.random.default_rng(config.seed + 1)

    with timer.stage("activations and local metrics"):
        observed_a, rank = _observe(prepared, "a", config.inputs.dimension, progress, rng)
        observed_b, _ = _observe(prepared, "b", rank, progress, rng)
    prepared.rank = rank
    if config.inputs.dimension is None:
        logger.info("estimated intrinsic dimension d = %d", rank)
        if rank >= min(observed_a.Y.shape[1], observed_b.Y.shape[1]):
            # Neighbourhoods drawn in the full input space (balls, bursts, Jacobians of all
            # input coordinates) span every direction the neurons respond to, which for inputs
            # such as images are far more than the directions along the data manifold.
            logger.warning(
                "the estimated dimension d = %d equals the number of selected neurons, so the "
                "neighbourhoods probably span directions off the input manifold; set [inputs] "
                "dimension, or use [neighbourhoods] kind = \"sequence\" for ordered data",
                rank,
            )

    settings = {"random_state": config.seed, "n_components": rank, **config.diffusion_map}
    with timer.stage("diffusion maps and alignment"):
        try:
            transformation = NetworkTransformation(**settings).fit(
                observed_a.Y, observed_b.Y,
                inverse_covariances_1=observed_a.C, inverse_covariances_2=observed_b.C,
                correspondences=prepared.alignment,
            )
        except ValueError as error:
            # The estimator's messages name the quantity at fault (a disconnected kNN graph,
            # too few correspondences for a degenerate eigenspace, a degenerate metric).
            raise CompareFailedError(
                f"fitting the transformation failed: {error} The settings are in [diffusion_map], "
                "[neighbourhoods] and [correspondence] pairs."
            ) from error
    with timer.stage("held-out evaluation and equivalence test"):
        try:
            evaluation = results.evaluate(transformation, observed_a, observed_b, prepared, config)
        except ValueError as error:
            raise CompareFailedError(
                f"testing the transformation failed: {error} The settings are in [test] and "
                "[correspondence] held_out."
            ) from error

    out_path = _prepare_output(out_path, force)
    with timer.stage("writing outputs"):
        metrics = results.collect(config, prepared, transformation, observed_a, observed_b, evaluation, rank, timer.seconds)
        transformation.save(out_path / TRANSFORMATION_FILE)
        (out_path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        from ..report import write_report

        write_report(out_path, metrics, transformation, observed_a, observed_b, prepared, evaluation)
    logger.info("%s Wrote %s.", metrics["verdict"]["sentence"], out_path)
    return metrics
