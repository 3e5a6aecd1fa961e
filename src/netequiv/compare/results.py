"""Held-out evaluation of a fitted transformation, and the content of metrics.json."""

import dataclasses
import platform
from dataclasses import dataclass

import numpy as np

__all__ = ["Evaluation", "collect", "evaluate", "jsonable"]


@dataclass
class Evaluation:
    """Held-out results and the breakdown scan, as the report shows them.

    Attributes
    ----------
    verdict : dict
        ``equivalent`` (bool), ``sentence``, and each criterion's statistic, threshold and
        p-value.
    phi_test, psi_test : ndarray of shape (h, l)
        Embeddings of the held-out inputs by model A's and model B's diffusion map.
    predicted_b, predicted_a : ndarray
        ``transform`` of A's held-out activations, and ``inverse_transform`` of B's.
    breakdown : BreakdownResult or None
        The breakdown scan along ``[inputs] breakdown_path``.
    """

    verdict: dict
    phi_test: np.ndarray
    psi_test: np.ndarray
    predicted_b: np.ndarray
    predicted_a: np.ndarray
    summary: dict
    breakdown: object = None


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


def _verdict(result, alpha):
    """Turn an EquivalenceResult into the verdict section of metrics.json, with its sentence."""
    criteria = {}
    for name, criterion in result.criteria.items():
        null = np.asarray(criterion.null_statistics, dtype=float)
        null = null[np.isfinite(null)]
        criteria[name] = {
            "statistic": criterion.statistic,
            "threshold": criterion.threshold,
            "p_value": criterion.p_value,
            "passed": criterion.passed,
            "null_hypothesis": criterion.null_hypothesis,
            "rule": criterion.rule,
            # The null draws are summarised; there are up to n_permutations of them.
            "null_quantiles": dict(zip(("5%", "50%", "95%"), np.nanquantile(null, [0.05, 0.5, 0.95]))) if null.size else None,
        }
    evidence = ", ".join(f"{name} p = {item['p_value']:.3g}" for name, item in criteria.items())
    if result.equivalent:
        sentence = (
            "The two networks are equivalent on these inputs: model B's selected neurons are an "
            f"invertible function of model A's, and all three tests pass at alpha = {alpha} ({evidence})."
        )
    else:
        failed = [name for name, item in criteria.items() if not item["passed"]]
        listed = failed[0] if len(failed) == 1 else ", ".join(failed[:-1]) + " and " + failed[-1]
        # Each failed test with its statistic and tolerance, since a p-value alone can pass.
        reasons = "; ".join(
            f"{name} discrepancy {criteria[name]['statistic']:.3g} against a tolerance of "
            f"{criteria[name]['threshold']:.3g}, p = {criteria[name]['p_value']:.3g}"
            for name in failed
        )
        sentence = (
            "The two networks are not equivalent on these inputs: the "
            f"{listed} test{'s' if len(failed) > 1 else ''} failed at alpha = {alpha} ({reasons})."
        )
    return {
        "equivalent": bool(result.equivalent),
        "verdict": result.verdict,
        "sentence": sentence,
        "alpha": alpha,
        "criteria": criteria,
        "laplacian_eigenvalues_a": result.laplacian_eigenvalues_1,
        "laplacian_eigenvalues_b": result.laplacian_eigenvalues_2,
        "spectrum_standard_errors": result.spectrum_standard_errors,
    }


def evaluate(transformation, observed_a, observed_b, prepared, config):
    """Evaluate the transformation on the held-out pairs, test equivalence, scan the breakdown path.

    Returns
    -------
    Evaluation
    """
    C_a, C_b = observed_a.C_test, observed_b.C_test
    phi_test = transformation.diffusion_map_1_.transform(observed_a.Y_test, inverse_covariances=C_a)
    psi_test = transformation.diffusion_map_2_.transform(observed_b.Y_test, inverse_covariances=C_b)
    predicted_b = transformation.transform(observed_a.Y_test, inverse_covariances=C_a)
    predicted_a = transformation.inverse_transform(observed_b.Y_test, inverse_covariances=C_b)
    scores = transformation.evaluate(observed_a.Y_test, observed_b.Y_test, C_a, C_b)
    summary = {
        "alignment_residual_held_out": scores.alignment_residual,
        "relative_rmse_a_to_b": scores.relative_rmse,
        "relative_rmse_b_to_a": scores.inverse_relative_rmse,
        "per_neuron_b": dict(zip(prepared.labels_b, scores.relative_rmse_per_neuron)),
    }
    test = config.test
    result = transformation.equivalence_test(
        observed_a.Y_test, observed_b.Y_test, C_a, C_b,
        alpha=test["alpha"], spectrum_tol=test["spectrum_tol"], residual_tol=test["residual_tol"],
        error_tol=test["error_tol"], n_permutations=test["n_permutations"], n_subsamples=test["n_subsamples"],
        random_state=config.seed,
    )
    breakdown = None
    if observed_a.Y_path is not None:
        breakdown = transformation.breakdown(
            observed_a.Y_path, inverse_covariances_1=observed_a.C_path, jacobians_1=observed_a.J_path,
            Y2_path=observed_b.Y_path, inverse_covariances_2=observed_b.C_path, jacobians_2=observed_b.J_path,
            rank=prepared.rank,
        )
    return Evaluation(_verdict(result, test["alpha"]), phi_test, psi_test, predicted_b, predicted_a, summary, breakdown)


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
            "first_index": scan.first_index,
            "fold_index": scan.fold_index,
            "round_trip_index": scan.round_trip_index,
            # A point is broken where its score exceeds 1.
            "threshold": 1.0,
            "scores": scan.scores,
            "round_trip_errors": scan.round_trip_errors,
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
            "transformation": transformation.get_params(),
            "test": config.test,
        },
        "verdict": evaluation.verdict,
        "spectra": {"a": _spectrum(transformation.diffusion_map_1_), "b": _spectrum(transformation.diffusion_map_2_)},
        "alignment": {
            "orthogonal_map": transformation.orthogonal_map_,
            "residual_held_out": evaluation.summary["alignment_residual_held_out"],
        },
        "held_out": {
            "relative_rmse_a_to_b": evaluation.summary["relative_rmse_a_to_b"],
            "relative_rmse_b_to_a": evaluation.summary["relative_rmse_b_to_a"],
            "relative_rmse_per_neuron_b": evaluation.summary["per_neuron_b"],
        },
        "breakdown": breakdown,
        "seconds": seconds,
    }
    return jsonable(metrics)
