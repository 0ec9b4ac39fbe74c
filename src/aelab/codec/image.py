"""Compress and decompress images with a loaded codec."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..data.images import LUMA, ImageRecord
from ..errors import InvalidDataError, InvalidParameterError
from .container import KIND_IMAGE, CompressedImage, CorruptFileError, open_file
from .entropy import decode_latent, encode_latent
from .store import LoadedCodec


@dataclass
class CompressionResult:
    """A compressed image and how well it will decode."""

    data: bytes
    bits_per_pixel: float
    psnr: float


def compress_image(
    codec: LoadedCodec, record: ImageRecord, quality: int
) -> CompressionResult:
    """Compress one image at ``quality`` (1 = smallest file) into ``.aelc`` bytes.

    Gray images are coded as RGB with equal channels and decoded back to gray.
    An alpha channel is stored losslessly beside the coded colour.
    """
    if not 1 <= quality <= codec.qualities:
        raise InvalidParameterError(
            f"quality must be 1 to {codec.qualities} for this codec, got {quality}"
        )
    pixels = record.pixels
    height, width, channels = pixels.shape
    color = pixels[:, :, :3] if channels >= 3 else pixels[:, :, :1]
    x = torch.from_numpy(np.ascontiguousarray(color)).permute(2, 0, 1)[None]
    x = x.expand(1, 3, height, width).float() if color.shape[2] == 1 else x.float()
    with torch.inference_mode():
        y = codec.model.analysis(x, quality - 1)
        symbols = torch.round(y)[0].to(torch.int32).numpy()
        x_hat = codec.model.synthesis(
            torch.from_numpy(symbols).float()[None], quality - 1, (height, width)
        )
    latent = encode_latent(symbols, codec.tables, quality - 1)
    alpha = b""
    if channels in (2, 4):
        alpha = _pack_alpha(pixels[:, :, -1], record.bit_depth)
    data = CompressedImage(
        model_id=codec.model_id,
        model_hash=codec.model_hash,
        height=height,
        width=width,
        channels=channels,
        bit_depth=record.bit_depth,
        quality=quality,
        latent=latent,
        alpha=alpha,
    ).to_bytes()
    decoded = _to_pixels(x_hat, color.shape[2])
    scale = (1 << record.bit_depth) - 1
    mse = float(np.mean((np.round(decoded * scale) - np.round(color * scale)) ** 2))
    psnr = 10 * math.log10(scale**2 / mse) if mse > 0 else math.inf
    return CompressionResult(data, 8 * len(data) / (height * width), psnr)


def decompress_image(
    codec: LoadedCodec, data: bytes, name: str = "the file"
) -> ImageRecord:
    """Decode ``.aelc`` bytes written by :func:`compress_image` with this codec.

    Raises:
        CorruptFileError: The bytes are truncated, altered, or not an aelab file.
        InvalidDataError: The file was written by another codec.
    """
    file = open_file(data, name, KIND_IMAGE, codec.model_id, codec.model_hash)
    if not 1 <= file.quality <= codec.qualities:
        raise CorruptFileError(f"{name} declares quality {file.quality}")
    shape = (
        codec.model.latent,
        -(-file.height // codec.model.downsampling),
        -(-file.width // codec.model.downsampling),
    )
    try:
        symbols = decode_latent(file.latent, codec.tables, file.quality - 1, shape)
    except InvalidDataError as err:
        message = f"{name} is damaged: {err}; no image was decoded"
        raise CorruptFileError(message) from err
    with torch.inference_mode():
        x_hat = codec.model.synthesis(
            torch.from_numpy(symbols).float()[None],
            file.quality - 1,
            (file.height, file.width),
        )
    color_channels = 1 if file.channels <= 2 else 3
    pixels = _to_pixels(x_hat, color_channels)
    if file.channels in (2, 4):
        alpha = _unpack_alpha(file, name)
        pixels = np.concatenate([pixels, alpha[:, :, None]], axis=2)
    return ImageRecord(pixels=pixels, bit_depth=file.bit_depth)


def _to_pixels(x_hat: torch.Tensor, channels: int) -> np.ndarray:
    rgb = x_hat[0].permute(1, 2, 0).clamp(0, 1).numpy()
    if channels == 1:
        return (rgb @ LUMA)[:, :, None].clip(0, 1).astype(np.float32)
    return rgb.astype(np.float32)


def _pack_alpha(alpha: np.ndarray, bit_depth: int) -> bytes:
    scale = (1 << bit_depth) - 1
    dtype = "<u2" if bit_depth == 16 else np.uint8
    return zlib.compress(np.round(alpha * scale).astype(dtype).tobytes(), 9)


def _unpack_alpha(file: CompressedImage, name: str) -> np.ndarray:
    dtype = np.dtype("<u2") if file.bit_depth == 16 else np.dtype(np.uint8)
    expected = file.height * file.width * dtype.itemsize
    inflater = zlib.decompressobj()
    try:
        # Inflate at most one byte more than expected, so a crafted stream
        # cannot expand into gigabytes before the size check.
        raw = inflater.decompress(file.alpha, expected + 1)
    except zlib.error as err:
        raise CorruptFileError(f"{name} has a damaged alpha channel") from err
    if len(raw) != expected or not inflater.eof:
        raise CorruptFileError(f"{name} has an alpha channel of the wrong size")
    values = np.frombuffer(raw, dtype=dtype).reshape(file.height, file.width)
    return (values / float((1 << file.bit_depth) - 1)).astype(np.float32)
