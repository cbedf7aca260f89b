"""Result JSONs -> one long table -> per-metric tables (CSV, Markdown, LaTeX).

* :func:`collect` reads result JSONs (files, or every ``*.json`` under folders, recursively), validates
  each one (an invalid or malformed file is an error naming it) and returns one row per run;
* :func:`metric_table` turns the long table into one metric's table: rows ``(dataset, class)`` plus a
  ``mean`` row per dataset, one column group per method (``method/variant`` when a method has several
  variants) with ``mean``, ``std`` (over seeds, ddof=1; NaN with a single seed) and ``n`` (seeds);
* :func:`write_tables` writes ``<metric>.csv`` / ``.md`` / ``.tex`` per metric, ``results.csv`` (the long table)
  and, given the classes' bootstrap intervals (:mod:`texad.results.intervals`), ``intervals.csv``, each atomically.

The dataset ``mean`` row is the mean over the dataset's classes of the per-class means.  Its ``std`` is
the std over seeds of the per-seed class average, given when every class has the same set of at least two
seeds (then ``n`` is that seed count); otherwise std and n are missing.  When a column lacks a value for
one of the dataset's classes its mean row is missing too ("n/a"): a mean over fewer classes would not be
comparable with the other columns.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from texad.config.schema import ConfigError
from texad.evaluation.thresholds import SUFFIX as THRESHOLD_SUFFIX
from texad.results.record import atomic_write_text, read_result
from texad.results.tables import format_latex, format_markdown

__all__ = [
    "KEY_COLUMNS",
    "METRIC_COLUMNS",
    "TIMING_COLUMNS",
    "DEFAULT_TABLE_METRICS",
    "MEAN_ROW",
    "collect",
    "metric_table",
    "table_to_csv",
    "write_tables",
]

KEY_COLUMNS = ("dataset", "class", "method", "variant", "seed")
METRIC_COLUMNS = (
    "image_auroc",
    "image_ap",
    "pixel_auroc",
    "pixel_ap",
    "aupro",
    "pixel_f1_max",
    "pixel_f1_threshold",
    "n_images",
    "n_anomalous",
)
TIMING_COLUMNS = ("train_s", "inference_s", "images_per_s", "nfe_per_image")
INFO_COLUMNS = (
    "resolution",
    "fpr_limit",
    "device",
    "precision",
    "run_name",
    "config_hash",
    "model_hash",
    "created",
    "path",
)
DEFAULT_TABLE_METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
MEAN_ROW = "mean"
STATS = ("mean", "std", "n", "low", "high")


# ----------------------------------------------------------------------------------------------------
# collect
# ----------------------------------------------------------------------------------------------------
def _result_files(paths_or_dirs) -> list[Path]:
    if isinstance(paths_or_dirs, str | Path):
        paths_or_dirs = [paths_or_dirs]
    files: list[Path] = []
    for p in map(Path, paths_or_dirs):
        if p.is_dir():
            found = (f for f in p.rglob("*.json") if f.is_file() and not f.name.startswith("."))
            # a run's threshold file sits beside its result
            files.extend(sorted(f for f in found if not f.name.endswith(THRESHOLD_SUFFIX)))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"results path {p} does not exist")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _row(result: dict, path: Path) -> dict:
    metrics, timings, ev, dev = result["metrics"], result["timings"], result["evaluation"], result["device"]
    row = {
        "dataset": result["dataset"],
        "class": result["class"],
        "method": result["method"],
        "variant": result["variant"],
        "seed": result["seed"],
    }
    for key in METRIC_COLUMNS:
        row[key] = metrics[key]
    for key in TIMING_COLUMNS:
        row[key] = timings[key]
    row.update(
        resolution=str(ev["resolution"]),
        fpr_limit=ev["fpr_limit"],
        device=dev["type"],
        precision=dev["precision"],
        run_name=result["run_name"],
        config_hash=result["config_hash"],
        model_hash=result["model_hash"],
        created=result["created"],
        path=str(path),
    )
    return row


def collect(paths_or_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per result JSON found in ``paths_or_dirs`` (files, or folders searched recursively).

    Every ``*.json`` under a folder must be a valid result (point it at the runs folder, not at one that
    holds other JSON files; the runs' ``*.threshold.json`` beside them are skipped); a malformed or invalid one raises ConfigError naming the file, and so does a
    run (dataset, class, method, variant, seed) found in two files.  Columns: the run key, one per metric,
    one per timing, then ``resolution`` (a string: "256" or "native"), ``fpr_limit``, ``device``,
    ``precision``, ``run_name``, ``config_hash``, ``model_hash``, ``created`` and ``path``.  Rows are
    sorted by the run key; metrics that are null in the JSON are NaN.
    """
    if isinstance(paths_or_dirs, str | Path):
        paths_or_dirs = [paths_or_dirs]
    paths_or_dirs = [Path(p) for p in paths_or_dirs]
    files = _result_files(paths_or_dirs)
    if not files:
        raise ConfigError(
            f"no result JSON files found in {', '.join(map(str, paths_or_dirs)) or '(no paths given)'}"
        )
    rows = []
    where: dict[tuple, Path] = {}
    for f in files:
        result = read_result(f)
        row = _row(result, f)
        key = tuple(row[k] for k in KEY_COLUMNS)
        if key in where:
            raise ConfigError(
                f"result {f} repeats the run {'/'.join(map(str, key[:4]))}/seed{key[4]} of {where[key]}; "
                "remove one of them (or give them different variants)"
            )
        where[key] = f
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*KEY_COLUMNS, *METRIC_COLUMNS, *TIMING_COLUMNS, *INFO_COLUMNS])
    for col in (*METRIC_COLUMNS, *TIMING_COLUMNS, "fpr_limit"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("n_images", "n_anomalous", "seed"):
        df[col] = df[col].astype("int64")
    return df.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------
# one metric's table
# ----------------------------------------------------------------------------------------------------
def _column_labels(df: pd.DataFrame) -> pd.Series:
    """``method``, or ``method/variant`` for a method that has more than one variant in ``df``."""
    n_variants = df.groupby("method")["variant"].nunique()
    multi = df["method"].map(n_variants) > 1
    return df["method"].where(~multi, df["method"] + "/" + df["variant"])


def metric_table(df: pd.DataFrame, metric: str, intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table of ``metric``: index ``(dataset, class)`` with a ``mean`` row closing each dataset; columns
    ``(label, stat)`` with label = method (or method/variant) and stat in ``mean``, ``std``, ``n``, ``low``,
    ``high``.

    Per class: mean and std (ddof=1, NaN with one seed) over the seeds with a value, and their count n.
    ``low`` / ``high``: the bootstrap interval of the mean from ``intervals``
    (:func:`texad.results.intervals.interval_table`), NaN without one. ``table.attrs`` holds ``metric``,
    ``resolution`` (sorted distinct evaluation resolutions), ``fpr_limit`` (the distinct AUPRO FPR limits) and,
    with intervals, their ``level`` and ``resamples``.
    """
    if metric not in df.columns:
        allowed = [c for c in (*METRIC_COLUMNS, *TIMING_COLUMNS) if c in df.columns]
        raise ValueError(f"unknown metric {metric!r}; available: {', '.join(allowed)}")
    if df.empty:
        raise ValueError("no results to tabulate")
    if (df["class"] == MEAN_ROW).any():
        raise ValueError(f"a class is named {MEAN_ROW!r}, which clashes with the dataset mean row")

    data = df.assign(
        _label=_column_labels(df), _value=pd.to_numeric(df[metric], errors="coerce").astype(float)
    )
    labels = sorted(data["_label"].unique())

    per_class = (
        data.groupby(["dataset", "class", "_label"])["_value"]
        .agg(mean="mean", std=lambda v: v.std(ddof=1), n="count")
        .reset_index()
    )
    # a class whose every seed is null has n = 0 and mean NaN; std with one seed is NaN (ddof=1)
    # a (class, column) pair with no run at all keeps NaN everywhere (n missing)

    rows = []
    for dataset in sorted(data["dataset"].unique()):
        ds = data[data["dataset"] == dataset]
        classes = sorted(ds["class"].unique())
        for cls in classes:
            rows.append((dataset, cls))
        rows.append((dataset, MEAN_ROW))
    index = pd.MultiIndex.from_tuples(rows, names=["dataset", "class"])
    columns = pd.MultiIndex.from_product([labels, STATS], names=["column", "stat"])
    table = pd.DataFrame(np.nan, index=index, columns=columns, dtype=float)

    for dataset, cls, label, mean, std, n in per_class[
        ["dataset", "class", "_label", "mean", "std", "n"]
    ].itertuples(index=False, name=None):
        if n > 0:
            table.loc[(dataset, cls), (label, "mean")] = mean
            table.loc[(dataset, cls), (label, "std")] = std
        table.loc[(dataset, cls), (label, "n")] = n

    for dataset in sorted(data["dataset"].unique()):
        ds = data[data["dataset"] == dataset]
        classes = sorted(ds["class"].unique())
        for label in labels:
            means = table.loc[[(dataset, c) for c in classes], (label, "mean")]
            if means.isna().any():
                continue  # a class without a value: no comparable dataset mean
            table.loc[(dataset, MEAN_ROW), (label, "mean")] = float(means.mean())
            sub = ds[(ds["_label"] == label) & ds["_value"].notna()]
            seed_sets = {c: frozenset(sub.loc[sub["class"] == c, "seed"]) for c in classes}
            first = seed_sets[classes[0]]
            if all(s == first for s in seed_sets.values()):
                table.loc[(dataset, MEAN_ROW), (label, "n")] = len(first)
                if len(first) > 1:
                    per_seed = sub.groupby("seed")["_value"].mean()
                    table.loc[(dataset, MEAN_ROW), (label, "std")] = float(per_seed.std(ddof=1))

    for label in labels:
        table[(label, "n")] = table[(label, "n")].astype("Int64")
    bounds = _interval_bounds(data, intervals, metric)
    for (dataset, cls, label), (low, high) in bounds.items():
        if (dataset, cls) in table.index and label in labels and not pd.isna(table.loc[(dataset, cls), (label, "mean")]):
            table.loc[(dataset, cls), (label, "low")] = low
            table.loc[(dataset, cls), (label, "high")] = high

    resolutions = _sorted_resolutions(df["resolution"]) if "resolution" in df.columns else []
    fpr_limits = sorted(df["fpr_limit"].dropna().unique().tolist()) if "fpr_limit" in df.columns else []
    table.attrs = {"metric": metric, "resolution": resolutions, "fpr_limit": fpr_limits}
    if bounds:
        table.attrs.update(level=float(intervals["level"].iloc[0]), resamples=int(intervals["resamples"].iloc[0]))
    return table


def _interval_bounds(data: pd.DataFrame, intervals: pd.DataFrame | None, metric: str) -> dict:
    """(dataset, class, column label) -> (low, high) of ``metric`` for the columns of ``data``."""
    if intervals is None or intervals.empty:
        return {}
    label_of = dict(zip(zip(data["method"], data["variant"], strict=True), data["_label"], strict=True))
    rows = intervals[intervals["metric"] == metric]
    return {
        (d, c, label_of[(m, v)]): (lo, hi)
        for d, c, m, v, lo, hi in rows[["dataset", "class", "method", "variant", "low", "high"]].itertuples(
            index=False, name=None
        )
        if (m, v) in label_of
    }


def _sorted_resolutions(values: pd.Series) -> list[str]:
    """Distinct resolutions as strings, numbers ascending first, then ``native``."""
    distinct = {str(v) for v in values.dropna()}
    return sorted(distinct, key=lambda r: (not r.isdigit(), int(r) if r.isdigit() else 0, r))


def table_to_csv(table: pd.DataFrame) -> str:
    """A metric table as long CSV: ``dataset,class,column,method,variant,mean,std,n,low,high`` in table order,
    full precision (shortest round-trip floats), empty fields for missing values."""
    out = pd.DataFrame(
        [
            (dataset, cls, label, *_split_label(label), *(table.loc[(dataset, cls), (label, st)] for st in STATS))
            for dataset, cls in table.index
            for label in table.columns.get_level_values(0).unique()
        ],
        columns=["dataset", "class", "column", "method", "variant", *STATS],
    )  # fmt: skip
    out["n"] = out["n"].astype("Int64")
    buf = io.StringIO()
    out.to_csv(buf, index=False, float_format=_float_repr, lineterminator="\n")
    return buf.getvalue()


def _float_repr(x: float) -> str:
    """Shortest string that reads back as the same float (``0.1``, not ``0.10000000000000001``)."""
    return repr(float(x))


def _split_label(label: str) -> tuple[str, str]:
    method, _, variant = label.partition("/")
    return method, variant


# ----------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------
def with_class_titles(df: pd.DataFrame, titles: dict[str, str] | None) -> pd.DataFrame:
    """``df`` with each class that ``titles`` names ("dataset/class" -> title) shown by its title: a user's class
    folder whose own name was not safe in file names appears as ``safe (folder name)``."""
    if not titles:
        return df
    keys = df["dataset"] + "/" + df["class"]
    return df.assign(**{"class": [titles.get(k, c) for k, c in zip(keys, df["class"], strict=True)]})


def write_tables(
    df: pd.DataFrame,
    out_dir: str | Path,
    metrics: Iterable[str] = DEFAULT_TABLE_METRICS,
    intervals: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``<metric>.csv``, ``<metric>.md`` and ``<metric>.tex`` per metric, then ``results.csv`` (the
    long table from :func:`collect`) and, with ``intervals``, ``intervals.csv`` (every cell's bootstrap
    interval), each atomically; returns the paths written, in that order."""
    out_dir = Path(out_dir)
    metrics = tuple(metrics)
    tables = {m: metric_table(df, m, intervals) for m in metrics}  # every table is built before anything is written
    written: list[Path] = []
    for metric, table in tables.items():
        for suffix, text in (
            (".csv", table_to_csv(table)),
            (".md", format_markdown(table)),
            (".tex", format_latex(table)),
        ):
            path = out_dir / f"{metric}{suffix}"
            atomic_write_text(path, text)
            written.append(path)
    long = {"results.csv": df} | ({"intervals.csv": intervals} if intervals is not None else {})
    for name, frame in long.items():
        buf = io.StringIO()
        frame.to_csv(buf, index=False, float_format=_float_repr, lineterminator="\n")
        path = out_dir / name
        atomic_write_text(path, buf.getvalue())
        written.append(path)
    return written
