"""The ``texad bootstrap`` subcommand: argument parsing only (the work is in :mod:`texad.evaluation.class_bootstrap`)."""

from __future__ import annotations

import argparse
import time

import numpy as np

__all__ = ["add_parsers", "cmd_bootstrap"]


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from texad.config import load_settings
    from texad.evaluation.class_bootstrap import BootstrapSettings, bootstrap_class, write_bootstrap

    settings = BootstrapSettings.from_config(load_settings(args.settings))
    start = time.perf_counter()
    arrays = bootstrap_class(args.results, args.maps, settings)
    write_bootstrap(arrays, args.out)
    n_runs, n_images = len(arrays["method"]), len(arrays["labels"])
    shift = np.abs(arrays["binning_shift"][:, 1:])  # pixel metrics only; NaN without masks
    worst = f", largest binning shift {np.nanmax(shift):.2g}" if np.isfinite(shift).any() else ""
    print(
        f"{args.out}: {arrays['dataset']}/{arrays['class']}: {n_runs} runs x {settings.resamples} resamples of "
        f"{n_images} test images at level {settings.level:g} in {time.perf_counter() - start:.2f} s{worst}"
    )
    return 0


def add_parsers(sub) -> None:
    """Add ``bootstrap`` to the subparsers ``sub`` of the ``texad`` command."""
    p = sub.add_parser(
        "bootstrap",
        help="resample one class's test images for every run of it: the tables' intervals and paired comparisons",
        description="A stratified bootstrap over one class's test images (evaluation.bootstrap), the same resamples "
        "for every run given, written as results/uncertainty/<dataset>/<class>.npz.",
    )
    p.add_argument("--results", nargs="+", required=True, help="the class's result JSONs")
    p.add_argument("--maps", nargs="+", required=True, help="their maps files, in the same order")
    p.add_argument(
        "--settings",
        required=True,
        help='the config part with evaluation.bootstrap, as JSON or a config file, e.g. \'{"evaluation": '
        '{"bootstrap": {"resamples": 1000, "level": 0.95, "seed": 0}}}\'',
    )
    p.add_argument("--out", required=True, help="the class's bootstrap file (.npz)")
    p.set_defaults(func=cmd_bootstrap)
