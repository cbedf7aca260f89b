"""``texad select`` and ``texad choose``: the two jobs of the ``selected`` and ``oracle`` variants
(:mod:`texad.methods.selection`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parsers"]


def cmd_select(args: argparse.Namespace) -> int:
    from texad.config import load_settings
    from texad.methods.base import RunKey

    from .selection import score_candidates

    models = {"model": Path(args.model), **({"features": Path(args.features)} if args.features else {})}
    config = load_settings(args.settings)
    # <runs>/<variant>/seed<k>.fit.npz: each candidate's test-set run names its fit state by its variant folder
    fit_states = {Path(p).parent.name: Path(p) for p in args.fit_states or []}
    record = score_candidates(
        args.method, config, RunKey.of(config, args.dataset, args.class_name, args.seed),
        validation_dir=Path(args.validation_dir), models=models, out=Path(args.out), fit_states=fit_states,
        fit_class_dir=Path(args.fit_class_dir) if args.fit_class_dir else None,
    )  # fmt: skip
    shown = ", ".join(
        f"{row['name']} {_value(row['validation'], record['criterion'])}" for row in record["candidates"]
    )
    print(f"{args.method} {args.dataset}/{args.class_name} seed {args.seed}: {record['criterion']} on the "
          f"validation split: {shown}; chosen: {record['chosen']}")  # fmt: skip
    return 0


def _value(metrics: dict, criterion: str) -> str:
    from .selection import criterion_value

    value = criterion_value(metrics, criterion)
    return "n/a" if value == float("-inf") else f"{value:.4f}"


def cmd_choose(args: argparse.Namespace) -> int:
    from texad.methods.base import ORACLE, SELECTED

    from .selection import choose

    written = choose(
        Path(args.selection), [Path(p) for p in args.results], [Path(p) for p in args.maps],
        out={SELECTED: (Path(args.selected), Path(args.selected_maps)),
             ORACLE: (Path(args.oracle), Path(args.oracle_maps))},
    )  # fmt: skip
    for variant, result in written.items():
        s = result["extra"]["selection"]
        print(f"{variant}: {s['chosen']} (chosen on the {s['chosen_on']} split by {s['criterion']})")
    return 0


def cmd_selection_table(args: argparse.Namespace) -> int:
    from texad.results.intervals import Bootstraps
    from texad.results.selection_table import write_selection_tables

    boot = Bootstraps(args.bootstrap or [])
    for path in write_selection_tables(args.results, args.out_dir, boot=boot or None):
        print(path)
    return 0


def add_parsers(sub) -> None:
    """``texad select`` and ``texad choose``."""
    p = sub.add_parser(
        "select",
        help="score a method's candidate settings (its select block) on a class's validation split and choose one",
    )
    p.add_argument("method")
    p.add_argument("--settings", required=True,
                   help="the method's block with its select candidates, the run's top-level keys and selection")  # fmt: skip
    p.add_argument("--dataset", required=True)
    p.add_argument("--class", dest="class_name", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument(
        "--validation-dir", required=True, help="the class's validation split (texad validation-split)"
    )
    p.add_argument("--model", required=True, help="the trained model file the default run loads")
    p.add_argument("--features", help="Method B: the adapted feature extractor")
    p.add_argument("--out", required=True, help="the choice (JSON)")
    p.add_argument("--fit-states", nargs="*", help="the candidates' test-set runs' fit states "
                   "(<variant>/seed<k>.fit.npz): training-image statistics taken instead of fitting again")  # fmt: skip
    p.add_argument("--fit-class-dir", help="the class folder those runs fitted on (its training images must be "
                   "the validation split's, else each candidate fits here)")  # fmt: skip
    p.set_defaults(func=cmd_select)

    p = sub.add_parser(
        "choose",
        help="write the selected and oracle results from a choice (texad select) and the candidates' test runs",
    )
    p.add_argument("--selection", required=True, help="the choice written by texad select")
    p.add_argument("--results", nargs="+", required=True, help="every candidate's test-set result JSON")
    p.add_argument("--maps", nargs="+", required=True, help="their maps files, in the same order")
    p.add_argument("--selected", required=True, help="the selected result JSON to write")
    p.add_argument("--selected-maps", required=True)
    p.add_argument("--oracle", required=True, help="the oracle result JSON to write")
    p.add_argument("--oracle-maps", required=True)
    p.set_defaults(func=cmd_choose)

    p = sub.add_parser(
        "selection-table", help="default, selected and oracle side by side, with their differences"
    )
    p.add_argument(
        "--results", nargs="+", required=True, help="result JSONs (default, selected and oracle runs)"
    )
    p.add_argument("--out-dir", required=True)
    p.add_argument(
        "--bootstrap", nargs="*", help="the classes' bootstrap files: intervals, paired for differences"
    )
    p.set_defaults(func=cmd_selection_table)
