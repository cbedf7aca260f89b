"""The papers' claims held against texad's runs: one row per claim, dataset and metric, with a computed verdict.

The claims are data (``workflow/report/claims.yaml``, :func:`load_claims`), each with its source in the published
numbers' file. For each claim and dataset, :func:`evaluate_claims` takes the classes where both sides ran
(:mod:`texad.results.intervals`), the paired bootstrap difference A − B of their seed-pooled estimates averaged
over those classes, its interval, and for image AUROC DeLong's test beside it. :func:`verdict` turns the numbers of
a row into its verdict, and nothing else does:

- ``superiority``: *supported* when the interval of A − B lies above 0, *contradicted* when it lies below 0,
  *inconclusive* when it holds 0;
- ``cheaper_within_margin``: *contradicted* when A saves fewer than ``min_nfe_factor`` times the network
  evaluations of B; else *supported* when the interval lies above −margin, *contradicted* when it lies below,
  *inconclusive* when it holds −margin;
- *untested* when no class ran both sides (the row says which config keys would run them).

A paper's own published difference (both sides' dataset means from the claim's source) stands beside the
reproduced one where the source gives both.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from texad.config.schema import ConfigError, read_document
from texad.results.intervals import MEAN_ROW, Bootstraps
from texad.results.paper_tables import DATASET_NAMES, METHOD_NAMES, latex_note
from texad.results.published import published_lookup
from texad.results.record import atomic_write_text
from texad.results.tables import latex_escape, metric_name

__all__ = [
    "VERDICTS",
    "CLAIM_COLUMNS",
    "Claim",
    "load_claims",
    "verdict",
    "evaluate_claims",
    "to_csv",
    "to_markdown",
    "to_latex",
    "write_claims",
]

VERDICTS = ("supported", "contradicted", "inconclusive", "untested")
CLAIM_COLUMNS = (
    "claim", "statement", "source_id", "source", "where", "test", "dataset", "metric", "a", "b", "classes",
    "seeds_a", "seeds_b", "estimate_a", "estimate_b", "difference", "low", "high", "level", "resamples",
    "delong_low", "delong_high", "delong_p", "nfe_a", "nfe_b", "nfe_factor", "margin", "min_nfe_factor",
    "published_a", "published_b", "published_difference", "verdict", "reason",
)  # fmt: skip
_SCHEMA = "claims"


@dataclass(frozen=True)
class Claim:
    """One claim of ``claims.yaml``, key for key (``margin`` and ``min_nfe_factor`` NaN for superiority)."""

    id: str
    statement: str
    source_id: str
    source: str
    where: str
    test: str
    a: Mapping
    b: Mapping
    metrics: tuple[str, ...]
    enable: str
    margin: float = math.nan
    min_nfe_factor: float = math.nan
    margin_note: str = ""


def load_claims(path: str | Path, sources: Mapping[str, str]) -> list[Claim]:
    """Read and validate the claims file; ``sources`` maps each known source_id to its citation. A missing,
    malformed or invalid file, an unknown source or a repeated id raises ConfigError naming the file and claim."""
    path = Path(path)
    what = f"claims {path}"
    data = read_document(path, "claims", _SCHEMA)
    claims, problems, seen = [], [], set()
    for i, c in enumerate(data["claims"]):
        if c["source_id"] not in sources:
            problems.append(f"claims[{i}].source_id: {c['source_id']!r} is not a source of the published numbers "
                            f"(known: {', '.join(sorted(sources))})")  # fmt: skip
        if c["id"] in seen:
            problems.append(f"claims[{i}].id: {c['id']!r} is used twice")
        seen.add(c["id"])
        claims.append(Claim(
            id=c["id"], statement=c["statement"], source_id=c["source_id"], source=sources.get(c["source_id"], ""),
            where=c["where"], test=c["test"], a=c["a"], b=c["b"], metrics=tuple(c["metrics"]), enable=c["enable"],
            margin=float(c.get("margin", math.nan)), min_nfe_factor=float(c.get("min_nfe_factor", math.nan)),
            margin_note=c.get("margin_note", ""),
        ))  # fmt: skip
    if problems:
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(problems))
    return claims


def verdict(
    test: str, low: float, high: float, *, margin: float = math.nan, nfe_factor: float = math.nan,
    min_nfe_factor: float = math.nan,
) -> tuple[str, str]:  # fmt: skip
    """(verdict, reason) of one row from its interval of A − B (and, for ``cheaper_within_margin``, its margin and
    evaluation factor); ``untested`` when the interval is missing."""
    if math.isnan(low) or math.isnan(high):
        return "untested", "no class ran both sides"
    if test == "superiority":
        if low > 0:
            return "supported", "the interval of A − B lies above 0"
        if high < 0:
            return "contradicted", "the interval of A − B lies below 0"
        return "inconclusive", "the interval of A − B holds 0"
    if test == "cheaper_within_margin":
        if math.isnan(nfe_factor):
            return "untested", "the runs record no network evaluations"
        if nfe_factor < min_nfe_factor:
            return (
                "contradicted",
                f"A saves {nfe_factor:.3g}x the evaluations of B, fewer than {min_nfe_factor:g}x",
            )
        if low > -margin:
            return (
                "supported",
                f"{nfe_factor:.3g}x fewer evaluations; the interval of A − B lies above −{margin:g}",
            )
        if high < -margin:
            return (
                "contradicted",
                f"{nfe_factor:.3g}x fewer evaluations, but the interval lies below −{margin:g}",
            )
        return "inconclusive", f"{nfe_factor:.3g}x fewer evaluations; the interval of A − B holds −{margin:g}"
    raise ValueError(f"unknown claim test {test!r}")


# ------------------------------------------------------------------------------------------------ resolving
def _side_label(side: Mapping) -> str:
    name = METHOD_NAMES.get(side["method"], side["method"])
    if "point" in side:
        return f"{name} ({', '.join(f'{k} {v}' for k, v in side['point'].items())})"
    variant = side.get("variant", "default")
    return name if variant == "default" else f"{name} ({variant})"


def _variant(boot: Bootstraps, dataset: str, cls: str, side: Mapping) -> str | None:
    """The variant that ``side`` names on one class: its ``variant``, or the neighbour of the class's default
    guidance point with ``point`` changed (None when the class has no default run to start from)."""
    if "point" not in side:
        return side.get("variant", "default")
    from texad.methods.method_b.ablation import neighbour_point

    cb = boot.classes[(dataset, cls)]
    rows = cb.runs(side["method"], "default")
    if rows.size == 0:
        return None
    return neighbour_point(str(cb.point[rows[0]]), **side["point"])


def _classes(boot: Bootstraps, dataset: str, claim: Claim) -> tuple[list[str], list, list]:
    """The classes of ``dataset`` where both sides ran as different runs, and each side's (method, variant)."""
    keep, sel_a, sel_b = [], [], []
    for cls in boot.dataset_classes(dataset):
        cb = boot.classes[(dataset, cls)]
        va, vb = _variant(boot, dataset, cls, claim.a), _variant(boot, dataset, cls, claim.b)
        if va is None or vb is None:
            continue
        rows_a, rows_b = cb.runs(claim.a["method"], va), cb.runs(claim.b["method"], vb)
        if rows_a.size == 0 or rows_b.size == 0 or set(rows_a) == set(rows_b):
            continue  # a side did not run, or both sides are the same run (the class's default is that point)
        keep.append(cls)
        sel_a.append((claim.a["method"], va))
        sel_b.append((claim.b["method"], vb))
    return keep, sel_a, sel_b


def _published(pub: pd.DataFrame | None, claim: Claim, dataset: str, metric: str) -> tuple[float, float]:
    """Both sides' dataset means from the claim's source (only for sides that are methods' default runs)."""
    if pub is None or any(
        "point" in s or s.get("variant", "default") != "default" for s in (claim.a, claim.b)
    ):
        return math.nan, math.nan
    return tuple(published_lookup(pub, claim.source_id, dataset, MEAN_ROW, s["method"], metric)
                 for s in (claim.a, claim.b))  # fmt: skip


def evaluate_claims(claims: list[Claim], boot: Bootstraps, pub: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim, dataset (of the bootstrap files) and metric; columns :data:`CLAIM_COLUMNS`."""
    records = []
    datasets = sorted({d for d, _ in boot.classes}) or [""]
    for claim in claims:
        for dataset in datasets:
            classes, sel_a, sel_b = _classes(boot, dataset, claim) if dataset else ([], [], [])
            for metric in claim.metrics:
                rec = dict.fromkeys(CLAIM_COLUMNS, math.nan)
                rec.update(claim=claim.id, statement=claim.statement, source_id=claim.source_id, source=claim.source,
                           where=claim.where, test=claim.test, dataset=dataset, metric=metric,
                           a=_side_label(claim.a), b=_side_label(claim.b), classes=" ".join(classes),
                           seeds_a="", seeds_b="", level=boot.level, resamples=boot.resamples,
                           margin=claim.margin, min_nfe_factor=claim.min_nfe_factor)  # fmt: skip
                rec["published_a"], rec["published_b"] = _published(pub, claim, dataset, metric)
                rec["published_difference"] = rec["published_a"] - rec["published_b"]
                diff = boot.difference(dataset, classes, sel_a, sel_b, metric) if classes else None
                if diff is not None:
                    ea = [boot.estimate(dataset, c, *s, metric) for c, s in zip(classes, sel_a, strict=True)]
                    eb = [boot.estimate(dataset, c, *s, metric) for c, s in zip(classes, sel_b, strict=True)]
                    rec.update(difference=diff.value, low=diff.low, high=diff.high,
                               estimate_a=sum(e.value for e in ea) / len(ea),
                               estimate_b=sum(e.value for e in eb) / len(eb),
                               seeds_a=" ".join(map(str, sorted({s for e in ea for s in e.seeds}))),
                               seeds_b=" ".join(map(str, sorted({s for e in eb for s in e.seeds}))))  # fmt: skip
                    if diff.delong is not None:
                        rec.update(
                            delong_low=diff.delong.low,
                            delong_high=diff.delong.high,
                            delong_p=diff.delong.p_value,
                        )
                    nfe_a = sum(
                        boot.nfe(dataset, c, *s) for c, s in zip(classes, sel_a, strict=True)
                    ) / len(classes)
                    nfe_b = sum(
                        boot.nfe(dataset, c, *s) for c, s in zip(classes, sel_b, strict=True)
                    ) / len(classes)
                    rec.update(nfe_a=nfe_a, nfe_b=nfe_b, nfe_factor=nfe_b / nfe_a if nfe_a > 0 else math.nan)
                rec["verdict"], rec["reason"] = verdict(
                    claim.test,
                    rec["low"],
                    rec["high"],
                    margin=claim.margin,
                    nfe_factor=rec["nfe_factor"],
                    min_nfe_factor=claim.min_nfe_factor,
                )
                if rec["verdict"] == "untested" and diff is None:
                    rec["reason"] = f"no class ran both sides; to run them: {claim.enable}"
                records.append(rec)
    return pd.DataFrame(records, columns=list(CLAIM_COLUMNS))


# ------------------------------------------------------------------------------------------------ formats
def to_csv(rows: pd.DataFrame) -> str:
    buf = io.StringIO()
    rows.to_csv(buf, index=False, float_format=lambda x: repr(float(x)), lineterminator="\n")
    return buf.getvalue()


def _points(value: float, signed: bool = True) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _interval(rec: pd.Series, low: str = "low", high: str = "high") -> str:
    if pd.isna(rec[low]):
        return "n/a"
    return f"[{_points(rec[low])}, {_points(rec[high])}]"


def _cells(rec: pd.Series) -> list[str]:
    dataset = DATASET_NAMES.get(rec["dataset"], rec["dataset"]) or "n/a"
    delong = (
        "n/a"
        if pd.isna(rec["delong_low"])
        else f"{_interval(rec, 'delong_low', 'delong_high')}, p {rec['delong_p']:.2g}"
    )
    nfe = (
        "n/a"
        if pd.isna(rec["nfe_factor"]) or rec["test"] != "cheaper_within_margin"
        else f"{rec['nfe_factor']:.3g}x"
    )
    sides = (
        "n/a"
        if pd.isna(rec["estimate_a"])
        else f"{_points(rec['estimate_a'], False)} vs {_points(rec['estimate_b'], False)}"
    )
    return [
        rec["claim"], dataset, metric_name(rec["metric"]), f"{rec['a']} − {rec['b']}",
        str(len(rec["classes"].split())) if rec["classes"] else "0", sides, _points(rec["difference"]),
        _interval(rec), delong, nfe, _points(rec["published_difference"]), f"{rec['verdict']}: {rec['reason']}",
    ]  # fmt: skip


_HEADER = ["Claim", "Dataset", "Metric", "A − B", "Classes", "A vs B", "Δ", "Interval", "DeLong", "NFE saved",
           "Pub. Δ", "Verdict"]  # fmt: skip


def _description(rows: pd.DataFrame) -> str:
    level = rows["level"].dropna()
    pct = f"{100 * level.iloc[0]:g} %" if len(level) else "the configured level"
    resamples = rows["resamples"].dropna()
    n = f"{int(resamples.iloc[0])}" if len(resamples) else "the configured number of"
    return (
        "**claims**: each paper's claim held against the runs. A vs B = the two sides' seed-pooled means (%) over "
        f"the classes where both ran; Δ = A − B in points; Interval = its {pct} paired bootstrap interval ({n} "
        "resamples of each class's test images, the same for both sides); DeLong = the normal-theory interval and "
        "p-value of DeLong's paired test (image AUROC), a check on the bootstrap; NFE saved = B's network "
        "evaluations per image over A's; Pub. Δ = the difference of the source's own dataset means. Verdicts are "
        "computed from the interval (and the evaluation factor), never typed."
    )


def _claim_notes(claims: list[Claim]) -> list[str]:
    return [f"{c.id}: {c.statement}. Source: {c.source_id} ({c.where})."
            + (f" Margin {c.margin:g}, at least {c.min_nfe_factor:g}x: {c.margin_note}" if c.margin_note else "")
            for c in claims]  # fmt: skip


def to_markdown(rows: pd.DataFrame, claims: list[Claim]) -> str:
    esc = lambda t: str(t).replace("|", r"\|")  # noqa: E731
    lines = [_description(rows), "", "| " + " | ".join(_HEADER) + " |",
             "|" + "|".join([":---"] * 4 + ["---:"] * 7 + [":---"]) + "|"]  # fmt: skip
    for _, rec in rows.iterrows():
        cells = _cells(rec)
        cells[-1] = f"**{rec['verdict']}**: {esc(rec['reason'])}"
        lines.append(
            "| " + " | ".join(esc(c) if i < len(cells) - 1 else c for i, c in enumerate(cells)) + " |"
        )
    lines.append("")
    lines += [f"- {esc(n)}" for n in _claim_notes(claims)]
    return "\n".join(lines) + "\n"


def to_latex(rows: pd.DataFrame, claims: list[Claim]) -> str:
    body = []
    for _, rec in rows.iterrows():
        cells = [latex_note(c) for c in _cells(rec)]
        cells[0] = latex_escape(rec["claim"])
        cells[-1] = rf"\textbf{{{rec['verdict']}}}"
        body.append(" & ".join(cells) + r" \\")
    notes = [latex_note(n) + r"\par" for n in _claim_notes(claims)]
    reasons = "Verdict reasons are in claims.csv (column reason)."
    return "\n".join([
        "% generated by texad from the classes' bootstrap files and workflow/report/claims.yaml: claims",
        r"\begin{table*}[t]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
        rf"\caption{{{latex_note(_description(rows).replace('**claims**: ', ''))} {reasons}}}",
        r"\label{tab:claims}", r"\begin{tabular}{llll" + "r" * 7 + "l}", r"\toprule",
        " & ".join(latex_note(h) for h in _HEADER) + r" \\", r"\midrule", *body, r"\bottomrule",
        r"\end{tabular}", r"\par\smallskip", *notes, r"\end{table*}",
    ]) + "\n"  # fmt: skip


def write_claims(rows: pd.DataFrame, claims: list[Claim], out_dir: str | Path) -> list[Path]:
    """``claims.csv`` / ``.md`` / ``.tex`` in ``out_dir``, each atomically (all formatted before any is written)."""
    texts = {".csv": to_csv(rows), ".md": to_markdown(rows, claims), ".tex": to_latex(rows, claims)}
    written = []
    for suffix, text in texts.items():
        path = Path(out_dir) / f"claims{suffix}"
        atomic_write_text(path, text)
        written.append(path)
    return written
