"""Data layer: reading files, and the preprocessing that models store."""

from __future__ import annotations

from typing import Any

from ..errors import ModelFormatError
from .images import ImagePreprocessor, ImageRecord, read_image, save_images, write_image
from .sources import load, write_table
from .tables import TablePreprocessor

Preprocessor = TablePreprocessor | ImagePreprocessor


def preprocessor_from_config(config: dict[str, Any]) -> Preprocessor:
    kind = config.get("kind")
    if kind == TablePreprocessor.kind:
        return TablePreprocessor.from_config(config)
    if kind == ImagePreprocessor.kind:
        return ImagePreprocessor.from_config(config)
    raise ModelFormatError(f"unknown preprocessing kind {kind!r} in the model config")


__all__ = [
    "ImagePreprocessor",
    "ImageRecord",
    "Preprocessor",
    "TablePreprocessor",
    "load",
    "preprocessor_from_config",
    "read_image",
    "save_images",
    "write_image",
    "write_table",
]
