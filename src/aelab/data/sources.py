"""Reading user data from files, and writing tables of results.

``load`` turns a path into one of two in-memory forms: a pandas DataFrame (CSV,
Parquet, NPY, NPZ) or a list of :class:`ImageRecord` (image files and folders).
"""

from __future__ import annotations

import csv
import itertools
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..errors import DataConversionWarning, InvalidDataError, InvalidParameterError
from ..io_utils import atomic_path
from .images import ImageRecord, is_image_path, list_images, read_image, read_images

TABLE_EXTENSIONS = (".csv", ".parquet", ".pq", ".npy", ".npz")
OUTPUT_EXTENSIONS = (".parquet", ".pq", ".csv", ".npy")


def load(
    path: str | Path, progress: bool = False
) -> pd.DataFrame | np.ndarray | list[ImageRecord]:
    """Read a data file or folder.

    Returns:
        A DataFrame for CSV and Parquet, an ndarray for NPY and NPZ, and a list of
        image records for an image file or a folder of images.

    Raises:
        InvalidDataError: The path is missing, of an unknown type, or unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidDataError(f"data path {str(path)!r} not found")
    if path.is_dir():
        if any(p.suffix.lower() in (".parquet", ".pq") for p in path.iterdir()):
            return _read_parquet(path)
        return read_images(list_images(path), progress=progress)
    ext = path.suffix.lower()
    if is_image_path(path):
        return [read_image(path)]
    if ext == ".csv":
        return _read_csv(path)
    if ext in (".parquet", ".pq"):
        return _read_parquet(path)
    if ext in (".npy", ".npz"):
        return _read_numpy(path)
    raise InvalidDataError(
        f"unsupported file type {ext or '(none)'!r} for {str(path)!r}; aelab reads "
        f"{', '.join(TABLE_EXTENSIONS)}, image files and folders of images"
    )


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV file, tolerating a preamble line and a missing header row.

    A first line whose field count differs from the rows below it (scikit-learn's
    bundled CSVs start with "n_samples,n_features,names...") is skipped with a
    warning. A first row made only of numbers is data, and the columns are named
    x0, x1, ...
    """
    skip, names = _csv_layout(path)
    options = pa_csv.ReadOptions(skip_rows=skip, column_names=names)
    try:
        table = pa_csv.read_csv(path, read_options=options)
    except (pa.ArrowInvalid, OSError) as err:
        raise InvalidDataError(f"cannot read CSV {str(path)!r}: {err}") from err
    frame = table.to_pandas()
    if frame.shape[1] == 1:
        for separator in (";", "\t", "|"):
            if separator in str(frame.columns[0]):
                shown = "tab" if separator == "\t" else repr(separator)
                raise InvalidDataError(
                    f"{str(path)!r} looks separated by {shown}, not commas; aelab "
                    "reads comma-separated files, so convert it first"
                )
    return frame


def _csv_layout(path: Path, probe_rows: int = 20) -> tuple[int, list[str] | None]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(itertools.islice(csv.reader(f), probe_rows + 1))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InvalidDataError(f"cannot read CSV {str(path)!r}: {err}") from err
    rows = [row for row in rows if row]
    if len(rows) < 2:
        return 0, None
    widths = Counter(len(row) for row in rows[1:])
    width = widths.most_common(1)[0][0]
    skip = 0
    if len(rows[0]) != width:
        warnings.warn(
            f"skipped the first line of {path.name!r}: it has {len(rows[0])} fields "
            f"but the rows below have {width}",
            DataConversionWarning,
            stacklevel=4,
        )
        skip = 1
    first = rows[skip]
    # A first row of numbers with a fraction among them is data, not a header; a
    # row of whole numbers such as "2019,2020" stays a header, as pyarrow reads it.
    if all(_is_number(f) for f in first) and not all(_is_integer(f) for f in first):
        warnings.warn(
            f"the first row of {path.name!r} is numbers, so it is read as data and "
            f"the columns are named x0 to x{width - 1}",
            DataConversionWarning,
            stacklevel=4,
        )
        return skip, [f"x{i}" for i in range(width)]
    return skip, None


def _is_integer(text: str) -> bool:
    return text.strip().lstrip("+-").isdigit()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_parquet(path: Path) -> pd.DataFrame:
    if path.is_dir():
        _check_same_schema(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InvalidDataError(f"cannot read Parquet {str(path)!r}: {err}") from err
    return table.to_pandas()


def _check_same_schema(folder: Path) -> None:
    """Raise if the Parquet files of a folder do not share one set of columns."""
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".parquet", ".pq")
    )
    try:
        schemas = [(p, pq.read_schema(p)) for p in files]
    except (pa.ArrowInvalid, OSError) as err:
        raise InvalidDataError(
            f"cannot read Parquet in {str(folder)!r}: {err}"
        ) from err
    first_path, first = schemas[0]
    for other_path, other in schemas[1:]:
        if set(other.names) != set(first.names):
            missing = sorted(set(first.names) - set(other.names))
            extra = sorted(set(other.names) - set(first.names))
            raise InvalidDataError(
                f"{other_path.name!r} has other columns than {first_path.name!r} "
                f"(missing {missing}, extra {extra}); a Parquet folder must hold "
                "files with the same columns"
            )


def _read_numpy(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InvalidDataError(
            f"cannot read {str(path)!r}: {err}. aelab reads numeric arrays only "
            "(no pickled objects)"
        ) from err
    if isinstance(data, np.ndarray):
        return data
    with data:
        keys = list(data.keys())
        if "X" in keys:
            key = "X"
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise InvalidDataError(
                f"{str(path)!r} contains arrays {keys}; name the data array 'X' or "
                "save only one array"
            )
        return data[key]


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """Write a table by extension (.parquet, .csv or .npy), atomically.

    NPY files hold only numbers, so text columns such as identifiers are left out.
    """
    ext = path.suffix.lower()
    if ext not in OUTPUT_EXTENSIONS:
        raise InvalidParameterError(
            f"unsupported output type {ext or '(none)'!r} for {str(path)!r}; use "
            f"{', '.join(OUTPUT_EXTENSIONS)}"
        )
    with atomic_path(path) as tmp:
        if ext == ".npy":
            numeric = frame.select_dtypes("number")
            with open(tmp, "wb") as f:
                np.save(f, numeric.to_numpy())
        elif ext == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
