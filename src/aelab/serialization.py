"""Model folders: ``model.safetensors`` (weights) and ``config.json`` (all else).

config.json contains the format name and version, the aelab and torch versions that
wrote it, the estimator's parameters, the architecture, the fitted preprocessing
(input schema and statistics), and the training history. Loading reads JSON and
safetensors only, so it never unpickles anything.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .data import preprocessor_from_config
from .errors import InvalidParameterError, ModelFormatError
from .io_utils import (
    FolderFormat,
    atomic_path,
    check_output_path,
    check_weights,
    config_problem,
    read_folder_config,
    read_safetensors,
    write_safetensors,
)
from .models import build_model

FORMAT = "aelab-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_model(estimator: Any, path: Path) -> Path:
    """Write a fitted estimator to the folder ``path``, atomically.

    An existing aelab model folder at ``path`` is replaced; any other existing file
    or folder is left alone and an error is raised.
    """
    estimator._check_fitted()
    check_model_path(path)
    params = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in estimator.get_params().items()
    }
    params["checkpoint_dir"] = (
        str(params["checkpoint_dir"]) if params["checkpoint_dir"] else None
    )
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "aelab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params,
        "model": estimator.model_.to_config(),
        "preprocessing": estimator.preprocessor_.to_config(),
        "training": {
            "seed": estimator.seed_,
            "loss": estimator.loss_,
            "n_features_in": estimator.n_features_in_,
            "device": str(estimator.device_),
            "best_epoch": estimator.best_epoch_,
            "stopped_early": estimator.stopped_early_,
            "history": estimator.history_,
        },
        "metadata": getattr(estimator, "metadata_", {}),
    }
    weights = {
        k: v.detach().cpu().contiguous()
        for k, v in estimator.model_.state_dict().items()
    }
    with atomic_path(path) as tmp:
        tmp.mkdir()
        write_safetensors(weights, tmp / WEIGHTS, metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    return path


def check_model_path(path: Path) -> None:
    """Check that a model can be written at ``path`` without harming other files.

    Raises:
        InvalidParameterError: The parent folder is missing, or ``path`` exists and
            is not an aelab model folder.
    """
    check_output_path(path, "model")
    if path.exists() and not _is_model_folder(path):
        raise InvalidParameterError(
            f"{str(path)!r} exists and is not an aelab model folder; choose another "
            "path (aelab only replaces its own model folders)"
        )


def _is_model_folder(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


MODEL_FOLDER = FolderFormat(
    FORMAT,
    FORMAT_VERSION,
    "aelab model",
    "'aelab fit' or AutoEncoder.save()",
    "save or train it again",
    CONFIG,
    WEIGHTS,
)


def read_config(path: Path) -> dict[str, Any]:
    """Read and check a model folder's config.json.

    Raises:
        ModelFormatError: The path is not an aelab model, or its format version is
            newer than this aelab reads.
    """
    return read_folder_config(path, MODEL_FOLDER)


def load_model(path: Path, device: str = "auto") -> Any:
    """Rebuild a fitted estimator from a model folder, on ``device``."""
    from .estimator import AutoEncoder

    config = read_config(path)
    try:
        params = dict(config["params"])
        for key in ("hidden_dims", "image_size"):
            if params.get(key) is not None:
                params[key] = tuple(params[key])
        params["device"] = device
        estimator = AutoEncoder(**params)
        model = build_model(config["model"])
        preprocessor = preprocessor_from_config(config["preprocessing"])
        training = config["training"]
    except (KeyError, TypeError) as err:
        raise ModelFormatError(
            f"model config {str(path / CONFIG)!r} {config_problem(err)}; save or "
            "train the model again"
        ) from err

    weights = read_safetensors(path / WEIGHTS, "save or train the model again")
    _load_weights(model, weights, path)

    estimator.device_ = estimator._resolve_device()
    estimator.model_ = model.to(estimator.device_).eval()
    estimator.preprocessor_ = preprocessor
    try:
        _restore_training_state(estimator, training)
    except (KeyError, TypeError) as err:
        raise ModelFormatError(
            f"model config {str(path / CONFIG)!r} {config_problem(err)} in its "
            "training record; save or train the model again"
        ) from err
    estimator.metadata_ = config.get("metadata", {})
    return estimator


def _restore_training_state(estimator: Any, training: dict[str, Any]) -> None:
    estimator.seed_ = training["seed"]
    estimator.loss_ = training["loss"]
    estimator.n_features_in_ = training["n_features_in"]
    pre = estimator.preprocessor_
    if pre.kind == "table" and not pre.from_array:
        estimator.feature_names_in_ = np.asarray(pre.input_names, dtype=object)
    estimator.best_epoch_ = training["best_epoch"]
    estimator.stopped_early_ = training["stopped_early"]
    estimator.history_ = training["history"]


def _load_weights(model: torch.nn.Module, weights: dict[str, Any], path: Path) -> None:
    check_weights(model, weights, path / WEIGHTS, "train or save it again")
    model.load_state_dict(weights)
