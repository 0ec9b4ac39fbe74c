"""``aelab sample``: draw new data from a variational model."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ..data import write_table
from ..data.images import is_image_path, scale_pixels
from ..errors import InvalidParameterError
from ..estimator import AutoEncoder
from ..io_utils import check_output_path
from ..plots import save_grid
from .common import HelpFormatter, add_model_argument, say

HELP = "draw new samples from a variational model"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sample",
        help=HELP,
        description=HELP.capitalize() + " (trained with 'aelab fit --variational'). "
        "Image models write a grid image; table models write a table.",
        formatter_class=HelpFormatter,
    )
    add_model_argument(p)
    p.add_argument("-n", "--n-samples", type=int, default=64, help="samples to draw")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="a .png grid for image models; .parquet, .csv or .npy for tables",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for the draws")
    p.add_argument(
        "--scale", type=int, default=4, help="enlarge grid pixels this many times"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = check_output_path(Path(args.output))
    if args.n_samples < 1:
        raise InvalidParameterError(f"-n must be at least 1, got {args.n_samples}")
    estimator = AutoEncoder.load(args.model)
    samples = estimator.sample(args.n_samples, random_state=args.seed)
    images = getattr(estimator.preprocessor_, "kind", "") == "image"
    if images:
        if not is_image_path(output):
            raise InvalidParameterError(
                f"samples of an image model go to an image file such as grid.png, "
                f"not {str(output)!r}"
            )
        save_grid(output, scale_pixels(samples), scale=max(1, args.scale))
    else:
        frame = samples if isinstance(samples, pd.DataFrame) else pd.DataFrame(samples)
        frame.columns = [str(c) for c in frame.columns]
        write_table(output, frame)
    say(args, f"wrote {args.n_samples} samples to {output}")
    return 0
