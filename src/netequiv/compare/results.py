"""Held-out evaluation of a fitted transformation, and the content of metrics.json."""

import dataclasses
import platform
from dataclasses import dataclass

import numpy as np

__all__ = ["Evaluation", "collect", "evaluate", "jsonable", "relative_rmse_per_column"]


@dataclass
class Evaluation:
    """Held-out results and the breakdown scan, as the report shows them.

    Attributes
    ----------
    verdict : dict
        ``equivalent`` (bool), ``sentence``, ``p_value``, ``statistics`` and ``thresholds``.
    phi_test, psi_test : ndarray of shape (h, l)
        Embeddings of the held-out inputs by model A's and model B's diffusion map.
    predicted_b, predicted_a : ndarray
        ``transform`` of A's held-out activations, and ``inverse_transform`` of B's.
    breakdown : object or None
        The breakdown scan along ``[inputs] breakdown_path``.
    """

    verdict: dict
    phi_test: np.ndarray
    psi_test: np.ndarray
    predicted_b: np.ndarray
    predicted_a: np.ndarray
    summary: dict
    breakdown: object = None


def relative_rmse_per_column(predicted, true):
    """RMSE of each column divided by that column's standard deviation (0/0 counts as 0)."""
    error = np.sqrt(np.mean((predicted - true) ** 2, axis=0))
    spread = np.std(true, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, error / spread, np.where(error > 0, np.inf, 0.0))


def relative_rmse(predicted, true):
    """RMSE over all entries divided by the RMS deviation of ``true`` from its column means."""
    spread = np.sqrt(np.mean((true - true.mean(axis=0)) ** 2))
    return float(np.sqrt(np.mean((predicted - true) ** 2)) / spread) if spread > 0 else float("inf")


def jsonable(value):
    """Convert numpy values, dataclasses and tuples into what :func:`json.dumps` writes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        # JSON has no NaN or infinity; null stands for both.
        return value if np.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _verdict(transformation, observed_a, observed_b, config):
    """Run the transformation's equivalence test on the held-out pairs; return a plain dict."""
    result = transformation.equivalence_test(
        observed_a.Y_test, observed_b.Y_test,
        inverse_covariances_1=observed_a.C_test, inverse_covariances_2=observed_b.C_test,
        alpha=config.alpha, n_permutations=config.n_permutations, random_state=config.seed,
    )
    verdict = jsonable(result)
    if not isinstance(verdict, dict):
        verdict = {"result": verdict}
    equivalent = bool(getattr(result, "equivalent", verdict.get("equivalent")))
    verdict["equivalent"] = equivalent
    p_value = verdict.get("p_value")
    detail = f" (p = {p_value:.3g}, alpha = {config.alpha})" if isinstance(p_value, float) else ""
    verdict["sentence"] = (
        f"The two networks are equivalent on these inputs{detail}: model B's selected neurons are an invertible function of model A's."
        if equivalent
        else f"The two networks are not equivalent on these inputs{detail}: no invertible map between their selected neurons passed the test."
    )
    return verdict


def evaluate(transformation, observed_a, observed_b, prepared, config):
    """Evaluate the transformation on the held-out pairs and scan the breakdown path.

    Returns
    -------
    Evaluation
    """
    phi_test = transformation.dmap_1_.transform(observed_a.Y_test, inverse_covariances=observed_a.C_test)
    psi_test = transformation.dmap_2_.transform(observed_b.Y_test, inverse_covariances=observed_b.C_test)
    predicted_b = transformation.transform(observed_a.Y_test)
    predicted_a = transformation.inverse_transform(observed_b.Y_test)
    aligned = phi_test @ transformation.orthogonal_map_.T
    summary = {
        "alignment_residual_held_out": float(np.linalg.norm(aligned - psi_test) / np.linalg.norm(psi_test)),
        "relative_rmse_a_to_b": relative_rmse(predicted_b, observed_b.Y_test),
        "relative_rmse_b_to_a": relative_rmse(predicted_a, observed_a.Y_test),
        "per_neuron_b": dict(zip(prepared.labels_b, relative_rmse_per_column(predicted_b, observed_b.Y_test))),
        "per_neuron_a": dict(zip(prepared.labels_a, relative_rmse_per_column(predicted_a, observed_a.Y_test))),
        "evaluate": jsonable(transformation.evaluate(observed_a.Y_test, observed_b.Y_test)),
    }
    breakdown = None
    if observed_a.Y_path is not None:
        breakdown = transformation.breakdown(
            observed_a.Y_path, inverse_covariances=observed_a.C_path,
            inverse_covariances_2=observed_b.C_path, Y2_path=observed_b.Y_path,
        )
    verdict = _verdict(transformation, observed_a, observed_b, config)
    return Evaluation(verdict, phi_test, psi_test, predicted_b, predicted_a, summary, breakdown)


def _spectrum(dmap):
    return {
        "eigenvalues": dmap.eigenvalues_,
        "laplacian_eigenvalues": dmap.laplacian_eigenvalues_,
        "epsilon": dmap.epsilon_,
        "n_neighbors": dmap.n_neighbors_,
    }


def collect(config, prepared, transformation, observed_a, observed_b, evaluation, rank, seconds):
    """Assemble the content of metrics.json."""
    from .. import __version__

    models = {}
    for name, section, labels in (("a", config.model_a, prepared.labels_a), ("b", config.model_b, prepared.labels_b)):
        models[name] = {"path": str(section.path), "selection": section.selection, "neurons": labels}
    breakdown = None
    if evaluation.breakdown is not None:
        scan = evaluation.breakdown
        breakdown = {
            "first_break": getattr(scan, "first_break", None),
            "threshold": getattr(scan, "threshold", None),
            "score": getattr(scan, "score", None),
            "path_length": len(observed_a.Y_path),
        }
    metrics = {
        "netequiv_version": __version__,
        "config": str(config.path),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "models": models,
        "settings": {
            "seed": config.seed,
            "dimension": rank,
            "dimension_estimated": config.inputs.dimension is None,
            "neighbourhoods": dataclasses.asdict(config.neighbourhoods),
            "correspondence": {"kind": config.correspondence.kind, "pairs": len(prepared.alignment), "held_out": len(prepared.test_a)},
            "diffusion_map": transformation.get_params() if hasattr(transformation, "get_params") else config.diffusion_map,
            "alpha": config.alpha,
            "n_permutations": config.n_permutations,
        },
        "verdict": evaluation.verdict,
        "spectra": {"a": _spectrum(transformation.dmap_1_), "b": _spectrum(transformation.dmap_2_)},
        "alignment": {
            "orthogonal_map": transformation.orthogonal_map_,
            "residual_held_out": evaluation.summary["alignment_residual_held_out"],
        },
        "held_out": {
            "relative_rmse_a_to_b": evaluation.summary["relative_rmse_a_to_b"],
            "relative_rmse_b_to_a": evaluation.summary["relative_rmse_b_to_a"],
            "relative_rmse_per_neuron_b": evaluation.summary["per_neuron_b"],
            "relative_rmse_per_neuron_a": evaluation.summary["per_neuron_a"],
        },
        "evaluate": evaluation.summary["evaluate"],
        "breakdown": breakdown,
        "seconds": seconds,
    }
    return jsonable(metrics)
