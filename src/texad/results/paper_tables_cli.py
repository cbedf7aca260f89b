"""``texad paper-tables``: the papers' tables with reproduced numbers beside the published ones.

:func:`add_parsers` adds the subcommand to texad's argument parser; the heavy imports (pandas, the table
code) happen only when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_parsers", "cmd_paper_tables", "cmd_claims"]

_TABLES = ("paper_method_b_table1", "paper_method_a_main", "paper_method_a_tscales", "extended")
_DEFAULT_PUBLISHED = "workflow/report/published.yaml"
_DEFAULT_CLAIMS = "workflow/report/claims.yaml"


def cmd_paper_tables(args) -> int:
    """Write ``<out-dir>/<table>.{csv,md,tex}`` for every requested table the results allow.

    A table whose method has no results is skipped with a note; nothing to write at all is an error naming
    the inputs (ConfigError, like every bad input: missing published file, malformed result JSON)."""
    from texad.config.schema import ConfigError
    from texad.results.aggregate import collect, with_class_titles
    from texad.results.intervals import Bootstraps, interval_table
    from texad.results.paper_tables import build_paper_tables, write_paper_tables
    from texad.results.published import load_published

    pub = load_published(Path(args.published))  # first: a bad published file fails before any work
    inputs = [Path(p) for p in args.results]
    titles = json.loads(args.class_titles) if args.class_titles else None
    df = with_class_titles(collect(inputs), titles)
    boot = Bootstraps(args.bootstrap or [])
    intervals = with_class_titles(interval_table(boot), titles) if boot else None
    built, skipped = build_paper_tables(df, pub, args.tables, intervals)
    for name, reason in skipped.items():
        print(f"paper-tables: skipped {name}: {reason}")
    if not built:
        raise ConfigError(
            f"no paper table can be built from the results in {', '.join(map(str, inputs))}: "
            + "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        )
    for path in write_paper_tables(built, Path(args.out_dir)):
        print(path)
    return 0


def cmd_claims(args) -> int:
    """Write ``<out-dir>/claims.{csv,md,tex}``: every claim per dataset and metric, with its computed verdict."""
    from texad.results.claims import evaluate_claims, load_claims, write_claims
    from texad.results.intervals import Bootstraps
    from texad.results.published import load_published, load_sources

    claims = load_claims(Path(args.claims), load_sources(Path(args.published)))  # bad inputs fail before work
    rows = evaluate_claims(claims, Bootstraps(args.bootstrap), load_published(Path(args.published)))
    for path in write_claims(rows, claims, Path(args.out_dir)):
        print(path)
    for _, rec in rows.iterrows():
        print(f"  {rec['claim']} / {rec['dataset']} / {rec['metric']}: {rec['verdict']} ({rec['reason']})")
    return 0


def add_parsers(sub) -> None:
    """Add ``paper-tables`` to the subparsers ``sub`` (from ``ArgumentParser.add_subparsers``)."""
    p = sub.add_parser(
        "paper-tables",
        help="the papers' tables: reproduced (mean ± std over seeds) beside published, with Δ (CSV, Markdown, LaTeX)",
    )
    p.add_argument("--results", nargs="+", required=True, help="result JSON files or folders holding them")
    p.add_argument(
        "--published",
        default=_DEFAULT_PUBLISHED,
        help=f"the published numbers (default: {_DEFAULT_PUBLISHED})",
    )
    p.add_argument("--out-dir", required=True, help="where <table>.csv / .md / .tex are written")
    p.add_argument("--class-titles", help='JSON {"dataset/class": "title"}: how tables name renamed user classes')
    p.add_argument(
        "--bootstrap",
        nargs="*",
        help="the classes' bootstrap files (texad bootstrap): each reproduced number gets its interval",
    )
    p.add_argument(
        "--tables",
        nargs="+",
        choices=_TABLES,
        metavar="TABLE",
        default=list(_TABLES),
        help=f"which tables (default: all): {', '.join(_TABLES)}",
    )
    p.set_defaults(func=cmd_paper_tables)

    p = sub.add_parser(
        "claims",
        help="each paper's claim against the runs: paired differences, intervals and a computed verdict",
    )
    p.add_argument("--bootstrap", nargs="+", required=True, help="the classes' bootstrap files (texad bootstrap)")
    p.add_argument("--claims", default=_DEFAULT_CLAIMS, help=f"the claims (default: {_DEFAULT_CLAIMS})")
    p.add_argument(
        "--published", default=_DEFAULT_PUBLISHED, help=f"the published numbers and sources (default: {_DEFAULT_PUBLISHED})"
    )
    p.add_argument("--out-dir", required=True, help="where claims.csv / .md / .tex are written")
    p.set_defaults(func=cmd_claims)
