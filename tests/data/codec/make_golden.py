"""Regenerate the golden codec files: ``python tests/data/codec/make_golden.py``.

Trains a tiny block codec (KLT start, hidden width 8) for 20 steps on crops of
scikit-learn's ``china.jpg``, counts its context tables on the same photo, then
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
from aelab.codec.train import table_samples, train_codec
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
            kind="block",
            hidden=8,
        )
        summary["command"] = "python tests/data/codec/make_golden.py"
        shutil.rmtree(HERE / "tiny", ignore_errors=True)
        samples = table_samples(model, [photo])
        # Four context classes keep the test model small.
        save_codec(
            model, HERE / "tiny", summary, "golden-tiny", samples, edges=(4, 16, 64)
        )
    codec = load_codec(HERE / "tiny")
    pixels = load_sample_image("flower.jpg")[:40, :56].astype(np.float32) / 255
    result = compress_image(codec, ImageRecord(pixels, 8, "flower"), quality=4)
    (HERE / "golden.aelc").write_bytes(result.data)
    write_image(HERE / "golden.png", decompress_image(codec, result.data))


if __name__ == "__main__":
    main()
