"""The opt-in training options: torch.compile and bfloat16 mixed precision."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits

import aelab.estimator
import aelab.training.loop
from aelab import AutoEncoder, CompileFailedError, InvalidParameterError
from aelab.cli.main import main
from aelab.models import DenseAutoencoder
from aelab.training import TrainConfig, Trainer

# 1,024 digit rows train in 8 full batches of 128, so the compiled step gets one
# batch shape and compiles once. With one hidden layer, that took 12 to 18 s on a
# loaded 2-core VM with an empty inductor cache, and 5 s with a filled one. At
# this learning rate the loss falls from 60 to 40 in 5 epochs.
ROWS, BATCH, EPOCHS = 1024, 128, 5
SMALL = {"hidden_dims": (16,), "latent_dim": 4, "epochs": EPOCHS}
SMALL |= {"batch_size": BATCH, "learning_rate": 1e-2}
SMALL |= {"validation_fraction": 0.0, "patience": None}

requires_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="no C++ compiler (g++, or CXX), which torch.compile needs on the CPU",
)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """The first 1,024 rows of scikit-learn's digits, 64 pixel columns."""
    return load_digits().data[:ROWS].astype(np.float32)


@pytest.fixture(scope="module")
def eager_model(pixels: np.ndarray) -> AutoEncoder:
    return AutoEncoder(**SMALL, random_state=0, device="cpu").fit(pixels)


@pytest.fixture(scope="module")
def compiled_model(pixels: np.ndarray) -> AutoEncoder:
    model = AutoEncoder(**SMALL, compile=True, random_state=0, device="cpu")
    return model.fit(pixels)


def final_loss(model: AutoEncoder) -> float:
    return model.history_[-1]["train"]["loss"]


def first_loss(model: AutoEncoder) -> float:
    return model.history_[0]["train"]["loss"]


# ---- torch.compile ---------------------------------------------------------------


@pytest.mark.slow
@requires_compiler
def test_compiled_fit_matches_eager(eager_model, compiled_model) -> None:
    eager, compiled = final_loss(eager_model), final_loss(compiled_model)
    # Inductor reorders float32 sums, so the losses agree to rounding only.
    assert compiled == pytest.approx(eager, rel=1e-3)
    assert compiled < 0.8 * first_loss(compiled_model)
    expected = eager_model.model_.state_dict()
    for name, value in compiled_model.model_.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-3, rtol=1e-3)


@requires_compiler
def test_compiled_model_saves_plain_keys(
    eager_model, compiled_model, pixels, tmp_path
) -> None:
    compiled_model.save(tmp_path / "compiled")
    eager_model.save(tmp_path / "eager")
    saved = load_file(str(tmp_path / "compiled" / "model.safetensors"))
    plain = load_file(str(tmp_path / "eager" / "model.safetensors"))
    assert sorted(saved) == sorted(plain)
    assert not any(name.startswith("_orig_mod") for name in saved)

    loaded = AutoEncoder.load(tmp_path / "compiled", device="cpu")
    assert loaded.get_params()["compile"] is True
    np.testing.assert_array_equal(
        loaded.transform(pixels[:50]), compiled_model.transform(pixels[:50])
    )


@requires_compiler
def test_compile_failure_names_the_compiler(pixels, monkeypatch) -> None:
    # A compiler path that does not exist, and no cached kernels to fall back on.
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "/missing/g++"))
    monkeypatch.setattr(torch._inductor.config, "force_disable_caches", True)
    torch._dynamo.reset()
    model = AutoEncoder(**SMALL | {"hidden_dims": (24,)}, compile=True, device="cpu")
    try:
        with pytest.raises(CompileFailedError, match=r"needs a working C\+\+ compiler"):
            model.fit(load_digits().data[:256])
    finally:
        torch._dynamo.reset()


def test_cli_compile_flag_reaches_trainer(tmp_path, monkeypatch) -> None:
    compiled = []

    def record(function):  # replaces torch.compile and compiles nothing
        compiled.append(function.__name__)
        return function

    monkeypatch.setattr(aelab.training.loop.torch, "compile", record)
    table = tmp_path / "digits.csv"
    load_digits(as_frame=True).data[:200].to_csv(table, index=False)
    argv = ["fit", str(table), "-o", str(tmp_path / "m"), "--compile", "-q"]
    argv += ["--epochs", "1", "--hidden-dims", "16", "--no-checkpoint"]
    assert main(argv + ["--device", "cpu"]) == 0
    assert compiled == ["_forward_loss"]


def test_cli_rejects_compile_for_codec_task(capsys, tmp_path) -> None:
    argv = ["fit", str(tmp_path), "-o", str(tmp_path / "m"), "--task", "compress"]
    assert main([*argv, "--compile"]) != 0
    assert "--compile works only with --task reconstruct" in capsys.readouterr().err


# ---- mixed precision ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"precision": "fp16"},
            r"precision must be one of \('float32', 'bf16-mixed'\)",
        ),
        ({"compile": "yes"}, r"compile must be True or False, got 'yes'"),
        (
            {"precision": "bf16-mixed"},
            r"precision='bf16-mixed' needs a CUDA device, but training runs on cpu",
        ),
    ],
)
def test_invalid_speed_options_raise(params, message, pixels) -> None:
    model = AutoEncoder(epochs=1, device="cpu", **params)
    with pytest.raises(InvalidParameterError, match=message):
        model.fit(pixels[:20])


def test_cli_rejects_bf16_on_cpu(capsys, tmp_path) -> None:
    table = tmp_path / "digits.csv"
    load_digits(as_frame=True).data[:50].to_csv(table, index=False)
    argv = ["fit", str(table), "-o", str(tmp_path / "m"), "--device", "cpu"]
    assert main([*argv, "--precision", "bf16-mixed"]) != 0
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_bf16_trainer_tracks_float32(pixels) -> None:
    # The CPU's autocast runs the same code path the CUDA one does.
    x = torch.from_numpy((pixels - pixels.mean(0)) / (pixels.std(0) + 1e-6))
    config = TrainConfig(
        epochs=EPOCHS, batch_size=BATCH, learning_rate=1e-2, validation_fraction=0.0
    )
    losses, models = {}, {}
    for precision in ("float32", "bf16-mixed"):
        torch.manual_seed(0)
        models[precision] = DenseAutoencoder(64, 4, (16,))
        trainer = Trainer(
            models[precision], config, torch.device("cpu"), precision=precision
        )
        history = trainer.fit(x).history
        losses[precision] = [epoch["train"]["loss"] for epoch in history]
    assert losses["bf16-mixed"][-1] < 0.8 * losses["bf16-mixed"][0]
    # bfloat16 products round to 8 significant bits, but the sums stay float32:
    # the final losses differed by 0.02 % in a run on the CPU.
    assert losses["bf16-mixed"][-1] == pytest.approx(losses["float32"][-1], rel=0.01)
    assert losses["bf16-mixed"] != losses["float32"]  # autocast did take effect
    dtypes = {p.dtype for p in models["bf16-mixed"].parameters()}
    assert dtypes == {torch.float32}


def test_bf16_estimator_saves_float32_weights(
    pixels, eager_model, monkeypatch, tmp_path: Path
) -> None:
    # Let the CPU stand in for CUDA, to follow the option from the estimator to
    # the saved file.
    monkeypatch.setattr(aelab.estimator, "_check_bf16_device", lambda device: None)
    model = AutoEncoder(**SMALL, precision="bf16-mixed", random_state=0, device="cpu")
    model.fit(pixels).save(tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    plain = eager_model.model_.state_dict()
    assert sorted(saved) == sorted(plain)
    assert {value.dtype for value in saved.values()} == {torch.float32}
    assert final_loss(model) == pytest.approx(final_loss(eager_model), rel=0.01)
    assert final_loss(model) != final_loss(eager_model)  # autocast took effect

    loaded = AutoEncoder.load(tmp_path / "m", device="cpu")
    assert loaded.get_params()["precision"] == "bf16-mixed"
    np.testing.assert_allclose(
        loaded.transform(pixels[:50]), model.transform(pixels[:50]), rtol=1e-6
    )
