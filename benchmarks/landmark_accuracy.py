"""Compare landmark mode with exact mode on one data set: embedding error after sign alignment.

The data set is a 1 x 0.4 rectangle mapped smoothly into R^5, with metrics from the map's
Jacobians. Its first Laplacian eigenvalues, 1, 4, 6.25, 7.25 and 9 times pi^2, are simple, so each
exact-mode coordinate is determined up to sign; the error of coordinate k is
``|phi_k(landmark) - phi_k(exact)| / |phi_k(exact)|`` over all points, after the sign flip that
fits best.

Run::

    python benchmarks/landmark_accuracy.py --n 100000 --n-landmarks 50000 --seeds 0 1 2
"""

import argparse
import time

import numpy as np

from netequiv import MahalanobisDiffusionMap
from netequiv.local_metric import metric_from_jacobians

from dmap_scaling import observe_in_r5  # the benchmarks folder is on sys.path when run as a script


def rectangle_in_r5(n, height=0.4, seed=0):
    """Points of [0, 1] x [0, height] mapped into R^5, with their Jacobian metrics."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.0, 1.0, n)
    b = rng.uniform(0.0, height, n)
    Y, J = observe_in_r5(a, b)
    return Y, metric_from_jacobians(J)


def relative_error(reference, embedding):
    """Return the relative L2 error of each column of ``embedding`` after its best sign flip."""
    signs = np.sign(np.sum(reference * embedding, axis=0))
    return np.linalg.norm(embedding * signs - reference, axis=0) / np.linalg.norm(reference, axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of points")
    parser.add_argument("--n-landmarks", type=int, nargs="+", default=[50_000], help="landmark counts to try")
    parser.add_argument("--n-components", type=int, default=4, help="coordinates compared")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="random_state of each landmark draw")
    args = parser.parse_args()

    Y, C = rectangle_in_r5(args.n)
    start = time.perf_counter()
    exact = MahalanobisDiffusionMap(n_components=args.n_components, mode="exact", random_state=0)
    exact.fit(Y, inverse_covariances=C)
    print(f"exact: {time.perf_counter() - start:.1f} s, max residual {exact.eigen_residuals_.max():.1e}")
    print("| n | landmarks | draw | fit (s) | relative error per coordinate, after sign alignment |")
    print("|---|---|---|---|---|")
    for n_landmarks in args.n_landmarks:
        for seed in args.seeds:
            start = time.perf_counter()
            landmark = MahalanobisDiffusionMap(
                n_components=args.n_components, mode="landmark", n_landmarks=n_landmarks, random_state=seed
            )
            landmark.fit(Y, inverse_covariances=C)
            seconds = time.perf_counter() - start
            error = relative_error(exact.embedding_, landmark.embedding_)
            cells = " ".join(f"{e:.4f}" for e in error)
            print(f"| {args.n} | {n_landmarks} | {seed} | {seconds:.1f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
