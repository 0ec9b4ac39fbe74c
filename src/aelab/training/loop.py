"""The training loop: Adam on in-memory tensors, early stopping, checkpoints.

Batches are sliced from one tensor by a shuffled index, so there is no per-sample
Python in the data path.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import NonFiniteLossError
from ..models import Autoencoder
from .checkpoint import TrainState, load_checkpoint, save_checkpoint
from .losses import LossName, loss_terms
from .noise import Noise

logger = logging.getLogger(__name__)

MIN_VALIDATION_ROWS = 10  # below this many samples, training runs without validation
EVAL_BATCH_SIZE = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; see :class:`aelab.AutoEncoder` for their meaning."""

    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    validation_fraction: float = 0.1
    patience: int | None = 10
    loss: LossName = "mse"
    beta: float = 1.0
    noise: str | None = None
    seed: int = 0


def split_indices(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split range(n) into shuffled training and validation indices."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * fraction))
    if n_val < 1 or n - n_val < 1 or n < MIN_VALIDATION_ROWS:
        return order, order[:0]
    return order[n_val:], order[:n_val]


class Trainer:
    """Train one model on one tensor of preprocessed samples.

    Args:
        model: The autoencoder to train, already on ``device``.
        config: Optimisation settings.
        device: Where the data and model live.
        progress: Show a progress bar over epochs (tqdm, on stderr).
        checkpoint_dir: Write a checkpoint here after every epoch, if given.
    """

    def __init__(
        self,
        model: Autoencoder,
        config: TrainConfig,
        device: torch.device,
        progress: bool = False,
        checkpoint_dir: Path | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir
        self.noise = Noise.parse(config.noise) if config.noise else None
        self.optimizer = torch.optim.Adam(
            model.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.state = TrainState()

    def fit(self, x: Tensor, resume: bool = False) -> TrainState:
        """Train on x, shape (N, ...), and return the final state.

        The model ends with the weights of the epoch with the lowest validation loss
        (the training loss when there is no validation split).

        Raises:
            NonFiniteLossError: The loss became NaN or infinite; the model keeps
                the weights of the last finished epoch.
        """
        train_idx, val_idx = split_indices(
            len(x), self.config.validation_fraction, self.config.seed
        )
        x = x.to(self.device)
        x_train, x_val = x[train_idx.to(self.device)], x[val_idx.to(self.device)]
        low, high = x_train.amin(dim=0), x_train.amax(dim=0)
        fingerprint = self._fingerprint(x)

        state = self.state = TrainState()
        if resume and self.checkpoint_dir is not None:
            state = self.state = load_checkpoint(
                self.checkpoint_dir,
                self.model,
                self.optimizer,
                self.generator,
                fingerprint,
            )
            logger.info(
                "resumed from %s after epoch %d", self.checkpoint_dir, state.epoch
            )

        epochs = range(state.epoch + 1, self.config.epochs + 1)
        bar = tqdm(epochs, desc="fit", unit="epoch", disable=not self.progress)
        for epoch in bar:
            if state.stopped_early:
                break
            started = time.perf_counter()
            last_good = _copy_weights(self.model)
            train_terms = self._train_epoch(x_train, low, high)
            if not math.isfinite(train_terms["loss"]):
                self.model.load_state_dict(last_good)
                raise NonFiniteLossError(self._non_finite_message(epoch, train_terms))
            val_terms = self._evaluate(x_val) if len(x_val) else None

            record = {"epoch": epoch, "train": train_terms, "validation": val_terms}
            record["seconds"] = round(time.perf_counter() - started, 4)
            state.history.append(record)
            self._update_best(state, epoch, (val_terms or train_terms)["loss"])
            state.epoch = epoch
            bar.set_postfix(_postfix(record))
            logger.info("epoch %d/%d %s", epoch, self.config.epochs, _postfix(record))
            if self.checkpoint_dir is not None:
                save_checkpoint(
                    self.checkpoint_dir,
                    self.model,
                    self.optimizer,
                    self.generator,
                    state,
                    fingerprint,
                )
        bar.close()

        if state.best_weights is not None:
            self.model.load_state_dict(state.best_weights)
        return state

    def _train_epoch(self, x: Tensor, low: Tensor, high: Tensor) -> dict[str, float]:
        self.model.train()
        n, batch_size = len(x), self.config.batch_size
        order = torch.randperm(n, generator=self.generator, device=self.device)
        sums: dict[str, Tensor] = {}
        for start in range(0, n, batch_size):
            batch = x[order[start : start + batch_size]]
            corrupted = batch
            if self.noise is not None:
                corrupted = self.noise.apply(batch, low, high, self.generator)
            output = self.model(corrupted, generator=self.generator)
            terms = loss_terms(output, batch, self.config.loss, self.config.beta)

            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].mean().backward()
            self.optimizer.step()

            for name, value in terms.items():
                total = value.detach().sum()
                sums[name] = sums[name] + total if name in sums else total
        return {name: float(total) / n for name, total in sums.items()}

    @torch.inference_mode()
    def _evaluate(self, x: Tensor) -> dict[str, float]:
        self.model.eval()
        sums: dict[str, float] = {}
        for start in range(0, len(x), EVAL_BATCH_SIZE):
            batch = x[start : start + EVAL_BATCH_SIZE]
            terms = loss_terms(
                self.model(batch), batch, self.config.loss, self.config.beta
            )
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.sum())
        return {name: total / len(x) for name, total in sums.items()}

    def _update_best(self, state: TrainState, epoch: int, loss: float) -> None:
        if loss < state.best_loss:
            state.best_loss, state.best_epoch = loss, epoch
            state.best_weights = _copy_weights(self.model)
            state.epochs_without_improvement = 0
            return
        state.epochs_without_improvement += 1
        patience = self.config.patience
        if patience and state.epochs_without_improvement >= patience:
            state.stopped_early = True
            logger.info(
                "early stop after epoch %d: no improvement for %d epochs (best %d)",
                epoch,
                patience,
                state.best_epoch,
            )

    def _fingerprint(self, x: Tensor) -> dict[str, Any]:
        """Describe the run so that a checkpoint resumes only the same run."""
        # A hash, not a sum: after standard scaling every column sums to about 0,
        # so two different tables of one shape would have the same sum.
        data = x.detach().cpu().contiguous().numpy()
        return {
            "model": self.model.to_config(),
            "train": asdict(self.config) | {"epochs": None},
            "data_shape": list(x.shape),
            "data_sha256": hashlib.sha256(data).hexdigest(),
        }

    def _non_finite_message(self, epoch: int, terms: dict[str, float]) -> str:
        kept = f"epoch {epoch - 1}" if epoch > 1 else "initialisation"
        return (
            f"training stopped at epoch {epoch} because the loss became "
            f"{terms['loss']}; the model keeps the weights from {kept}. Lower the "
            f"learning rate (now {self.config.learning_rate:g}), or check the input "
            "for extreme values"
        )


def _copy_weights(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    postfix = {k: f"{v:.4g}" for k, v in record["train"].items()}
    if record["validation"] is not None:
        postfix["val_loss"] = f"{record['validation']['loss']:.4g}"
    return postfix
