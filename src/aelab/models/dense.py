"""A fully connected autoencoder for vectors and table rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from .base import Autoencoder, OutputActivation, make_bottleneck


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.SiLU()]
    return nn.Sequential(*layers)


class DenseAutoencoder(Autoencoder):
    """An MLP autoencoder: F -> hidden_dims -> D -> reversed(hidden_dims) -> F.

    Args:
        n_features: Width F of each input row after preprocessing.
        latent_dim: Size D of the code.
        hidden_dims: Widths of the encoder's hidden layers; the decoder mirrors them.
        variational: Use a Gaussian bottleneck (a VAE) instead of a linear one.
        output_activation: "sigmoid" for targets in [0, 1], else "identity".
    """

    kind = "dense"

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        hidden_dims: Sequence[int] = (256, 128),
        variational: bool = False,
        output_activation: OutputActivation = "identity",
    ) -> None:
        hidden = [int(h) for h in hidden_dims]
        encoder = _mlp([n_features, *hidden])
        bottleneck_in = hidden[-1] if hidden else n_features
        decoder = nn.Sequential(
            _mlp([latent_dim, *reversed(hidden)]),
            nn.Linear(hidden[0] if hidden else latent_dim, n_features),
        )
        super().__init__(
            encoder,
            make_bottleneck(bottleneck_in, latent_dim, variational),
            decoder,
            latent_dim,
            output_activation,
        )
        self.n_features = n_features
        self.hidden_dims = hidden

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_features": self.n_features,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
            "variational": self.variational,
            "output_activation": self.output_activation,
        }
