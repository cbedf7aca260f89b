"""The ``texad threshold`` subcommand: argument parsing only (the work is in :mod:`texad.evaluation.thresholds`)."""

from __future__ import annotations

import argparse

__all__ = ["add_parsers", "cmd_threshold"]


def cmd_threshold(args: argparse.Namespace) -> int:
    from texad.config import load_settings
    from texad.evaluation.thresholds import ThresholdSettings, write_thresholds

    settings = ThresholdSettings.from_config(load_settings(args.settings))
    rec = write_thresholds(args.result, args.maps, settings, args.out)
    rule = f"fpr {rec['fpr']:g}" if rec["rule"] == "fpr" else "f1_max (optimistic)"
    pixel = "none" if rec["pixel_threshold"] is None else f"{rec['pixel_threshold']:.6g}"
    print(f"{args.out}: {rule}: image threshold {rec['image_threshold']:.6g}, pixel threshold {pixel}")
    if rec["pixel_threshold_reason"]:
        print(f"  no pixel threshold: {rec['pixel_threshold_reason']}")
    return 0


def add_parsers(sub) -> None:
    """Add ``threshold`` to the subparsers ``sub`` of the ``texad`` command."""
    p = sub.add_parser(
        "threshold",
        help="one run's deployment thresholds (image and pixel), from its test set; read by texad predict",
        description="Choose a run's image and pixel thresholds by evaluation.threshold (rule fpr: on the normal "
        "test images; rule f1_max: best F1 on the whole test set, optimistic) and write them as JSON.",
    )
    p.add_argument("--result", required=True, help="the run's result JSON (results/runs/.../seed<k>.json)")
    p.add_argument("--maps", required=True, help="the run's maps file (results/maps/.../seed<k>.npz)")
    p.add_argument(
        "--settings",
        required=True,
        help="the config part with evaluation.threshold, as JSON or a config file, e.g. "
        '\'{"evaluation": {"threshold": {"rule": "fpr", "fpr": 0.01}}}\'',
    )
    p.add_argument(
        "--out", required=True, help="the threshold JSON, <result without .json>.threshold.json for predict"
    )
    p.set_defaults(func=cmd_threshold)
