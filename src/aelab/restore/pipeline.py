"""Denoise and colorize image records of any size, mode and bit depth.

Gray images are denoised as RGB with the gray value in all three channels, the
way the denoiser was trained on gray crops, and the mean of the three output
channels is kept. Alpha channels pass through unchanged. Results are clipped
to [0, 1], so a bright noisy area saturates at white and never wraps around
to dark when written with 8 or 16 bits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import LUMA, ImageRecord
from ..errors import DataConversionWarning, InvalidParameterError
from .color import ycbcr_to_rgb
from .io import load_restorer
from .noise import estimate_sigma
from .tiling import run_tiled

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64


@dataclass
class Restorer:
    """A loaded denoiser or colorizer with its tiling settings.

    Attributes:
        network: The network, in eval mode.
        task: "denoise" or "colorize".
        config: The model folder's config.json contents.
        tile: Side of the square tiles in pixels (a multiple of ``network.multiple``).
        overlap: Pixels shared by neighbouring tiles.
        device: Where the network runs.
    """

    network: torch.nn.Module
    task: str
    config: dict[str, Any]
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    device: torch.device = torch.device("cpu")

    @classmethod
    def load(
        cls,
        path: str | Path | None,
        task: str,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        device: str = "cpu",
    ) -> Restorer:
        """Load the model folder ``path`` for ``task`` (None: the bundled model)."""
        network, config = load_restorer(None if path is None else Path(path), task)
        multiple = network.multiple
        if tile < 2 * multiple or tile % multiple or not 0 <= overlap < tile // 2:
            raise InvalidParameterError(
                f"invalid tiling: --tile {tile} must be a multiple of {multiple} and "
                f"at least {2 * multiple}, and --overlap {overlap} from 0 to half the "
                "tile; the defaults are 512 and 64"
            )
        resolved = resolve_device(device)
        return cls(network.to(resolved), task, config, tile, overlap, resolved)

    def _run(
        self, image: torch.Tensor, out_channels: int, function: Any, progress: bool
    ) -> torch.Tensor:
        with torch.inference_mode():
            return run_tiled(
                function,
                image,
                out_channels,
                self.network.multiple,
                self.tile,
                self.overlap,
                progress,
                description=self.task,
            )

    def denoise(
        self, record: ImageRecord, sigma: float | None = None, progress: bool = False
    ) -> tuple[ImageRecord, float]:
        """Denoise one image; return the result and the noise level used.

        Args:
            sigma: Noise standard deviation on the 0-255 scale; None estimates it
                from the image (blind denoising).
        """
        color, alpha = split_alpha(record.pixels)
        image = _to_tensor(color)
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        level = float(estimate_sigma(image)[0]) if sigma is None else sigma / 255
        sigma_tensor = torch.tensor([level], device=self.device)

        def function(tile: torch.Tensor) -> torch.Tensor:
            return self.network(tile.to(self.device), sigma_tensor)

        result = self._run(image, 3, function, progress).clamp(0, 1)
        if color.shape[2] == 1:
            result = result.mean(dim=1, keepdim=True)
        pixels = join_alpha(_to_pixels(result), alpha)
        return ImageRecord(pixels, record.bit_depth, record.name), level * 255

    def colorize(self, record: ImageRecord, progress: bool = False) -> ImageRecord:
        """Colorize one image from its luma; the output is RGB (RGBA with alpha).

        The luma of the output equals the input's gray value (or its BT.601
        luma for colour input) up to rounding when written.
        """
        color, alpha = split_alpha(record.pixels)
        luma = color if color.shape[2] == 1 else (color @ LUMA)[:, :, None]
        luma_tensor = _to_tensor(luma)

        def function(tile: torch.Tensor) -> torch.Tensor:
            return self.network(tile.to(self.device))

        chroma = self._run(luma_tensor, 2, function, progress)
        rgb = ycbcr_to_rgb(luma_tensor.clamp(0, 1), chroma)
        pixels = join_alpha(_to_pixels(rgb), alpha)
        bit_depth = record.bit_depth
        if bit_depth == 16:
            warnings.warn(
                f"{record.name!r} is 16-bit; its colorized RGB version is written "
                "with 8 bits per channel because Pillow writes 16-bit images only "
                "in gray",
                DataConversionWarning,
                stacklevel=2,
            )
            bit_depth = 8
        return ImageRecord(pixels, bit_depth, record.name)


def split_alpha(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split (H, W, C) pixels into colour (1 or 3 channels) and alpha (or None)."""
    if pixels.shape[2] in (2, 4):
        return pixels[:, :, :-1], pixels[:, :, -1:]
    return pixels, None


def join_alpha(color: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    return color if alpha is None else np.concatenate([color, alpha], axis=2)


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(
        2, 0, 1
    )[None]


def _to_pixels(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor[0].permute(1, 2, 0).numpy())


def resolve_device(name: str) -> torch.device:
    """Turn auto, cpu, cuda or cuda:N into a device, checking that it exists."""
    # NOTE: only the CPU path has been run; denoising and colorizing on CUDA are
    # untested.
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InvalidParameterError(
            f"invalid --device {name!r}; use auto, cpu, cuda or cuda:N"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(
            f"--device {name!r} needs CUDA, which this torch build cannot use; pass "
            "--device cpu"
        )
    return device
