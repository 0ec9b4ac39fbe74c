"""Learned image compression: container, entropy coding, golden files, CLI."""

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from aelab.cli.main import main
from aelab.codec.container import CompressedImage, CorruptFileError
from aelab.codec.entropy import (
    ContextClasses,
    EntropyTables,
    build_tables,
    decode_latent,
    encode_latent,
)
from aelab.codec.image import compress_image, decompress_image
from aelab.codec.store import bundled_path, load_codec
from aelab.codec.train import table_samples
from aelab.data.images import ImageRecord, read_image
from aelab.errors import InvalidDataError, ModelFormatError

GOLDEN = Path(__file__).parent / "data" / "codec"
needs_bundled = pytest.mark.skipif(
    not (bundled_path() / "model.safetensors").exists(),
    reason="the bundled codec weights are not installed",
)


@pytest.fixture(scope="module")
def tiny():
    return load_codec(GOLDEN / "tiny")


@pytest.fixture(scope="module")
def flower():
    pixels = load_sample_image("flower.jpg")[100:164, 200:290]
    return ImageRecord(pixels.astype(np.float32) / 255, 8, "flower")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    mse = np.mean((np.round(a * 255) - np.round(b * 255)) ** 2)
    return 10 * np.log10(255**2 / mse)


def test_golden_file_decodes_to_golden_png(tiny):
    record = decompress_image(tiny, (GOLDEN / "golden.aelc").read_bytes())
    expected = np.asarray(Image.open(GOLDEN / "golden.png"))
    assert np.array_equal(np.round(record.pixels * 255).astype(np.uint8), expected)


def test_golden_file_decodes_same_in_new_process(tmp_path):
    # Another process with another thread count must produce the same PNG bytes.
    script = (
        "import sys, torch; torch.set_num_threads(int(sys.argv[1]));"
        "from aelab.cli.main import main;"
        "sys.exit(main(['decompress', sys.argv[2], '-o', sys.argv[3], "
        "'--model', sys.argv[4]]))"
    )
    outputs = []
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}.png"
        subprocess.run(
            [sys.executable, "-c", script, str(threads), str(GOLDEN / "golden.aelc"),
             str(out), str(GOLDEN / "tiny")],
            check=True,
        )  # fmt: skip
        outputs.append(np.asarray(Image.open(out)))
    expected = np.asarray(Image.open(GOLDEN / "golden.png"))
    assert np.array_equal(outputs[0], expected)
    assert np.array_equal(outputs[1], expected)


@pytest.fixture(scope="module")
def factorized(tiny):
    """The tiny codec's tables without context classes."""
    return build_tables(tiny.model.prior)


@pytest.fixture(scope="module")
def china_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "china.png"
    Image.fromarray(load_sample_image("china.jpg")).save(path)
    return path


def test_tables_are_deterministic(tiny, china_file):
    # make_golden.py counted the tiny codec's tables on china.jpg the same way.
    samples = table_samples(tiny.model, [china_file])
    first = build_tables(tiny.model.prior, samples, edges=(4, 16, 64))
    assert np.array_equal(first.frequencies, tiny.tables.frequencies)
    assert np.array_equal(first.starts, tiny.tables.starts)
    assert np.array_equal(first.context, tiny.tables.context)
    assert np.array_equal(first.offsets, tiny.tables.offsets)


def test_latent_round_trip_with_escapes(tiny, factorized):
    rng = np.random.default_rng(0)
    shape = (192, 5, 7)
    symbols = rng.integers(-3, 4, size=shape).astype(np.int32)
    symbols[:, 1:3] *= 9  # a busy region, so several context classes are used
    symbols[0, 0, 0] = 3000  # far outside every table: coded through the escape
    symbols[3, 2, 1] = -2500
    symbols[150, 4, 6] = 4000
    for tables in (tiny.tables, factorized):
        payload = encode_latent(symbols, tables, 2)
        assert np.array_equal(decode_latent(payload, tables, 2, shape), symbols)


def test_context_classes_follow_previous_channels(tiny):
    # A position whose previous channels are large gets a higher class than a
    # quiet one; channel 0 (the block mean) does not count.
    latent = np.zeros((192, 4, 4), dtype=np.int32)
    latent[0] = 50
    latent[1:13, 0, 0] = 20
    state = ContextClasses(tiny.tables, 4, 4)
    for channel in range(13):
        classes = state.next().reshape(4, 4)
        state.push(latent[channel])
    assert classes[0, 0] == tiny.tables.classes - 1  # mean 240/4 = 60 >= 64/4 * 4
    assert classes[3, 3] == 0
    assert classes[1, 1] > classes[3, 3]


def test_context_tables_code_fewer_bytes(tiny, factorized, china_file):
    photo = np.asarray(Image.open(china_file)).astype(np.float32) / 255
    x = torch.from_numpy(photo).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = torch.round(tiny.model.analysis(x, 3))[0].to(torch.int32).numpy()
    with_context = encode_latent(y, tiny.tables, 3)
    assert len(with_context) < 0.9 * len(encode_latent(y, factorized, 3))
    assert np.array_equal(decode_latent(with_context, tiny.tables, 3, y.shape), y)


def test_tables_without_context_keep_the_old_layout(tiny, factorized):
    tensors = factorized.to_tensors()
    assert "tables.context" not in tensors
    assert tensors["tables.starts"].ndim == 2
    assert EntropyTables.from_tensors(tensors).classes == 1
    again = EntropyTables.from_tensors(tiny.tables.to_tensors())
    assert again.classes == 4
    assert np.array_equal(again.frequencies, tiny.tables.frequencies)


def test_inconsistent_context_is_rejected(tiny):
    tensors = tiny.tables.to_tensors()
    tensors["tables.context"] = torch.tensor([12, 1, 16, 4, 64], dtype=torch.int32)
    with pytest.raises(InvalidDataError, match="tables are inconsistent"):
        EntropyTables.from_tensors(tensors)


@pytest.mark.parametrize(
    "mode,size",
    [("RGB", (37, 53)), ("L", (16, 16)), ("RGBA", (20, 33)), ("LA", (17, 40))],
)
def test_any_shape_and_mode_round_trips(tiny, mode, size):
    rng = np.random.default_rng(1)
    channels = len(mode)
    pixels = rng.random((*size, channels)).astype(np.float32)
    result = compress_image(tiny, ImageRecord(pixels, 8, "x"), quality=3)
    record = decompress_image(tiny, result.data)
    assert record.pixels.shape == pixels.shape
    if mode.endswith("A"):  # alpha is stored losslessly
        alpha = np.round(record.pixels[:, :, -1] * 255)
        assert np.array_equal(alpha, np.round(pixels[:, :, -1] * 255))


def test_reported_psnr_matches_decoded(tiny, flower):
    result = compress_image(tiny, flower, quality=4)
    record = decompress_image(tiny, result.data)
    assert result.psnr == pytest.approx(psnr(record.pixels, flower.pixels), abs=1e-6)
    assert result.bits_per_pixel == 8 * len(result.data) / (64 * 90)


def corrupt_cases(data: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    future = bytearray(data)
    future[4] = 9
    return {
        "magic": (b"\x89PNG" + data[4:], "is not an aelab compressed file"),
        "version": (
            bytes(future),
            "uses compressed format version 9, but this aelab reads version 1",
        ),
        "truncated": (data[:-10], "is truncated"),
        "header only": (data[:12], "is truncated"),
        "flipped byte": (bytes(flipped), "fails its checksum"),
        "trailing": (data + b"\0\0", "has 2 bytes after its end"),
    }


@pytest.mark.parametrize(
    "case", ["magic", "version", "truncated", "header only", "flipped byte", "trailing"]
)
def test_corrupt_file_raises(tiny, case):
    data = (GOLDEN / "golden.aelc").read_bytes()
    bad, message = corrupt_cases(data)[case]
    with pytest.raises(CorruptFileError, match=message):
        decompress_image(tiny, bad, "f.aelc")


def test_file_from_other_model_raises(tiny):
    data = bytearray((GOLDEN / "golden.aelc").read_bytes())
    id_length = data[6]
    data[7 + id_length] ^= 0xFF  # change the stored model hash, then fix the CRC
    body = bytes(data[:-4])
    data = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(InvalidDataError, match="was compressed with the model"):
        decompress_image(tiny, data, "f.aelc")


def test_damaged_weights_raise(tmp_path):
    folder = tmp_path / "codec"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((GOLDEN / "tiny" / name).read_bytes())
    weights = bytearray((folder / "model.safetensors").read_bytes())
    weights[-5] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ModelFormatError, match="do not match the hash"):
        load_codec(folder)


def test_container_round_trip():
    image = CompressedImage("m", b"h" * 16, 5, 6, 3, 8, 2, b"\1\2\3\4")
    assert CompressedImage.from_bytes(image.to_bytes()) == image


def test_fit_task_compress_trains_codec(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(load_sample_image("china.jpg")).save(photos / "china.png")
    model = tmp_path / "codec"
    code = main(["fit", "--task", "compress", str(photos), "-o", str(model),
                 "--steps", "3", "--crop-size", "32"])  # fmt: skip
    assert code == 0
    codec = load_codec(model)
    assert codec.model_id == "codec"
    assert "--steps 3" in codec.config["training"]["command"]


def test_cli_round_trip_and_no_overwrite(tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    pixels = load_sample_image("china.jpg")[:48, :80]
    Image.fromarray(pixels).save(images / "a.png")
    Image.fromarray(pixels[:, :, 0]).save(images / "b.png")
    tiny = str(GOLDEN / "tiny")
    assert (
        main(["compress", str(images), "-o", str(tmp_path / "c"), "--model", tiny]) == 0
    )
    assert "bits per pixel" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["a.aelc", "b.aelc"]
    out = tmp_path / "d"
    assert (
        main(["decompress", str(tmp_path / "c"), "-o", str(out), "--model", tiny]) == 0
    )
    assert Image.open(out / "a.png").mode == "RGB"
    assert Image.open(out / "b.png").mode == "L"
    assert Image.open(out / "b.png").size == (80, 48)
    before = (out / "a.png").read_bytes()
    code = main(["decompress", str(tmp_path / "c"), "-o", str(out), "--model", tiny])
    assert code == 1
    assert "already exist" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == before


@needs_bundled
def test_bundled_codec_beats_jpeg_at_equal_size():
    codec = load_codec()
    photo = load_sample_image("china.jpg").astype(np.float32) / 255
    record = ImageRecord(photo, 8, "china")
    result = compress_image(codec, record, quality=3)
    decoded = decompress_image(codec, result.data)
    ours = psnr(decoded.pixels, photo)
    # The JPEG quality whose file is closest to, and no smaller than, ours.
    jpeg_psnr = None
    for q in range(5, 100):
        buffer = io.BytesIO()
        Image.fromarray((photo * 255).round().astype(np.uint8)).save(
            buffer, "JPEG", quality=q
        )
        if buffer.tell() >= len(result.data):
            jpeg = np.asarray(Image.open(buffer)).astype(np.float32) / 255
            jpeg_psnr = psnr(jpeg, photo)
            break
    assert jpeg_psnr is not None
    assert ours > jpeg_psnr + 1.0


@needs_bundled
def test_bundled_codec_used_by_default(tmp_path, capsys):
    Image.fromarray(load_sample_image("flower.jpg")).save(tmp_path / "f.png")
    assert (
        main(["compress", str(tmp_path / "f.png"), "-o", str(tmp_path / "f.aelc")]) == 0
    )
    assert (
        main(["decompress", str(tmp_path / "f.aelc"), "-o", str(tmp_path / "g.png")])
        == 0
    )
    decoded = read_image(tmp_path / "g.png")
    original = read_image(tmp_path / "f.png")
    assert psnr(decoded.pixels, original.pixels) > 28


def test_fit_task_init_fine_tunes(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(load_sample_image("flower.jpg")).save(photos / "flower.png")
    model = tmp_path / "tuned"
    tiny = str(GOLDEN / "tiny")
    code = main(["fit", "--task", "compress", str(photos), "-o", str(model),
                 "--steps", "2", "--crop-size", "32", "--init", tiny])  # fmt: skip
    assert code == 0
    tuned = load_codec(model)
    assert tuned.model.latent == 192
    assert tuned.config["training"]["initial_training"]["command"].endswith(
        "make_golden.py"
    )
    assert tuned.model_hash != load_codec(GOLDEN / "tiny").model_hash


def test_fit_steps_zero_recounts_tables_only(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(load_sample_image("flower.jpg")).save(photos / "flower.png")
    tiny = load_codec(GOLDEN / "tiny")
    out = tmp_path / "recounted"
    code = main(["fit", "--task", "compress", str(photos), "-o", str(out),
                 "--steps", "0", "--init", str(GOLDEN / "tiny")])  # fmt: skip
    assert code == 0
    recounted = load_codec(out)
    # Readable like any other file the user writes, not 0600 as safetensors makes.
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    for name, value in tiny.model.state_dict().items():
        assert torch.equal(recounted.model.state_dict()[name], value), name
    assert recounted.tables.classes == 14
    assert recounted.config["training"]["steps"] == 0
    assert recounted.config["training"]["training_images"] == ["flower.png"]
    code = main(["fit", "--task", "compress", str(photos), "-o", str(tmp_path / "x"),
                 "--steps", "0"])  # fmt: skip
    assert code == 1
    assert "0 with --init" in capsys.readouterr().err


def test_info_describes_codec(capsys):
    assert main(["info", str(GOLDEN / "tiny")]) == 0
    out = capsys.readouterr().out
    assert "image codec 'golden-tiny'" in out
    assert "8 hidden and 192 latent channels, 6 qualities" in out
    assert "4 context classes per channel and quality" in out


def test_block_codec_starts_as_klt():
    from aelab.codec.model import BlockCodec

    photo = load_sample_image("china.jpg")[:128, :256].astype(np.float32) / 255
    images = torch.from_numpy(photo).permute(2, 0, 1)[None]
    codec = BlockCodec()
    codec.init_from_patches(images, prior_steps=20)
    weights = codec.transform.weight.reshape(192, 192)
    assert torch.allclose(weights @ weights.T, torch.eye(192), atol=1e-4)
    codec.eval()
    with torch.no_grad():
        losses = [codec(images, q) for q in range(codec.qualities)]
    bits = [float(out["bpp"]) for out in losses]
    errors = [float(out["mse"]) for out in losses]
    assert bits == sorted(bits)
    assert errors == sorted(errors, reverse=True)


def with_fixed_crc(data: bytes) -> bytes:
    body = bytes(data[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def test_damaged_latent_with_valid_crc_raises(tiny, flower):
    data = bytearray(compress_image(tiny, flower, quality=4).data)
    header = 7 + data[6] + 16 + 24
    for i in range(header, header + 40):
        data[i] ^= 0xA5
    with pytest.raises(CorruptFileError, match="is damaged"):
        decompress_image(tiny, with_fixed_crc(bytes(data)), "f.aelc")


def test_smaller_declared_shape_raises(tiny, flower):
    data = bytearray(compress_image(tiny, flower, quality=4).data)
    start = 7 + data[6] + 16
    struct.pack_into("<II", data, start, 16, 16)  # the image is 64x90
    with pytest.raises(CorruptFileError, match="longer than the image"):
        decompress_image(tiny, with_fixed_crc(bytes(data)), "f.aelc")


def test_unknown_older_version_is_called_damaged(tiny, flower):
    data = bytearray(compress_image(tiny, flower, quality=2).data)
    data[4] = 0
    with pytest.raises(CorruptFileError, match="version 0, which no aelab wrote"):
        CompressedImage.from_bytes(with_fixed_crc(bytes(data)))


def test_fit_names_a_broken_photo(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(load_sample_image("flower.jpg")).save(photos / "good.png")
    (photos / "bad.png").write_bytes((photos / "good.png").read_bytes()[:500])
    code = main(["fit", "--task", "compress", str(photos), "-o", str(tmp_path / "c"),
                 "--steps", "0", "--init", str(GOLDEN / "tiny")])  # fmt: skip
    assert code == 1
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
