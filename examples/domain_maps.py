"""Domain maps for the example configs: torch functions from model A's inputs to model B's.

A domain map R takes a batch of model A's inputs (a tensor, batch first) and returns the batch of
model B's inputs that observe the same points, with torch operations so that Jacobians can be
taken through it.
"""

import torch

from netequiv.experiments.vector_fields import coordinates


def vector_fields(x):
    """Map x to s(x), the coordinates in which network 2 of the vector-field experiment learned the field."""
    return coordinates(x, xp=torch)
