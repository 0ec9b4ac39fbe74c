"""Training of image codecs on random crops of photographs."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..cli.common import say, verify_image
from ..data.images import list_training_images
from ..errors import InvalidDataError, InvalidParameterError
from ..io_utils import atomic_path
from .model import DEFAULT_LAMBDAS, BlockCodec, ImageCodec

logger = logging.getLogger(__name__)

DEFAULT_STEPS = 20_000
DEFAULT_BATCH_SIZE = 8
DEFAULT_LEARNING_RATE = 5e-4
# Photographs are also seen at these scales (Lanczos), so the codec learns the
# detail density of both camera-resolution and web-resolution images.
SCALES = (1.0, 0.7, 0.5, 0.35)
GRAY_SHARE = 0.1
# Steps over which the learning rate ramps up from zero; Adam's first steps
# are otherwise as large as its later ones while its moment estimates settle.
WARMUP_STEPS = 200
# The context tables are counted on the central TABLE_CROP x TABLE_CROP pixels of
# every training image at these scales.
TABLE_SCALES = (1.0, 0.5)
TABLE_CROP = 768


class CropSampler:
    """Random square crops of a set of RGB images, with flips and gray copies."""

    def __init__(
        self,
        paths: list[Path],
        crop_size: int,
        generator: np.random.Generator,
        scales: tuple[float, ...] = SCALES,
    ) -> None:
        self.crop_size = crop_size
        self.rng = generator
        self.images: list[np.ndarray] = []
        for path in paths:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
            for scale in scales:
                size = (round(rgb.width * scale), round(rgb.height * scale))
                if min(size) < crop_size:
                    continue
                scaled = rgb if scale == 1.0 else rgb.resize(size, Image.LANCZOS)
                self.images.append(np.asarray(scaled))
        if not self.images:
            raise InvalidDataError(
                f"no training image is at least {crop_size} pixels on its shorter "
                "side; pass a smaller --crop-size"
            )
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], float)
        self.weights = areas / areas.sum()

    def batch(self, size: int) -> torch.Tensor:
        """Return ``size`` crops as float32 (B, 3, crop, crop) in [0, 1]."""
        c = self.crop_size
        crops = np.empty((size, c, c, 3), dtype=np.uint8)
        picks = self.rng.choice(len(self.images), size=size, p=self.weights)
        for i, pick in enumerate(picks):
            image = self.images[pick]
            top = self.rng.integers(0, image.shape[0] - c + 1)
            left = self.rng.integers(0, image.shape[1] - c + 1)
            crop = image[top : top + c, left : left + c]
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            if self.rng.random() < 0.5:
                crop = crop[::-1]
            crops[i] = crop
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
        gray = torch.from_numpy(self.rng.random(size) < GRAY_SHARE)
        luma = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)
        x[gray] = luma[gray][:, None].expand(-1, 3, -1, -1)
        return x


def train_codec(
    paths: list[Path],
    steps: int,
    crop_size: int = 128,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    kind: str = "block",
    hidden: int | None = None,
    latent: int | None = None,
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    seed: int = 0,
    time_limit: float | None = None,
    checkpoint: Path | None = None,
    progress: bool = False,
    initial: ImageCodec | None = None,
) -> tuple[ImageCodec, dict]:
    """Train an :class:`ImageCodec` and return it with a summary of the run.

    Each step draws one quality in turn and a batch of random crops. The learning
    rate follows a cosine from ``learning_rate`` down to 2% of it, over ``steps``
    or over ``time_limit`` seconds, whichever runs out first, so a run cut short
    by the time limit still ends with a small learning rate. ``initial``, when
    given, is trained further in place of a new model (its architecture wins
    over ``hidden``, ``latent`` and ``lambdas``).
    """
    torch.manual_seed(seed)
    sampler = CropSampler(paths, crop_size, np.random.default_rng(seed))
    if initial is not None:
        model = initial
    elif kind == "block":
        model = BlockCodec(3, hidden or 32, latent or 192, lambdas)
        images = torch.cat([sampler.batch(64) for _ in range(8)])
        model.init_from_patches(images, prior_steps=min(200, steps))
    else:
        model = ImageCodec(3, hidden or 64, latent or 128, lambdas)
    model.train()
    optimizer = torch.optim.Adam(parameter_groups(model), lr=learning_rate)
    start = time.monotonic()
    last_save = start
    running: dict[int, list[float]] = {q: [] for q in range(model.qualities)}
    bar = tqdm(range(steps), disable=not progress, unit="step", desc="training codec")
    step = 0
    for step in bar:
        quality = step % model.qualities
        out = model(sampler.batch(batch_size), quality)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        done = (step + 1) / steps
        if time_limit is not None:
            done = max(done, (time.monotonic() - start) / time_limit)
        warmup = min(1.0, (step + 1) / WARMUP_STEPS)
        for group in optimizer.param_groups:
            rate = learning_rate * group["lr_scale"]
            group["lr"] = rate * warmup * _cosine(min(done, 1.0))
        psnr = -10 * math.log10(max(out["mse"].item(), 1e-10))
        running[quality] = (running[quality] + [out["bpp"].item(), psnr])[-100:]
        now = time.monotonic()
        if step % 200 == 0 or now - last_save > 300:
            logger.info("step %d: %s", step, _running_summary(running))
        if checkpoint is not None and now - last_save > 300:
            save_file(model.state_dict(), str(checkpoint))
            last_save = now
        if time_limit is not None and now - start > time_limit:
            logger.info("time limit reached after %d steps", step + 1)
            break
    model.eval()
    summary = {
        "steps": step + 1,
        "seconds": round(time.monotonic() - start, 1),
        "crop_size": crop_size,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "training_images": [p.name for p in paths],
        "final_bpp_psnr_by_quality": _running_summary(running),
    }
    return model, summary


def parameter_groups(model: torch.nn.Module) -> list[dict]:
    """Split parameters into optimiser groups with their learning-rate scales.

    The densities and gains take larger steps, since they must move far from
    their initial values, and the linear block transform smaller ones, since
    its KLT initialisation is already good.
    """
    scales = {"prior.": 4.0, "log_gain": 4.0, "log_inverse_gain": 4.0}
    scales["transform."] = 0.2
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        scale = next((v for k, v in scales.items() if name.startswith(k)), 1.0)
        groups.setdefault(scale, []).append(parameter)
    return [{"params": ps, "lr_scale": scale} for scale, ps in groups.items()]


def _cosine(done: float) -> float:
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * done))


def _running_summary(running: dict[int, list[float]]) -> str:
    parts = []
    for quality, values in running.items():
        if values:
            bpp = np.mean(values[0::2])
            psnr = np.mean(values[1::2])
            parts.append(f"q{quality + 1} {bpp:.3f} bpp {psnr:.2f} dB")
    return "; ".join(parts)


def table_samples(
    model: torch.nn.Module,
    paths: list[Path],
    scales: tuple[float, ...] = TABLE_SCALES,
    side: int = TABLE_CROP,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (quality, rounded latent) for central crops of the images ``paths``.

    Each image is taken at each of ``scales`` (Lanczos) and cropped to at most
    ``side`` x ``side`` pixels around its centre. These latents are the samples
    from which the context tables are counted, one at a time.
    """
    model = model.eval()
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        for scale in scales:
            size = (round(rgb.width * scale), round(rgb.height * scale))
            scaled = rgb if scale == 1.0 else rgb.resize(size, Image.LANCZOS)
            pixels = np.array(scaled)
            top = max(0, (pixels.shape[0] - side) // 2)
            left = max(0, (pixels.shape[1] - side) // 2)
            crop = pixels[top : top + side, left : left + side]
            x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 255
            for quality in range(model.qualities):
                with torch.inference_mode():
                    y = torch.round(model.analysis(x, quality))
                yield quality, y[0].to(torch.int32).numpy()


def fit_task(args: argparse.Namespace) -> int:
    """Run ``aelab fit --task compress DATA -o MODEL``."""
    # Imported here so that a long training run saves with the store code of
    # the time it finishes.
    store = importlib.import_module("aelab.codec.store")
    output = Path(args.output)
    store.check_codec_path(output)
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    if steps < 0 or (steps == 0 and not args.init) or args.crop_size < 2 * 16:
        raise InvalidParameterError(
            f"--steps must be >= 1 (or 0 with --init, to recount only the "
            f"entropy tables) and --crop-size >= 32 (got {steps} and "
            f"{args.crop_size})"
        )
    paths = list_training_images(args.data)
    for path in paths:  # name a broken photo before minutes of training
        verify_image(path)
    start = store.load_codec(args.init) if args.init else None
    time_limit = args.max_minutes * 60 if args.max_minutes else None
    command = (
        f"aelab fit --task compress {args.data} -o {args.output} --steps {steps} "
        f"--crop-size {args.crop_size} --seed {args.seed}"
        + (f" --max-minutes {args.max_minutes:g}" if time_limit else "")
        + (f" --init {args.init}" if args.init else "")
        + (f" --lr {args.lr:g}" if args.lr else "")
        + (f" --batch-size {args.batch_size}" if args.batch_size else "")
    )
    checkpoint = output.with_name(output.name + ".partial.safetensors")
    if steps == 0:
        model = start.model
        summary = {"steps": 0, "training_images": [p.name for p in paths]}
        _save(args, store, model, summary, command, start, output, paths)
        return 0
    model, summary = train_codec(
        paths,
        steps=steps,
        crop_size=args.crop_size,
        batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
        learning_rate=args.lr or DEFAULT_LEARNING_RATE,
        seed=args.seed,
        time_limit=time_limit,
        checkpoint=checkpoint,
        progress=args.progress,
        initial=start.model if start else None,
    )
    save_file(model.state_dict(), str(checkpoint))
    _save(args, store, model, summary, command, start, output, paths)
    checkpoint.unlink(missing_ok=True)
    return 0


def _save(
    args: argparse.Namespace,
    store: Any,
    model: torch.nn.Module,
    summary: dict[str, Any],
    command: str,
    start: Any,
    output: Path,
    paths: list[Path],
) -> None:
    """Count the context tables on ``paths`` and write the codec folder."""
    logger.info("counting the entropy tables on %d images", len(paths))
    latents = table_samples(model, paths)
    summary["command"] = command
    summary["table_images"] = {
        "scales": list(TABLE_SCALES),
        "central_crop": TABLE_CROP,
    }
    if start is not None:
        summary["initial_training"] = start.config.get("training", {})
    with atomic_path(output) as tmp:
        store.save_codec(model, tmp, summary, model_id=output.name, latents=latents)
    steps = summary["steps"]
    trained = f"{steps} training steps" if steps else "no training"
    say(
        args,
        f"wrote codec {output} ({trained}; entropy tables counted on "
        f"{len(paths)} images)",
    )
