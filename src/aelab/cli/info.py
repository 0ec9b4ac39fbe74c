"""``aelab info``: describe a saved model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..codec import store as codec_store
from ..errors import ModelFormatError
from ..restore import io as restore_io
from ..serialization import read_config
from .common import add_model_argument

HELP = "describe a saved model: architecture, inputs, training, versions"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help=HELP, description=HELP.capitalize() + ".")
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="print the full config.json")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.model)
    raw = _read_json(path)
    if raw.get("format") == codec_store.FORMAT:
        config = codec_store.load_codec(path).config
        describe_rows = describe_codec
    elif raw.get("format") == restore_io.FORMAT:
        _, config = restore_io.load_restorer(path, raw.get("task", "denoise"))
        describe_rows = describe_restorer
    else:
        config = read_config(path)
        describe_rows = describe
    if args.json:
        print(json.dumps(config, indent=1))
        return 0
    try:
        rows = describe_rows(config)
    except (KeyError, TypeError, IndexError) as err:
        raise ModelFormatError(
            f"the config of {args.model!r} is incomplete ({err!r} missing or invalid); "
            "train or save the model again"
        ) from err
    for label, value in rows:
        print(f"{label:<14}{value}")
    return 0


def _read_json(path: Path) -> dict[str, Any]:
    """Return the folder's config.json as a dict, or {} when it is not readable."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def describe_codec(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Summarise an image codec config as (label, value) rows."""
    arch, training = config["architecture"], config["training"]
    return [
        ("model", f"image codec {config['model_id']!r}"),
        ("hash", config["weights_sha256"][:32]),
        (
            "architecture",
            f"{arch['hidden']} hidden and {arch['latent']} latent channels, "
            f"{len(arch['lambdas'])} qualities",
        ),
        ("training", _codec_training(training)),
        ("command", str(training.get("command"))),
        ("tables", _codec_tables(config)),
        (
            "written by",
            f"aelab {config['aelab_version']}, torch {config['torch_version']}, "
            f"{config['created']}",
        ),
    ]


def _codec_training(training: dict[str, Any]) -> str:
    done = f"{training.get('steps')} steps in {training.get('seconds')} s"
    initial = training.get("initial_training")
    if not isinstance(initial, dict):
        return done
    if training.get("steps") == 0:
        done = "none (tables recounted)"
    # A recount of a recount: report the run that trained the network.
    while initial.get("steps") == 0 and isinstance(
        initial.get("initial_training"), dict
    ):
        initial = initial["initial_training"]
    return (
        f"{done}, from a codec trained {initial.get('steps')} steps in "
        f"{initial.get('seconds')} s"
    )


def _codec_tables(config: dict[str, Any]) -> str:
    classes = config.get("entropy", {}).get("context_classes", 1)
    if classes == 1:
        return "one per channel and quality"
    return f"{classes} context classes per channel and quality"


def describe_restorer(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Summarise a denoiser or colorizer config as (label, value) rows."""
    training = config["training"]
    return [
        ("model", f"{config['task']} model ({config['network']['kind']})"),
        (
            "training",
            f"{training.get('steps_done')} steps in {training.get('seconds')} s",
        ),
        ("command", str(training.get("command"))),
        (
            "written by",
            f"aelab {config['aelab_version']}, torch {config['torch_version']}, "
            f"{config['created']}",
        ),
    ]


def describe(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Summarise a model config as (label, value) rows."""
    model, pre = config["model"], config["preprocessing"]
    training = config["training"]
    history = training["history"]
    kind = ("variational " if model["variational"] else "") + model["kind"]
    rows = [
        ("model", f"{kind} autoencoder, {model['latent_dim']}-d code"),
        ("input", _describe_input(pre)),
        (
            "loss",
            training["loss"]
            + (f" + {config['params']['beta']:g} x KL" if model["variational"] else ""),
        ),
    ]
    if config["params"].get("noise"):
        rows.append(("noise", f"{config['params']['noise']} (denoising training)"))
    if history:
        best = history[training["best_epoch"] - 1]
        split = "validation" if best["validation"] else "train"
        rows.append(
            (
                "training",
                f"{len(history)} epochs, kept epoch {training['best_epoch']} with "
                f"{split} loss {best[split]['loss']:.4g} per sample",
            )
        )
    rows.append(("seed", str(training["seed"])))
    rows.append(
        (
            "written by",
            f"aelab {config['aelab_version']}, torch {config['torch_version']}, "
            f"{config['created']}",
        )
    )
    return rows


def _describe_input(pre: dict[str, Any]) -> str:
    if pre["kind"] == "image":
        channels = pre["channels"]
        plural = "channel" if channels == 1 else "channels"
        return f"images {pre['height']}x{pre['width']}, {channels} {plural}"
    columns = pre["columns"]
    numeric = [c["name"] for c in columns if c["type"] == "numeric"]
    categorical = [c["name"] for c in columns if c["type"] == "categorical"]
    text = f"table, {len(numeric)} numeric columns"
    if categorical:
        text += f", {len(categorical)} categorical ({', '.join(categorical[:5])})"
    return text + f", {pre['scaling']} scaling"
