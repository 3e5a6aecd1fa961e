"""Time the eigensolver stage of one fit with ARPACK and with the Chebyshev solver, side by side.

The data set is the unit square mapped into R^5 with Jacobian metrics
(:func:`dmap_scaling.square_in_r5`), the task of ``compare_anchors.py``. Each solver fits the same
points in turn, ``--repeats`` times. The table gives the median time of the eigensolver stage
(from the estimator's DEBUG log) and of the whole fit, the largest relative residual, and the
largest difference of the eigenvalues from ARPACK's.

Run::

    python benchmarks/eigensolvers.py --n 100000 --n-neighbors 48 --repeats 3
"""

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dmap_scaling import StageTimes, square_in_r5  # noqa: E402

from netequiv import MahalanobisDiffusionMap  # noqa: E402
from netequiv.local_metric import metric_from_jacobians  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of points")
    parser.add_argument("--n-neighbors", type=int, default=48, help="neighbours per point")
    parser.add_argument("--n-components", type=int, default=10, help="non-trivial eigenpairs")
    parser.add_argument("--repeats", type=int, default=3, help="fits per solver")
    args = parser.parse_args()

    handler = StageTimes()
    logger = logging.getLogger("netequiv")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    Y, J = square_in_r5(args.n)
    C = metric_from_jacobians(J)
    runs = {"arpack": [], "chebyshev": []}
    for _ in range(args.repeats):
        for solver, results in runs.items():
            dmap = MahalanobisDiffusionMap(
                n_components=args.n_components,
                n_neighbors=args.n_neighbors,
                eigen_solver=solver,
                mode="exact",
                random_state=0,
            )
            handler.stages.clear()
            start = time.perf_counter()
            dmap.fit(Y, inverse_covariances=C)
            results.append(
                dict(
                    fit=time.perf_counter() - start,
                    eigensolver=handler.stages["eigensolver"],
                    residual=float(dmap.eigen_residuals_.max()),
                    eigenvalues=dmap.all_eigenvalues_,
                )
            )

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"n = {args.n}, {args.n_neighbors} neighbours, {args.n_components} eigenpairs, {args.repeats} repeats")
    print("| solver | eigensolver (s), median | runs (s) | fit (s), median | max residual | eigenvalues vs ARPACK |")
    print("|---|---|---|---|---|---|")
    reference = runs["arpack"][0]["eigenvalues"]
    for solver, results in runs.items():
        stage = [r["eigensolver"] for r in results]
        difference = max(float(np.abs(r["eigenvalues"] - reference).max()) for r in results)
        print(
            f"| {solver} | {np.median(stage):.2f} | {' '.join(f'{s:.2f}' for s in stage)} | "
            f"{np.median([r['fit'] for r in results]):.2f} | {max(r['residual'] for r in results):.1e} | "
            f"{difference:.1e} |"
        )


if __name__ == "__main__":
    main()
