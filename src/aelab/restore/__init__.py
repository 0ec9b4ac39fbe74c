"""Image restoration: denoising and colorization with small convolutional networks.

:class:`Restorer` loads a model folder (or the one bundled with aelab) and
restores images of any size tile by tile; :func:`fit_task` in
:mod:`aelab.restore.train` trains new models.
"""

from .io import load_restorer, save_restorer
from .pipeline import Restorer

__all__ = ["Restorer", "load_restorer", "save_restorer"]
