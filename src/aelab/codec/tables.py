"""Compress tables and numeric arrays with a trained autoencoder: code plus residual.

A table of N rows goes into an ``.aelc`` file (kind 2, see ``container.py``) as

1. the autoencoder's code of every row, each code dimension rounded with a step of
   a fraction (one of CODE_STEPS) of its standard deviation over the file, and
2. for every model column, the residual between the preprocessed value and the
   decoder's output for the rounded code, rounded with a step of
   ``2 * tolerance``; or, where that costs fewer bits, the value itself rounded
   with that step. A flag per column records which.

The decoder repeats step 1's decoding and adds the residual back, so every
preprocessed value comes back within ``tolerance`` of the original: for a column
with standard scaling, within ``tolerance`` standard deviations. One-hot
categorical columns come back exactly whenever ``tolerance < 0.5``. The better the
autoencoder predicts a row from its code, the smaller the residuals and the file.
The encoder tries each code step and keeps the smallest file; when no column
gains from the prediction, it stores no code (D = 0).

Both kinds of integers are range-coded (``constriction``), one stream per code
dimension and per model column, under a two-sided geometric distribution around
the stream's median. Each stream's distribution is one 16-bit parameter in the
file, and its frequency table is built from that parameter with integer
arithmetic only, so every machine decodes the same integers.

Payload layout (the container's latent field), integers little-endian::

    offset      size      field
    0           2         D, code dimensions (u16)
    2           2         F, model columns (u16)
    4           4         tolerance (f32)
    8           4 D       step of each code dimension (f32)
    8+4D        7 (D+F)   per stream, codes first: median (i32), parameter (u16),
                          flag (u8): 1 for a residual from the prediction, else 0
    8+11D+7F    rest      range-coded symbols (u32 words), stream after stream

A symbol more than TABLE_HALF_WIDTH from its stream's median is coded as an escape
followed by its offset from the median in 16 bits; a larger offset is an error
that asks for a larger tolerance.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import constriction
import numpy as np
import pandas as pd
import torch

from ..data.tables import NumericColumn
from ..errors import InvalidDataError, InvalidParameterError
from .container import KIND_TABLE, CompressedImage, CorruptFileError, open_file

# Each code dimension is rounded with one of these fractions of its standard
# deviation over the file, whichever gives the smallest file.
CODE_STEPS = (0.05, 0.1, 0.2, 0.4)
DEFAULT_TOLERANCE = 0.01
TABLE_HALF_WIDTH = 4096
ESCAPE_LIMIT = 1 << 15
# Frequencies of a geometric table: the centre value, then each value
# ``parameter / 2**16`` times the previous one, rounded down, at least 1.
_CENTRE_FREQUENCY = 1 << 24
_ESCAPE_FREQUENCY = 1
_CANDIDATES = tuple(int(p) for p in np.unique(np.geomspace(1, 65535, 96).astype(int)))
_HEADER = struct.Struct("<HHf")
_STREAM = struct.Struct("<iHB")


@dataclass
class TableCompression:
    """A compressed table and how closely it will decode.

    Attributes:
        data: The ``.aelc`` file's bytes.
        max_error: Largest absolute error over the numeric columns, original units.
        rms_error: Root mean square error over the numeric columns, original units.
        bits_per_value: File bits over rows times input columns.
    """

    data: bytes
    max_error: float
    rms_error: float
    bits_per_value: float


@dataclass
class TableModel:
    """A fitted :class:`~aelab.AutoEncoder` for tables, named and hashed."""

    estimator: Any
    model_id: str
    model_hash: bytes


def load_table_model(path: str | Path) -> TableModel:
    """Load an aelab table model folder and the hash that files record.

    Raises:
        ModelFormatError: The folder is not an aelab model.
        InvalidParameterError: The model was trained on images, not a table.
    """
    from ..estimator import AutoEncoder
    from ..serialization import WEIGHTS

    folder = Path(path)
    estimator = AutoEncoder.load(folder, device="cpu")
    if estimator.preprocessor_.kind != "table":
        raise InvalidParameterError(
            f"{str(folder)!r} was trained on images; compressing a table needs a "
            "model trained on such tables ('aelab fit TABLE -o MODEL')"
        )
    digest = hashlib.sha256((folder / WEIGHTS).read_bytes()).digest()[:16]
    return TableModel(estimator, folder.resolve().name or "model", digest)


def compress_table(
    model: TableModel, data: Any, tolerance: float = DEFAULT_TOLERANCE
) -> TableCompression:
    """Compress a table (DataFrame, or 2-D array for a model trained on arrays).

    Raises:
        InvalidParameterError: ``tolerance`` is not a positive number below 0.5.
        InvalidDataError: The table has missing values, or does not fit the model.
    """
    if not (isinstance(tolerance, float | int) and 0 < tolerance < 0.5):
        raise InvalidParameterError(
            f"tolerance must be a number above 0 and below 0.5, got {tolerance!r}"
        )
    estimator = model.estimator
    pre = estimator.preprocessor_
    table = estimator._read(data)
    frame = table.data
    _check_complete(frame, pre)
    x = estimator._model_input(estimator._to_matrix(table))
    codes = estimator._batches(x, estimator.model_.encode).astype(np.float64)

    predict = functools.partial(_predict, estimator)
    code_symbols, steps, use, residual, restored = plan(x, codes, predict, tolerance)
    _check_reach(residual, pre.feature_names, tolerance)

    streams = [code_symbols[:, d] for d in range(code_symbols.shape[1])]
    streams += [residual[:, f] for f in range(residual.shape[1])]
    flags = [0] * code_symbols.shape[1] + [int(u) for u in use]
    payload = _HEADER.pack(code_symbols.shape[1], residual.shape[1], tolerance)
    payload += steps.astype("<f4").tobytes() + code_streams(streams, flags)

    decoded = pre.inverse_transform(restored)
    numeric = [c for c in pre.columns if isinstance(c, NumericColumn)]
    names = [c.name for c in numeric]
    original = frame[names].to_numpy(dtype=np.float64)
    errors = decoded[names].to_numpy(dtype=np.float64) - original
    # The promise, checked before anything is written: a float64 value far from
    # its column's centre can lose more than the tolerance in float32 scaling.
    allowed = tolerance * np.array([c.scale for c in numeric]) * (1 + 1e-3)
    worse = np.abs(errors) > allowed + 1e-12
    if worse.any():
        row, col = np.argwhere(worse)[0]
        raise InvalidDataError(
            f"column {names[col]!r} cannot be kept within the tolerance: row "
            f"{row} would come back as {decoded[names[col]].iloc[row]!r} instead of "
            f"{original[row, col]!r}; pass a larger --tolerance, or store this "
            "column separately"
        )
    file = CompressedImage(
        model_id=model.model_id,
        model_hash=model.model_hash,
        height=len(frame),
        width=frame.shape[1],
        channels=0,
        bit_depth=32,
        quality=0,
        latent=payload,
        kind=KIND_TABLE,
    ).to_bytes()
    return TableCompression(
        data=file,
        max_error=float(np.abs(errors).max()) if errors.size else 0.0,
        rms_error=float(np.sqrt(np.mean(errors**2))) if errors.size else 0.0,
        bits_per_value=8 * len(file) / (len(frame) * frame.shape[1]),
    )


def plan(
    x: np.ndarray,
    codes: np.ndarray,
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tolerance: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Choose the code step and, per column, prediction or not; the fewest bits.

    ``x`` (N, F) are the preprocessed values, ``codes`` (N, D) their codes, and
    ``predict(symbols, steps)`` the model's (N, F) output for rounded codes.
    Returns the code symbols (N, D, or D = 0 without a code), the code steps,
    the per-column flags, the residual symbols (N, F) and the values the decoder
    will restore. Public so that benchmarks can plan other models (PCA) alike.
    """
    spread = codes.std(axis=0) if len(codes) > 1 else np.ones(codes.shape[1])
    step = np.float32(2 * tolerance)
    plain = np.round(x / step).astype(np.int64)
    plain_bits = np.array([_stream_bits(plain[:, f]) for f in range(x.shape[1])])
    # Without the code: every column coded directly, no prediction.
    best = (plain_bits.sum(), np.zeros(x.shape[1], bool), None, None)
    for fraction in CODE_STEPS:
        steps = (fraction * np.maximum(spread, 1e-6)).astype(np.float32)
        symbols = np.round(codes / steps).astype(np.int64)
        prediction = predict(symbols, steps)
        residual = np.round((x - prediction) / step).astype(np.int64)
        bits = np.array([_stream_bits(residual[:, f]) for f in range(x.shape[1])])
        # Each column takes the prediction only where it saves bits.
        use = bits < plain_bits
        total = sum(_stream_bits(symbols[:, d]) for d in range(symbols.shape[1]))
        total += np.where(use, bits, plain_bits).sum()
        if use.any() and total < best[0]:
            best = (total, use, symbols, steps)
    _, use, code_symbols, steps = best
    if code_symbols is None:
        code_symbols = np.zeros((len(x), 0), dtype=np.int64)
        steps = np.zeros(0, dtype=np.float32)
        prediction = np.zeros_like(x)
    else:
        prediction = predict(code_symbols, steps) * use[None, :]
    residual = np.round((x - prediction) / step).astype(np.int64)
    restored = prediction + residual.astype(np.float32) * step

    return code_symbols, steps, use, residual, restored


def decompress_table(model: TableModel, data: bytes, name: str = "the file") -> Any:
    """Decode a file written by :func:`compress_table` with the same model.

    Returns a DataFrame, or a float64 array for a model trained on arrays.

    Raises:
        CorruptFileError: The bytes are truncated, altered, or not a table file.
        InvalidDataError: The file was written with another model.
    """
    file = open_file(data, name, KIND_TABLE, model.model_id, model.model_hash)
    estimator = model.estimator
    rows, payload = file.height, file.latent
    latent_dim = estimator.model_.latent_dim
    columns = len(estimator.preprocessor_.feature_names)
    if len(payload) < _HEADER.size:
        raise CorruptFileError(f"{name} has a table payload of the wrong size")
    dims, f, tolerance = _HEADER.unpack_from(payload)
    if dims not in (0, latent_dim) or f != columns or not 0 < tolerance < 0.5:
        raise CorruptFileError(
            f"{name} declares {dims} code dimensions, {f} columns and tolerance "
            f"{tolerance:g}, but the model has {latent_dim} and {columns}"
        )
    streams = dims + columns
    header_size = _HEADER.size + 4 * dims + _STREAM.size * streams
    if len(payload) < header_size or (len(payload) - header_size) % 4:
        raise CorruptFileError(f"{name} has a table payload of the wrong size")
    steps = np.frombuffer(payload, "<f4", dims, _HEADER.size).astype(np.float32)
    words = np.frombuffer(payload, "<u4", offset=header_size).astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    values, flags = [], []
    for i in range(streams):
        centre, parameter, flag = _STREAM.unpack_from(
            payload, _HEADER.size + 4 * dims + _STREAM.size * i
        )
        flags.append(flag)
        try:
            values.append(_decode(decoder, rows, parameter) + centre)
        except (AssertionError, ValueError, RuntimeError, OverflowError) as err:
            message = f"{name} is damaged ({err}); no table was decoded"
            raise CorruptFileError(message) from err
    if not decoder.maybe_exhausted():
        raise CorruptFileError(f"{name} has data after its last table value")
    residual = np.stack(values[dims:], axis=1).astype(np.float32)
    use = np.array(flags[dims:]) == 1
    if dims and use.any():
        code_symbols = np.stack(values[:dims], axis=1)
        prediction = _predict(estimator, code_symbols, steps) * use[None, :]
    else:
        prediction = np.zeros_like(residual)
    restored = prediction + residual * np.float32(2 * tolerance)
    frame = estimator.preprocessor_.inverse_transform(restored)
    if estimator.preprocessor_.from_array:
        return frame.to_numpy(dtype=np.float64)
    return frame


def code_streams(streams: list[np.ndarray], flags: list[int] | None = None) -> bytes:
    """Range-code integer streams; return their parameters, then the coded words.

    Each stream gets its median and the geometric parameter that codes it in the
    fewest bits, and its flag byte (0 when not given). Public so that benchmarks
    can code other predictors' residuals with the same coder.
    """
    encoder = constriction.stream.queue.RangeEncoder()
    parameters = b""
    for i, values in enumerate(streams):
        centre = int(np.median(values))
        parameter, _ = _best_parameter(values - centre)
        parameters += _STREAM.pack(centre, parameter, flags[i] if flags else 0)
        _encode(encoder, values - centre, parameter)
    return parameters + encoder.get_compressed().astype("<u4").tobytes()


def _check_complete(frame: pd.DataFrame, pre: Any) -> None:
    """Refuse missing values and categories the model cannot reproduce."""
    missing = frame.columns[frame.isna().any().to_numpy()].tolist()
    if missing:
        raise InvalidDataError(
            f"column {missing[0]!r} has missing values; the table codec stores "
            "complete tables only, so fill or drop those rows first"
        )
    for column in pre.columns:
        if isinstance(column, NumericColumn):
            continue
        labels = frame[column.name].astype(str)
        unseen = ~labels.isin(column.categories)
        if unseen.any():
            value = labels[unseen].iloc[0]
            found = "an empty value" if value == "" else f"the category {value!r}"
            raise InvalidDataError(
                f"column {column.name!r} has {found}, which the "
                "model never saw in training, so it cannot come back; train the "
                "model on data with this category, or drop those rows"
            )


def _check_reach(residual: np.ndarray, names: list[str], tolerance: float) -> None:
    """Refuse residuals beyond the escape range, naming the column and a fix."""
    centred = residual - np.median(residual, axis=0).astype(np.int64)
    reach = np.abs(centred).max(axis=0)
    if (reach < ESCAPE_LIMIT).all():
        return
    col = int(np.argmax(reach))
    needed = tolerance * reach[col] / (ESCAPE_LIMIT - 1)
    raise InvalidParameterError(
        f"column {names[col]!r} has a value {reach[col] * 2 * tolerance:.4g} scaled "
        f"units from what the model predicts, more than tolerance {tolerance:g} "
        f"can code; pass --tolerance {needed:.2g} or larger"
    )


def _predict(estimator: Any, symbols: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Return the decoder's (N, F) float32 output for rounded codes, on both sides."""
    codes = symbols.astype(np.float32) * steps[None, :]
    with torch.inference_mode():
        return estimator._batches(codes, estimator.model_.decode)


def _table(parameter: int) -> np.ndarray:
    """Return integer frequencies of offsets -H..H (H, the half width), then escape."""
    half = [_CENTRE_FREQUENCY]
    while len(half) <= TABLE_HALF_WIDTH and half[-1] > 1:
        half.append(max(1, (half[-1] * parameter) >> 16))
    side = np.array(half[1:], dtype=np.int64)
    return np.concatenate([side[::-1], half[:1], side, [_ESCAPE_FREQUENCY]])


@functools.lru_cache(maxsize=256)
def _probabilities(parameter: int) -> tuple[np.ndarray, int]:
    """Return the table of ``parameter`` as probabilities, and its half width."""
    freq = _table(parameter)
    probs = freq / float(freq.sum())
    probs.flags.writeable = False
    return probs, (len(freq) - 2) // 2


def _stream_bits(values: np.ndarray) -> float:
    """Estimate the bits that :func:`code_streams` spends on one stream."""
    return _best_parameter(values - int(np.median(values)))[1]


def _best_parameter(offsets: np.ndarray) -> tuple[int, float]:
    """Find the parameter that codes ``offsets`` in the fewest bits; return both."""
    magnitude = np.minimum(np.abs(offsets), TABLE_HALF_WIDTH + 1)
    counts = np.bincount(magnitude, minlength=TABLE_HALF_WIDTH + 2)
    best, best_bits = 0, np.inf
    for parameter in _CANDIDATES:
        probs, half = _probabilities(parameter)
        inside = counts[: half + 1] @ -np.log2(probs[half : 2 * half + 1])
        escapes = counts[half + 1 :].sum() * (16 - np.log2(probs[-1]))
        if inside + escapes < best_bits:
            best, best_bits = parameter, float(inside + escapes)
    return best, best_bits


def _encode(encoder: Any, offsets: np.ndarray, parameter: int) -> None:
    probs, half = _probabilities(parameter)
    escaped = np.abs(offsets) > half
    if np.any(np.abs(offsets[escaped]) >= ESCAPE_LIMIT):
        raise InvalidParameterError(
            "a value lies too far from what the model predicts for this tolerance; "
            "pass a larger --tolerance"
        )
    index = np.where(escaped, 2 * half + 1, offsets + half)
    model = constriction.stream.model.Categorical(probs, perfect=False)
    encoder.encode(index.astype(np.int32), model)
    if escaped.any():
        raw = (offsets[escaped] + ESCAPE_LIMIT).astype(np.int32)
        encoder.encode(raw, constriction.stream.model.Uniform(2 * ESCAPE_LIMIT))


def _decode(decoder: Any, rows: int, parameter: int) -> np.ndarray:
    probs, half = _probabilities(parameter)
    model = constriction.stream.model.Categorical(probs, perfect=False)
    index = decoder.decode(model, rows).astype(np.int64)
    offsets = index - half
    escaped = index == 2 * half + 1
    raw = decoder.decode(
        constriction.stream.model.Uniform(2 * ESCAPE_LIMIT), int(escaped.sum())
    )
    offsets[escaped] = raw.astype(np.int64) - ESCAPE_LIMIT
    return offsets
