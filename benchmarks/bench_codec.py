"""Rate-distortion benchmark of aelab's image codec against JPEG, WebP and PNG.

Run from the repository root (it reads ../shared/data/kodak)::

    python benchmarks/bench_codec.py --out benchmarks/results/codec

For every Kodak image kodim01-12 it measures bits per pixel from the real file
size, PSNR on RGB and MS-SSIM for aelab at each quality, JPEG and WebP (Pillow)
over a sweep of qualities, and PNG. BD-rate (Bjøntegaard, cubic fit of log rate
against PSNR over the overlapping PSNR range) compares the mean curves. It also
compresses scikit-learn's 1797 digits one image per file and compares the total
with the whole set under gzip, bz2 and lzma.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import lzma
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aelab.codec.image import compress_image, decompress_image
from aelab.codec.store import load_codec
from aelab.data.images import ImageRecord

KODAK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kodak"
JPEG_QUALITIES = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def _gaussian_blur(x: torch.Tensor, size: int = 11, sigma: float = 1.5):
    """Valid-mode Gaussian filter as two 1-D passes (the window is separable)."""
    t = torch.arange(size, dtype=x.dtype) - size // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.conv2d(x, g.view(1, 1, 1, size))
    return F.conv2d(x, g.view(1, 1, size, 1))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-scale SSIM of two uint8 RGB images (Wang et al., 2003), 5 scales."""
    x = torch.tensor(a).permute(2, 0, 1)[:, None].float()
    y = torch.tensor(b).permute(2, 0, 1)[:, None].float()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        mu_x, mu_y = _gaussian_blur(x), _gaussian_blur(y)
        var_x = _gaussian_blur(x * x) - mu_x**2
        var_y = _gaussian_blur(y * y) - mu_y**2
        cov = _gaussian_blur(x * y) - mu_x * mu_y
        cs = (2 * cov + c2) / (var_x + var_y + c2)
        if scale == len(MS_SSIM_WEIGHTS) - 1:
            lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
            values.append((lum * cs).mean(dim=(1, 2, 3)).clamp_min(0))
        else:
            values.append(cs.mean(dim=(1, 2, 3)).clamp_min(0))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    weights = torch.tensor(MS_SSIM_WEIGHTS)[:, None]
    per_channel = torch.prod(torch.stack(values) ** weights, dim=0)
    return float(per_channel.mean())


def pillow_point(rgb: np.ndarray, fmt: str, **options) -> tuple[float, np.ndarray]:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **options)
    bpp = 8 * buffer.tell() / (rgb.shape[0] * rgb.shape[1])
    buffer.seek(0)
    return bpp, np.asarray(Image.open(buffer).convert("RGB"))


def bd_rate(reference: list[tuple], test: list[tuple]) -> float:
    """Bjøntegaard delta rate of ``test`` against ``reference``, in percent.

    Each curve is a list of (bpp, psnr). A negative value means ``test`` needs
    fewer bits for the same PSNR.
    """
    r1, p1 = np.log(np.array(reference)[:, 0]), np.array(reference)[:, 1]
    r2, p2 = np.log(np.array(test)[:, 0]), np.array(test)[:, 1]
    fit1, fit2 = np.polyfit(p1, r1, 3), np.polyfit(p2, r2, 3)
    low, high = max(p1.min(), p2.min()), min(p1.max(), p2.max())
    int1, int2 = np.polyint(fit1), np.polyint(fit2)
    avg1 = (np.polyval(int1, high) - np.polyval(int1, low)) / (high - low)
    avg2 = (np.polyval(int2, high) - np.polyval(int2, low)) / (high - low)
    return float((np.exp(avg2 - avg1) - 1) * 100)


def mean_curve(points: dict[str, list[dict]], method: str) -> list[tuple]:
    by_setting: dict[str, list[dict]] = {}
    for p in points[method]:
        by_setting.setdefault(str(p["setting"]), []).append(p)
    curve = [
        (
            float(np.mean([p["bpp"] for p in ps])),
            float(np.mean([p["psnr"] for p in ps])),
            float(np.mean([p["ms_ssim"] for p in ps])),
        )
        for ps in by_setting.values()
    ]
    return sorted(curve)


def run_kodak(codec, images: list[Path]) -> tuple[dict, dict]:
    points: dict[str, list[dict]] = {"aelab": [], "jpeg": [], "webp": [], "png": []}
    times = {"encode": [], "decode": []}
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        record = ImageRecord(rgb.astype(np.float32) / 255, 8, path.stem)
        for quality in range(1, codec.qualities + 1):
            start = time.perf_counter()
            result = compress_image(codec, record, quality)
            middle = time.perf_counter()
            decoded = decompress_image(codec, result.data)
            end = time.perf_counter()
            times["encode"].append(middle - start)
            times["decode"].append(end - middle)
            out = np.round(decoded.pixels * 255).astype(np.uint8)
            points["aelab"].append(
                _point(path, quality, result.bits_per_pixel, rgb, out)
            )
        for quality in JPEG_QUALITIES:
            bpp, out = pillow_point(rgb, "JPEG", quality=quality)
            points["jpeg"].append(_point(path, quality, bpp, rgb, out))
        for quality in WEBP_QUALITIES:
            bpp, out = pillow_point(rgb, "WEBP", quality=quality, method=6)
            points["webp"].append(_point(path, quality, bpp, rgb, out))
        bpp, _ = pillow_point(rgb, "PNG", optimize=True)
        points["png"].append({"image": path.stem, "setting": 0, "bpp": bpp})
        print(f"{path.name}: done", flush=True)
    return points, times


def _point(path: Path, setting, bpp: float, rgb: np.ndarray, out: np.ndarray) -> dict:
    return {
        "image": path.stem,
        "setting": setting,
        "bpp": bpp,
        "psnr": psnr(out, rgb),
        "ms_ssim": ms_ssim(out, rgb),
    }


def interpolate_psnr(curve: list[tuple], bpp: float) -> float:
    rates = np.log([c[0] for c in curve])
    return float(np.interp(np.log(bpp), rates, [c[1] for c in curve]))


def run_digits(codec) -> dict:
    from sklearn.datasets import load_digits

    digits = (load_digits().images * 255 / 16).round().astype(np.uint8)
    raw = digits.tobytes()
    sizes = {
        "raw uint8": len(raw),
        "gzip -9": len(gzip.compress(raw, 9)),
        "bz2 -9": len(bz2.compress(raw, 9)),
        "lzma": len(lzma.compress(raw, preset=9)),
    }
    for quality in (1, codec.qualities):
        total, errors = 0, []
        for image in digits:
            record = ImageRecord(image[:, :, None].astype(np.float32) / 255, 8, "d")
            result = compress_image(codec, record, quality)
            total += len(result.data)
            errors.append(10 ** (-result.psnr / 10))
        sizes[f"aelab quality {quality} (one file per digit)"] = total
        sizes[f"aelab quality {quality} PSNR dB"] = round(
            -10 * np.log10(np.mean(errors)), 2
        )
    return sizes


def plot(curves: dict[str, list[tuple]], png_bpp: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method, curve in curves.items():
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", label=method, ms=3)
    ax.axvline(png_bpp, color="gray", ls=":", label=f"PNG ({png_bpp:.1f} bpp)")
    ax.set_xlim(0, 2.0)
    ax.set_xlabel("bits per pixel (file size)")
    ax.set_ylabel("PSNR RGB (dB)")
    ax.set_title("Kodak kodim01-12, mean over images")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="codec folder (default: bundled)")
    parser.add_argument("--out", default="benchmarks/results/codec")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=12, help="first N of kodim01-12")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = sorted(KODAK.glob("kodim*.png"))[: min(args.images, 12)]
    if not images:
        raise SystemExit(f"Kodak images not found in {KODAK}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    codec = load_codec(args.model)
    points, times = run_kodak(codec, images)
    curves = {m: mean_curve(points, m) for m in ("aelab", "jpeg", "webp")}
    png_bpp = float(np.mean([p["bpp"] for p in points["png"]]))
    summary = {
        "model": codec.model_id,
        "training": codec.config.get("training", {}),
        "bd_rate_vs_jpeg_percent": bd_rate(curves["jpeg"], curves["aelab"]),
        "bd_rate_vs_webp_percent": bd_rate(curves["webp"], curves["aelab"]),
        "psnr_at_0.5_bpp": {m: interpolate_psnr(c, 0.5) for m, c in curves.items()},
        "png_bpp": png_bpp,
        "curves": curves,
        "seconds_per_image": {k: float(np.mean(v)) for k, v in times.items()},
        "threads": args.threads,
        "digits": run_digits(codec),
    }
    (out / "points.json").write_text(json.dumps(points, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(curves, png_bpp, out / "rd_kodak.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "curves"}, indent=1))


if __name__ == "__main__":
    main()
