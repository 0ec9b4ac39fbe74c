"""Tiled inference: run a fully convolutional network on overlapping tiles.

Large images are cut into square tiles that overlap by ``overlap`` pixels. Each
tile is run on its own and the outputs are blended with weights that are 0 in
the outer quarter of the overlap next to an inner tile edge, rise linearly
across the middle half, and are 1 elsewhere. Outputs near a tile edge, where
the network saw padding instead of the neighbouring pixels, therefore never
reach the result, and adjacent tiles hand over smoothly, so no seams show.
Memory is bounded by one tile's activations plus the output image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` pixels.

    Neighbouring tiles overlap by at least ``overlap`` pixels. Every start is a
    multiple of ``multiple``, so strided layers sample every tile on the same
    grid as the whole image. The last tile may therefore run past the end.
    """
    if length <= tile:
        return [0]
    stride = max((tile - overlap) // multiple * multiple, multiple)
    last = -(-(length - tile) // multiple) * multiple
    starts = list(range(0, last, stride))
    return starts + [last]


def _edge_ramp(
    size: int, overlap: int, ramp_start: bool, ramp_end: bool
) -> torch.Tensor:
    """Blending weights along one axis of a tile (see the module docstring)."""
    distance = torch.arange(size, dtype=torch.float32)
    weights = torch.ones(size)
    if overlap == 0:
        return weights
    width = overlap / 2
    if ramp_start:
        weights = torch.minimum(weights, ((distance - overlap / 4) / width).clamp(0, 1))
    if ramp_end:
        flipped = size - 1 - distance
        weights = torch.minimum(weights, ((flipped - overlap / 4) / width).clamp(0, 1))
    return weights


def pad_to_multiple(
    image: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad (N, C, H, W) at the bottom and right to sides divisible by
    ``multiple``; return the padded tensor and the original height and width."""
    height, width = image.shape[2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
        image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    return image, height, width


def run_tiled(
    function: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    out_channels: int,
    multiple: int,
    tile: int = 512,
    overlap: int = 64,
    progress: bool = False,
    description: str = "tiles",
) -> torch.Tensor:
    """Apply ``function`` to ``image`` (1, C, H, W) tile by tile.

    ``function`` maps (1, C, h, w) to (1, out_channels, h, w) for h and w
    divisible by ``multiple``; tiles are reflect-padded to such sizes and the
    padding is cut off again. An image that fits in one tile together with its
    mirrored border runs whole.
    Returns (1, out_channels, H, W) float32 on the CPU.
    """
    if tile % multiple or tile <= overlap or overlap < 0:
        raise ValueError(
            f"tile {tile} must be a multiple of {multiple} and larger than overlap "
            f"{overlap}"
        )
    # Mirror the image beyond its borders, so that pixels near a border get the
    # same context whether the image runs whole or in tiles.
    border = max(multiple, overlap // 2)
    height, width = image.shape[2:]
    mode = "reflect" if min(height, width) > border else "replicate"
    image = F.pad(image, (border, border, border, border), mode=mode)
    rows = tile_starts(height + 2 * border, tile, overlap, multiple)
    cols = tile_starts(width + 2 * border, tile, overlap, multiple)
    output = torch.zeros((1, out_channels, *image.shape[2:]))
    total = torch.zeros((1, 1, *image.shape[2:]))
    bar = tqdm(
        total=len(rows) * len(cols),
        desc=description,
        unit="tile",
        leave=False,
        disable=not progress,
    )
    for top in rows:
        for left in cols:
            piece = image[:, :, top : top + tile, left : left + tile]
            padded, h, w = pad_to_multiple(piece, multiple)
            result = function(padded)[:, :, :h, :w].float().cpu()
            weight_rows = _edge_ramp(h, overlap, top > 0, top + h < image.shape[2])
            weight_cols = _edge_ramp(w, overlap, left > 0, left + w < image.shape[3])
            weight = weight_rows[:, None] * weight_cols[None, :]
            output[:, :, top : top + h, left : left + w] += result * weight
            total[:, :, top : top + h, left : left + w] += weight
            bar.update()
    bar.close()
    output /= total
    return output[:, :, border : border + height, border : border + width]
