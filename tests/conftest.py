"""Shared data sets, seeds and trained models for the aelab test suite.

Every fixture trains on CPU with a fixed seed, on small data, for a few epochs, so
the whole suite stays within a few minutes on two cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from aelab import AutoEncoder

# Train with one intra-op thread. When other processes share the cores, OpenMP's
# spin-waiting stretched a 2-thread conv epoch on the digits to 2-21 s, against
# 0.4 s with one thread (measured on a 2-core machine while two other trainings ran).
torch.set_num_threads(1)


@dataclass(frozen=True)
class Digits:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], split 75/25."""

    x_train: np.ndarray  # (1347, 8, 8) float32
    x_test: np.ndarray  # (450, 8, 8) float32
    y_train: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="session")
def seed() -> int:
    """Seed for every model the tests train. Set AELAB_TEST_SEED to sweep seeds."""
    return int(os.environ.get("AELAB_TEST_SEED", "0"))


@pytest.fixture(scope="session")
def digits() -> Digits:
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=0.25, random_state=0
    )
    return Digits(x_train, x_test, y_train, y_test)


@pytest.fixture
def breast_cancer() -> pd.DataFrame:
    """The 569 x 30 breast-cancer features as a DataFrame, a fresh copy per test."""
    return load_breast_cancer(as_frame=True).data


@pytest.fixture(scope="session")
def make_autoencoder(seed: int) -> Callable[..., AutoEncoder]:
    """Return a factory for AutoEncoders on CPU with the suite's seed."""

    def make(**params: Any) -> AutoEncoder:
        params.setdefault("device", "cpu")
        params.setdefault("random_state", seed)
        return AutoEncoder(**params)

    return make


@pytest.fixture(scope="module")
def conv_model(
    digits: Digits, make_autoencoder: Callable[..., AutoEncoder]
) -> AutoEncoder:
    """A small conv autoencoder trained for 3 epochs on 400 digits."""
    model = make_autoencoder(kind="conv", latent_dim=4, epochs=3, batch_size=64)
    return model.fit(digits.x_train[:400])


@pytest.fixture(scope="module")
def table_model(make_autoencoder: Callable[..., AutoEncoder]) -> AutoEncoder:
    """A dense autoencoder trained on the breast-cancer table."""
    frame = load_breast_cancer(as_frame=True).data
    model = make_autoencoder(
        kind="dense", latent_dim=4, hidden_dims=(32, 16), epochs=60, batch_size=64
    )
    return model.fit(frame)
