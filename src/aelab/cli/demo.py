"""``aelab demo``: the main job on bundled real data, with no arguments."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..demo import run_demo
from ..io_utils import check_output_path
from .common import HelpFormatter, say

HELP = "train three autoencoders on scikit-learn's digits and write figures"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help=HELP,
        description=HELP.capitalize() + ": reconstructions, samples, denoised digits, "
        "loss curves, embeddings and a 2-D map, metrics against PCA, and an HTML "
        "page showing them all. Takes about a minute on 2 CPU cores.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "-o", "--output", default="aelab-demo", metavar="DIR", help="folder to write"
    )
    p.add_argument(
        "--epochs", type=int, default=60, help="maximum epochs for each model"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = check_output_path(Path(args.output), "demo output")
    started = time.perf_counter()
    metrics = run_demo(
        output,
        progress=args.progress,
        epochs=args.epochs,
        report=lambda line: say(args, line),
    )
    mse = metrics["test_mse"]
    say(
        args,
        f"held-out MSE: conv autoencoder {mse['conv']:.4f}, PCA-8 {mse['pca_8']:.4f} "
        f"(ratio {mse['conv_over_pca']:.2f}); denoising "
        f"{metrics['denoising']['noisy_mse']:.4f} -> "
        f"{metrics['denoising']['denoised_mse']:.4f}",
    )
    say(
        args,
        f"wrote {output}/index.html and its figures, models and metrics in "
        f"{time.perf_counter() - started:.0f} s",
    )
    return 0
