"""Denoising and colorization: the bundled models, tiling, modes and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aelab.cli.main import main
from aelab.data.images import LUMA, ImageRecord, read_image
from aelab.errors import ModelFormatError
from aelab.restore import Restorer
from aelab.restore.color import rgb_to_ycbcr, ycbcr_to_rgb
from aelab.restore.io import pretrained_path
from aelab.restore.noise import estimate_sigma
from aelab.restore.tiling import run_tiled, tile_starts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KODAK = DATA / "kodak"
PHOTOS = DATA / "photos"
needs_kodak = pytest.mark.skipif(
    not KODAK.is_dir(), reason=f"Kodak images not found at {KODAK}"
)
needs_photos = pytest.mark.skipif(
    not PHOTOS.is_dir(), reason=f"training photos not found at {PHOTOS}"
)


def psnr(clean: np.ndarray, result: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((clean - result) ** 2)))


@pytest.fixture(scope="module")
def denoiser() -> Restorer:
    return Restorer.load(None, "denoise")


@pytest.fixture(scope="module")
def colorizer() -> Restorer:
    return Restorer.load(None, "colorize")


@pytest.fixture(scope="module")
def kodak_crop() -> np.ndarray:
    """A 192x256 RGB crop of kodim03 (caps on a wall: flat areas and edges)."""
    if not KODAK.is_dir():
        pytest.skip(f"Kodak images not found at {KODAK}")
    return read_image(KODAK / "kodim03.png").pixels[160:352, 200:456]


def noisy_copy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, sigma / 255, clean.shape)
    return np.clip(clean + noise, 0, 1).astype(np.float32)


@needs_kodak
@pytest.mark.parametrize("gray", [False, True])
def test_denoiser_raises_psnr(denoiser, kodak_crop, gray):
    clean = (kodak_crop @ LUMA)[:, :, None] if gray else kodak_crop
    noisy = noisy_copy(clean, 25)
    result, sigma = denoiser.denoise(ImageRecord(noisy))
    assert result.pixels.shape == clean.shape
    assert 20 < sigma < 30
    assert psnr(clean, result.pixels) > psnr(clean, noisy) + 6


@needs_kodak
def test_given_sigma_controls_strength(denoiser, kodak_crop):
    noisy = noisy_copy(kodak_crop, 15)
    light, _ = denoiser.denoise(ImageRecord(noisy), sigma=2)
    strong, _ = denoiser.denoise(ImageRecord(noisy), sigma=40)
    assert np.abs(light.pixels - noisy).mean() < np.abs(strong.pixels - noisy).mean()


def test_estimate_sigma_on_flat_noise():
    generator = torch.Generator().manual_seed(0)
    flat = torch.full((2, 3, 128, 128), 0.5)
    noisy = flat + torch.randn(flat.shape, generator=generator) * torch.tensor(
        [0.05, 0.2]
    ).view(-1, 1, 1, 1)
    estimate = estimate_sigma(noisy)
    assert estimate[0] == pytest.approx(0.05, rel=0.05)
    assert estimate[1] == pytest.approx(0.2, rel=0.05)


@needs_kodak
def test_tiles_match_whole_image(kodak_crop):
    noisy = noisy_copy(kodak_crop[:, :250], 25)  # 250 is not a multiple of 8
    tiled = Restorer.load(None, "denoise", tile=128, overlap=48)
    whole = Restorer.load(None, "denoise", tile=512, overlap=64)
    a, _ = tiled.denoise(ImageRecord(noisy), sigma=25)
    b, _ = whole.denoise(ImageRecord(noisy), sigma=25)
    difference = np.abs(a.pixels - b.pixels)
    assert difference.max() < 1 / 255
    assert difference.mean() < 0.05 / 255


def test_run_tiled_covers_every_pixel_once():
    image = torch.rand(1, 2, 203, 317)
    result = run_tiled(lambda x: x * 2, image, 2, 16, tile=64, overlap=16)
    torch.testing.assert_close(result, image * 2)


def test_tile_starts_reach_the_end():
    assert tile_starts(100, 128, 32) == [0]
    starts = tile_starts(1000, 256, 64)
    assert starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:], strict=False))


def test_ycbcr_round_trip_keeps_rgb():
    rgb = torch.rand(2, 3, 16, 16)
    luma, chroma = rgb_to_ycbcr(rgb)
    torch.testing.assert_close(ycbcr_to_rgb(luma, chroma), rgb, atol=1e-5, rtol=0)


def test_out_of_gamut_chroma_keeps_luma():
    luma = torch.rand(1, 1, 32, 32)
    chroma = torch.rand(1, 2, 32, 32) - 0.5  # often outside the RGB cube
    rgb = ycbcr_to_rgb(luma, chroma)
    assert rgb.min() >= 0
    assert rgb.max() <= 1
    torch.testing.assert_close(rgb_to_ycbcr(rgb)[0], luma, atol=1e-5, rtol=0)


@needs_kodak
def test_colorizer_keeps_luma_and_adds_colour(colorizer, kodak_crop):
    luma = kodak_crop @ LUMA
    result = colorizer.colorize(ImageRecord(luma[:, :, None]))
    assert result.pixels.shape == kodak_crop.shape
    assert np.abs(result.pixels @ LUMA - luma).max() < 1e-5
    assert result.pixels.std(axis=2).mean() > 0.005  # not gray


def write_png(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values).save(path)


def test_cli_denoise_16_bit_gray_stays_16_bit(tmp_path):
    rng = np.random.default_rng(1)
    ramp = np.linspace(0.2, 0.8, 96 * 80).reshape(96, 80)
    noisy = np.clip(ramp + rng.normal(0, 0.08, ramp.shape), 0, 1)
    write_png(tmp_path / "gray16.png", np.rint(noisy * 65535).astype(np.uint16))
    code = main(
        ["-q", "denoise", str(tmp_path / "gray16.png"), "-o", str(tmp_path / "out")]
    )
    assert code == 0
    out = read_image(tmp_path / "out" / "gray16.png")
    assert out.bit_depth == 16
    assert out.channels == 1
    assert np.abs(out.pixels[:, :, 0] - ramp).mean() < np.abs(noisy - ramp).mean() / 2
    levels = np.rint(out.pixels * 65535).astype(np.int64)
    assert np.any(levels % 257)  # not just 8-bit values scaled up


def test_cli_denoise_rgba_keeps_alpha_and_white(tmp_path):
    rng = np.random.default_rng(2)
    rgb = np.clip(0.98 + rng.normal(0, 25 / 255, (64, 96, 3)), 0, 1)
    alpha = np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))[:, :, None]
    rgba = np.concatenate([np.rint(rgb * 255).astype(np.uint8), alpha], axis=2)
    write_png(tmp_path / "white.png", rgba)
    out_file = tmp_path / "clean.png"
    code = main(["-q", "denoise", str(tmp_path / "white.png"), "-o", str(out_file)])
    assert code == 0
    with Image.open(out_file) as image:
        assert image.mode == "RGBA"
        values = np.asarray(image)
    np.testing.assert_array_equal(values[:, :, 3], alpha[:, :, 0])
    # Wrapping around would turn values above 1 into dark pixels near 0.
    assert values[:, :, :3].min() > 150
    assert values[:, :, :3].mean() > 240


def test_cli_colorize_gray_with_compare(tmp_path):
    rng = np.random.default_rng(3)
    gray = np.rint(rng.uniform(0, 255, (40, 56))).astype(np.uint8)
    write_png(tmp_path / "old.png", gray)
    assert main(["-q", "colorize", str(tmp_path / "old.png"), "--compare"]) == 0
    with Image.open(tmp_path / "old-colorized.png") as image:
        assert image.mode == "RGB"
        back_to_gray = np.asarray(image.convert("L")).astype(int)
    assert np.abs(back_to_gray - gray).max() <= 1
    with Image.open(tmp_path / "old-colorized-compare.png") as image:
        assert image.size == (2 * 56 + 8, 40)
    assert main(["-q", "colorize", str(tmp_path / "old.png")]) == 1  # exists


def test_cli_rejects_bad_sigma(tmp_path, capsys):
    write_png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    assert main(["denoise", str(tmp_path / "a.png"), "--sigma", "loud"]) == 1
    assert "invalid --sigma 'loud'" in capsys.readouterr().err


def test_corrupt_weights_raise_model_format_error(tmp_path, capsys):
    model = tmp_path / "broken"
    shutil.copytree(pretrained_path("denoise"), model)
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFormatError, match="cannot read weights"):
        Restorer.load(model, "denoise")
    write_png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    assert main(["denoise", str(tmp_path / "a.png"), "--model", str(model)]) == 1
    assert "the file is damaged" in capsys.readouterr().err


def test_newer_format_version_is_rejected(tmp_path):
    model = tmp_path / "future"
    shutil.copytree(pretrained_path("colorize"), model)
    config = json.loads((model / "config.json").read_text())
    config["format_version"] = 99
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="format version 99"):
        Restorer.load(model, "colorize")


def test_config_without_network_names_the_field(tmp_path):
    model = tmp_path / "partial"
    shutil.copytree(pretrained_path("denoise"), model)
    config = json.loads((model / "config.json").read_text())
    del config["network"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="lacks the field 'network'; train"):
        Restorer.load(model, "denoise")


def test_wrong_task_is_rejected():
    with pytest.raises(ModelFormatError, match="trained for task 'colorize'"):
        Restorer.load(pretrained_path("colorize"), "denoise")


def test_bundled_models_record_their_command():
    for task in ("denoise", "colorize"):
        config = json.loads((pretrained_path(task) / "config.json").read_text())
        assert config["training"]["command"].startswith(f"aelab -v fit --task {task}")
        assert (pretrained_path(task) / "model.safetensors").stat().st_size < 4e6


@needs_photos
@pytest.mark.parametrize("task", ["denoise", "colorize"])
def test_fit_task_trains_a_loadable_model(tmp_path, task):
    model = tmp_path / f"{task}.model"
    args = ["-q", "fit", "--task", task, str(PHOTOS / "001.png"), "-o", str(model)]
    args += ["--steps", "3", "--crop-size", "32", "--batch-size", "2"]
    assert main(args) == 0
    restorer = Restorer.load(model, task)
    assert restorer.config["training"]["steps_done"] == 3
    assert not (tmp_path / f"{task}.model.ckpt").exists()
    pixels = np.full((40, 40, 1), 0.5, dtype=np.float32)
    if task == "denoise":
        result, _ = restorer.denoise(ImageRecord(pixels))
    else:
        result = restorer.colorize(ImageRecord(pixels))
    assert np.isfinite(result.pixels).all()


def test_info_describes_bundled_denoiser(capsys) -> None:
    assert main(["info", str(pretrained_path("denoise"))]) == 0
    out = capsys.readouterr().out
    assert "denoise model" in out
    assert "--task denoise" in out


def test_folder_rerun_skips_own_results(tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = (np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    assert main(["denoise", str(folder), "--compare"]) == 0
    assert main(["denoise", str(folder), "--overwrite"]) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["a-denoised-compare.png", "a-denoised.png", "a.png"]


def test_broken_image_writes_nothing(tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = (np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    data = (folder / "a.png").read_bytes()
    (folder / "b.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main(["denoise", str(folder), "-o", str(out)]) == 1
    assert "b.png" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
