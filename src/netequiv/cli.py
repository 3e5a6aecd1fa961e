"""Command-line interface: ``netequiv reproduce ...``.

Exit codes: 0 done, 1 failed, 2 bad input (invalid arguments, an output folder that exists
without ``--force``).
"""

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("netequiv")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class BadInputError(Exception):
    """Invalid user input; the CLI exits with code 2 and prints the message."""


def _configure_logging(verbosity):
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[verbosity]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("netequiv").setLevel(level)


def _add_common_options(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", help="log warnings and errors only; no progress bars")
    group.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity", help="log debugging detail")
    parser.set_defaults(verbosity=0)


def _reproduce(args):
    from .experiments import EXPERIMENTS, run_experiment

    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    out = Path(args.out)
    for name in names:
        target = out / name
        if target.exists() and any(target.iterdir()) and not args.force:
            raise BadInputError(
                f"output folder {target} exists and is not empty; pass --force to overwrite it or "
                "choose another --out."
            )
    for name in names:
        metrics = run_experiment(
            name, out / name, preset=args.preset, seed=args.seed, progress=args.verbosity >= 0
        )
        logger.info("%s: wrote %s (summary in %s)", name, out / name, out / name / "summary.txt")
        passed = metrics.get("checks", {})
        failed = [key for key, ok in passed.items() if not ok]
        if failed:
            logger.warning("%s: checks not met: %s", name, ", ".join(failed))
    return EXIT_OK


def build_parser():
    from .experiments import EXPERIMENTS, PRESETS

    parser = argparse.ArgumentParser(
        prog="netequiv",
        description="Test whether two trained neural networks learned the same thing, and map one to the other.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad input.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    reproduce = commands.add_parser(
        "reproduce",
        help="reproduce an experiment of Bertalan, Dietrich and Kevrekidis (2021)",
        description=(
            "Train the experiment's networks, build the Mahalanobis diffusion maps and the "
            "transformation, and write metrics.json, summary.txt, PNG figures and the trained "
            "networks' state dicts to OUT/EXPERIMENT/."
        ),
        epilog="Exit codes: 0 done, 1 failed, 2 bad input.",
    )
    reproduce.add_argument("experiment", choices=[*EXPERIMENTS, "all"], help="which experiment to run")
    reproduce.add_argument(
        "--preset", choices=PRESETS, default="paper",
        help="'paper' uses the paper's settings; 'quick' finishes each experiment in about a minute on 2 cores (default: paper)",
    )
    reproduce.add_argument("--out", default="netequiv-out", help="output folder (default: ./netequiv-out)")
    reproduce.add_argument("--seed", type=int, default=0, help="random seed for data, training and solvers (default: 0)")
    reproduce.add_argument("--force", action="store_true", help="overwrite an existing, non-empty experiment folder")
    _add_common_options(reproduce)
    reproduce.set_defaults(handler=_reproduce)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbosity)
    try:
        return args.handler(args)
    except BadInputError as error:
        logger.error("%s", error)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        logger.error("interrupted")
        return EXIT_FAILED
    except Exception:
        logger.exception("%s failed", args.command)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
