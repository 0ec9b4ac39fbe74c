"""Out-of-core Parquet tables: streaming statistics, shuffled batches, output.

A Parquet file or folder that is too large for memory is read one record batch at
a time, so memory stays bounded by a few batches whatever the size of the table:

1. One pass fits the :class:`TablePreprocessor`. Means, variances, minima, maxima,
   missing counts and category sets are exact. The imputation medians are
   estimated from a uniform random sample of at most ``reservoir_rows`` rows, so
   they are approximate on larger tables. The same pass keeps the validation rows
   in memory: each row is held out with probability ``validation_fraction``,
   capped so that about ``MAX_VALIDATION_ROWS`` rows, or VALIDATION_BYTES of
   float64 cells, are held out in total.
2. Each epoch shuffles the row groups, splits them among the ranks, and shuffles
   the rows within a buffer of several record batches before slicing batches.
3. Outputs are appended batch by batch by :class:`TableWriter`, to a temporary
   file that replaces the target only when the last batch is written.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..errors import InvalidDataError, InvalidParameterError
from ..io_utils import atomic_path
from .sources import OUTPUT_EXTENSIONS, _check_same_schema
from .tables import MISSING, CategoricalColumn, NumericColumn, TablePreprocessor

PARQUET_EXTENSIONS = (".parquet", ".pq")
# Parquet inputs above this size on disk are streamed unless --no-stream is given.
# Decoded to float64 in pandas and then to a float32 matrix, a table takes several
# times its compressed size in memory.
STREAM_AUTO_BYTES = 2**30
# Memory budgets, each counted as float64 cells (8 bytes per row and column).
READ_BYTES = 16 * 2**20  # one record batch
SHUFFLE_BYTES = 128 * 2**20  # rows shuffled together, as float32 after transform
RESERVOIR_BYTES = 32 * 2**20  # rows sampled for the medians
VALIDATION_BYTES = 64 * 2**20  # held-out rows, kept raw until the fit is done
MAX_VALIDATION_ROWS = 50_000
MIN_VALIDATION_ROWS = 10


def is_parquet_path(path: str | os.PathLike[str]) -> bool:
    """Return True for a Parquet file or a folder that contains Parquet files."""
    path = Path(path)
    if path.is_dir():
        return any(p.suffix.lower() in PARQUET_EXTENSIONS for p in path.iterdir())
    return path.suffix.lower() in PARQUET_EXTENSIONS and path.is_file()


def should_stream(path: str | os.PathLike[str], stream: bool | None) -> bool:
    """Decide whether to stream ``path``: as requested, else by its size on disk.

    Raises:
        InvalidParameterError: Streaming was requested for data that is not Parquet.
    """
    parquet = is_parquet_path(path)
    if stream and not parquet:
        raise InvalidParameterError(
            f"--stream reads Parquet files and folders only, but {str(path)!r} is "
            "not one; convert the data to Parquet or drop --stream"
        )
    if stream is not None:
        return stream
    return parquet and ParquetDataset(path).nbytes > STREAM_AUTO_BYTES


@dataclass(frozen=True)
class Unit:
    """One row group of one file: the unit of shuffling and of sharding."""

    file: int
    row_group: int
    rows: int


class ParquetDataset:
    """A Parquet file or folder of same-schema files, read in record batches.

    Args:
        path: A Parquet file, or a folder whose ``*.parquet``/``*.pq`` files share
            one set of columns.
        exclude: Columns that are not features (the id column, dropped columns).
        read_bytes: Aim of one record batch in bytes of float64 cells.

    NOTE: pyarrow's memory while reading grows with the row group, not with the
    batch. Reading 500 float64 columns in record batches of 4,194 rows raised the
    peak memory by 65, 204 and 436 MB for row groups of 2,500, 10,000 and 25,000
    rows, which hold 10, 40 and 100 MB of decoded values (pyarrow 26). So tables
    much larger than memory should be written with row groups of tens of MB.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        exclude: tuple[str, ...] | list[str] = (),
        read_bytes: int = READ_BYTES,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InvalidDataError(f"data path {str(self.path)!r} not found")
        if self.path.is_dir():
            _check_same_schema(self.path)
            self.files = sorted(
                p for p in self.path.iterdir() if p.suffix.lower() in PARQUET_EXTENSIONS
            )
        else:
            self.files = [self.path]
        try:
            metadata = [pq.read_metadata(f) for f in self.files]
            self.schema = pq.read_schema(self.files[0])
        except (pa.ArrowInvalid, OSError) as err:
            raise InvalidDataError(
                f"cannot read Parquet {str(self.path)!r}: {err}"
            ) from err
        self.all_columns = list(self.schema.names)
        missing = [c for c in exclude if c not in self.all_columns]
        if missing:
            raise InvalidDataError(
                f"column {missing[0]!r} not found in {str(self.path)!r}; its columns "
                f"are {self.all_columns[:10]}"
            )
        self.columns = [c for c in self.all_columns if c not in exclude]
        self.units = [
            Unit(i, g, meta.row_group(g).num_rows)
            for i, meta in enumerate(metadata)
            for g in range(meta.num_row_groups)
        ]
        self.n_rows = sum(unit.rows for unit in self.units)
        self.nbytes = sum(f.stat().st_size for f in self.files)
        self.batch_rows = max(256, read_bytes // (8 * max(1, len(self.all_columns))))

    def fingerprint(self) -> dict[str, Any]:
        """Describe the files, so that a checkpoint resumes only on the same data."""
        return {
            "files": [
                [f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in self.files
            ],
            "columns": self.columns,
        }

    def read(
        self, unit: Unit, columns: list[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """Yield the rows of one row group as DataFrames of at most batch_rows."""
        columns = columns or self.all_columns
        parquet = pq.ParquetFile(self.files[unit.file])
        try:
            for batch in parquet.iter_batches(
                batch_size=self.batch_rows,
                row_groups=[unit.row_group],
                columns=columns,
                use_threads=False,
            ):
                yield batch.to_pandas()[columns]
        finally:
            parquet.close()

    def frames(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """Yield every row in file order, as DataFrames of at most batch_rows."""
        for unit in self.units:
            yield from self.read(unit, columns)

    def validation_mask(self, unit: Unit, seed: int, probability: float) -> np.ndarray:
        """Return which rows of a row group are held out for validation.

        The draw depends only on the seed and the row's place in its row group, so
        every pass and every rank holds out the same rows.
        """
        rng = np.random.default_rng([seed, unit.file, unit.row_group])
        return rng.random(unit.rows) < probability

    def training_frames(
        self, unit: Unit, seed: int, probability: float
    ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        """Yield the feature columns of a row group and each row's held-out flag."""
        mask = self.validation_mask(unit, seed, probability)
        at = 0
        for frame in self.read(unit, self.columns):
            yield frame, mask[at : at + len(frame)]
            at += len(frame)


def validation_probability(n_rows: int, n_columns: int, fraction: float) -> float:
    """Return the share of rows to hold out: ``fraction``, capped at about
    MAX_VALIDATION_ROWS rows and VALIDATION_BYTES, or 0 when fewer than
    MIN_VALIDATION_ROWS would be held out."""
    if n_rows * fraction < MIN_VALIDATION_ROWS:
        return 0.0
    cap = min(MAX_VALIDATION_ROWS, VALIDATION_BYTES // (8 * max(1, n_columns)))
    return min(fraction, max(cap, MIN_VALIDATION_ROWS) / n_rows)


# ---- streaming statistics ----------------------------------------------------------


@dataclass
class _NumericStats:
    """Running statistics of the numeric columns, merged batch by batch."""

    names: list[str]
    reservoir_rows: int
    rng: np.random.Generator
    count: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)  # sum of squared deviations from the mean
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)
    missing: np.ndarray = field(init=False)
    sample: np.ndarray = field(init=False)  # reservoir rows (S, columns)
    keys: np.ndarray = field(init=False)  # random key per reservoir row

    def __post_init__(self) -> None:
        width = len(self.names)
        self.count = np.zeros(width)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self.low = np.full(width, np.inf)
        self.high = np.full(width, -np.inf)
        self.missing = np.zeros(width, dtype=np.int64)
        self.sample = np.empty((0, width))
        self.keys = np.empty(0)

    def update(self, frame: pd.DataFrame) -> None:
        values = frame[self.names].to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.isinf(values).any(axis=0)
        if infinite.any():
            name = self.names[int(np.flatnonzero(infinite)[0])]
            raise InvalidDataError(
                f"column {name!r} contains infinite values; replace them or drop "
                "the rows"
            )
        present = ~np.isnan(values)
        count = present.sum(axis=0)
        self.missing += len(values) - count
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(present, values, 0.0).sum(axis=0) / count
            deviation = np.where(present, values - mean, 0.0)
            m2 = (deviation**2).sum(axis=0)
            # Chan et al.'s pairwise update of the mean and the squared deviations.
            total = self.count + count
            delta = mean - self.mean
            weight = np.where(total > 0, count / np.maximum(total, 1), 0.0)
            merged_mean = np.where(count > 0, self.mean + delta * weight, self.mean)
            merged_m2 = self.m2 + np.where(
                count > 0, m2 + delta**2 * self.count * weight, 0.0
            )
        self.count, self.mean, self.m2 = total, merged_mean, merged_m2
        self.low = np.minimum(self.low, np.where(present, values, np.inf).min(axis=0))
        self.high = np.maximum(
            self.high, np.where(present, values, -np.inf).max(axis=0)
        )
        self._sample(values)

    def _sample(self, values: np.ndarray) -> None:
        """Keep the rows with the smallest random keys: a uniform sample."""
        keys = self.rng.random(len(values))
        if len(self.keys) >= self.reservoir_rows:
            kept = keys < self.keys.max()
            values, keys = values[kept], keys[kept]
        if not len(keys):
            return
        sample = np.concatenate([self.sample, values])
        keys = np.concatenate([self.keys, keys])
        if len(keys) > self.reservoir_rows:
            order = np.argpartition(keys, self.reservoir_rows - 1)
            order = order[: self.reservoir_rows]
            sample, keys = sample[order], keys[order]
        self.sample, self.keys = sample, keys

    def medians(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(self.sample, axis=0)


def _labels(series: pd.Series) -> set[str]:
    """Return the distinct labels of a column as TablePreprocessor spells them."""
    labels = {str(v) for v in series.dropna().unique()}
    if series.isna().any():
        labels.add(MISSING)
    return labels


def _is_numeric_type(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    )


@dataclass
class StreamFit:
    """Result of the statistics pass: the preprocessor and the validation rows."""

    preprocessor: TablePreprocessor
    low: np.ndarray  # per output feature, minimum over the rows after transform
    high: np.ndarray  # per output feature, maximum over the rows after transform
    validation: np.ndarray  # (V, features) float32, preprocessed
    n_validation: int
    probability: float  # chance of each row to be held out


def fit_preprocessor(
    dataset: ParquetDataset,
    scaling: str,
    max_categories: int,
    seed: int,
    validation_fraction: float,
) -> StreamFit:
    """Fit a TablePreprocessor in one pass over the dataset.

    Raises:
        InvalidDataError: As :meth:`TablePreprocessor.fit` does: a column of only
            missing cells, infinite values, dates, or free text.
    """
    if dataset.n_rows == 0:
        raise InvalidDataError("the table has no rows; pass at least one row")
    if not dataset.columns:
        raise InvalidDataError("the table has no columns to train on")
    numeric, categorical = [], []
    for name in dataset.columns:
        kind = dataset.schema.field(name).type
        if _is_numeric_type(kind):
            numeric.append(name)
        elif pa.types.is_temporal(kind):
            raise InvalidDataError(
                f"column {name!r} contains dates; convert it to numbers (for "
                "example days since a fixed date) or drop it"
            )
        else:
            categorical.append(name)

    reservoir = max(10_000, RESERVOIR_BYTES // (8 * max(1, len(numeric))))
    stats = _NumericStats(numeric, reservoir, np.random.default_rng(seed))
    labels: dict[str, set[str]] = {name: set() for name in categorical}
    probability = validation_probability(
        dataset.n_rows, len(dataset.columns), validation_fraction
    )
    held_out: list[pd.DataFrame] = []
    for unit in dataset.units:
        for frame, mask in dataset.training_frames(unit, seed, probability):
            if numeric:
                stats.update(frame)
            for name in categorical:
                labels[name] |= _labels(frame[name])
                if len(labels[name]) > max_categories:
                    raise InvalidDataError(
                        f"column {name!r} looks like free text: more than "
                        f"{max_categories} distinct values, more than "
                        f"max_categories={max_categories}; drop it, pass it as "
                        "--id-column, or raise --max-categories"
                    )
            if mask.any():
                held_out.append(frame[mask])

    preprocessor = _build_preprocessor(
        dataset.columns, stats, labels, scaling, max_categories
    )
    low, high = _feature_bounds(preprocessor, stats)
    validation = np.empty((0, len(low)), dtype=np.float32)
    if held_out:
        validation = np.concatenate([preprocessor.transform(f) for f in held_out])
    return StreamFit(preprocessor, low, high, validation, len(validation), probability)


def _build_preprocessor(
    columns: list[str],
    stats: _NumericStats,
    labels: dict[str, set[str]],
    scaling: str,
    max_categories: int,
) -> TablePreprocessor:
    preprocessor = TablePreprocessor(scaling, max_categories)  # type: ignore[arg-type]
    medians = stats.medians() if stats.names else np.empty(0)
    position = {name: i for i, name in enumerate(stats.names)}
    for name in columns:
        if name in labels:
            if labels[name] <= {MISSING}:
                raise InvalidDataError(
                    f"column {name!r} has no values, only missing cells; drop the "
                    "column (aelab fit --drop COLUMN)"
                )
            preprocessor.columns.append(CategoricalColumn(name, sorted(labels[name])))
            continue
        i = position[name]
        if stats.count[i] == 0:
            raise InvalidDataError(
                f"column {name!r} has no values, only missing cells; drop the column "
                "(aelab fit --drop COLUMN)"
            )
        center, scale = _scaling(stats, i, scaling)
        preprocessor.columns.append(
            NumericColumn(
                name, center, scale, float(medians[i]), bool(stats.missing[i] > 0)
            )
        )
    return preprocessor


def _scaling(stats: _NumericStats, i: int, scaling: str) -> tuple[float, float]:
    # The same rules as TablePreprocessor's in-memory fit: population standard
    # deviation, and scale 1 for a constant column.
    # NOTE: the squared deviations overflow for values beyond about 1e154, where
    # the in-memory fit still works; such columns need rescaling first.
    if scaling == "standard":
        center = float(stats.mean[i])
        scale = float(np.sqrt(stats.m2[i] / stats.count[i]))
    elif scaling == "minmax":
        center, scale = float(stats.low[i]), float(stats.high[i] - stats.low[i])
    else:
        center, scale = 0.0, 1.0
    if not np.isfinite(scale) or scale <= 1e-12 * max(1.0, abs(center)):
        scale = 1.0
    return center, scale


def _feature_bounds(
    preprocessor: TablePreprocessor, stats: _NumericStats
) -> tuple[np.ndarray, np.ndarray]:
    position = {name: i for i, name in enumerate(stats.names)}
    low: list[float] = []
    high: list[float] = []
    for column in preprocessor.columns:
        if isinstance(column, NumericColumn):
            i = position[column.name]
            low.append((stats.low[i] - column.center) / column.scale)
            high.append((stats.high[i] - column.center) / column.scale)
            if column.indicator:
                low.append(0.0)
                high.append(1.0)
        else:
            single = len(column.categories) == 1
            low += [1.0 if single else 0.0] * len(column.categories)
            high += [1.0] * len(column.categories)
    return np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)


# ---- training batches ------------------------------------------------------------


def training_batches(
    dataset: ParquetDataset,
    preprocessor: TablePreprocessor,
    batch_size: int,
    generator: torch.Generator,
    seed: int,
    probability: float,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[torch.Tensor]:
    """Yield one epoch of this rank's shuffled training batches, (B, features).

    The row groups are shuffled with ``generator`` and dealt to the ranks in turn,
    and rows are shuffled within buffers of SHUFFLE_BYTES of float32 rows. So
    batches mix rows of several row groups, but not of the whole table: a table
    sorted by some column should be written in shuffled order, or in many small
    row groups.
    """
    draw = torch.randint(2**62, (1,), generator=generator, device=generator.device)
    rng = np.random.default_rng(int(draw))
    units = [dataset.units[i] for i in rng.permutation(len(dataset.units))]
    buffer: list[np.ndarray] = []
    buffered = 0
    width = max(1, len(preprocessor.feature_names))
    limit = max(dataset.batch_rows, SHUFFLE_BYTES // (4 * width))
    for unit in units[rank::world_size]:
        for frame, mask in dataset.training_frames(unit, seed, probability):
            if mask.any():
                frame = frame[~mask]
            if len(frame):
                buffer.append(preprocessor.transform(frame))
                buffered += len(frame)
            if buffered >= limit:
                rest = yield from _shuffled(buffer, batch_size, rng, keep_rest=True)
                buffer, buffered = rest, sum(len(b) for b in rest)
    yield from _shuffled(buffer, batch_size, rng, keep_rest=False)


def _shuffled(
    buffer: list[np.ndarray],
    batch_size: int,
    rng: np.random.Generator,
    keep_rest: bool,
) -> Iterator[torch.Tensor]:
    """Yield batches of the shuffled buffer; return the rows left over, if kept."""
    if not buffer:
        return []
    rows = np.concatenate(buffer)
    buffer.clear()  # the caller's list: its arrays are now copied into rows
    order = rng.permutation(len(rows))
    stop = len(rows) - len(rows) % batch_size if keep_rest else len(rows)
    for start in range(0, stop, batch_size):
        yield torch.from_numpy(rows[order[start : start + batch_size]])
    return [rows[order[stop:]]] if stop < len(rows) else []


# ---- incremental output ----------------------------------------------------------


class TableWriter:
    """Append DataFrames to a .parquet, .csv or .npy file, replaced atomically.

    Use as a context manager. Nothing appears at ``path`` until the block ends
    without an error. NPY output needs ``n_rows`` up front and keeps only the
    numeric columns, as :func:`aelab.data.write_table` does.
    """

    def __init__(self, path: Path, n_rows: int | None = None) -> None:
        self.path = Path(path)
        self.ext = self.path.suffix.lower()
        if self.ext not in OUTPUT_EXTENSIONS:
            raise InvalidParameterError(
                f"unsupported output type {self.ext or '(none)'!r} for "
                f"{str(self.path)!r}; use {', '.join(OUTPUT_EXTENSIONS)}"
            )
        if self.ext == ".npy" and n_rows is None:
            raise InvalidParameterError("NPY output needs the number of rows upfront")
        self.n_rows = n_rows
        self.rows_written = 0
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._npy: np.memmap | None = None

    def __enter__(self) -> TableWriter:
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        return self

    def write(self, frame: pd.DataFrame) -> None:
        if self.ext == ".csv":
            frame.to_csv(self.tmp, mode="a", header=self.rows_written == 0, index=False)
        elif self.ext == ".npy":
            numeric = frame.select_dtypes("number").to_numpy()
            if self._npy is None:
                self._npy = np.lib.format.open_memmap(
                    self.tmp,
                    mode="w+",
                    dtype=numeric.dtype,
                    shape=(self.n_rows, numeric.shape[1]),
                )
            self._npy[self.rows_written : self.rows_written + len(numeric)] = numeric
        else:
            table = pa.Table.from_pandas(
                frame, schema=self._schema, preserve_index=False
            )
            if self._parquet is None:
                self._schema = table.schema
                self._parquet = pq.ParquetWriter(self.tmp, self._schema)
            self._parquet.write_table(table)
        self.rows_written += len(frame)

    def __exit__(self, kind: Any, error: Any, trace: Any) -> bool | None:
        if self._parquet is not None:
            self._parquet.close()
        if self._npy is not None:
            self._npy.flush()
            self._npy = None
        if error is None:
            expected = self.n_rows if self.n_rows is not None else self.rows_written
            if self.rows_written == 0 or self.rows_written != expected:
                failure = InvalidDataError(
                    f"wrote {self.rows_written} rows to {str(self.path)!r} but "
                    f"expected {expected or 'at least one'}; nothing was written"
                )
                self._atomic.__exit__(InvalidDataError, failure, None)
                raise failure
        return self._atomic.__exit__(kind, error, trace)
