"""Digits one-class: dense AnomalyDetector ensembles against PCA, over 3 splits.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/research_image_detector.py 0,1,2,3,4,5,6,7,8,9

For each split seed (0, 1, 2) and each digit, every configuration fits a
3-model dense detector with ``normalize=False`` on the training images of that
digit and scores all test images (``digit_tasks`` in bench_anomaly.py). Prints
one line per task and the mean AUROC of each configuration.
"""

import sys
import time

import numpy as np
import torch
from bench_anomaly import digit_tasks
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from aelab import AnomalyDetector

CONFIGS = {
    "z16 g0.2": {"latent_dim": 16, "noise": "gaussian:0.2"},
    "z8 g0.2": {"latent_dim": 8, "noise": "gaussian:0.2"},
    "z8 g0.4": {"latent_dim": 8, "noise": "gaussian:0.4"},
}


def main() -> None:
    torch.set_num_threads(1)
    digits = [int(a) for a in sys.argv[1].split(",")]
    results: dict[str, list[float]] = {}
    tasks = [task for seed in (0, 1, 2) for task in digit_tasks(seed, digits)]
    for digit, train, test, labels in tasks:
        flat_train = train.reshape(len(train), -1)
        flat_test = test.reshape(len(test), -1)
        pca = PCA(0.9, svd_solver="full").fit(flat_train)
        restored = pca.inverse_transform(pca.transform(flat_test))
        row = {"pca": roc_auc_score(labels, ((flat_test - restored) ** 2).sum(1))}
        for name, config in CONFIGS.items():
            started = time.perf_counter()
            detector = AnomalyDetector(
                n_models=3,
                normalize=False,
                hidden_dims=(256, 128),
                latent_dim=config["latent_dim"],
                autoencoder_params={
                    "kind": "dense",
                    "noise": config["noise"],
                    "epochs": 200,
                    "patience": 20,
                    "batch_size": 32,
                },
                random_state=0,
                device="cpu",
            ).fit(train)
            row[name] = roc_auc_score(labels, detector.score(test))
            row[name + " s"] = time.perf_counter() - started
        print(digit, {k: round(v, 4) for k, v in row.items()}, flush=True)
        for key, value in row.items():
            results.setdefault(key, []).append(value)
    print({k: round(float(np.mean(v)), 4) for k, v in results.items()})


if __name__ == "__main__":
    main()
