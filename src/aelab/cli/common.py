"""Helpers shared by subcommands: reading inputs and writing outputs."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..data import ImageRecord, load
from ..data.stream import ParquetDataset
from ..errors import InvalidDataError, InvalidParameterError
from ..estimator import AutoEncoder


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: X)" only where a default exists and the text lacks one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


@dataclass
class Inputs:
    """Data read for a command, with the identifiers to carry into outputs."""

    data: pd.DataFrame | np.ndarray | list[ImageRecord]
    ids: list[Any] | None
    id_name: str | None


def read_inputs(
    path: str,
    progress: bool,
    id_column: str | None = None,
    drop: list[str] | None = None,
) -> Inputs:
    """Load a data path, splitting off the id column and dropping columns."""
    return split_inputs(load(path, progress=progress), path, id_column, drop or [])


def inputs_for_model(
    estimator: AutoEncoder, path: str, progress: bool, id_column: str | None
) -> Inputs:
    """Read data for a trained model, dropping the columns it was trained without.

    The id column defaults to the one given at ``aelab fit`` when the data has it.
    """
    metadata = getattr(estimator, "metadata_", {}) or {}
    raw = load(path, progress=progress)
    columns = [str(c) for c in raw.columns] if isinstance(raw, pd.DataFrame) else []
    if id_column is None and metadata.get("id_column") in columns:
        id_column = metadata["id_column"]
    drop = [c for c in metadata.get("dropped_columns", []) if c in columns]
    return split_inputs(raw, path, id_column, drop)


def stream_inputs_for_model(
    estimator: AutoEncoder, path: str, id_column: str | None
) -> tuple[ParquetDataset, Iterator[Inputs]]:
    """Open a Parquet table for a trained model and yield it in record batches.

    Columns are chosen as :func:`inputs_for_model` chooses them. Returns the
    dataset, for its row count, and an iterator over the batches.
    """
    metadata = getattr(estimator, "metadata_", {}) or {}
    dataset = ParquetDataset(path)
    columns = dataset.all_columns
    if id_column is None and metadata.get("id_column") in columns:
        id_column = metadata["id_column"]
    drop = [c for c in metadata.get("dropped_columns", []) if c in columns]
    batches = (split_inputs(frame, path, id_column, drop) for frame in dataset.frames())
    return dataset, batches


def add_stream_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read a Parquet file or folder in batches and write the output as "
        "they are done, for tables larger than memory (default: stream Parquet "
        "inputs larger than 1 GiB on disk)",
    )


def split_inputs(raw: Any, path: str, id_column: str | None, drop: list[str]) -> Inputs:
    """Split loaded data into the model's input and the identifiers to carry."""
    if isinstance(raw, list):
        return Inputs(raw, [record.name for record in raw], "file")
    if isinstance(raw, np.ndarray):
        if id_column or drop:
            raise InvalidParameterError(
                f"{path!r} is an array without column names, so --id-column and "
                "--drop do not apply; save it as CSV or Parquet to name columns"
            )
        return Inputs(raw, None, None)
    names = [str(c) for c in raw.columns]
    for name in ([id_column] if id_column else []) + drop:
        if name not in names:
            raise InvalidDataError(
                f"column {name!r} not found in {path!r}; its columns are "
                f"{names[:10]}{' ...' if len(names) > 10 else ''}"
            )
    frame = raw.drop(columns=drop)
    ids = frame.pop(id_column).tolist() if id_column else None
    return Inputs(frame, ids, id_column)


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """Parse "HxW" (for example "64x48") into (height, width)."""
    if text is None:
        return None
    height, sep, width = text.lower().partition("x")
    if not (sep and height.isdigit() and width.isdigit()) or "0" in (height, width):
        raise InvalidParameterError(
            f"invalid --image-size {text!r}; expected HEIGHTxWIDTH in pixels, for "
            "example 64x48"
        )
    return int(height), int(width)


def parse_int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise InvalidParameterError(
            f"invalid {option} {text!r}; expected positive integers separated by "
            "commas, for example 256,128"
        )
    return values


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model folder from 'aelab fit'")


def check_not_input(output: Path, data: str) -> None:
    """Raise if an output path is the input file or folder itself."""
    if output.resolve() == Path(data).resolve():
        raise InvalidParameterError(
            f"the output {str(output)!r} is the input data; writing there would "
            "replace your data, so choose another output path"
        )


def say(args: argparse.Namespace, message: str) -> None:
    """Print a one-line summary on stdout unless --quiet."""
    if not args.quiet:
        print(message)


def verify_image(path: Path) -> None:
    """Raise InvalidDataError naming ``path`` if Pillow cannot read the image.

    Commands call it on every input before writing any output, so a broken file
    in a folder leaves no partial results behind.
    """
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidDataError(
            f"cannot read image {str(path)!r} ({err}); re-save or remove the file, "
            "nothing was written"
        ) from err
