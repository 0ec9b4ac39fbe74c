"""Training of denoisers and colorizers on random crops of photographs.

``aelab fit --task denoise|colorize IMAGES -o MODEL`` calls :func:`fit_task`.
Each step draws random crops from the training photos, which are kept in memory
at a few downscaled sizes, flips and rotates them, and for denoising corrupts
them with Gaussian, Poisson or salt-and-pepper noise. The learning rate decays
on a cosine from the start to the end of the run, where the end is ``--steps``
or ``--max-minutes``, whichever comes first.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..cli.common import say
from ..data.images import convert_channels, list_training_images, read_image
from ..errors import InvalidDataError, InvalidParameterError
from .color import rgb_to_ycbcr
from .io import check_restorer_path, save_restorer
from .models import ColorizeNet, DenoiseUNet
from .noise import add_gaussian, add_poisson, add_salt_pepper, estimate_sigma
from .pipeline import resolve_device

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Settings of one restoration training run."""

    task: str
    steps: int
    crop_size: int
    batch_size: int
    learning_rate: float
    seed: int = 0
    max_minutes: float | None = None  # wall-clock limit; the run saves and stops
    # Sizes, relative to the files, at which the photos are kept for cropping.
    scales: tuple[float, ...] = (0.45, 0.6, 0.75)
    max_sigma: float = 55 / 255  # Gaussian sigma is drawn uniformly in [0, max]
    gray_share: float = 0.3  # denoising crops made gray (same noise in R, G, B)
    checkpoint_minutes: float = 5.0


DEFAULTS = {
    "denoise": {"steps": 6000, "batch_size": 16, "learning_rate": 1e-3},
    "colorize": {"steps": 3000, "batch_size": 16, "learning_rate": 1e-3},
}


def fit_task(args: argparse.Namespace) -> int:
    """Train a denoiser or colorizer from ``aelab fit --task`` options and save it."""
    task = args.task
    defaults = DEFAULTS[task]
    settings = TrainSettings(
        task=task,
        steps=args.steps or defaults["steps"],
        crop_size=args.crop_size,
        batch_size=args.batch_size or defaults["batch_size"],
        learning_rate=args.lr or defaults["learning_rate"],
        seed=args.seed,
        max_minutes=getattr(args, "max_minutes", None),
    )
    _check_settings(settings)
    if getattr(args, "resume", False):
        raise InvalidParameterError(
            f"--resume is not available for --task {task}; the checkpoint folder "
            "is itself a usable model, or start the run again"
        )
    output = Path(args.output)
    check_restorer_path(output)
    checkpoint = None
    if not getattr(args, "no_checkpoint", False):
        checkpoint = Path(getattr(args, "checkpoint_dir", None) or f"{output}.ckpt")
        check_restorer_path(checkpoint)
    photos = load_training_photos(Path(args.data), settings.scales, settings.crop_size)
    network, training = train(settings, photos, args.device, args.progress, checkpoint)
    training["command"] = _command_line()
    training["data"] = str(args.data)
    save_restorer(network, task, output, training)
    if checkpoint is not None and checkpoint.exists():
        shutil.rmtree(checkpoint)
    last = training["history"][-1] if training["history"] else {}
    say(
        args,
        f"trained a {task} model for {training['steps_done']} steps in "
        f"{training['seconds']:.0f} s (last loss {last.get('loss', math.nan):.4g}); "
        f"saved {output}",
    )
    return 0


def _check_settings(settings: TrainSettings) -> None:
    for name in ("steps", "crop_size", "batch_size"):
        value = getattr(settings, name)
        if value < 1:
            option = "--" + name.replace("_", "-")
            raise InvalidParameterError(f"{option} must be at least 1, got {value}")
    if settings.crop_size < 32 or settings.crop_size % 16:
        raise InvalidParameterError(
            f"--crop-size must be a multiple of 16 and at least 32, got "
            f"{settings.crop_size}; try 64 or 96"
        )
    if not settings.learning_rate > 0:
        raise InvalidParameterError(
            f"--lr must be positive, got {settings.learning_rate}"
        )
    if settings.max_minutes is not None and not settings.max_minutes > 0:
        raise InvalidParameterError(
            f"--max-minutes must be positive, got {settings.max_minutes}"
        )


def _command_line() -> str:
    """Return the running command line, named 'aelab ...' when run through the CLI."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("aelab", "__main__.py"):
        argv[0] = "aelab"
    return shlex.join(argv)


def load_training_photos(
    data: Path, scales: tuple[float, ...], crop_size: int
) -> list[torch.Tensor]:
    """Read the photos in ``data`` as RGB uint8 (3, H, W) tensors at each scale.

    Copies smaller than a crop are left out.

    Raises:
        InvalidDataError: ``data`` is missing, or no copy is as large as a crop.
    """
    paths = list_training_images(data)
    photos = []
    for path in paths:
        pixels = convert_channels(read_image(path).pixels, 3)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        for scale in scales:
            size = (round(tensor.shape[1] * scale), round(tensor.shape[2] * scale))
            if min(size) < crop_size:
                continue
            small = F.interpolate(
                tensor[None],
                size=size,
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
            photos.append((small.clamp(0, 1) * 255).round().to(torch.uint8))
    if not photos:
        raise InvalidDataError(
            f"the images in {str(data)!r} are smaller than --crop-size {crop_size} "
            f"at the training scales {scales}; use larger images or a smaller crop"
        )
    return photos


def sample_crops(
    photos: list[torch.Tensor], settings: TrainSettings, generator: torch.Generator
) -> torch.Tensor:
    """Draw a batch of random crops (N, 3, S, S) in [0, 1], flipped and rotated.

    Photos are drawn with probability proportional to their area.
    """
    size = settings.crop_size
    areas = torch.tensor([p.shape[1] * p.shape[2] for p in photos], dtype=torch.float)
    picks = torch.multinomial(areas, settings.batch_size, True, generator=generator)
    crops = []
    for index in picks.tolist():
        photo = photos[index]
        top = int(torch.randint(photo.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[2] - size + 1, (1,), generator=generator))
        crop = photo[:, top : top + size, left : left + size]
        turns, flip = torch.randint(4, (2,), generator=generator).tolist()
        crop = torch.rot90(crop, turns, (1, 2))
        crops.append(crop.flip(2) if flip % 2 else crop)
    return torch.stack(crops).float() / 255


def corrupt(
    clean: torch.Tensor, settings: TrainSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (clean, noisy, sigma) for a batch of RGB crops.

    A share ``gray_share`` of the crops become gray, with the same luma and the
    same noise in all three channels, the way the pipeline feeds gray images.
    Of the rest, 70% get Gaussian noise, 15% Poisson noise and 15% salt and
    pepper with light Gaussian noise. The noisy crops are clipped to [0, 1] as
    an image file would be. sigma, the noise level given to the network, is
    the true Gaussian sigma for half of the Gaussian crops and the blind
    estimate of :func:`estimate_sigma` for all the others, which is what
    ``--sigma auto`` passes at inference.
    """
    n = clean.shape[0]
    gray = torch.rand(n, generator=generator) < settings.gray_share
    luma = rgb_to_ycbcr(clean)[0].expand_as(clean)
    clean = torch.where(gray.view(-1, 1, 1, 1), luma, clean)
    kind = torch.rand(n, generator=generator)
    sigma = torch.rand(n, generator=generator) * settings.max_sigma
    is_salt = kind >= 0.85
    sigma = torch.where(is_salt, sigma * 10 / 55, sigma)
    noisy = add_gaussian(clean, sigma, generator)
    noisy_gray = add_gaussian(clean[:, :1], sigma, generator).expand_as(clean)
    noisy = torch.where(gray.view(-1, 1, 1, 1), noisy_gray, noisy)
    peak = torch.exp(
        torch.empty(n).uniform_(math.log(8), math.log(300), generator=generator)
    )
    poisson = add_poisson(clean, peak, generator)
    poisson_gray = add_poisson(clean[:, :1], peak, generator).expand_as(clean)
    poisson = torch.where(gray.view(-1, 1, 1, 1), poisson_gray, poisson)
    is_poisson = (kind >= 0.7) & ~is_salt
    noisy = torch.where(is_poisson.view(-1, 1, 1, 1), poisson, noisy)
    amount = torch.empty(n).uniform_(0.01, 0.15, generator=generator)
    salted = add_salt_pepper(noisy, amount, generator)
    noisy = torch.where(is_salt.view(-1, 1, 1, 1), salted, noisy).clamp(0, 1)
    sigma_known = (kind < 0.7) & (torch.rand(n, generator=generator) < 0.5)
    sigma = torch.where(sigma_known, sigma, estimate_sigma(noisy))
    return clean, noisy, sigma


def _lr_factor(progress: float, warmup: float = 0.02) -> float:
    """Linear warm-up, then a cosine from 1 down to 0.02 at ``progress`` 1."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    phase = (progress - warmup) / (1 - warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(phase, 1.0)))


def build_for_task(task: str) -> torch.nn.Module:
    return DenoiseUNet() if task == "denoise" else ColorizeNet()


def training_loss(
    network: torch.nn.Module,
    crops: torch.Tensor,
    settings: TrainSettings,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Corrupt a batch for the task and return the network's loss on it.

    Denoising uses the mean squared error (the loss that PSNR measures).
    Colorization uses the L1 error of Cb and Cr, which washes colours out less
    than squared error when several colours are plausible.
    """
    if settings.task == "denoise":
        clean, noisy, sigma = corrupt(crops, settings, generator)
        output = network(noisy.to(device), sigma.to(device))
        return F.mse_loss(output, clean.to(device))
    luma, chroma = rgb_to_ycbcr(crops)
    return F.l1_loss(network(luma.to(device)), chroma.to(device))


def train(
    settings: TrainSettings,
    photos: list[torch.Tensor],
    device_name: str = "auto",
    progress: bool = False,
    checkpoint: Path | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a new network for ``settings.task``; return it and the run record.

    Every ``checkpoint_minutes`` the network so far is written to
    ``checkpoint`` as a complete model folder, so a crash loses at most that
    much training.
    """
    device = resolve_device(device_name)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    network = build_for_task(settings.task).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    limit = settings.max_minutes * 60 if settings.max_minutes else math.inf
    history: list[dict[str, float]] = []
    start = last_checkpoint = time.monotonic()
    checkpoint_seconds = settings.checkpoint_minutes * 60
    losses: list[float] = []
    step, lr = 0, settings.learning_rate
    bar = tqdm(total=settings.steps, desc=f"fit {settings.task}", disable=not progress)
    while step < settings.steps:
        elapsed = time.monotonic() - start
        if elapsed >= limit:
            log.info(
                "stopping at step %d: the %.1f-minute limit is reached",
                step,
                settings.max_minutes,
            )
            break
        lr = settings.learning_rate * _lr_factor(
            max(step / settings.steps, elapsed / limit)
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        crops = sample_crops(photos, settings, generator)
        loss = training_loss(network, crops, settings, generator, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update()
        if step % 100 == 0 or step == settings.steps:
            _log_losses(history, losses, step, lr, start)
            bar.set_postfix(loss=f"{history[-1]['loss']:.4g}")
        if checkpoint and time.monotonic() - last_checkpoint > checkpoint_seconds:
            record = _record(settings, step, start, history, device)
            save_restorer(network, settings.task, checkpoint, record)
            last_checkpoint = time.monotonic()
            log.info("checkpoint at step %d written to %s", step, checkpoint)
    if losses:
        _log_losses(history, losses, step, lr, start)
    bar.close()
    return network.cpu().eval(), _record(settings, step, start, history, device)


def _log_losses(
    history: list[dict[str, float]],
    losses: list[float],
    step: int,
    lr: float,
    start: float,
) -> None:
    """Append the mean of ``losses`` to ``history``, log it, and clear ``losses``."""
    seconds = round(time.monotonic() - start, 1)
    mean = sum(losses) / len(losses)
    history.append({"step": step, "loss": mean, "lr": lr, "seconds": seconds})
    log.info("step %d loss=%.6f lr=%.2e seconds=%.0f", step, mean, lr, seconds)
    losses.clear()


def _record(
    settings: TrainSettings,
    step: int,
    start: float,
    history: list[dict[str, float]],
    device: torch.device,
) -> dict[str, Any]:
    return {
        "settings": asdict(settings),
        "steps_done": step,
        "seconds": round(time.monotonic() - start, 1),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "history": list(history),
    }
