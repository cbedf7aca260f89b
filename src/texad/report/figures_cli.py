"""The figure subcommands of ``texad`` (figure-grid, roc-curves, ablation-curves, speed-accuracy).

:func:`add_parsers` adds them to the main parser's subparsers; matplotlib is imported only when a command runs,
so ``texad --help`` and the other commands stay fast.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parsers"]


def _print_outputs(args) -> None:
    print(args.out_png)
    print(args.out_pdf)


def cmd_figure_grid(args) -> int:
    from texad.report.figures import figure_grid

    figure_grid(args.maps, args.out_png, args.out_pdf, labels=args.labels, title=args.title, rows=args.rows,
                root=args.root)  # fmt: skip
    _print_outputs(args)
    return 0


def cmd_roc_curves(args) -> int:
    from texad.report.figures import roc_figure

    roc_figure(args.maps, args.out_png, args.out_pdf, labels=args.labels, title=args.title, root=args.root,
               max_pixels=args.max_pixels)  # fmt: skip
    _print_outputs(args)
    return 0


def cmd_ablation_curves(args) -> int:
    from texad.report.figures import ablation_figure

    ablation_figure(args.results, args.method, args.out_png, args.out_pdf, title=args.title,
                    annotate_nfe=not args.no_nfe)  # fmt: skip
    _print_outputs(args)
    return 0


def cmd_speed_accuracy(args) -> int:
    from texad.report.figures import speed_accuracy_figure

    speed_accuracy_figure(args.results, args.out_png, args.out_pdf, title=args.title)
    _print_outputs(args)
    return 0


def cmd_selection_figure(args) -> int:
    from texad.report.figures import selection_figure

    selection_figure(args.table, args.out_png, args.out_pdf, title=args.title)
    _print_outputs(args)
    return 0


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-png", required=True, help="PNG output (150 dpi), written atomically")
    p.add_argument("--out-pdf", required=True, help="PDF output (vector), written atomically")
    p.add_argument("--title")


def _maps_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--maps", nargs="+", required=True, help="maps .npz files, one per method (one class, seed)"
    )
    p.add_argument("--labels", nargs="+", help="one legend label per maps file (default: the method folder)")
    p.add_argument(
        "--root", default=".", help="folder the maps' image paths are relative to (repository root)"
    )


def add_parsers(sub) -> None:
    """Add the figure subcommands to ``sub`` (the ``add_subparsers()`` object of the ``texad`` parser)."""
    p = sub.add_parser(
        "figure-grid", help="Figure 1 of a class: original | reconstruction | mask | map per method"
    )
    _maps_inputs(p)
    _outputs(p)
    p.add_argument(
        "--rows", type=int, default=5, help="test images shown (defect types first, then one normal)"
    )
    p.set_defaults(func=cmd_figure_grid)

    p = sub.add_parser(
        "roc-curves", help="image- and pixel-level ROC curves of a class, one curve per method"
    )
    _maps_inputs(p)
    _outputs(p)
    p.add_argument(
        "--max-pixels", type=int, default=2_000_000, help="subsample pixels above this (fixed seed)"
    )
    p.set_defaults(func=cmd_roc_curves)

    p = sub.add_parser("ablation-curves", help="Method A T-scales or Method B guidance ablation curves")
    p.add_argument("--method", required=True, choices=["method_a", "method_b"])
    p.add_argument(
        "--results", nargs="+", required=True, help="result JSON files or folders (searched recursively)"
    )
    _outputs(p)
    p.add_argument("--no-nfe", action="store_true", help="Method A: do not label points with their NFE/image")
    p.set_defaults(func=cmd_ablation_curves)

    p = sub.add_parser(
        "speed-accuracy", help="NFE/image and images/s against image AUROC, every method and variant"
    )
    p.add_argument(
        "--results", nargs="+", required=True, help="result JSON files or folders (searched recursively)"
    )
    _outputs(p)
    p.set_defaults(func=cmd_speed_accuracy)

    p = sub.add_parser(
        "selection-figure", help="default, selected and oracle side by side (from selection.csv)"
    )
    p.add_argument("--table", required=True, help="results/tables/selection.csv (texad selection-table)")
    _outputs(p)
    p.set_defaults(func=cmd_selection_figure)
