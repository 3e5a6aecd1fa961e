"""Time and peak memory of each stage of a Mahalanobis diffusion map fit, by sample size.

The data set is the unit square observed through a smooth map into R^5, with metrics from the
map's analytic Jacobians. Stages: metric (pinv(J J^T)), neighbours (Euclidean candidates and
Mahalanobis re-ranking), kernel (bandwidth, sparse kernel, alpha = 1 normalisation) and
eigensolver (ARPACK, as the estimator calls it). Peak memory is the largest allocation traced by :mod:`tracemalloc` during
the stage (numpy reports its buffers to it), above what was allocated when the stage began.

Run::

    python benchmarks/dmap_scaling.py --sizes 10000 30000 100000
"""

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np
from scipy import sparse

from netequiv import MahalanobisDiffusionMap
from netequiv.kernels import kernel_matrix, mahalanobis_neighbors, median_bandwidth
from netequiv.local_metric import metric_from_jacobians


def square_in_r5(n, seed=0):
    """Points of [0, 1]^2 mapped into R^5, with the map's Jacobians (n, 5, 2)."""
    x = np.random.default_rng(seed).uniform(size=(n, 2))
    a, b = x[:, 0], x[:, 1]
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


class Stage:
    """Context manager that records wall time and traced peak memory of one stage."""

    def __init__(self, name, table):
        self.name, self.table = name, table

    def __enter__(self):
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.start
        peak = tracemalloc.get_traced_memory()[1] - self.base
        self.table.append((self.name, seconds, peak / 2**20))


def run(n, n_neighbors=32, n_components=10, seed=0):
    Y, J = square_in_r5(n, seed)
    table = []
    tracemalloc.start()
    with Stage("metric", table):
        C = metric_from_jacobians(J)
    with Stage("neighbours", table):
        distances_sq, indices = mahalanobis_neighbors(Y, C, n_neighbors)
    with Stage("kernel", table):
        epsilon = median_bandwidth(distances_sq, 10)
        K = kernel_matrix(distances_sq, indices, epsilon)
        p = np.asarray(K.sum(axis=1)).ravel()
        W = (sparse.diags(1 / p) @ K @ sparse.diags(1 / p)).tocsr()
        q = np.asarray(W.sum(axis=1)).ravel()
        S = (sparse.diags(q**-0.5) @ W @ sparse.diags(q**-0.5)).tocsr()
        S = 0.5 * (S + S.T)
    with Stage("eigensolver", table):
        solver = MahalanobisDiffusionMap(n_components=n_components, eigen_solver="arpack", random_state=0)
        solver._eigenpairs(S, n_components + 1)
    tracemalloc.stop()
    table.append(("total", sum(row[1] for row in table), max(row[2] for row in table)))
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 100000])
    parser.add_argument("--n-neighbors", type=int, default=32)
    parser.add_argument("--n-components", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    print("| n | stage | wall time (s) | peak traced memory (MiB) |")
    print("|---|---|---|---|")
    for n in args.sizes:
        for name, seconds, mib in run(n, args.n_neighbors, args.n_components):
            print(f"| {n} | {name} | {seconds:.2f} | {mib:.0f} |", flush=True)


if __name__ == "__main__":
    main()
