"""The experiments of Bertalan, Dietrich and Kevrekidis, "Transformations between deep neural
networks" (arXiv:2007.05646, 2021), each a function that trains the networks, builds the
transformation, writes figures and returns its metrics.

Each experiment takes ``preset="paper"`` (the paper's settings) or ``preset="quick"`` (about a
minute on 2 cores, run by the test suite). The horse experiment also has ``preset="fast"``: the
paper's images and data with a shorter training schedule.
"""

import importlib

from ._common import mlp

__all__ = ["EXPERIMENTS", "PRESETS", "experiment_presets", "mlp", "run_experiment"]

PRESETS = ("paper", "quick", "fast")

# Name on the command line -> module that defines run(out, preset, seed, progress).
EXPERIMENTS = {
    "parabola": "netequiv.experiments.parabola",
    "different-inputs": "netequiv.experiments.different_inputs",
    "vector-fields": "netequiv.experiments.vector_fields",
    "horse": "netequiv.experiments.horse",
}


def experiment_presets(name):
    """Return the presets the experiment ``name`` defines."""
    return tuple(importlib.import_module(EXPERIMENTS[name]).SETTINGS)


def run_experiment(name, out, preset="paper", seed=0, progress=True):
    """Run one experiment, write its outputs to ``out`` and return its metrics.

    Parameters
    ----------
    name : str
        A key of :data:`EXPERIMENTS`.
    out : path-like
        Output folder; created when missing.
    preset : {"paper", "quick"}
    seed : int
    progress : bool
        Show progress bars.

    Returns
    -------
    metrics : dict
        What metrics.json contains; ``metrics["checks"]`` maps each of the experiment's
        acceptance checks to whether it was met.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}.")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}.")
    module = importlib.import_module(EXPERIMENTS[name])
    if preset not in module.SETTINGS:
        raise ValueError(
            f"the {name} experiment has no preset {preset!r}; choose one of {sorted(module.SETTINGS)}."
        )
    return module.run(out, preset=preset, seed=seed, progress=progress)
