"""End-to-end tests of the command line, called through ``main(argv)``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits

from aelab.cli.main import main

SMALL = ["--epochs", "3", "--batch-size", "64", "--hidden-dims", "32,16"]


def breast_cancer_csv() -> Path:
    """scikit-learn's bundled breast_cancer.csv, preamble line included."""
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "data" / "breast_cancer.csv"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mixed_table(tmp_path: Path) -> Path:
    """A CSV with a constant, a categorical and a partly empty numeric column."""
    frame = load_breast_cancer(as_frame=True).data.iloc[:, :4].copy()
    frame.insert(0, "patient", [f"p{i:03d}" for i in range(len(frame))])
    frame["site"] = np.where(np.arange(len(frame)) % 3 == 0, "north", "south")
    frame["constant"] = 7.0
    frame.loc[::5, "mean texture"] = np.nan
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_breast_cancer_encode_is_bit_identical(capsys, tmp_path):
    model, first, second = (
        tmp_path / "m",
        tmp_path / "a.parquet",
        tmp_path / "b.parquet",
    )
    code, out, err = run(capsys, "fit", breast_cancer_csv(), "-o", model, *SMALL)
    assert code == 0, err
    assert "skipped the first line" in err
    assert run(capsys, "encode", model, breast_cancer_csv(), "-o", first)[0] == 0
    assert run(capsys, "encode", model, breast_cancer_csv(), "-o", second)[0] == 0

    codes = pd.read_parquet(first)
    assert codes.shape == (569, 8)
    assert list(codes.columns) == [f"z{i}" for i in range(8)]
    assert first.read_bytes() == second.read_bytes()
    assert not (tmp_path / "m.ckpt").exists()


def test_table_with_ids_and_categories(capsys, tmp_path, mixed_table):
    model = tmp_path / "m"
    code, _, err = run(
        capsys, "fit", mixed_table, "-o", model, "--id-column", "patient", *SMALL
    )
    assert code == 0, err
    config = json.loads((model / "config.json").read_text())
    columns = {c["name"]: c for c in config["preprocessing"]["columns"]}
    assert columns["site"]["categories"] == ["north", "south"]
    assert columns["mean texture"]["indicator"] is True
    assert columns["constant"]["scale"] == 1.0

    out = tmp_path / "codes.csv"
    assert run(capsys, "encode", model, mixed_table, "-o", out)[0] == 0
    codes = pd.read_csv(out)
    assert codes["patient"].tolist()[:2] == ["p000", "p001"]
    assert np.isfinite(codes.drop(columns="patient").to_numpy()).all()

    rebuilt = tmp_path / "rebuilt.parquet"
    assert run(capsys, "reconstruct", model, mixed_table, "-o", rebuilt)[0] == 0
    frame = pd.read_parquet(rebuilt)
    assert set(frame["site"]) <= {"north", "south"}
    assert (frame["reconstruction_error"] >= 0).all()


def test_encode_unseen_category_warns(capsys, tmp_path, mixed_table):
    model = tmp_path / "m"
    run(capsys, "fit", mixed_table, "-o", model, "--id-column", "patient", *SMALL)
    frame = pd.read_csv(mixed_table)
    frame.loc[0, "site"] = "east"
    new = tmp_path / "new.csv"
    frame.to_csv(new, index=False)

    code, _, err = run(capsys, "encode", model, new, "-o", tmp_path / "c.csv")
    assert code == 0
    assert "not seen in training: ['east']" in err


def test_encode_missing_column_writes_nothing(capsys, tmp_path, mixed_table):
    model = tmp_path / "m"
    run(capsys, "fit", mixed_table, "-o", model, "--id-column", "patient", *SMALL)
    pd.read_csv(mixed_table).drop(columns="site").to_csv(tmp_path / "new.csv")

    out = tmp_path / "codes.csv"
    code, _, err = run(capsys, "encode", model, tmp_path / "new.csv", "-o", out)
    assert code == 1
    assert "missing ['site']" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_text_column_is_rejected(capsys, tmp_path, mixed_table):
    code, _, err = run(capsys, "fit", mixed_table, "-o", tmp_path / "m", *SMALL)
    assert code == 1
    assert "column 'patient' looks like free text" in err
    assert "--id-column" in err
    assert not (tmp_path / "m").exists()


def _save_digit_pngs(folder: Path, count: int, mode: str = "L") -> None:
    folder.mkdir()
    for i, image in enumerate(load_digits().images[:count]):
        pixels = (image * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"{i:03d}.png")


def test_truncated_jpeg_is_named(capsys, tmp_path):
    folder = tmp_path / "images"
    _save_digit_pngs(folder, 20)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "bad.jpg", quality=95)
    data = (folder / "bad.jpg").read_bytes()
    (folder / "bad.jpg").write_bytes(data[: len(data) // 2])

    code, _, err = run(capsys, "fit", folder, "-o", tmp_path / "m", "--epochs", "1")
    assert code == 1
    assert "bad.jpg" in err
    assert not (tmp_path / "m").exists()


def test_mixed_gray_and_rgb_folder_trains_in_rgb(capsys, tmp_path):
    folder = tmp_path / "images"
    _save_digit_pngs(folder, 20)
    Image.open(folder / "000.png").convert("RGB").save(folder / "000.png")

    code, _, err = run(capsys, "fit", folder, "-o", tmp_path / "m", "--epochs", "1")
    assert code == 0, err
    assert "converted to 3 channels" in err
    rebuilt = tmp_path / "rebuilt"
    assert run(capsys, "reconstruct", tmp_path / "m", folder, "-o", rebuilt)[0] == 0
    assert Image.open(rebuilt / "000.png").mode == "RGB"
    assert Image.open(rebuilt / "001.png").mode == "L"


@pytest.mark.parametrize(
    ("pixels", "mode"),
    [
        (
            np.random.default_rng(0).integers(0, 256, (33, 47, 4), dtype=np.uint8),
            "RGBA",
        ),
        (
            np.random.default_rng(0).integers(0, 65536, (20, 30), dtype=np.uint16),
            "I;16",
        ),
    ],
)
def test_reconstruct_keeps_size_and_mode(capsys, tmp_path, pixels, mode):
    source = tmp_path / "in.png"
    Image.fromarray(pixels).save(source)
    model, out = tmp_path / "m", tmp_path / "out.png"
    assert run(capsys, "fit", source, "-o", model, "--epochs", "2")[0] == 0
    assert run(capsys, "reconstruct", model, source, "-o", out)[0] == 0

    image = Image.open(out)
    assert image.size == (pixels.shape[1], pixels.shape[0])
    assert image.mode == mode


def test_bce_on_0_to_255_is_rejected(capsys, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, load_digits().images[:50] * 255 / 16)
    code, _, err = run(capsys, "fit", data, "-o", tmp_path / "m", "--loss", "bce")
    assert code == 1
    assert "needs every value in [0, 1]" in err
    assert "255" in err


def test_output_folder_missing(capsys, tmp_path):
    code, _, err = run(
        capsys, "fit", breast_cancer_csv(), "-o", tmp_path / "no" / "m", *SMALL
    )
    assert code == 1
    assert "does not exist" in err
    assert "mkdir -p" in err


def test_model_path_not_a_model(capsys, tmp_path):
    code, _, err = run(capsys, "encode", tmp_path, breast_cancer_csv(), "-o", "x.csv")
    assert code == 1
    assert "is not an aelab model" in err
    assert "Traceback" not in err


def test_fit_refuses_to_replace_user_folder(capsys, tmp_path):
    keep = tmp_path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("do not lose me")
    code, _, err = run(capsys, "fit", breast_cancer_csv(), "-o", keep.parent, *SMALL)
    assert code == 1
    assert "is not an aelab model folder" in err
    assert keep.read_text() == "do not lose me"


def test_sample_and_info_for_variational(capsys, tmp_path):
    data, model, grid = tmp_path / "x.npy", tmp_path / "m", tmp_path / "grid.png"
    np.save(data, (load_digits().images[:200] / 16).astype(np.float32))
    args = ["--variational", "--loss", "bce", "--epochs", "2"]
    assert run(capsys, "fit", data, "-o", model, *args)[0] == 0
    assert run(capsys, "sample", model, "-n", "16", "-o", grid, "--scale", "2")[0] == 0
    # 16 samples make a 4 x 4 grid of 8x8 images with 1-pixel borders, scaled 2x.
    assert Image.open(grid).size == (2 * (4 * 9 + 1), 2 * (4 * 9 + 1))

    code, out, _ = run(capsys, "info", model)
    assert code == 0
    assert "variational conv autoencoder, 8-d code" in out
    assert "images 8x8, 1 channel" in out


def test_sample_needs_variational(capsys, tmp_path):
    model = tmp_path / "m"
    run(capsys, "fit", breast_cancer_csv(), "-o", model, *SMALL)
    code, _, err = run(capsys, "sample", model, "-o", tmp_path / "s.csv")
    assert code == 1
    assert "variational=True" in err


def test_resume_continues_the_run(capsys, tmp_path):
    model, ckpt = tmp_path / "m", tmp_path / "ckpt"
    args = ["--checkpoint-dir", ckpt, "--patience", "0", "--hidden-dims", "16"]
    assert (
        run(capsys, "fit", breast_cancer_csv(), "-o", model, "--epochs", "2", *args)[0]
        == 0
    )
    assert (ckpt / "checkpoint.json").exists()
    code, _, err = run(
        capsys,
        "fit",
        breast_cancer_csv(),
        "-o",
        model,
        "--epochs",
        "4",
        "--resume",
        *args,
    )
    assert code == 0, err
    history = json.loads((model / "config.json").read_text())["training"]["history"]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "command", ["fit", "encode", "reconstruct", "sample", "info", "demo"]
)
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: aelab" in capsys.readouterr().out


def test_fit_help_states_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "(default: 100)" in out  # --epochs
    assert "(default: 8)" in out  # --latent-dim


@pytest.mark.slow
def test_demo_writes_every_artefact(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "-o", tmp_path, "--epochs", "2")
    assert code == 0, err
    for name in (
        "index.html",
        "metrics.json",
        "reconstructions.png",
        "samples.png",
        "denoised.png",
        "loss_curves.png",
        "embedding_map.png",
        "embeddings.parquet",
    ):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_mse"]["pca_8"] == pytest.approx(0.0245, abs=0.002)
    assert pd.read_parquet(tmp_path / "embeddings.parquet").shape == (1797, 9)
    assert "held-out MSE" in out


def test_reconstruct_refuses_input_folder(capsys, tmp_path):
    folder = tmp_path / "images"
    _save_digit_pngs(folder, 12)
    before = (folder / "000.png").read_bytes()
    assert run(capsys, "fit", folder, "-o", tmp_path / "m", "--epochs", "1")[0] == 0
    code, _, err = run(capsys, "reconstruct", tmp_path / "m", folder, "-o", folder)
    assert code == 1
    assert "is the input data" in err
    assert (folder / "000.png").read_bytes() == before


def test_reconstruct_keeps_existing_images(capsys, tmp_path):
    folder, out = tmp_path / "images", tmp_path / "out"
    _save_digit_pngs(folder, 12)
    out.mkdir()
    (out / "003.png").write_bytes(b"mine")
    assert run(capsys, "fit", folder, "-o", tmp_path / "m", "--epochs", "1")[0] == 0
    code, _, err = run(capsys, "reconstruct", tmp_path / "m", folder, "-o", out)
    assert code == 1
    assert "--overwrite" in err
    assert (out / "003.png").read_bytes() == b"mine"
    assert not (out / "000.png").exists()
    args = ["reconstruct", tmp_path / "m", folder, "-o", out, "--overwrite"]
    assert run(capsys, *args)[0] == 0
    assert Image.open(out / "003.png").size == (8, 8)


def test_encode_refuses_to_replace_input(capsys, tmp_path):
    data = tmp_path / "data.csv"
    load_breast_cancer(as_frame=True).data.to_csv(data, index=False)
    before = data.read_bytes()
    assert run(capsys, "fit", data, "-o", tmp_path / "m", *SMALL)[0] == 0
    code, _, err = run(capsys, "encode", tmp_path / "m", data, "-o", data)
    assert code == 1
    assert "is the input data" in err
    assert data.read_bytes() == before


def test_fit_keeps_foreign_checkpoint_folder(capsys, tmp_path):
    mine = tmp_path / "m.ckpt" / "important.txt"
    mine.parent.mkdir()
    mine.write_text("keep")
    code, _, err = run(capsys, "fit", breast_cancer_csv(), "-o", tmp_path / "m", *SMALL)
    assert code == 1
    assert "contains other files (important.txt)" in err
    assert mine.read_text() == "keep"
    code, _, err = run(
        capsys,
        "fit",
        breast_cancer_csv(),
        "-o",
        tmp_path / "m",
        "--no-checkpoint",
        *SMALL,
    )
    assert code == 0, err
    assert mine.read_text() == "keep"


def test_demo_refuses_folder_with_user_files(capsys, tmp_path):
    (tmp_path / "index.html").write_text("mine")
    code, _, err = run(capsys, "demo", "-o", tmp_path, "--epochs", "1")
    assert code == 1
    assert "folder with other files" in err
    assert (tmp_path / "index.html").read_text() == "mine"


def test_image_task_options_are_refused_for_plain_fit(capsys, tmp_path):
    for option in (["--steps", "0"], ["--max-minutes", "1"]):
        code, _, err = run(
            capsys, "fit", breast_cancer_csv(), "-o", tmp_path / "m", *SMALL, *option
        )
        assert code == 1
        assert f"{option[0]} is for --task compress, denoise and colorize" in err
    assert not (tmp_path / "m").exists()
