"""The ``texad predict`` subcommand: argument parsing only (the work is in :mod:`texad.predict.run`)."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parsers", "cmd_predict"]


def _settings(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--settings is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError("--settings must be a JSON object: a part of the method's config block")
    return value


def cmd_predict(args: argparse.Namespace) -> int:
    from .run import predict_folder

    record = predict_folder(
        args.model, args.images, args.out, normal=args.normal, train_images=args.train_images, fpr=args.fpr,
        settings=_settings(args.settings), device=args.device,
        batch_size=args.batch_size, weights_cache=args.weights_cache, overwrite=args.overwrite,
    )  # fmt: skip
    source = record["normal_source"]
    if source["kind"] == "run":
        how = f"the run's {source['rule']} thresholds, {source['file']}"
        how += ", optimistic" if source["optimistic"] else ""
    else:
        how = f"fpr {record['fpr']:g} on {record['n_normal']} {source['kind']} images"
    print(
        f"{record['method']}: {record['n_anomalous']} of {record['n_images']} images anomalous at image threshold "
        f"{record['image_threshold']:.6g} ({how}); outputs in {args.out}"
    )
    return 0


def add_parsers(sub) -> None:
    """Add ``predict`` to the subparsers ``sub`` of the ``texad`` command."""
    p = sub.add_parser(
        "predict",
        help="apply a trained model to a folder of new images: scores, maps, overlays, threshold",
        description="Score every image of --images with a trained model (a benchmark result JSON: its models and "
        "recorded settings; or a model file: the settings it was trained with) and threshold at --fpr on --normal "
        "(without --normal: the run's thresholds, <result>.threshold.json from texad threshold, when there).",
    )
    p.add_argument("--model", required=True, help="result JSON (results/runs/...) or model file (*.pt)")
    p.add_argument(
        "--images", required=True, help="folder of images to score (png/jpg/jpeg/bmp/tif, not recursive)"
    )
    p.add_argument(
        "--out", required=True, help="output folder (scores.csv, threshold.json, maps/, overlays/)"
    )
    p.add_argument(
        "--normal",
        help="known-good images the model did not train on: they set the threshold (without them, a result JSON's "
        "<stem>.threshold.json from texad threshold sets it)",
    )
    p.add_argument(
        "--train-images",
        help="the model's training images (<class>/train/good): a model file's training statistics (Method A's "
        "normalisation, Method B's fusion scale and normalisation; a result JSON brings its run's own, which these "
        "replace when given), and the threshold when neither --normal nor the run's threshold file is there "
        "(optimistic)",
    )
    p.add_argument(
        "--fpr",
        type=float,
        help="false-alarm rate allowed on the normal images (default 0.01; not with the run's "
        "threshold file, which was chosen at its own)",
    )
    p.add_argument("--settings", help="inference-setting overrides: a part of the method's config block as JSON, "
                   "e.g. '{\"inference\": {\"smoothing_sigma\": 2}}' (Method A/B) or '{\"score_pool\": 5}' (DRAEM)")  # fmt: skip
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=int, help="inference batch (default: the recorded one, else 16)")
    p.add_argument("--weights-cache", help="backbone weight cache (TORCH_HOME), as for the benchmark runs")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.set_defaults(func=cmd_predict)
