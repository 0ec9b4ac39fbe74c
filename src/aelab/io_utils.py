"""File-system helpers: atomic writes and output-path checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
