"""Input corruption for denoising autoencoders, applied during training only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import InvalidParameterError

NoiseKind = Literal["gaussian", "salt_pepper", "mask"]
NOISE_KINDS: tuple[str, ...] = ("gaussian", "salt_pepper", "mask")


@dataclass(frozen=True)
class Noise:
    """A corruption: its kind and amount.

    ``gaussian`` adds N(0, amount^2) to every value, in preprocessed units (pixels
    in [0, 1], or standardised table columns). ``salt_pepper`` sets each value with
    probability ``amount`` to its feature's training minimum or maximum, half each.
    ``mask`` sets each value with probability ``amount`` to zero.
    """

    kind: NoiseKind
    amount: float

    @classmethod
    def parse(cls, spec: str) -> Noise:
        """Parse ``"kind:amount"``, for example ``"gaussian:0.3"``."""
        kind, sep, amount_text = spec.partition(":")
        kind = kind.strip().lower().replace("-", "_")
        if kind not in NOISE_KINDS or not sep:
            raise InvalidParameterError(
                f"invalid noise {spec!r}; expected KIND:AMOUNT with KIND one of "
                f"{', '.join(NOISE_KINDS)}, for example 'gaussian:0.3'"
            )
        try:
            amount = float(amount_text)
        except ValueError:
            amount = float("nan")
        upper = 1.0 if kind != "gaussian" else float("inf")
        if not 0.0 < amount < upper:
            limit = "a positive number" if kind == "gaussian" else "in (0, 1)"
            raise InvalidParameterError(
                f"invalid noise amount {amount_text!r} in {spec!r}; the amount for "
                f"{kind} must be {limit}"
            )
        return cls(kind, amount)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount:g}"

    def apply(
        self, x: Tensor, low: Tensor, high: Tensor, generator: torch.Generator
    ) -> Tensor:
        """Return a corrupted copy of x; low and high broadcast against x[0]."""
        if self.kind == "gaussian":
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            return x + self.amount * noise
        draw = torch.rand(x.shape, generator=generator, device=x.device)
        hit = draw < self.amount
        if self.kind == "mask":
            return x.masked_fill(hit, 0.0)
        salt = draw < self.amount / 2
        replacement = torch.where(salt, high.expand_as(x), low.expand_as(x))
        return torch.where(hit, replacement, x)
