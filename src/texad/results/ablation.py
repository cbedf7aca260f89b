"""One method's ablation as a table: one row per (dataset, variant), costs beside scores, against a reference.

Per variant, over every class and seed of the dataset (a plain mean over runs; each class has the same seeds):

* ``nfe_per_image``: network evaluations per image (what the variant costs, independent of the machine);
* ``s_per_image``: wall seconds per test image during the run (1 / the recorded throughput);
* ``s_per_image_b1`` / ``s_per_image_b16``: the speed probe at batch 1 and 16 (after warm-up), where recorded;
* ``image_auroc``, ``pixel_auroc``, ``aupro`` (mean, and std over the per-seed class means when there are seeds);
* against the reference variant (Method A: ``full_chain``, the full-length reverse SDE; Method B: ``default``):
  ``speedup`` = reference s/image over this variant's, ``nfe_ratio`` = reference NFE over this variant's, and
  ``d_image_auroc`` = this variant's image AUROC minus the reference's on the same classes and seeds (paired). All
  ratios come from runs of the same workflow invocation.

A ``default`` run that records its ablation point (Method B, whose default w is per class) is also counted under
that point's name.

Written as CSV (full precision), Markdown and LaTeX (:func:`write_ablation_tables`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from texad.results.record import atomic_write_text, read_result
from texad.results.tables import format_cell, interval_text, latex_escape

__all__ = ["REFERENCE_VARIANT", "ablation_table", "write_ablation_tables"]

#: The variant every other one is compared with, per method (Method A: the full-length chain; Method B: the
#: configured inference).
REFERENCE_VARIANT = {"method_a": "full_chain", "method_b": "default"}
SCORES = ("image_auroc", "pixel_auroc", "aupro")
COLUMNS = (
    "dataset", "variant", "n_runs", "nfe_per_image", "s_per_image", "s_per_image_b1", "s_per_image_b16",
    *[f"{m}{suffix}" for m in SCORES for suffix in ("", "_std", "_low", "_high")],
    "speedup", "nfe_ratio", "d_image_auroc", "d_image_auroc_low", "d_image_auroc_high",
)  # fmt: skip
_AGAINST_REFERENCE = ("speedup", "nfe_ratio", "d_image_auroc", "d_image_auroc_low", "d_image_auroc_high")


def _extra(path: str) -> dict:
    return read_result(path).get("extra") or {}


def _probe(extra: dict, batch: str) -> float:
    """The speed probe of a run at ``batch`` (s/image), NaN when the run was not probed."""
    speed = extra.get("timing", {}).get("s_per_image_at_batch", {}) or {}
    return float(speed[batch]) if batch in speed else float("nan")


def _with_default_points(runs: pd.DataFrame, extras: list[dict]) -> pd.DataFrame:
    """A ``default`` run that records its ablation point (``extra.ablation_point``, Method B) also counts as a run
    of that point, so a point's row covers every class even where it is that class's default."""
    copies = [
        runs.iloc[[i]].assign(variant=e["ablation_point"])
        for i, e in enumerate(extras)
        if runs.iloc[i]["variant"] == "default" and e.get("ablation_point")
    ]
    return pd.concat([runs, *copies], ignore_index=True) if copies else runs


def _seed_std(runs: pd.DataFrame, metric: str) -> float:
    """The std over seeds of the per-seed mean over classes (NaN with one seed)."""
    per_seed = runs.groupby("seed")[metric].mean()
    return float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan")


def _paired_delta(runs: pd.DataFrame, dataset: str, variant: str, reference: str) -> float:
    """Image AUROC of ``variant`` minus the reference's on the same (class, seed) runs: a point that a class does
    not run (a Method B point named by another class's w) is compared on the classes that ran it only."""
    here = runs[runs["dataset"] == dataset]
    mine = here[here["variant"] == variant].set_index(["class", "seed"])["image_auroc"]
    ref = here[here["variant"] == reference].set_index(["class", "seed"])["image_auroc"]
    both = mine.index.intersection(ref.index)
    return float((mine[both] - ref[both]).mean()) if len(both) else np.nan


def ablation_table(df: pd.DataFrame, method: str, reference: str | None = None, boot=None) -> pd.DataFrame:
    """The ablation of ``method`` from the long table of :func:`texad.results.aggregate.collect`: one row per
    (dataset, variant), ``default`` first, then the other variants in name order, the reference last.

    ``boot`` (:class:`texad.results.intervals.Bootstraps`): each score's bootstrap interval (``<metric>_low`` /
    ``_high``, over the dataset's classes) and the paired interval of Δ image AUROC against the reference on the
    same test images (``d_image_auroc_low`` / ``_high``); NaN without it."""
    reference = REFERENCE_VARIANT.get(method) if reference is None else reference
    runs = df[df["method"] == method].copy()
    if runs.empty:
        raise ValueError(f"no results of method {method!r} to tabulate")
    runs = runs.reset_index(drop=True)
    extras = [_extra(p) for p in runs["path"]]
    runs["s_per_image"] = 1.0 / runs["images_per_s"]
    runs["s_per_image_b1"] = [_probe(e, "1") for e in extras]
    runs["s_per_image_b16"] = [_probe(e, "16") for e in extras]
    runs = _with_default_points(runs, extras)
    rows = []
    for dataset, ds in runs.groupby("dataset", sort=True):
        order = sorted(ds["variant"].unique(), key=lambda v: (v != "default", v == reference, v))
        for variant in order:
            r = ds[ds["variant"] == variant]
            row = {"dataset": dataset, "variant": variant, "n_runs": len(r)}
            for col in ("nfe_per_image", "s_per_image", "s_per_image_b1", "s_per_image_b16"):
                row[col] = float(r[col].mean())
            classes = sorted(r["class"].unique())
            for m in SCORES:
                row[m] = float(r[m].mean())
                row[f"{m}_std"] = _seed_std(r, m)
                e = boot.estimate(dataset, "mean", method, variant, m, classes) if boot else None
                row[f"{m}_low"], row[f"{m}_high"] = (e.low, e.high) if e else (np.nan, np.nan)
            if boot and variant != reference:
                d = boot.difference(dataset, classes, (method, variant), (method, reference), "image_auroc")
                row["d_image_auroc_low"], row["d_image_auroc_high"] = (
                    (d.low, d.high) if d else (np.nan, np.nan)
                )
            rows.append(row)
    table = pd.DataFrame(
        rows, columns=[c for c in COLUMNS if c not in _AGAINST_REFERENCE or c.endswith(("_low", "_high"))]
    )
    table["speedup"] = np.nan
    table["nfe_ratio"] = np.nan
    table["d_image_auroc"] = np.nan
    table = table[list(COLUMNS)]
    for dataset in table["dataset"].unique():
        here = table["dataset"] == dataset
        ref = table[here & (table["variant"] == reference)]
        if ref.empty:
            continue
        ref = ref.iloc[0]
        table.loc[here, "speedup"] = ref["s_per_image"] / table.loc[here, "s_per_image"]
        table.loc[here, "nfe_ratio"] = ref["nfe_per_image"] / table.loc[here, "nfe_per_image"]
        table.loc[here, "d_image_auroc"] = [
            _paired_delta(runs, dataset, v, reference) for v in table.loc[here, "variant"]
        ]
    table.attrs = {"method": method, "reference": reference}
    if boot:
        table.attrs.update(level=boot.level, resamples=boot.resamples)
    return table


# ----------------------------------------------------------------------------------------------- text
_HEADER = ("Variant", "NFE/image", "s/image", "Speed-up", "Image AUROC", "Δ vs ref.", "Pixel AUROC", "AUPRO")


def _score(r: pd.Series, metric: str, n: int, pm: str, tex: bool) -> str:
    return format_cell(r[metric], r[f"{metric}_std"], n, pm=pm, low=r[f"{metric}_low"], high=r[f"{metric}_high"],
                       tex=tex)  # fmt: skip


def _delta(r: pd.Series, tex: bool) -> str:
    """Δ image AUROC in points, with its paired interval where there is one."""
    if np.isnan(r["d_image_auroc"]):
        return "n/a"
    text = f"{100 * r['d_image_auroc']:+.1f}"
    if np.isnan(r["d_image_auroc_low"]):
        return text
    low, high = f"{100 * r['d_image_auroc_low']:+.1f}", f"{100 * r['d_image_auroc_high']:+.1f}"
    return text + (f"$_{{[{low},\\,{high}]}}$" if tex else f" [{low}, {high}]")


def _text_rows(table: pd.DataFrame, pm: str, tex: bool = False) -> list[tuple[str, list[str]]]:
    out = []
    for _, r in table.iterrows():
        n = 2 if not np.isnan(r["image_auroc_std"]) else 1
        cells = [
            r["variant"],
            f"{r['nfe_per_image']:.0f}",
            f"{r['s_per_image']:.3g}",
            "n/a" if np.isnan(r["speedup"]) else f"{r['speedup']:.1f}x",
            _score(r, "image_auroc", n, pm, tex),
            _delta(r, tex),
            _score(r, "pixel_auroc", n, pm, tex),
            _score(r, "aupro", n, pm, tex),
        ]
        out.append((r["dataset"], cells))
    return out


def format_ablation_markdown(table: pd.DataFrame) -> str:
    ref = table.attrs.get("reference")
    lines = []
    for dataset in table["dataset"].unique():
        lines += [
            f"**{table.attrs.get('method')} ablation, {dataset}** (reference: `{ref}`; scores in %)",
            "",
        ]
        if interval_text(table.attrs):
            lines += [
                f"Scores: mean over the dataset's classes ± std over seeds; {interval_text(table.attrs)}. "
                "Δ vs ref. [low, high]: the paired interval of the difference on the same test images.",
                "",
            ]
        lines.append("| " + " | ".join(_HEADER) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(_HEADER) - 1)) + "|")
        for ds, cells in _text_rows(table, "±"):
            if ds == dataset:
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def format_ablation_latex(table: pd.DataFrame) -> str:
    method, ref = table.attrs.get("method", ""), table.attrs.get("reference")
    head = [latex_escape(h).replace("Δ", r"$\Delta$") for h in _HEADER]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{Ablation of {latex_escape(str(method))}: cost and scores (\%) per variant; speed-up and "
        rf"$\Delta$ image AUROC against \texttt{{{latex_escape(str(ref))}}}.}}",
        r"\begin{tabular}{l" + "r" * (len(_HEADER) - 1) + "}",
        r"\toprule",
    ]
    for i, dataset in enumerate(table["dataset"].unique()):
        if i:
            lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{len(_HEADER)}}}{{l}}{{\textit{{{latex_escape(dataset)}}}}} \\")
        lines.append(" & ".join(head) + r" \\")
        lines.append(r"\midrule")
        for ds, cells in _text_rows(table, r"$\pm$", tex=True):
            if ds == dataset:
                cells = [
                    latex_escape(cells[0]),
                    *[c.replace("x", r"$\times$") if c.endswith("x") else c for c in cells[1:]],
                ]
                lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_ablation_tables(df: pd.DataFrame, method: str, out_dir: str | Path, boot=None) -> list[Path]:
    """``ablation_<method>.csv`` / ``.md`` / ``.tex`` in ``out_dir``, each atomically; returns their paths."""
    table = ablation_table(df, method, boot=boot)
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format=lambda x: repr(float(x)), lineterminator="\n")
    written = []
    for suffix, text in (
        (".csv", buf.getvalue()),
        (".md", format_ablation_markdown(table)),
        (".tex", format_ablation_latex(table)),
    ):
        path = Path(out_dir) / f"ablation_{method}{suffix}"
        atomic_write_text(path, text)
        written.append(path)
    return written
