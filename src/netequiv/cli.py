"""Command-line interface: ``netequiv reproduce``, ``compare``, ``apply``, ``inspect`` and ``init``.

This module parses arguments and calls :mod:`netequiv.compare` and :mod:`netequiv.experiments`.
Exit codes: 0 done, 1 failed, 2 bad input (invalid arguments or config, missing or unreadable
files, an output that exists without ``--force``).
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
    from .experiments import EXPERIMENTS, experiment_presets, run_experiment

    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    out = Path(args.out)
    for name in names:
        if args.preset not in experiment_presets(name):
            raise BadInputError(
                f"--preset {args.preset} is not defined for {name}; choose one of "
                f"{', '.join(experiment_presets(name))}."
            )
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


def _bad_input_types():
    from .compare import ConfigError, OutputExistsError

    return (BadInputError, ConfigError, OutputExistsError)


def _failure_types():
    from .compare import CompareFailedError

    return (CompareFailedError,)


def _compare(args):
    from .compare import load_config, prepare, run_compare

    config = load_config(args.config)
    if args.check:
        prepare(config)
        logger.info("%s is valid: the models load and accept the inputs and selections", args.config)
        return EXIT_OK
    metrics = run_compare(config, args.out, force=args.force, progress=None if args.verbosity >= 0 else False)
    if not args.quiet_verdict:
        print(metrics["verdict"]["sentence"])
    return EXIT_OK


def _apply(args):
    import numpy as np

    from .compare.loading import load_array
    from .transformation import NetworkTransformation

    from .compare.pipeline import TRANSFORMATION_FILE

    transform_path, source, target = Path(args.transformation), Path(args.activations), Path(args.output)
    if transform_path.is_dir():
        transform_path = transform_path / TRANSFORMATION_FILE
    if not transform_path.is_file():
        raise BadInputError(
            f"transformation {transform_path} not found; give the output folder of netequiv compare "
            f"or the {TRANSFORMATION_FILE} file in it."
        )
    if not source.is_file():
        raise BadInputError(f"activations file {source} not found.")
    if target.exists() and not args.force:
        raise BadInputError(f"output file {target} exists; pass --force to overwrite it or choose another -o.")
    activations = load_array(source, str(source), args.key, name="activations")
    try:
        transformation = NetworkTransformation.load(transform_path)
    except (ValueError, KeyError, OSError) as error:
        raise BadInputError(f"{transform_path} cannot be read as a saved transformation ({error}).") from error
    expected = transformation.n_features_out_ if args.inverse else transformation.n_features_in_
    if activations.ndim != 2 or activations.shape[1] != expected:
        model = "B" if args.inverse else "A"
        raise BadInputError(
            f"{source} has shape {activations.shape}; expected (n, {expected}), the activations of "
            f"model {model}'s selected neurons, one row a sample{'' if args.inverse else ' (pass --inverse to map B to A)'}."
        )
    if not np.all(np.isfinite(activations)):
        row = int(np.flatnonzero(~np.all(np.isfinite(activations), axis=1))[0])
        raise BadInputError(
            f"{source} contains NaN or infinite values (first in row {row}); drop or recompute those rows."
        )
    result = transformation.inverse_transform(activations) if args.inverse else transformation.transform(activations)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, result)
    logger.info("mapped %d samples %s; wrote %s, shape %s", len(result), "B to A" if args.inverse else "A to B", target, result.shape)
    return EXIT_OK


def _inspect(args):
    import numpy as np

    from .compare.config import ModelConfig
    from .compare.loading import load_array, load_network
    from .torch import list_layers

    path = Path(args.model).resolve()
    if not path.is_file():
        raise BadInputError(f"model file {path} not found.")
    factory_kwargs = _json_option(args.factory_kwargs, "--factory-kwargs", dict)
    spec = ModelConfig(section="inspect", path=path, factory=args.factory, factory_kwargs=factory_kwargs, device="cpu")
    model, _ = load_network(spec, Path.cwd())
    if args.inputs is not None:
        example = load_array(Path(args.inputs), "--inputs", None, name="inputs")[:1]
    elif args.input_shape is not None:
        try:
            shape = tuple(int(part) for part in args.input_shape.split(","))
        except ValueError:
            raise BadInputError(f"--input-shape {args.input_shape!r} is invalid; expected integers such as 3,32,32.") from None
        example = np.zeros((1, *shape))
    else:
        raise BadInputError("the layers' output shapes need an example input; pass --input-shape D1,D2,... or --inputs FILE.npy.")
    try:
        layers = list_layers(model, example)
    except (RuntimeError, ValueError, TypeError) as error:
        raise BadInputError(f"the model rejects inputs of per-sample shape {example.shape[1:]} ({error}); fix --input-shape.") from error
    rows = [
        (layer.name, layer.module_type, "not called" if layer.shape is None else str(layer.shape), str(layer.size))
        for layer in layers
    ]
    header = ("layer", "type", "output shape", "neurons")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(3)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    return EXIT_OK


def _json_option(text, option, kind):
    import json

    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{option} {text!r} is not valid JSON ({error}); write for example '{{\"widths\": [2, 5, 2]}}'.") from None
    if not isinstance(value, kind):
        raise BadInputError(f"{option} must be a JSON object such as '{{\"widths\": [2, 5, 2]}}'.")
    return value


def _init(args):
    from .compare import EXAMPLE_CONFIG

    path = Path(args.path)
    if path.exists() and not args.force:
        raise BadInputError(f"{path} exists; pass --force to overwrite it or give another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    logger.info("wrote %s; edit it, then run: netequiv compare %s --out results", path, path)
    return EXIT_OK


def _add_compare_commands(commands):
    from .compare.pipeline import TRANSFORMATION_FILE

    epilog = "Exit codes: 0 done, 1 failed, 2 bad input."
    compare = commands.add_parser(
        "compare",
        help="test whether two networks learned the same thing, from a TOML config",
        description=(
            "Load the two networks and inputs that CONFIG names, check them, build the Mahalanobis "
            "diffusion maps and the transformation between the selected neurons, test it on held-out "
            "correspondences, and write metrics.json, the fitted transformation, PNG figures and a "
            "self-contained report.html to OUT. The verdict sentence is printed. netequiv init writes "
            "an example config."
        ),
        epilog=epilog,
    )
    compare.add_argument("config", help="the TOML config file; relative paths in it start at its folder")
    compare.add_argument("-o", "--out", default="netequiv-compare", help="output folder (default: ./netequiv-compare)")
    compare.add_argument("--force", action="store_true", help="write into a non-empty output folder, replacing the files of an earlier run (other files are kept)")
    compare.add_argument("--check", action="store_true", help="validate the config, load the models and check the inputs and selections, then stop")
    compare.add_argument("--no-print", dest="quiet_verdict", action="store_true", help="do not print the verdict sentence on standard output")
    _add_common_options(compare)
    compare.set_defaults(handler=_compare)

    apply = commands.add_parser(
        "apply",
        help="map activations with a saved transformation",
        description=(
            "Map activations of model A's selected neurons to model B's (or back, with --inverse) "
            "with a transformation that netequiv compare saved, and write them as .npy."
        ),
        epilog=epilog,
    )
    apply.add_argument("transformation", metavar="TRANSFORM_DIR", help=f"output folder of netequiv compare, or the {TRANSFORMATION_FILE} file in it")
    apply.add_argument("activations", metavar="ACTIVATIONS", help=".npy (or .npz with --key) array of shape (n, m): one row a sample, one column a selected neuron in the selection's order")
    apply.add_argument("-o", "--output", required=True, metavar="OUT.npy", help="where to write the mapped activations")
    apply.add_argument("--inverse", action="store_true", help="map model B's activations to model A's")
    apply.add_argument("--key", help="array name inside an .npz file")
    apply.add_argument("--force", action="store_true", help="overwrite an existing output file")
    _add_common_options(apply)
    apply.set_defaults(handler=_apply)

    inspect = commands.add_parser(
        "inspect",
        help="list a model's layers and output shapes, to write selections",
        description=(
            "Load MODEL and run one example input through it; list every selectable layer with its "
            "module type, per-sample output shape and number of neurons."
        ),
        epilog=epilog,
    )
    inspect.add_argument("model", metavar="MODEL", help="model file: torch.export archive (.pt2), state dict (.pt, .safetensors, with --factory) or TorchScript")
    inspect.add_argument("--factory", help='for state dicts: "package.module:function" or "file.py:function" that builds the untrained model')
    inspect.add_argument("--factory-kwargs", help='JSON object of keyword arguments for the factory, such as {"widths": [2, 5, 2]}')
    shape = inspect.add_mutually_exclusive_group()
    shape.add_argument("--input-shape", help="per-sample input shape, comma-separated, such as 3,32,32 (a zero input is used)")
    shape.add_argument("--inputs", help=".npy file of inputs; the first row is used")
    _add_common_options(inspect)
    inspect.set_defaults(handler=_inspect)

    init = commands.add_parser(
        "init",
        help="write a commented example compare config",
        description="Write a commented example config for netequiv compare, to edit.",
        epilog=epilog,
    )
    init.add_argument("path", nargs="?", default="netequiv.toml", help="where to write it (default: ./netequiv.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    _add_common_options(init)
    init.set_defaults(handler=_init)


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
        help=(
            "'paper' uses the paper's settings; 'quick' finishes each experiment in about a minute "
            "on 2 cores; 'fast' (horse only) trains the paper's autoencoders on a shorter schedule "
            "(default: paper)"
        ),
    )
    reproduce.add_argument("--out", default="netequiv-out", help="output folder (default: ./netequiv-out)")
    reproduce.add_argument("--seed", type=int, default=0, help="random seed for data, training and solvers (default: 0)")
    reproduce.add_argument("--force", action="store_true", help="overwrite an existing, non-empty experiment folder")
    _add_common_options(reproduce)
    reproduce.set_defaults(handler=_reproduce)
    _add_compare_commands(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbosity)
    try:
        return args.handler(args)
    except _bad_input_types() as error:
        logger.error("%s", error)
        return EXIT_BAD_INPUT
    except _failure_types() as error:
        logger.error("%s failed: %s", args.command, error)
        return EXIT_FAILED
    except KeyboardInterrupt:
        logger.error("interrupted")
        return EXIT_FAILED
    except Exception:
        logger.exception("%s failed", args.command)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
