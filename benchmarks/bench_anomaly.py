"""Benchmark aelab's AnomalyDetector against standard anomaly detectors.

Tables: ADBench "Classical" sets stored as .npz files with arrays X and y (y = 1
for an anomaly). For each seed, the normal rows are shuffled with
``np.random.default_rng(seed)`` and split in half. Every method fits on the first
half and scores the second half plus all anomalies. aelab scales the columns itself
from the training rows; the baselines get scikit-learn's ``StandardScaler`` fitted on
the training rows. The report gives AUROC, AUPRC (average precision) and fit time
per set, averaged over seeds, and the mean over sets.

Images, with the same aelab settings for every task:

- lfw_subset (scikit-image): 100 faces, then 100 non-face patches. Fit on 50 faces
  chosen by the seed and score the other 50 faces (normal) and the 100 patches.
- digits one-class (scikit-learn, pixels / 16): a stratified 50/50 split. For each
  digit d, fit on the training images of d and score every test image, with d as
  the normal class.

Run ``.venv/bin/python benchmarks/bench_anomaly.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

import aelab
from aelab import AnomalyDetector

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "anomaly.json"
DATA_DIR_ENV = "ADBENCH_DIR"
ALL_SETS = (
    "14_glass",
    "18_Ionosphere",
    "20_letter",
    "23_mammography",
    "29_Pima",
    "2_annthyroid",
    "30_satellite",
    "32_shuttle",
    "38_thyroid",
    "40_vowels",
    "4_breastw",
    "6_cardio",
)
QUICK_SETS = ("18_Ionosphere", "29_Pima", "4_breastw")

# The recommended table configuration, every setting spelled out so that a change
# of aelab's defaults does not change this benchmark. RESULTS.md records how it was
# chosen.
AELAB_TABLE_PARAMS: dict[str, Any] = {
    "n_models": 3,
    "latent_dim": 16,
    "hidden_dims": (64, 32),
    "normalize": True,
    "calibration_fraction": 0.1,
    "autoencoder_params": {
        "kind": "dense",
        "epochs": 100,
        "batch_size": 512,
        "learning_rate": 1e-2,
        "weight_decay": 0.0,
        "validation_fraction": 0.1,
        "patience": 10,
        "scaling": "standard",
        "noise": None,
        "variational": False,
    },
}
# Image settings: denoising training for up to 200 epochs. The detector is fitted
# with normalize=True. The "normalize off" score is computed from the same fitted
# models, which equals the score of a detector fitted with normalize=False, because
# the seeds and the split are the same.
AELAB_IMAGE_PARAMS: dict[str, Any] = {
    "n_models": 3,
    "latent_dim": 16,
    "normalize": True,
    "calibration_fraction": 0.1,
    "autoencoder_params": {
        "epochs": 200,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "validation_fraction": 0.1,
        "patience": 20,
        "noise": "gaussian:0.2",
        "variational": False,
    },
}
IMAGE_KINDS = ("conv", "dense")
# AutoEncoder's default widths: a conv model uses the last entry as the width of
# its dense layer, a dense model uses all of them.
IMAGE_HIDDEN_DIMS = {"conv": (256,), "dense": (256, 128)}
KNN_K = 5
PCA_VARIANCE = 0.9  # PCA keeps the fewest components that explain this share
# PyOD's AutoEncoder keeps its defaults (architecture, epochs, batch size) except
# for these settings.
PYOD_OVERRIDES: dict[str, Any] = {"verbose": 0, "device": "cpu"}
QUICK_IMAGE_EPOCHS = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Compare aelab's AnomalyDetector with IsolationForest, kNN distance, PCA "
            "reconstruction error and PyOD's AutoEncoder on ADBench tables, and "
            "with PCA on two image tasks (lfw_subset faces, digits one-class)."
        )
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get(DATA_DIR_ENV),
        help="folder with the ADBench .npz files, such as 4_breastw.npz "
        f"(default: the {DATA_DIR_ENV} environment variable)",
    )
    parser.add_argument(
        "--sets",
        default=",".join(ALL_SETS),
        help="comma-separated table set names, file names without .npz "
        "(default: all 12)",
    )
    parser.add_argument(
        "--seeds",
        default="0,1,2",
        help="comma-separated seeds of the table splits (default: 0,1,2)",
    )
    parser.add_argument(
        "--image-seeds",
        default="0",
        help="comma-separated seeds of the image splits (default: 0)",
    )
    parser.add_argument(
        "--skip-tables", action="store_true", help="run only the image tasks"
    )
    parser.add_argument(
        "--skip-images", action="store_true", help="run only the table sets"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run of under a minute: tables {', '.join(QUICK_SETS)} with seed "
        "0, and images with lfw and digits 0 and 1, one model per detector and at "
        f"most {QUICK_IMAGE_EPOCHS} epochs. Its numbers are not comparable with a "
        "full run",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where to write the results as JSON "
        "(default: benchmarks/results/anomaly.json)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads. One thread keeps timings stable on a shared "
        "machine (default: 1)",
    )
    args = parser.parse_args(argv)

    args.sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    args.seeds = _parse_seeds(parser, "--seeds", args.seeds)
    args.image_seeds = _parse_seeds(parser, "--image-seeds", args.image_seeds)
    args.digits = list(range(10))
    if args.quick:
        args.sets, args.seeds, args.image_seeds = list(QUICK_SETS), [0], [0]
        args.digits = [0, 1]
    if args.threads < 1:
        parser.error(f"--threads must be a positive integer, got {args.threads}")
    if not args.skip_tables:
        if args.data_dir is None:
            parser.error(
                f"the table sets need --data-dir or the {DATA_DIR_ENV} environment "
                "variable; pass --skip-tables to run only the image tasks"
            )
        missing = [s for s in args.sets if not (args.data_dir / f"{s}.npz").is_file()]
        if missing:
            parser.error(
                f"set files not found in {args.data_dir}: "
                f"{', '.join(s + '.npz' for s in missing)}"
            )
    return args


def _parse_seeds(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        parser.error(f"{option} must be comma-separated integers, got {text!r}")
    if not seeds:
        parser.error(f"{option} needs at least one seed")
    return seeds


# ---- table methods ---------------------------------------------------------------
# Each method fits on the training rows and returns a scoring function whose output
# is higher for more anomalous rows. Only the fit is timed.

Scorer = Callable[[np.ndarray], np.ndarray]


def fit_aelab(train: np.ndarray, seed: int, params: dict[str, Any]) -> Scorer:
    detector = AnomalyDetector(**params, random_state=seed, device="cpu")
    detector.fit(train)
    return detector.score


def fit_isolation_forest(train: np.ndarray, seed: int) -> Scorer:
    scaler = StandardScaler().fit(train)
    forest = IsolationForest(random_state=seed).fit(scaler.transform(train))
    return lambda rows: -forest.score_samples(scaler.transform(rows))


def fit_knn(train: np.ndarray, seed: int) -> Scorer:
    scaler = StandardScaler().fit(train)
    neighbours = NearestNeighbors(n_neighbors=KNN_K).fit(scaler.transform(train))

    def score(rows: np.ndarray) -> np.ndarray:
        distances, _ = neighbours.kneighbors(scaler.transform(rows))
        return distances[:, -1]  # distance to the k-th nearest training row

    return score


def fit_pca(train: np.ndarray, seed: int) -> Scorer:
    scaler = StandardScaler().fit(train)
    pca = PCA(n_components=PCA_VARIANCE, svd_solver="full")
    pca.fit(scaler.transform(train))

    def score(rows: np.ndarray) -> np.ndarray:
        scaled = scaler.transform(rows)
        restored = pca.inverse_transform(pca.transform(scaled))
        return ((scaled - restored) ** 2).sum(axis=1)

    score.n_components = int(pca.n_components_)  # type: ignore[attr-defined]
    return score


def fit_pyod_autoencoder(train: np.ndarray, seed: int) -> Scorer:
    from pyod.models.auto_encoder import AutoEncoder as PyODAutoEncoder

    scaler = StandardScaler().fit(train)
    model = PyODAutoEncoder(random_state=seed, **PYOD_OVERRIDES)
    model.fit(scaler.transform(train))
    return lambda rows: model.decision_function(scaler.transform(rows))


def table_methods(params: dict[str, Any]) -> dict[str, Callable[..., Scorer]]:
    methods: dict[str, Callable[..., Scorer]] = {
        "aelab": lambda train, seed: fit_aelab(train, seed, params),
        "IForest": fit_isolation_forest,
        f"kNN (k={KNN_K})": fit_knn,
        "PCA": fit_pca,
    }
    if _pyod_version() is not None:
        methods["PyOD AE"] = fit_pyod_autoencoder
    else:
        print("PyOD is not installed, so its AutoEncoder is left out", flush=True)
    return methods


def _pyod_version() -> str | None:
    try:
        import pyod
    except ImportError:
        return None
    return str(pyod.__version__)


def pyod_settings() -> dict[str, Any] | None:
    """Return every parameter of PyOD's AutoEncoder as this benchmark creates it."""
    if _pyod_version() is None:
        return None
    from pyod.models.auto_encoder import AutoEncoder as PyODAutoEncoder

    settings = PyODAutoEncoder(random_state=0, **PYOD_OVERRIDES).get_params()
    settings["random_state"] = "the split seed"
    return {key: _jsonable(value) for key, value in settings.items()}


# ---- tables ------------------------------------------------------------------------


def load_table(data_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(data_dir / f"{name}.npz") as data:
        return data["X"].astype(np.float64), data["y"].astype(int)


def split_normal_half(
    X: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return training rows (half of the normal rows) and test rows with labels."""
    normal = np.flatnonzero(y == 0)
    anomalies = np.flatnonzero(y == 1)
    shuffled = np.random.default_rng(seed).permutation(normal)
    half = len(shuffled) // 2
    test = np.concatenate([shuffled[half:], anomalies])
    return X[shuffled[:half]], X[test], y[test]


def run_tables(args: argparse.Namespace, params: dict[str, Any]) -> list[dict]:
    methods = table_methods(params)
    warm_up(methods)
    records = []
    for name in args.sets:
        X, y = load_table(args.data_dir, name)
        for seed in args.seeds:
            train, test, labels = split_normal_half(X, y, seed)
            for method, fit in methods.items():
                started = time.perf_counter()
                scorer = fit(train, seed)
                fit_seconds = time.perf_counter() - started
                scores = np.asarray(scorer(test), dtype=np.float64)
                record = {
                    "set": name,
                    "seed": seed,
                    "method": method,
                    "n_train": len(train),
                    "n_test": len(test),
                    "n_anomalies": int(labels.sum()),
                    "auroc": float(roc_auc_score(labels, scores)),
                    "auprc": float(average_precision_score(labels, scores)),
                    "fit_seconds": fit_seconds,
                }
                if hasattr(scorer, "n_components"):
                    record["pca_components"] = scorer.n_components
                records.append(record)
            line = ", ".join(
                f"{r['method']} {r['auroc']:.3f}" for r in records[-len(methods) :]
            )
            print(f"  {name} seed {seed}: AUROC {line}", flush=True)
    return records


def warm_up(methods: dict[str, Callable[..., Scorer]]) -> None:
    """Fit every method once, untimed, so that first-call costs stay out of timings.

    In the runs recorded in RESULTS.md, PyOD's first fit in a process took over
    2 s longer than its later fits.
    """
    rows = np.random.default_rng(0).normal(size=(200, 6))
    for fit in methods.values():
        fit(rows, 0)(rows[:10])


def summarize_tables(records: list[dict]) -> dict[str, Any]:
    """Average each method over seeds per set, then over sets."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    sets = list(dict.fromkeys(r["set"] for r in records))
    per_set: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        per_set[method] = {}
        for name in sets:
            rows = [r for r in records if r["method"] == method and r["set"] == name]
            per_set[method][name] = {
                key: float(np.mean([r[key] for r in rows]))
                for key in ("auroc", "auprc", "fit_seconds")
            }
    means = {
        method: {
            "auroc": float(np.mean([v["auroc"] for v in per_set[method].values()])),
            "auprc": float(np.mean([v["auprc"] for v in per_set[method].values()])),
            "fit_seconds_total": float(
                np.sum([v["fit_seconds"] for v in per_set[method].values()])
            ),
        }
        for method in methods
    }
    return {"sets": sets, "methods": methods, "per_set": per_set, "mean": means}


def print_tables(summary: dict[str, Any]) -> None:
    methods, sets = summary["methods"], summary["sets"]
    header = f"  {'set':<16}" + "".join(f"{m:>12}" for m in methods)
    for key, title, fmt in (
        ("auroc", "AUROC", "{:>12.3f}"),
        ("auprc", "AUPRC", "{:>12.3f}"),
        ("fit_seconds", "Fit time, seconds", "{:>12.2f}"),
    ):
        print(f"\n{title} per set (mean over seeds)")
        print(header)
        for name in sets:
            values = "".join(
                fmt.format(summary["per_set"][m][name][key]) for m in methods
            )
            print(f"  {name:<16}{values}")
        mean_key = key if key != "fit_seconds" else "fit_seconds_total"
        label = "mean" if key != "fit_seconds" else "total"
        values = "".join(fmt.format(summary["mean"][m][mean_key]) for m in methods)
        print(f"  {label:<16}{values}")


# ---- images ------------------------------------------------------------------------


def lfw_task(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return 50 training faces, and 50 test faces plus 100 non-faces with labels."""
    from skimage.data import lfw_subset

    images = lfw_subset().astype(np.float32)  # (200, 25, 25) in [0, 1]
    order = np.random.default_rng(seed).permutation(100)
    test = np.concatenate([images[order[50:]], images[100:]])
    labels = np.r_[np.zeros(50, dtype=int), np.ones(100, dtype=int)]
    return images[order[:50]], test, labels


def digit_tasks(
    seed: int, digits: list[int]
) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    train, test, train_y, test_y = train_test_split(
        images, data.target, test_size=0.5, stratify=data.target, random_state=seed
    )
    return [(d, train[train_y == d], test, (test_y != d).astype(int)) for d in digits]


def image_params(kind: str, quick: bool) -> dict[str, Any]:
    params = json.loads(json.dumps(AELAB_IMAGE_PARAMS))  # a deep copy
    params["hidden_dims"] = IMAGE_HIDDEN_DIMS[kind]
    params["autoencoder_params"]["kind"] = kind
    if quick:
        params["n_models"] = 1
        params["autoencoder_params"]["epochs"] = QUICK_IMAGE_EPOCHS
    return params


def score_images(
    train: np.ndarray, test: np.ndarray, labels: np.ndarray, seed: int, quick: bool
) -> dict[str, Any]:
    """Fit aelab (each kind) and PCA on normal images and return test AUROCs."""
    result: dict[str, Any] = {"auroc": {}, "fit_seconds": {}}
    for kind in IMAGE_KINDS:
        started = time.perf_counter()
        detector = AnomalyDetector(
            **image_params(kind, quick), random_state=seed, device="cpu"
        )
        detector.fit(train)
        result["fit_seconds"][kind] = time.perf_counter() - started
        normalized = detector.score(test)
        # The mean over models of each model's mean pixel error: the score of the
        # same ensemble with every error scale set to 1 (normalize=False).
        plain = np.mean([m.reconstruction_error(test) for m in detector.models_], 0)
        result["auroc"][f"aelab {kind}, normalize on"] = roc_auc_score(
            labels, normalized
        )
        result["auroc"][f"aelab {kind}, normalize off"] = roc_auc_score(labels, plain)

    flat_train = train.reshape(len(train), -1)
    flat_test = test.reshape(len(test), -1)
    pca = PCA(n_components=PCA_VARIANCE, svd_solver="full").fit(flat_train)
    restored = pca.inverse_transform(pca.transform(flat_test))
    pca_scores = ((flat_test - restored) ** 2).sum(axis=1)
    result["auroc"]["PCA"] = roc_auc_score(labels, pca_scores)
    result["pca_components"] = int(pca.n_components_)
    return result


def run_images(args: argparse.Namespace) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"lfw": [], "digits": []}
    for seed in args.image_seeds:
        train, test, labels = lfw_task(seed)
        record = {"seed": seed} | score_images(train, test, labels, seed, args.quick)
        results["lfw"].append(record)
        print(f"  lfw seed {seed}: {_format_auroc(record['auroc'])}", flush=True)
        for digit, train, test, labels in digit_tasks(seed, args.digits):
            record = {"seed": seed, "digit": digit} | score_images(
                train, test, labels, seed, args.quick
            )
            results["digits"].append(record)
            print(
                f"  digit {digit} seed {seed}: {_format_auroc(record['auroc'])}",
                flush=True,
            )
    return results


def _format_auroc(auroc: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in auroc.items())


def summarize_images(results: dict[str, list[dict]]) -> dict[str, Any]:
    methods = list(results["lfw"][0]["auroc"])
    summary: dict[str, Any] = {"methods": methods}
    summary["lfw"] = {
        m: float(np.mean([r["auroc"][m] for r in results["lfw"]])) for m in methods
    }
    digits = sorted({r["digit"] for r in results["digits"]})
    summary["digits_per_digit"] = {
        m: {
            str(d): float(
                np.mean([r["auroc"][m] for r in results["digits"] if r["digit"] == d])
            )
            for d in digits
        }
        for m in methods
    }
    summary["digits_mean"] = {
        m: float(np.mean(list(summary["digits_per_digit"][m].values())))
        for m in methods
    }
    return summary


def print_images(summary: dict[str, Any]) -> None:
    methods = summary["methods"]
    digits = " ".join(f"{d:>5}" for d in summary["digits_per_digit"][methods[0]])
    print("\nImages: AUROC (mean over image seeds)")
    print(f"  {'method':<28}{'lfw':>8}{'digits':>8}   per digit: {digits}")
    for m in methods:
        per_digit = " ".join(
            f"{v:.3f}" for v in summary["digits_per_digit"][m].values()
        )
        print(
            f"  {m:<28}{summary['lfw'][m]:>8.3f}{summary['digits_mean'][m]:>8.3f}"
            f"              {per_digit}"
        )


# ---- report ------------------------------------------------------------------------


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
        "pyod": _pyod_version(),
        "aelab": aelab.__version__,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_changed_files": _git("status", "--porcelain", "--untracked-files=no"),
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


def _git(*command: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *command], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    environment = describe_environment()
    print(
        f"aelab {environment['aelab']}, torch {environment['torch']} "
        f"({environment['torch_threads']} threads), PyOD {environment['pyod']}, "
        f"scikit-learn {environment['scikit_learn']}; {environment['cpu_count']} "
        f"CPUs, load average {environment['load_average_at_start']:.1f}",
        flush=True,
    )

    results: dict[str, Any] = {
        "environment": environment,
        "quick": args.quick,
        "settings": {
            "aelab_tables": _jsonable(AELAB_TABLE_PARAMS),
            "aelab_images": {k: image_params(k, args.quick) for k in IMAGE_KINDS},
            "pyod_autoencoder": pyod_settings(),
            "knn_k": KNN_K,
            "pca_variance": PCA_VARIANCE,
            "table_seeds": args.seeds,
            "image_seeds": args.image_seeds,
        },
    }
    if not args.skip_tables:
        print("\nTables", flush=True)
        records = run_tables(args, AELAB_TABLE_PARAMS)
        table_summary = summarize_tables(records)
        results["tables"] = {"runs": records, "summary": table_summary}
    if not args.skip_images:
        print("\nImages", flush=True)
        image_results = run_images(args)
        image_summary = summarize_images(image_results)
        results["images"] = {"runs": image_results, "summary": image_summary}

    if not args.skip_tables:
        print_tables(table_summary)
    if not args.skip_images:
        print_images(image_summary)
    results["total_seconds"] = time.perf_counter() - started
    print(f"\nTotal time {results['total_seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"Results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
