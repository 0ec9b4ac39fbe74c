"""Table preprocessing, image files and table files, on real files in tmp_path."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aelab.data import (
    ImageRecord,
    TablePreprocessor,
    load,
    read_image,
    write_image,
    write_table,
)
from aelab.errors import DataConversionWarning, InvalidDataError, InvalidParameterError

EXIF_ORIENTATION = 0x0112  # EXIF tag: the rotation a viewer applies to the pixels


# ---- tables ------------------------------------------------------------------


@pytest.mark.parametrize("scaling", ["standard", "minmax"])
def test_constant_column_scales_to_zeros(scaling: str) -> None:
    frame = pd.DataFrame({"constant": [3.5] * 6, "x": [1.0, 2, 3, 4, 5, 6]})
    matrix = TablePreprocessor(scaling).fit(frame).transform(frame)
    assert np.isfinite(matrix).all()
    assert np.array_equal(matrix[:, 0], np.zeros(6, dtype=np.float32))


def test_empty_cells_get_median_and_indicator(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("size,weight\n1,10\n,20\n3,30\n10,40\n")
    frame = load(path)
    preprocessor = TablePreprocessor(scaling="none").fit(frame)
    matrix = preprocessor.transform(frame)
    assert preprocessor.feature_names == ["size", "size__missing", "weight"]
    assert matrix[:, 0].tolist() == [1.0, 3.0, 3.0, 10.0]  # median of 1, 3, 10
    assert matrix[:, 1].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_nullable_integer_column_gets_indicator() -> None:
    frame = pd.DataFrame({"count": pd.array([4, None, 8], dtype="Int64")})
    matrix = TablePreprocessor(scaling="none").fit(frame).transform(frame)
    assert matrix.tolist() == [[4.0, 0.0], [6.0, 1.0], [8.0, 0.0]]


def test_free_text_column_raises_naming_it() -> None:
    frame = pd.DataFrame({"x": range(60), "comment": [f"note {i}" for i in range(60)]})
    with pytest.raises(
        InvalidDataError, match=r"column 'comment' looks like free text"
    ):
        TablePreprocessor(max_categories=50).fit(frame)


def test_categories_are_one_hot_encoded() -> None:
    frame = pd.DataFrame({"color": ["red", "green", "red", None]})
    preprocessor = TablePreprocessor().fit(frame)
    matrix = preprocessor.transform(frame)
    assert preprocessor.feature_names == [
        "color=<missing>",
        "color=green",
        "color=red",
    ]
    assert matrix.tolist() == [[0, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0]]


def test_unseen_category_encodes_as_zeros() -> None:
    train = pd.DataFrame({"color": ["red", "green", "red"], "x": [1.0, 2.0, 3.0]})
    preprocessor = TablePreprocessor().fit(train)
    new = pd.DataFrame({"color": ["blue", "green"], "x": [1.0, 2.0]})
    with pytest.warns(DataConversionWarning, match=r"not seen in training: \['blue'\]"):
        matrix = preprocessor.transform(new)
    assert matrix[0, :2].tolist() == [0.0, 0.0]
    assert matrix[1, :2].tolist() == [1.0, 0.0]


def test_missing_column_at_transform_raises() -> None:
    train = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [5.0, 6.0]})
    preprocessor = TablePreprocessor().fit(train)
    with pytest.raises(InvalidDataError, match=r"missing \['b'\]"):
        preprocessor.transform(train.drop(columns="b"))


def test_extra_column_at_transform_raises() -> None:
    train = pd.DataFrame({"a": [1.0, 2.0]})
    preprocessor = TablePreprocessor().fit(train)
    with pytest.raises(InvalidDataError, match=r"not seen in training \['z'\]"):
        preprocessor.transform(train.assign(z=[0.0, 1.0]))


def test_all_missing_column_raises() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "empty": [np.nan] * 3})
    with pytest.raises(InvalidDataError, match=r"column 'empty' has no values"):
        TablePreprocessor().fit(frame)


def test_infinite_value_raises_naming_column() -> None:
    frame = pd.DataFrame({"a": [1.0, np.inf, 3.0]})
    with pytest.raises(InvalidDataError, match=r"column 'a' contains infinite values"):
        TablePreprocessor().fit(frame)


def test_table_config_round_trip() -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan, 7.0], "kind": ["x", "y", "x"]})
    preprocessor = TablePreprocessor("minmax").fit(frame)
    copy = TablePreprocessor.from_config(preprocessor.to_config())
    assert copy.feature_names == preprocessor.feature_names
    assert np.array_equal(copy.transform(frame), preprocessor.transform(frame))


def test_table_inverse_transform_restores_values() -> None:
    frame = pd.DataFrame({"a": [1.0, 4.0, 7.0], "kind": ["x", "y", "x"]})
    preprocessor = TablePreprocessor("standard").fit(frame)
    restored = preprocessor.inverse_transform(preprocessor.transform(frame))
    np.testing.assert_allclose(restored["a"], frame["a"], rtol=1e-6)
    assert restored["kind"].tolist() == ["x", "y", "x"]


def test_transform_of_empty_table_raises() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    preprocessor = TablePreprocessor().fit(frame)
    with pytest.raises(InvalidDataError, match=r"the table has no rows"):
        preprocessor.transform(frame.iloc[:0])


def test_invalid_scaling_raises() -> None:
    with pytest.raises(InvalidParameterError, match=r"invalid scaling 'robust'"):
        TablePreprocessor("robust")  # type: ignore[arg-type]


# ---- table files -------------------------------------------------------------


@pytest.mark.parametrize("extension", [".csv", ".parquet"])
def test_table_file_round_trip(tmp_path: Path, extension: str) -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "x": [0.5, -1.25], "n": [1, 2]})
    path = tmp_path / f"table{extension}"
    write_table(path, frame)
    pd.testing.assert_frame_equal(load(path), frame)


def test_npy_output_keeps_numeric_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "x": [0.5, -1.25], "n": [1.0, 2.0]})
    write_table(tmp_path / "table.npy", frame)
    assert np.load(tmp_path / "table.npy").tolist() == [[0.5, 1.0], [-1.25, 2.0]]


def test_write_table_rejects_unknown_extension(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0]})
    with pytest.raises(InvalidParameterError, match=r"unsupported output type '.xlsx'"):
        write_table(tmp_path / "table.xlsx", frame)


def test_load_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError, match=r"data path .*nothing.csv' not found"):
        load(tmp_path / "nothing.csv")


# ---- images ------------------------------------------------------------------


def test_rgba_png_reads_four_channels(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (33, 47, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "odd.png")
    record = read_image(tmp_path / "odd.png")
    assert record.pixels.shape == (33, 47, 4)
    assert record.pixels.dtype == np.float32
    assert record.bit_depth == 8
    np.testing.assert_allclose(record.pixels, pixels / 255.0, atol=1e-6)


def test_16_bit_png_scales_by_65535(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 12 * 10).reshape(12, 10).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    record = read_image(tmp_path / "deep.png")
    assert record.pixels.shape == (12, 10, 1)
    assert record.bit_depth == 16
    assert record.pixels.max() == 1.0
    np.testing.assert_allclose(record.pixels[:, :, 0], values / 65535.0, atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "dtype", "shape", "bit_depth"),
    [
        ("L", np.uint8, (9, 13), 8),
        ("RGB", np.uint8, (9, 13, 3), 8),
        ("RGBA", np.uint8, (9, 13, 4), 8),
        ("I;16", np.uint16, (9, 13), 16),
    ],
)
def test_write_image_keeps_mode_and_depth(
    tmp_path: Path, mode: str, dtype: type, shape: tuple[int, ...], bit_depth: int
) -> None:
    high = np.iinfo(dtype).max
    values = np.random.default_rng(0).integers(0, high + 1, shape).astype(dtype)
    pixels = (values / high).astype(np.float32).reshape(9, 13, -1)
    write_image(tmp_path / "out.png", ImageRecord(pixels, bit_depth, "out.png"))
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode == mode
        assert np.array_equal(np.asarray(written), values)


def test_write_image_rejects_16_bit_color(tmp_path: Path) -> None:
    record = ImageRecord(np.zeros((2, 2, 3), np.float32), 16, "color.png")
    with pytest.raises(InvalidDataError, match=r"16-bit images only in gray"):
        write_image(tmp_path / "color.png", record)


def test_truncated_jpeg_in_folder_raises(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg")
    Image.fromarray(pixels).save(tmp_path / "b.jpg")
    whole = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidDataError, match=r"cannot read image .*b\.jpg"):
        load(tmp_path)


def test_folder_without_images_raises(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidDataError, match=r"no image files in folder"):
        load(tmp_path)


def test_mixed_gray_and_rgb_trains_in_rgb(tmp_path: Path, make_autoencoder) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(gray, "L").save(tmp_path / f"gray{i}.png")
        color = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(color, "RGB").save(tmp_path / f"color{i}.png")
    model = make_autoencoder(kind="conv", latent_dim=2, epochs=1)
    with pytest.warns(DataConversionWarning, match=r"converted to 3 channels \(RGB\)"):
        model.fit(tmp_path)
    assert model.model_.channels == 3
    outputs = {record.name: record.channels for record in model.reconstruct(tmp_path)}
    assert outputs["gray0.png"] == 1
    assert outputs["color0.png"] == 3


def test_mixed_sizes_need_image_size(tmp_path: Path, make_autoencoder) -> None:
    rng = np.random.default_rng(0)
    for name, size in [("small.png", (8, 8)), ("wide.png", (6, 11))]:
        pixels = rng.integers(0, 256, size, dtype=np.uint8)
        Image.fromarray(pixels, "L").save(tmp_path / name)
    model = make_autoencoder(kind="conv", latent_dim=2, epochs=1)
    with pytest.raises(InvalidParameterError, match=r"2 different sizes \(6x11, 8x8"):
        model.fit(tmp_path)
    model.set_params(image_size=(8, 8)).fit(tmp_path)
    outputs = {record.name: record.size for record in model.reconstruct(tmp_path)}
    assert outputs == {"small.png": (8, 8), "wide.png": (6, 11)}


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # 20 rows, 40 columns
    stored[:, :20] = 255  # the left half is white
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    pixels = read_image(tmp_path / "photo.jpg").pixels
    assert pixels.shape == (40, 20, 3)
    assert pixels[:15].mean() > 0.95  # the white half is now on top
    assert pixels[-15:].mean() < 0.05


def test_repeated_column_names_raise() -> None:
    frame = pd.DataFrame([[1.0, 2.0, 3.0]] * 4, columns=["a", "b", "a"])
    with pytest.raises(InvalidDataError, match=r"repeated column names \['a'\]"):
        TablePreprocessor().fit(frame)


def test_all_empty_text_column_raises() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "note": [None, None, None]})
    with pytest.raises(InvalidDataError, match="column 'note' has no values"):
        TablePreprocessor().fit(frame)


def test_date_objects_raise() -> None:
    days = [datetime.date(2024, 1, day) for day in (1, 2, 3)]
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "signup": days})
    with pytest.raises(InvalidDataError, match="column 'signup' contains dates"):
        TablePreprocessor().fit(frame)


def test_huge_values_scale_without_overflow() -> None:
    frame = pd.DataFrame({"income": [1e295, 2e295, 3e295]})
    scaled = TablePreprocessor().fit(frame).transform(frame)
    np.testing.assert_allclose(scaled[:, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)


def test_float32_overflow_names_column() -> None:
    pre = TablePreprocessor().fit(pd.DataFrame({"income": [1.0, 2.0, 3.0]}))
    with pytest.raises(InvalidDataError, match="column 'income' has values too large"):
        pre.transform(pd.DataFrame({"income": [1e300]}))


def test_semicolon_csv_is_named(tmp_path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("a;b\n1;2\n3;4\n")
    with pytest.raises(InvalidDataError, match="looks separated by ';'"):
        load(path)


def _write_png_16_bit_rgb(path: Path, pixels: np.ndarray) -> None:
    """Write (H, W, 3) uint16 pixels as a PNG by hand; Pillow cannot write this mode."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_16_bit_colour_png_warns(tmp_path) -> None:
    path = tmp_path / "rgb16.png"
    _write_png_16_bit_rgb(path, np.full((4, 5, 3), 40000, dtype=np.uint16))
    with pytest.warns(DataConversionWarning, match="16-bit colour PNG"):
        record = read_image(path)
    assert record.pixels.shape == (4, 5, 3)
    assert record.bit_depth == 8


def test_parquet_folder_with_other_columns_raises(tmp_path) -> None:
    pd.DataFrame({"a": [1.0], "b": [2.0]}).to_parquet(tmp_path / "1.parquet")
    pd.DataFrame({"a": [1.0], "c": [2.0]}).to_parquet(tmp_path / "2.parquet")
    with pytest.raises(InvalidDataError, match=r"missing \['b'\], extra \['c'\]"):
        load(tmp_path)


def test_jpeg_output_keeps_more_detail_than_pillow_default(tmp_path):
    from sklearn.datasets import load_sample_image

    from aelab.data.images import ImageRecord, write_image

    photo = load_sample_image("china.jpg")
    write_image(tmp_path / "ours.jpg", ImageRecord(photo.astype(np.float32) / 255, 8))
    Image.fromarray(photo).save(tmp_path / "default.jpg")  # Pillow's quality 75

    def psnr(path: Path) -> float:
        back = np.asarray(Image.open(path)).astype(np.float64)
        return 10 * np.log10(255**2 / np.mean((back - photo) ** 2))

    assert psnr(tmp_path / "ours.jpg") > psnr(tmp_path / "default.jpg") + 2
