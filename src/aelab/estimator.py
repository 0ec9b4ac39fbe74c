"""The scikit-learn style estimator: ``AutoEncoder``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from .data import ImagePreprocessor, ImageRecord, Preprocessor, TablePreprocessor, load
from .data.images import array_to_records
from .data.stream import ParquetDataset, fit_preprocessor, training_batches
from .data.tables import SCALINGS, array_to_frame
from .errors import InvalidDataError, InvalidParameterError, NotFittedError
from .models import Autoencoder, ConvAutoencoder, DenseAutoencoder
from .training import LOSSES, Noise, TrainConfig, Trainer, element_loss
from .training.checkpoint import saved_seed
from .training.distributed import broadcast_int
from .training.loop import PRECISIONS

logger = logging.getLogger(__name__)

KINDS = ("auto", "dense", "conv")
PREDICT_BATCH_SIZE = 1024
Data = pd.DataFrame | np.ndarray | list[ImageRecord] | str | os.PathLike[str]


@dataclass
class _Input:
    """User data brought into one of the two forms the preprocessors read."""

    data: pd.DataFrame | list[ImageRecord]
    from_array: bool = False
    dtype: str = "float32"  # dtype of an input array, restored on output
    ndim: int = 2  # ndim of an input array, restored on output


class AutoEncoder(TransformerMixin, BaseEstimator):
    """An autoencoder for tables and images with the scikit-learn interface.

    ``fit`` learns the preprocessing (scaling, imputation, one-hot categories, image
    size and channels) from the training data and trains the network; every later
    call applies the same preprocessing. Inputs can be a DataFrame, a 2-D array of
    rows, an image array (N, H, W) or (N, H, W, C) with channels last, a list of
    :class:`~aelab.data.ImageRecord`, or a path to a CSV, Parquet, NPY or NPZ file,
    an image file or a folder of images.

    Args:
        kind: "dense" (an MLP), "conv" (convolutional, images only) or "auto"
            (conv for images, dense for tables).
        latent_dim: Size of the code, the length of each embedding; "auto" picks a
            quarter of the preprocessed width, between 2 and 16.
        hidden_dims: Widths of the dense hidden layers. A dense model uses all of
            them (default (256, 128)); a conv model uses the last as the width of
            the dense layer after its convolutions (default 256).
        variational: Train a variational autoencoder with a Gaussian posterior.
        beta: Weight of the KL term for variational models.
        noise: Input corruption for denoising training, "KIND:AMOUNT" with KIND
            gaussian, salt_pepper or mask (see :class:`aelab.training.Noise`).
        loss: Reconstruction loss: "mse", "l1", "bce" (inputs in [0, 1] only), or
            "auto": BCE for variational models on data in [0, 1], else MSE. A VAE on
            [0, 1] pixels with summed MSE tends to decode every code to the mean
            image, because that MSE is small next to the KL term.
        epochs: Maximum number of passes over the training rows.
        batch_size: Samples per optimiser step.
        learning_rate: Adam's step size.
        weight_decay: Adam's L2 penalty.
        validation_fraction: Share of the rows held out for early stopping and
            for choosing the best epoch; 0 trains on all rows.
        patience: Stop after this many epochs without a lower validation loss;
            None trains for all epochs.
        scaling: Table column scaling: "standard", "minmax" or "none".
        max_categories: Most distinct values a text column may have before it is
            rejected as free text.
        image_size: (height, width) to resize images to; by default all training
            images must share one size.
        random_state: Seed for weights, the split, shuffling and noise. A fixed
            seed gives identical weights on the same machine and software.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        compile: Train through ``torch.compile`` (its inductor backend). The
            first steps spend seconds to a minute compiling. The saved model has
            the same format and keys as without it. A failed build raises
            :class:`~aelab.errors.CompileFailedError` instead of falling back.
        precision: "float32", or "bf16-mixed" to train under bfloat16 autocast
            with float32 weights; "bf16-mixed" needs a CUDA device with bfloat16
            support and is rejected on the CPU. Validation and inference run in
            float32 either way.
        verbose: 0 is silent; 1 shows progress bars on stderr.
        checkpoint_dir: Folder for a checkpoint after every epoch; ``fit(X,
            resume=True)`` continues from it.

    Attributes:
        model_: The trained :class:`~aelab.models.Autoencoder` (a torch module).
        preprocessor_: The fitted table or image preprocessor.
        history_: One dict per epoch with its training and validation loss terms.
        best_epoch_: The epoch whose weights the model keeps.
        loss_: The reconstruction loss used, with "auto" resolved.
        n_features_in_: Values per sample seen in ``fit`` (columns, or pixels
            times channels).
        feature_names_in_: Column names, when ``fit`` was given a DataFrame.
        metadata_: Free-form JSON-serialisable notes saved with the model; the
            command line stores its identifier and dropped columns here.
    """

    def __init__(
        self,
        kind: Literal["auto", "dense", "conv"] = "auto",
        latent_dim: int | Literal["auto"] = 8,
        hidden_dims: Sequence[int] | None = None,
        variational: bool = False,
        beta: float = 1.0,
        noise: str | None = None,
        loss: Literal["auto", "mse", "l1", "bce"] = "auto",
        epochs: int = 100,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = 10,
        scaling: Literal["standard", "minmax", "none"] = "standard",
        max_categories: int = 50,
        image_size: tuple[int, int] | None = None,
        random_state: int | None = None,
        device: str = "auto",
        compile: bool = False,
        precision: Literal["float32", "bf16-mixed"] = "float32",
        verbose: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.kind = kind
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.variational = variational
        self.beta = beta
        self.noise = noise
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.scaling = scaling
        self.max_categories = max_categories
        self.image_size = image_size
        self.random_state = random_state
        self.device = device
        self.compile = compile
        self.precision = precision
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir

    # ---- training ------------------------------------------------------------

    def fit(self, X: Data, y: Any = None, resume: bool = False) -> AutoEncoder:
        """Learn the preprocessing and train the network on X.

        Args:
            X: Training data in any supported form (see the class docstring).
            y: Ignored; present for scikit-learn pipelines.
            resume: Continue from the checkpoint in ``checkpoint_dir``.

        Returns:
            self, fitted.

        Raises:
            InvalidParameterError: A parameter is out of range.
            InvalidDataError: The data cannot be used as given.
            NonFiniteLossError: The loss diverged; the model keeps the weights of
                the last finished epoch.
        """
        self._validate_params()
        if resume and self.checkpoint_dir is None:
            raise InvalidParameterError("resume=True needs checkpoint_dir to be set")
        given = self._read(X)
        self.metadata_: dict[str, Any] = {}
        self.preprocessor_, matrix = self._fit_preprocessor(given)
        self.n_features_in_ = int(np.prod(matrix.shape[1:]))
        if isinstance(given.data, pd.DataFrame) and not given.from_array:
            self.feature_names_in_ = np.asarray(given.data.columns, dtype=object)
        low = float(matrix.min(initial=0.0)) if matrix.size else 0.0
        high = float(matrix.max(initial=0.0)) if matrix.size else 0.0
        self.loss_ = self._resolve_loss(low, high)
        self._check_loss_range(float(matrix.min()), float(matrix.max()))

        self.seed_ = self._resolve_seed(resume)
        trainer = self._make_trainer(matrix.shape[1:], low, high)
        x = torch.from_numpy(self._model_input(matrix))
        try:
            trainer.fit(x, resume=resume)
        finally:
            self._keep_training_state(trainer)
        return self

    def fit_stream(self, dataset: ParquetDataset, resume: bool = False) -> AutoEncoder:
        """Train a dense model on a Parquet table without loading it into memory.

        One pass over ``dataset`` fits the preprocessing, and each epoch reads the
        table again in shuffled record batches (see :mod:`aelab.data.stream`).
        Memory stays bounded by a few record batches plus the validation rows,
        which are at most about 50,000. The imputation medians come from a random
        sample of the rows, so on large tables they are estimates.

        Args:
            dataset: The table, with the id and dropped columns excluded.
            resume: Continue from the checkpoint in ``checkpoint_dir``.

        Returns:
            self, fitted.
        """
        self._validate_params()
        if resume and self.checkpoint_dir is None:
            raise InvalidParameterError("resume=True needs checkpoint_dir to be set")
        if self.kind == "conv":
            raise InvalidParameterError(
                "kind='conv' needs images, but streaming reads tables; use "
                "kind='dense' (or 'auto')"
            )
        self.seed_ = self._resolve_seed(resume)
        fitted = fit_preprocessor(
            dataset,
            self.scaling,
            self.max_categories,
            self.seed_,
            float(self.validation_fraction),
        )
        self.metadata_ = {}
        self.preprocessor_ = fitted.preprocessor
        self.n_features_in_ = len(fitted.low)
        self.feature_names_in_ = np.asarray(dataset.columns, dtype=object)
        low, high = float(fitted.low.min()), float(fitted.high.max())
        self.loss_ = self._resolve_loss(min(low, 0.0), max(high, 0.0))
        self._check_loss_range(low, high)

        trainer = self._make_trainer((len(fitted.low),), min(low, 0.0), max(high, 0.0))
        context = trainer.dist
        per_rank = -(-self.batch_size // context.world_size)

        def batches(generator: torch.Generator) -> Any:
            return training_batches(
                dataset,
                fitted.preprocessor,
                per_rank,
                generator,
                self.seed_,
                fitted.probability,
                context.rank,
                context.world_size,
            )

        try:
            trainer.fit_stream(
                batches,
                torch.from_numpy(fitted.validation),
                torch.from_numpy(fitted.low),
                torch.from_numpy(fitted.high),
                # Without epochs, so that a resumed run may train for more.
                dataset.fingerprint()
                | {"train": asdict(trainer.config) | {"epochs": None}},
                resume=resume,
            )
        finally:
            self._keep_training_state(trainer)
        return self

    def _make_trainer(
        self, sample_shape: tuple[int, ...], low: float, high: float
    ) -> Trainer:
        self.device_ = self._resolve_device()
        if self.precision == "bf16-mixed":
            _check_bf16_device(self.device_)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_)
            self.model_ = self._build_model(sample_shape, low, high).to(self.device_)
        return Trainer(
            self.model_,
            self._train_config(),
            self.device_,
            progress=self.verbose > 0,
            checkpoint_dir=Path(self.checkpoint_dir) if self.checkpoint_dir else None,
            compile=bool(self.compile),
            precision=self.precision,
        )

    def _keep_training_state(self, trainer: Trainer) -> None:
        # Also on a diverged loss: the model then keeps its last good weights.
        self.history_ = list(trainer.state.history)
        self.best_epoch_ = trainer.state.best_epoch
        self.stopped_early_ = trainer.state.stopped_early
        self.model_.eval()

    def _validate_params(self) -> None:
        def check(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise InvalidParameterError(f"{name} must be {allowed}, got {value!r}")

        def is_int(value: Any, low: int) -> bool:
            return (
                isinstance(value, int | np.integer)
                and not isinstance(value, bool)
                and value >= low
            )

        check("kind", self.kind in KINDS, f"one of {KINDS}")
        check(
            "latent_dim",
            self.latent_dim == "auto" or is_int(self.latent_dim, 1),
            "a positive integer or 'auto'",
        )
        check("epochs", is_int(self.epochs, 1), "a positive integer")
        check("batch_size", is_int(self.batch_size, 1), "a positive integer")
        check("learning_rate", _positive(self.learning_rate), "a positive number")
        check("weight_decay", _positive(self.weight_decay, 0.0), "a number >= 0")
        check("beta", _positive(self.beta, 0.0), "a number >= 0")
        check(
            "validation_fraction",
            _positive(self.validation_fraction, 0.0) and self.validation_fraction < 1,
            "in [0, 1)",
        )
        check(
            "patience",
            self.patience is None or is_int(self.patience, 1),
            "None or a positive integer",
        )
        check("loss", self.loss in ("auto", *LOSSES), f"one of {('auto', *LOSSES)}")
        check("scaling", self.scaling in SCALINGS, f"one of {SCALINGS}")
        check("max_categories", is_int(self.max_categories, 1), "a positive integer")
        check(
            "hidden_dims",
            self.hidden_dims is None
            or (
                len(self.hidden_dims) > 0
                and all(is_int(h, 1) for h in self.hidden_dims)
            ),
            "None or a non-empty list of positive integers",
        )
        check(
            "image_size",
            self.image_size is None
            or (
                len(self.image_size) == 2 and all(is_int(s, 1) for s in self.image_size)
            ),
            "None or (height, width) in pixels",
        )
        check("compile", isinstance(self.compile, bool), "True or False")
        check("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}")
        if self.noise is not None:
            Noise.parse(self.noise)

    def _resolve_seed(self, resume: bool = False) -> int:
        if self.random_state is None:
            # A resumed run reuses the seed its checkpoint was made with.
            saved = saved_seed(Path(self.checkpoint_dir)) if resume else None
            if saved is not None:
                return saved
            # Under torchrun every rank must draw the same seed: rank 0's.
            return broadcast_int(int(np.random.default_rng().integers(2**31 - 1)))
        return int(self.random_state)

    def _resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise InvalidParameterError(
                f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}"
            ) from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidParameterError(
                f"device={self.device!r} but CUDA is not available on this machine; "
                "use device='cpu' or 'auto'"
            )
        return device

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=float(self.learning_rate),
            weight_decay=float(self.weight_decay),
            validation_fraction=float(self.validation_fraction),
            patience=self.patience,
            loss=self.loss_,
            beta=float(self.beta),
            noise=self.noise,
            seed=self.seed_,
        )

    def _fit_preprocessor(self, given: _Input) -> tuple[Preprocessor, np.ndarray]:
        """Fit the table or image preprocessor and return it with the matrix."""
        data, from_array = given.data, given.from_array
        if isinstance(data, pd.DataFrame):
            if self.kind == "conv":
                raise InvalidParameterError(
                    f"kind='conv' needs images, but got a table with {data.shape[1]} "
                    "columns; use kind='dense' (or 'auto') for tables"
                )
            table = TablePreprocessor(self.scaling, self.max_categories)
            return table, table.fit_transform(data, from_array=from_array)
        size = tuple(int(s) for s in self.image_size) if self.image_size else None
        images = ImagePreprocessor(size).fit(data, from_array=from_array)
        images.array_dtype = given.dtype
        self.preprocessor_ = images
        return images, self._to_matrix(given)

    def _build_model(
        self, sample_shape: tuple[int, ...], low: float, high: float
    ) -> Autoencoder:
        """Build the network for samples of ``sample_shape`` with values in
        [low, high]; low and high include 0, as ``min(initial=0)`` does."""
        unit = bool(low >= 0.0 and high <= 1.0)
        images = isinstance(self.preprocessor_, ImagePreprocessor)
        latent_dim = self.latent_dim
        n_features = int(np.prod(sample_shape))
        if latent_dim == "auto":
            latent_dim = int(np.clip(n_features // 4, 2, 16))
        activation = (
            "sigmoid" if self.loss_ == "bce" or (images and unit) else "identity"
        )
        if images and self.kind in ("auto", "conv"):
            channels, height, width = self.preprocessor_.shape
            hidden = self.hidden_dims[-1] if self.hidden_dims else 256
            return ConvAutoencoder(
                channels,
                height,
                width,
                latent_dim,
                hidden_dim=int(hidden),
                variational=self.variational,
                output_activation=activation,
            )
        return DenseAutoencoder(
            n_features,
            latent_dim,
            hidden_dims=tuple(self.hidden_dims or (256, 128)),
            variational=self.variational,
            output_activation=activation,
        )

    def _resolve_loss(self, low: float, high: float) -> str:
        if self.loss != "auto":
            return self.loss
        unit = bool(low >= 0.0 and high <= 1.0)
        return "bce" if self.variational and unit else "mse"

    def _check_loss_range(self, low: float, high: float) -> None:
        """Reject BCE unless every value lies in [0, 1]."""
        if self.loss_ != "bce":
            return
        if low >= 0.0 and high <= 1.0:
            return
        if isinstance(self.preprocessor_, ImagePreprocessor):
            fix = "divide the pixels by their maximum (255 for 8-bit) or pass uint8"
        else:
            fix = "use scaling='minmax'"
        raise InvalidParameterError(
            f"loss='bce' needs every value in [0, 1], but the data spans "
            f"[{low:g}, {high:g}]; {fix}, or choose loss='mse'"
        )

    # ---- data conversion -----------------------------------------------------

    def _read(self, X: Data) -> _Input:
        """Bring any supported input into a DataFrame or a list of image records."""
        if isinstance(X, str | os.PathLike):
            X = load(X, progress=self.verbose > 0)
        if isinstance(X, pd.DataFrame):
            return _Input(X)
        if isinstance(X, list) and X and all(isinstance(r, ImageRecord) for r in X):
            return _Input(X)
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        if hasattr(X, "tocsr") or hasattr(X, "sparse"):
            raise InvalidDataError(
                "sparse matrices are not supported; pass a dense array "
                "(X.toarray()) or a DataFrame"
            )
        array = np.asarray(X)
        if array.ndim == 1:
            raise InvalidDataError(
                f"expected a 2-D array of rows or an image array, got a 1-D array of "
                f"shape {array.shape}; use X.reshape(-1, 1) for one feature or "
                "X.reshape(1, -1) for one sample"
            )
        if array.ndim == 2:
            return _Input(array_to_frame(array), True, str(array.dtype), 2)
        return _Input(array_to_records(array), True, str(array.dtype), array.ndim)

    def _to_matrix(self, given: _Input) -> np.ndarray:
        pre, data = self.preprocessor_, given.data
        if isinstance(pre, TablePreprocessor):
            if not isinstance(data, pd.DataFrame):
                raise InvalidDataError(
                    "this model was trained on a table, but got images; pass rows "
                    f"with the columns {pre.input_names[:5]}..."
                )
            if given.from_array and data.shape[1] != len(pre.input_names):
                raise InvalidDataError(
                    f"expected {len(pre.input_names)} columns, got an array with "
                    f"{data.shape[1]}; pass rows shaped like the training data"
                )
            if given.from_array != pre.from_array and data.shape[1] == len(
                pre.input_names
            ):
                # An array for a model fitted on a DataFrame, or the reverse: match
                # columns by position, as scikit-learn does.
                data = data.set_axis(pre.input_names, axis=1)
            return pre.transform(data)
        if isinstance(data, pd.DataFrame):
            raise InvalidDataError(
                f"this model was trained on {pre.height}x{pre.width} images with "
                f"{pre.channels} channels, but got a table; pass images"
            )
        return pre.transform(data)

    def _model_input(self, matrix: np.ndarray) -> np.ndarray:
        if isinstance(self.model_, DenseAutoencoder):
            return matrix.reshape(len(matrix), -1)  # (N, C, H, W) -> (N, C*H*W)
        return matrix

    def _from_model_output(self, x_hat: np.ndarray, like: _Input | None) -> Any:
        """Convert model-space outputs to the form of ``like``.

        Without ``like`` (decoding codes), the output takes the training data's
        form: a DataFrame or row array for tables, an image array for images.
        """
        pre = self.preprocessor_
        as_array = like.from_array if like is not None else pre.from_array
        if isinstance(pre, TablePreprocessor):
            frame = pre.inverse_transform(x_hat)
            if not as_array:
                return frame
            single = like is not None and like.dtype == "float32"
            return frame.to_numpy(dtype=np.float32 if single else np.float64)
        x_hat = x_hat.reshape(len(x_hat), *pre.shape)  # (N, C, H, W)
        templates = like.data if like is not None else None
        records = pre.inverse_transform(x_hat, templates)  # type: ignore[arg-type]
        if like is not None and not as_array:
            return records
        pixels = np.stack([r.pixels for r in records])  # (N, H, W, C)
        squeeze = like.ndim == 3 if like is not None else pixels.shape[-1] == 1
        if squeeze:
            pixels = pixels[..., 0]  # (N, H, W, 1) -> (N, H, W)
        return _restore_dtype(pixels, like.dtype if like else pre.array_dtype)

    # ---- inference -----------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "this AutoEncoder is not fitted yet; call fit(X) or "
                "AutoEncoder.load(path) first"
            )

    def _batches(self, x: np.ndarray, fn: Any) -> np.ndarray:
        self.model_.eval()
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(x), PREDICT_BATCH_SIZE):
                batch = torch.from_numpy(x[start : start + PREDICT_BATCH_SIZE])
                outputs.append(fn(batch.to(self.device_)).cpu().numpy())
        return np.concatenate(outputs) if outputs else np.empty((0,))

    def _prepare(self, X: Data) -> tuple[np.ndarray, _Input]:
        self._check_fitted()
        given = self._read(X)
        return self._model_input(self._to_matrix(given)), given

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Return the names of the embedding columns, z0 to z{latent_dim - 1}."""
        self._check_fitted()
        return np.asarray(
            [f"z{i}" for i in range(self.model_.latent_dim)], dtype=object
        )

    def transform(self, X: Data) -> np.ndarray:
        """Encode X into embeddings of shape (N, latent_dim), float32.

        For variational models the embedding is the posterior mean.
        """
        x, _ = self._prepare(X)
        return self._batches(x, self.model_.encode)

    def inverse_transform(self, Z: np.ndarray) -> Any:
        """Decode embeddings of shape (N, latent_dim) back to data.

        Returns:
            A DataFrame or row array for table models (as trained), an image array
            (N, H, W[, C]) for image models.
        """
        self._check_fitted()
        z = np.asarray(Z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.model_.latent_dim:
            raise InvalidDataError(
                f"expected codes of shape (N, {self.model_.latent_dim}), got {z.shape}"
            )
        return self._from_model_output(self._batches(z, self.model_.decode), None)

    def reconstruct(self, X: Data) -> Any:
        """Encode and decode X, returning it in the form it came in."""
        x, data = self._prepare(X)
        x_hat = self._batches(x, lambda b: self.model_(b).x_hat)
        return self._from_model_output(x_hat, data)

    def reconstruction_error(self, X: Data) -> np.ndarray:
        """Return each sample's reconstruction loss, averaged over its features.

        The loss is the one used in training (MSE, L1 or BCE), computed on the
        preprocessed values. Higher means worse reconstructed.
        """
        errors = self.element_errors(X)
        return errors.reshape(len(errors), -1).mean(axis=1, dtype=np.float64)

    def element_errors(self, X: Data) -> np.ndarray:
        """Return the reconstruction loss of every preprocessed value.

        Returns:
            float32 array (N, F) for dense models, where the F columns are
            ``preprocessor_.feature_names`` for tables, or (N, C, H, W) for conv
            models at the model's image size.
        """
        x, _ = self._prepare(X)

        def per_element(batch: torch.Tensor) -> torch.Tensor:
            return element_loss(self.model_(batch), batch, self.loss_)

        return self._batches(x, per_element)

    def score_samples(self, X: Data) -> np.ndarray:
        """Return the negative reconstruction error per sample.

        This follows scikit-learn's convention that a higher score means more
        normal; use :meth:`reconstruction_error` for the error itself.
        """
        return -self.reconstruction_error(X)

    def score(self, X: Data, y: Any = None) -> float:
        """Return the mean of :meth:`score_samples`, so higher is better."""
        return float(self.score_samples(X).mean())

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> Any:
        """Draw new data from a variational model by decoding z ~ N(0, I)."""
        self._check_fitted()
        if not self.model_.variational:
            raise InvalidParameterError(
                "sample() needs a variational model; fit with variational=True"
            )
        generator = torch.Generator().manual_seed(
            int(np.random.default_rng(random_state).integers(2**31 - 1))
        )
        z = torch.randn(n_samples, self.model_.latent_dim, generator=generator)
        return self.inverse_transform(z.numpy())

    def interpolate(self, a: Data, b: Data, steps: int = 8) -> Any:
        """Decode ``steps`` evenly spaced points between the codes of a and b.

        a and b each hold one sample, in any form ``transform`` accepts.
        """
        za, zb = self.transform(a), self.transform(b)
        if len(za) != 1 or len(zb) != 1:
            raise InvalidDataError(
                f"interpolate() takes one sample each, got {len(za)} and {len(zb)}"
            )
        weights = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        return self.inverse_transform((1 - weights) * za + weights * zb)

    # ---- saving --------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the model as a folder with model.safetensors and config.json."""
        from .serialization import save_model

        return save_model(self, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "auto") -> AutoEncoder:
        """Load a model saved by :meth:`save`; never unpickles anything."""
        from .serialization import load_model

        return load_model(Path(path), device=device)


def _positive(value: Any, low: float | None = None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return False
    value = float(value)
    return bool(np.isfinite(value) and (value > 0 if low is None else value >= low))


def _check_bf16_device(device: torch.device) -> None:
    """Reject bfloat16 autocast on a CPU, and on a GPU without bfloat16 support.

    On the CPU, bfloat16 autocast trained the dense (256, 128) model on 500
    columns at 0.98x to 1.08x the float32 samples/s in four runs, two of them by
    benchmarks/bench_scale.py (Xeon with AMX-BF16, 1 thread, batch 128, torch
    2.13). A gain that small does not pay for the lost precision, so the CPU is
    rejected.
    """
    if device.type != "cuda":
        raise InvalidParameterError(
            f"precision='bf16-mixed' needs a CUDA device, but training runs on "
            f"{device.type}; use precision='float32' or device='cuda' (on the "
            "command line, --precision float32 or --device cuda)"
        )
    if not torch.cuda.is_bf16_supported():
        raise InvalidParameterError(
            f"precision='bf16-mixed' needs a GPU with bfloat16 support, but "
            f"{torch.cuda.get_device_name(device)} has none; use "
            "precision='float32' (--precision float32)"
        )


def _restore_dtype(pixels: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    if dtype == "uint16":
        return np.rint(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)
    return pixels.astype(np.float32)
