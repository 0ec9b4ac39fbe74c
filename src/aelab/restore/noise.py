"""Synthetic noise for training denoisers, and a blind noise-level estimate.

All functions work on float tensors in [0, 1] laid out (N, C, H, W). Noise
levels are standard deviations on that scale (sigma 25 on the 0-255 scale is
25 / 255).
"""

from __future__ import annotations

import torch

# median(|x|) / 0.6745 estimates the standard deviation of zero-mean Gaussian x.
MAD_TO_SIGMA = 1 / 0.6745


def estimate_sigma(images: torch.Tensor) -> torch.Tensor:
    """Estimate the Gaussian noise level of each image, shape (N,).

    Uses the median absolute value of the diagonal Haar detail coefficients of
    non-overlapping 2x2 blocks, pooled over the channels (Donoho's estimator).
    Natural image texture adds to those coefficients, so on clean textured images
    the estimate is above zero; it is most accurate for sigma above ~5/255.
    """
    height, width = images.shape[2] // 2 * 2, images.shape[3] // 2 * 2
    if height == 0 or width == 0:
        return torch.zeros(images.shape[0])  # too small to tell noise from detail
    x = images[:, :, :height, :width]
    detail = (
        x[:, :, 0::2, 0::2]
        - x[:, :, 0::2, 1::2]
        - x[:, :, 1::2, 0::2]
        + x[:, :, 1::2, 1::2]
    ) / 2
    return detail.abs().flatten(1).median(dim=1).values * MAD_TO_SIGMA


def add_gaussian(
    images: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Add N(0, sigma^2) noise, with one sigma per image (shape (N,))."""
    noise = torch.randn(images.shape, generator=generator)
    return images + noise * sigma.view(-1, 1, 1, 1)


def add_poisson(
    images: torch.Tensor, peak: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Replace each value x by Poisson(x * peak) / peak, one peak per image."""
    scale = peak.view(-1, 1, 1, 1)
    return torch.poisson(images.clamp(min=0) * scale, generator=generator) / scale


def add_salt_pepper(
    images: torch.Tensor, amount: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Set a share ``amount`` (per image) of the pixels to 0 or 1 in all channels."""
    n, _, height, width = images.shape
    hit = torch.rand((n, 1, height, width), generator=generator)
    hit = hit < amount.view(-1, 1, 1, 1)
    salt = torch.rand((n, 1, height, width), generator=generator) < 0.5
    value = salt.to(images.dtype).expand_as(images)
    return torch.where(hit.expand_as(images), value, images)
