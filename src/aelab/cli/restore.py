"""``aelab denoise`` and ``aelab colorize``: restore photos with a trained model.

Without ``--model`` both use the small models bundled with aelab. Inputs are
image files or folders of images; each result keeps its input's size, alpha
channel and bit depth (colorized gray images become RGB).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.images import (
    ImageRecord,
    convert_channels,
    is_image_path,
    list_images,
    read_image,
    write_image,
)
from ..errors import InvalidDataError, InvalidParameterError
from ..io_utils import check_output_path
from ..restore.pipeline import DEFAULT_OVERLAP, DEFAULT_TILE, Restorer
from .common import HelpFormatter, say, verify_image

DENOISE_HELP = "remove noise from photos (Gaussian, Poisson, salt and pepper)"
COLORIZE_HELP = "add colour to gray photos, keeping their luminance"
SUFFIX = {"denoise": "-denoised", "colorize": "-colorized"}
COMPARE_GAP = 8  # white pixels between the two halves of a --compare image


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for name, text in (("denoise", DENOISE_HELP), ("colorize", COLORIZE_HELP)):
        p = subparsers.add_parser(
            name,
            help=text,
            description=text[0].upper()
            + text[1:]
            + ". Uses the model bundled with aelab unless --model is given.",
            formatter_class=HelpFormatter,
        )
        p.add_argument(
            "inputs", nargs="+", metavar="IN", help="image files or folders of images"
        )
        p.add_argument(
            "-o",
            "--output",
            metavar="OUT",
            help="folder for the results, or an image file for a single input "
            f"(default: beside each input, named NAME{SUFFIX[name]}.EXT)",
        )
        p.add_argument(
            "--model",
            metavar="MODEL",
            help=f"model folder from 'aelab fit --task {name}' (default: the "
            "bundled model)",
        )
        if name == "denoise":
            p.add_argument(
                "--sigma",
                default="auto",
                metavar="auto|S",
                help="noise standard deviation on the 0-255 scale; auto estimates "
                "it per image. A larger value smooths more",
            )
        p.add_argument(
            "--compare",
            action="store_true",
            help="also write NAME-compare.png with the input and the result side "
            "by side",
        )
        p.add_argument(
            "--tile",
            type=int,
            default=DEFAULT_TILE,
            help="side of the square tiles in pixels; lower it to save memory",
        )
        p.add_argument(
            "--overlap",
            type=int,
            default=DEFAULT_OVERLAP,
            help="pixels shared by neighbouring tiles, blended to avoid seams",
        )
        p.add_argument(
            "--device", default="auto", help="auto (CUDA when available), cpu or cuda"
        )
        p.add_argument(
            "--overwrite", action="store_true", help="replace existing output files"
        )
        p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    task = args.command
    sigma = _parse_sigma(args.sigma) if task == "denoise" else None
    inputs = collect_inputs(args.inputs)
    targets = output_paths(inputs, args.output, SUFFIX[task])
    compares = [_compare_path(t) for t in targets] if args.compare else []
    _check_outputs(inputs, targets + compares, args.overwrite)
    for path in inputs:  # fail on a broken image before writing any result
        verify_image(path)
    restorer = Restorer.load(args.model, task, args.tile, args.overlap, args.device)
    levels = []
    bar = tqdm(inputs, desc=task, unit="image", disable=not args.progress)
    for index, path in enumerate(bar):
        record = read_image(path)
        if task == "denoise":
            result, level = restorer.denoise(record, sigma, args.progress)
            levels.append(level)
        else:
            result = restorer.colorize(record, args.progress)
        write_image(targets[index], result)
        if args.compare:
            write_image(compares[index], side_by_side(record, result))
    where = f"to {args.output}" if args.output else "beside the inputs"
    detail = ""
    if levels:
        detail = f" (noise sigma {min(levels):.1f} to {max(levels):.1f} on 0-255)"
    verb = "denoised" if task == "denoise" else "colorized"
    count = f"{len(inputs)} image{'s' if len(inputs) > 1 else ''}"
    say(args, f"{verb} {count}{detail}; wrote the results {where}")
    return 0


def _parse_sigma(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 255:
        raise InvalidParameterError(
            f"invalid --sigma {text!r}; expected auto or a number from 0 to 255 "
            "(the noise standard deviation on the 0-255 scale)"
        )
    return value


OUTPUT_MARKERS = ("-denoised", "-colorized", "-compare")


def collect_inputs(items: list[str]) -> list[Path]:
    """Expand files and folders into a list of image files."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            # Results written beside earlier inputs are not inputs of a rerun.
            paths += [
                p for p in list_images(path) if not p.stem.endswith(OUTPUT_MARKERS)
            ]
        elif path.is_file():
            paths.append(path)
        else:
            raise InvalidDataError(
                f"input {item!r} not found; pass image files or folders"
            )
    return paths


def output_paths(inputs: list[Path], output: str | None, suffix: str) -> list[Path]:
    """Return each result's path: OUT, OUT/NAME or NAME{suffix}.EXT beside it."""
    if output is None:
        return [p.with_name(p.stem + suffix + p.suffix) for p in inputs]
    target = check_output_path(output)
    if is_image_path(target) and not target.is_dir():
        if len(inputs) != 1:
            raise InvalidParameterError(
                f"{len(inputs)} images cannot go into the single file {output!r}; "
                "give a folder as output"
            )
        return [target]
    paths = [target / p.name for p in inputs]
    names = [p.name for p in paths]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidParameterError(
            f"several inputs are named {repeated[0]!r}, so their results would "
            "overwrite each other in the output folder; process them separately"
        )
    return paths


def _compare_path(target: Path) -> Path:
    return target.with_name(target.stem + "-compare.png")


def _check_outputs(inputs: list[Path], outputs: list[Path], overwrite: bool) -> None:
    resolved_inputs = {p.resolve() for p in inputs}
    for path in outputs:
        if path.resolve() in resolved_inputs:
            raise InvalidParameterError(
                f"the output {str(path)!r} is one of the inputs; writing there would "
                "replace it, so choose another output"
            )
    existing = [p for p in outputs if p.exists()]
    if existing and not overwrite:
        raise InvalidParameterError(
            f"{len(existing)} output files already exist, such as "
            f"{str(existing[0])!r}; choose another output or pass --overwrite"
        )
    for path in outputs:
        if not path.parent.exists():
            path.parent.mkdir(parents=True)


def side_by_side(before: ImageRecord, after: ImageRecord) -> ImageRecord:
    """Put two images of one size next to each other as an 8-bit RGB(A) image."""
    channels = 4 if before.channels in (2, 4) or after.channels in (2, 4) else 3
    left = convert_channels(before.pixels, channels)
    right = convert_channels(after.pixels, channels)
    gap = np.ones((left.shape[0], COMPARE_GAP, channels), dtype=np.float32)
    pixels = np.concatenate([left, gap, right], axis=1)
    return ImageRecord(pixels, 8, Path(after.name).stem + "-compare.png")
