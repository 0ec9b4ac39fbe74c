"""File-system helpers: atomic writes and output-path checks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InvalidParameterError


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` and move it there on success.

    The caller writes a file or a folder at the yielded path. If the block raises,
    the temporary path is removed and ``target`` is left as it was, so a failed or
    interrupted write never leaves a half-written output.
    """
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    shutil.rmtree(tmp)
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            # Folders cannot be swapped in one call, so move the old one aside and
            # put it back if the second move fails or is interrupted.
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def check_output_path(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Return ``path`` as a Path after checking that its folder exists.

    Raises:
        InvalidParameterError: The parent folder is missing or is not a folder.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidParameterError(
            f"the folder of the {what} path {str(path)!r} does not exist; create it "
            f"first (mkdir -p {parent}) or choose another path"
        )
    return path


def config_problem(err: Exception) -> str:
    """Describe a KeyError or TypeError raised while reading a config.json."""
    if isinstance(err, KeyError) and err.args:
        return f"lacks the field {err.args[0]!r}"
    return f"has a field of the wrong type or value ({err})"


def read_safetensors(path: Path, redo: str) -> dict:
    """Read a safetensors file onto the CPU; raise ModelFormatError if it fails.

    ``redo`` ends the message with the action that replaces the damaged file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .errors import ModelFormatError

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise ModelFormatError(
            f"cannot read weights {str(path)!r}: {err}; the file is damaged, {redo}"
        ) from err


def write_safetensors(
    tensors: dict, path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file readable as the umask allows, like any other file.

    safetensors creates its files with mode 0600, so a model folder copied to a
    shared place would hold weights that only their writer can read.
    """
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


@dataclass(frozen=True)
class FolderFormat:
    """One kind of saved folder: its files, its format tag and how errors name it.

    Attributes:
        format: The ``format`` value of its JSON config.
        version: The newest ``format_version`` this aelab reads.
        noun: What errors call it, e.g. "aelab codec".
        made_by: The commands that write it, for the error messages.
        redo: What to do with a damaged one, e.g. "train it again".
        config: The JSON config's file name.
        weights: The safetensors file's name.
    """

    format: str
    version: int
    noun: str
    made_by: str
    redo: str
    config: str = "config.json"
    weights: str = "model.safetensors"


def read_folder_config(
    path: Path, folder: FolderFormat, missing_hint: str | None = None
) -> dict:
    """Read and check the JSON config of a saved folder of kind ``folder``.

    Raises:
        ModelFormatError: The path is not such a folder, its config is unreadable
            or of another kind, or its format version is newer than this aelab
            reads. ``missing_hint`` replaces the advice when files are missing.
    """
    from ._version import __version__
    from .errors import ModelFormatError

    short = folder.noun.split()[-1]
    article = "an" if folder.noun[0] in "aeiou" else "a"
    config_path = path / folder.config
    if not config_path.is_file() or not (path / folder.weights).is_file():
        hint = missing_hint or (
            f"{article} {short} is a folder holding {folder.config} and "
            f"{folder.weights}, as written by {folder.made_by}"
        )
        raise ModelFormatError(f"{str(path)!r} is not {article} {folder.noun}: {hint}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(
            f"cannot read {str(config_path)!r}: {err}; the {short} is damaged, "
            f"{folder.redo}"
        ) from err
    if not isinstance(config, dict) or config.get("format") != folder.format:
        raise ModelFormatError(
            f"{str(config_path)!r} is not {article} {folder.noun} config (missing "
            f"'format': '{folder.format}'); pass a folder written by {folder.made_by}"
        )
    version = config.get("format_version")
    if not isinstance(version, int) or version > folder.version:
        raise ModelFormatError(
            f"{short} {str(path)!r} has format version {version!r}, written by aelab "
            f"{config.get('aelab_version')}; this aelab {__version__} reads versions "
            f"up to {folder.version}. Upgrade aelab (pip install -U aelab)"
        )
    return config


def check_weights(
    module: torch.nn.Module, weights: dict, weights_path: Path, redo: str
) -> None:
    """Raise ModelFormatError unless ``weights`` fit ``module``'s state_dict.

    The message lists up to three missing, unexpected and wrongly shaped tensors
    and ends with ``redo``, the action that makes the folder whole again.
    """
    from .errors import ModelFormatError

    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if not (missing or unexpected or wrong):
        return
    details = "; ".join(
        f"{label}: {', '.join(items[:3])}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch (file vs config)", wrong),
        )
        if items
    )
    raise ModelFormatError(
        f"the weights in {str(weights_path)!r} do not match its config ({details}); "
        f"the folder mixes files from different models, {redo}"
    )
