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
        self.columns = [self._fit_column(frame.iloc[:, i]) for i in range(len(names))]
        return self

    def _fit_column(self, series: pd.Series) -> NumericColumn | CategoricalColumn:
        name = str(series.name)
        if series.isna().all():
            raise InvalidDataError(
                f"column {name!r} has no values, only missing cells; drop the "
                "column (aelab fit --drop COLUMN, or frame.drop(columns=...))"
            )
        if _is_numeric(series):
            values = _numeric_values(series)
            if np.isinf(values).any():
                raise InvalidDataError(
                    f"column {name!r} contains infinite values in "
                    f"{int(np.isinf(values).sum())} rows; replace them or drop the rows"
                )
            finite = values[~np.isnan(values)]
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
        blocks = [self._transform_column(frame[c.name], c) for c in self.columns]
        matrix = np.concatenate(blocks, axis=1)
        too_large = np.abs(matrix) > np.finfo(np.float32).max
        if too_large.any():
            name = self.feature_names[int(np.flatnonzero(too_large.any(axis=0))[0])]
            raise InvalidDataError(
                f"column {name!r} has values too large for float32 after scaling "
                f"(up to {np.abs(matrix).max():.3g}); rescale the column, for example "
                "divide it by a power of ten, or use scaling='minmax'"
            )
        return matrix.astype(np.float32)

    def _transform_column(
        self, series: pd.Series, column: NumericColumn | CategoricalColumn
    ) -> np.ndarray:
        if isinstance(column, CategoricalColumn):
            return self._one_hot(series, column)
        if not _is_numeric(series):
            raise InvalidDataError(
                f"column {column.name!r} was numeric in training but now contains "
                f"{series.dtype} values such as {series.dropna().iloc[:3].tolist()}; "
                "pass numbers in this column"
            )
        values = _numeric_values(series)
        if np.isinf(values).any():
            raise InvalidDataError(
                f"column {column.name!r} contains infinite values; replace them or "
                "drop the rows"
            )
        missing = np.isnan(values)
        if missing.any() and not column.indicator:
            warnings.warn(
                f"column {column.name!r} has {int(missing.sum())} missing values but "
                f"had none in training; they were filled with the training median "
                f"{column.fill:g}",
                DataConversionWarning,
                stacklevel=4,
            )
        scaled = (np.where(missing, column.fill, values) - column.center) / column.scale
        if column.indicator:
            return np.stack([scaled, missing.astype(np.float64)], axis=1)
        return scaled[:, None]

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
                result[column.name] = matrix[:, at] * column.scale + column.center
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
    return pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def _numeric_values(series: pd.Series) -> np.ndarray:
    return series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


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
