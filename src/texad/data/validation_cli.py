"""The ``texad validation-split`` and ``texad training-view`` subcommands: argument parsing only (the work is in
:mod:`texad.data.validation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parsers", "cmd_training_view", "cmd_validation_split"]

_SETTINGS_HELP = (
    "the config part with validation, as JSON or a config file, e.g. "
    '\'{"validation": {"holdout": 0.2, "min_holdout": 5, "anomalies": ["perlin"], "seed": 0}}\''
)


def _validation_settings(value: str):
    from texad.config import load_settings
    from texad.data.validation import ValidationSettings

    config = load_settings(value)
    if "validation" not in config:
        raise ValueError(f"--settings holds no validation block; {_SETTINGS_HELP}")
    return ValidationSettings.from_config(config)


def cmd_validation_split(args: argparse.Namespace) -> int:
    from texad.data.anomaly_sources import source_paths
    from texad.data.validation import build_validation_split

    settings = _validation_settings(args.settings)
    sources = None
    if args.source_kind is not None:
        if args.anomaly_root is None:
            raise ValueError(
                "--source-kind needs --anomaly-root (DTD's folder, or the root of the class folders)"
            )
        dtd = args.source_kind == "dtd"
        sources = source_paths(args.source_kind, class_name=args.class_name, classes=args.source_classes,
                               dtd_root=args.anomaly_root if dtd else None,
                               dataset_root=None if dtd else args.anomaly_root)  # fmt: skip
    m = build_validation_split(Path(args.class_dir), Path(args.out), settings, dataset=args.dataset,
                               class_name=args.class_name, marker=Path(args.marker), source_paths=sources,
                               source_kind=args.source_kind)  # fmt: skip
    where = (
        "the training images themselves" if m["validates_on_training_images"] else "held-out training images"
    )
    print(f"{args.dataset}/{args.class_name}: {m['n_normal']} normal and {m['n_anomalous']} anomalous validation "
          f"images ({', '.join(m['anomalies'])}) from {where}; models train on {m['n_trained_on']} of "
          f"{m['n_train']}; split in {args.out}")  # fmt: skip
    return 0


def cmd_training_view(args: argparse.Namespace) -> int:
    from texad.data.holdout import Holdout
    from texad.data.validation import build_training_view

    settings = _validation_settings(args.settings)
    holdout = Holdout.from_config({"validation": {"holdout": settings.holdout, "min_holdout": settings.min_holdout,
                                                  "seed": settings.seed}})  # fmt: skip
    if holdout is None:
        raise ValueError(
            "validation.holdout is 0: nothing is held out, and models read the class folder itself"
        )
    r = build_training_view(Path(args.class_dir), Path(args.view), holdout, dataset=args.dataset,
                            class_name=args.class_name, marker=Path(args.marker))  # fmt: skip
    print(f"{args.dataset}/{args.class_name}: models train on {len(r['trains_on'])} of {r['n_train']} training "
          f"images ({len(r['held_out'])} held out for validation); view in {args.view}")  # fmt: skip
    return 0


def _class_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", required=True, help=_SETTINGS_HELP)
    p.add_argument("--dataset", required=True)
    p.add_argument("--class", dest="class_name", required=True)
    p.add_argument("--class-dir", required=True, help="the class folder (MVTec layout)")
    p.add_argument("--marker", required=True, help="the manifest, written last")


def add_parsers(sub) -> None:
    """Add ``validation-split`` and ``training-view`` to the subparsers ``sub`` of the ``texad`` command."""
    p = sub.add_parser(
        "validation-split",
        help="one class's validation split from normal images only: held-out training images and the same images "
        "with synthetic anomalies and exact masks, in the MVTec layout",
        description="Writes results/validation/<dataset>/<class>/ (train/good, test/good, test/<kind>, "
        "ground_truth/<kind>) and its manifest split.json, last (validation.holdout, min_holdout, anomalies, seed).",
    )
    _class_args(p)
    p.add_argument("--out", required=True, help="the split's folder")
    p.add_argument(
        "--source-kind",
        choices=["dtd", "synthetic"],
        help="where the Perlin anomalies' sources come from: DTD, or the other classes' training images "
        "(default: the class's own training images that remain)",
    )
    p.add_argument("--anomaly-root", help="DTD's folder holding images/, or the root of the class folders")
    p.add_argument("--source-classes", nargs="+", help="synthetic: these classes (default: every other one)")
    p.set_defaults(func=cmd_validation_split)

    p = sub.add_parser(
        "training-view",
        help="the view of a class that models train on when validation.holdout > 0: train/good without the "
        "held-out images, test and ground_truth the class's own",
    )
    _class_args(p)
    p.add_argument("--view", required=True, help="the view's folder")
    p.set_defaults(func=cmd_training_view)
