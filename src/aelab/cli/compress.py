"""``aelab compress`` and ``aelab decompress``: learned image compression to files."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..codec.container import KIND_IMAGE, KIND_TABLE, SUFFIX, open_file
from ..codec.image import compress_image, decompress_image
from ..codec.store import load_codec
from ..codec.tables import (
    DEFAULT_TOLERANCE,
    TableModel,
    compress_table,
    decompress_table,
    load_table_model,
)
from ..data.images import is_image_path, read_image, write_image
from ..data.sources import TABLE_EXTENSIONS, load, write_table
from ..errors import InvalidDataError, InvalidParameterError
from ..io_utils import atomic_path, check_output_path
from .common import HelpFormatter, say, verify_image

COMPRESS_HELP = "compress images or tables into small .aelc files"
DECOMPRESS_HELP = "decode .aelc files back to images or tables"
DEFAULT_QUALITY = 3
TABLE_OUTPUTS = (".csv", ".parquet", ".npy")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compress",
        help=COMPRESS_HELP,
        description=COMPRESS_HELP.capitalize() + ". Images (gray, RGB, with "
        "alpha stored losslessly, any size) use the bundled codec unless --model "
        "names one from 'aelab fit --task compress'. Tables (.csv, .parquet, .npy) "
        "need --model, an autoencoder trained on such tables with 'aelab fit', "
        "and come back within --tolerance of every value.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files or folders, or tables"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help=f"folder for the {SUFFIX} files (one {SUFFIX} file for one input)",
    )
    p.add_argument(
        "--model",
        metavar="MODEL",
        help="codec folder (default: bundled), or for tables an aelab table model",
    )
    p.add_argument(
        "--quality",
        type=int,
        help=f"images: 1 (smallest files) to 6 for the bundled codec (highest "
        f"fidelity); default {DEFAULT_QUALITY}",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        help="tables: largest error of any value, in the model's scaled units "
        "(standard deviations for standard scaling), above 0 and below 0.5; "
        f"default {DEFAULT_TOLERANCE}",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing output files"
    )
    p.set_defaults(run=run_compress)

    p = subparsers.add_parser(
        "decompress",
        help=DECOMPRESS_HELP,
        description=DECOMPRESS_HELP.capitalize() + ". Each file names the codec "
        "that wrote it; the bundled codec is used unless --model names another.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="FILE", help=f"{SUFFIX} files or folders"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="folder for the images (one .png file for one input), or for one "
        "table a .csv, .parquet or .npy file",
    )
    p.add_argument(
        "--model",
        metavar="MODEL",
        help="codec folder (default: bundled), or the table model that compressed "
        "the files",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing output images"
    )
    p.set_defaults(run=run_decompress)


def _collect(inputs: list[str], accept, what: str) -> list[Path]:
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found += [p for p in sorted(path.iterdir()) if p.is_file() and accept(p)]
        elif path.is_file():
            found.append(path)
        else:
            raise InvalidParameterError(f"input {text!r} not found")
    if not found:
        raise InvalidDataError(f"no {what} found in {', '.join(inputs)}")
    return found


def _targets(
    sources: list[Path], output: Path, suffix: str, overwrite: bool
) -> list[Path]:
    check_output_path(output)
    if output.suffix and output.suffix.lower() != suffix and not output.is_dir():
        raise InvalidParameterError(
            f"the output {str(output)!r} must be a folder or a {suffix} file"
        )
    single = len(sources) == 1 and output.suffix.lower() == suffix
    if output.suffix.lower() == suffix and not single:
        raise InvalidParameterError(
            f"{len(sources)} inputs cannot go into the single file {str(output)!r}; "
            "give a folder as output"
        )
    targets = [output] if single else [output / (p.stem + suffix) for p in sources]

    seen: dict[str, Path] = {}
    for source, target in zip(sources, targets, strict=True):
        if target.name in seen:
            raise InvalidParameterError(
                f"{str(seen[target.name])!r} and {str(source)!r} would both be "
                f"written to {target.name!r}; rename one or process them separately"
            )
        seen[target.name] = source

    resolved = {p.resolve() for p in sources}
    if any(t.resolve() in resolved for t in targets):
        raise InvalidParameterError(
            "an output would replace an input file; choose another output"
        )
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise InvalidParameterError(
            f"{_count(len(existing), 'output file')} already "
            f"{'exists' if len(existing) == 1 else 'exist'}, such as "
            f"{str(existing[0])!r}; choose another output or pass --overwrite"
        )
    if not single:
        if output.exists() and not output.is_dir():
            raise InvalidParameterError(
                f"the output {str(output)!r} is a file; give a folder for "
                f"{len(sources)} inputs"
            )
        output.mkdir(exist_ok=True)
    return targets


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run_compress(args: argparse.Namespace) -> int:
    tables = [Path(t).suffix.lower() in TABLE_EXTENSIONS for t in args.inputs]
    if any(tables):
        if not all(tables):
            raise InvalidParameterError("compress images and tables in separate calls")
        if args.quality is not None:
            raise InvalidParameterError(
                "--quality is for images; a table's fidelity is set by --tolerance"
            )
        args.tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
        return _compress_tables(args)
    if args.tolerance is not None:
        raise InvalidParameterError(
            "--tolerance is for tables; an image's fidelity is set by --quality"
        )
    args.quality = DEFAULT_QUALITY if args.quality is None else args.quality
    codec = load_codec(args.model)
    if not 1 <= args.quality <= codec.qualities:
        raise InvalidParameterError(
            f"--quality must be 1 to {codec.qualities} for this codec, got "
            f"{args.quality}"
        )
    sources = _collect(args.inputs, is_image_path, "images")
    targets = _targets(sources, Path(args.output), SUFFIX, args.overwrite)
    for source in sources:  # fail on a broken image before writing any output
        verify_image(source)
    pixels = bits = squared = 0.0
    original_bytes = 0
    for source, target in tqdm(
        list(zip(sources, targets, strict=True)),
        disable=not args.progress,
        unit="image",
        desc="compressing",
    ):
        record = read_image(source)
        result = compress_image(codec, record, args.quality)
        with atomic_path(target) as tmp:
            tmp.write_bytes(result.data)
        n = record.pixels.shape[0] * record.pixels.shape[1]
        pixels += n
        bits += 8 * len(result.data)
        squared += n * 10 ** (-result.psnr / 10) if math.isfinite(result.psnr) else 0
        original_bytes += source.stat().st_size
    psnr = -10 * math.log10(squared / pixels) if squared > 0 else math.inf
    say(
        args,
        f"compressed {_count(len(sources), 'image')} at quality {args.quality}: "
        f"{bits / pixels:.3f} bits per pixel, PSNR {psnr:.2f} dB, "
        f"{original_bytes * 8 / bits:.1f}x smaller than the input files; "
        f"wrote {args.output}",
    )
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    sources = _collect(
        args.inputs, lambda p: p.suffix.lower() == SUFFIX, f"{SUFFIX} files"
    )
    kinds = {_kind(source) for source in sources}
    if KIND_TABLE in kinds:
        if len(kinds) > 1:
            raise InvalidParameterError(
                "decompress image files and table files in separate calls"
            )
        return _decompress_tables(args, sources)
    codec = load_codec(args.model)
    output = Path(args.output)
    if output.suffix and not is_image_path(output):
        raise InvalidParameterError(
            f"decompressed images go to a folder or a .png file, not {str(output)!r}"
        )
    suffix = output.suffix.lower() if is_image_path(output) else ".png"
    _check_files(sources, KIND_IMAGE, codec.model_id, codec.model_hash)
    targets = _targets(sources, output, suffix, args.overwrite)
    for source, target in tqdm(
        list(zip(sources, targets, strict=True)),
        disable=not args.progress,
        unit="image",
        desc="decompressing",
    ):
        record = decompress_image(codec, source.read_bytes(), repr(str(source)))
        write_image(target, record)
    say(args, f"decompressed {_count(len(sources), 'image')} into {args.output}")
    return 0


def _check_files(
    sources: list[Path], kind: int, model_id: str, model_hash: bytes
) -> None:
    """Check every file's container, kind and model before any output is written.

    The checksum and lengths catch truncated and altered files, so a damaged file
    in a folder stops the command before the first image or table is written.
    """
    for source in sources:
        open_file(source.read_bytes(), repr(str(source)), kind, model_id, model_hash)


def _kind(path: Path) -> int:
    """Return the kind byte of an .aelc file; image for anything unreadable."""
    with open(path, "rb") as f:
        head = f.read(6)
    return head[5] if len(head) == 6 and head[:4] == b"AELC" else KIND_IMAGE


def _table_model(args: argparse.Namespace) -> TableModel:
    if not args.model:
        raise InvalidParameterError(
            "tables need --model: the autoencoder folder from 'aelab fit TABLE -o "
            "MODEL' (trained on tables like these) that compresses and decodes them"
        )
    return load_table_model(args.model)


def _compress_tables(args: argparse.Namespace) -> int:
    model = _table_model(args)
    sources = [Path(t) for t in args.inputs]
    missing = [s for s in sources if not s.is_file()]
    if missing:
        raise InvalidParameterError(f"input {str(missing[0])!r} not found")
    targets = _targets(sources, Path(args.output), SUFFIX, args.overwrite)
    tables = [load(source) for source in sources]  # read all before writing any
    results = []
    for data, target in tqdm(
        list(zip(tables, targets, strict=True)),
        disable=not args.progress,
        unit="table",
        desc="compressing",
    ):
        result = compress_table(model, data, args.tolerance)
        with atomic_path(target) as tmp:
            tmp.write_bytes(result.data)
        results.append(result)
    original = sum(s.stat().st_size for s in sources)
    written = sum(len(r.data) for r in results)
    say(
        args,
        f"compressed {_count(len(sources), 'table')} with tolerance "
        f"{args.tolerance:g}: largest error {max(r.max_error for r in results):.4g}, "
        f"RMS error {max(r.rms_error for r in results):.4g} (original units), "
        f"{original / written:.1f}x smaller than the input files; wrote "
        f"{args.output}",
    )
    return 0


def _decompress_tables(args: argparse.Namespace, sources: list[Path]) -> int:
    model = _table_model(args)
    output = Path(args.output)
    suffix = output.suffix.lower() if output.suffix else ".csv"
    if suffix not in TABLE_OUTPUTS:
        raise InvalidParameterError(
            f"decompressed tables go to a folder or a {', '.join(TABLE_OUTPUTS)} "
            f"file, not {str(output)!r}"
        )
    _check_files(sources, KIND_TABLE, model.model_id, model.model_hash)
    targets = _targets(sources, output, suffix, args.overwrite)
    for source, target in tqdm(
        list(zip(sources, targets, strict=True)),
        disable=not args.progress,
        unit="table",
        desc="decompressing",
    ):
        table = decompress_table(model, source.read_bytes(), repr(str(source)))
        if isinstance(table, np.ndarray):
            table = pd.DataFrame(
                table, columns=model.estimator.preprocessor_.input_names
            )
        write_table(target, table)
    say(args, f"decompressed {_count(len(sources), 'table')} into {args.output}")
    return 0
