"""Benchmark aelab's core: reconstruction quality and training throughput.

Part 1 fits the convolutional ``AutoEncoder`` on scikit-learn's 8x8 digits with
user-level settings and compares its held-out reconstruction MSE with PCA at the
same code sizes.

Part 2 times ``AutoEncoder.fit`` against a minimal hand-written PyTorch loop that
trains the same module (built from ``aelab.models``) with the same initial weights,
batch size, Adam learning rate, epochs and training rows. aelab's validation split
and early stopping are off, so both sides do the same work. Runs alternate
(aelab, hand, aelab, hand, ...) after one untimed warm-up of each, and the report
gives the median of each side and their ratio.

Run ``.venv/bin/python benchmarks/bench_core.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import aelab
from aelab import AutoEncoder
from aelab.models import Autoencoder, ConvAutoencoder, DenseAutoencoder

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "core.json"
SPLIT_SEED = 0
TEST_SIZE = 0.2

# Part 1: settings a user would pick for digits. Early stopping keeps aelab's
# defaults (validation_fraction=0.1, patience=10).
LATENT_DIMS = (2, 8, 16)
MSE_SETTINGS = {
    "kind": "conv",
    "epochs": 60,
    "batch_size": 64,
    "learning_rate": 2e-3,
    "random_state": 0,
}

# Part 2: both sides train for a fixed number of epochs on every training row.
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
THROUGHPUT_LATENT_DIM = 8
SEED = 0
CONV_EPOCHS = 10
DENSE_EPOCHS = 200

# Trainer logs one INFO record per finished epoch on this logger, and the benchmark
# timestamps those records to find where each epoch of a fit ends.
TRAINER_LOGGER = "aelab.training.loop"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Compare aelab's convolutional autoencoder with PCA on held-out digits, "
            "and time AutoEncoder.fit against a hand-written PyTorch loop that "
            "trains the same module."
        )
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 epochs per reconstruction fit, 1 timed repeat per side "
        "with 2 conv and 5 dense epochs (default: off)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where to write the results as JSON "
        "(default: benchmarks/results/core.json)",
    )

    parser.add_argument(
        "--epochs",
        type=int,
        default=MSE_SETTINGS["epochs"],
        help="maximum epochs of each reconstruction fit, before early stopping "
        f"(default: {MSE_SETTINGS['epochs']})",
    )

    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs per side in the throughput comparison (default: 5)",
    )
    parser.add_argument(
        "--conv-epochs",
        type=int,
        default=CONV_EPOCHS,
        help=f"epochs per timed conv fit (default: {CONV_EPOCHS})",
    )
    parser.add_argument(
        "--dense-epochs",
        type=int,
        default=DENSE_EPOCHS,
        help=f"epochs per timed dense fit (default: {DENSE_EPOCHS})",
    )

    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice, usually one per "
        "core)",
    )
    args = parser.parse_args(argv)

    if args.quick:
        args.epochs, args.repeats = 2, 1
        args.conv_epochs, args.dense_epochs = 2, 5

    for name in ("repeats", "epochs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")
    for name in ("conv_epochs", "dense_epochs"):
        if getattr(args, name) < 2:
            # The steady-state rate leaves out the first epoch, so it needs two.
            parser.error(f"--{name.replace('_', '-')} must be at least 2")
    return args


# ---- data ------------------------------------------------------------------------


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """Return the digits split into train and test images (N, 8, 8) in [0, 1]."""
    images = load_digits().images / 16.0
    train, test = train_test_split(images, test_size=TEST_SIZE, random_state=SPLIT_SEED)
    return train, test


def load_table_rows() -> np.ndarray:
    """Return the training rows (N, 30) of the breast cancer table, unscaled."""
    rows = load_breast_cancer().data
    train, _ = train_test_split(rows, test_size=TEST_SIZE, random_state=SPLIT_SEED)
    return train


# ---- part 1: reconstruction ------------------------------------------------------


def measure_reconstruction(
    train: np.ndarray, test: np.ndarray, latent_dims: tuple[int, ...], epochs: int
) -> list[dict[str, Any]]:
    """Fit aelab and PCA at each code size and return their held-out MSE."""
    rows = []
    train_flat = train.reshape(len(train), -1)
    test_flat = test.reshape(len(test), -1)
    settings = MSE_SETTINGS | {"epochs": epochs}
    for latent_dim in latent_dims:
        started = time.perf_counter()
        model = AutoEncoder(latent_dim=latent_dim, **settings)
        model.fit(train)
        fit_seconds = time.perf_counter() - started
        aelab_mse = float(np.mean((model.reconstruct(test) - test) ** 2))

        pca = PCA(n_components=latent_dim, random_state=SPLIT_SEED).fit(train_flat)
        restored = pca.inverse_transform(pca.transform(test_flat))
        pca_mse = float(np.mean((restored - test_flat) ** 2))

        rows.append(
            {
                "latent_dim": latent_dim,
                "aelab_mse": aelab_mse,
                "pca_mse": pca_mse,
                "ratio": aelab_mse / pca_mse,
                "epochs_run": len(model.history_),
                "best_epoch": model.best_epoch_,
                "stopped_early": model.stopped_early_,
                "fit_seconds": fit_seconds,
            }
        )
        print(
            f"  latent_dim={latent_dim}: aelab {aelab_mse:.5f}, PCA {pca_mse:.5f} "
            f"({len(model.history_)} epochs, {fit_seconds:.0f} s)",
            flush=True,
        )
    return rows


# ---- part 2: throughput ----------------------------------------------------------


@dataclass(frozen=True)
class Instant:
    """A moment on the wall clock and on the process's CPU clock, in seconds."""

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> Instant:
        return cls(time.perf_counter(), time.process_time())


class EpochClock(logging.Handler):
    """Record ``time.perf_counter()`` whenever the trainer logs a finished epoch."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.ends: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("epoch "):
            self.ends.append(time.perf_counter())


def time_aelab_fit(
    make_estimator: Callable[[], AutoEncoder], data: np.ndarray
) -> tuple[dict[str, Any], AutoEncoder]:
    """Time one ``fit`` and return its timings and the fitted estimator."""
    clock = EpochClock()
    trainer_logger = logging.getLogger(TRAINER_LOGGER)
    old_level, old_propagate = trainer_logger.level, trainer_logger.propagate
    trainer_logger.addHandler(clock)
    trainer_logger.setLevel(logging.INFO)
    trainer_logger.propagate = False
    try:
        estimator = make_estimator()
        started = Instant.now()
        estimator.fit(data)
        finished = Instant.now()
    finally:
        trainer_logger.removeHandler(clock)
        trainer_logger.setLevel(old_level)
        trainer_logger.propagate = old_propagate
    if len(clock.ends) != len(estimator.history_):
        raise RuntimeError(
            f"expected one log record per epoch from {TRAINER_LOGGER}, got "
            f"{len(clock.ends)} for {len(estimator.history_)} epochs; the trainer's "
            "epoch log message changed, so update EpochClock"
        )
    last_loss = estimator.history_[-1]["train"]["loss"]
    return _timings(started, clock.ends, finished, last_loss), estimator


def train_by_hand(
    model: Autoencoder, x: torch.Tensor, epochs: int, seed: int
) -> tuple[list[float], float]:
    """Train ``model`` with a minimal Adam loop.

    Returns:
        The ``time.perf_counter()`` at the end of each epoch, and the mean
        per-sample loss of the last epoch.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    ends = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        loss_sum = torch.zeros(())
        for start in range(0, len(x), BATCH_SIZE):
            batch = x[order[start : start + BATCH_SIZE]]
            # The same loss as aelab's "mse": the squared error summed over the
            # features of each sample, then averaged over the batch.
            per_sample = (model(batch).x_hat - batch).pow(2).flatten(1).sum(dim=1)
            optimizer.zero_grad(set_to_none=True)
            per_sample.mean().backward()
            optimizer.step()
            loss_sum += per_sample.detach().sum()
        ends.append(time.perf_counter())
    return ends, float(loss_sum) / len(x)


def time_hand_fit(
    build_model: Callable[[], Autoencoder], x: torch.Tensor, epochs: int
) -> tuple[dict[str, Any], Autoencoder]:
    """Build the model as aelab does and time the hand-written loop on it."""
    started = Instant.now()
    # aelab seeds torch with random_state right before building the model, so the
    # same seed gives both sides identical initial weights.
    torch.manual_seed(SEED)
    model = build_model()
    ends, last_loss = train_by_hand(model, x, epochs, SEED)
    finished = Instant.now()
    return _timings(started, ends, finished, last_loss), model


def _timings(
    started: Instant, ends: list[float], finished: Instant, last_loss: float
) -> dict[str, Any]:
    return {
        "seconds": finished.wall - started.wall,
        # CPU time of all threads of this process. Unlike wall time, it leaves out
        # the time during which other processes on this machine hold the CPUs.
        "cpu_seconds": finished.cpu - started.cpu,
        "first_epoch_seconds": ends[0] - started.wall,
        "later_epoch_seconds": [
            b - a for a, b in zip(ends[:-1], ends[1:], strict=True)
        ],
        "last_epoch_loss": last_loss,
        "load_average": os.getloadavg()[0],
    }


def compare_throughput(
    name: str,
    make_estimator: Callable[[int], AutoEncoder],
    data: np.ndarray,
    build_model: Callable[[], Autoencoder],
    x: torch.Tensor,
    epochs: int,
    repeats: int,
) -> dict[str, Any]:
    """Time aelab and the hand-written loop alternately and summarise the runs.

    ``data`` is what a user passes to ``fit``. ``x`` is the same rows after the
    preprocessing that aelab applies, as a tensor ready for the model.
    """
    # Warm-up, untimed: the first Adam in a process imports torch._dynamo (2 s on
    # a 2-core Xeon VM, measured with cProfile), and the first passes allocate the
    # working buffers.
    _, estimator = time_aelab_fit(lambda: make_estimator(1), data)
    time_hand_fit(build_model, x, 2)
    if estimator.model_.to_config() != build_model().to_config():
        raise RuntimeError(
            f"{name}: the hand-written loop builds {build_model().to_config()}, "
            f"but aelab built {estimator.model_.to_config()}"
        )

    runs: dict[str, list[dict[str, Any]]] = {"aelab": [], "hand": []}
    for repeat in range(repeats):
        aelab_run, _ = time_aelab_fit(lambda: make_estimator(epochs), data)
        hand_run, _ = time_hand_fit(build_model, x, epochs)
        runs["aelab"].append(aelab_run)
        runs["hand"].append(hand_run)
        print(
            f"  {name} repeat {repeat + 1}/{repeats}: aelab "
            f"{aelab_run['seconds']:.2f} s, hand {hand_run['seconds']:.2f} s "
            f"(load average {hand_run['load_average']:.1f})",
            flush=True,
        )
    return summarise_throughput(name, runs, len(x), epochs)


def summarise_throughput(
    name: str, runs: dict[str, list[dict[str, Any]]], n_samples: int, epochs: int
) -> dict[str, Any]:
    """Turn the timed runs into medians of samples per second and their ratios."""
    summary: dict[str, Any] = {
        "model": name,
        "n_samples": n_samples,
        "epochs": epochs,
        "runs": runs,
    }
    for side, side_runs in runs.items():
        summary[side] = {
            # Whole call: preprocessing, model build and every epoch.
            "samples_per_second": statistics.median(
                n_samples * epochs / run["seconds"] for run in side_runs
            ),
            # Epochs 2..E only, so the fixed costs before the first epoch drop out.
            "steady_samples_per_second": statistics.median(
                n_samples * (epochs - 1) / sum(run["later_epoch_seconds"])
                for run in side_runs
            ),
            "cpu_seconds": statistics.median(run["cpu_seconds"] for run in side_runs),
            "first_epoch_seconds": statistics.median(
                run["first_epoch_seconds"] for run in side_runs
            ),
            "last_epoch_loss": side_runs[-1]["last_epoch_loss"],
        }

    # Every ratio is aelab's speed over the hand-written loop's, so below 1 means
    # aelab is slower.
    aelab_side, hand_side = summary["aelab"], summary["hand"]
    summary["ratio"] = (
        aelab_side["samples_per_second"] / hand_side["samples_per_second"]
    )
    summary["steady_ratio"] = (
        aelab_side["steady_samples_per_second"] / hand_side["steady_samples_per_second"]
    )
    summary["cpu_ratio"] = hand_side["cpu_seconds"] / aelab_side["cpu_seconds"]
    # Both sides see the same batches in the same order, so the losses should
    # agree to float32 rounding. A larger gap means they did different work.
    summary["loss_relative_difference"] = abs(
        aelab_side["last_epoch_loss"] / hand_side["last_epoch_loss"] - 1.0
    )
    return summary


def measure_throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the conv (digit images) and dense (breast cancer rows) comparisons."""

    def make_estimator(kind: str) -> Callable[[int], AutoEncoder]:
        def make(epochs: int) -> AutoEncoder:
            return AutoEncoder(
                kind=kind,
                latent_dim=THROUGHPUT_LATENT_DIM,
                epochs=epochs,
                batch_size=BATCH_SIZE,
                learning_rate=LEARNING_RATE,
                validation_fraction=0.0,
                patience=None,
                random_state=SEED,
                device="cpu",
            )

        return make

    images, _ = load_digit_images()
    # aelab's image preprocessing of a float array: float32, channels first.
    image_tensor = _in_fit_order(torch.from_numpy(images.astype(np.float32))[:, None])
    conv = compare_throughput(
        "conv (digits, 8x8 images)",
        make_estimator("conv"),
        images,
        lambda: ConvAutoencoder(1, 8, 8, THROUGHPUT_LATENT_DIM, hidden_dim=256),
        image_tensor,
        args.conv_epochs,
        args.repeats,
    )

    rows = load_table_rows()
    # aelab's default table preprocessing: standard scaling with the population std.
    scaled = StandardScaler().fit_transform(rows).astype(np.float32)
    row_tensor = _in_fit_order(torch.from_numpy(scaled))
    dense = compare_throughput(
        f"dense (breast cancer, {rows.shape[1]} columns)",
        make_estimator("dense"),
        rows,
        lambda: DenseAutoencoder(
            rows.shape[1],
            THROUGHPUT_LATENT_DIM,
            hidden_dims=(256, 128),
            output_activation="identity",
        ),
        row_tensor,
        args.dense_epochs,
        args.repeats,
    )
    return [conv, dense]


def _in_fit_order(x: torch.Tensor) -> torch.Tensor:
    """Permute rows as aelab's train/validation split does with validation off.

    The split shuffles all rows once with a generator seeded by random_state. With
    the rows in that order, the hand-written loop draws the same batches as aelab.
    The shuffle is data preparation and is not timed.
    """
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    return x[order]


# ---- report ----------------------------------------------------------------------


def describe_environment() -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Other processes compete for the CPUs when this exceeds cpu_count.
        "load_average_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "aelab": aelab.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_reconstruction(rows: list[dict[str, Any]], epochs: int) -> None:
    settings = MSE_SETTINGS | {"epochs": epochs}
    print("\nHeld-out reconstruction MSE, digits (images / 16, pixels in [0, 1])")
    print(
        f"  aelab AutoEncoder({', '.join(f'{k}={v!r}' for k, v in settings.items())}), "
        "default early stopping (validation_fraction=0.1, patience=10)"
    )
    print(f"  PCA(n_components=latent_dim); split 80/20, random_state={SPLIT_SEED}")
    print(f"  {'latent':>6} {'aelab':>9} {'PCA':>9} {'aelab/PCA':>10} {'epochs':>7}")
    for row in rows:
        print(
            f"  {row['latent_dim']:>6} {row['aelab_mse']:>9.5f} {row['pca_mse']:>9.5f} "
            f"{row['ratio']:>10.3f} {row['epochs_run']:>7}"
        )


def print_throughput(results: list[dict[str, Any]], repeats: int) -> None:
    print(
        f"\nTraining throughput in samples/s, median of {repeats} alternating runs "
        f"per side (batch {BATCH_SIZE}, Adam lr {LEARNING_RATE}, latent "
        f"{THROUGHPUT_LATENT_DIM}; aelab with validation_fraction=0, patience=None)"
    )
    print(
        f"  {'model':<34} {'epochs':>6} {'aelab':>8} {'hand':>8} {'ratio':>6} "
        f"{'steady':>6} {'CPU':>6} {'loss diff':>9}"
    )
    for result in results:
        aelab_side, hand_side = result["aelab"], result["hand"]
        print(
            f"  {result['model']:<34} {result['epochs']:>6} "
            f"{aelab_side['samples_per_second']:>8.0f} "
            f"{hand_side['samples_per_second']:>8.0f} {result['ratio']:>6.3f} "
            f"{result['steady_ratio']:>6.3f} {result['cpu_ratio']:>6.3f} "
            f"{result['loss_relative_difference']:>9.1e}"
        )
    print(
        "  ratio: aelab/hand for the whole fit() against the whole loop. steady: "
        "the same for\n  epochs 2..E only. CPU: hand/aelab process CPU time per "
        "fit, so it is also a speed\n  ratio. loss diff: relative gap between the "
        "two last-epoch training losses."
    )

    print("\nTime to the end of the first epoch, seconds (median)")
    print(f"  {'model':<34} {'aelab':>7} {'hand':>7} {'aelab - hand':>12}")
    for result in results:
        aelab_first = result["aelab"]["first_epoch_seconds"]
        hand_first = result["hand"]["first_epoch_seconds"]
        print(
            f"  {result['model']:<34} {aelab_first:>7.3f} {hand_first:>7.3f} "
            f"{aelab_first - hand_first:>12.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    environment = describe_environment()
    print(
        f"aelab {environment['aelab']}, torch {environment['torch']} "
        f"({environment['torch_threads']} threads), {environment['cpu_count']} CPUs: "
        f"{environment['cpu_model']}; load average "
        f"{environment['load_average_at_start']:.1f}"
    )

    print("\nPart 1: reconstruction", flush=True)
    train, test = load_digit_images()
    reconstruction = measure_reconstruction(train, test, LATENT_DIMS, args.epochs)
    print("\nPart 2: throughput", flush=True)
    throughput = measure_throughput(args)

    print_reconstruction(reconstruction, args.epochs)
    print_throughput(throughput, args.repeats)
    elapsed = time.perf_counter() - started
    print(f"\nTotal time {elapsed:.0f} s")

    results = {
        "environment": environment,
        "quick": args.quick,
        "total_seconds": elapsed,
        "reconstruction": {
            "settings": MSE_SETTINGS | {"epochs": args.epochs},
            "rows": reconstruction,
        },
        "throughput": throughput,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"Results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
