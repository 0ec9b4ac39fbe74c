"""Tests of AnomalyDetector, drift tests and the ``aelab detect`` commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from aelab import AnomalyDetector, NotFittedError, drift_test
from aelab.cli.main import main
from aelab.detection import ThresholdNotSetError
from aelab.errors import DataConversionWarning, InvalidDataError, InvalidParameterError

FAST = {"epochs": 40, "batch_size": 64}


@pytest.fixture(scope="module")
def cancer_split() -> dict[str, object]:
    """Benign tumours as normal data, malignant ones as anomalies.

    Two thirds of the benign rows train; the test set is the other third plus
    every malignant row.
    """
    bunch = load_breast_cancer(as_frame=True)
    frame, malignant = bunch.data, bunch.target.to_numpy() == 0
    benign = np.flatnonzero(~malignant)
    np.random.default_rng(0).shuffle(benign)
    cut = 2 * len(benign) // 3
    train_rows, test_benign = benign[:cut], benign[cut:]
    test_rows = np.concatenate([test_benign, np.flatnonzero(malignant)])
    return {
        "train": frame.iloc[train_rows].reset_index(drop=True),
        "test": frame.iloc[test_rows].reset_index(drop=True),
        "labels": malignant[test_rows],
    }


@pytest.fixture(scope="module")
def cancer_detector(cancer_split) -> AnomalyDetector:
    detector = AnomalyDetector(autoencoder_params=FAST, device="cpu")
    return detector.fit(cancer_split["train"])


def test_malignant_tumours_score_higher(cancer_detector, cancer_split) -> None:
    scores = cancer_detector.score(cancer_split["test"])
    assert roc_auc_score(cancer_split["labels"], scores) > 0.9


def test_default_threshold_limits_false_positives(cancer_detector, cancer_split):
    detection = cancer_detector.predict(cancer_split["test"])
    normal = ~cancer_split["labels"]
    false_positive_rate = detection.is_anomaly[normal].mean()
    recall = detection.is_anomaly[~normal].mean()
    # The threshold comes from 24 held-out rows at a rate of 1/24, so it is noisy.
    assert false_positive_rate < 0.1
    assert recall > 5 * max(false_positive_rate, 0.02)
    assert detection.threshold == cancer_detector.threshold_


def test_infer_threshold_flags_at_most_fpr(cancer_detector, cancer_split) -> None:
    normal = cancer_split["train"]
    cancer_detector.infer_threshold(normal, fpr=0.05)
    flagged = cancer_detector.predict(normal).is_anomaly.mean()
    assert flagged <= 0.05
    assert flagged > 0


def test_score_samples_is_negative_score(cancer_detector, cancer_split) -> None:
    test = cancer_split["test"]
    assert np.array_equal(
        cancer_detector.score_samples(test), -cancer_detector.score(test)
    )


def test_contributions_sum_to_score(cancer_detector, cancer_split) -> None:
    test = cancer_split["test"].iloc[:20]
    contributions = cancer_detector.feature_contributions(test)
    assert list(contributions.columns) == list(test.columns)
    np.testing.assert_allclose(
        contributions.sum(axis=1), cancer_detector.score(test), rtol=1e-6
    )


def test_shifted_column_tops_contributions(cancer_detector, cancer_split) -> None:
    row = cancer_split["train"].iloc[[0]].copy()
    row["mean texture"] *= 3
    contributions = cancer_detector.feature_contributions(row).iloc[0]
    # "worst texture" is correlated with it, so it may rank first.
    assert "mean texture" in contributions.nlargest(2).index


def test_single_row_scores_as_in_batch(cancer_detector, cancer_split) -> None:
    test = cancer_split["test"]
    alone = cancer_detector.score(test.iloc[[7]])[0]
    # Batch sizes pick different matmul kernels, so the last bits may differ.
    assert alone == pytest.approx(cancer_detector.score(test)[7], rel=1e-5)


def test_save_load_keeps_scores(cancer_detector, cancer_split, tmp_path) -> None:
    from aelab import AnomalyDetector as Loader

    cancer_detector.save(tmp_path / "det")
    loaded = Loader.load(tmp_path / "det", device="cpu")
    test = cancer_split["test"]
    assert np.array_equal(loaded.score(test), cancer_detector.score(test))
    assert loaded.threshold_ == cancer_detector.threshold_


def test_drift_detects_shifted_batch(cancer_detector, cancer_split) -> None:
    reference = cancer_split["train"]
    shifted = reference.copy()
    shifted["mean radius"] += reference["mean radius"].std()
    same = drift_test(cancer_detector, reference.iloc[::2], reference.iloc[1::2])
    moved = drift_test(cancer_detector, reference.iloc[::2], shifted.iloc[1::2])
    assert not same.drift
    assert moved.drift
    assert moved.p_value < 0.01


def test_predict_before_fit_names_fit() -> None:
    with pytest.raises(NotFittedError, match=r"call fit\(X\)"):
        AnomalyDetector().predict(np.zeros((3, 2)))


def test_small_reference_needs_infer_threshold(cancer_split) -> None:
    tiny = cancer_split["train"].iloc[:30]
    detector = AnomalyDetector(n_models=1, autoencoder_params=FAST, device="cpu")
    detector.fit(tiny)
    assert detector.threshold_ is None
    with pytest.raises(ThresholdNotSetError, match=r"infer_threshold\(X_normal"):
        detector.predict(tiny)


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1])
def test_contamination_out_of_range(contamination) -> None:
    with pytest.raises(
        InvalidParameterError, match=r"contamination must be in \(0, 0.5\]"
    ):
        AnomalyDetector(contamination=contamination).fit(np.zeros((40, 3)))


def test_contamination_sets_threshold(cancer_split) -> None:
    train = cancer_split["train"]
    detector = AnomalyDetector(
        n_models=1, contamination=0.1, autoencoder_params=FAST, device="cpu"
    ).fit(train)
    assert detector.predict(train).is_anomaly.mean() == pytest.approx(0.1, abs=0.04)


def test_fpr_below_resolution_raises(cancer_detector, cancer_split) -> None:
    with pytest.raises(InvalidParameterError, match="smallest rate"):
        cancer_detector.infer_threshold(cancer_split["train"].iloc[:50], fpr=0.001)


def test_changed_columns_are_listed(cancer_detector, cancer_split) -> None:
    renamed = cancer_split["test"].rename(columns={"mean area": "area"})
    with pytest.raises(InvalidDataError, match=r"missing \['mean area'\].*\['area'\]"):
        cancer_detector.score(renamed)


def test_nan_where_training_had_none(cancer_detector, cancer_split) -> None:
    test = cancer_split["test"].iloc[:10].copy()
    test.loc[0, "mean area"] = np.nan
    with pytest.warns(DataConversionWarning, match="had none in training"):
        scores = cancer_detector.score(test)
    assert np.isfinite(scores).all()


def test_constant_column_gives_finite_scores(cancer_split) -> None:
    train = cancer_split["train"].assign(constant=5.0)
    detector = AnomalyDetector(n_models=1, autoencoder_params=FAST, device="cpu")
    detector.fit(train)
    test = cancer_split["test"].assign(constant=6.0)
    assert np.isfinite(detector.score(test)).all()


@pytest.mark.slow
def test_digit_one_class_beats_pca(digits) -> None:
    normal = digits.x_train[digits.y_train == 3]
    labels = digits.y_test != 3
    detector = AnomalyDetector(device="cpu").fit(normal)
    aelab_auc = roc_auc_score(labels, detector.score(digits.x_test))

    pca = PCA(0.9).fit(normal.reshape(len(normal), -1))
    rows = digits.x_test.reshape(len(digits.x_test), -1)
    pca_error = ((pca.inverse_transform(pca.transform(rows)) - rows) ** 2).mean(axis=1)
    assert aelab_auc > roc_auc_score(labels, pca_error)
    assert aelab_auc > 0.95

    maps = detector.anomaly_maps(digits.x_test[:5])
    assert maps.shape == (5, 8, 8)
    np.testing.assert_allclose(
        maps.mean(axis=(1, 2)), detector.score(digits.x_test[:5]), rtol=1e-5
    )


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip_on_mixed_csv(capsys, tmp_path) -> None:
    frame = load_breast_cancer(as_frame=True).data.iloc[:, :5].copy()
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    frame["site"] = np.where(np.arange(len(frame)) % 3 == 0, "north", "south")
    frame.loc[::7, "mean area"] = np.nan
    frame.to_csv(tmp_path / "ref.csv", index=False)
    new = frame.copy()
    new.loc[:4, "mean radius"] *= 4
    new.to_csv(tmp_path / "new.csv", index=False)

    det, out, hist = tmp_path / "det", tmp_path / "scores.csv", tmp_path / "hist.png"
    args = ["--id-column", "id", "--epochs", "30", "--n-models", "2"]
    assert _run(capsys, "detect", "fit", tmp_path / "ref.csv", "-o", det, *args)[0] == 0
    code, _, err = _run(
        capsys,
        "detect",
        "score",
        det,
        tmp_path / "new.csv",
        "-o",
        out,
        "--histogram",
        hist,
    )
    assert code == 0, err
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["id", "score", "is_anomaly", "top_features"]
    assert scores["is_anomaly"][:5].all()
    assert scores["top_features"][0].startswith("mean radius")
    assert Image.open(hist).format == "PNG"

    code, text, _ = _run(
        capsys,
        "detect",
        "drift",
        det,
        tmp_path / "ref.csv",
        tmp_path / "new.csv",
        "--json",
    )
    assert code == 0
    assert set(json.loads(text)) >= {"p_value", "drift", "score_p_value"}


def test_cli_image_maps(capsys, tmp_path, digits) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(digits.x_train[:120]):
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    det, maps = tmp_path / "det", tmp_path / "maps"
    fit_args = ["--epochs", "3", "--n-models", "1", "--contamination", "0.05"]
    assert _run(capsys, "detect", "fit", folder, "-o", det, *fit_args)[0] == 0
    code, _, err = _run(
        capsys, "detect", "score", det, folder, "-o", tmp_path / "s.csv", "--maps", maps
    )
    assert code == 0, err
    assert Image.open(maps / "000_anomaly.png").size == (8, 8)
    assert pd.read_csv(tmp_path / "s.csv")["file"][0] == "000.png"


def test_cli_detect_fit_rejects_both_rates(capsys, tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "detect",
                "fit",
                "x.csv",
                "-o",
                str(tmp_path / "d"),
                "--fpr",
                "0.1",
                "--contamination",
                "0.1",
            ]
        )
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_score_with_plain_model_fails(capsys, tmp_path) -> None:
    code, _, err = _run(
        capsys, "detect", "score", tmp_path, "x.csv", "-o", tmp_path / "s.csv"
    )
    assert code == 1
    assert "is not an aelab detector" in err


def test_cli_fit_on_tiny_data_suggests_contamination(capsys, tmp_path) -> None:
    data = tmp_path / "tiny.csv"
    load_breast_cancer(as_frame=True).data.iloc[:40].to_csv(data, index=False)
    code, _, err = _run(
        capsys, "detect", "fit", data, "-o", tmp_path / "d", "--epochs", "2"
    )
    assert code == 1
    assert "--contamination" in err
    assert not (tmp_path / "d").exists()
