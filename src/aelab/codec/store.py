"""Codec model folders: ``model.safetensors`` (weights and tables) and ``config.json``.

The weights file also stores the integer probability tables under ``tables.*``,
so the SHA-256 of that one file identifies everything a decoder uses. Compressed
files carry the first 16 bytes of that hash and are decoded only by a model with
the same hash.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .._version import __version__
from ..errors import InvalidParameterError, ModelFormatError
from ..io_utils import (
    FolderFormat,
    check_output_path,
    check_weights,
    read_folder_config,
    write_safetensors,
)
from .entropy import CONTEXT_EDGES, EntropyTables, build_tables
from .model import ImageCodec, build_codec

FORMAT = "aelab-codec"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
BUNDLED_ID = "aelab-photo-2"


def bundled_path() -> Path:
    """Return the folder of the codec that ships with aelab."""
    return Path(str(resources.files("aelab") / "pretrained" / "codec"))


def check_codec_path(path: Path) -> None:
    """Check that a codec folder can be written at ``path``.

    Raises:
        InvalidParameterError: The parent folder is missing, or ``path`` exists and
            is not an aelab codec folder.
    """
    check_output_path(path, "model")
    if path.exists() and _read_format(path) != FORMAT:
        raise InvalidParameterError(
            f"{str(path)!r} exists and is not an aelab codec folder; choose another "
            "path (aelab only replaces its own model folders)"
        )


def _read_format(path: Path) -> str | None:
    try:
        return json.loads((path / CONFIG).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def save_codec(
    model: ImageCodec,
    folder: Path,
    training: dict[str, Any],
    model_id: str | None = None,
    latents: Iterable[tuple[int, np.ndarray]] | None = None,
    edges: tuple[int, ...] = CONTEXT_EDGES,
) -> None:
    """Write ``model`` and its entropy tables into the new folder ``folder``.

    ``latents``, pairs of a quality and a rounded training latent, give the
    tables context classes with the class ``edges`` (see
    :func:`aelab.codec.entropy.build_tables`).
    """
    model = model.cpu().eval()
    tables = build_tables(model.prior, latents, edges)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors.update(tables.to_tensors())
    folder.mkdir()
    write_safetensors(tensors, folder / WEIGHTS, metadata={"format": FORMAT})
    digest = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_id": model_id or folder.name.lstrip(".").split(".")[0] or "codec",
        "weights_sha256": digest,
        "aelab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "architecture": model.to_config(),
        "entropy": {"context_classes": tables.classes},
        "training": training,
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=1) + "\n")


class LoadedCodec:
    """A codec ready to code images: the network, its tables, identifier and hash."""

    def __init__(
        self, model: ImageCodec, tables: EntropyTables, config: dict, path: Path
    ) -> None:
        self.model = model
        self.tables = tables
        self.config = config
        self.path = path
        self.model_id: str = config["model_id"]
        self.model_hash = bytes.fromhex(config["weights_sha256"])[:16]

    @property
    def qualities(self) -> int:
        return self.model.qualities


def load_codec(path: str | Path | None = None) -> LoadedCodec:
    """Load a codec folder, or the bundled codec when ``path`` is None.

    Raises:
        ModelFormatError: The folder is not a codec, is from a newer format, or its
            weights do not match the hash in its config.
    """
    folder = bundled_path() if path is None else Path(path)
    if path is None and not (folder / WEIGHTS).is_file():
        raise ModelFormatError(
            "the bundled codec is not installed with this aelab (reinstall aelab); "
            "or pass --model with a codec folder from 'aelab fit --task compress'"
        )
    config = _read_config(folder)
    data = (folder / WEIGHTS).read_bytes()
    if hashlib.sha256(data).hexdigest() != config.get("weights_sha256"):
        raise ModelFormatError(
            f"the weights in {str(folder)!r} do not match the hash in its "
            f"{CONFIG}; the model is damaged, copy or train it again"
        )
    try:
        tensors = load_file(str(folder / WEIGHTS), device="cpu")
        model = build_codec(config["architecture"])
        tables = EntropyTables.from_tensors(tensors)
        state = {k: v for k, v in tensors.items() if not k.startswith("tables.")}
        check_weights(model, state, folder / WEIGHTS, "train it again")
        model.load_state_dict(state)
    except ModelFormatError:
        raise
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelFormatError(
            f"cannot load the codec {str(folder)!r}: {e}; the model is damaged or "
            "was written by another aelab, train it again"
        ) from e
    return LoadedCodec(model.eval(), tables, config, folder)


CODEC_FOLDER = FolderFormat(
    FORMAT,
    FORMAT_VERSION,
    "aelab codec",
    "'aelab fit --task compress'",
    "train it again",
    CONFIG,
    WEIGHTS,
)


def _read_config(folder: Path) -> dict:
    return read_folder_config(folder, CODEC_FOLDER)
