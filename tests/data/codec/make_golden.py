"""Regenerate the golden codec files: ``python tests/data/codec/make_golden.py``.

Trains a tiny codec for 20 steps on crops of scikit-learn's ``china.jpg``, then
compresses a 40x56 corner of ``flower.jpg`` with it. The test suite decodes
``golden.aelc`` and compares the pixels with ``golden.png`` byte for byte, so any
change to the decoder, the tables or the container format shows up there.
Regenerating is only right after a deliberate format change.
"""

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from aelab.codec.image import compress_image, decompress_image
from aelab.codec.store import load_codec, save_codec
from aelab.codec.train import train_codec
from aelab.data.images import ImageRecord, write_image

HERE = Path(__file__).parent


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "china.png"
        Image.fromarray(load_sample_image("china.jpg")).save(photo)
        model, summary = train_codec(
            [photo],
            steps=20,
            crop_size=64,
            batch_size=4,
            kind="gdn",
            hidden=8,
            latent=16,
        )
    summary["command"] = "python tests/data/codec/make_golden.py"
    shutil.rmtree(HERE / "tiny", ignore_errors=True)
    save_codec(model, HERE / "tiny", summary, model_id="golden-tiny")
    codec = load_codec(HERE / "tiny")
    pixels = load_sample_image("flower.jpg")[:40, :56].astype(np.float32) / 255
    result = compress_image(codec, ImageRecord(pixels, 8, "flower"), quality=4)
    (HERE / "golden.aelc").write_bytes(result.data)
    write_image(HERE / "golden.png", decompress_image(codec, result.data))


if __name__ == "__main__":
    main()
