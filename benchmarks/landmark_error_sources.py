"""Split the landmark-mode error on the 1 x 0.4 rectangle into its sources.

Prints, for the first four coordinates (relative error after sign alignment):

- exact mode against the analytic Neumann eigenfunctions of the rectangle;
- landmark mode (``--n-landmarks`` random landmarks) against exact mode, for two landmark draws
  and their average;
- the first draw's error at the landmarks and at the extended points separately;
- landmark graphs with exact mode's bandwidth and with 1.5 times it.

Run::

    python benchmarks/landmark_error_sources.py --n 100000 --n-landmarks 50000
"""

import argparse

import numpy as np

from netequiv import MahalanobisDiffusionMap

from landmark_accuracy import rectangle_in_r5, relative_error  # the benchmarks folder is on sys.path when run as a script


def show(label, error):
    print(f"| {label} | {' '.join(f'{e:.4f}' for e in error)} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of points")
    parser.add_argument("--n-landmarks", type=int, default=50_000, help="landmarks per draw")
    args = parser.parse_args()

    Y, C = rectangle_in_r5(args.n)
    a, b = Y[:, 0], Y[:, 1]
    analytic = np.stack(
        [np.cos(np.pi * a), np.cos(2 * np.pi * a), np.cos(np.pi * b / 0.4), np.cos(np.pi * a) * np.cos(np.pi * b / 0.4)],
        axis=1,
    )
    analytic /= np.sqrt(np.mean(analytic**2, axis=0))

    def landmark_fit(seed, epsilon="median"):
        dmap = MahalanobisDiffusionMap(
            n_components=4, mode="landmark", n_landmarks=args.n_landmarks, epsilon=epsilon, random_state=seed
        )
        return dmap.fit(Y, inverse_covariances=C)

    exact = MahalanobisDiffusionMap(n_components=4, mode="exact", random_state=0).fit(Y, inverse_covariances=C)
    print("| comparison | relative error of coordinates 1 to 4 |")
    print("|---|---|")
    show("exact vs analytic", relative_error(analytic, exact.embedding_))
    first, second = landmark_fit(0), landmark_fit(1)
    show("landmarks (draw 0) vs exact", relative_error(exact.embedding_, first.embedding_))
    show("landmarks (draw 1) vs exact", relative_error(exact.embedding_, second.embedding_))
    aligned = second.embedding_ * np.sign(np.sum(first.embedding_ * second.embedding_, axis=0))
    show("average of both draws vs exact", relative_error(exact.embedding_, 0.5 * (first.embedding_ + aligned)))
    is_landmark = np.zeros(args.n, dtype=bool)
    is_landmark[first.landmark_indices_] = True
    for label, rows in (("at the landmarks", is_landmark), ("at the extended points", ~is_landmark)):
        show(f"draw 0 {label}", relative_error(exact.embedding_[rows], first.embedding_[rows]))
    for factor in (1.0, 1.5):
        fit = landmark_fit(0, epsilon=factor * exact.epsilon_)
        show(f"draw 0, bandwidth {factor} x exact's", relative_error(exact.embedding_, fit.embedding_))


if __name__ == "__main__":
    main()
