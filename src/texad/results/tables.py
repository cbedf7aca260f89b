"""Text formatters for one metric table (from :func:`texad.results.aggregate.metric_table`).

* Markdown: a pipe table, scores as percentages with one decimal, ``mean ± std`` when a cell has several
  seeds, ``n/a`` where a value is missing, the dataset ``mean`` row in bold;
* LaTeX: a ``table`` float with a booktabs ``tabular`` (``\\toprule`` / ``\\midrule`` / ``\\bottomrule``),
  special characters escaped (``method\\_a``), and a caption naming the metric and the evaluation resolution.

No tabulate / jinja2: the tables are small and the formats simple.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

__all__ = [
    "PERCENT_METRICS",
    "METRIC_NAMES",
    "metric_name",
    "format_cell",
    "interval_text",
    "latex_escape",
    "format_markdown",
    "format_latex",
]

PERCENT_METRICS = frozenset({"image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro", "pixel_f1_max"})
METRIC_NAMES = {
    "image_auroc": "Image AUROC",
    "image_ap": "Image AP",
    "pixel_auroc": "Pixel AUROC",
    "pixel_ap": "Pixel AP",
    "aupro": "AUPRO",
    "pixel_f1_max": "Pixel F1-max",
    "pixel_f1_threshold": "Pixel F1 threshold",
    "n_images": "Test images",
    "n_anomalous": "Anomalous test images",
    "train_s": "Training time (s)",
    "inference_s": "Inference time (s)",
    "images_per_s": "Throughput (images/s)",
    "nfe_per_image": "Network evaluations per image",
}
MISSING = "n/a"
PM = "±"
_MEAN_ROW = "mean"


def metric_name(metric: str) -> str:
    """Display name of a metric column (``image_auroc`` -> ``Image AUROC``)."""
    return METRIC_NAMES.get(metric, metric)


def _missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def format_cell(
    mean, std=None, n=None, *, percent: bool = True, pm: str = PM, low=None, high=None, tex: bool = False,
    signed: bool = False,
) -> str:  # fmt: skip
    """``97.5 ± 1.2`` (percent, one decimal; ``± std`` only when n > 1 and std is known), ``97.5`` for
    one seed, ``n/a`` when ``mean`` is missing.  Non-percent metrics use 3 significant digits.  With an
    interval: ``97.5 ± 1.2 [95.1, 99.0]`` (``tex``: the interval as a subscript, ``97.5$_{[95.1,\\,99.0]}$``).
    ``signed``: a difference, every number with its sign (``+2.5 [+0.0, +7.5]``)."""
    if _missing(mean):
        return MISSING
    sign = "+" if signed else ""
    fmt = (lambda v: f"{100.0 * float(v):{sign}.1f}") if percent else (lambda v: f"{float(v):{sign}.3g}")
    text = fmt(mean)
    if not _missing(n) and int(n) > 1 and not _missing(std):
        text += f" {pm} {fmt(std)}"
    if not _missing(low) and not _missing(high):
        text += f"$_{{[{fmt(low)},\\,{fmt(high)}]}}$" if tex else f" [{fmt(low)}, {fmt(high)}]"
    return text


def interval_text(attrs: dict, *, tex: bool = False) -> str:
    """What a table's ``[low, high]`` are, from its attrs (``level``, ``resamples``); empty without intervals."""
    if "level" not in attrs:
        return ""
    sign = r"\%" if tex else " %"
    pct = f"{100 * attrs['level']:g}{sign}"
    return (
        f"[low, high] = {pct} bootstrap interval of that mean ({attrs['resamples']} resamples of the test images, "
        "stratified by label; pixel metrics resample whole images; every seed resampled alike): it covers the "
        "test set's sampling, not the spread of training, which the std shows"
    )


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``method_a`` -> ``method\\_a``)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


# ----------------------------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------------------------
def _labels(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table.columns.get_level_values(0)))


def _cells(table: pd.DataFrame, metric: str, pm: str, tex: bool = False) -> list[tuple[str, str, list[str]]]:
    percent = metric in PERCENT_METRICS
    out = []
    for dataset, cls in table.index:
        row = table.loc[(dataset, cls)]
        cells = [format_cell(row[(lab, "mean")], row[(lab, "std")], row[(lab, "n")], percent=percent, pm=pm,
                             low=row.get((lab, "low")), high=row.get((lab, "high")), tex=tex)
                 for lab in _labels(table)]  # fmt: skip
        out.append((str(dataset), str(cls), cells))
    return out


def _resolution_text(resolutions: Sequence[str], times: str) -> str:
    parts = []
    for r in resolutions:
        r = str(r)
        parts.append(f"{r}{times}{r}" if r.isdigit() else "native mask resolution")
    return ", ".join(parts) if parts else "unknown"


def _seed_text(table: pd.DataFrame) -> str:
    ns = set()
    for dataset, cls in table.index:
        if cls == _MEAN_ROW:
            continue
        for lab in _labels(table):
            n = table.loc[(dataset, cls), (lab, "n")]
            if not _missing(n) and int(n) > 0:
                ns.add(int(n))
    if not ns:
        return "no seeds"
    lo, hi = min(ns), max(ns)
    if lo == hi:
        return f"{lo} seed" + ("s" if lo != 1 else "")
    return f"{lo}–{hi} seeds per cell"


def _meta(table: pd.DataFrame, metric: str | None, resolution) -> tuple[str, list[str], list]:
    metric = metric if metric is not None else table.attrs.get("metric", "metric")
    if resolution is None:
        resolution = table.attrs.get("resolution", [])
    if isinstance(resolution, str | int):
        resolution = [resolution]
    return metric, [str(r) for r in resolution], list(table.attrs.get("fpr_limit", []))


# ----------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def format_markdown(table: pd.DataFrame, *, metric: str | None = None, resolution=None) -> str:
    """The table as a Markdown pipe table with a one-line description above it."""
    metric, resolutions, fpr_limits = _meta(table, metric, resolution)
    unit = " (%)" if metric in PERCENT_METRICS else ""
    desc = f"**{metric_name(metric)}{unit}**, evaluation grid {_resolution_text(resolutions, '×')}"
    if metric == "aupro" and fpr_limits:
        desc += f", FPR limit {', '.join(f'{v:g}' for v in fpr_limits)}"
    desc += f"; mean {PM} std over seeds ({_seed_text(table)}), n/a = not available."
    if interval_text(table.attrs):
        desc += f" {interval_text(table.attrs)}."
    header = ["Dataset", "Class", *_labels(table)]
    lines = [desc, "", "| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join([":---", ":---"] + ["---:"] * (len(header) - 2)) + "|"]  # fmt: skip
    for dataset, cls, cells in _cells(table, metric, PM):
        label = f"**{cls}**" if cls == _MEAN_ROW else _md_escape(cls)
        lines.append("| " + " | ".join([_md_escape(dataset), label, *cells]) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# LaTeX
# ----------------------------------------------------------------------------------------------------
def format_latex(table: pd.DataFrame, *, metric: str | None = None, resolution=None) -> str:
    """The table as a LaTeX ``table`` float using booktabs rules (``\\usepackage{booktabs}``)."""
    metric, resolutions, fpr_limits = _meta(table, metric, resolution)
    labels = _labels(table)
    unit = r" (\%)" if metric in PERCENT_METRICS else ""
    times = r"$\times$"
    caption = f"{latex_escape(metric_name(metric))}{unit} per class at evaluation resolution {_resolution_text(resolutions, times)}"
    if metric == "aupro" and fpr_limits:
        caption += f" (FPR limit {', '.join(f'{v:g}' for v in fpr_limits)})"
    seeds = _seed_text(table).replace("–", "--")
    caption += rf"; mean $\pm$ std over seeds ({seeds}); n/a: not available."
    if interval_text(table.attrs, tex=True):
        caption += " " + interval_text(table.attrs, tex=True).replace("[low, high]", "Subscript [low, high]") + "."
    ncols = 2 + len(labels)
    lines = [
        f"% generated by texad from the result JSONs: {metric}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:{metric}}}",
        r"\begin{tabular}{ll" + "r" * len(labels) + "}",
        r"\toprule",
        " & ".join(["Dataset", "Class", *(latex_escape(lab) for lab in labels)]) + r" \\",
        r"\midrule",
    ]
    previous = None
    for dataset, cls, cells in _cells(table, metric, r"$\pm$", tex=True):
        if previous is not None and dataset != previous:
            lines.append(r"\midrule")
        if cls == _MEAN_ROW:
            lines.append(rf"\cmidrule(l){{2-{ncols}}}")
            name = r"\textit{mean}"
        else:
            name = latex_escape(cls)
        first = latex_escape(dataset) if dataset != previous else ""
        lines.append(" & ".join([first, name, *cells]) + r" \\")
        previous = dataset
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
