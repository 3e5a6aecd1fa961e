"""The TOML configuration of ``netequiv compare``: schema, parsing and static validation.

:func:`load_config` reads the file, rejects unknown keys, wrong types, missing files and
inconsistent settings, and returns a :class:`CompareConfig` whose paths are absolute. Every
problem found is reported together in one :class:`ConfigError`, each line naming the file, the
key, the value and the fix. Checks that need the models (layer names, input shapes) run in
:mod:`netequiv.compare.pipeline` before any heavy work.

Relative paths are resolved against the folder of the config file. A path outside that folder
is allowed, and logged, so that a shared config does not read files silently from elsewhere.
"""

import difflib
import logging
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

logger = logging.getLogger("netequiv.compare")

__all__ = [
    "CompareConfig",
    "ConfigError",
    "CorrespondenceConfig",
    "InputsConfig",
    "ModelConfig",
    "NeighbourhoodConfig",
    "load_config",
]

SAMPLERS = ("box", "ball")
NEIGHBOURHOOD_KINDS = ("jacobian", "ball", "burst", "sequence")
CORRESPONDENCE_KINDS = ("same-inputs", "index-file", "domain-map")
ARRAY_SUFFIXES = (".npy", ".npz")

# Settings of NetworkTransformation (and through it of both MahalanobisDiffusionMap instances)
# that a config may set; n_components is the embedding dimension l of both networks.
DIFFUSION_MAP_KEYS = {
    "n_components": "a positive integer",
    "n_neighbors": "an integer >= 2",
    "epsilon": '"median" or a finite positive number',
    "bandwidth_neighbor": "a positive integer",
    "remove_harmonics": "true or false",
    "harmonic_threshold": "a number in [0, 1]",
    "n_eigenvectors": "a positive integer",
    "eigen_solver": '"auto", "dense", "arpack" or "chebyshev"',
    "eigen_tol": "a finite non-negative number",
    "n_candidates": "a positive integer",
    "interpolation": '"nearest", "linear" or "rbf"',
    "degeneracy_tol": "a non-negative number",
    "proper_rotation": "true or false",
}

# Settings of NetworkTransformation.equivalence_test, with their defaults here. The default of
# n_permutations is lower than the method's own (999), so that a run on a laptop stays short;
# 199 permutations still resolve p-values down to 0.005.
TEST_DEFAULTS = {
    "alpha": 0.05,
    "n_permutations": 199,
    "n_subsamples": 10,
    "spectrum_tol": 0.1,
    "residual_tol": 0.1,
    "error_tol": 0.1,
}


class ConfigError(ValueError):
    """An invalid compare configuration; the message has one line a problem.

    Attributes
    ----------
    problems : list of str
        One message a problem, each naming the file and the key.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class ModelConfig:
    """Model settings: the file of one network and its observed neurons (``[model_a]``, ``[model_b]``)."""

    section: str
    path: Path
    factory: str | None = None
    factory_args: tuple = ()
    factory_kwargs: dict = field(default_factory=dict)
    selection: str = ""
    device: str = "cpu"


@dataclass(frozen=True)
class InputsConfig:
    """Input settings: the file or sampler of the network inputs (``[inputs]``).

    Exactly one of ``file`` and ``sampler`` is set. ``file_b`` contains model B's inputs when the
    correspondences come from an index file.
    """

    file: Path | None = None
    key: str | None = None
    file_b: Path | None = None
    key_b: str | None = None
    sampler: str | None = None
    low: tuple | None = None
    high: tuple | None = None
    center: tuple | None = None
    radius: float | None = None
    n_samples: int | None = None
    dimension: int | None = None  # None: estimate
    breakdown_path: Path | None = None
    breakdown_key: str | None = None


@dataclass(frozen=True)
class NeighbourhoodConfig:
    """Neighbourhood settings that estimate the local metric at each centre (``[neighbourhoods]``)."""

    kind: str = "jacobian"
    radius: float | None = None
    scale: float | None = None
    points: int = 64
    window: int | None = None
    centres: int = 1000


@dataclass(frozen=True)
class CorrespondenceConfig:
    """Correspondence settings: which inputs of model A match which of model B (``[correspondence]``).

    With ``"index-file"`` each network's local metric is taken in its own input space, so the
    comparison assumes that both input spaces measure distances alike (the same kind of data in
    another order, for example). A known map between the input spaces belongs in ``domain_map``,
    which pulls model B's metric back to model A's inputs.
    """

    kind: str = "same-inputs"
    index_file: Path | None = None
    domain_map: str | None = None
    pairs: int = 10
    held_out: int = 200


@dataclass(frozen=True)
class CompareConfig:
    """A validated compare configuration; every path is absolute."""

    path: Path
    model_a: ModelConfig
    model_b: ModelConfig
    inputs: InputsConfig
    neighbourhoods: NeighbourhoodConfig
    correspondence: CorrespondenceConfig
    diffusion_map: dict
    test: dict
    seed: int = 0

    @property
    def folder(self):
        """Folder of the config file, against which relative paths are resolved."""
        return self.path.parent


# Allowed keys of each section, with the type a value must have and its description for messages.
_SECTIONS = {
    "model_a": {"path", "factory", "factory_args", "factory_kwargs", "selection", "device"},
    "model_b": {"path", "factory", "factory_args", "factory_kwargs", "selection", "device"},
    "inputs": {
        "file", "key", "file_b", "key_b", "sampler", "low", "high", "center", "radius", "n_samples",
        "dimension", "breakdown_path", "breakdown_key",
    },
    "neighbourhoods": {"kind", "radius", "scale", "points", "window", "centres"},
    "correspondence": {"kind", "index_file", "domain_map", "pairs", "held_out"},
    "diffusion_map": set(DIFFUSION_MAP_KEYS),
    "test": set(TEST_DEFAULTS),
}
_TOP_LEVEL = {"seed"}
_REQUIRED_SECTIONS = ("model_a", "model_b", "inputs")


class _Reader:
    """Reads typed values from the parsed TOML and collects every problem it finds."""

    def __init__(self, path, data):
        self.path = path
        self.data = data
        self.problems = []

    def problem(self, key, message):
        self.problems.append(f"{self.path}: {key}: {message}")

    def section(self, name):
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.problem(f"[{name}]", f"expected a table [{name}], got {type(value).__name__} {value!r}.")
            return {}
        return value

    def get(self, section, key, kind, default=None, *, required=False, check=None, expected=None):
        """Return ``[section] key`` when it has type ``kind`` and passes ``check``; else record it."""
        table = self.section(section)
        name = f"[{section}] {key}"
        if key not in table:
            if required:
                self.problem(name, f"missing; {expected or 'set it'}.")
            return default
        value = table[key]
        if not _is_kind(value, kind) or (check is not None and not check(value)):
            description = expected or _KIND_NAMES.get(kind, str(kind))
            self.problem(name, f"{value!r} is invalid; expected {description}.")
            return default
        return value

    def choice(self, section, key, options, default):
        return self.get(
            section, key, str, default, check=lambda value: value in options,
            expected="one of " + ", ".join(f'"{option}"' for option in options),
        )

    def file(self, section, key, *, required=False, suffixes=None, expected=None):
        """Resolve a path against the config's folder; record it when missing or of the wrong kind."""
        text = self.get(section, key, str, None, required=required, expected=expected or "a file path")
        if text is None:
            return None
        path = (self.path.parent / Path(text).expanduser()).resolve()
        name = f"[{section}] {key}"
        if not path.is_file():
            self.problem(name, f"file {str(path)!r} not found; fix the path (relative paths start at {self.path.parent}).")
            return None
        if suffixes is not None and path.suffix.lower() not in suffixes:
            self.problem(name, f"{text!r} has suffix {path.suffix!r}; expected one of {', '.join(suffixes)}.")
            return None
        if not path.is_relative_to(self.path.parent.resolve()):
            logger.info("%s: %s reads %s, outside the config's folder", self.path.name, name, path)
        return path


_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


def _is_kind(value, kind):
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, kind)


def _positive(value):
    return value > 0


def _check_keys(reader):
    """Record unknown sections and keys, with the closest valid name."""
    for name, value in reader.data.items():
        if name in _TOP_LEVEL:
            continue
        if name not in _SECTIONS:
            close = difflib.get_close_matches(name, [*_SECTIONS, *_TOP_LEVEL], n=1)
            hint = f"did you mean [{close[0]}]?" if close else "valid sections: " + ", ".join(f"[{s}]" for s in _SECTIONS)
            reader.problem(f"[{name}]", f"unknown section; {hint}")
            continue
        if not isinstance(value, dict):
            continue
        for key in value:
            if key not in _SECTIONS[name]:
                close = difflib.get_close_matches(key, sorted(_SECTIONS[name]), n=1)
                hint = f"did you mean {close[0]!r}?" if close else "valid keys: " + ", ".join(sorted(_SECTIONS[name]))
                reader.problem(f"[{name}] {key}", f"unknown key; {hint}")
    for name in _REQUIRED_SECTIONS:
        if name not in reader.data:
            reader.problem(f"[{name}]", f"missing section; add [{name}] (netequiv init writes an example).")


def _read_model(reader, section):
    path = reader.file(section, "path", required=True, expected="the model file (TorchScript, .pt2 or state dict)")
    factory = reader.get(
        section, "factory", str, None, check=lambda value: ":" in value,
        expected='"package.module:function" or "file.py:function", a function that returns the untrained model',
    )
    selection = reader.get(
        section, "selection", str, None, required=True, check=lambda value: bool(value.strip()),
        expected='the selected neurons, such as "act2:0-4" (netequiv inspect MODEL lists the layers)',
    )
    device = reader.get(
        section, "device", str, "cpu", check=lambda value: value in ("cpu", "cuda", "auto") or value.startswith("cuda:"),
        expected='"cpu", "cuda", "cuda:N" or "auto" (cuda when available)',
    )
    return ModelConfig(
        section=section,
        path=path,
        factory=factory,
        factory_args=tuple(reader.get(section, "factory_args", list, [])),
        factory_kwargs=dict(reader.get(section, "factory_kwargs", dict, {})),
        selection=selection or "",
        device=device,
    )


def _read_vector(reader, key):
    values = reader.get(
        "inputs", key, list, None, check=lambda value: bool(value) and all(_is_kind(item, float) for item in value),
        expected="a non-empty array of numbers, one per input coordinate",
    )
    return None if values is None else tuple(float(item) for item in values)


def _read_inputs(reader, correspondence_kind):
    table = reader.section("inputs")
    has_file, has_sampler = "file" in table, "sampler" in table
    if has_file == has_sampler:
        reader.problem(
            "[inputs] file / sampler",
            "set exactly one: file = \"inputs.npy\" (an array of inputs), or sampler = \"box\" or \"ball\".",
        )
    file = reader.file("inputs", "file", suffixes=ARRAY_SUFFIXES)
    file_b = reader.file("inputs", "file_b", suffixes=ARRAY_SUFFIXES)
    sampler = reader.choice("inputs", "sampler", SAMPLERS, None)
    low, high = _read_vector(reader, "low"), _read_vector(reader, "high")
    center = _read_vector(reader, "center")
    radius = reader.get("inputs", "radius", float, None, check=_positive, expected="a positive number (input units)")
    n_samples = reader.get("inputs", "n_samples", int, None, check=_positive, expected="a positive integer")
    if sampler == "box":
        if low is None or high is None:
            reader.problem("[inputs] low / high", "sampler = \"box\" needs low = [...] and high = [...], one bound per coordinate.")
        elif len(low) != len(high) or any(a >= b for a, b in zip(low, high)):
            reader.problem("[inputs] low / high", f"low = {list(low)} and high = {list(high)} must have the same length and low < high in each coordinate.")
    if sampler == "ball" and (center is None or radius is None):
        reader.problem("[inputs] center / radius", "sampler = \"ball\" needs center = [...] and radius = r.")
    if sampler is not None and n_samples is None:
        reader.problem("[inputs] n_samples", "missing; a sampler needs the number of inputs to draw.")
    if file_b is not None and correspondence_kind != "index-file":
        reader.problem("[inputs] file_b", 'is used only with [correspondence] kind = "index-file"; remove it.')
    if correspondence_kind == "index-file" and file_b is None and "file_b" not in table:
        reader.problem("[inputs] file_b", 'missing; kind = "index-file" needs model B\'s inputs in file_b.')

    dimension = reader.get(
        "inputs", "dimension", (int, str), "estimate",
        check=lambda value: value == "estimate" or (_is_kind(value, int) and value > 0),
        expected='the intrinsic dimension d of the inputs, a positive integer, or "estimate"',
    )
    return InputsConfig(
        file=file,
        key=reader.get("inputs", "key", str, None),
        file_b=file_b,
        key_b=reader.get("inputs", "key_b", str, None),
        sampler=sampler,
        low=low,
        high=high,
        center=center,
        radius=radius,
        n_samples=n_samples,
        dimension=None if dimension == "estimate" else dimension,
        breakdown_path=reader.file("inputs", "breakdown_path", suffixes=ARRAY_SUFFIXES),
        breakdown_key=reader.get("inputs", "breakdown_key", str, None),
    )


def _read_neighbourhoods(reader):
    kind = reader.choice("neighbourhoods", "kind", NEIGHBOURHOOD_KINDS, "jacobian")
    radius = reader.get("neighbourhoods", "radius", float, None, check=_positive, expected="a positive number (input units)")
    scale = reader.get("neighbourhoods", "scale", float, None, check=_positive, expected="a positive number (input units)")
    window = reader.get("neighbourhoods", "window", int, None, check=lambda value: value >= 2, expected="an integer >= 2")
    if kind == "ball" and radius is None and "radius" not in reader.section("neighbourhoods"):
        reader.problem("[neighbourhoods] radius", 'missing; kind = "ball" needs the ball radius in input units.')
    if kind == "burst" and scale is None and "scale" not in reader.section("neighbourhoods"):
        reader.problem("[neighbourhoods] scale", 'missing; kind = "burst" needs the standard deviation in input units.')
    if kind == "sequence" and window is None and "window" not in reader.section("neighbourhoods"):
        reader.problem("[neighbourhoods] window", 'missing; kind = "sequence" needs the number of consecutive samples a window.')
    return NeighbourhoodConfig(
        kind=kind,
        radius=radius,
        scale=scale,
        points=reader.get("neighbourhoods", "points", int, 64, check=lambda value: value >= 2, expected="an integer >= 2"),
        window=window,
        centres=reader.get("neighbourhoods", "centres", int, 1000, check=lambda value: value >= 10, expected="an integer >= 10"),
    )


def _read_correspondence(reader):
    kind = reader.choice("correspondence", "kind", CORRESPONDENCE_KINDS, "same-inputs")
    index_file = reader.file("correspondence", "index_file", suffixes=ARRAY_SUFFIXES)
    domain_map = reader.get(
        "correspondence", "domain_map", str, None, check=lambda value: ":" in value,
        expected='"package.module:function" or "file.py:function", a torch function from model A\'s inputs to model B\'s',
    )
    table = reader.section("correspondence")
    if kind == "index-file" and "index_file" not in table:
        reader.problem("[correspondence] index_file", 'missing; kind = "index-file" needs an (p, 2) integer array of row pairs.')
    if kind == "domain-map" and "domain_map" not in table:
        reader.problem("[correspondence] domain_map", 'missing; kind = "domain-map" needs domain_map = "package.module:function".')
    if kind != "domain-map" and "domain_map" in table:
        reader.problem("[correspondence] domain_map", f'is used only with kind = "domain-map", but kind = "{kind}"; remove one of them.')
    pairs = reader.get("correspondence", "pairs", int, 10, check=lambda value: value >= 1, expected="a positive integer")
    held_out = reader.get("correspondence", "held_out", int, 200, check=lambda value: value >= 2, expected="an integer >= 2")
    return CorrespondenceConfig(kind=kind, index_file=index_file, domain_map=domain_map, pairs=pairs, held_out=held_out)


def _read_diffusion_map(reader):
    settings = {}
    for key, value in reader.section("diffusion_map").items():
        if key not in DIFFUSION_MAP_KEYS:
            continue  # reported by _check_keys
        valid = {
            "epsilon": value == "median" or (_is_kind(value, float) and math.isfinite(value) and value > 0),
            "remove_harmonics": isinstance(value, bool),
            "harmonic_threshold": _is_kind(value, float) and 0 <= value <= 1,
            "eigen_solver": value in ("auto", "dense", "arpack", "chebyshev"),
            "eigen_tol": _is_kind(value, float) and math.isfinite(value) and value >= 0,
            "interpolation": value in ("nearest", "linear", "rbf"),
            "degeneracy_tol": _is_kind(value, float) and value >= 0,
            "proper_rotation": isinstance(value, bool),
            "n_neighbors": _is_kind(value, int) and value >= 2,
        }.get(key, _is_kind(value, int) and value >= 1)
        if not valid:
            reader.problem(f"[diffusion_map] {key}", f"{value!r} is invalid; expected {DIFFUSION_MAP_KEYS[key]}.")
            continue
        settings[key] = value
    return settings


def _check_sizes(reader, neighbourhoods, correspondence, inputs):
    if correspondence.pairs > neighbourhoods.centres:
        reader.problem(
            "[correspondence] pairs",
            f"{correspondence.pairs} pairs exceed [neighbourhoods] centres = {neighbourhoods.centres}; "
            "the aligned pairs are among the centres, so lower pairs or raise centres.",
        )
    if inputs.n_samples is not None and neighbourhoods.centres + correspondence.held_out > inputs.n_samples:
        reader.problem(
            "[inputs] n_samples",
            f"{inputs.n_samples} inputs are fewer than centres + held_out = "
            f"{neighbourhoods.centres} + {correspondence.held_out}; raise n_samples.",
        )
    if inputs.sampler is not None and correspondence.kind == "index-file":
        reader.problem("[inputs] sampler", 'kind = "index-file" needs input files, not a sampler; use file and file_b.')
    if inputs.sampler is not None and neighbourhoods.kind == "sequence":
        reader.problem("[neighbourhoods] kind", '"sequence" needs inputs ordered along a path in [inputs] file, not a sampler.')
    if neighbourhoods.kind == "sequence" and correspondence.kind == "index-file":
        reader.problem("[neighbourhoods] kind", '"sequence" works with same inputs or a domain map, not an index file.')


def load_config(path):
    """Read and validate a compare configuration.

    Parameters
    ----------
    path : path-like
        The TOML file.

    Returns
    -------
    CompareConfig

    Raises
    ------
    ConfigError
        The file is missing, is not valid TOML, or has invalid settings; the message lists every
        problem with its key.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found; netequiv init writes an example."])
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: invalid TOML ({error}); fix the syntax at that position."]) from None

    reader = _Reader(path, data)
    _check_keys(reader)
    seed = _read_seed(reader)
    model_a = _read_model(reader, "model_a") if "model_a" in data else None
    model_b = _read_model(reader, "model_b") if "model_b" in data else None
    correspondence = _read_correspondence(reader)
    inputs = _read_inputs(reader, correspondence.kind) if "inputs" in data else None
    neighbourhoods = _read_neighbourhoods(reader)
    diffusion_map = _read_diffusion_map(reader)
    test = _read_test(reader)
    # Sizes are compared only when each one is valid, so that one bad value is reported once.
    if inputs is not None and not reader.problems:
        _check_sizes(reader, neighbourhoods, correspondence, inputs)
        _check_held_out(reader, correspondence, test)
    if reader.problems:
        raise ConfigError(reader.problems)
    return CompareConfig(
        path=path,
        model_a=model_a,
        model_b=model_b,
        inputs=inputs,
        neighbourhoods=neighbourhoods,
        correspondence=correspondence,
        diffusion_map=diffusion_map,
        test=test,
        seed=seed,
    )


def _read_seed(reader):
    seed = reader.data.get("seed", 0)
    if not _is_kind(seed, int) or seed < 0:
        reader.problem("seed", f"{seed!r} is invalid; expected a non-negative integer at the top of the file.")
        return 0
    return seed


def _read_test(reader):
    test = dict(TEST_DEFAULTS)
    test["alpha"] = float(reader.get("test", "alpha", float, test["alpha"], check=lambda value: 0 < value < 1, expected="a significance level in (0, 1)"))
    test["n_permutations"] = reader.get("test", "n_permutations", int, test["n_permutations"], check=lambda value: value >= 19, expected="an integer >= 19")
    test["n_subsamples"] = reader.get("test", "n_subsamples", int, test["n_subsamples"], check=lambda value: value >= 2, expected="an integer >= 2")
    for key in ("spectrum_tol", "residual_tol", "error_tol"):
        test[key] = float(reader.get("test", key, float, test[key], check=_positive, expected="a positive number (relative)"))
    return test


def _check_held_out(reader, correspondence, test):
    """Record settings under which the permutation tests can never reach alpha."""
    alpha = test["alpha"]
    # The permutation p-value is (1 + #{null <= observed}) / (1 + n_permutations), at least
    # 1 / (1 + n_permutations).
    if 1.0 / (1 + test["n_permutations"]) > alpha:
        needed = math.ceil(1.0 / alpha - 1.0)
        reader.problem(
            "[test] n_permutations",
            f"{test['n_permutations']} permutations give p-values of at least "
            f"1/{test['n_permutations'] + 1}, above alpha = {alpha}, so no network pair could pass; "
            f"use at least {needed}.",
        )
    # h held-out pairs have h! orderings, so a shuffled pairing matches by chance with
    # probability 1/h!; the equivalence test needs that to be at most alpha, and h >= 3.
    needed = 3
    while 1.0 / math.factorial(needed) > alpha:
        needed += 1
    if correspondence.held_out < needed:
        reader.problem(
            "[correspondence] held_out",
            f"{correspondence.held_out} held-out pairs cannot give a permutation p-value of "
            f"alpha = {alpha} or less; hold out at least {needed} (100 or more for stable errors).",
        )
