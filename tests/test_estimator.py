"""The AutoEncoder estimator: quality, scikit-learn conventions, saving, resuming."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from aelab import (
    AutoEncoder,
    InvalidDataError,
    InvalidParameterError,
    ModelFormatError,
    NonFiniteLossError,
    NotFittedError,
)
from aelab.training import Noise

MakeAutoEncoder = Callable[..., AutoEncoder]


def flat(images: np.ndarray) -> np.ndarray:
    """Reshape images (N, H, W) to rows (N, H * W)."""
    return images.reshape(len(images), -1)


def weights(model: AutoEncoder) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.model_.state_dict().items()}


def assert_same_weights(first: AutoEncoder, second: AutoEncoder) -> None:
    expected = weights(first)
    found = weights(second)
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(found[name], value), name


@pytest.fixture(scope="module")
def vae_model(digits, make_autoencoder: MakeAutoEncoder) -> AutoEncoder:
    """A variational conv autoencoder with beta 0.5, trained on 400 digits.

    With MSE, or with 5 epochs or fewer, the posterior collapsed to the prior (KL
    near 0) and every code decoded to the same mean digit. With BCE for 15 epochs
    the KL grew to about 0.8 nats (seed 0), so codes differ between digits.
    """
    model = make_autoencoder(
        kind="conv",
        latent_dim=4,
        variational=True,
        beta=0.5,
        loss="bce",
        epochs=15,
        batch_size=32,
        learning_rate=2e-3,
    )
    return model.fit(digits.x_train[:400])


# ---- quality -----------------------------------------------------------------


@pytest.mark.slow
def test_conv_halves_pca_error_on_digits(digits, make_autoencoder) -> None:
    pca = PCA(n_components=8).fit(flat(digits.x_train))
    test_rows = flat(digits.x_test)
    pca_rows = pca.inverse_transform(pca.transform(test_rows))
    pca_mse = float(np.mean((pca_rows - test_rows) ** 2))

    model = make_autoencoder(
        kind="conv", latent_dim=8, epochs=40, batch_size=64, learning_rate=2e-3
    )
    model.fit(digits.x_train)
    reconstructed = model.reconstruct(digits.x_test)
    assert reconstructed.shape == digits.x_test.shape
    mse = float(np.mean((reconstructed - digits.x_test) ** 2))
    assert mse <= 0.5 * pca_mse, f"autoencoder MSE {mse:.5f}, PCA MSE {pca_mse:.5f}"


def test_table_model_encodes_and_reconstructs(table_model, breast_cancer) -> None:
    codes = table_model.transform(breast_cancer)
    assert codes.shape == (569, 4)
    assert codes.dtype == np.float32
    reconstructed = table_model.reconstruct(breast_cancer)
    assert isinstance(reconstructed, pd.DataFrame)
    assert list(reconstructed.columns) == list(breast_cancer.columns)
    assert reconstructed.shape == breast_cancer.shape


def test_table_model_beats_column_means(table_model, breast_cancer) -> None:
    # Columns are standardised, so predicting each column's mean scores 1.0.
    errors = table_model.reconstruction_error(breast_cancer)
    assert errors.shape == (569,)
    assert errors.mean() < 0.5
    assert table_model.score(breast_cancer) == pytest.approx(-errors.mean())


def test_inverse_transform_returns_training_form(table_model, conv_model) -> None:
    table = table_model.inverse_transform(np.zeros((2, 4), np.float32))
    assert isinstance(table, pd.DataFrame)
    assert table.shape == (2, 30)
    images = conv_model.inverse_transform(np.zeros((3, 4), np.float32))
    assert images.shape == (3, 8, 8)
    assert images.dtype == np.float32


def test_uint8_images_come_back_as_uint8(conv_model, digits) -> None:
    images = np.rint(digits.x_test[:5] * 255).astype(np.uint8)
    reconstructed = conv_model.reconstruct(images)
    assert reconstructed.dtype == np.uint8
    assert reconstructed.shape == (5, 8, 8)


def test_inverse_transform_rejects_wrong_code_width(conv_model) -> None:
    with pytest.raises(InvalidDataError, match=r"expected codes of shape \(N, 4\)"):
        conv_model.inverse_transform(np.zeros((2, 5)))


# ---- saving and loading ------------------------------------------------------


@pytest.mark.parametrize("name", ["conv_model", "table_model"])
def test_save_load_gives_identical_codes(name, request, tmp_path, digits) -> None:
    model = request.getfixturevalue(name)
    if name == "conv_model":
        data = digits.x_test
    else:
        data = request.getfixturevalue("breast_cancer")
    loaded = AutoEncoder.load(model.save(tmp_path / "model"), device="cpu")
    assert np.array_equal(loaded.transform(data), model.transform(data))
    assert loaded.get_params() == model.get_params() | {"device": "cpu"}
    assert loaded.history_ == model.history_
    assert loaded.best_epoch_ == model.best_epoch_
    assert loaded.metadata_ == model.metadata_


def test_save_load_keeps_table_schema(make_autoencoder, tmp_path) -> None:
    frame = pd.DataFrame(
        {
            "size": [1.0, np.nan, 3.0, 4.5, 2.0, np.nan],
            "color": ["red", "blue", None, "red", "blue", "red"],
            "flag": [True, False, True, True, False, False],
        }
    )
    model = make_autoencoder(kind="dense", latent_dim=2, hidden_dims=(8,), epochs=2)
    model.fit(frame)
    loaded = AutoEncoder.load(model.save(tmp_path / "model"))
    assert loaded.preprocessor_.feature_names == model.preprocessor_.feature_names
    assert np.array_equal(loaded.transform(frame), model.transform(frame))
    pd.testing.assert_frame_equal(loaded.reconstruct(frame), model.reconstruct(frame))


def test_save_replaces_own_model_folder(conv_model, table_model, tmp_path) -> None:
    path = table_model.save(tmp_path / "model")
    conv_model.save(path)
    assert AutoEncoder.load(path).model_.kind == "conv"


def test_load_rejects_newer_format_version(conv_model, tmp_path) -> None:
    path = conv_model.save(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match=r"format version 99.*Upgrade aelab"):
        AutoEncoder.load(path)


def test_load_rejects_folder_without_model(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelFormatError, match=r"is not an aelab model"):
        AutoEncoder.load(tmp_path)


def test_load_rejects_foreign_config(conv_model, tmp_path) -> None:
    path = conv_model.save(tmp_path / "model")
    (path / "config.json").write_text(json.dumps({"format": "other-tool"}))
    with pytest.raises(ModelFormatError, match=r"is not an aelab model config"):
        AutoEncoder.load(path)


def test_load_rejects_mismatched_weight_shape(conv_model, tmp_path) -> None:
    path = conv_model.save(tmp_path / "model")
    tensors = load_file(str(path / "model.safetensors"))
    tensors["bottleneck.project.weight"] = torch.zeros(5, 256)  # trained as (4, 256)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(
        ModelFormatError, match=r"shape mismatch .*bottleneck\.project\.weight"
    ):
        AutoEncoder.load(path)


def test_load_rejects_corrupt_weights(conv_model, tmp_path) -> None:
    path = conv_model.save(tmp_path / "model")
    (path / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelFormatError, match=r"cannot read weights"):
        AutoEncoder.load(path)


def test_save_rejects_foreign_folder(conv_model, tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.txt").write_text("user data")
    with pytest.raises(InvalidParameterError, match=r"not an aelab model folder"):
        conv_model.save(folder)
    assert (folder / "keep.txt").read_text() == "user data"


def test_save_into_missing_folder_raises(conv_model, tmp_path) -> None:
    target = tmp_path / "absent" / "model"
    with pytest.raises(InvalidParameterError, match=r"absent.model' does not exist"):
        conv_model.save(target)
    assert not (tmp_path / "absent").exists()


# ---- scikit-learn conventions ------------------------------------------------


def test_same_seed_gives_same_weights(digits, make_autoencoder) -> None:
    rows = flat(digits.x_train[:200])
    params = dict(kind="dense", hidden_dims=(32,), epochs=2, batch_size=32)
    first = make_autoencoder(random_state=7, **params).fit(rows)
    second = make_autoencoder(random_state=7, **params).fit(rows)
    assert_same_weights(first, second)
    other = make_autoencoder(random_state=8, **params).fit(rows)
    assert not torch.equal(
        weights(other)["bottleneck.project.weight"],
        weights(first)["bottleneck.project.weight"],
    )


def test_clone_copies_params_not_fit(table_model) -> None:
    copy = clone(table_model)
    assert copy.get_params() == table_model.get_params()
    assert not hasattr(copy, "model_")


def test_pipeline_with_classifier(digits, make_autoencoder) -> None:
    encoder = make_autoencoder(
        kind="dense", latent_dim=16, hidden_dims=(64,), epochs=10
    )
    pipeline = Pipeline([("ae", encoder), ("clf", LogisticRegression(max_iter=1000))])
    pipeline.fit(flat(digits.x_train), digits.y_train)
    accuracy = pipeline.score(flat(digits.x_test), digits.y_test)
    assert accuracy > 0.8
    assert clone(pipeline).get_params()["ae__latent_dim"] == 16


def test_get_and_set_params(digits, make_autoencoder) -> None:
    model = make_autoencoder(kind="dense", latent_dim=8, epochs=1)
    assert model.get_params()["latent_dim"] == 8
    assert model.set_params(latent_dim=3, hidden_dims=(16,)) is model
    assert model.get_params()["hidden_dims"] == (16,)
    codes = model.fit_transform(flat(digits.x_train[:50]))
    assert codes.shape == (50, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"latent_dim": 0}, r"latent_dim must be a positive integer or .auto., got 0"),
        ({"kind": "rnn"}, r"kind must be one of \('auto', 'dense', 'conv'\)"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\)"),
        ({"loss": "huber"}, r"loss must be one of"),
        ({"hidden_dims": ()}, r"hidden_dims must be None or a non-empty list"),
        ({"epochs": True}, r"epochs must be a positive integer, got True"),
        ({"device": "tpu"}, r"device must be 'auto', 'cpu' or 'cuda\[:N\]'"),
    ],
)
def test_invalid_params_raise_at_fit(params, message, make_autoencoder) -> None:
    model = make_autoencoder(epochs=1).set_params(**params)
    with pytest.raises(InvalidParameterError, match=message):
        model.fit(np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("name", ["conv_model", "table_model"])
def test_zero_rows_raise(name, request, digits, breast_cancer) -> None:
    model = request.getfixturevalue(name)
    empty = digits.x_test[:0] if name == "conv_model" else breast_cancer.iloc[:0]
    with pytest.raises(InvalidDataError, match=r"no (images given|rows)"):
        model.transform(empty)


def test_conv_kind_rejects_table(breast_cancer, make_autoencoder) -> None:
    with pytest.raises(InvalidParameterError, match=r"kind='conv' needs images"):
        make_autoencoder(kind="conv", epochs=1).fit(breast_cancer)


def test_one_dimensional_array_raises(make_autoencoder) -> None:
    with pytest.raises(InvalidDataError, match=r"got a 1-D array .*reshape"):
        make_autoencoder(epochs=1).fit(np.zeros(5))


@pytest.mark.parametrize(
    "call",
    [
        lambda model: model.transform(np.zeros((2, 3))),
        lambda model: model.reconstruct(np.zeros((2, 3))),
        lambda model: model.score_samples(np.zeros((2, 3))),
        lambda model: model.inverse_transform(np.zeros((2, 8))),
        lambda model: model.sample(2),
        lambda model: model.save("unused-model"),
    ],
    ids=["transform", "reconstruct", "score_samples", "inverse", "sample", "save"],
)
def test_unfitted_model_raises(call: Callable[[AutoEncoder], Any]) -> None:
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(X\)"):
        call(AutoEncoder())


# ---- small batches -----------------------------------------------------------


def test_fewer_rows_than_batch_size(breast_cancer, make_autoencoder) -> None:
    model = make_autoencoder(kind="dense", latent_dim=2, epochs=2, batch_size=128)
    model.fit(breast_cancer.iloc[:20])
    assert len(model.history_) == 2
    assert model.transform(breast_cancer.iloc[:20]).shape == (20, 2)


def test_single_row_trains(breast_cancer, make_autoencoder) -> None:
    model = make_autoencoder(kind="dense", latent_dim=2, epochs=2)
    model.fit(breast_cancer.iloc[:1])
    assert model.history_[-1]["validation"] is None
    assert np.isfinite(model.history_[-1]["train"]["loss"])
    assert model.reconstruct(breast_cancer.iloc[:1]).shape == (1, 30)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_last_batch_of_one_row(kind, digits, make_autoencoder) -> None:
    images = digits.x_train[:33]  # batches of 32 and 1
    model = make_autoencoder(
        kind=kind, latent_dim=2, epochs=2, batch_size=32, validation_fraction=0.0
    )
    model.fit(images)
    assert len(model.history_) == 2
    assert all(np.isfinite(h["train"]["loss"]) for h in model.history_)


def test_single_image_trains(digits, make_autoencoder) -> None:
    model = make_autoencoder(kind="conv", latent_dim=2, epochs=2)
    model.fit(digits.x_train[:1])
    assert model.reconstruct(digits.x_train[:1]).shape == (1, 8, 8)


# ---- losses ------------------------------------------------------------------


def test_bce_rejects_pixels_above_one(digits, make_autoencoder) -> None:
    images = digits.x_train[:20] * 255.0  # float pixels 0..255, not [0, 1]
    model = make_autoencoder(kind="conv", loss="bce", epochs=1)
    with pytest.raises(InvalidParameterError, match=r"needs every value in \[0, 1\]"):
        model.fit(images)
    with pytest.raises(InvalidParameterError, match=r"255 for 8-bit"):
        model.fit(images)


def test_bce_on_table_suggests_minmax(breast_cancer, make_autoencoder) -> None:
    model = make_autoencoder(kind="dense", loss="bce", epochs=1)
    with pytest.raises(InvalidParameterError, match=r"use scaling='minmax'"):
        model.fit(breast_cancer)
    model.set_params(scaling="minmax").fit(breast_cancer)
    assert np.isfinite(model.history_[-1]["train"]["loss"])


@pytest.mark.parametrize(
    ("data", "params"),
    [
        ("rows", {"kind": "dense", "learning_rate": 1e6}),
        ("huge", {"kind": "conv"}),
    ],
    ids=["learning_rate_1e6", "pixels_1e30"],
)
def test_non_finite_loss_raises(data, params, digits, make_autoencoder) -> None:
    x = flat(digits.x_train[:200]) if data == "rows" else digits.x_train[:64] * 1e30
    model = make_autoencoder(epochs=3, **params)
    with pytest.raises(NonFiniteLossError, match=r"loss became (inf|nan).*Lower the"):
        model.fit(x)
    for name, value in weights(model).items():
        assert torch.isfinite(value).all(), name
    assert model.history_ == []


# ---- variational models ------------------------------------------------------


def test_sample_returns_training_shape(vae_model) -> None:
    samples = vae_model.sample(5, random_state=0)
    assert samples.shape == (5, 8, 8)
    assert samples.dtype == np.float32
    assert samples.min() >= 0.0
    assert samples.max() <= 1.0
    assert np.array_equal(vae_model.sample(5, random_state=0), samples)
    assert not np.array_equal(vae_model.sample(5, random_state=1), samples)


def test_sample_needs_variational_model(conv_model) -> None:
    with pytest.raises(InvalidParameterError, match=r"needs a variational model"):
        conv_model.sample(2)


def test_interpolate_returns_steps(vae_model, digits) -> None:
    a, b = digits.x_test[:1], digits.x_test[1:2]
    path = vae_model.interpolate(a, b, steps=5)
    assert path.shape == (5, 8, 8)
    # The ends decode a's and b's own codes. They match only to float32 rounding
    # because a batch of 5 and a batch of 1 take different matmul kernels.
    start = vae_model.inverse_transform(vae_model.transform(a))
    end = vae_model.inverse_transform(vae_model.transform(b))
    np.testing.assert_allclose(path[0], start[0], atol=1e-6)
    np.testing.assert_allclose(path[-1], end[0], atol=1e-6)
    assert not np.allclose(path[2], start[0], atol=1e-3)


def test_interpolate_rejects_two_samples(vae_model, digits) -> None:
    with pytest.raises(InvalidDataError, match=r"takes one sample each, got 2 and 1"):
        vae_model.interpolate(digits.x_test[:2], digits.x_test[:1])


def test_history_loss_adds_up(vae_model) -> None:
    assert len(vae_model.history_) == 15
    for record in vae_model.history_:
        for split in ("train", "validation"):
            terms = record[split]
            assert terms["kl"] > 0, (record["epoch"], split)
            expected = terms["recon"] + 0.5 * terms["kl"]
            assert terms["loss"] == pytest.approx(expected, rel=1e-5)


# ---- denoising ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "amount"),
    [
        ("gaussian:0.3", "gaussian", 0.3),
        ("gaussian:2", "gaussian", 2.0),
        ("salt-pepper:0.1", "salt_pepper", 0.1),
        (" MASK:0.5", "mask", 0.5),
    ],
)
def test_noise_spec_parses(spec: str, kind: str, amount: float) -> None:
    noise = Noise.parse(spec)
    assert noise.kind == kind
    assert noise.amount == amount


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gaussian", r"expected KIND:AMOUNT"),
        ("blur:0.1", r"invalid noise 'blur:0.1'"),
        ("mask:1.5", r"amount for mask must be in \(0, 1\)"),
        ("salt_pepper:0", r"amount for salt_pepper must be in \(0, 1\)"),
        ("gaussian:-1", r"amount for gaussian must be a positive number"),
        ("gaussian:nan", r"invalid noise amount 'nan'"),
        ("mask:lots", r"invalid noise amount 'lots'"),
    ],
)
def test_bad_noise_spec_raises(spec: str, message: str, make_autoencoder) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        Noise.parse(spec)
    with pytest.raises(InvalidParameterError, match=message):
        make_autoencoder(noise=spec, epochs=1).fit(np.zeros((4, 3), np.float32))


def test_noise_corrupts_expected_share() -> None:
    x = torch.full((200, 50), 0.5)
    low, high = torch.zeros(50), torch.ones(50)
    generator = torch.Generator().manual_seed(0)
    masked = Noise.parse("mask:0.2").apply(x, low, high, generator)
    assert (masked == 0).float().mean().item() == pytest.approx(0.2, abs=0.02)
    salted = Noise.parse("salt_pepper:0.2").apply(x, low, high, generator)
    assert (salted == 1).float().mean().item() == pytest.approx(0.1, abs=0.02)
    assert (salted == 0).float().mean().item() == pytest.approx(0.1, abs=0.02)


def test_denoising_model_trains(digits, make_autoencoder) -> None:
    model = make_autoencoder(kind="conv", noise="salt_pepper:0.1", epochs=2)
    model.fit(digits.x_train[:200])
    assert len(model.history_) == 2
    assert np.isfinite(model.history_[-1]["train"]["loss"])


# ---- checkpoints -------------------------------------------------------------


def test_resume_matches_straight_run(digits, make_autoencoder, tmp_path) -> None:
    images = digits.x_train[:300]
    params = dict(kind="conv", latent_dim=4, batch_size=32, patience=None)
    straight = make_autoencoder(epochs=6, **params).fit(images)

    resumed = make_autoencoder(epochs=3, checkpoint_dir=tmp_path, **params)
    resumed.fit(images)
    assert len(resumed.history_) == 3
    resumed.set_params(epochs=6).fit(images, resume=True)

    # Weights, Adam state and the shuffling generator are all restored, so the
    # resumed run is bit-identical, not merely close.
    assert_same_weights(straight, resumed)
    assert [h["train"] for h in resumed.history_] == [
        h["train"] for h in straight.history_
    ]
    assert resumed.best_epoch_ == straight.best_epoch_


def test_resume_without_checkpoint_dir_raises(digits, make_autoencoder) -> None:
    model = make_autoencoder(kind="conv", epochs=1)
    with pytest.raises(
        InvalidParameterError, match=r"resume=True needs checkpoint_dir"
    ):
        model.fit(digits.x_train[:10], resume=True)


def test_resume_with_other_data_raises(digits, make_autoencoder, tmp_path) -> None:
    model = make_autoencoder(kind="dense", epochs=1, checkpoint_dir=tmp_path)
    model.fit(flat(digits.x_train[:50]))
    model.set_params(epochs=2)
    with pytest.raises(ModelFormatError, match=r"made with other data or settings"):
        model.fit(flat(digits.x_train[50:100]), resume=True)


def test_resume_from_empty_folder_raises(digits, make_autoencoder, tmp_path) -> None:
    model = make_autoencoder(kind="dense", epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ModelFormatError, match=r"no checkpoint found"):
        model.fit(flat(digits.x_train[:50]), resume=True)


def test_auto_loss_is_bce_for_image_vae(digits, make_autoencoder) -> None:
    vae = make_autoencoder(variational=True, epochs=1).fit(digits.x_train[:64])
    assert vae.loss_ == "bce"
    assert vae.model_.output_activation == "sigmoid"


def test_auto_loss_is_mse_for_tables(table_model) -> None:
    assert table_model.loss == "auto"
    assert table_model.loss_ == "mse"


def test_array_accepted_by_frame_model(table_model, breast_cancer) -> None:
    from_frame = table_model.transform(breast_cancer)
    from_array = table_model.transform(breast_cancer.to_numpy())
    assert np.array_equal(from_frame, from_array)


def test_feature_names_in_and_out(table_model, breast_cancer) -> None:
    assert list(table_model.feature_names_in_) == list(breast_cancer.columns)
    assert table_model.n_features_in_ == 30
    assert list(table_model.get_feature_names_out()) == ["z0", "z1", "z2", "z3"]


def test_resume_without_seed_reuses_saved_seed(digits, tmp_path) -> None:
    images = digits.x_train[:200]
    params = {"kind": "conv", "latent_dim": 4, "device": "cpu", "patience": None}
    first = AutoEncoder(epochs=2, checkpoint_dir=tmp_path, **params).fit(images)
    resumed = AutoEncoder(epochs=3, checkpoint_dir=tmp_path, **params)
    resumed.fit(images, resume=True)
    assert resumed.seed_ == first.seed_
    assert [record["epoch"] for record in resumed.history_] == [1, 2, 3]
