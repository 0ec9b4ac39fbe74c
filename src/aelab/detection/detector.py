"""Anomaly detection by reconstruction error: ``AnomalyDetector``.

Scores follow one rule everywhere: a higher score means more anomalous. The one
exception is :meth:`AnomalyDetector.score_samples`, whose name scikit-learn fixes
to the opposite sign.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ..data import ImageRecord, TablePreprocessor, load
from ..errors import InvalidDataError, InvalidParameterError, NotFittedError
from ..estimator import AutoEncoder, Data

DEFAULT_FPR = 0.01  # false-positive rate of the default threshold
# Rows held out for the default threshold: at least this many when the data has
# ten times as many, and none (so no default threshold) when fewer would be.
MIN_CALIBRATION_ROWS = 20
# Per-feature error scales are floored at this share of the mean scale, so a
# feature that the model rebuilds perfectly (a constant column) cannot blow up.
SCALE_FLOOR = 1e-3
# Autoencoder settings for tables, unless the detector's or autoencoder_params'
# values override them. Chosen on the ADBench protocol in benchmarks/RESULTS.md:
# small hidden layers with a wide code and a high learning rate beat the
# AutoEncoder defaults ((256, 128), code 8, lr 1e-3) on mean AUROC over 12 sets.
TABLE_DEFAULTS: dict[str, Any] = {
    "hidden_dims": (64, 32),
    "latent_dim": 16,
    "learning_rate": 0.01,
    "batch_size": 512,
}
# Autoencoder settings for image data, unless autoencoder_params overrides them.
# Measured on digits one-class (train on one digit, score all test digits): the
# plain conv autoencoder reached AUROC 0.94-0.97 against PCA's 0.99-1.0, and
# denoising training for longer brought it to 0.98-1.0.
# Images of at most SMALL_IMAGE_VALUES values (height x width x channels) get a
# dense model, larger ones a convolutional one. On digits one-class (8x8, 10
# digits x 3 splits) the dense ensemble scored a mean AUROC of 0.9959 against
# PCA's 0.9956, above it in 21 of 30 tasks and below in 5. It also fits 10 to 50
# times faster than the conv model on such small images. On lfw faces (25x25)
# it scored 0.884 against PCA's 0.442 (benchmarks/RESULTS.md).
SMALL_IMAGE_VALUES = 32 * 32
IMAGE_DEFAULTS: dict[str, Any] = {
    "latent_dim": 16,
    "noise": "gaussian:0.2",
    "epochs": 200,
    "patience": 20,
    "batch_size": 32,
}


class ThresholdNotSetError(NotFittedError):
    """``predict`` was called on a detector that has no threshold yet."""


@dataclass(frozen=True)
class Detection:
    """The result of :meth:`AnomalyDetector.predict`, one entry per sample.

    Attributes:
        score: Anomaly score; higher means more anomalous.
        threshold: The threshold the scores were compared with.
        is_anomaly: True where ``score > threshold``.
    """

    score: np.ndarray
    threshold: float
    is_anomaly: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"score": self.score, "is_anomaly": self.is_anomaly})


class AnomalyDetector(BaseEstimator):
    """Flag samples that autoencoders trained on normal data rebuild badly.

    ``fit`` trains ``n_models`` autoencoders (different seeds) on most of the
    reference data. Each preprocessed feature's squared error is divided by its
    mean on the training rows, so a feature that is always hard to rebuild does
    not dominate, and the score is the mean of these normalised errors over
    features and models. A threshold is then set on the held-out part of the
    reference data at false-positive rate ``fpr``, or from ``contamination``.

    Args:
        latent_dim: Code size; by default 16 for tables and, for images, a
            quarter of the pixel count between 2 and 16.
        hidden_dims: Dense hidden widths; by default (64, 32) for tables.
        n_models: Autoencoders in the ensemble, each with its own seed.
        normalize: Divide each feature's error by its mean training error;
            "auto" does so for tables but not for images, where it lowered AUROC
            on digits one-class.
        contamination: Expected share of anomalies in the reference data, in
            (0, 0.5]; the threshold is that upper quantile of reference scores.
        fpr: Target false-positive rate on the held-out reference rows. When
            neither this nor contamination is given, the rate is 0.01, or 1/n for
            n < 100 held-out rows.
        calibration_fraction: Share of the reference rows held out from training
            to set the threshold.
        autoencoder_params: Further :class:`AutoEncoder` parameters (kind,
            epochs, learning_rate, variational, noise, scaling, ...). They start
            from ``TABLE_DEFAULTS`` or ``IMAGE_DEFAULTS`` (denoising training for
            200 epochs).
        random_state: Seed of the split and of the first model; model i uses
            random_state + i.
        device: "auto", "cpu" or "cuda[:N]".
        verbose: 1 shows training progress bars.

    Attributes:
        models_: The trained :class:`AutoEncoder` ensemble.
        scales_: Per-model arrays of per-feature error scales.
        threshold_: Scores above this are anomalies.
        reference_scores_: Scores of the held-out reference rows.
    """

    def __init__(
        self,
        latent_dim: int | None = None,
        hidden_dims: Sequence[int] | None = None,
        n_models: int = 3,
        normalize: bool | Literal["auto"] = "auto",
        contamination: float | None = None,
        fpr: float | None = None,
        calibration_fraction: float = 0.1,
        autoencoder_params: dict[str, Any] | None = None,
        random_state: int | None = 0,
        device: str = "auto",
        verbose: int = 0,
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.n_models = n_models
        self.normalize = normalize
        self.contamination = contamination
        self.fpr = fpr
        self.calibration_fraction = calibration_fraction
        self.autoencoder_params = autoencoder_params
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ---- fitting -------------------------------------------------------------

    def fit(self, X: Data, y: Any = None) -> AnomalyDetector:
        """Train the ensemble on reference data X (mostly normal) and set a threshold.

        Returns:
            self, fitted.
        """
        self._validate_params()
        data = _read(X, self.verbose)
        n = _length(data)
        seed = 0 if self.random_state is None else int(self.random_state)
        order = np.random.default_rng(seed).permutation(n)
        n_calibration = int(round(n * self.calibration_fraction))
        if 0 < n_calibration < MIN_CALIBRATION_ROWS <= n // 10:
            n_calibration = MIN_CALIBRATION_ROWS
        if n_calibration < MIN_CALIBRATION_ROWS:
            n_calibration = 0
        fit_rows, calibration_rows = order[n_calibration:], order[:n_calibration]
        train = _take(data, np.sort(fit_rows))

        self.images_ = _is_images(data)
        self.image_values_ = _image_values(data) if self.images_ else 0
        self.models_ = [
            self._make_model(seed + i).fit(train) for i in range(self.n_models)
        ]
        self.scales_ = [self._error_scale(model, train) for model in self.models_]
        fit_scores = self.score(train)
        if n_calibration:
            self.reference_scores_ = self.score(_take(data, np.sort(calibration_rows)))
        else:
            self.reference_scores_ = fit_scores

        self.threshold_: float | None = None
        if self.contamination is not None:
            scores = np.concatenate(
                [fit_scores, self.reference_scores_[:n_calibration]]
            )
            self.threshold_ = _upper_quantile(scores, self.contamination)
        elif n_calibration:
            # The default rate rises to 1/n when n held-out rows cannot resolve it.
            fpr = self.fpr or max(DEFAULT_FPR, 1 / n_calibration)
            self.infer_threshold_from_scores(self.reference_scores_, fpr)
        return self

    def _validate_params(self) -> None:
        if not isinstance(self.n_models, int) or self.n_models < 1:
            raise InvalidParameterError(
                f"n_models must be a positive integer, got {self.n_models!r}"
            )
        if self.contamination is not None and not 0 < self.contamination <= 0.5:
            raise InvalidParameterError(
                f"contamination must be in (0, 0.5], got {self.contamination!r}"
            )
        if self.fpr is not None and not 0 < self.fpr < 1:
            raise InvalidParameterError(f"fpr must be in (0, 1), got {self.fpr!r}")
        if self.fpr is not None and self.contamination is not None:
            raise InvalidParameterError(
                "give either fpr or contamination, not both: fpr sets the threshold "
                "on held-out normal rows, contamination on all reference rows"
            )
        if not 0 <= self.calibration_fraction < 1:
            raise InvalidParameterError(
                "calibration_fraction must be in [0, 1), got "
                f"{self.calibration_fraction!r}"
            )

    def _make_model(self, seed: int) -> AutoEncoder:
        params = dict(IMAGE_DEFAULTS if self.images_ else TABLE_DEFAULTS)
        if self.images_:
            small = self.image_values_ <= SMALL_IMAGE_VALUES
            params["kind"] = "dense" if small else "conv"
        params.update(self.autoencoder_params or {})
        if self.latent_dim is not None:
            params["latent_dim"] = self.latent_dim
        if self.hidden_dims is not None:
            params["hidden_dims"] = self.hidden_dims
        params.update(random_state=seed, device=self.device, verbose=self.verbose)
        model = AutoEncoder(**params)
        if self.latent_dim is None and "latent_dim" not in params:
            model.set_params(latent_dim="auto")
        return model

    def _error_scale(self, model: AutoEncoder, train: Any) -> np.ndarray:
        errors = model.element_errors(train).astype(np.float64)
        normalize = not self.images_ if self.normalize == "auto" else self.normalize
        if not normalize:
            return np.ones(errors.shape[1:])
        scale = errors.mean(axis=0)
        return np.maximum(scale, SCALE_FLOOR * scale.mean() + 1e-12)

    # ---- scoring -------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFittedError(
                "this AnomalyDetector is not fitted yet; call fit(X) with normal "
                "reference data, or AnomalyDetector.load(path), first"
            )

    def normalized_errors(self, X: Data) -> np.ndarray:
        """Return each preprocessed value's error over its scale, averaged over models.

        The shape is (N, F) for tables and (N, C, H, W) for images; the mean over
        all but the first axis is :meth:`score`.
        """
        self._check_fitted()
        data = _read(X, 0)
        total = None
        for model, scale in zip(self.models_, self.scales_, strict=True):
            errors = model.element_errors(data) / scale
            total = errors if total is None else total + errors
        return total / len(self.models_)

    def score(self, X: Data) -> np.ndarray:
        """Return the anomaly score of each sample: higher means more anomalous."""
        errors = self.normalized_errors(X)
        return errors.reshape(len(errors), -1).mean(axis=1, dtype=np.float64)

    def score_samples(self, X: Data) -> np.ndarray:
        """Return the negative anomaly score, as scikit-learn's name requires.

        Higher means more normal here; use :meth:`score` for the usual direction.
        """
        return -self.score(X)

    def decision_function(self, X: Data) -> np.ndarray:
        """Return threshold minus score: negative for anomalies, as in scikit-learn."""
        return self._threshold() - self.score(X)

    # ---- thresholds ----------------------------------------------------------

    def infer_threshold(self, X: Data, fpr: float) -> AnomalyDetector:
        """Set the threshold so that a share ``fpr`` of the normal data X is flagged.

        Raises:
            InvalidParameterError: fpr is outside (0, 1) or below 1 / len(X), the
                smallest rate that len(X) samples can resolve.
        """
        self._check_fitted()
        return self.infer_threshold_from_scores(self.score(X), fpr)

    def infer_threshold_from_scores(
        self, scores: np.ndarray, fpr: float
    ) -> AnomalyDetector:
        if not 0 < fpr < 1:
            raise InvalidParameterError(f"fpr must be in (0, 1), got {fpr!r}")
        if fpr < 1 / len(scores):
            raise InvalidParameterError(
                f"fpr={fpr:g} is below 1/{len(scores)}, the smallest rate that "
                f"{len(scores)} normal samples can resolve; pass at least "
                f"{int(np.ceil(1 / fpr))} samples or a larger fpr"
            )
        self.threshold_ = _upper_quantile(scores, fpr)
        return self

    def _threshold(self) -> float:
        self._check_fitted()
        if self.threshold_ is None:
            raise ThresholdNotSetError(
                "this AnomalyDetector has no threshold: the reference data was too "
                f"small to hold out {MIN_CALIBRATION_ROWS} rows. Call "
                "infer_threshold(X_normal, fpr=...) or fit with contamination=..."
            )
        return self.threshold_

    def predict(self, X: Data) -> Detection:
        """Score X and compare with the threshold.

        Returns:
            A :class:`Detection` with each sample's score (higher means more
            anomalous), the threshold and an is_anomaly flag.
        """
        threshold = self._threshold()
        scores = self.score(X)
        return Detection(scores, threshold, scores > threshold)

    # ---- explanations --------------------------------------------------------

    def feature_contributions(self, X: Data) -> pd.DataFrame:
        """Split each row's score over the input columns of a table.

        Returns:
            A DataFrame (N, columns) whose rows sum to :meth:`score`; a
            categorical column collects its whole one-hot block, a numeric column
            its missing-value indicator.
        """
        pre = self.models_[0].preprocessor_ if hasattr(self, "models_") else None
        if not isinstance(pre, TablePreprocessor):
            self._check_fitted()
            raise InvalidDataError(
                "feature_contributions() is for table models; use anomaly_maps() "
                "for images"
            )
        errors = self.normalized_errors(X)
        width = errors.shape[1]
        return pd.DataFrame(
            {
                name: errors[:, span].sum(axis=1) / width
                for name, span in pre.column_slices()
            }
        )

    def anomaly_maps(self, X: Data) -> np.ndarray:
        """Return per-pixel anomaly maps (N, H, W), averaged over channels.

        Maps are at the model's image size; the mean of a map is the image's score.
        """
        self._check_fitted()
        if isinstance(self.models_[0].preprocessor_, TablePreprocessor):
            raise InvalidDataError(
                "anomaly_maps() is for image models; use feature_contributions() "
                "for tables"
            )
        errors = self.normalized_errors(X)
        if errors.ndim == 2:  # a dense model on images: (N, C*H*W)
            shape = self.models_[0].preprocessor_.shape
            errors = errors.reshape(len(errors), *shape)
        return errors.mean(axis=1)

    # ---- saving --------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Any:
        """Save as a folder: detector.json plus one model folder per ensemble member."""
        from .io import save_detector

        return save_detector(self, path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], device: str = "auto"
    ) -> AnomalyDetector:
        """Load a detector saved by :meth:`save`."""
        from .io import load_detector

        return load_detector(path, device)


def _upper_quantile(scores: np.ndarray, share: float) -> float:
    # NOTE: "higher" picks an observed score, so at most `share` of `scores` lie
    # strictly above the threshold.
    return float(np.quantile(scores, 1 - share, method="higher"))


def _read(X: Data, verbose: int) -> Any:
    """Load a path once, so that every ensemble member reads the same rows."""
    if isinstance(X, str | os.PathLike):
        return load(X, progress=verbose > 0)
    return X


def _is_images(data: Any) -> bool:
    if isinstance(data, list):
        return True
    return not isinstance(data, pd.DataFrame) and np.asarray(data).ndim >= 3


def _image_values(data: Any) -> int:
    """Return the values per image (H x W x C) of the first image."""
    if isinstance(data, list):
        first = data[0]
        if isinstance(first, ImageRecord):
            return int(first.pixels.size)
        return int(np.size(first))
    return int(np.prod(np.asarray(data).shape[1:]))


def _length(data: Any) -> int:
    if isinstance(data, list | pd.DataFrame):
        return len(data)
    return len(np.asarray(data))


def _take(data: Any, rows: np.ndarray) -> Any:
    if isinstance(data, pd.DataFrame):
        return data.iloc[rows].reset_index(drop=True)
    if isinstance(data, list) and data and isinstance(data[0], ImageRecord):
        return [data[i] for i in rows]
    return np.asarray(data)[rows]
