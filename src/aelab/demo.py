"""The demo: three autoencoders on scikit-learn's digits, with figures and metrics.

``run_demo`` trains a convolutional, a variational and a denoising autoencoder on
the 8x8 digit images that ship with scikit-learn, and writes to one folder what a
new user wants to see: reconstructions, samples, denoised digits, loss curves,
embeddings with a 2-D map, the three models, and metrics next to PCA.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from .data import write_table
from .errors import InvalidParameterError
from .estimator import AutoEncoder
from .plots import save_embedding_map, save_grid, save_loss_curves

logger = logging.getLogger(__name__)

LATENT_DIM = 8
NOISE_STD = 0.25  # demo noise on pixels in [0, 1]
SEED = 0
SHOWN = 16  # test digits shown in each figure
DEMO_MARK = "aelab demo"  # metrics.json's "written_by", marking a demo folder


def _check_demo_folder(output: Path) -> None:
    """Refuse a non-empty folder that an earlier demo run did not write."""
    if not output.exists():
        return
    if not output.is_dir():
        raise InvalidParameterError(
            f"demo output {str(output)!r} is a file, not a folder"
        )
    try:
        ours = (
            json.loads((output / "metrics.json").read_text())["written_by"] == DEMO_MARK
        )
    except (OSError, ValueError, KeyError, TypeError):
        ours = False
    if any(output.iterdir()) and not ours:
        raise InvalidParameterError(
            f"demo output {str(output)!r} is a folder with other files; the demo "
            "would replace some of them, so give a new or empty folder"
        )


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's 1,797 digits as float32 (N, 8, 8) in [0, 1], and labels."""
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target


def pca_mse(train: np.ndarray, test: np.ndarray, n_components: int) -> float:
    """Return held-out MSE per pixel of PCA with ``n_components`` components."""
    rows_train, rows_test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    pca = PCA(n_components, random_state=SEED).fit(rows_train)
    rebuilt = pca.inverse_transform(pca.transform(rows_test))
    return float(np.mean((rebuilt - rows_test) ** 2))


def run_demo(
    output: Path,
    progress: bool = False,
    epochs: int = 60,
    report: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Train the three demo models and write every artefact into ``output``.

    Returns:
        The metrics also written to ``output / "metrics.json"``.
    """
    _check_demo_folder(output)
    output.mkdir(parents=True, exist_ok=True)
    images, labels = load_digit_images()
    train, test, train_labels, test_labels = train_test_split(
        images, labels, test_size=0.2, random_state=SEED
    )
    common = dict(
        latent_dim=LATENT_DIM,
        epochs=epochs,
        batch_size=64,
        learning_rate=2e-3,
        random_state=SEED,
        verbose=int(progress),
    )
    metrics: dict[str, Any] = {
        "written_by": DEMO_MARK,
        "data": "scikit-learn digits, 8x8 pixels scaled to [0, 1]",
        "train_images": len(train),
        "test_images": len(test),
        "latent_dim": LATENT_DIM,
    }
    timings: dict[str, float] = {}

    def fit(name: str, **options: Any) -> AutoEncoder:
        report(f"training the {name} autoencoder on {len(train)} digits")
        started = time.perf_counter()
        model = AutoEncoder(kind="conv", **common | options).fit(train)
        timings[name] = round(time.perf_counter() - started, 2)
        model.save(output / f"{name}-model")
        return model

    conv = fit("conv")
    vae = fit("variational", variational=True, loss="bce")
    denoiser = fit("denoising", noise=f"gaussian:{NOISE_STD}")

    # Held-out reconstruction error against PCA with the same code size.
    conv_mse = float(np.mean((conv.reconstruct(test) - test) ** 2))
    vae_mse = float(np.mean((vae.reconstruct(test) - test) ** 2))
    pca = pca_mse(train, test, LATENT_DIM)
    metrics["test_mse"] = {
        "conv": conv_mse,
        "variational": vae_mse,
        f"pca_{LATENT_DIM}": pca,
        "conv_over_pca": conv_mse / pca,
    }

    # Denoising: the same Gaussian noise the model was trained with, clipped to [0, 1].
    rng = np.random.default_rng(SEED)
    noisy = np.clip(test + rng.normal(0, NOISE_STD, test.shape), 0, 1).astype(
        np.float32
    )
    denoised = denoiser.reconstruct(noisy)
    metrics["denoising"] = {
        "noise": f"gaussian std {NOISE_STD} on [0, 1] pixels, clipped",
        "noisy_mse": float(np.mean((noisy - test) ** 2)),
        "denoised_mse": float(np.mean((denoised - test) ** 2)),
    }

    report("writing figures, embeddings and metrics")
    shown = test[:SHOWN]
    pca_rows = PCA(LATENT_DIM, random_state=SEED).fit(train.reshape(len(train), -1))
    pca_shown = pca_rows.inverse_transform(pca_rows.transform(shown.reshape(SHOWN, -1)))
    rows = [shown, conv.reconstruct(shown), pca_shown.reshape(shown.shape)]
    save_grid(output / "reconstructions.png", np.concatenate(rows), SHOWN, scale=6)
    save_grid(output / "samples.png", vae.sample(64, random_state=SEED), 8, scale=6)
    rows = [shown, noisy[:SHOWN], denoised[:SHOWN]]
    save_grid(output / "denoised.png", np.concatenate(rows), SHOWN, scale=6)
    save_loss_curves(
        output / "loss_curves.png",
        {
            "conv": conv.history_,
            "variational": vae.history_,
            "denoising": denoiser.history_,
        },
    )

    embeddings = conv.transform(images)
    frame = pd.DataFrame(embeddings, columns=[f"z{i}" for i in range(LATENT_DIM)])
    frame.insert(0, "digit", labels)
    write_table(output / "embeddings.parquet", frame)
    started = time.perf_counter()
    points = TSNE(2, random_state=SEED, init="pca").fit_transform(embeddings)
    timings["tsne"] = round(time.perf_counter() - started, 2)
    save_embedding_map(
        output / "embedding_map.png",
        points,
        labels,
        f"t-SNE of the {LATENT_DIM}-d conv embeddings of all {len(images)} digits",
    )
    # Feature extraction: 5-nearest-neighbour accuracy on 8 numbers instead of 64.
    metrics["knn5_test_accuracy"] = {
        "conv_embeddings": _knn_accuracy(
            conv.transform(train), train_labels, conv.transform(test), test_labels
        ),
        "raw_pixels": _knn_accuracy(
            train.reshape(len(train), -1),
            train_labels,
            test.reshape(len(test), -1),
            test_labels,
        ),
    }
    metrics["seconds"] = timings
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    write_report(output, metrics)
    return metrics


def _knn_accuracy(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, labels: np.ndarray
) -> float:
    classifier = KNeighborsClassifier(5).fit(train, train_labels)
    return float(classifier.score(test, labels))


FIGURES = (
    (
        "reconstructions.png",
        "Test digits (top), conv autoencoder (middle), PCA "
        "with the same code size (bottom)",
    ),
    ("samples.png", "New digits sampled from the variational autoencoder"),
    (
        "denoised.png",
        "Test digits (top), with Gaussian noise (middle), denoised (bottom)",
    ),
    ("loss_curves.png", "Loss per sample during training"),
    ("embedding_map.png", "2-D map of the embeddings, coloured by digit"),
)


def write_report(output: Path, metrics: dict[str, Any]) -> Path:
    """Write index.html showing the figures and the metrics of a demo run."""
    mse = metrics["test_mse"]
    denoise = metrics["denoising"]
    knn = metrics["knn5_test_accuracy"]
    latent_dim = metrics["latent_dim"]
    rows = [
        ("held-out MSE, conv autoencoder", f"{mse['conv']:.5f}"),
        (f"held-out MSE, PCA-{latent_dim}", f"{mse[f'pca_{latent_dim}']:.5f}"),
        ("conv / PCA", f"{mse['conv_over_pca']:.2f}"),
        ("held-out MSE, variational", f"{mse['variational']:.5f}"),
        (
            "MSE noisy / denoised",
            f"{denoise['noisy_mse']:.4f} / {denoise['denoised_mse']:.4f}",
        ),
        (
            "5-NN accuracy, embeddings / pixels",
            f"{knn['conv_embeddings']:.3f} / {knn['raw_pixels']:.3f}",
        ),
    ]
    table = "\n".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    figures = "\n".join(
        f'<figure><img src="{name}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in FIGURES
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aelab demo</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}
td{{padding:.2rem 1rem}} img{{max-width:100%;image-rendering:pixelated}}
figure{{margin:2rem 0}}</style></head>
<body><h1>aelab demo: autoencoders on scikit-learn digits</h1>
<p>{html.escape(metrics["data"])}; {metrics["train_images"]} training and
{metrics["test_images"]} held-out images; code size {metrics["latent_dim"]}.</p>
<table>{table}</table>
{figures}
</body></html>
"""
    path = output / "index.html"
    path.write_text(page)
    return path
