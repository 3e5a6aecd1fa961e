"""Time and peak memory of MahalanobisDiffusionMap fits by sample size, with the growth exponent.

The data set is the unit square observed through a smooth map into R^5, with metrics from the
map's analytic Jacobians (pinv(J J^T), rank 2). Each size runs in its own subprocess, so the
peak resident set size (``ru_maxrss``) belongs to that fit alone; the table shows it minus the
size once the data and metrics are in memory. Stage times come from the estimator's DEBUG log
lines on the ``netequiv`` logger. Mode "auto" fits exactly up to 200,000 points and with
landmarks above. The growth exponent is the least-squares slope of log(time) and log(memory)
against log(n).

Run::

    python benchmarks/dmap_scaling.py --sizes 10000 30000 100000 300000 1000000
"""

import argparse
import json
import logging
import os
import platform
import subprocess
import sys

import numpy as np


def observe_in_r5(a, b):
    """Map plane coordinates (a, b) smoothly into R^5; return the points and Jacobians (n, 5, 2)."""
    n = len(a)
    Y = np.stack([a, b, np.sin(2 * a + b), np.cos(a - 2 * b), a * b], axis=1)
    one, zero = np.ones(n), np.zeros(n)
    J = np.stack(
        [
            np.stack([one, zero], axis=1),
            np.stack([zero, one], axis=1),
            np.stack([2 * np.cos(2 * a + b), np.cos(2 * a + b)], axis=1),
            np.stack([-np.sin(a - 2 * b), 2 * np.sin(a - 2 * b)], axis=1),
            np.stack([b, a], axis=1),
        ],
        axis=1,
    )
    return Y, J


def square_in_r5(n, seed=0):
    """Points of [0, 1]^2 mapped into R^5, with the map's Jacobians (n, 5, 2)."""
    x = np.random.default_rng(seed).uniform(size=(n, 2))
    return observe_in_r5(x[:, 0], x[:, 1])


class StageTimes(logging.Handler):
    """Add up the seconds of each fit stage from the estimator's DEBUG lines in ``stages``."""

    def __init__(self):
        super().__init__()
        self.stages = {}

    def emit(self, record):
        if isinstance(record.args, tuple) and len(record.args) == 2 and record.msg.startswith("stage"):
            name, seconds = record.args
            self.stages[name] = self.stages.get(name, 0.0) + seconds


def fit_once(n, n_neighbors, n_components, mode):
    """Fit one estimator in this process; return its timings and peak memory as a dict."""
    import resource
    import time

    from netequiv import MahalanobisDiffusionMap
    from netequiv.local_metric import metric_from_jacobians

    handler = StageTimes()
    stages = handler.stages
    logger = logging.getLogger("netequiv")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)

    Y, J = square_in_r5(n)
    C = metric_from_jacobians(J)
    del J
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    dmap = MahalanobisDiffusionMap(n_components=n_components, n_neighbors=n_neighbors, mode=mode, random_state=0)
    dmap.fit(Y, inverse_covariances=C)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(
        n=n,
        mode=dmap.mode_,
        seconds=seconds,
        peak_mib=(peak_kib - base_kib) / 1024,
        stages=stages,
        max_residual=float(dmap.eigen_residuals_.max()),
    )


def growth_exponent(sizes, values):
    """Least-squares slope of log(values) against log(sizes)."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 100000, 300000, 1000000])
    parser.add_argument("--n-neighbors", type=int, default=32)
    parser.add_argument("--n-components", type=int, default=10)
    parser.add_argument("--mode", default="auto", choices=["auto", "exact", "landmark"])
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(fit_once(args.single, args.n_neighbors, args.n_components, args.mode)))
        return

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    print(
        "| n | mode | fit (s) | landmark neighbours (s) | neighbours (s) | kernel (s) | eigensolver (s) | "
        "extension (s) | peak RSS (MiB) | max residual |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for n in args.sizes:
        command = [sys.executable, __file__, "--single", str(n), "--n-neighbors", str(args.n_neighbors),
                   "--n-components", str(args.n_components), "--mode", args.mode]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        results.append(row)
        stages = row["stages"]
        names = ("landmark neighbours", "neighbours", "kernel", "eigensolver", "extension")
        cells = [f"{stages.get(name, 0.0):.2f}" for name in names]
        print(f"| {n} | {row['mode']} | {row['seconds']:.2f} | {' | '.join(cells)} | {row['peak_mib']:.0f} | {row['max_residual']:.1e} |", flush=True)
    sizes = [row["n"] for row in results]
    if len(sizes) > 1:
        print(f"growth exponent, time: {growth_exponent(sizes, [row['seconds'] for row in results]):.2f}; "
              f"memory: {growth_exponent(sizes, [row['peak_mib'] for row in results]):.2f}")


if __name__ == "__main__":
    main()
