"""BT.601 full-range YCbCr conversion (the JPEG one) on (N, C, H, W) tensors.

Y uses the same weights as :data:`aelab.data.images.LUMA`, which are Pillow's
RGB to L weights, so the Y channel is exactly what Pillow calls the gray image.
Cb and Cr are centred on 0, in [-0.5, 0.5].
"""

from __future__ import annotations

import torch

KR, KG, KB = 0.299, 0.587, 0.114


def rgb_to_ycbcr(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split RGB (N, 3, H, W) into Y (N, 1, H, W) and CbCr (N, 2, H, W)."""
    red, green, blue = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    luma = KR * red + KG * green + KB * blue
    cb = (blue - luma) / (2 * (1 - KB))
    cr = (red - luma) / (2 * (1 - KR))
    return luma, torch.cat([cb, cr], 1)


def ycbcr_to_rgb(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Combine Y and CbCr into RGB, keeping Y exactly and every value in [0, 1].

    Where the colour falls outside the RGB cube, the chroma is scaled toward gray
    (which has R = G = B = Y) until it fits, instead of clipping each channel,
    because clipping would change the luma. ``luma`` must be in [0, 1].
    """
    red = luma + 2 * (1 - KR) * chroma[:, 1:2]
    blue = luma + 2 * (1 - KB) * chroma[:, 0:1]
    green = (luma - KR * red - KB * blue) / KG
    offset = torch.cat([red, green, blue], 1) - luma
    # The largest t in [0, 1] with luma + t * offset inside [0, 1] per pixel.
    room_up = (1 - luma) / offset.clamp(min=1e-12)
    room_down = luma / (-offset).clamp(min=1e-12)
    room = torch.where(offset > 0, room_up, torch.where(offset < 0, room_down, 1.0))
    scale = room.amin(dim=1, keepdim=True).clamp(max=1.0)
    return (luma + scale * offset).clamp(0, 1)
