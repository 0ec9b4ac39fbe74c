"""``aelab detect fit | score | drift``: anomaly detection by reconstruction error."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import ImageRecord, write_image, write_table
from ..data.images import resize
from ..data.stream import TableWriter, should_stream
from ..detection import AnomalyDetector, drift_test
from ..detection.detector import MIN_CALIBRATION_ROWS
from ..detection.io import check_detector_path
from ..errors import InvalidParameterError
from ..io_utils import check_output_path
from ..plots import heat_map_overlay, save_score_histogram
from .common import (
    HelpFormatter,
    add_model_argument,
    add_stream_option,
    check_not_input,
    inputs_for_model,
    parse_image_size,
    read_inputs,
    say,
    stream_inputs_for_model,
)

HELP = "anomaly detection: fit on normal data, score new data, test for drift"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect", help=HELP, description=HELP.capitalize() + "."
    )
    commands = parser.add_subparsers(dest="detect_command", metavar="COMMAND")
    commands.required = True
    _add_fit(commands)
    _add_score(commands)
    _add_drift(commands)


def _add_fit(commands: argparse._SubParsersAction) -> None:
    text = "train a detector on reference data that is mostly normal"
    p = commands.add_parser(
        "fit",
        help=text,
        description=text.capitalize() + ". The threshold is set on a held-out part "
        "of DATA at the false-positive rate --fpr (default 0.01), or from "
        "--contamination.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="reference data, as for 'aelab fit'")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="detector folder to write",
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--fpr", type=float, help="target false-positive rate, 0 to 1")
    rate.add_argument(
        "--contamination",
        type=float,
        help="expected share of anomalies in DATA, (0, 0.5]",
    )
    p.add_argument(
        "--n-models", type=int, default=3, help="autoencoders in the ensemble"
    )
    p.add_argument("--latent-dim", type=int, help="code size (default: automatic)")
    p.add_argument("--epochs", type=int, default=100, help="maximum epochs per model")
    p.add_argument(
        "--kind",
        choices=("auto", "dense", "conv"),
        default="auto",
        help="architecture; auto is conv for images, dense for tables",
    )
    p.add_argument("--image-size", metavar="HxW", help="resize images to this size")
    p.add_argument(
        "--id-column", metavar="COL", help="identifier column, not trained on"
    )
    p.add_argument(
        "--drop",
        metavar="COL",
        action="append",
        default=[],
        help="leave this column out (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(run=run_fit)


def _add_score(commands: argparse._SubParsersAction) -> None:
    text = "score data: higher scores are more anomalous"
    p = commands.add_parser(
        "score",
        help=text,
        description=text.capitalize() + ". Writes id, score, is_anomaly and, for "
        "tables, the columns that contribute most to each score.",
        formatter_class=HelpFormatter,
    )
    add_model_argument(p)
    p.add_argument("data", metavar="DATA", help="data to score")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="table to write: .parquet, .csv or .npy",
    )
    p.add_argument(
        "--id-column",
        metavar="COL",
        help="identifier column (default: the one given at 'detect fit')",
    )
    p.add_argument(
        "--top", type=int, default=3, help="contributing columns listed per row"
    )
    p.add_argument("--histogram", metavar="PNG", help="also write a score histogram")
    p.add_argument(
        "--maps",
        metavar="DIR",
        help="images only: write per-pixel anomaly heat maps here",
    )
    add_stream_option(p)
    p.set_defaults(run=run_score)


def _add_drift(commands: argparse._SubParsersAction) -> None:
    text = "test whether a new batch differs from the reference data"
    p = commands.add_parser(
        "drift",
        help=text,
        description=text.capitalize() + ": Kolmogorov-Smirnov tests on anomaly scores "
        "and on each embedding dimension, Bonferroni-corrected into one p-value.",
        formatter_class=HelpFormatter,
    )
    add_model_argument(p)
    p.add_argument("reference", metavar="REFERENCE", help="data known to be normal")
    p.add_argument("new", metavar="NEW", help="the batch to test")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run_drift)


def run_fit(args: argparse.Namespace) -> int:
    output = Path(args.output)
    check_detector_path(output)
    detector = AnomalyDetector(
        latent_dim=args.latent_dim,
        n_models=args.n_models,
        contamination=args.contamination,
        fpr=args.fpr,
        autoencoder_params={
            "kind": args.kind,
            "epochs": args.epochs,
            "image_size": parse_image_size(args.image_size),
        },
        random_state=args.seed,
        device=args.device,
        verbose=int(args.progress),
    )
    detector._validate_params()
    inputs = read_inputs(args.data, args.progress, args.id_column, args.drop)
    detector.fit(inputs.data)
    if detector.threshold_ is None:
        raise InvalidParameterError(
            f"{args.data!r} is too small to hold out {MIN_CALIBRATION_ROWS} samples "
            "for the threshold at --fpr; pass --contamination C instead, or more data"
        )
    for model in detector.models_:
        model.metadata_ = {
            "id_column": args.id_column,
            "dropped_columns": list(args.drop),
        }
    detector.save(output)
    threshold = "none" if detector.threshold_ is None else f"{detector.threshold_:.4g}"
    say(
        args,
        f"trained {len(detector.models_)} autoencoders; threshold {threshold} "
        f"(set on {len(detector.reference_scores_)} held-out samples); saved {output}",
    )
    return 0


def run_score(args: argparse.Namespace) -> int:
    output = check_output_path(Path(args.output))
    check_not_input(output, args.data)
    for extra in (args.histogram, args.maps):
        if extra:
            check_output_path(Path(extra))
    detector = AnomalyDetector.load(args.model)
    if should_stream(args.data, args.stream):
        if args.maps:
            raise InvalidParameterError(
                "--maps is for image data; tables get top_features"
            )
        return _score_stream(args, output, detector)
    inputs = inputs_for_model(
        detector.models_[0], args.data, args.progress, args.id_column
    )
    detection = detector.predict(inputs.data)
    frame = detection.to_frame()
    if inputs.ids is not None and inputs.id_name is not None:
        frame.insert(0, inputs.id_name, inputs.ids)
    images = isinstance(inputs.data, list)
    if not images:
        contributions = detector.feature_contributions(inputs.data)
        frame["top_features"] = _top_features(contributions, args.top)
    write_table(output, frame)
    if args.histogram:
        save_score_histogram(
            Path(args.histogram),
            detection.score,
            detection.threshold,
            detector.reference_scores_,
        )
    if args.maps:
        if not images:
            raise InvalidParameterError(
                "--maps is for image data; tables get top_features"
            )
        _write_maps(Path(args.maps), inputs.data, detector.anomaly_maps(inputs.data))
    flagged = int(detection.is_anomaly.sum())
    say(
        args,
        f"scored {len(frame)} samples, {flagged} above the threshold "
        f"{detection.threshold:.4g}; wrote {output}",
    )
    return 0


def _score_stream(
    args: argparse.Namespace, output: Path, detector: AnomalyDetector
) -> int:
    """Score a Parquet table batch by batch, appending to the output.

    Only the scores (8 bytes per row) stay in memory, for the histogram.
    """
    dataset, batches = stream_inputs_for_model(
        detector.models_[0], args.data, args.id_column
    )
    scores, flagged = [], 0
    with TableWriter(output, n_rows=dataset.n_rows) as writer:
        for inputs in batches:
            detection = detector.predict(inputs.data)
            frame = detection.to_frame()
            if inputs.ids is not None and inputs.id_name is not None:
                frame.insert(0, inputs.id_name, inputs.ids)
            contributions = detector.feature_contributions(inputs.data)
            frame["top_features"] = _top_features(contributions, args.top)
            writer.write(frame)
            scores.append(detection.score)
            flagged += int(detection.is_anomaly.sum())
    threshold = detector._threshold()
    if args.histogram:
        save_score_histogram(
            Path(args.histogram),
            np.concatenate(scores),
            threshold,
            detector.reference_scores_,
        )
    say(
        args,
        f"scored {writer.rows_written} samples, {flagged} above the threshold "
        f"{threshold:.4g}; wrote {output}",
    )
    return 0


def _top_features(contributions: pd.DataFrame, top: int) -> list[str]:
    names = np.asarray(contributions.columns, dtype=object)
    values = contributions.to_numpy()
    order = np.argsort(-values, axis=1)[:, :top]
    totals = values.sum(axis=1, keepdims=True)
    shares = np.take_along_axis(values, order, axis=1) / np.where(totals > 0, totals, 1)
    return [
        "; ".join(
            f"{names[j]} ({share:.0%})"
            for j, share in zip(row, row_shares, strict=True)
        )
        for row, row_shares in zip(order, shares, strict=True)
    ]


def _write_maps(folder: Path, records: list[ImageRecord], maps: np.ndarray) -> None:
    folder.mkdir(exist_ok=True)
    for record, heat in zip(records, maps, strict=True):
        heat_tensor = torch.from_numpy(np.ascontiguousarray(heat))[None]
        if heat.shape != record.size:
            heat_tensor = resize(heat_tensor, record.size)
        overlay = heat_map_overlay(record.pixels, heat_tensor[0].numpy())
        name = Path(record.name).stem + "_anomaly.png"
        write_image(folder / name, ImageRecord(overlay.astype(np.float32), 8, name))


def run_drift(args: argparse.Namespace) -> int:
    if not 0 < args.alpha < 1:
        raise InvalidParameterError(f"--alpha must be in (0, 1), got {args.alpha}")
    detector = AnomalyDetector.load(args.model)
    model = detector.models_[0]
    reference = inputs_for_model(model, args.reference, args.progress, None).data
    new = inputs_for_model(model, args.new, args.progress, None).data
    result = drift_test(detector, reference, new, args.alpha)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        verdict = "drift detected" if result.drift else "no drift detected"
        print(
            f"{verdict}: p = {result.p_value:.3g} (alpha {args.alpha:g}); "
            f"scores p = {result.score_p_value:.3g}, "
            f"embeddings p = {result.embedding_p_value:.3g}"
        )
    return 0
