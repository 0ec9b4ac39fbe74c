"""Table compression: aelab's code-plus-residual files against PCA, zstd and zlib.

Run from the repository root::

    python benchmarks/bench_tables.py --out benchmarks/results/tables.json

Each table is split 70/30 with a fixed seed. aelab's autoencoder and PCA are fitted
on the 70%, and the 30% is compressed at several tolerances. Every method keeps
each standardised value within the tolerance (the same maximum error), so the file
sizes compare directly:

- aelab: ``aelab.codec.tables.compress_table``, the whole ``.aelc`` file.
- PCA + quantisation: the same planner and coder with PCA as the model (code of
  the same size as aelab's, rounded, residual from the PCA reconstruction),
  counting the same header as aelab's file.
- quantised + zstd: the standardised values rounded to the same grid, as int32,
  compressed by zstd level 19. The same grid under aelab's own coder (no model)
  is the "quantised + range coder" row.
- float32 + zstd: the raw values as float32, zstd level 19, lossless.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zstandard
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.decomposition import PCA

from aelab import AutoEncoder
from aelab.codec import tables

ADBENCH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "adbench"
TOLERANCES = (0.4, 0.2, 0.1, 0.05, 0.02)


def datasets() -> dict[str, np.ndarray]:
    sets = {
        "digits": load_digits().data,
        "breast cancer": load_breast_cancer().data,
        "wine": load_wine().data,
    }
    for name, file in (("satellite", "30_satellite"), ("cardio", "6_cardio"),
                       ("letter", "20_letter"), ("shuttle", "32_shuttle")):  # fmt: skip
        path = ADBENCH / f"{file}.npz"
        if path.is_file():
            sets[name] = np.load(path)["X"].astype(np.float64)
        else:
            print(f"skipping {name}: {path} is absent")
    return sets


def zstd_bytes(array: np.ndarray) -> int:
    return len(zstandard.ZstdCompressor(level=19).compress(array.tobytes()))


def run(name: str, data: np.ndarray, work: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    split = int(0.7 * len(data))
    train, test = data[order[:split]], data[order[split:]]
    latent = max(2, min(16, data.shape[1] // 3))
    start = time.perf_counter()
    estimator = AutoEncoder(latent_dim=latent, epochs=200, random_state=seed)
    estimator.fit(train).save(work / name)
    fit_seconds = time.perf_counter() - start
    model = tables.load_table_model(work / name)
    pre = estimator.preprocessor_
    columns = pre.input_names
    x_train = pre.transform(pd.DataFrame(train, columns=columns))
    x_test = pre.transform(pd.DataFrame(test, columns=columns))
    pca = PCA(latent, random_state=seed).fit(x_train)
    pca_codes = pca.transform(x_test)

    def pca_predict(symbols: np.ndarray, steps: np.ndarray) -> np.ndarray:
        codes = symbols.astype(np.float32) * steps[None, :]
        return pca.inverse_transform(codes).astype(np.float32)

    rows = []
    for tolerance in TOLERANCES:
        start = time.perf_counter()
        result = tables.compress_table(model, test, tolerance)
        seconds = time.perf_counter() - start
        decoded = tables.decompress_table(model, result.data)
        restored = pre.transform(pd.DataFrame(decoded, columns=columns))
        header = len(result.data) - len(tables_payload(result.data))
        symbols, steps, use, residual, pca_restored = tables.plan(
            x_test, pca_codes, pca_predict, tolerance
        )
        streams = [symbols[:, d] for d in range(symbols.shape[1])]
        streams += [residual[:, f] for f in range(residual.shape[1])]
        pca_bytes = header + 8 + 4 * len(steps) + len(tables.code_streams(streams))
        grid = np.round(x_test / (2 * tolerance)).astype(np.int32)
        grid_coded = tables.code_streams([grid[:, f] for f in range(grid.shape[1])])
        rows.append(
            {
                "tolerance": tolerance,
                "aelab bytes": len(result.data),
                "aelab rms (scaled)": rms(restored - x_test),
                "aelab max (scaled)": float(np.abs(restored - x_test).max()),
                "aelab columns predicted": int(
                    round(len(columns) * result_share(result.data, model))
                ),
                "aelab seconds": round(seconds, 3),
                "pca bytes": pca_bytes,
                "pca rms (scaled)": rms(pca_restored - x_test),
                "quantised + range coder bytes": header + 8 + len(grid_coded),
                "quantised + zstd bytes": zstd_bytes(grid),
                "grid rms (scaled)": rms(grid * (2 * tolerance) - x_test),
            }
        )
    return {
        "rows": len(test),
        "columns": data.shape[1],
        "code size": latent,
        "fit seconds": round(fit_seconds, 1),
        "float32 bytes": test.astype(np.float32).nbytes,
        "float32 + zstd bytes": zstd_bytes(test.astype(np.float32)),
        "results": rows,
    }


def tables_payload(data: bytes) -> bytes:
    from aelab.codec.container import CompressedImage

    return CompressedImage.from_bytes(data).latent


def result_share(data: bytes, model: tables.TableModel) -> float:
    """Return the share of model columns coded as residuals from the prediction."""
    payload = tables_payload(data)
    dims, columns, _ = tables._HEADER.unpack_from(payload)
    base = tables._HEADER.size + 4 * dims + tables._STREAM.size * dims
    flags = [
        tables._STREAM.unpack_from(payload, base + tables._STREAM.size * i)[2]
        for i in range(columns)
    ]
    return float(np.mean(flags))


def rms(error: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(error, dtype=np.float64))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/tables.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in datasets().items():
            results[name] = run(name, data, Path(tmp), args.seed)
            print(name, json.dumps(results[name]["results"][2]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print_summary(results)


def print_summary(results: dict) -> None:
    print("| Set | rows x cols | tolerance | aelab | PCA | quantised + range coder "
          "| quantised + zstd | float32 + zstd | aelab / PCA |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        for row in r["results"]:
            print(
                f"| {name} | {r['rows']} x {r['columns']} | {row['tolerance']} | "
                f"{row['aelab bytes']:,} | {row['pca bytes']:,} | "
                f"{row['quantised + range coder bytes']:,} | "
                f"{row['quantised + zstd bytes']:,} | {r['float32 + zstd bytes']:,} | "
                f"{row['aelab bytes'] / row['pca bytes']:.2f} |"
            )


if __name__ == "__main__":
    main()
