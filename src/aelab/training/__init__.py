"""Losses, input corruption, checkpoints and the training loop."""

from .checkpoint import TrainState
from .loop import TrainConfig, Trainer, split_indices
from .losses import LOSSES, element_loss, loss_terms, reconstruction_error
from .noise import NOISE_KINDS, Noise

__all__ = [
    "LOSSES",
    "NOISE_KINDS",
    "Noise",
    "TrainConfig",
    "element_loss",
    "TrainState",
    "Trainer",
    "loss_terms",
    "reconstruction_error",
    "split_indices",
]
