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

Context classes. Channels are coded one after another, and a codec may hold K
tables per (quality, channel), one per context class. The class of a position in
channel ``c`` comes from channels already coded: the sum of the magnitudes of
channels ``c - window`` to ``c - 1`` (channel 0, the block mean, left out),
averaged over the (2 radius + 1)^2 neighbourhood inside the image, then compared
with the class edges. A block whose previous coefficients are large is likely to
have large ones in the next channel too, so its values get a wider table. The
decoder computes the same classes from the symbols it has decoded, in integers
only. The tables of each class are histograms of training latents, made when the
codec is saved (:func:`build_tables` with ``latents``). Codecs without context
tables have K = 1 and store no ``tables.context``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

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
# Context classes: how many previous channels, the neighbourhood radius, and the
# class edges on the neighbourhood mean, in quarters (0.25, 0.75, 1.5, ... 90).
# Measured on kodim01-12 with the bundled transform, these 14 classes took 4%
# (lowest quality) to 11% (highest) off the factorized tables' bits.
CONTEXT_WINDOW = 12
CONTEXT_RADIUS = 1
CONTEXT_EDGES = (1, 3, 6, 10, 16, 24, 36, 52, 76, 112, 160, 240, 360)
# Weight, in samples, of the factorized prior mixed into each class histogram, so
# a class with few training samples falls back to the prior.
PRIOR_COUNT = 20


@dataclass
class EntropyTables:
    """Integer tables of every (quality, class, channel): the only data coding reads.

    Attributes:
        offsets: int32 (Q, C), the latent value of symbol 0.
        lengths: int32 (Q, C), how many values have their own symbol.
        starts: int32 (Q, K, C), where each table begins in ``frequencies``.
        frequencies: int32, all tables one after another. Table ``[q, k, c]`` is
            ``lengths[q, c]`` value frequencies followed by the escape frequency,
            every entry at least 1, summing to 2**PRECISION.
        context: int32, empty when K = 1, else ``[window, radius, *edges]`` (see
            the module docstring), with K = len(edges) + 1.
    """

    offsets: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray
    frequencies: np.ndarray
    context: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    _models: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def classes(self) -> int:
        return self.starts.shape[1]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        arrays = {
            "offsets": self.offsets,
            "lengths": self.lengths,
            "starts": self.starts,
            "frequencies": self.frequencies,
        }
        if self.classes == 1:
            # The layout of codecs from before context classes, byte for byte.
            arrays["starts"] = np.ascontiguousarray(self.starts[:, 0])
        else:
            arrays["context"] = self.context
        return {f"tables.{k}": torch.from_numpy(v) for k, v in arrays.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> EntropyTables:
        names = ["offsets", "lengths", "starts", "frequencies"]
        if "tables.context" in tensors:
            names.append("context")
        arrays = {
            name: tensors[f"tables.{name}"].numpy().astype(np.int32) for name in names
        }
        if arrays["starts"].ndim == 2:
            arrays["starts"] = arrays["starts"][:, None, :]
        tables = cls(**arrays)
        tables.check()
        return tables

    def check(self) -> None:
        """Raise InvalidDataError unless every table is a valid distribution."""
        shape = self.offsets.shape
        ok = self.lengths.shape == shape and self.starts.ndim == 3
        ok = ok and self.starts.shape[::2] == shape
        ok = ok and bool((self.lengths >= 1).all()) and bool((self.starts >= 0).all())
        ends = self.starts + self.lengths[:, None, :]
        ok = ok and bool((ends < len(self.frequencies)).all())
        if self.classes > 1:
            edges = self.context[2:]
            ok = ok and len(self.context) == self.classes + 1
            ok = ok and bool(self.context[0] >= 1) and bool(self.context[1] >= 0)
            ok = ok and bool((edges[1:] > edges[:-1]).all()) and edges[0] >= 0
        else:
            ok = ok and len(self.context) == 0
        if ok:
            for quality in range(shape[0]):
                for k in range(self.classes):
                    for channel in range(shape[1]):
                        row = self.table(quality, channel, k)
                        ok = ok and row.min() >= 1 and row.sum() == 1 << PRECISION
        if not ok:
            raise InvalidDataError("the codec's probability tables are inconsistent")

    def table(self, quality: int, channel: int, k: int = 0) -> np.ndarray:
        start = self.starts[quality, k, channel]
        return self.frequencies[start : start + self.lengths[quality, channel] + 1]

    def probabilities(self, quality: int, channel: int, k: int = 0) -> np.ndarray:
        freq = self.table(quality, channel, k)
        return freq.astype(np.float64) / float(1 << PRECISION)

    def model(self, quality: int, channel: int, k: int):
        """Return the range coder's model of one table, built once."""
        key = (quality, channel, k)
        if key not in self._models:
            self._models[key] = constriction.stream.model.Categorical(
                self.probabilities(quality, channel, k), perfect=False
            )
        return self._models[key]


class ContextClasses:
    """The context class of every position, channel after channel.

    Call :meth:`next` for the classes of channel ``c`` (a flat int array over
    height x width), then :meth:`push` with that channel's values, in order
    ``c = 0, 1, ...``. The encoder and decoder run the same sequence, so both see
    the same classes. Integer arithmetic only.
    """

    def __init__(self, tables: EntropyTables, height: int, width: int) -> None:
        self.active = tables.classes > 1
        self.size = height * width
        if not self.active:
            return
        self.window, self.radius = int(tables.context[0]), int(tables.context[1])
        self.edges = tables.context[2:].astype(np.int64)
        self.total = np.zeros((height, width), dtype=np.int64)
        self.recent: list[np.ndarray] = []
        self.count = _box_sum(np.ones((height, width), np.int64), self.radius)
        self.channel = 0

    def next(self) -> np.ndarray:
        if not self.active:
            return np.zeros(self.size, dtype=np.int64)
        box = 4 * _box_sum(self.total, self.radius)
        # The class is how many edges the neighbourhood mean (box / count,
        # here in quarters) reaches: edge * count <= 4 * box sum.
        reached = self.edges[None, None, :] * self.count[..., None] <= box[..., None]
        return reached.sum(-1).reshape(-1)

    def push(self, values: np.ndarray) -> None:
        if not self.active:
            return
        if self.channel >= 1:
            magnitude = np.abs(values.reshape(self.total.shape).astype(np.int64))
            self.total += magnitude
            self.recent.append(magnitude)
            if len(self.recent) > self.window:
                self.total -= self.recent.pop(0)
        self.channel += 1


def _box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """Sum of each (2 radius + 1)^2 neighbourhood, zero outside the array."""
    if radius == 0:
        return values.copy()
    height, width = values.shape
    padded = np.pad(values, radius)
    out = np.zeros_like(values)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out += padded[dy : dy + height, dx : dx + width]
    return out


@torch.no_grad()
def build_tables(
    prior: FactorizedPrior,
    latents: Iterable[tuple[int, np.ndarray]] | None = None,
    edges: tuple[int, ...] = CONTEXT_EDGES,
) -> EntropyTables:
    """Evaluate ``prior`` on the integers and quantise it to frequency tables.

    ``latents`` are pairs of a quality (0-based) and a rounded training latent,
    an int array of shape (C, H, W). With them, the tables get context classes.
    Each class's table is the histogram of the training values in that class,
    mixed with the prior's table at a weight of PRIOR_COUNT samples. The pairs
    are read one at a time, so they can come from a generator. ``edges`` are the
    class edges in quarters (see CONTEXT_EDGES).
    """
    tables = _prior_tables(prior)
    if latents is None:
        return tables
    return _context_tables(tables, latents, edges)


def _prior_tables(prior: FactorizedPrior) -> EntropyTables:
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
    frequencies = np.concatenate(pieces)
    tables = EntropyTables(offsets, lengths, starts[:, None, :], frequencies)
    tables.check()
    return tables


def _context_tables(
    prior: EntropyTables,
    latents: Iterable[tuple[int, np.ndarray]],
    edges: tuple[int, ...],
) -> EntropyTables:
    qualities, channels = prior.offsets.shape
    context = np.array([CONTEXT_WINDOW, CONTEXT_RADIUS, *edges], np.int32)
    classes = len(edges) + 1
    shell = EntropyTables(
        prior.offsets, prior.lengths, np.zeros((1, classes, 1), np.int32),
        prior.frequencies, context,
    )  # fmt: skip

    # Count every training value by (quality, channel, class, table index).
    widths = prior.lengths.astype(np.int64) + 1
    counts = [
        [np.zeros(classes * int(widths[q, c]), np.int64) for c in range(channels)]
        for q in range(qualities)
    ]
    for quality, latent in latents:
        state = ContextClasses(shell, latent.shape[1], latent.shape[2])
        for channel in range(channels):
            k = state.next()
            index = _symbol_index(latent[channel].reshape(-1), prior, quality, channel)
            counts[quality][channel] += np.bincount(
                k * widths[quality, channel] + index,
                minlength=classes * int(widths[quality, channel]),
            )
            state.push(latent[channel])

    # Mix each class's histogram with the prior and quantise it to a table.
    starts = np.zeros((qualities, classes, channels), dtype=np.int32)
    pieces, position = [], 0
    for quality in range(qualities):
        for k in range(classes):
            for channel in range(channels):
                width = int(widths[quality, channel])
                seen = counts[quality][channel][k * width : (k + 1) * width]
                mixed = seen + PRIOR_COUNT * prior.probabilities(quality, channel)
                freq = _frequencies(mixed / mixed.sum())
                starts[quality, k, channel] = position
                pieces.append(freq)
                position += len(freq)

    frequencies = np.concatenate(pieces)
    tables = EntropyTables(prior.offsets, prior.lengths, starts, frequencies, context)
    tables.check()
    return tables


def _symbol_index(
    values: np.ndarray, tables: EntropyTables, quality: int, channel: int
) -> np.ndarray:
    """Map latent values to table indices, escapes to index ``length``."""
    length = int(tables.lengths[quality, channel])
    index = values.astype(np.int64) - int(tables.offsets[quality, channel])
    index[(index < 0) | (index >= length)] = length
    return index


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
    return int(grid[lo].item()), _frequencies(probs / probs.sum())


def _frequencies(probs: np.ndarray) -> np.ndarray:
    """Quantise probabilities to int32 frequencies >= 1 summing to 2**PRECISION."""
    total = 1 << PRECISION
    freq = np.maximum(np.floor(probs * total), 1).astype(np.int64)
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
    return freq.astype(np.int32)


def encode_latent(symbols: np.ndarray, tables: EntropyTables, quality: int) -> bytes:
    """Range-code an int32 latent (C, H, W) at ``quality`` (0-based).

    Channel by channel, and inside a channel class by class in raster order:
    each class's table indices, then the raw values of its escapes.
    """
    encoder = constriction.stream.queue.RangeEncoder()
    escape_model = constriction.stream.model.Uniform(1 << ESCAPE_BITS)
    contexts = ContextClasses(tables, symbols.shape[1], symbols.shape[2])
    for channel in range(symbols.shape[0]):
        values = symbols[channel].reshape(-1).astype(np.int64)
        index = _symbol_index(values, tables, quality, channel)
        escaped = index == int(tables.lengths[quality, channel])
        classes = contexts.next()
        for k in range(tables.classes):
            chosen = classes == k if tables.classes > 1 else slice(None)
            part = index[chosen]
            if part.size == 0:
                continue
            encoder.encode(part.astype(np.int32), tables.model(quality, channel, k))
            raw = values[chosen][escaped[chosen]] + ESCAPE_OFFSET
            if raw.size == 0:
                continue
            if raw.min() < 0 or raw.max() >= 1 << ESCAPE_BITS:
                raise InvalidDataError(
                    "a latent value is outside the 16-bit escape range; the image "
                    "is far from anything the codec was trained on"
                )
            encoder.encode(raw.astype(np.int32), escape_model)
        contexts.push(symbols[channel])
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
    contexts = ContextClasses(tables, height, width)
    for channel in range(channels):
        length = int(tables.lengths[quality, channel])
        offset = int(tables.offsets[quality, channel])
        classes = contexts.next()
        values = np.empty(height * width, dtype=np.int64)
        for k in range(tables.classes):
            chosen = np.flatnonzero(classes == k)
            if chosen.size == 0:
                continue
            model = tables.model(quality, channel, k)
            try:
                index = decoder.decode(model, chosen.size).astype(np.int64)
                escaped = index == length
                raw = decoder.decode(escape_model, int(escaped.sum()))
            except (AssertionError, ValueError, RuntimeError) as err:
                raise InvalidDataError(
                    f"the compressed stream does not decode under this codec ({err})"
                ) from err
            part = index + offset
            part[escaped] = raw.astype(np.int64) - ESCAPE_OFFSET
            values[chosen] = part
        latent[channel] = values
        contexts.push(latent[channel])
    if not decoder.maybe_exhausted():
        raise InvalidDataError(
            "the compressed stream is longer than the image its header declares"
        )
    return latent.reshape(shape)
