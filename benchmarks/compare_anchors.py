"""Time netequiv against datafold and pydiffmap on one data set, in one run, and record the table.

Each library runs in its own subprocess and virtual environment (datafold 2.0.2 pins numpy < 2
and scikit-learn 1.2), created under ``benchmarks/.venvs/`` with pip on first use. The data set
is the unit square mapped smoothly into R^5 (:func:`dmap_scaling.square_in_r5`):

- the anchors' task, run by all three: an ordinary (Euclidean) diffusion map, alpha = 1, with
  ``--n-neighbors`` neighbours and ``--n-components`` non-trivial eigenpairs, every library with
  the bandwidth that netequiv's median rule chose (pydiffmap's kernel is exp(-d^2 / (4 eps)), so
  it gets half of it);
- netequiv's own task: the same points with metrics from the map's Jacobians (exact mode).

Wall time covers the whole fit (neighbours, kernel, bandwidth, eigensolver); peak memory is the
peak resident set size of the subprocess minus its size once the data are loaded. Eigenvalue
agreement is the largest relative difference of 1 - a_k over the non-trivial eigenvalues, against
netequiv's Euclidean run. The sequence repeats ``--repeats`` times and the table shows medians.

Run::

    python benchmarks/compare_anchors.py --n 100000 --n-neighbors 48 --repeats 3
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dmap_scaling import square_in_r5  # noqa: E402

VENVS = HERE / ".venvs"
ANCHORS = {"datafold": "datafold==2.0.2", "pydiffmap": "pydiffmap==0.2.0.1"}

# Runs inside each subprocess: argv = library, data folder, neighbours, components, epsilon.
RUNNER = r'''
import json, resource, sys, time
import numpy as np

library, folder, k, n_eig, epsilon = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
Y = np.load(folder + "/Y.npy")
C = np.load(folder + "/C.npy") if library == "netequiv-metric" else None
if library.startswith("netequiv"):
    from netequiv import MahalanobisDiffusionMap
elif library == "datafold":
    import datafold.dynfold as dfold
    import datafold.pcfold as pfold
    from datafold.pcfold.distance import SklearnKNN
elif library == "pydiffmap":
    from pydiffmap import diffusion_map
base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if library.startswith("netequiv"):
    dmap = MahalanobisDiffusionMap(n_components=n_eig, n_neighbors=k, mode="exact", random_state=0)
    dmap.fit(Y, inverse_covariances=C)
    values, extra = dmap.all_eigenvalues_[1:], dict(
        epsilon=dmap.epsilon_, max_residual=float(dmap.eigen_residuals_.max()))
elif library == "datafold":
    # datafold 2.0.2 forwards a dict's k as kmin, which SklearnKNN rejects, so build it directly.
    kernel = pfold.GaussianKernel(epsilon=epsilon, distance=SklearnKNN(metric="sqeuclidean", k=k))
    dmap = dfold.DiffusionMaps(kernel=kernel, n_eigenpairs=n_eig + 1, alpha=1).fit(pfold.PCManifold(Y, kernel=kernel))
    values, extra = np.sort(np.real(dmap.eigenvalues_))[::-1][1:], {}
elif library == "pydiffmap":
    # pydiffmap's kernel is exp(-d^2 / (4 eps)); its eigenvalues are those of (P - I) / eps.
    dmap = diffusion_map.DiffusionMap.from_sklearn(alpha=1.0, k=k, epsilon=epsilon / 2, n_evecs=n_eig)
    dmap.fit(Y)
    values, extra = 1.0 + dmap.epsilon_fitted * np.asarray(dmap.evals), {}
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(seconds=seconds, peak_mib=(peak_kib - base_kib) / 1024,
                      eigenvalues=np.asarray(values, dtype=float).tolist(), **extra)))
'''


def ensure_venv(name):
    """Create benchmarks/.venvs/NAME with the pinned anchor library, unless it exists."""
    python = VENVS / name / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", ANCHORS[name]], check=True)
    return str(python)


def run_one(python, library, folder, args, epsilon):
    command = [python, "-c", RUNNER, library, folder, str(args.n_neighbors), str(args.n_components), repr(epsilon)]
    completed = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if completed.returncode != 0:
        raise RuntimeError(f"{library} failed with exit status {completed.returncode}:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def eigenvalue_difference(reference, values):
    """Largest relative difference of 1 - a_k between two lists of non-trivial eigenvalues."""
    reference, values = np.sort(reference)[::-1], np.sort(values)[::-1]
    gaps = 1.0 - reference
    return float(np.max(np.abs((1.0 - values) - gaps) / gaps))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of points")
    parser.add_argument("--n-neighbors", type=int, default=48, help="neighbours per point")
    parser.add_argument("--n-components", type=int, default=10, help="non-trivial eigenpairs")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the whole sequence")
    parser.add_argument("--output", type=Path, help="file for the raw results (JSON); none when unset")
    parser.add_argument("--plot", type=Path, help="file for a bar chart of the wall times (PNG); none when unset")
    args = parser.parse_args()

    pythons = {name: ensure_venv(name) for name in ANCHORS}
    with tempfile.TemporaryDirectory() as folder:
        from netequiv.local_metric import metric_from_jacobians

        Y, J = square_in_r5(args.n)
        np.save(folder + "/Y.npy", Y)
        np.save(folder + "/C.npy", metric_from_jacobians(J))
        runs = {name: [] for name in ["netequiv-metric", "netequiv", *ANCHORS]}
        for repeat in range(args.repeats):
            reference = run_one(sys.executable, "netequiv", folder, args, 0.0)
            runs["netequiv"].append(reference)
            runs["netequiv-metric"].append(run_one(sys.executable, "netequiv-metric", folder, args, 0.0))
            for name, python in pythons.items():
                result = run_one(python, name, folder, args, reference["epsilon"])
                result["eigenvalue_difference"] = eigenvalue_difference(reference["eigenvalues"], result["eigenvalues"])
                runs[name].append(result)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in runs.items()), flush=True)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| library | task | wall time (s), median | runs (s) | peak memory (MiB), median | eigenvalues vs netequiv | time / netequiv |")
    print("|---|---|---|---|---|---|---|")
    ours = np.median([r["seconds"] for r in runs["netequiv"]])
    for name, results in runs.items():
        seconds = [r["seconds"] for r in results]
        task = "Mahalanobis (Jacobian metrics)" if name == "netequiv-metric" else "Euclidean"
        difference = np.median([r.get("eigenvalue_difference", 0.0) for r in results])
        residual = f", max residual {max(r['max_residual'] for r in results):.1e}" if "max_residual" in results[0] else ""
        print(
            f"| {name.replace('-metric', '')} | {task} | {np.median(seconds):.1f} | "
            f"{' '.join(f'{s:.1f}' for s in seconds)} | {np.median([r['peak_mib'] for r in results]):.0f} | "
            f"{difference:.1e}{residual} | {np.median(seconds) / ours:.1f} |"
        )
    if args.output is not None:
        args.output.write_text(json.dumps(dict(args=vars(args), runs=runs), indent=1, default=str))
    if args.plot is not None:
        plot_times(runs, args)


def plot_times(runs, args):
    """Save a bar chart of the median wall time of each run, with every repeat as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["netequiv\n(Jacobian metrics)" if name == "netequiv-metric" else name for name in runs]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for position, results in enumerate(runs.values()):
        seconds = [r["seconds"] for r in results]
        axes.bar(position, np.median(seconds), color="tab:blue" if position < 2 else "tab:gray")
        axes.plot([position] * len(seconds), seconds, "k.", markersize=4)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_ylabel("wall time of the fit (s)")
    axes.set_title(f"n = {args.n}, {args.n_neighbors} neighbours, {args.n_components} eigenpairs")
    figure.tight_layout()
    figure.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
