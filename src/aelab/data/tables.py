"""Table preprocessing: imputation, scaling and one-hot encoding.

The statistics are fitted on training rows only and stored in a plain dict
(:meth:`TablePreprocessor.to_config`), so a saved model applies exactly the same
transform to new rows.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import DataConversionWarning, InvalidDataError, InvalidParameterError

Scaling = Literal["standard", "minmax", "none"]
SCALINGS: tuple[str, ...] = ("standard", "minmax", "none")
_DATE_TYPES = ("date", "datetime", "datetime64", "time")
MISSING = "<missing>"  # the category that missing values of a categorical column take


@dataclass
class NumericColumn:
    """A numeric column: its imputation value, scaling and missing-value indicator."""

    name: str
    center: float
    scale: float
    fill: float  # training median, used for missing values
    indicator: bool  # True when training rows had missing values here


@dataclass
class CategoricalColumn:
    """A categorical column, one-hot encoded over the categories seen in training."""

    name: str
    categories: list[str] = field(default_factory=list)


class TablePreprocessor:
    """Turn a DataFrame into a float32 matrix and back.

    Numeric columns are imputed with the training median, scaled, and followed by a
    0/1 missing-value indicator when training rows had missing values. Boolean
    columns count as numeric. Text and categorical columns are one-hot encoded; a
    category never seen in training encodes as all zeros, with a warning.

    Args:
        scaling: "standard" (zero mean, unit variance), "minmax" (training range to
            [0, 1]) or "none". A constant column gets scale 1, never NaN.
        max_categories: A text column with more distinct values than this is
            rejected as free text rather than one-hot encoded.
    """

    kind = "table"

    def __init__(self, scaling: Scaling = "standard", max_categories: int = 50) -> None:
        if scaling not in SCALINGS:
            raise InvalidParameterError(
                f"invalid scaling {scaling!r}; expected one of {SCALINGS}"
            )
        self.scaling = scaling
        self.max_categories = max_categories
        self.columns: list[NumericColumn | CategoricalColumn] = []
        self.from_array = False

    # ---- fitting -------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, from_array: bool = False) -> TablePreprocessor:
        """Learn the column schema and statistics from training rows."""
        self._fit(frame, from_array)
        return self

    def fit_transform(
        self, frame: pd.DataFrame, from_array: bool = False
    ) -> np.ndarray:
        """Fit on the rows and transform them, converting the numbers only once."""
        block = self._fit(frame, from_array)
        return self._transform(frame, block)

    def _fit(self, frame: pd.DataFrame, from_array: bool) -> np.ndarray:
        """Fit, and return the numeric columns as float64 (N, numeric columns)."""
        if len(frame) == 0:
            raise InvalidDataError("the table has no rows; pass at least one row")
        if frame.shape[1] == 0:
            raise InvalidDataError("the table has no columns to train on")
        names = [str(c) for c in frame.columns]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InvalidDataError(
                f"the table has repeated column names {repeated}; rename them so "
                "that every column name is unique"
            )
        self.from_array = from_array
        numeric = [i for i, kind in enumerate(frame.dtypes) if _is_numeric_dtype(kind)]
        # One conversion for all numeric columns, in column-major order so that
        # each column is a contiguous view. Converting 500 columns of 20,000 rows
        # one by one took 0.25 s on a 2-core VM, a third of a dense model's epoch.
        block = np.asfortranarray(
            frame.iloc[:, numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        )
        position = {i: j for j, i in enumerate(numeric)}
        self.columns = [
            self._fit_column(
                frame.iloc[:, i], block[:, position[i]] if i in position else None
            )
            for i in range(len(names))
        ]
        return block

    def _fit_column(
        self, series: pd.Series, values: np.ndarray | None = None
    ) -> NumericColumn | CategoricalColumn:
        """Fit one column; ``values`` are its float64 values when it is numeric."""
        name = str(series.name)
        if values is None and series.isna().all():
            raise InvalidDataError(
                f"column {name!r} has no values, only missing cells; drop the "
                "column (aelab fit --drop COLUMN, or frame.drop(columns=...))"
            )
        if values is not None:
            if np.isinf(values).any():
                raise InvalidDataError(
                    f"column {name!r} contains infinite values in "
                    f"{int(np.isinf(values).sum())} rows; replace them or drop the rows"
                )
            missing = np.isnan(values)
            finite = values[~missing] if missing.any() else values
            if finite.size == 0:
                raise InvalidDataError(
                    f"column {name!r} has no values, only missing cells; drop the "
                    "column (aelab fit --drop COLUMN, or frame.drop(columns=...))"
                )
            center, scale = _scaling_stats(finite, self.scaling)
            return NumericColumn(
                name,
                center,
                scale,
                float(np.median(finite)),
                bool(finite.size < values.size),
            )
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        if pd.api.types.is_datetime64_any_dtype(series) or inferred in _DATE_TYPES:
            raise InvalidDataError(
                f"column {name!r} contains dates; convert it to numbers (for example "
                "days since a fixed date) or drop it"
            )
        labels = _labels(series)
        categories = sorted(set(labels))
        if len(categories) > self.max_categories:
            raise InvalidDataError(
                f"column {name!r} looks like free text: {len(categories)} distinct "
                f"values in {len(series)} rows, more than max_categories="
                f"{self.max_categories}; drop it, pass it as --id-column, or raise "
                "max_categories"
            )
        return CategoricalColumn(name, categories)

    # ---- transforming --------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns, in order."""
        names: list[str] = []
        for column in self.columns:
            if isinstance(column, NumericColumn):
                names.append(column.name)
                if column.indicator:
                    names.append(f"{column.name}__missing")
            else:
                names += [f"{column.name}={c}" for c in column.categories]
        return names

    def column_slices(self) -> list[tuple[str, slice]]:
        """Return each input column's name and its span in the output columns."""
        spans, at = [], 0
        for column in self.columns:
            if isinstance(column, NumericColumn):
                width = 2 if column.indicator else 1
            else:
                width = len(column.categories)
            spans.append((column.name, slice(at, at + width)))
            at += width
        return spans

    @property
    def input_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def check_columns(self, frame: pd.DataFrame) -> None:
        """Raise if the frame's columns differ from the training columns."""
        expected = self.input_names
        found = [str(c) for c in frame.columns]
        missing = [c for c in expected if c not in found]
        extra = [c for c in found if c not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"not seen in training {extra}")
            raise InvalidDataError(
                f"the table's columns differ from the training columns: "
                f"{'; '.join(parts)}. Pass the same columns the model was trained on "
                "(an identifier column goes in --id-column)"
            )

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Map rows to a float32 matrix of shape (N, len(feature_names))."""
        self.check_columns(frame)
        if len(frame) == 0:
            raise InvalidDataError("the table has no rows; pass at least one row")
        return self._transform(frame)

    def _transform(
        self, frame: pd.DataFrame, values: np.ndarray | None = None
    ) -> np.ndarray:
        """Transform checked rows; ``values`` are the numeric columns as float64,
        in training order, when the caller has them already."""
        matrix = np.empty((len(frame), len(self.feature_names)), dtype=np.float32)
        numeric: list[NumericColumn] = []
        targets: list[int] = []  # output column of each numeric column
        at = 0
        for column in self.columns:
            if isinstance(column, NumericColumn):
                numeric.append(column)
                targets.append(at)
                at += 2 if column.indicator else 1
            else:
                width = len(column.categories)
                matrix[:, at : at + width] = self._one_hot(frame[column.name], column)
                at += width
        if numeric:
            self._transform_numeric(frame, numeric, np.asarray(targets), matrix, values)
        return matrix

    def _transform_numeric(
        self,
        frame: pd.DataFrame,
        columns: list[NumericColumn],
        targets: np.ndarray,
        matrix: np.ndarray,
        values: np.ndarray | None = None,
    ) -> None:
        """Impute and scale all numeric columns at once, writing into ``matrix``."""
        for column in columns:
            series = frame[column.name]
            if not _is_numeric(series):
                raise InvalidDataError(
                    f"column {column.name!r} was numeric in training but now "
                    f"contains {series.dtype} values such as "
                    f"{series.dropna().iloc[:3].tolist()}; pass numbers in this column"
                )
        names = [column.name for column in columns]
        if values is None:
            values = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
        missing = None
        if not np.isfinite(values).all():
            infinite = np.isinf(values).any(axis=0)
            if infinite.any():
                raise InvalidDataError(
                    f"column {names[int(np.flatnonzero(infinite)[0])]!r} contains "
                    "infinite values; replace them or drop the rows"
                )
            missing = np.isnan(values)
            self._warn_unexpected_missing(columns, missing.sum(axis=0))
            fill = np.array([column.fill for column in columns])
            values = np.where(missing, fill, values)

        # A new array, never a view of the frame, so it can be divided in place.
        scaled = np.subtract(values, [column.center for column in columns])
        scaled /= [column.scale for column in columns]
        largest = np.maximum(scaled.max(axis=0), -scaled.min(axis=0))
        too_large = largest > np.finfo(np.float32).max
        if too_large.any():
            j = int(np.flatnonzero(too_large)[0])
            raise InvalidDataError(
                f"column {names[j]!r} has values too large for float32 after "
                f"scaling (up to {largest[j]:.3g}); rescale the column, for example "
                "divide it by a power of ten, or use scaling='minmax'"
            )
        span = targets[-1] - targets[0] + 1
        if span == len(targets):  # consecutive outputs: a slice copies faster
            matrix[:, targets[0] : targets[0] + span] = scaled
        else:
            matrix[:, targets] = scaled
        flags = np.array([column.indicator for column in columns])
        if missing is not None and flags.any():
            matrix[:, targets[flags] + 1] = missing[:, flags]
        elif flags.any():
            matrix[:, targets[flags] + 1] = 0.0

    def _warn_unexpected_missing(
        self, columns: list[NumericColumn], counts: np.ndarray
    ) -> None:
        for column, count in zip(columns, counts, strict=True):
            if count and not column.indicator:
                warnings.warn(
                    f"column {column.name!r} has {int(count)} missing values but "
                    f"had none in training; they were filled with the training "
                    f"median {column.fill:g}",
                    DataConversionWarning,
                    stacklevel=6,
                )

    def _one_hot(self, series: pd.Series, column: CategoricalColumn) -> np.ndarray:
        labels = np.asarray(_labels(series), dtype=object)
        categories = np.asarray(column.categories, dtype=object)
        encoded = (labels[:, None] == categories[None, :]).astype(np.float64)
        unseen = sorted(set(labels[encoded.sum(axis=1) == 0]))
        if unseen:
            warnings.warn(
                f"column {column.name!r} has categories not seen in training: "
                f"{unseen[:5]}{' ...' if len(unseen) > 5 else ''}; they were encoded "
                "as all zeros",
                DataConversionWarning,
                stacklevel=4,
            )
        return encoded

    def inverse_transform(self, matrix: np.ndarray) -> pd.DataFrame:
        """Map a matrix of shape (N, len(feature_names)) back to a table.

        Numeric columns are unscaled, indicators are dropped, and each categorical
        column takes the category with the largest value in its block.
        """
        result: dict[str, Any] = {}
        at = 0
        for column in self.columns:
            if isinstance(column, NumericColumn):
                # In float64: a float32 result would round a column centred at
                # 1.7e9 to steps of 128.
                values = matrix[:, at].astype(np.float64)
                result[column.name] = values * column.scale + column.center
                at += 2 if column.indicator else 1
            else:
                width = len(column.categories)
                picks = matrix[:, at : at + width].argmax(axis=1)
                result[column.name] = np.asarray(column.categories, dtype=object)[picks]
                at += width
        return pd.DataFrame(result)

    # ---- saving --------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scaling": self.scaling,
            "max_categories": self.max_categories,
            "from_array": self.from_array,
            "columns": [
                {"type": "numeric" if isinstance(c, NumericColumn) else "categorical"}
                | asdict(c)
                for c in self.columns
            ],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TablePreprocessor:
        self = cls(config["scaling"], config["max_categories"])
        self.from_array = config["from_array"]
        for spec in config["columns"]:
            spec = dict(spec)
            kind = spec.pop("type")
            self.columns.append(
                NumericColumn(**spec)
                if kind == "numeric"
                else CategoricalColumn(**spec)
            )
        return self


def _is_numeric(series: pd.Series) -> bool:
    return _is_numeric_dtype(series.dtype)


def _is_numeric_dtype(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _labels(series: pd.Series) -> list[str]:
    return [MISSING if pd.isna(v) else str(v) for v in series.tolist()]


def _scaling_stats(values: np.ndarray, scaling: str) -> tuple[float, float]:
    if scaling == "standard":
        # Dividing by the largest magnitude first keeps the variance of values
        # near 1e300 from overflowing to inf.
        magnitude = float(np.abs(values).max()) or 1.0
        center = float((values / magnitude).mean() * magnitude)
        scale = float((values / magnitude).std() * magnitude)
    elif scaling == "minmax":
        center, scale = float(values.min()), float(values.max() - values.min())
    else:
        center, scale = 0.0, 1.0
    # A constant column has no spread; scale 1 maps it to zeros instead of NaN.
    if not np.isfinite(scale) or scale <= 1e-12 * max(1.0, abs(center)):
        scale = 1.0
    return center, scale


def array_to_frame(array: np.ndarray) -> pd.DataFrame:
    """Wrap a 2-D numeric array as a table with columns x0, x1, ..."""
    if array.dtype.kind not in "biuf":
        raise InvalidDataError(
            f"a 2-D array must be numeric, got dtype {array.dtype}; pass a pandas "
            "DataFrame for tables with text columns"
        )
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])
