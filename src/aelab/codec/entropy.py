"""Integer probability tables and range coding of quantised latents.

The learned prior is evaluated once, when a codec is saved, and turned into integer
frequency tables that are stored in the model file. Coding uses only those integers
and ``constriction``'s range coder, so a file decodes to the same symbols on any
machine, thread count or process: no floating-point density is evaluated while
decoding.

Each (quality, channel) pair has a table over the integers ``offset`` to
``offset + length - 1`` plus one escape symbol at index ``length``. A latent value
outside that range is coded as the escape symbol followed by the value itself under
a uniform model over 16 bits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import constriction
import numpy as np
import torch

from ..errors import InvalidDataError
from .model import FactorizedPrior

# Frequencies of one table sum to 2**PRECISION.
PRECISION = 22
# Values whose probability in the prior's tails is below this go through the
# escape symbol; the tails' mass becomes the escape symbol's probability.
TAIL_MASS = 1e-6
# Escaped values are coded in 16 bits, offset so negative values fit.
ESCAPE_BITS = 16
ESCAPE_OFFSET = 1 << (ESCAPE_BITS - 1)
SEARCH_RANGE = 2048


@dataclass
class EntropyTables:
    """Integer tables of every (quality, channel): the only data coding reads.

    Attributes:
        offsets: int32 (Q, C), the latent value of symbol 0.
        lengths: int32 (Q, C), how many values have their own symbol.
        starts: int32 (Q, C), where each table begins in ``frequencies``.
        frequencies: int32, all tables one after another. Table ``[q, c]`` is
            ``lengths[q, c]`` value frequencies followed by the escape frequency,
            every entry at least 1, summing to 2**PRECISION.
    """

    offsets: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray
    frequencies: np.ndarray

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"tables.{name}": torch.from_numpy(getattr(self, name))
            for name in ("offsets", "lengths", "starts", "frequencies")
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> EntropyTables:
        arrays = {
            name: tensors[f"tables.{name}"].numpy().astype(np.int32)
            for name in ("offsets", "lengths", "starts", "frequencies")
        }
        tables = cls(**arrays)
        tables.check()
        return tables

    def check(self) -> None:
        """Raise InvalidDataError unless every table is a valid distribution."""
        shape = self.offsets.shape
        ok = self.lengths.shape == shape and self.starts.shape == shape
        ok = ok and bool((self.lengths >= 1).all()) and bool((self.starts >= 0).all())
        ok = ok and bool((self.starts + self.lengths < len(self.frequencies)).all())
        if ok:
            for quality in range(shape[0]):
                for channel in range(shape[1]):
                    row = self.table(quality, channel)
                    ok = ok and row.min() >= 1 and row.sum() == 1 << PRECISION
        if not ok:
            raise InvalidDataError("the codec's probability tables are inconsistent")

    def table(self, quality: int, channel: int) -> np.ndarray:
        start = self.starts[quality, channel]
        return self.frequencies[start : start + self.lengths[quality, channel] + 1]

    def probabilities(self, quality: int, channel: int) -> np.ndarray:
        return self.table(quality, channel).astype(np.float64) / float(1 << PRECISION)


@torch.no_grad()
def build_tables(prior: FactorizedPrior) -> EntropyTables:
    """Evaluate ``prior`` on the integers and quantise it to frequency tables."""
    prior = copy.deepcopy(prior).double()
    qualities = prior.matrices[0].shape[0]
    channels = prior.matrices[0].shape[1]
    grid = torch.arange(-SEARCH_RANGE, SEARCH_RANGE + 1, dtype=torch.float64)
    offsets = np.zeros((qualities, channels), dtype=np.int32)
    lengths = np.zeros((qualities, channels), dtype=np.int32)
    starts = np.zeros((qualities, channels), dtype=np.int32)
    pieces, position = [], 0
    for quality in range(qualities):
        values = grid.expand(channels, 1, -1)
        cdf_lower = torch.sigmoid(prior.logits_cdf(values - 0.5, quality))[:, 0]
        cdf_upper = torch.sigmoid(prior.logits_cdf(values + 0.5, quality))[:, 0]
        for channel in range(channels):
            offset, freq = _quantise(
                cdf_lower[channel].numpy(), cdf_upper[channel].numpy(), grid
            )
            offsets[quality, channel] = offset
            lengths[quality, channel] = len(freq) - 1
            starts[quality, channel] = position
            pieces.append(freq)
            position += len(freq)
    tables = EntropyTables(offsets, lengths, starts, np.concatenate(pieces))
    tables.check()
    return tables


def _quantise(
    cdf_lower: np.ndarray, cdf_upper: np.ndarray, grid: torch.Tensor
) -> tuple[int, np.ndarray]:
    """Return the offset and integer frequencies (escape last) of one channel."""
    inside = (cdf_upper > TAIL_MASS / 2) & (cdf_lower < 1 - TAIL_MASS / 2)
    index = np.flatnonzero(inside)
    if index.size == 0:  # a degenerate prior: code everything as escapes
        index = np.array([SEARCH_RANGE])
    lo, hi = index[0], index[-1]
    pmf = np.maximum(cdf_upper[lo : hi + 1] - cdf_lower[lo : hi + 1], 0.0)
    escape = max(1.0 - pmf.sum(), TAIL_MASS)
    probs = np.append(pmf, escape)
    total = 1 << PRECISION
    freq = np.maximum(np.floor(probs / probs.sum() * total), 1).astype(np.int64)
    # Take the rounding excess (or add the deficit) from the largest entries,
    # keeping every entry at least 1.
    excess = int(freq.sum() - total)
    for i in np.argsort(-freq, kind="stable"):
        if excess == 0:
            break
        change = min(excess, int(freq[i]) - 1) if excess > 0 else excess
        freq[i] -= change
        excess -= change
    if excess != 0:
        raise InvalidDataError("the codec's prior is too wide to tabulate")
    return int(grid[lo].item()), freq.astype(np.int32)


def encode_latent(symbols: np.ndarray, tables: EntropyTables, quality: int) -> bytes:
    """Range-code an int32 latent (C, H, W) at ``quality`` (0-based)."""
    encoder = constriction.stream.queue.RangeEncoder()
    escape_model = constriction.stream.model.Uniform(1 << ESCAPE_BITS)
    for channel in range(symbols.shape[0]):
        values = symbols[channel].reshape(-1).astype(np.int64)
        length = int(tables.lengths[quality, channel])
        index = values - int(tables.offsets[quality, channel])
        escaped = (index < 0) | (index >= length)
        index[escaped] = length
        model = constriction.stream.model.Categorical(
            tables.probabilities(quality, channel), perfect=False
        )
        encoder.encode(index.astype(np.int32), model)
        if escaped.any():
            raw = values[escaped] + ESCAPE_OFFSET
            if raw.min() < 0 or raw.max() >= 1 << ESCAPE_BITS:
                raise InvalidDataError(
                    "a latent value is outside the 16-bit escape range; the image "
                    "is far from anything the codec was trained on"
                )
            encoder.encode(raw.astype(np.int32), escape_model)
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_latent(
    payload: bytes, tables: EntropyTables, quality: int, shape: tuple[int, int, int]
) -> np.ndarray:
    """Decode an int32 latent of ``shape`` (C, H, W) written by encode_latent."""
    if len(payload) % 4:
        raise InvalidDataError("the compressed stream is not a whole number of words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    escape_model = constriction.stream.model.Uniform(1 << ESCAPE_BITS)
    channels, height, width = shape
    latent = np.empty((channels, height * width), dtype=np.int32)
    for channel in range(channels):
        length = int(tables.lengths[quality, channel])
        model = constriction.stream.model.Categorical(
            tables.probabilities(quality, channel), perfect=False
        )
        try:
            index = decoder.decode(model, height * width).astype(np.int64)
            escaped = index == length
            raw = decoder.decode(escape_model, int(escaped.sum())).astype(np.int64)
        except (AssertionError, ValueError, RuntimeError) as err:
            raise InvalidDataError(
                f"the compressed stream does not decode under this codec ({err})"
            ) from err
        values = index + int(tables.offsets[quality, channel])
        values[escaped] = raw - ESCAPE_OFFSET
        latent[channel] = values
    if not decoder.maybe_exhausted():
        raise InvalidDataError(
            "the compressed stream is longer than the image its header declares"
        )
    return latent.reshape(shape)
