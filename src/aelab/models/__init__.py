"""Autoencoder architectures, and a registry from kind names to classes."""

from __future__ import annotations

from typing import Any

from ..errors import ModelFormatError
from .base import AEOutput, Autoencoder, GaussianBottleneck, LinearBottleneck, Posterior
from .conv import ConvAutoencoder
from .dense import DenseAutoencoder

MODELS: dict[str, type[Autoencoder]] = {
    DenseAutoencoder.kind: DenseAutoencoder,
    ConvAutoencoder.kind: ConvAutoencoder,
}


def build_model(config: dict[str, Any]) -> Autoencoder:
    """Build an untrained model from the dict that ``Autoencoder.to_config`` returns."""
    options = dict(config)
    kind = options.pop("kind", None)
    if kind not in MODELS:
        raise ModelFormatError(
            f"unknown model kind {kind!r}; this aelab knows {sorted(MODELS)}"
        )
    try:
        return MODELS[kind](**options)
    except TypeError as err:
        raise ModelFormatError(f"invalid {kind} model config {options}: {err}") from err


__all__ = [
    "AEOutput",
    "Autoencoder",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "GaussianBottleneck",
    "LinearBottleneck",
    "MODELS",
    "Posterior",
    "build_model",
]
