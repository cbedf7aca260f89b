"""The three numbers of every method with candidates, side by side: ``default`` (the config's fixed settings),
``selected`` (chosen on the class's validation split only) and the labelled ``oracle`` (the best candidate on the
test set), with ``selected − default`` and ``oracle − selected`` (what choosing on the test set buys).

One row per (dataset, class, method) and a ``mean`` row per (dataset, method); values are seed means in percent,
with the bootstrap interval of each value and the paired interval of each difference where the classes'
bootstrap files are given (:mod:`texad.results.intervals`). The CSV keeps the numbers; Markdown and LaTeX show
them, with the candidates chosen on each side.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from texad.results.aggregate import collect
from texad.results.intervals import MEAN_ROW, Bootstraps
from texad.results.record import atomic_write_text, read_result
from texad.results.tables import format_cell, latex_escape, metric_name

__all__ = ["SIDES", "DIFFERENCES", "selection_table", "write_selection_tables"]

SELECTED, ORACLE = "selected", "oracle"  # the variants texad.methods.selection writes

SIDES = ("default", SELECTED, ORACLE)
#: (column, minuend, subtrahend)
DIFFERENCES = (("selected_minus_default", SELECTED, "default"), ("oracle_minus_selected", ORACLE, SELECTED))
_METRICS = ("image_auroc", "pixel_auroc")


def _selections(df: pd.DataFrame) -> dict[str, dict]:
    """The ``extra.selection`` record of every selected and oracle run in ``df``, by path (each file read once)."""
    paths = df.loc[df["variant"].isin([SELECTED, ORACLE]), "path"]
    return {path: read_result(path)["extra"]["selection"] for path in paths}


def _choices(df: pd.DataFrame, selections: dict[str, dict]) -> dict[tuple, str]:
    """(dataset, class, method, variant) -> the candidates chosen, over seeds (``w4_s0.5_blur3_t250``, ``a/b``)."""
    out: dict[tuple, list[str]] = {}
    for _, r in df[df["variant"].isin([SELECTED, ORACLE])].iterrows():
        chosen = selections[r["path"]]["chosen"]
        out.setdefault((r["dataset"], r["class"], r["method"], r["variant"]), []).append(chosen)
    return {k: "/".join(dict.fromkeys(v)) for k, v in out.items()}


def _on_training_images(df: pd.DataFrame, selections: dict[str, dict]) -> bool:
    """Whether any selected run validated on its training images (``validation.holdout: 0``)."""
    return any(
        selections[path]["validation"].get("validates_on_training_images")
        for path in df.loc[df["variant"] == SELECTED, "path"]
    )


def selection_table(
    df: pd.DataFrame, boot: Bootstraps | None = None, metrics: Sequence[str] = _METRICS
) -> pd.DataFrame:
    """The three-way table from the runs in ``df`` (``texad.results.aggregate.collect``): every method that has
    ``selected`` runs. Columns per metric: ``<metric>_<side>`` (+ ``_low``/``_high``) and
    ``<metric>_<difference>`` (+ ``_low``/``_high``), then ``chosen_selected`` / ``chosen_oracle``."""
    methods = sorted(df.loc[df["variant"] == SELECTED, "method"].unique())
    runs = df[df["method"].isin(methods) & df["variant"].isin(SIDES)]
    selections = _selections(runs)
    choices = _choices(runs, selections)
    records = []
    for (dataset, method), group in runs.groupby(["dataset", "method"], sort=True):
        classes = sorted(group.loc[group["variant"] == SELECTED, "class"].unique())
        for cls in [*classes, MEAN_ROW]:
            rows = group[group["class"].isin(classes if cls == MEAN_ROW else [cls])]
            rec = {"dataset": dataset, "class": cls, "method": method}
            for metric in metrics:
                means = {}
                for side in SIDES:
                    per_class = rows[rows["variant"] == side].groupby("class")[metric].mean()
                    complete = len(per_class.dropna()) == len(classes if cls == MEAN_ROW else [cls])
                    means[side] = float(per_class.mean()) if complete else math.nan
                    rec[f"{metric}_{side}"] = means[side]
                    e = boot.estimate(dataset, cls, method, side, metric, classes) if boot else None
                    rec[f"{metric}_{side}_low"] = e.low if e else math.nan
                    rec[f"{metric}_{side}_high"] = e.high if e else math.nan
                for column, a, b in DIFFERENCES:
                    rec[f"{metric}_{column}"] = means[a] - means[b]
                    names = classes if cls == MEAN_ROW else [cls]
                    d = boot.difference(dataset, names, (method, a), (method, b), metric) if boot else None
                    rec[f"{metric}_{column}_low"] = d.low if d else math.nan
                    rec[f"{metric}_{column}_high"] = d.high if d else math.nan
            for side in (SELECTED, ORACLE):
                rec[f"chosen_{side}"] = (
                    "" if cls == MEAN_ROW else choices.get((dataset, cls, method, side), "")
                )
            records.append(rec)
    table = pd.DataFrame(records)
    table.attrs.update(metrics=tuple(metrics), on_training_images=_on_training_images(runs, selections))
    if boot:
        table.attrs.update(level=boot.level, resamples=boot.resamples)
    return table


def _delta(value: float, low: float, high: float, tex: bool) -> str:
    return format_cell(value, low=low, high=high, tex=tex, signed=True)


def _cells(r: pd.Series, metric: str, tex: bool) -> list[str]:
    cells = [format_cell(r[f"{metric}_{s}"], low=r[f"{metric}_{s}_low"], high=r[f"{metric}_{s}_high"], tex=tex)
             for s in SIDES]  # fmt: skip
    cells += [
        _delta(r[f"{metric}_{c}"], r[f"{metric}_{c}_low"], r[f"{metric}_{c}_high"], tex)
        for c, _, _ in DIFFERENCES
    ]
    return cells


def _caption(table: pd.DataFrame) -> str:
    text = (
        "default: the config's fixed settings; selected: chosen among the candidates on the class's validation "
        "split only (held-out normal training images and the same images with synthetic anomalies); oracle: the "
        "candidate that scores best on the test set itself (a labelled diagnostic, never a default). Seed means, "
        "in %; Δ in points."
    )
    if "level" in table.attrs:
        text += (
            f" [low, high]: {100 * table.attrs['level']:g} % bootstrap interval of the test images "
            f"({table.attrs['resamples']} resamples), paired for the differences."
        )
    if table.attrs.get("on_training_images"):
        text += " The validation split is the training images themselves (validation.holdout: 0)."
    return text


_HEAD = ("default", "selected", "oracle", "selected − default", "oracle − selected")


def format_selection_markdown(table: pd.DataFrame) -> str:
    out = io.StringIO()
    for metric in table.attrs["metrics"]:
        out.write(f"### {metric_name(metric)}\n\n")
        out.write("| dataset | class | method | " + " | ".join(_HEAD) + " | chosen (selected / oracle) |\n")
        out.write("|" + "---|" * (len(_HEAD) + 4) + "\n")
        for _, r in table.iterrows():
            label = f"**{r['class']}**" if r["class"] == MEAN_ROW else r["class"]
            chosen = "" if r["class"] == MEAN_ROW else f"{r['chosen_selected']} / {r['chosen_oracle']}"
            out.write(f"| {r['dataset']} | {label} | {r['method']} | " + " | ".join(_cells(r, metric, False))
                      + f" | {chosen} |\n")  # fmt: skip
        out.write("\n")
    out.write(_caption(table) + "\n")
    return out.getvalue()


def format_selection_latex(table: pd.DataFrame) -> str:
    out = io.StringIO()
    for metric in table.attrs["metrics"]:
        out.write("\\begin{table}[t]\n\\centering\n\\small\n")
        out.write("\\begin{tabular}{lll" + "r" * len(_HEAD) + "}\n\\toprule\n")
        out.write(
            "dataset & class & method & "
            + " & ".join(h.replace("−", "$-$") for h in _HEAD)
            + " \\\\\n\\midrule\n"
        )
        for _, r in table.iterrows():
            cells = [latex_escape(str(r[k])) for k in ("dataset", "class", "method")] + _cells(
                r, metric, True
            )
            out.write(" & ".join(cells) + " \\\\\n")
        out.write("\\bottomrule\n\\end{tabular}\n")
        out.write(f"\\caption{{{metric_name(metric)}. {latex_escape(_caption(table))}}}\n\\end{{table}}\n\n")
    return out.getvalue()


def write_selection_tables(
    results: Sequence[str | Path], out_dir: str | Path, boot: Bootstraps | None = None
) -> list[Path]:
    """``selection.csv``, ``selection.md`` and ``selection.tex`` in ``out_dir`` from the runs in ``results``."""
    df = collect([Path(p) for p in results])
    table = selection_table(df, boot)
    if table.empty:
        raise ValueError(
            "no selected runs among the results: the selection table needs methods with candidates"
        )
    out_dir = Path(out_dir)
    paths = [out_dir / "selection.csv", out_dir / "selection.md", out_dir / "selection.tex"]
    atomic_write_text(paths[0], table.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(paths[1], format_selection_markdown(table))
    atomic_write_text(paths[2], format_selection_latex(table))
    return paths
