"""Restoration model folders: ``config.json`` plus ``model.safetensors``.

config.json contains the format name and version, the task (``denoise`` or
``colorize``), the network settings, the aelab and torch versions that wrote
it, and the training run, including the command that made the model. Loading
reads JSON and safetensors only, so it never unpickles anything.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import InvalidParameterError, ModelFormatError
from ..io_utils import (
    FolderFormat,
    atomic_path,
    check_output_path,
    check_weights,
    config_problem,
    read_folder_config,
    read_safetensors,
    write_safetensors,
)
from .models import build_network

FORMAT = "aelab-restore-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TASKS = ("denoise", "colorize")
# Bundled model folder per task, inside the installed package.
PRETRAINED = {"denoise": "denoiser", "colorize": "colorizer"}


def save_restorer(
    network: torch.nn.Module, task: str, path: Path, training: dict[str, Any]
) -> Path:
    """Write a trained network to the folder ``path``, atomically.

    An existing restoration model folder at ``path`` is replaced; any other
    existing file or folder raises InvalidParameterError.
    """
    check_restorer_path(path)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task,
        "aelab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "network": network.to_config(),
        "training": training,
    }
    weights = {
        k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()
    }
    with atomic_path(path) as tmp:
        tmp.mkdir()
        write_safetensors(weights, tmp / WEIGHTS, metadata={"format": FORMAT})
        (tmp / WEIGHTS).chmod(0o644)  # safetensors 0.8 writes mode 0600
        (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    return path


def check_restorer_path(path: Path) -> None:
    """Raise InvalidParameterError unless ``path`` is free or a restoration model."""
    check_output_path(path, "model")
    if path.exists() and _read_format(path) != FORMAT:
        raise InvalidParameterError(
            f"{str(path)!r} exists and is not an aelab restoration model folder; "
            "choose another path (aelab only replaces its own model folders)"
        )


def _read_format(path: Path) -> Any:
    try:
        return json.loads((path / CONFIG).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def pretrained_path(task: str) -> Path:
    """Return the folder of the model bundled with aelab for ``task``."""
    folder = resources.files("aelab") / "pretrained" / PRETRAINED[task]
    return Path(str(folder))


def load_restorer(
    path: Path | None, task: str
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a restoration model for ``task`` in eval mode, with its config.

    ``path`` None loads the model bundled with aelab.

    Raises:
        ModelFormatError: The folder is missing, damaged, from a newer format
            version, or made for another task.
    """
    bundled = path is None
    path = pretrained_path(task) if bundled else Path(path)
    config = _read_config(path, bundled)
    if config.get("task") != task:
        raise ModelFormatError(
            f"model {str(path)!r} was trained for task {config.get('task')!r}, not "
            f"{task!r}; pass a model made by 'aelab fit --task {task}'"
        )
    try:
        network = build_network(config["network"])
    except (KeyError, TypeError) as err:
        raise ModelFormatError(
            f"model config {str(path / CONFIG)!r} {config_problem(err)}; train the "
            "model again"
        ) from err
    weights = read_safetensors(path / WEIGHTS, "train the model again")
    check_weights(network, weights, path / WEIGHTS, "train the model again")
    network.load_state_dict(weights)
    return network.eval(), config


RESTORE_FOLDER = FolderFormat(
    FORMAT,
    FORMAT_VERSION,
    "restoration model",
    "'aelab fit --task denoise|colorize'",
    "train it again",
    CONFIG,
    WEIGHTS,
)


def _read_config(path: Path, bundled: bool) -> dict[str, Any]:
    hint = None
    if bundled:
        hint = "the aelab installation lacks its bundled weights; reinstall aelab or "
        hint += "pass --model"
    return read_folder_config(path, RESTORE_FOLDER, hint)
