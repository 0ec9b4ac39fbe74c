"""Detector folders: ``detector.json``, ``detector.safetensors`` and member models.

detector.json has the format name and version, the detector's parameters and its
threshold. detector.safetensors has the per-feature error scales of each member
and the held-out reference scores. Each ensemble member is an ordinary aelab model
folder, ``member-0``, ``member-1``, ..., so ``aelab info`` and
``AutoEncoder.load`` work on it too.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..errors import InvalidParameterError, ModelFormatError
from ..io_utils import (
    FolderFormat,
    atomic_path,
    check_output_path,
    read_folder_config,
    read_safetensors,
    write_safetensors,
)
from ..serialization import load_model, save_model

FORMAT = "aelab-detector"
FORMAT_VERSION = 1
CONFIG = "detector.json"
TENSORS = "detector.safetensors"


def is_detector_folder(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_detector_path(path: Path) -> None:
    """Raise unless a detector can be written at ``path`` without harming files."""
    check_output_path(path, "detector")
    if path.exists() and not is_detector_folder(path):
        raise InvalidParameterError(
            f"{str(path)!r} exists and is not an aelab detector folder; choose "
            "another path (aelab only replaces its own detector folders)"
        )


def save_detector(detector: Any, path: str | os.PathLike[str]) -> Path:
    """Write a fitted detector to the folder ``path``, atomically."""
    detector._check_fitted()
    path = Path(path)
    check_detector_path(path)
    params = detector.get_params()
    params["hidden_dims"] = list(params["hidden_dims"] or []) or None
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "aelab_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params,
        "threshold": detector.threshold_,
        "members": len(detector.models_),
        "images": detector.images_,
    }
    tensors = {
        f"scale.{i}": torch.from_numpy(np.ascontiguousarray(scale))
        for i, scale in enumerate(detector.scales_)
    }
    tensors["reference_scores"] = torch.from_numpy(detector.reference_scores_.copy())
    with atomic_path(path) as tmp:
        tmp.mkdir()
        for i, model in enumerate(detector.models_):
            save_model(model, tmp / f"member-{i}")
        write_safetensors(tensors, tmp / TENSORS, metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    return path


DETECTOR_FOLDER = FolderFormat(
    FORMAT,
    FORMAT_VERSION,
    "aelab detector",
    "'aelab detect fit' or AnomalyDetector.save()",
    "fit it again",
    CONFIG,
    TENSORS,
)


def load_detector(path: str | os.PathLike[str], device: str = "auto") -> Any:
    """Rebuild a fitted detector from its folder."""
    from .detector import AnomalyDetector

    path = Path(path)
    config = read_folder_config(path, DETECTOR_FOLDER)
    tensors = read_safetensors(path / TENSORS, "fit the detector again")

    try:
        params = dict(config["params"]) | {"device": device}
        detector = AnomalyDetector(**params)
        members = range(config["members"])
        detector.scales_ = [tensors[f"scale.{i}"].numpy() for i in members]
        detector.reference_scores_ = tensors["reference_scores"].numpy()
        detector.threshold_ = config["threshold"]
        detector.images_ = config["images"]
    except (KeyError, TypeError) as err:
        raise ModelFormatError(
            f"detector {str(path)!r} is incomplete ({err!r} missing or invalid); fit "
            "the detector again"
        ) from err
    detector.models_ = [load_model(path / f"member-{i}", device) for i in members]
    return detector
