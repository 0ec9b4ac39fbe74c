"""Table compression: an autoencoder's rounded code plus a bounded residual."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from aelab import AutoEncoder
from aelab.cli.main import main
from aelab.codec.container import CorruptFileError
from aelab.codec.image import decompress_image
from aelab.codec.store import load_codec
from aelab.codec.tables import (
    code_streams,
    compress_table,
    decompress_table,
    load_table_model,
)
from aelab.errors import InvalidDataError, InvalidParameterError

GOLDEN_CODEC = "tests/data/codec/tiny"


@pytest.fixture(scope="module")
def cancer():
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    return frame.iloc[:400], frame.iloc[400:].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(cancer, tmp_path_factory):
    train, _ = cancer
    folder = tmp_path_factory.mktemp("models") / "cancer"
    estimator = AutoEncoder(latent_dim=6, epochs=60, random_state=0)
    estimator.fit(train).save(folder)
    return load_table_model(folder)


def scales(model):
    """Each numeric column's scale: errors are bounded by tolerance times it."""
    columns = model.estimator.preprocessor_.columns
    return np.array([c.scale for c in columns if hasattr(c, "scale")])


def test_round_trip_stays_within_tolerance(model, cancer):
    _, test = cancer
    result = compress_table(model, test, tolerance=0.05)
    back = decompress_table(model, result.data)
    assert list(back.columns) == list(test.columns)
    error = np.abs(back.to_numpy() - test.to_numpy())
    # Every value within tolerance x its column's scale, up to float32 rounding.
    assert np.all(error <= 0.05 * scales(model) * (1 + 1e-4) + 1e-6)
    assert result.max_error == pytest.approx(error.max(), rel=1e-6)
    assert result.rms_error == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-6)


def test_prediction_shrinks_table_file(model, cancer):
    # The same residual coder with no prediction (every row predicted as the
    # column means) must need more bytes than with the autoencoder's prediction.
    _, test = cancer
    tolerance = 0.05
    result = compress_table(model, test, tolerance)
    x = model.estimator.preprocessor_.transform(test)
    plain = np.round(x / (2 * tolerance)).astype(np.int64)
    plain_bytes = len(code_streams([plain[:, f] for f in range(x.shape[1])]))
    assert len(result.data) < 0.9 * plain_bytes
    # The raw float32 values take more than four times the bytes.
    assert len(result.data) < len(test.to_numpy(np.float32).tobytes()) / 4


def test_categories_come_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": rng.normal(10, 2, 300),
            "kind": rng.choice(["oak", "pine", "ash"], 300),
            "age": rng.integers(1, 90, 300).astype(float),
        }
    )
    AutoEncoder(latent_dim=2, epochs=20, random_state=0).fit(frame).save(tmp_path / "m")
    model = load_table_model(tmp_path / "m")
    back = decompress_table(model, compress_table(model, frame, 0.2).data)
    assert back["kind"].tolist() == frame["kind"].tolist()
    assert np.abs(back["age"] - frame["age"]).max() <= 0.2 * scales(model)[1] + 1e-6


def test_bad_input_is_rejected(model, cancer):
    _, test = cancer
    holes = test.copy()
    holes.loc[3, "mean area"] = np.nan
    with pytest.raises(InvalidDataError, match="'mean area' has missing values"):
        compress_table(model, holes)
    with pytest.raises(InvalidParameterError, match="tolerance must be"):
        compress_table(model, test, tolerance=0.5)


def test_damaged_and_foreign_files_raise(model, cancer, tmp_path):
    _, test = cancer
    data = compress_table(model, test.iloc[:50], 0.1).data
    with pytest.raises(CorruptFileError, match="truncated"):
        decompress_table(model, data[:-9])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(CorruptFileError, match="checksum"):
        decompress_table(model, bytes(flipped))
    other_frame = test.iloc[:100]
    AutoEncoder(latent_dim=6, epochs=2, random_state=1).fit(other_frame).save(
        tmp_path / "other"
    )
    with pytest.raises(InvalidDataError, match="pass that model's folder"):
        decompress_table(load_table_model(tmp_path / "other"), data)
    with pytest.raises(InvalidDataError, match="contains a table, not an image"):
        decompress_image(load_codec(GOLDEN_CODEC), data)


def test_cli_round_trip(model, cancer, tmp_path, capsys):
    _, test = cancer
    test.to_csv(tmp_path / "t.csv", index=False)
    model_dir = tmp_path / "cancer"
    model.estimator.save(model_dir)
    packed = str(tmp_path / "t.aelc")
    code = main(["compress", str(tmp_path / "t.csv"), "-o", packed,
                 "--model", str(model_dir), "--tolerance", "0.02"])  # fmt: skip
    assert code == 0
    assert "largest error" in capsys.readouterr().out

    out = tmp_path / "back.parquet"
    code = main(["decompress", packed, "-o", str(out), "--model", str(model_dir)])
    assert code == 0
    back = pd.read_parquet(out)
    assert np.all(
        np.abs(back.to_numpy() - test.to_numpy()) <= 0.02 * scales(model) + 1e-4
    )

    code = main(["decompress", packed, "-o", str(tmp_path / "x.csv")])
    assert code == 1
    assert "tables need --model" in capsys.readouterr().err


def test_large_offsets_stay_within_tolerance(tmp_path):
    # A timestamp-like column: centred at 1.7e9 with a spread of 10. Decoding
    # through float32 would round it to steps of 128.
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "ts": 1.7e9 + rng.normal(0, 10, 300),
            "big": 12345.678 + rng.normal(0, 1e-3, 300),
        }
    )
    AutoEncoder(latent_dim=1, epochs=5, random_state=0).fit(frame).save(tmp_path / "m")
    model = load_table_model(tmp_path / "m")
    back = decompress_table(model, compress_table(model, frame, 0.01).data)
    error = np.abs(back.to_numpy() - frame.to_numpy()).max(axis=0)
    assert np.all(error <= 0.01 * scales(model) * (1 + 1e-3))


def test_unseen_and_empty_categories_are_refused(tmp_path):
    frame = pd.DataFrame({"x": np.arange(60.0), "kind": ["a", "b", "c"] * 20})
    AutoEncoder(latent_dim=1, epochs=2, random_state=0).fit(frame).save(tmp_path / "m")
    model = load_table_model(tmp_path / "m")
    new = frame.copy()
    new.loc[4, "kind"] = "zzz"
    with pytest.raises(InvalidDataError, match="'kind' has the category 'zzz'"):
        compress_table(model, new)
    new.loc[4, "kind"] = ""
    with pytest.raises(InvalidDataError, match="'kind' has an empty value"):
        compress_table(model, new)


def test_tiny_tolerance_names_column_and_a_working_tolerance(model, cancer):
    _, test = cancer
    with pytest.raises(InvalidParameterError, match=r"column '.*' has a value") as err:
        compress_table(model, test, tolerance=1e-7)
    suggested = float(str(err.value).split("--tolerance ")[1].split()[0])
    assert compress_table(model, test, tolerance=suggested * 1.01).max_error > 0


def test_damaged_file_in_folder_writes_nothing(model, cancer, tmp_path, capsys):
    _, test = cancer
    model_dir = tmp_path / "cancer"
    model.estimator.save(model_dir)
    files = tmp_path / "files"
    files.mkdir()
    for name, rows in (("a", test.iloc[:40]), ("b", test.iloc[40:80])):
        rows.to_csv(tmp_path / f"{name}.csv", index=False)
        target = str(files / f"{name}.aelc")
        source = str(tmp_path / f"{name}.csv")
        code = main(["compress", source, "-o", target, "--model", str(model_dir)])
        assert code == 0
    data = (files / "b.aelc").read_bytes()
    (files / "b.aelc").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert (
        main(["decompress", str(files), "-o", str(out), "--model", str(model_dir)]) == 1
    )
    assert "'b.aelc' is truncated" in capsys.readouterr().err.replace(
        str(files) + "/", ""
    )
    assert not out.exists()


def test_image_and_table_options_do_not_mix(model, cancer, tmp_path, capsys):
    _, test = cancer
    test.to_csv(tmp_path / "t.csv", index=False)
    model.estimator.save(tmp_path / "m")
    code = main(["compress", str(tmp_path / "t.csv"), "-o", str(tmp_path / "t.aelc"),
                 "--model", str(tmp_path / "m"), "--quality", "4"])  # fmt: skip
    assert code == 1
    assert "--quality is for images" in capsys.readouterr().err
    code = main(["compress", GOLDEN_CODEC + "/../golden.png", "-o",
                 str(tmp_path / "g.aelc"), "--tolerance", "0.1"])  # fmt: skip
    assert code == 1
    assert "--tolerance is for tables" in capsys.readouterr().err
    assert not (tmp_path / "t.aelc").exists()
    assert not (tmp_path / "g.aelc").exists()
