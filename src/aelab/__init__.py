"""aelab: autoencoders for tables and images, from the command line and Python."""

from ._version import __version__
from .errors import (
    AelabError,
    InvalidDataError,
    InvalidParameterError,
    ModelFormatError,
    NonFiniteLossError,
    NotFittedError,
)
from .estimator import AutoEncoder

__all__ = [
    "AelabError",
    "AutoEncoder",
    "InvalidDataError",
    "InvalidParameterError",
    "ModelFormatError",
    "NonFiniteLossError",
    "NotFittedError",
    "__version__",
]
