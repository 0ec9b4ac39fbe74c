"""Benchmark aelab's bundled denoiser and colorizer on the Kodak images.

Denoising: each image (gray and RGB) gets Gaussian noise of each sigma (0-255
scale) from a fixed seed, clipped to [0, 1] as an image file would be but not
quantised. Every method gets the same noisy image: the noisy input itself, a
Gaussian filter, scikit-image's non-local means (fast mode, patch 5, distance
6, h = 0.8 * its estimate_sigma), total variation (Chambolle, weight = the
estimated sigma) and wavelet (BayesShrink, soft, YCbCr for colour) denoisers,
BM3D (PyPI ``bm3d``, given the true sigma), and aelab's bundled denoiser in
blind mode (it estimates sigma itself). The report gives PSNR and SSIM against
the clean image and seconds per image.

Colorization: the BT.601 luma of each image is colorized by aelab's bundled
colorizer and by two baselines, the gray image itself and the mean Cb and Cr
of the training photos per luma bin. The report gives PSNR against the
original colour image and the Hasler-Suesstrunk colourfulness.

Needs the ``bench`` extra (scikit-image, bm3d). Run from the repository root:
``.venv/bin/python benchmarks/bench_restore.py``; ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bm3d
import numpy as np
import skimage
import torch
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import (
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
    estimate_sigma,
)

import aelab
from aelab.data.images import LUMA, ImageRecord, list_images, read_image, write_image
from aelab.restore.pipeline import Restorer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "restore.json"
DEFAULT_KODAK = ROOT.parent / "shared" / "data" / "kodak"
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "photos"
LUMA_BINS = 64
AELAB = "aelab (blind)"

Method = Callable[[np.ndarray, float], np.ndarray]


def _estimated(noisy: np.ndarray) -> float:
    axis = -1 if noisy.ndim == 3 else None
    return float(np.mean(estimate_sigma(noisy, channel_axis=axis)))


def gaussian_filter(noisy: np.ndarray, sigma: float) -> np.ndarray:
    # Filter width grows with the noise: 0.6, 1.0 and 2.0 px at sigma 15, 25, 50.
    axis = -1 if noisy.ndim == 3 else None
    return gaussian(noisy, sigma=sigma * 255 / 25, channel_axis=axis)


def nl_means(noisy: np.ndarray, sigma: float) -> np.ndarray:
    axis = -1 if noisy.ndim == 3 else None
    estimate = _estimated(noisy)
    return denoise_nl_means(
        noisy,
        h=0.8 * estimate,
        sigma=estimate,
        fast_mode=True,
        patch_size=5,
        patch_distance=6,
        channel_axis=axis,
    )


def total_variation(noisy: np.ndarray, sigma: float) -> np.ndarray:
    axis = -1 if noisy.ndim == 3 else None
    return denoise_tv_chambolle(noisy, weight=_estimated(noisy), channel_axis=axis)


def wavelet(noisy: np.ndarray, sigma: float) -> np.ndarray:
    color = noisy.ndim == 3
    return denoise_wavelet(
        noisy,
        channel_axis=-1 if color else None,
        convert2ycbcr=color,
        method="BayesShrink",
        mode="soft",
        rescale_sigma=True,
    )


def bm3d_method(noisy: np.ndarray, sigma: float) -> np.ndarray:
    if noisy.ndim == 3:
        return bm3d.bm3d_rgb(noisy, sigma)
    return bm3d.bm3d(noisy, sigma)


def aelab_method(restorer: Restorer) -> Method:
    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        pixels = noisy[:, :, None] if noisy.ndim == 2 else noisy
        result, _ = restorer.denoise(ImageRecord(pixels.astype(np.float32)))
        return result.pixels[:, :, 0] if noisy.ndim == 2 else result.pixels

    return run


def score(clean: np.ndarray, result: np.ndarray) -> tuple[float, float]:
    result = np.clip(result, 0, 1)
    axis = -1 if clean.ndim == 3 else None
    psnr = peak_signal_noise_ratio(clean, result, data_range=1.0)
    ssim = structural_similarity(clean, result, data_range=1.0, channel_axis=axis)
    return float(psnr), float(ssim)


def run_denoising(
    images: list[ImageRecord],
    methods: dict[str, Method],
    sigmas: list[int],
    bm3d_sigmas: list[int],
    bm3d_images: int,
    seed: int,
) -> list[dict[str, Any]]:
    rows = []
    for mode in ("gray", "rgb"):
        for sigma in sigmas:
            for index, record in enumerate(images):
                clean = record.pixels @ LUMA if mode == "gray" else record.pixels
                rng = np.random.default_rng([seed, sigma, index])
                noise = rng.normal(0, sigma / 255, clean.shape)
                noisy = np.clip(clean + noise, 0, 1).astype(np.float32)
                for name, method in methods.items():
                    skip_bm3d = sigma not in bm3d_sigmas or index >= bm3d_images
                    if name == "BM3D" and skip_bm3d:
                        continue
                    start = time.perf_counter()
                    result = noisy if name == "noisy" else method(noisy, sigma / 255)
                    seconds = time.perf_counter() - start
                    psnr, ssim = score(clean, result)
                    rows.append(
                        {
                            "mode": mode,
                            "sigma": sigma,
                            "image": record.name,
                            "method": name,
                            "psnr": psnr,
                            "ssim": ssim,
                            "seconds": seconds,
                        }
                    )
                print(f"{mode} sigma {sigma} {record.name} done", file=sys.stderr)
    return rows


def summarize_denoising(rows: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["mode"], row["sigma"], row["method"])].append(row)
    # Where BM3D ran on fewer images, also average aelab over just those images.
    for (mode, sigma, method), items in list(groups.items()):
        if method != "BM3D":
            continue
        names = {r["image"] for r in items}
        ours = groups[(mode, sigma, AELAB)]
        if len(names) < len(ours):
            groups[(mode, sigma, AELAB + ", BM3D's images")] = [
                r for r in ours if r["image"] in names
            ]
    return {
        f"{mode}/{sigma}/{method}": {
            "images": len(items),
            "psnr": float(np.mean([r["psnr"] for r in items])),
            "ssim": float(np.mean([r["ssim"] for r in items])),
            "seconds": float(np.mean([r["seconds"] for r in items])),
        }
        for (mode, sigma, method), items in groups.items()
    }


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness M on the 0-255 scale."""
    red, green, blue = (rgb[:, :, i] * 255 for i in range(3))
    rg = red - green
    yb = 0.5 * (red + green) - blue
    spread = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mean = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(spread + 0.3 * mean)


def luma_bin_chroma(photos: Path) -> np.ndarray:
    """Mean (Cb, Cr) of the training photos in each of LUMA_BINS luma bins."""
    sums = np.zeros((LUMA_BINS, 2))
    counts = np.zeros(LUMA_BINS)
    for path in list_images(photos):
        rgb = read_image(path).pixels[:, :, :3]
        luma = rgb @ LUMA
        cb = (rgb[:, :, 2] - luma) / 1.772
        cr = (rgb[:, :, 0] - luma) / 1.402
        bins = np.minimum((luma * LUMA_BINS).astype(int), LUMA_BINS - 1).ravel()
        counts += np.bincount(bins, minlength=LUMA_BINS)
        sums[:, 0] += np.bincount(bins, cb.ravel(), minlength=LUMA_BINS)
        sums[:, 1] += np.bincount(bins, cr.ravel(), minlength=LUMA_BINS)
    return sums / np.maximum(counts, 1)[:, None]


def colorize_with_table(luma: np.ndarray, table: np.ndarray) -> np.ndarray:
    from aelab.restore.color import ycbcr_to_rgb

    bins = np.minimum((luma * LUMA_BINS).astype(int), LUMA_BINS - 1)
    chroma = torch.from_numpy(table[bins].astype(np.float32)).permute(2, 0, 1)[None]
    luma_tensor = torch.from_numpy(luma.astype(np.float32))[None, None]
    return ycbcr_to_rgb(luma_tensor, chroma)[0].permute(1, 2, 0).numpy()


def run_colorization(
    images: list[ImageRecord], colorizer: Restorer, photos: Path
) -> list[dict[str, Any]]:
    table = luma_bin_chroma(photos)
    rows = []
    for record in images:
        original = record.pixels[:, :, :3]
        luma = original @ LUMA
        results = {
            "original": original,
            "gray image": np.repeat(luma[:, :, None], 3, axis=2),
            "luma-bin mean chroma": colorize_with_table(luma, table),
        }
        start = time.perf_counter()
        results["aelab"] = colorizer.colorize(ImageRecord(luma[:, :, None])).pixels
        seconds = time.perf_counter() - start
        for name, rgb in results.items():
            rows.append(
                {
                    "image": record.name,
                    "method": name,
                    "psnr": float(
                        peak_signal_noise_ratio(original, rgb, data_range=1.0)
                    ),
                    "colourfulness": colourfulness(rgb),
                    "seconds": seconds if name == "aelab" else None,
                }
            )
    return rows


def kodak_mosaic(images: list[ImageRecord], height: int, width: int) -> np.ndarray:
    """Fill (height, width, 3) with the Kodak images, all turned to landscape."""
    landscape = [
        r.pixels if r.size[0] < r.size[1] else np.rot90(r.pixels) for r in images
    ]
    rows = []
    count = 0
    while sum(r.shape[0] for r in rows) < height:
        row = []
        while sum(p.shape[1] for p in row) < width:
            row.append(landscape[count % len(landscape)])
            count += 1
        rows.append(np.concatenate(row, axis=1)[:, :width])
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:height])


def run_large(
    images: list[ImageRecord],
    model: str | None,
    sigma: int,
    seed: int,
    height: int = 3000,
    width: int = 4000,
) -> dict[str, Any]:
    """Denoise a 4000x3000 Kodak mosaic with the CLI in a child process.

    Reports the child's wall time and peak resident memory (ru_maxrss), the
    PSNR, and the largest difference, in 8-bit levels, between the tiled result
    and the same 1024x1024 region denoised in one piece; seams would show there.
    """
    clean = kodak_mosaic(images, height, width)
    rng = np.random.default_rng([seed, sigma, width])
    noisy = np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1)
    noisy = (np.rint(noisy * 255) / 255).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "large.png", Path(folder) / "out.png"
        write_image(source, ImageRecord(noisy))
        command = [sys.executable, "-m", "aelab", "-q", "denoise", str(source)]
        command += ["-o", str(target), "--sigma", str(sigma)]
        command += ["--model", model] if model else []
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        tiled = read_image(target).pixels
    # Offsets that are multiples of 16 keep the network's strided layers on the
    # same sampling grid in both runs, so only seams can make them differ.
    top, left = height // 64 * 16, width // 64 * 16
    side, margin = min(1024, height // 2), 64
    region = noisy[top : top + side, left : left + side]
    whole = Restorer.load(model, "denoise", tile=1152, overlap=64)
    piece, _ = whole.denoise(ImageRecord(region), sigma=sigma)
    piece_levels = np.rint(piece.pixels * 255)[margin:-margin, margin:-margin]
    tiled_region = tiled[top : top + side, left : left + side]
    tiled_levels = np.rint(tiled_region * 255)[margin:-margin, margin:-margin]
    difference = np.abs(piece_levels - tiled_levels)
    return {
        "size": f"{width}x{height} RGB, 8-bit PNG",
        "sigma": sigma,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_kib / 1024),
        "psnr_noisy": float(peak_signal_noise_ratio(clean, noisy, data_range=1.0)),
        "psnr_denoised": float(peak_signal_noise_ratio(clean, tiled, data_range=1.0)),
        "tiled_vs_whole_max_levels": float(difference.max()),
        "tiled_vs_whole_mean_levels": float(difference.mean()),
    }


def print_tables(
    summary: dict[str, Any], colour_rows: list[dict[str, Any]], sigmas: list[int]
) -> None:
    methods = list(dict.fromkeys(key.split("/", 2)[2] for key in summary))
    for mode in ("gray", "rgb"):
        print(f"\nDenoising, {mode}: PSNR dB / SSIM (mean over images), s per image")
        header = (
            "| method | " + " | ".join(f"sigma {s}" for s in sigmas) + " | s/image |"
        )
        print(header)
        print("|---" * (len(sigmas) + 2) + "|")
        for method in methods:
            cells, times = [], []
            for sigma in sigmas:
                entry = summary.get(f"{mode}/{sigma}/{method}")
                if entry is None:
                    cells.append("n/a")
                    continue
                cells.append(f"{entry['psnr']:.2f} / {entry['ssim']:.3f}")
                times.append(entry["seconds"])
            seconds = f"{np.mean(times):.2f}" if times else "n/a"
            print(f"| {method} | " + " | ".join(cells) + f" | {seconds} |")
    print("\nColorization: mean over images")
    print("| method | PSNR dB | colourfulness |\n|---|---|---|")
    for method in dict.fromkeys(r["method"] for r in colour_rows):
        items = [r for r in colour_rows if r["method"] == method]
        psnr = np.mean([r["psnr"] for r in items])
        colour = np.mean([r["colourfulness"] for r in items])
        shown = "inf" if not np.isfinite(psnr) else f"{psnr:.2f}"
        print(f"| {method} | {shown} | {colour:.1f} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kodak-dir",
        type=Path,
        default=DEFAULT_KODAK,
        help="folder with kodim01.png ... kodim12.png",
    )
    parser.add_argument(
        "--photos-dir",
        type=Path,
        default=DEFAULT_PHOTOS,
        help="training photos, for the luma-bin colorization baseline",
    )
    parser.add_argument(
        "--images", type=int, default=12, help="use kodim01 up to this number"
    )
    parser.add_argument(
        "--sigmas",
        default="15,25,50",
        help="Gaussian noise standard deviations, 0-255 scale",
    )
    parser.add_argument(
        "--bm3d-sigmas",
        default="15,25,50",
        help="the sigmas at which BM3D runs (it is the slowest)",
    )
    parser.add_argument(
        "--bm3d-images",
        type=int,
        default=12,
        help="run BM3D on the first N images only",
    )
    parser.add_argument("--denoiser", help="denoiser model folder (default: bundled)")
    parser.add_argument("--colorizer", help="colorizer model folder (default: bundled)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: torch's choice)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output")
    parser.add_argument(
        "--part",
        choices=("tables", "large", "all"),
        default="tables",
        help="tables: the Kodak comparisons; large: time and peak memory of "
        "'aelab denoise' on a 4000x3000 mosaic; all: both",
    )
    parser.add_argument(
        "--large-out",
        type=Path,
        default=DEFAULT_OUT.with_name("restore_large.json"),
        help="JSON output of --part large",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.kodak_dir.is_dir():
        print(
            f"error: Kodak folder {str(args.kodak_dir)!r} not found; pass --kodak-dir",
            file=sys.stderr,
        )
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    sigmas = [int(s) for s in args.sigmas.split(",")]
    bm3d_sigmas = [int(s) for s in args.bm3d_sigmas.split(",") if s]
    paths = [args.kodak_dir / f"kodim{i:02d}.png" for i in range(1, args.images + 1)]
    images = [read_image(p) for p in paths]
    denoiser = Restorer.load(args.denoiser, "denoise")
    colorizer = Restorer.load(args.colorizer, "colorize")
    methods: dict[str, Method] = {
        "noisy": lambda noisy, sigma: noisy,
        "Gaussian filter": gaussian_filter,
        "non-local means": nl_means,
        "total variation": total_variation,
        "wavelet": wavelet,
        "BM3D": bm3d_method,
        AELAB: aelab_method(denoiser),
    }
    if args.part in ("large", "all"):
        large = run_large(images, args.denoiser, 25, args.seed)
        large["command"] = " ".join(["python", *sys.argv])
        large["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        print(json.dumps(large, indent=1))
        args.large_out.parent.mkdir(parents=True, exist_ok=True)
        args.large_out.write_text(json.dumps(large, indent=1) + "\n")
        if args.part == "large":
            return 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = run_denoising(
            images, methods, sigmas, bm3d_sigmas, args.bm3d_images, args.seed
        )
    summary = summarize_denoising(rows)
    colour_rows = run_colorization(images, colorizer, args.photos_dir)
    print_tables(summary, colour_rows, sigmas)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "aelab": aelab.__version__,
            "torch": torch.__version__,
            "scikit-image": skimage.__version__,
            "bm3d": getattr(bm3d, "__version__", "unknown"),
        },
        "denoiser": denoiser.config["training"].get("command"),
        "colorizer": colorizer.config["training"].get("command"),
        "denoising": summary,
        "colorization": colour_rows,
        "denoising_rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
