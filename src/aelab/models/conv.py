"""A convolutional autoencoder for images of any height, width and channel count."""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Autoencoder, OutputActivation, make_bottleneck

MAX_CHANNELS = 256


def default_depth(height: int, width: int) -> int:
    """Pick how many times to halve the image: until the longer side is at most 4.

    The result is between 1 and 5, so an 8x8 digit is halved once and a 64x64
    image four times.
    """
    longest = max(height, width)
    return max(1, min(5, math.ceil(math.log2(max(longest, 2) / 4))))


class PadToMultiple(nn.Module):
    """Replicate-pad the bottom and right edges up to a fixed (H, W)."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height = height
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        pad_h = self.height - x.shape[-2]
        pad_w = self.width - x.shape[-1]
        if pad_h == 0 and pad_w == 0:
            return x
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


class CropTo(nn.Module):
    """Crop the bottom and right edges back to the input's (H, W)."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height = height
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        return x[..., : self.height, : self.width]


def _conv(n_in: int, n_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1), nn.SiLU()]


class ConvAutoencoder(Autoencoder):
    """A convolutional encoder and decoder around a vector code.

    The encoder pads the image up to a multiple of ``2**depth``, halves it ``depth``
    times with strided convolutions, and maps the result through a dense layer to
    the code. The decoder mirrors it with nearest-neighbour upsampling and crops
    back, so the reconstruction has exactly the input's shape for any H and W::

        (B, C, H, W) -> pad -> [conv, conv/2] x depth -> dense -> (B, D)
        (B, D) -> dense -> [up x2, conv, conv] x depth -> crop -> (B, C, H, W)

    Args:
        channels: Image channels C (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA).
        height: Image height H in pixels.
        width: Image width W in pixels.
        latent_dim: Size D of the code.
        depth: Number of halvings; defaults to :func:`default_depth`.
        base_channels: Feature maps at full resolution; doubled at each halving
            up to 256.
        hidden_dim: Width of the dense layer between the feature maps and the code.
        variational: Use a Gaussian bottleneck (a VAE) instead of a linear one.
        output_activation: "sigmoid" for pixels in [0, 1], else "identity".
    """

    kind = "conv"

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        latent_dim: int,
        depth: int | None = None,
        base_channels: int = 32,
        hidden_dim: int = 256,
        variational: bool = False,
        output_activation: OutputActivation = "sigmoid",
    ) -> None:
        depth = default_depth(height, width) if depth is None else depth
        multiple = 2**depth
        padded_h = math.ceil(height / multiple) * multiple
        padded_w = math.ceil(width / multiple) * multiple
        widths = [min(base_channels * 2**i, MAX_CHANNELS) for i in range(depth + 1)]
        grid = (widths[-1], padded_h // multiple, padded_w // multiple)
        flat = grid[0] * grid[1] * grid[2]

        down: list[nn.Module] = [PadToMultiple(padded_h, padded_w)]
        down += _conv(channels, widths[0])
        for i in range(depth):
            down += _conv(widths[i], widths[i]) + _conv(widths[i], widths[i + 1], 2)
        down += _conv(widths[-1], widths[-1])
        # (B, C', h, w) -> (B, C' * h * w) -> (B, hidden_dim)
        down += [nn.Flatten(), nn.Linear(flat, hidden_dim), nn.SiLU()]

        up: list[nn.Module] = [nn.Linear(latent_dim, hidden_dim), nn.SiLU()]
        # (B, hidden_dim) -> (B, C' * h * w) -> (B, C', h, w)
        up += [nn.Linear(hidden_dim, flat), nn.SiLU(), nn.Unflatten(1, grid)]
        up += _conv(widths[-1], widths[-1])
        for i in reversed(range(depth)):
            up += [nn.Upsample(scale_factor=2, mode="nearest")]
            up += _conv(widths[i + 1], widths[i]) + _conv(widths[i], widths[i])
        up += [nn.Conv2d(widths[0], channels, 3, padding=1), CropTo(height, width)]

        super().__init__(
            nn.Sequential(*down),
            make_bottleneck(hidden_dim, latent_dim, variational),
            nn.Sequential(*up),
            latent_dim,
            output_activation,
        )
        self.channels = channels
        self.height = height
        self.width = width
        self.depth = depth
        self.base_channels = base_channels
        self.hidden_dim = hidden_dim

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "latent_dim": self.latent_dim,
            "depth": self.depth,
            "base_channels": self.base_channels,
            "hidden_dim": self.hidden_dim,
            "variational": self.variational,
            "output_activation": self.output_activation,
        }
