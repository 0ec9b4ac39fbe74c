"""Benchmark aelab at scale: training speed, FLOP/s, out-of-core memory, 2 ranks.

All parts run in one invocation, side by side on the same machine:

1. Training samples/s of ``AutoEncoder.fit`` against a minimal hand-written PyTorch
   loop that trains the same module from the same initial weights, and against
   PyOD's ``AutoEncoder`` with the same hidden widths, batch size, learning rate
   and epochs. A dense model trains on a generated wide table and a convolutional
   model on scikit-learn's digits upsampled to 16x16. PyOD has no convolutional
   autoencoder, so dense models on the same digits' pixels and on the 30-column
   breast cancer table are compared with it too. Runs alternate between the
   sides, and each side reports its median.
2. The same dense comparison against PyOD at each tool's own defaults: the same
   hidden widths, code size and epochs, and every other setting left alone (PyOD
   3.6.7: batch 32, batch norm, dropout 0.2, weight decay 1e-5; aelab: batch 128,
   10 % of the rows held out for choosing the best epoch). Both train on 80 % of
   the rows, and the reconstruction MSE of the other 20 %, in one standard
   scaling shared by both, shows whether either side bought speed by learning
   less.
3. ``AutoEncoder.fit`` with and without ``compile=True``, and the training loop
   with and without bfloat16 autocast on the CPU.
4. The dense model's achieved GFLOP/s, against the float32 matmul peak measured
   here with the same thread count.
5. Peak resident memory of ``aelab fit --stream`` and ``aelab encode --stream``
   on a generated Parquet folder of ``--ooc-gb`` GB, each in its own process.
6. Training samples/s of ``aelab fit`` with 1 process and with 2 processes under
   ``torchrun`` (gloo, one thread per process) on the wide table.

Run ``.venv/bin/python benchmarks/bench_scale.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer, load_digits

import aelab
from aelab import AutoEncoder
from aelab.models import Autoencoder, ConvAutoencoder, DenseAutoencoder
from aelab.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "scale.json"
DEFAULT_WORK = ROOT / "build" / "bench_scale"
SEED = 0
LATENT_DIM = 8
HIDDEN = (256, 128)
LEARNING_RATE = 1e-3
WIDE_ROWS, WIDE_COLUMNS = 20_000, 500
DENSE_BATCH, CONV_BATCH = 128, 64
IMAGE_SIZE = 16
HELD_OUT = 0.2  # share of the rows kept out of training in the defaults comparison


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per side (default: 3)"
    )
    parser.add_argument(
        "--dense-epochs",
        type=int,
        default=10,
        help="epochs per dense fit (default: 10)",
    )
    parser.add_argument(
        "--conv-epochs", type=int, default=3, help="epochs per conv fit (default: 3)"
    )
    parser.add_argument(
        "--ooc-gb",
        type=float,
        default=5.0,
        help="size of the generated Parquet folder in GB, 0 to skip (default: 5)",
    )
    parser.add_argument(
        "--ooc-epochs", type=int, default=1, help="epochs of the out-of-core fit"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help="scratch folder for generated data and models, deleted at the end "
        "(default: build/bench_scale)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default: 1)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 repeat, 2 epochs, a 0.05 GB out-of-core table",
    )
    parser.add_argument(
        "--skip-ranks",
        action="store_true",
        help="skip the 1 against 2 processes comparison",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.dense_epochs, args.conv_epochs = 1, 2, 2
        args.ooc_gb = min(args.ooc_gb, 0.05)
    return args


# ---- data ------------------------------------------------------------------------


def wide_table(rows: int = WIDE_ROWS, columns: int = WIDE_COLUMNS) -> np.ndarray:
    """Return a float32 table of rank-16 structure plus noise, (rows, columns)."""
    rng = np.random.default_rng(SEED)
    factors = rng.normal(size=(rows, 16)) @ rng.normal(size=(16, columns))
    return (factors + 0.5 * rng.normal(size=(rows, columns))).astype(np.float32)


def digit_images() -> np.ndarray:
    """Return the 1,797 digits upsampled to 16x16, (N, 16, 16) in [0, 1]."""
    images = torch.from_numpy(load_digits().images / 16.0).float()[:, None]
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear")
    return images[:, 0].clamp(0, 1).numpy()


# ---- part 1: four trainers on the same work -------------------------------------


def time_aelab(
    data: np.ndarray,
    kind: str,
    epochs: int,
    batch: int,
    check: bool = False,
    compile: bool = False,
) -> float:
    estimator = AutoEncoder(
        kind=kind,
        latent_dim=LATENT_DIM,
        hidden_dims=HIDDEN if kind == "dense" else HIDDEN[-1:],
        epochs=epochs,
        batch_size=batch,
        learning_rate=LEARNING_RATE,
        validation_fraction=0.0,
        patience=None,
        random_state=SEED,
        device="cpu",
        compile=compile,
    )
    started = time.perf_counter()
    estimator.fit(data)
    seconds = time.perf_counter() - started
    if check and estimator.model_.to_config() != build_model(kind, data).to_config():
        raise RuntimeError(
            f"the hand-written loop builds {build_model(kind, data).to_config()}, "
            f"but aelab built {estimator.model_.to_config()}"
        )
    return seconds


def build_model(kind: str, data: np.ndarray) -> Autoencoder:
    """Build the module that aelab builds for ``data``, with its initial weights."""
    torch.manual_seed(SEED)
    if kind == "dense":
        return DenseAutoencoder(data.shape[1], LATENT_DIM, HIDDEN)
    height, width = data.shape[1:]
    return ConvAutoencoder(
        1, height, width, LATENT_DIM, hidden_dim=HIDDEN[-1], output_activation="sigmoid"
    )


def time_hand(
    data: np.ndarray, kind: str, epochs: int, batch: int, fused: bool = False
) -> float:
    """Time a minimal loop: standard scaling in numpy, then Adam steps."""
    started = time.perf_counter()
    if kind == "dense":
        # Standard scaling as aelab's, where a constant column scales to zeros.
        std = data.std(0)
        x = torch.from_numpy((data - data.mean(0)) / np.where(std > 0, std, 1))
        x = x.float()
    else:
        x = torch.from_numpy(data[:, None].copy())
    model = build_model(kind, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=fused)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            rows = x[order[start : start + batch]]
            loss = (model(rows).x_hat - rows).pow(2).flatten(1).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def time_pyod(data: np.ndarray, epochs: int, batch: int) -> float:
    from pyod.models.auto_encoder import AutoEncoder as PyODAutoEncoder

    detector = PyODAutoEncoder(
        hidden_neuron_list=[*HIDDEN, LATENT_DIM],
        batch_norm=False,
        dropout_rate=0.0,
        epoch_num=epochs,
        batch_size=batch,
        lr=LEARNING_RATE,
        optimizer_params={"weight_decay": 0.0},
        device="cpu",
        random_state=SEED,
        verbose=0,
    )
    started = time.perf_counter()
    detector.fit(data.reshape(len(data), -1).astype(np.float64))
    return time.perf_counter() - started


def alternate(
    label: str, sides: dict[str, Callable[[], float]], repeats: int
) -> dict[str, list[float]]:
    """Run every side once per repeat, in turn, and return each side's seconds.

    Alternating makes the sides share whatever else loads the machine.
    """
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for repeat in range(repeats):
        for side, run in sides.items():
            seconds[side].append(run())
        print(
            f"  {label} repeat {repeat + 1}/{repeats}: "
            + ", ".join(f"{s} {v[-1]:.2f} s" for s, v in seconds.items()),
            flush=True,
        )
    return seconds


def compare_trainers(
    name: str, data: np.ndarray, kind: str, epochs: int, batch: int, repeats: int
) -> dict[str, Any]:
    """Time the trainers alternately; PyOD only for dense models, its only kind."""
    sides = {
        "aelab": lambda: time_aelab(data, kind, epochs, batch),
        "hand": lambda: time_hand(data, kind, epochs, batch),
        "hand_fused": lambda: time_hand(data, kind, epochs, batch, fused=True),
    }
    if kind == "dense":
        sides["pyod"] = lambda: time_pyod(data, epochs, batch)
    # Untimed warm-up of each side; the first also checks that aelab and the
    # hand-written loop train the same architecture.
    time_aelab(data, kind, 1, batch, check=True)
    for run in sides.values():
        run()
    seconds = alternate(name, sides, repeats)
    work = len(data) * epochs
    rates = {side: work / statistics.median(v) for side, v in seconds.items()}
    return {
        "model": name,
        "rows": len(data),
        "epochs": epochs,
        "batch_size": batch,
        "seconds": seconds,
        "samples_per_second": rates,
        "aelab_over_hand": rates["aelab"] / rates["hand"],
        "aelab_over_hand_fused": rates["aelab"] / rates["hand_fused"],
        "aelab_over_pyod": rates["aelab"] / rates["pyod"] if "pyod" in rates else None,
    }


# ---- part 2: aelab and PyOD at their own defaults ----------------------------------


class SharedScaling:
    """Standard scaling fitted on the training rows, used to score both tools.

    A constant column scales by 1, as in aelab; PyOD divides by std + 1e-8
    instead, which maps such a column to 0 as well.
    """

    def __init__(self, train: np.ndarray) -> None:
        self.mean = train.mean(axis=0)
        std = train.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)

    def mse(self, x: np.ndarray, x_hat: np.ndarray) -> float:
        """Return the mean squared error of x_hat in the scaled space."""
        error = (np.asarray(x_hat, np.float64) - x) / self.std
        return float(np.mean(error**2))


def split_rows(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the rows into shuffled training and held-out parts."""
    order = np.random.default_rng(SEED).permutation(len(data))
    n_test = int(round(HELD_OUT * len(data)))
    return data[order[n_test:]], data[order[:n_test]]


def fit_aelab_default(train: np.ndarray, epochs: int) -> tuple[float, Any]:
    """Fit aelab at its defaults; patience=None only fixes the epoch count."""
    estimator = AutoEncoder(
        hidden_dims=HIDDEN,
        latent_dim=LATENT_DIM,
        epochs=epochs,
        patience=None,
        random_state=SEED,
    )
    started = time.perf_counter()
    estimator.fit(train)
    return time.perf_counter() - started, estimator


def fit_pyod_default(train: np.ndarray, epochs: int) -> tuple[float, Any]:
    """Fit PyOD's AutoEncoder at its defaults, with aelab's widths and epochs."""
    from pyod.models.auto_encoder import AutoEncoder as PyODAutoEncoder

    detector = PyODAutoEncoder(
        hidden_neuron_list=[*HIDDEN, LATENT_DIM],
        epoch_num=epochs,
        random_state=SEED,
        verbose=0,
    )
    started = time.perf_counter()
    detector.fit(train.astype(np.float64))
    return time.perf_counter() - started, detector


def default_settings(tool: str) -> dict[str, Any]:
    """Return the defaults that differ between the tools, read from each one."""
    if tool == "aelab":
        params = AutoEncoder().get_params()
        names = ["batch_size", "learning_rate", "weight_decay", "validation_fraction"]
        return {name: params[name] for name in names}
    from pyod.models.auto_encoder import AutoEncoder as PyODAutoEncoder

    params = PyODAutoEncoder().get_params()
    names = ["batch_size", "lr", "optimizer_params", "batch_norm", "dropout_rate"]
    return {name: params[name] for name in names}


def pyod_reconstruct(detector: Any, x: np.ndarray) -> np.ndarray:
    """Reconstruct x with a fitted PyOD AutoEncoder, in x's original units.

    PyOD exposes only distances, so this repeats its own scaling around the
    network: (x - mean) / (std + 1e-8) in, the inverse out, in eval mode.
    """
    scale = detector.X_std + 1e-8
    inputs = torch.from_numpy(((x - detector.X_mean) / scale).astype(np.float32))
    detector.model.eval()
    with torch.inference_mode():
        outputs = detector.model(inputs).numpy()
    return outputs * scale + detector.X_mean


def compare_defaults(
    name: str, data: np.ndarray, epochs: int, repeats: int
) -> dict[str, Any]:
    """Time aelab and PyOD at their defaults alternately; score held-out rows."""
    train, test = split_rows(data.reshape(len(data), -1).astype(np.float64))
    sides = {
        "aelab": lambda: fit_aelab_default(train, epochs),
        "pyod": lambda: fit_pyod_default(train, epochs),
    }
    for fit in sides.values():  # untimed warm-up
        fit()

    fitted: dict[str, Any] = {}

    def keep(side: str, fit: Callable[[], tuple[float, Any]]) -> Callable[[], float]:
        def run() -> float:
            elapsed, fitted[side] = fit()
            return elapsed

        return run

    timed = {side: keep(side, fit) for side, fit in sides.items()}
    seconds = alternate(f"{name} at defaults,", timed, repeats)

    scaling = SharedScaling(train)
    held_out_mse = {
        "aelab": scaling.mse(test, fitted["aelab"].reconstruct(test)),
        "pyod": scaling.mse(test, pyod_reconstruct(fitted["pyod"], test)),
        "column_means": scaling.mse(test, np.broadcast_to(scaling.mean, test.shape)),
    }
    work = len(train) * epochs
    rates = {side: work / statistics.median(v) for side, v in seconds.items()}
    return {
        "model": name,
        "train_rows": len(train),
        "held_out_rows": len(test),
        "epochs": epochs,
        "settings": {
            "aelab": default_settings("aelab"),
            "pyod": default_settings("pyod"),
        },
        "seconds": seconds,
        "samples_per_second": rates,
        "aelab_over_pyod": rates["aelab"] / rates["pyod"],
        "held_out_mse": held_out_mse,
    }


# ---- part 3: torch.compile and bfloat16 autocast -----------------------------------


def compare_compile(
    name: str, data: np.ndarray, kind: str, epochs: int, batch: int, repeats: int
) -> dict[str, Any]:
    """Time ``fit`` with and without compile=True, alternately.

    The warm-up fit of the compiled side compiles the step and is reported on
    its own. Inductor's cache lives under --work, so it starts empty. Later fits
    in this process reuse the compiled step.
    """
    sides = {
        "eager": lambda: time_aelab(data, kind, epochs, batch),
        "compile": lambda: time_aelab(data, kind, epochs, batch, compile=True),
    }
    first = {side: run() for side, run in sides.items()}
    seconds = alternate(name, sides, repeats)
    work = len(data) * epochs
    rates = {side: work / statistics.median(v) for side, v in seconds.items()}
    return {
        "model": name,
        "rows": len(data),
        "epochs": epochs,
        "batch_size": batch,
        "first_fit_seconds": first,
        "seconds": seconds,
        "samples_per_second": rates,
        "compile_over_eager": rates["compile"] / rates["eager"],
    }


def compare_cpu_autocast(data: np.ndarray, epochs: int, repeats: int) -> dict[str, Any]:
    """Time the training loop in float32 and under bfloat16 autocast on the CPU.

    The estimator rejects precision="bf16-mixed" on the CPU, so this drives
    :class:`aelab.training.Trainer` directly on standard-scaled rows.
    """
    std = data.std(0)
    x = torch.from_numpy((data - data.mean(0)) / np.where(std > 0, std, 1)).float()
    config = TrainConfig(
        epochs=epochs,
        batch_size=DENSE_BATCH,
        learning_rate=LEARNING_RATE,
        validation_fraction=0.0,
        patience=None,
        seed=SEED,
    )

    def run(precision: str) -> tuple[float, float]:
        model = build_model("dense", data)
        trainer = Trainer(model, config, torch.device("cpu"), precision=precision)
        started = time.perf_counter()
        state = trainer.fit(x)
        return time.perf_counter() - started, state.history[-1]["train"]["loss"]

    precisions = ("float32", "bf16-mixed")
    for precision in precisions:  # untimed warm-up
        run(precision)
    seconds: dict[str, list[float]] = {p: [] for p in precisions}
    final_loss: dict[str, float] = {}
    for _ in range(repeats):
        for precision in precisions:
            elapsed, final_loss[precision] = run(precision)
            seconds[precision].append(elapsed)
    work = len(x) * epochs
    rates = {p: work / statistics.median(v) for p, v in seconds.items()}
    print(
        "  training loop on the CPU: "
        + ", ".join(f"{p} {r:.0f} samples/s" for p, r in rates.items()),
        flush=True,
    )
    return {
        "rows": len(x),
        "epochs": epochs,
        "batch_size": DENSE_BATCH,
        "seconds": seconds,
        "samples_per_second": rates,
        "final_train_loss": final_loss,
        "bf16_over_float32": rates["bf16-mixed"] / rates["float32"],
    }


# ---- part 4: FLOP/s ----------------------------------------------------------------


def dense_training_flops(n_features: int) -> float:
    """Estimate FLOPs per sample of one training step of the dense model.

    Forward is 2 FLOPs per weight (multiply and add); backward computes the
    gradients of the inputs and of the weights, about twice the forward.
    Activations, the loss and Adam are left out, so this is a lower bound.
    """
    widths = [n_features, *HIDDEN, LATENT_DIM, *reversed(HIDDEN), n_features]
    weights = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return 3 * 2 * weights


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """Return the best float32 GFLOP/s of a size x size matmul over repeats."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


# ---- part 5: out-of-core memory ---------------------------------------------------


def write_parquet_folder(folder: Path, gigabytes: float) -> dict[str, Any]:
    """Write float64 Parquet files of WIDE_COLUMNS columns, about ``gigabytes`` GB.

    Random values do not compress, so the files take about their float64 size.
    Row groups of 10,000 rows hold 40 MB of decoded values each; pyarrow's memory
    while reading grows with the row group, not the file.
    """
    folder.mkdir(parents=True)
    rows_per_file = 100_000
    names = [f"x{i}" for i in range(WIDE_COLUMNS)]
    target = gigabytes * 1e9
    rng = np.random.default_rng(SEED)
    written, index = 0, 0
    basis = rng.normal(size=(16, WIDE_COLUMNS))
    while written < target:
        rows = int(min(rows_per_file, max(1000, (target - written) / 8 / WIDE_COLUMNS)))
        values = rng.normal(size=(rows, 16)) @ basis
        values += 0.5 * rng.normal(size=values.shape)
        columns = [pa.array(values[:, i]) for i in range(WIDE_COLUMNS)]
        table = pa.Table.from_arrays(columns, names=names)
        path = folder / f"part{index:04d}.parquet"
        pq.write_table(table, path, row_group_size=10_000, compression="snappy")
        written += path.stat().st_size
        index += 1
        del values, columns, table
    return {"files": index, "bytes": written}


# Runs an aelab command in this interpreter and writes the process's peak resident
# memory (VmHWM, in KiB) to the file named by AELAB_BENCH_HWM. getrusage's
# ru_maxrss is no use here: Linux carries the forking parent's peak into the
# child at exec, so every child would report at least this benchmark's memory.
HWM_PROBE = """
import os, sys
from aelab.cli.main import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM"))
with open(os.environ["AELAB_BENCH_HWM"], "w") as out:
    out.write(peak)
sys.exit(code)
"""


def peak_rss(argv: list[str], work: Path) -> dict[str, Any]:
    """Run ``aelab ARGV`` in a new process; return its wall time and peak RSS."""
    report = work / "hwm.txt"
    command = [sys.executable, "-c", HWM_PROBE, *argv]
    started = time.perf_counter()
    subprocess.run(
        command, check=True, cwd=ROOT, env=os.environ | {"AELAB_BENCH_HWM": str(report)}
    )
    return {
        "command": "aelab " + " ".join(argv),
        "seconds": time.perf_counter() - started,
        "peak_rss_bytes": int(report.read_text()) * 1024,
    }


def out_of_core(work: Path, gigabytes: float, epochs: int) -> dict[str, Any]:
    folder = work / "table"
    started = time.perf_counter()
    data = write_parquet_folder(folder, gigabytes)
    data["write_seconds"] = time.perf_counter() - started
    print(f"  wrote {data['bytes'] / 1e9:.2f} GB in {data['files']} files", flush=True)
    model = work / "ooc.model"
    fit = peak_rss(
        ["fit", str(folder), "-o", str(model), "--stream", "-q"]
        + ["--epochs", str(epochs), "--batch-size", "512", "--no-checkpoint"]
        + ["--device", "cpu"],
        work,
    )
    fit_gib = fit["peak_rss_bytes"] / 2**30
    print(f"  fit: {fit['seconds']:.0f} s, peak RSS {fit_gib:.2f} GiB", flush=True)
    codes = work / "codes.parquet"
    encode = peak_rss(
        ["encode", str(model), str(folder), "-o", str(codes), "--stream"], work
    )
    print(
        f"  encode: {encode['seconds']:.0f} s, peak RSS "
        f"{encode['peak_rss_bytes'] / 2**30:.2f} GiB",
        flush=True,
    )
    config = json.loads((model / "config.json").read_text())
    rows = pq.ParquetDataset(folder).files
    n_rows = sum(pq.read_metadata(f).num_rows for f in rows)
    return {
        "data": data | {"rows": n_rows, "columns": WIDE_COLUMNS},
        "fit": fit,
        "encode": encode,
        "epoch_seconds": [e["seconds"] for e in config["training"]["history"]],
        "encoded_rows": pq.read_metadata(codes).num_rows,
    }


# ---- part 6: 1 vs 2 processes ------------------------------------------------------


def ranks_comparison(work: Path, epochs: int) -> dict[str, Any]:
    table = work / "wide.parquet"
    names = [f"x{i}" for i in range(WIDE_COLUMNS)]
    pq.write_table(pa.Table.from_arrays(list(wide_table().T), names=names), table)
    options = ["--epochs", str(epochs), "--batch-size", str(DENSE_BATCH)]
    options += ["--validation-fraction", "0", "--patience", "0", "--no-checkpoint"]
    options += ["--device", "cpu", "-q", "--seed", str(SEED)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = {}
    for ranks in (1, 2):
        model = work / f"ranks{ranks}.model"
        launcher = [sys.executable, "-m", "aelab"]
        if ranks > 1:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            launcher = [sys.executable, "-m", "torch.distributed.run"]
            launcher += [f"--nproc-per-node={ranks}", "--master-addr=127.0.0.1"]
            launcher += [f"--master-port={port}", "-m", "aelab"]
        command = [*launcher, "fit", str(table), "-o", str(model), *options]
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - started
        history = json.loads((model / "config.json").read_text())["training"]
        epoch_seconds = [e["seconds"] for e in history["history"]]
        result[str(ranks)] = {
            "wall_seconds": wall,
            "epoch_seconds": epoch_seconds,
            "samples_per_second": WIDE_ROWS * epochs / sum(epoch_seconds),
        }
        rate = result[str(ranks)]["samples_per_second"]
        print(f"  {ranks} process(es): {rate:.0f} samples/s", flush=True)
    result["speedup"] = (
        result["2"]["samples_per_second"] / result["1"]["samples_per_second"]
    )
    return result


# ---- report ----------------------------------------------------------------------


def describe_environment(args: argparse.Namespace) -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in cpuinfo
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    import pyod

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
        "pyod": pyod.__version__,
        "aelab": aelab.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def training_cases(args: argparse.Namespace) -> list[tuple[str, Any, str, int]]:
    """Return (name, data, kind, epochs) for each training comparison."""
    wide, images = wide_table(), digit_images()
    pixels = images.reshape(len(images), -1)
    narrow = load_breast_cancer().data
    # The smaller data sets train for more epochs, so that each run lasts
    # seconds rather than fractions of one.
    epochs = args.dense_epochs
    return [
        (f"dense, wide table ({WIDE_COLUMNS} columns)", wide, "dense", epochs),
        (f"conv, digits {IMAGE_SIZE}x{IMAGE_SIZE}", images, "conv", args.conv_epochs),
        (
            f"dense, digits pixels ({pixels.shape[1]} columns)",
            pixels,
            "dense",
            5 * epochs,
        ),
        (
            f"dense, breast cancer ({narrow.shape[1]} columns)",
            narrow,
            "dense",
            10 * epochs,
        ),
    ]


def speed_against_defaults_and_options(
    cases: list[tuple[str, Any, str, int]], args: argparse.Namespace
) -> dict[str, Any]:
    """Run parts 2 and 3: PyOD at its defaults, compile and CPU autocast."""
    print("\nPart 2: aelab and PyOD at their own defaults", flush=True)
    defaults = [
        compare_defaults(name, data, epochs, args.repeats)
        for name, data, kind, epochs in cases
        if kind == "dense"
    ]

    print("\nPart 3: torch.compile and bfloat16 autocast", flush=True)
    # An empty inductor cache, so that the first compiled fit pays for the
    # whole compilation, as it would on a new machine.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(args.work / "inductor")
    # The dense model on the wide table and the conv model on the digits.
    compile_cases = [(*cases[0], DENSE_BATCH), (*cases[1], CONV_BATCH)]
    compiled = [compare_compile(*case, args.repeats) for case in compile_cases]
    wide = cases[0][1]
    autocast = compare_cpu_autocast(wide, args.dense_epochs, args.repeats)
    return {"defaults": defaults, "compile": compiled, "cpu_autocast": autocast}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    environment = describe_environment(args)
    print(
        f"aelab {environment['aelab']}, torch {environment['torch']} "
        f"({args.threads} threads), {environment['cpu_count']} CPUs, load average "
        f"{environment['load_average_at_start']:.1f}",
        flush=True,
    )
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    started = time.perf_counter()
    results: dict[str, Any] = {"environment": environment, "quick": args.quick}
    try:
        print("\nPart 1: training throughput", flush=True)
        cases = training_cases(args)
        results["throughput"] = []
        for name, data, kind, epochs in cases:
            batch = CONV_BATCH if kind == "conv" else DENSE_BATCH
            results["throughput"].append(
                compare_trainers(name, data, kind, epochs, batch, args.repeats)
            )
        dense = results["throughput"][0]
        results |= speed_against_defaults_and_options(cases, args)

        print("\nPart 4: FLOP/s", flush=True)
        flops = dense_training_flops(WIDE_COLUMNS)
        peak = matmul_peak()
        achieved = dense["samples_per_second"]["aelab"] * flops / 1e9
        results["flops"] = {
            "flops_per_sample": flops,
            "achieved_gflops": achieved,
            "matmul_peak_gflops": peak,
            "share_of_peak": achieved / peak,
        }
        print(f"  dense fit {achieved:.1f} GFLOP/s, matmul peak {peak:.1f} GFLOP/s")

        if args.ooc_gb > 0:
            print("\nPart 5: out-of-core", flush=True)
            results["out_of_core"] = out_of_core(
                args.work, args.ooc_gb, args.ooc_epochs
            )

        if not args.skip_ranks:
            print("\nPart 6: 1 vs 2 processes", flush=True)
            results["ranks"] = ranks_comparison(args.work, args.dense_epochs)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)

    results["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_summary(results)
    print(f"Results written to {args.out}")
    return 0


def print_summary(results: dict[str, Any]) -> None:
    print("\nTraining samples/s (median)")
    print(
        f"  {'model':<38} {'aelab':>8} {'hand':>8} {'hand+fused':>10} {'PyOD':>8} "
        f"{'/hand':>6} {'/fused':>6} {'/PyOD':>6}"
    )
    for row in results["throughput"]:
        rate = row["samples_per_second"]
        pyod = f"{rate['pyod']:>8.0f}" if "pyod" in rate else f"{'n/a':>8}"
        over_pyod = row["aelab_over_pyod"]
        over_pyod = f"{over_pyod:>6.2f}" if over_pyod else f"{'n/a':>6}"
        print(
            f"  {row['model']:<38} {rate['aelab']:>8.0f} {rate['hand']:>8.0f} "
            f"{rate['hand_fused']:>10.0f} {pyod} {row['aelab_over_hand']:>6.2f} "
            f"{row['aelab_over_hand_fused']:>6.2f} {over_pyod}"
        )
    print("\nAt each tool's defaults: samples/s (median), held-out MSE")
    print(
        f"  {'model':<38} {'aelab':>8} {'PyOD':>8} {'/PyOD':>6} "
        f"{'MSE aelab':>10} {'MSE PyOD':>9} {'MSE means':>10}"
    )
    for row in results["defaults"]:
        rate, mse = row["samples_per_second"], row["held_out_mse"]
        print(
            f"  {row['model']:<38} {rate['aelab']:>8.0f} {rate['pyod']:>8.0f} "
            f"{row['aelab_over_pyod']:>6.2f} {mse['aelab']:>10.3f} "
            f"{mse['pyod']:>9.3f} {mse['column_means']:>10.3f}"
        )
    print("\ncompile=True against eager: samples/s (median), first fit seconds")
    for row in results["compile"]:
        rate, first = row["samples_per_second"], row["first_fit_seconds"]
        print(
            f"  {row['model']:<38} eager {rate['eager']:>8.0f} compile "
            f"{rate['compile']:>8.0f} ({row['compile_over_eager']:.2f}x); first "
            f"fit {first['eager']:.1f} s and {first['compile']:.1f} s"
        )
    autocast = results["cpu_autocast"]
    print(
        f"bfloat16 autocast on the CPU: {autocast['bf16_over_float32']:.2f}x "
        "the float32 samples/s of the training loop"
    )
    flops = results["flops"]
    print(
        f"\nDense fit: {flops['achieved_gflops']:.1f} GFLOP/s of "
        f"{flops['matmul_peak_gflops']:.1f} matmul peak "
        f"({flops['share_of_peak']:.0%})"
    )
    if "out_of_core" in results:
        ooc = results["out_of_core"]
        print(
            f"Out-of-core: {ooc['data']['bytes'] / 1e9:.2f} GB on disk; peak RSS "
            f"fit {ooc['fit']['peak_rss_bytes'] / 2**30:.2f} GiB, encode "
            f"{ooc['encode']['peak_rss_bytes'] / 2**30:.2f} GiB"
        )
    if "ranks" in results:
        print(f"2 processes vs 1: {results['ranks']['speedup']:.2f}x samples/s")
    print(f"Total time {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
