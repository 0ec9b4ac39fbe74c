"""Figures: image grids, loss curves and embedding maps, written as PNG files.

Each function takes arrays or the saved training history and writes one file, so
figures can be redrawn from saved artefacts without retraining.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .io_utils import atomic_path


def image_grid(
    images: np.ndarray, columns: int | None = None, pad: int = 1
) -> np.ndarray:
    """Tile images (N, H, W) or (N, H, W, C) in [0, 1] into one (H', W', C) array."""
    if images.ndim == 3:
        images = images[..., None]
    n, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.ones(
        (rows * (height + pad) + pad, columns * (width + pad) + pad, channels),
        dtype=np.float32,
    )
    for i, image in enumerate(images):
        top = pad + (i // columns) * (height + pad)
        left = pad + (i % columns) * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid


def save_grid(
    path: Path, images: np.ndarray, columns: int | None = None, scale: int = 1
) -> None:
    """Write an image grid as PNG, each pixel enlarged ``scale`` times."""
    grid = np.clip(image_grid(np.asarray(images, dtype=np.float32), columns), 0, 1)
    values = np.rint(grid * 255).astype(np.uint8)
    image = Image.fromarray(values[..., 0] if values.shape[-1] == 1 else values)
    if scale > 1:
        image = image.resize(
            (image.width * scale, image.height * scale), Image.Resampling.NEAREST
        )
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_loss_curves(
    path: Path, histories: dict[str, Sequence[dict[str, Any]]], title: str = ""
) -> None:
    """Plot training and validation loss per epoch for one or more runs."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(histories), figsize=(4.2 * len(histories), 3.4), squeeze=False
    )
    for ax, (name, history) in zip(axes[0], histories.items(), strict=True):
        epochs = [record["epoch"] for record in history]
        ax.plot(epochs, [r["train"]["loss"] for r in history], label="train")
        if history and history[0]["validation"] is not None:
            ax.plot(
                epochs, [r["validation"]["loss"] for r in history], label="validation"
            )
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per sample")
        ax.set_yscale("log")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, path)


def save_embedding_map(
    path: Path, points: np.ndarray, labels: np.ndarray, title: str = ""
) -> None:
    """Scatter 2-D points coloured by integer label, with a legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.4))
    for label in np.unique(labels):
        chosen = labels == label
        ax.scatter(points[chosen, 0], points[chosen, 1], s=6, label=str(label))
    ax.legend(markerscale=3, fontsize=8, loc="best", ncols=2)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _pyplot().close(fig)


def save_score_histogram(
    path: Path,
    scores: np.ndarray,
    threshold: float | None,
    reference: np.ndarray | None = None,
) -> None:
    """Plot a histogram of anomaly scores with the threshold as a vertical line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    values = np.concatenate([scores, reference if reference is not None else []])
    positive = values[values > 0]
    log = positive.size == values.size and positive.max() / positive.min() > 100
    bins = np.geomspace(positive.min(), positive.max(), 50) if log else 50
    ax.hist(scores, bins=bins, alpha=0.7, label=f"scored ({len(scores)})")
    if reference is not None:
        ax.hist(
            reference,
            bins=bins,
            alpha=0.5,
            label=f"held-out reference ({len(reference)})",
        )
    if threshold is not None:
        flagged = int((scores > threshold).sum())
        ax.axvline(
            threshold,
            color="black",
            linestyle="--",
            label=f"threshold ({flagged} above)",
        )
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("anomaly score (higher is more anomalous)")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def heat_map_overlay(pixels: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Blend a heat map (H, W) over an image (H, W, C) in [0, 1] as RGB (H, W, 3).

    The heat map is scaled by its own 99th percentile, so the brightest areas of
    each image stand out whatever its overall score.
    """
    from matplotlib import colormaps

    gray = pixels[..., :3].mean(axis=2) if pixels.shape[2] >= 3 else pixels[..., 0]
    top = float(np.quantile(heat, 0.99)) or 1.0
    colors = colormaps["inferno"](np.clip(heat / top, 0, 1))[..., :3]
    return 0.45 * gray[..., None] + 0.55 * colors
