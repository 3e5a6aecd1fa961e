"""netequiv: test whether two trained networks learned the same thing, and map one to the other.

The numeric core (this package without :mod:`netequiv.torch`) needs numpy, scipy and
scikit-learn only and works on plain arrays of activations.
"""

from .diffusion_maps import MahalanobisDiffusionMap

__all__ = ["MahalanobisDiffusionMap"]
__version__ = "0.1.0"


def __getattr__(name):
    # NetworkTransformation is imported on first use, so that a partial install still imports.
    if name == "NetworkTransformation":
        from .transformation import NetworkTransformation

        return NetworkTransformation
    raise AttributeError(f"module 'netequiv' has no attribute {name!r}")
