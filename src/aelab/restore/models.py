"""Networks for image restoration: a residual U-Net denoiser and a colorizer.

Both are fully convolutional, so they run on any image size; the tiling in
:mod:`aelab.restore.tiling` bounds the memory on large images. Pixels are in
[0, 1] and tensors are laid out (N, C, H, W).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelFormatError


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


def _stage(channels: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(convs):
        layers += [_conv(channels, channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DenoiseUNet(nn.Module):
    """A U-Net with additive skips that predicts the noise and subtracts it.

    The input is the noisy RGB image plus one channel holding the noise level
    (standard deviation on the [0, 1] scale, constant over the image). Each of
    the ``len(widths) - 1`` downsampling steps halves the resolution with a
    strided convolution; each upsampling step uses a transposed convolution and
    adds the encoder features of the same resolution. The network returns
    ``noisy - noise_estimate``, so at initialisation it is close to identity.

    Args:
        widths: Channels per resolution level, full resolution first.
        convs: 3x3 convolutions (with ReLU) per level on each side of the U.
        image_channels: Channels of the images it denoises (3 for RGB; gray
            images are repeated to RGB by the pipeline).
    """

    kind = "denoise-unet"

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 96),
        convs: int = 2,
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.convs = convs
        self.image_channels = image_channels
        self.head = nn.Sequential(
            _conv(image_channels + 1, widths[0]), nn.ReLU(inplace=True)
        )
        self.encoders = nn.ModuleList([_stage(widths[0], convs - 1)])
        self.downs = nn.ModuleList()
        for low, high in zip(widths[:-1], widths[1:], strict=True):
            self.downs.append(nn.Sequential(_conv(low, high, 2), nn.ReLU(inplace=True)))
            self.encoders.append(_stage(high, convs - 1))
        self.bottom = _stage(widths[-1], convs)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for low, high in zip(reversed(widths[:-1]), reversed(widths[1:]), strict=True):
            self.ups.append(nn.ConvTranspose2d(high, low, 2, stride=2))
            self.decoders.append(_stage(low, convs))
        self.tail = _conv(widths[0], image_channels)

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this (the pipeline pads them)."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Denoise ``noisy`` (N, C, H, W) given ``sigma`` (N,), both in [0, 1] units."""
        level = sigma.view(-1, 1, 1, 1).expand(-1, 1, *noisy.shape[2:])
        x = self.encoders[0](self.head(torch.cat([noisy, level.to(noisy)], 1)))
        skips = [x]
        for down, encoder in zip(self.downs, self.encoders[1:], strict=True):
            x = encoder(down(x))
            skips.append(x)
        x = self.bottom(x) + skips.pop()
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            x = decoder(F.relu(up(x)) + skips.pop())
        return noisy - self.tail(x)

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "widths": list(self.widths),
            "convs": self.convs,
            "image_channels": self.image_channels,
        }


class ColorizeNet(nn.Module):
    """Predict the chroma (Cb, Cr) of an image from its luma (Y).

    Strided convolutions bring the luma down to 1/``2**len(widths)`` of its size.
    Transposed convolutions with additive skips bring the features back up to
    1/2 resolution, where the network predicts Cb and Cr (BT.601, centred on 0).
    Those are upsampled bilinearly to the full size. Chroma carries little fine
    detail, so the low resolution costs little and keeps the network cheap.

    Args:
        widths: Channels per resolution level; the first level is already at 1/2
            resolution.
        convs: 3x3 convolutions per level.
    """

    kind = "colorize-net"

    def __init__(self, widths: tuple[int, ...] = (32, 64, 96), convs: int = 2) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.convs = convs
        layers: list[nn.Module] = [_conv(1, widths[0], 2), nn.ReLU(inplace=True)]
        self.encoders = nn.ModuleList(
            [nn.Sequential(*layers, _stage(widths[0], convs - 1))]
        )
        for low, high in zip(widths[:-1], widths[1:], strict=True):
            self.encoders.append(
                nn.Sequential(
                    _conv(low, high, 2), nn.ReLU(inplace=True), _stage(high, convs - 1)
                )
            )
        self.bottom = _stage(widths[-1], convs)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for low, high in zip(reversed(widths[:-1]), reversed(widths[1:]), strict=True):
            self.ups.append(nn.ConvTranspose2d(high, low, 2, stride=2))
            self.decoders.append(_stage(low, convs))
        self.tail = _conv(widths[0], 2)

    @property
    def multiple(self) -> int:
        return 2 ** len(self.widths)

    def forward(self, luma: torch.Tensor) -> torch.Tensor:
        """Return Cb and Cr (N, 2, H, W) in [-0.5, 0.5] for ``luma`` (N, 1, H, W)."""
        x = luma - 0.5
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        x = self.bottom(x) + skips.pop()
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            x = decoder(F.relu(up(x)) + skips.pop())
        chroma = self.tail(x)
        chroma = F.interpolate(
            chroma, size=luma.shape[2:], mode="bilinear", align_corners=False
        )
        return 0.5 * torch.tanh(chroma)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "widths": list(self.widths), "convs": self.convs}


ARCHITECTURES = {cls.kind: cls for cls in (DenoiseUNet, ColorizeNet)}


def build_network(config: dict[str, Any]) -> nn.Module:
    """Build an untrained network from its ``to_config()`` dictionary."""
    params = dict(config)
    kind = params.pop("kind", None)
    if kind not in ARCHITECTURES:
        raise ModelFormatError(
            f"unknown restoration network kind {kind!r}; this aelab knows "
            f"{', '.join(ARCHITECTURES)}. Upgrade aelab or train the model again"
        )
    if "widths" in params:
        params["widths"] = tuple(params["widths"])
    try:
        return ARCHITECTURES[kind](**params)
    except TypeError as err:
        raise ModelFormatError(f"invalid {kind} settings {config!r}: {err}") from err
