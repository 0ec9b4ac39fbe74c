"""``aelab fit``: train an autoencoder on a data file or folder and save it."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
from pathlib import Path
from typing import Any

from ..data.stream import ParquetDataset, should_stream
from ..errors import InvalidParameterError
from ..estimator import AutoEncoder
from ..serialization import check_model_path
from ..training import LOSSES, NOISE_KINDS, distributed
from ..training.checkpoint import CHECKPOINT_FILES, remove_checkpoint
from ..training.loop import PRECISIONS
from .common import HelpFormatter, parse_image_size, parse_int_list, read_inputs, say

HELP = "train an autoencoder on a table or images and save it"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = AutoEncoder().get_params()
    p = subparsers.add_parser(
        "fit",
        help=HELP,
        description=HELP.capitalize() + ". DATA is a CSV, Parquet, NPY or NPZ file, "
        "an image file, or a folder of images or Parquet files.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="training data path")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model folder to write (model.safetensors + config.json)",
    )
    p.set_defaults(run=run)
    _add_task_options(p.add_argument_group("task"))
    _add_model_options(p.add_argument_group("model"), defaults)
    _add_training_options(p.add_argument_group("training"), defaults)
    _add_data_options(p.add_argument_group("data"), defaults)
    _add_run_options(p.add_argument_group("run"))


# Image-to-image tasks train their own models from crops of DATA (image files
# or folders); each module exposes ``fit_task(args) -> int``.
TASK_MODULES = {
    "compress": "aelab.codec.train",
    "denoise": "aelab.restore.train",
    "colorize": "aelab.restore.train",
}


def _add_task_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--task",
        choices=("reconstruct", *TASK_MODULES),
        default="reconstruct",
        help="reconstruct trains a plain autoencoder on a table or images; "
        "compress, denoise and colorize train an image model on random crops of "
        "the photos in DATA (--steps, --crop-size, --batch-size, --lr, --seed)",
    )
    group.add_argument(
        "--steps",
        type=int,
        help="optimiser steps for compress, denoise and colorize (default per task); "
        "compress with --init also takes 0: keep the network, recount its entropy "
        "tables on DATA",
    )
    group.add_argument(
        "--crop-size",
        type=int,
        default=128,
        help="side of the square training crops for compress, denoise and colorize",
    )
    group.add_argument(
        "--max-minutes",
        "--time-limit",
        dest="max_minutes",
        type=float,
        metavar="MINUTES",
        help="stop compress, denoise and colorize training after this many minutes "
        "and save; the learning rate decays to its end value by then",
    )
    group.add_argument(
        "--init",
        metavar="MODEL",
        help="compress only: start from the weights of this codec folder and "
        "train further (fine-tuning), keeping its architecture and qualities",
    )


def _add_model_options(
    group: argparse._ArgumentGroup, defaults: dict[str, Any]
) -> None:
    group.add_argument(
        "--kind",
        choices=("auto", "dense", "conv"),
        default="auto",
        help="architecture; auto is conv for images, dense for tables",
    )
    group.add_argument(
        "--latent-dim",
        type=int,
        default=defaults["latent_dim"],
        help="size of the code (embedding length)",
    )
    group.add_argument(
        "--hidden-dims",
        metavar="N,N,...",
        help="dense hidden widths (default 256,128); for conv, the last "
        "is the dense width after the convolutions (default 256)",
    )
    group.add_argument(
        "--variational",
        action="store_true",
        help="train a variational autoencoder (enables 'aelab sample')",
    )
    group.add_argument(
        "--beta",
        type=float,
        default=defaults["beta"],
        help="weight of the KL term for --variational",
    )
    group.add_argument(
        "--noise",
        metavar="KIND:AMOUNT",
        help="denoising training: corrupt inputs with KIND in "
        f"{', '.join(NOISE_KINDS)}, e.g. gaussian:0.3 (standard "
        "deviation in scaled units) or mask:0.2 (probability)",
    )
    group.add_argument(
        "--loss",
        choices=("auto", *LOSSES),
        default=defaults["loss"],
        help="reconstruction loss; bce needs values in [0, 1]; auto means bce for "
        "--variational on values in [0, 1], else mse",
    )


def _add_training_options(
    group: argparse._ArgumentGroup, defaults: dict[str, Any]
) -> None:
    group.add_argument(
        "--epochs",
        type=int,
        default=defaults["epochs"],
        help="maximum passes over the training data",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        help=f"samples per optimiser step (default {defaults['batch_size']}; "
        "per task for compress, denoise and colorize)",
    )
    group.add_argument(
        "--lr",
        type=float,
        help=f"Adam learning rate (default {defaults['learning_rate']}; per task "
        "for compress, denoise and colorize)",
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        default=defaults["weight_decay"],
        help="Adam L2 penalty",
    )
    group.add_argument(
        "--validation-fraction",
        type=float,
        default=defaults["validation_fraction"],
        help="share of samples held out for early stopping, 0 to 1",
    )
    group.add_argument(
        "--patience",
        type=int,
        default=defaults["patience"],
        help="epochs without validation improvement before stopping; "
        "0 trains all epochs",
    )


def _add_data_options(group: argparse._ArgumentGroup, defaults: dict[str, Any]) -> None:
    group.add_argument(
        "--scaling",
        choices=("standard", "minmax", "none"),
        default=defaults["scaling"],
        help="table column scaling",
    )
    group.add_argument(
        "--max-categories",
        type=int,
        default=defaults["max_categories"],
        help="most distinct values a text column may have",
    )
    group.add_argument(
        "--image-size",
        metavar="HxW",
        help="resize images to HEIGHTxWIDTH pixels (needed when the "
        "training images differ in size)",
    )
    group.add_argument(
        "--id-column",
        metavar="COL",
        help="identifier column: not trained on, carried into outputs",
    )
    group.add_argument(
        "--drop",
        metavar="COL",
        action="append",
        default=[],
        help="leave this column out (repeatable)",
    )
    group.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read a Parquet file or folder in batches instead of loading it, for "
        "tables larger than memory (default: stream Parquet inputs larger than "
        "1 GiB on disk)",
    )


def _add_run_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed for weights, split, shuffling and noise",
    )
    group.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available), cpu, cuda or cuda:N",
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="train through torch.compile (inductor); compiling takes seconds to "
        "a minute at the start, and the saved model has the same format",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="bf16-mixed trains under bfloat16 autocast with float32 weights "
        "(CUDA only)",
    )
    group.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="per-epoch checkpoints (default MODEL.ckpt, removed once "
        "the model is saved)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its checkpoint",
    )
    group.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="write no per-epoch checkpoints (faster for tiny epochs; no --resume)",
    )


def run(args: argparse.Namespace) -> int:
    if args.init and args.task != "compress":
        raise InvalidParameterError("--init works only with --task compress")
    if args.task == "reconstruct":
        for flag, value in (
            ("--steps", args.steps),
            ("--max-minutes", args.max_minutes),
        ):
            if value is not None:
                raise InvalidParameterError(
                    f"{flag} is for --task compress, denoise and colorize; a plain "
                    "autoencoder trains for --epochs"
                )
    if args.task != "reconstruct":
        for flag, used in (
            ("--compile", args.compile),
            ("--precision", args.precision != "float32"),
        ):
            if used:
                raise InvalidParameterError(
                    f"{flag} works only with --task reconstruct, got --task {args.task}"
                )
        module = importlib.import_module(TASK_MODULES[args.task])
        return int(module.fit_task(args))
    context, args.device = distributed.init_from_env(args.device)
    try:
        code = _fit_table_or_images(args, context)
        # Free the trainer's DistributedDataParallel wrapper while the process
        # group still exists; freed after it, gloo can abort the process.
        gc.collect()
        # Ranks leave together: a rank that tore down gloo while rank 0 was
        # still saving aborted with "terminate called without an active
        # exception" in a clean-clone run.
        distributed.synchronize()
        return code
    finally:
        distributed.shutdown()


def _fit_table_or_images(
    args: argparse.Namespace, context: distributed.DistContext
) -> int:
    """Train the plain autoencoder; under torchrun, rank 0 writes the model."""
    if not context.is_main:
        args.quiet, args.progress = True, False
        logging.getLogger("aelab").setLevel(logging.WARNING)
    defaults = AutoEncoder().get_params()
    output = Path(args.output)
    check_model_path(output)
    checkpoint_dir = None
    if not args.no_checkpoint:
        checkpoint_dir = Path(args.checkpoint_dir or f"{output}.ckpt")
        _check_checkpoint_dir(checkpoint_dir, args.resume)
    elif args.resume:
        raise InvalidParameterError("--resume needs checkpoints; drop --no-checkpoint")
    estimator = AutoEncoder(
        kind=args.kind,
        latent_dim=args.latent_dim,
        hidden_dims=parse_int_list(args.hidden_dims, "--hidden-dims"),
        variational=args.variational,
        beta=args.beta,
        noise=args.noise,
        loss=args.loss,
        epochs=args.epochs,
        batch_size=args.batch_size or defaults["batch_size"],
        learning_rate=args.lr or defaults["learning_rate"],
        weight_decay=args.weight_decay,
        validation_fraction=args.validation_fraction,
        patience=args.patience or None,
        scaling=args.scaling,
        max_categories=args.max_categories,
        image_size=parse_image_size(args.image_size),
        random_state=args.seed,
        device=args.device,
        compile=args.compile,
        precision=args.precision,
        verbose=int(args.progress),
        checkpoint_dir=checkpoint_dir,
    )
    estimator._validate_params()  # fail on bad options before reading the data
    if should_stream(args.data, args.stream):
        excluded = [args.id_column] if args.id_column else []
        estimator.fit_stream(
            ParquetDataset(args.data, exclude=excluded + list(args.drop)),
            resume=args.resume,
        )
    else:
        inputs = read_inputs(args.data, args.progress, args.id_column, args.drop)
        estimator.fit(inputs.data, resume=args.resume)
    estimator.metadata_ = {
        "id_column": args.id_column,
        "dropped_columns": list(args.drop),
        "trained_on": str(args.data),
    }
    if not context.is_main:
        return 0
    estimator.save(output)
    if checkpoint_dir is not None and args.checkpoint_dir is None:
        remove_checkpoint(checkpoint_dir)
    say(args, _summary(estimator, output))
    return 0


def _check_checkpoint_dir(folder: Path, resume: bool) -> None:
    """Refuse a checkpoint folder that contains files other than aelab's checkpoint."""
    if not folder.exists():
        return
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in CHECKPOINT_FILES)
    if not folder.is_dir() or foreign:
        raise InvalidParameterError(
            f"the checkpoint folder {str(folder)!r} contains other files "
            f"({', '.join(foreign[:3]) or 'it is a file'}); pass another "
            "--checkpoint-dir"
        )
    if not resume and any(folder.iterdir()):
        raise InvalidParameterError(
            f"{str(folder)!r} contains a checkpoint of an unfinished run; continue it "
            "with --resume, or delete the folder to start over"
        )


def _summary(estimator: AutoEncoder, output: Path) -> str:
    last = estimator.history_[estimator.best_epoch_ - 1]
    split = "validation" if last["validation"] else "train"
    losses = last[split] or {}
    stop = ", stopped early" if estimator.stopped_early_ else ""
    model = estimator.model_
    kind = ("variational " if model.variational else "") + model.kind
    return (
        f"trained a {kind} autoencoder ({model.latent_dim}-d code) for "
        f"{len(estimator.history_)} epochs{stop}; kept epoch {estimator.best_epoch_} "
        f"with {split} loss {losses.get('loss', float('nan')):.4g} per sample; "
        f"saved {output}"
    )
