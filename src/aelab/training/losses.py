"""Reconstruction and KL losses, each returned per sample as a named term."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from ..models import AEOutput

LossName = Literal["mse", "l1", "bce"]
LOSSES: tuple[str, ...] = ("mse", "l1", "bce")


def element_loss(output: AEOutput, target: Tensor, loss: LossName = "mse") -> Tensor:
    """Compute the loss of every element, the same shape as ``target``."""
    if loss == "mse":
        return (output.x_hat - target).pow(2)
    if loss == "l1":
        return (output.x_hat - target).abs()
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(
            output.logits, target, reduction="none"
        )
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def reconstruction_error(
    output: AEOutput, target: Tensor, loss: LossName = "mse"
) -> Tensor:
    """Sum the per-element loss over every feature or pixel, giving shape (B,)."""
    return element_loss(output, target, loss).flatten(1).sum(dim=1)


def loss_terms(
    output: AEOutput, target: Tensor, loss: LossName = "mse", beta: float = 1.0
) -> dict[str, Tensor]:
    """Compute the named loss terms per sample, each of shape (B,).

    The dict contains ``recon``, ``kl`` for variational models, and
    ``loss = recon + beta * kl``, the quantity that training minimises.
    """
    recon = reconstruction_error(output, target, loss)
    terms = {"recon": recon}
    if output.posterior is not None:
        kl = output.posterior.kl()
        terms["kl"] = kl
        terms["loss"] = recon + beta * kl
    else:
        terms["loss"] = recon
    return terms
