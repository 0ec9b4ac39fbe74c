"""Exceptions and warnings raised by aelab.

Every exception derives from :class:`AelabError` and also from the built-in class a
caller would expect, so ``except ValueError`` keeps working.
"""

from sklearn.exceptions import NotFittedError as SklearnNotFittedError


class AelabError(Exception):
    """Base class of every error that aelab raises on purpose."""


class InvalidDataError(AelabError, ValueError):
    """The input data cannot be used as given; the message explains how to fix it."""


class InvalidParameterError(AelabError, ValueError):
    """A constructor or command-line parameter has a value outside its range."""


class NotFittedError(AelabError, SklearnNotFittedError):
    """A method that needs a trained model was called before ``fit``.

    It subclasses scikit-learn's NotFittedError (a ValueError and AttributeError),
    so scikit-learn's own checks recognise it.
    """


class ModelFormatError(AelabError, ValueError):
    """A model folder is missing, corrupt, or from an incompatible version."""


class CompileFailedError(AelabError, RuntimeError):
    """``torch.compile`` failed to build the training step, e.g. without a compiler."""


class NonFiniteLossError(AelabError, FloatingPointError):
    """Training stopped because the loss became NaN or infinite."""


class AelabWarning(UserWarning):
    """Base class of aelab's warnings: conditions a user can fix."""


class DataConversionWarning(AelabWarning):
    """Input data was converted (channels, size, unseen categories) to fit the model."""
