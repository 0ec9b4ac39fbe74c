"""The autoencoder base class, its output record and its bottlenecks.

Shape letters used in comments: B batch, F features, C channels, H height, W width,
D latent dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

OutputActivation = Literal["identity", "sigmoid"]


class Posterior:
    """A diagonal Gaussian q(z | x), as produced by a variational bottleneck.

    Args:
        mean: Posterior means, shape (B, D).
        logvar: Posterior log-variances, shape (B, D). Clamped to [-30, 20] so that
            exp() never overflows in float32.
    """

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw z = mean + std * eps with the reparameterisation trick."""
        eps = torch.randn(
            self.mean.shape,
            generator=generator,
            device=self.mean.device,
            dtype=self.mean.dtype,
        )
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """Compute KL(q(z|x) || N(0, I)) per sample in nats, shape (B,).

        Closed form from Kingma and Welling (2014), appendix B:
        -0.5 * sum(1 + logvar - mean^2 - exp(logvar)).
        """
        terms = self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar
        return 0.5 * terms.sum(dim=1)


class LinearBottleneck(nn.Module):
    """A linear map from encoder features to a deterministic code z."""

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(in_features, latent_dim)

    def forward(
        self,
        h: Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Posterior | None]:
        return self.project(h), None


class GaussianBottleneck(nn.Module):
    """A linear map to the mean and log-variance of a Gaussian posterior."""

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(in_features, 2 * latent_dim)

    def forward(
        self,
        h: Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Posterior]:
        mean, logvar = self.project(h).chunk(2, dim=1)  # (B, 2D) -> 2 x (B, D)
        posterior = Posterior(mean, logvar)
        z = posterior.sample(generator) if sample else posterior.mode()
        return z, posterior


@dataclass(frozen=True)
class AEOutput:
    """The result of one forward pass.

    Attributes:
        x_hat: Reconstruction, the same shape as the input.
        logits: Decoder output before the output activation; BCE is computed on it.
        z: The code that was decoded, shape (B, D): a sample during variational
            training, the posterior mean otherwise.
        posterior: The Gaussian posterior for variational models, else None.
    """

    x_hat: Tensor
    logits: Tensor
    z: Tensor
    posterior: Posterior | None


class Autoencoder(nn.Module):
    """An encoder, a bottleneck and a decoder, with the verbs every model shares.

    Subclasses build the three parts and implement :meth:`to_config`, whose output
    rebuilds the same architecture through :func:`aelab.models.build_model`.
    """

    kind: str = ""

    def __init__(
        self,
        encoder: nn.Module,
        bottleneck: LinearBottleneck | GaussianBottleneck,
        decoder: nn.Module,
        latent_dim: int,
        output_activation: OutputActivation,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.bottleneck = bottleneck
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.output_activation = output_activation

    @property
    def variational(self) -> bool:
        return isinstance(self.bottleneck, GaussianBottleneck)

    def encode(self, x: Tensor) -> Tensor:
        """Map inputs to their codes, shape (B, D); the posterior mean for a VAE."""
        z, _ = self.bottleneck(self.encoder(x))
        return z

    def posterior(self, x: Tensor) -> Posterior:
        """Return q(z | x) for a variational model."""
        if not self.variational:
            raise TypeError("posterior() needs a variational model")
        _, posterior = self.bottleneck(self.encoder(x))
        return posterior

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        """Map codes of shape (B, D) back to the input space."""
        return self.activate(self.decoder(z))

    def activate(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.output_activation == "sigmoid" else logits

    def forward(
        self, x: Tensor, *, generator: torch.Generator | None = None
    ) -> AEOutput:
        """Encode and decode x; variational models sample z while training."""
        sample = self.training and self.variational
        z, posterior = self.bottleneck(
            self.encoder(x), sample=sample, generator=generator
        )
        logits = self.decoder(z)
        return AEOutput(self.activate(logits), logits, z, posterior)

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError


def make_bottleneck(
    in_features: int, latent_dim: int, variational: bool
) -> LinearBottleneck | GaussianBottleneck:
    if variational:
        return GaussianBottleneck(in_features, latent_dim)
    return LinearBottleneck(in_features, latent_dim)
