"""Anomaly detection and drift tests built on the autoencoder estimator."""

from .detector import AnomalyDetector, Detection, ThresholdNotSetError
from .drift import DriftResult, drift_test

__all__ = [
    "AnomalyDetector",
    "Detection",
    "DriftResult",
    "ThresholdNotSetError",
    "drift_test",
]
