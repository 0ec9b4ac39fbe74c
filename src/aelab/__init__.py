"""aelab: autoencoders for tables and images, from the command line and Python."""

from ._version import __version__
from .detection import AnomalyDetector, Detection, drift_test
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
    "AnomalyDetector",
    "Detection",
    "AutoEncoder",
    "InvalidDataError",
    "InvalidParameterError",
    "ModelFormatError",
    "NonFiniteLossError",
    "NotFittedError",
    "drift_test",
    "__version__",
]
