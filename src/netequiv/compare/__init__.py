"""``netequiv compare``: test two of the user's own networks from a TOML configuration.

:func:`load_config` validates the file, :func:`prepare` checks it against the models, and
:func:`run_compare` computes the transformation, its verdict and the report.
"""

from .config import CompareConfig, ConfigError, load_config
from .pipeline import CompareFailedError, OutputExistsError, prepare, run_compare
from .template import EXAMPLE_CONFIG

__all__ = [
    "EXAMPLE_CONFIG",
    "CompareConfig",
    "CompareFailedError",
    "ConfigError",
    "OutputExistsError",
    "load_config",
    "prepare",
    "run_compare",
]
