"""aelab: autoencoders for tables and images, from the command line and Python."""

import os

# OpenMP threads that spin while waiting make small models crawl when other
# processes share the cores: a 5-epoch digits fit took 25-47 s with the default
# policy and 7-8 s with PASSIVE (2 cores, load average 4, torch 2.13 CPU). This
# only takes effect if torch is imported after aelab, and a value set by the user
# wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__
from .detection import AnomalyDetector, Detection, drift_test
from .errors import (
    AelabError,
    CompileFailedError,
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
    "CompileFailedError",
    "InvalidDataError",
    "InvalidParameterError",
    "ModelFormatError",
    "NonFiniteLossError",
    "NotFittedError",
    "drift_test",
    "__version__",
]
