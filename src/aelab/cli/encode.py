"""``aelab encode`` and ``aelab reconstruct``: apply a trained model to data."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import save_images, write_table
from ..data.images import is_image_path
from ..data.sources import OUTPUT_EXTENSIONS
from ..data.stream import TableWriter, should_stream
from ..errors import InvalidParameterError
from ..estimator import AutoEncoder
from ..io_utils import atomic_path, check_output_path
from .common import (
    HelpFormatter,
    Inputs,
    add_model_argument,
    add_stream_option,
    check_not_input,
    inputs_for_model,
    say,
    stream_inputs_for_model,
)

ENCODE_HELP = "write the embedding (code) of every row or image"
RECONSTRUCT_HELP = "encode and decode data, writing the reconstruction"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for name, text, output_help in (
        ("encode", ENCODE_HELP, "table to write: .parquet, .csv or .npy"),
        (
            "reconstruct",
            RECONSTRUCT_HELP,
            "for tables a .parquet, .csv or .npy file; for images a folder (or one "
            "image file for a single image)",
        ),
    ):
        p = subparsers.add_parser(
            name,
            help=text,
            description=text.capitalize() + ".",
            formatter_class=HelpFormatter,
        )
        add_model_argument(p)
        p.add_argument("data", metavar="DATA", help="data path, as for 'aelab fit'")
        p.add_argument("-o", "--output", required=True, metavar="OUT", help=output_help)
        p.add_argument(
            "--id-column",
            metavar="COL",
            help="column copied into the output as the row identifier (default: "
            "the --id-column given to 'aelab fit'; images use their file names)",
        )
        if name == "encode":
            add_stream_option(p)
        if name == "reconstruct":
            p.add_argument(
                "--overwrite",
                action="store_true",
                help="replace images that already exist in the output folder",
            )
        p.set_defaults(run=run_encode if name == "encode" else run_reconstruct)


def _check_table_output(path: Path) -> Path:
    check_output_path(path)
    if path.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise InvalidParameterError(
            f"unsupported output type {path.suffix or '(none)'!r} for {str(path)!r}; "
            f"use {', '.join(OUTPUT_EXTENSIONS)}"
        )
    return path


def _load(args: argparse.Namespace) -> tuple[AutoEncoder, Inputs]:
    estimator = AutoEncoder.load(args.model)
    inputs = inputs_for_model(estimator, args.data, args.progress, args.id_column)
    return estimator, inputs


def _with_ids(frame: pd.DataFrame, inputs: Inputs) -> pd.DataFrame:
    if inputs.ids is not None and inputs.id_name is not None:
        frame.insert(0, inputs.id_name, inputs.ids)
    return frame


def run_encode(args: argparse.Namespace) -> int:
    output = _check_table_output(Path(args.output))
    check_not_input(output, args.data)
    if should_stream(args.data, args.stream):
        return _encode_stream(args, output)
    estimator, inputs = _load(args)
    codes = estimator.transform(inputs.data)
    columns = [f"z{i}" for i in range(codes.shape[1])]
    write_table(output, _with_ids(pd.DataFrame(codes, columns=columns), inputs))
    say(args, f"wrote {len(codes)} embeddings of length {codes.shape[1]} to {output}")
    return 0


def _encode_stream(args: argparse.Namespace, output: Path) -> int:
    """Encode a Parquet table batch by batch, appending to the output."""
    estimator = AutoEncoder.load(args.model)
    dataset, batches = stream_inputs_for_model(estimator, args.data, args.id_column)
    columns = [f"z{i}" for i in range(estimator.model_.latent_dim)]
    with TableWriter(output, n_rows=dataset.n_rows) as writer:
        for inputs in batches:
            codes = estimator.transform(inputs.data)
            writer.write(_with_ids(pd.DataFrame(codes, columns=columns), inputs))
    say(
        args,
        f"wrote {writer.rows_written} embeddings of length {len(columns)} to "
        f"{output}, streamed in batches of {dataset.batch_rows} rows",
    )
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    output = Path(args.output)
    check_output_path(output)
    check_not_input(output, args.data)
    estimator, inputs = _load(args)
    error = estimator.reconstruction_error(inputs.data)
    result = estimator.reconstruct(inputs.data)
    if isinstance(result, list):
        if output.suffix and not is_image_path(output):
            raise InvalidParameterError(
                f"image reconstructions go to a folder or an image file, not "
                f"{str(output)!r}"
            )
        save_images(output, result, overwrite=args.overwrite)
    elif isinstance(result, np.ndarray) and output.suffix.lower() == ".npy":
        with atomic_path(output) as tmp, open(tmp, "wb") as f:
            np.save(f, result)
    else:
        if isinstance(result, np.ndarray):
            result = pd.DataFrame(result.reshape(len(result), -1))
            result.columns = [f"x{i}" for i in range(result.shape[1])]
        result["reconstruction_error"] = error
        write_table(_check_table_output(output), _with_ids(result, inputs))
    say(
        args,
        f"wrote {len(error)} reconstructions to {output}; mean reconstruction "
        f"error {error.mean():.4g} per feature",
    )
    return 0
