"""Per-epoch training checkpoints: weights, optimizer, RNG and history, no pickle.

A checkpoint folder contains ``checkpoint.safetensors`` (tensors) and
``checkpoint.json`` (everything else). Both are replaced atomically at the end of
each epoch, so an interrupted run leaves the previous epoch's checkpoint intact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import ModelFormatError
from ..io_utils import atomic_path

CHECKPOINT_VERSION = 1
TENSORS = "checkpoint.safetensors"
METADATA = "checkpoint.json"
CHECKPOINT_FILES = (TENSORS, METADATA)


@dataclass
class TrainState:
    """Progress of a training run: enough to resume it or to report it."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = float("inf")
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    best_weights: dict[str, Tensor] | None = None


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: TrainState,
    fingerprint: dict[str, Any],
) -> None:
    """Write the checkpoint for the epoch just finished."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    # When this epoch is the best, the best weights are the model's: store them once.
    if state.best_weights is not None and state.best_epoch != state.epoch:
        tensors |= {f"best.{k}": v for k, v in state.best_weights.items()}
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    tensors["generator"] = generator.get_state()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    metadata = asdict(state) | {"best_weights": None}
    metadata |= {
        "version": CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "param_groups": optimizer_state["param_groups"],
    }
    with atomic_path(folder / TENSORS) as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(folder / METADATA) as tmp:
        tmp.write_text(json.dumps(metadata, indent=1))


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    fingerprint: dict[str, Any],
) -> TrainState:
    """Restore model, optimizer and generator in place and return the saved state."""
    meta_path = folder / METADATA
    if not meta_path.is_file():
        raise ModelFormatError(
            f"no checkpoint found in {str(folder)!r}; train without resume first"
        )
    metadata = json.loads(meta_path.read_text())
    if metadata.get("fingerprint") != fingerprint:
        raise ModelFormatError(
            f"the checkpoint in {str(folder)!r} was made with other data or "
            "settings; resume with the same data and options, or delete the folder "
            "to start over"
        )
    tensors = load_file(str(folder / TENSORS), device="cpu")
    device = next(model.parameters()).device
    model.load_state_dict(_with_prefix(tensors, "model.", device))
    best = _with_prefix(tensors, "best.", device)
    if not best and metadata.get("best_epoch") == metadata.get("epoch"):
        best = {k: v.clone() for k, v in model.state_dict().items()}

    per_param: dict[int, dict[str, Tensor]] = {}
    for key, value in _with_prefix(tensors, "optimizer.", device).items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(
        {"state": per_param, "param_groups": metadata["param_groups"]}
    )
    generator.set_state(tensors["generator"])

    fields = {k: metadata[k] for k in TrainState.__dataclass_fields__ if k in metadata}
    return TrainState(**fields | {"best_weights": best or None})


def _with_prefix(
    tensors: dict[str, Tensor], prefix: str, device: torch.device
) -> dict[str, Tensor]:
    return {
        k[len(prefix) :]: v.to(device)
        for k, v in tensors.items()
        if k.startswith(prefix)
    }


def remove_checkpoint(folder: Path) -> None:
    """Delete aelab's checkpoint files, and the folder if nothing else is left."""
    for name in CHECKPOINT_FILES:
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def saved_seed(folder: Path) -> int | None:
    """Return the seed of the run checkpointed in ``folder``, if there is one."""
    try:
        metadata = json.loads((folder / METADATA).read_text())
        return int(metadata["fingerprint"]["train"]["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
