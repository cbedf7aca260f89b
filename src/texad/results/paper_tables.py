"""The papers' tables with texad's reproduced numbers beside the published ones (CSV, Markdown, LaTeX).

Four tables, each built from the long table of :func:`texad.results.aggregate.collect` and the published
numbers of :func:`texad.results.published.load_published`:

* ``paper_method_b_table1``: Method B's result table: rows class then ``mean`` per dataset, column groups
  SimpleNet / DRAEM / Ours (Method B), each with image and pixel AUROC;
* ``paper_method_a_main``: Method A's main table: per class image AUROC, pixel AUROC and AUPRO;
* ``paper_method_a_tscales``: Method A's T-scales ablation: one row per variant (default, ``K{k}_n{n}_s{sigma}``,
  ``full_chain``), mean over the dataset's classes, with its cost beside the scores;
* ``extended``: all four methods, image AUROC, pixel AUROC, AUPRO and pixel AP, one row per class and method.

Every score appears three times: reproduced (mean ± std over seeds, the ``default`` variant unless the table is
an ablation), published, and Δ = reproduced − published in points. Reproduced cells and the dataset ``mean`` row
follow :func:`texad.results.aggregate.metric_table`; cells follow :mod:`texad.results.tables`. A published number
comes from the first source, in the table's order for that method, that gives a value; otherwise the cell says
n/a with a mark giving the reason (not found, not reported, no entry in the file, mean over other classes).
Nothing is estimated: a missing published number stays n/a.

The CSV is the long form (one row per dataset / class / method / metric, values as fractions); Markdown and
LaTeX are the human layouts, with the marks and sources explained under the table.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from texad.data.catalog import MVTEC_TEXTURES
from texad.results.ablation import ablation_table
from texad.results.aggregate import MEAN_ROW, STATS, metric_table
from texad.results.record import atomic_write_text, read_result
from texad.results.tables import PERCENT_METRICS, format_cell, interval_text, latex_escape, metric_name

__all__ = [
    "TABLES",
    "CSV_COLUMNS",
    "OFFICIAL_PROTOCOLS",
    "protocol_label",
    "NoResultsError",
    "Published",
    "PaperTable",
    "lookup_published",
    "method_b_table1",
    "method_a_main",
    "method_a_tscales",
    "extended_table",
    "build_paper_tables",
    "to_csv",
    "to_markdown",
    "to_latex",
    "write_paper_tables",
]

TABLES = ("paper_method_b_table1", "paper_method_a_main", "paper_method_a_tscales", "extended")
CSV_COLUMNS = (
    "table", "dataset", "class", "method", "variant", "protocol", "metric", "reproduced_mean", "reproduced_std",
    "n_seeds", "reproduced_low", "reproduced_high",
    "published", "published_source", "published_status", "published_ref", "published_note", "delta",
    "published_in_interval",
)  # fmt: skip
TSCALES_COLUMNS = (
    "n_scales",
    "steps_per_scale",
    "sigma_hi",
    "nfe_per_image",
    "s_per_image",
    "speedup",
    "n_classes",
)

DEFAULT_VARIANT = "default"
OFFICIAL_VARIANT = "official"
#: What each number's protocol is (the CSV's ``protocol`` column, the tables' labels): the fair default runs under
#: texad's one protocol; a method's ``official`` variant under its official code's evaluation
#: (``texad.methods.<method>.official``). The published numbers are under the papers' own protocols.
FAIR_PROTOCOL = "fair (texad protocol)"
OFFICIAL_PROTOCOLS = {
    "simplenet": "official (best test epoch, 288 crop of 329)",
    "method_b": "official (DDAD protocol: 224 crop of 256, masks > 0, fusion per 16)",
    "draem": "official (DRAEM masks: bilinear, only exact 1s)",
}
PROTOCOL_NOTE = (
    "Pub. = each paper's number under its own protocol (DDAD: 224 centre crop of 256 px, masks > 0; SimpleNet: "
    "best test-set epoch, 288 crop of 329 px; DRAEM: masks bilinear, only exact 1s). The fair rows use texad's "
    "one protocol (whole image, masks area-resized >= 0.5, no test-set selection); an official row runs the "
    "official code's evaluation, so the gap between the two rows is the protocol's and the official row's Δ "
    "is the implementation's."
)
FULL_CHAIN = "full_chain"
_TSCALES_NAME = re.compile(r"^K(\d+)_n(\d+)_s([0-9.eE+-]+)$")

#: Published sources per method, in order of preference: the first one with a value is used.
#: Table 1 is Method B's paper (amirian2024); its missing mean rows fall back to the baselines' own papers.
TABLE1_SOURCES = {
    "simplenet": ("amirian2024", "simplenet_paper"),
    "draem": ("amirian2024", "draem_paper"),
    "method_b": ("amirian2024",),
}
METHOD_A_SOURCES = {"method_a": ("teng2022",)}
#: The extended table prefers each method's own paper, then a paper that quotes it.
EXTENDED_SOURCES = {
    "method_a": ("teng2022",),
    "method_b": ("amirian2024",),
    "simplenet": ("simplenet_paper", "amirian2024"),
    "draem": ("draem_paper", "amirian2024"),
}

DATASET_ORDER = ("mvtec_ad", "dtd_synthetic")
DATASET_NAMES = {"mvtec_ad": "MVTec AD", "dtd_synthetic": "DTD-Synthetic"}
METHOD_NAMES = {"method_a": "Method A", "method_b": "Method B", "simplenet": "SimpleNet", "draem": "DRAEM"}

#: Reasons a published cell has no (comparable) value, or a caveat on its value: Markdown mark, LaTeX math
#: symbol, legend text.
_STATUS_MARKS = {
    "unverified": ("†", r"\dagger", "unverified: the spec gives this number but did not check it against "
                   "the source (published_note in the CSV says why)"),
    "not_found": ("‡", r"\ddagger", "not found: searched for in the source and not located"),
    "not_reported": ("§", r"\S", "not reported by the source"),
    "not_comparable": ("¶", r"\P", "the published mean covers other classes than the reproduced mean, "
                       "so it is not compared"),
}  # fmt: skip
_NO_ENTRY_NOTE = "n/a without a mark: the published-numbers file has no entry for this cell"


class NoResultsError(ValueError):
    """A table's method has no results: the table is skipped, which is not an error of the whole command."""


@dataclass(frozen=True)
class Published:
    """One published cell: the value (a fraction, NaN when absent) and where it comes from."""

    value: float
    source_id: str = ""
    status: str = "no_entry"
    ref: str = ""
    note: str = ""


@dataclass(frozen=True)
class Layout:
    """How a long table is laid out for people: which columns name a row, which a column group."""

    title: str
    row_keys: tuple[str, ...]
    group_keys: tuple[str, ...]
    sources: Mapping[str, Sequence[str]]
    labels: Mapping[str, str] = field(default_factory=dict)
    info: tuple[tuple[str, str, Callable[[float], str]], ...] = ()
    note: str = ""


@dataclass(frozen=True)
class PaperTable:
    """A built table: its name, the long form (CSV rows) and its layout."""

    name: str
    long: pd.DataFrame
    layout: Layout


# ------------------------------------------------------------------------------------------- published
def _entries(pub: pd.DataFrame, dataset: str, cls: str, method: str, metric: str, variant: str | None):
    """The file's entries for one cell; an ablation point (variant) matches only entries naming it."""
    rows = pub[(pub["dataset"] == dataset) & (pub["class"] == cls) & (pub["method"] == method)
               & (pub["metric"] == metric)]  # fmt: skip
    if "variant" in rows.columns:  # the file has no variant key today; an ablation entry would name one
        named = rows["variant"].fillna("").astype(str)
        return rows[named == (variant or "")]
    return rows if variant is None else rows.iloc[0:0]


def lookup_published(
    pub: pd.DataFrame,
    sources: Sequence[str],
    dataset: str,
    cls: str,
    method: str,
    metric: str,
    variant: str | None = None,
) -> Published:
    """The first of ``sources`` that gives a value; else the first that has an entry (its status says why
    there is no value); else ``no_entry``. ``variant`` names an ablation point (None: the main result)."""
    rows = _entries(pub, dataset, cls, method, metric, variant)
    without_value = None
    for source_id in sources:
        hit = rows[rows["source_id"] == source_id]
        if hit.empty:
            continue
        r = hit.iloc[0]
        found = Published(
            float(r["value"]), source_id, str(r["status"]), str(r["source"]), str(r["note"] or "")
        )
        if not math.isnan(found.value):
            return found
        without_value = without_value or found
    return without_value or Published(math.nan)


def _published_classes(pub: pd.DataFrame, source_id: str, dataset: str, method: str, metric: str) -> set[str]:
    """The classes a published mean averages: MVTec AD's five textures; elsewhere the source's own classes."""
    if dataset == "mvtec_ad":
        return set(MVTEC_TEXTURES)
    rows = pub[(pub["source_id"] == source_id) & (pub["dataset"] == dataset) & (pub["method"] == method)
               & (pub["metric"] == metric)]  # fmt: skip
    return set(rows["class"]) - {MEAN_ROW, "mean_all15"}


def _comparable_mean(pub, found: Published, dataset, method, metric, classes: Iterable[str]) -> Published:
    """A published mean is compared only when it averages the same classes as the reproduced mean row."""
    if math.isnan(found.value):
        return found
    expected = _published_classes(pub, found.source_id, dataset, method, metric)
    if set(classes) == expected:
        return found
    over = ", ".join(sorted(expected)) or "unknown classes"
    why = f"published mean over {over}; reproduced over {', '.join(sorted(classes))}"
    return Published(math.nan, found.source_id, "not_comparable", found.ref, why)


# ------------------------------------------------------------------------------------------- building
def protocol_label(method: str, variant: str) -> str:
    """The protocol a number used: fair (texad's) for every variant but a method's ``official`` one."""
    if variant == OFFICIAL_VARIANT:
        return OFFICIAL_PROTOCOLS.get(method, "official")
    return FAIR_PROTOCOL


def _record(table, dataset, cls, method, variant, metric, mean, std, n, found: Published,
            low=math.nan, high=math.nan) -> dict:  # fmt: skip
    known = not (pd.isna(low) or pd.isna(high) or math.isnan(found.value))
    return {
        "table": table, "dataset": dataset, "class": cls, "method": method, "variant": variant,
        "protocol": protocol_label(method, variant), "metric": metric,
        "reproduced_mean": mean, "reproduced_std": std, "n_seeds": n, "reproduced_low": low, "reproduced_high": high,
        "published": found.value, "published_source": found.source_id, "published_status": found.status,
        "published_ref": found.ref, "published_note": found.note, "delta": mean - found.value,
        "published_in_interval": (low <= found.value <= high) if known else pd.NA,
    }  # fmt: skip


def _long_frame(records: list[dict], extra: Sequence[str] = ()) -> pd.DataFrame:
    long = pd.DataFrame(records, columns=[*CSV_COLUMNS, *extra])
    long["n_seeds"] = long["n_seeds"].astype("Int64")
    long["published_in_interval"] = long["published_in_interval"].astype("boolean")
    for col in ("reproduced_mean", "reproduced_std", "reproduced_low", "reproduced_high", "published", "delta"):
        long[col] = long[col].astype(float)
    return long


def _dataset_key(name: str) -> tuple[int, str]:
    """MVTec AD first, then DTD-Synthetic, then any other dataset by name."""
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def _defaults(df: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    return df[df["method"].isin(methods) & (df["variant"] == DEFAULT_VARIANT)]


def _cell(table: pd.DataFrame | None, row: tuple[str, str], method: str) -> tuple:
    """(mean, std, n, low, high) of one method in a metric table; missing when the method has no run there."""
    if table is None or method not in table.columns.get_level_values(0) or row not in table.index:
        return math.nan, math.nan, pd.NA, math.nan, math.nan
    return tuple(table.loc[row, (method, stat)] for stat in STATS)


def _comparison(name: str, df: pd.DataFrame, pub: pd.DataFrame, methods, metrics, sources, intervals=None) -> pd.DataFrame:
    """The long table of default runs of ``methods``, and beside each method that has them its ``official``
    variant's runs: per (dataset, class incl. mean, method, variant, metric). Both rows of a method are set
    against the same published number."""
    tables = {m: metric_table(_defaults(df, methods), m, intervals) for m in metrics}
    official = df[df["method"].isin(methods) & (df["variant"] == OFFICIAL_VARIANT)]
    official_tables = {m: metric_table(official, m, intervals) for m in metrics} if not official.empty else {}
    index = sorted(tables[metrics[0]].index, key=lambda r: (_dataset_key(r[0]), r[1] == MEAN_ROW, r[1]))
    records = []
    for dataset, cls in index:
        classes = [c for d, c in index if d == dataset and c != MEAN_ROW]
        for method in methods:
            variants = [(DEFAULT_VARIANT, tables)]
            if method in set(official["method"]):
                variants.append((OFFICIAL_VARIANT, official_tables))
            for variant, by_metric in variants:
                for metric in metrics:
                    mean, std, n, low, high = _cell(by_metric.get(metric), (dataset, cls), method)
                    found = lookup_published(pub, sources[method], dataset, cls, method, metric)
                    if cls == MEAN_ROW:
                        found = _comparable_mean(pub, found, dataset, method, metric, classes)
                    records.append(_record(name, dataset, cls, method, variant, metric, mean, std, n, found,
                                           low, high))  # fmt: skip
    return _long_frame(records)


def _with_protocol(keys: tuple[str, ...], long: pd.DataFrame) -> tuple[str, ...]:
    """``keys`` with ``protocol`` after ``method`` when the table holds an official variant (each number then
    says which protocol it used); unchanged otherwise."""
    if not (long["variant"] == OFFICIAL_VARIANT).any():
        return keys
    i = keys.index("method") + 1
    return (*keys[:i], "protocol", *keys[i:])


def _require(df: pd.DataFrame, methods: Sequence[str]) -> None:
    """A table needs default runs of its method(s); without them it is skipped, not failed."""
    if _defaults(df, methods).empty:
        raise NoResultsError(f"no results for variant {DEFAULT_VARIANT!r} of {' / '.join(methods)}")


def method_b_table1(df: pd.DataFrame, pub: pd.DataFrame, intervals: pd.DataFrame | None = None) -> PaperTable:
    """Method B's Table 1: SimpleNet / DRAEM / Ours, image and pixel AUROC, per class and dataset mean."""
    _require(df, ["method_b"])
    methods, metrics = ("simplenet", "draem", "method_b"), ("image_auroc", "pixel_auroc")
    long = _comparison("paper_method_b_table1", df, pub, methods, metrics, TABLE1_SOURCES, intervals)
    layout = Layout(
        title="Method B (Amirian et al. 2024), layout of its result table: SimpleNet, DRAEM and Ours "
        "(Method B), default settings",
        row_keys=("dataset", "class"),
        group_keys=_with_protocol(("method", "metric"), long),
        sources=TABLE1_SOURCES,
        labels={"method_b": "Ours (Method B)"},
        note=PROTOCOL_NOTE if (long["variant"] == OFFICIAL_VARIANT).any() else "",
    )
    return PaperTable("paper_method_b_table1", long, layout)


def method_a_main(df: pd.DataFrame, pub: pd.DataFrame, intervals: pd.DataFrame | None = None) -> PaperTable:
    """Method A's main table (spec §4): per class image AUROC, pixel AUROC and PRO, default T-scales run."""
    _require(df, ["method_a"])
    metrics = ("image_auroc", "pixel_auroc", "aupro")
    long = _comparison("paper_method_a_main", df, pub, ("method_a",), metrics, METHOD_A_SOURCES, intervals)
    layout = Layout(
        title="Method A (Teng et al. 2022), main table: Method A with its default T-scales inference",
        row_keys=("dataset", "class"),
        group_keys=("metric",),
        sources=METHOD_A_SOURCES,
    )
    return PaperTable("paper_method_a_main", long, layout)


def extended_table(df: pd.DataFrame, pub: pd.DataFrame, intervals: pd.DataFrame | None = None) -> PaperTable:
    """texad's own table: every method's default run, four metrics, one row per class and method."""
    _require(df, tuple(EXTENDED_SOURCES))
    present = set(_defaults(df, tuple(EXTENDED_SOURCES))["method"])
    methods = tuple(m for m in EXTENDED_SOURCES if m in present)
    metrics = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
    long = _drop_empty(_comparison("extended", df, pub, methods, metrics, EXTENDED_SOURCES, intervals))
    layout = Layout(
        title="texad extended table: all methods, default settings",
        row_keys=_with_protocol(("dataset", "class", "method"), long),
        group_keys=("metric",),
        sources=EXTENDED_SOURCES,
        note=PROTOCOL_NOTE if (long["variant"] == OFFICIAL_VARIANT).any() else "",
    )
    return PaperTable("extended", long, layout)


def _drop_empty(long: pd.DataFrame) -> pd.DataFrame:
    """Leave out a (dataset, class, method, variant) row with neither a reproduced nor a published number: a
    method that was not run on a dataset no source reports would only add rows of n/a. An official row needs a
    reproduced number of its own (its published number is the default row's)."""
    keys = ["dataset", "class", "method", "variant"]
    published = long["published"].notna() & (long["variant"] == DEFAULT_VARIANT)
    has = long["reproduced_mean"].notna() | published
    keep = has.groupby([long[k] for k in keys]).transform("any")
    return long[keep].reset_index(drop=True)


# ------------------------------------------------------------------------------------------- T scales
def _tscales_variants(names: Iterable[str]) -> list[str]:
    """default first, the T-scales points by (K, n, sigma), the full chain last; other ablations left out."""
    points = sorted((n for n in names if _TSCALES_NAME.match(n)), key=lambda n: _parse_point(n))
    head = [DEFAULT_VARIANT] if DEFAULT_VARIANT in names else []
    tail = [FULL_CHAIN] if FULL_CHAIN in names else []
    return head + points + tail


def _parse_point(name: str) -> tuple[float, float, float]:
    k, n, s = _TSCALES_NAME.match(name).groups()
    return float(k), float(n), float(s)


def _point(name: str, runs: pd.DataFrame) -> tuple[float, float, float]:
    """(K, steps per scale, sigma_hi) of a variant: from its name, else from its run's recorded settings."""
    if _TSCALES_NAME.match(name):
        return _parse_point(name)
    settings = (read_result(runs["path"].iloc[0]).get("extra") or {}).get("settings") or {}
    inference = settings.get("inference") or {}
    sigma = float(inference.get("sigma_hi", math.nan))
    if name == FULL_CHAIN:  # one long chain: no scales, its length is the NFE
        return math.nan, math.nan, sigma
    return (
        float(inference.get("n_scales", math.nan)),
        float(inference.get("steps_per_scale", math.nan)),
        sigma,
    )


def method_a_tscales(df: pd.DataFrame, pub: pd.DataFrame, intervals: pd.DataFrame | None = None) -> PaperTable:
    """Method A's T-scales ablation: per dataset and variant, scores (mean over classes) and cost."""
    runs = df[df["method"] == "method_a"]
    variants = _tscales_variants(set(runs["variant"]))
    if not [v for v in variants if v != DEFAULT_VARIANT]:
        raise NoResultsError("no Method A T-scales ablation runs (K*_n*_s* or full_chain)")
    runs = runs[runs["variant"].isin(variants)]
    abl = ablation_table(runs, "method_a", reference=FULL_CHAIN).set_index(["dataset", "variant"])
    metrics = ("image_auroc", "pixel_auroc", "aupro")
    records = []
    for dataset in sorted(set(runs["dataset"]), key=_dataset_key):
        for variant in variants:
            here = runs[(runs["dataset"] == dataset) & (runs["variant"] == variant)]
            if here.empty:
                continue
            row = abl.loc[(dataset, variant)]
            k, n, sigma = _point(variant, here)
            info = {"n_scales": k, "steps_per_scale": n, "sigma_hi": sigma, "nfe_per_image": row["nfe_per_image"],
                    "s_per_image": row["s_per_image"], "speedup": row["speedup"],
                    "n_classes": here["class"].nunique()}  # fmt: skip
            for metric in metrics:
                found = lookup_published(pub, METHOD_A_SOURCES["method_a"], dataset, MEAN_ROW, "method_a", metric,
                                         variant=variant)  # fmt: skip
                low, high = _mean_interval(intervals, dataset, "method_a", variant, metric)
                rec = _record("paper_method_a_tscales", dataset, MEAN_ROW, "method_a", variant, metric,
                              row[metric], row[f"{metric}_std"], here["seed"].nunique(), found, low, high)  # fmt: skip
                records.append({**rec, **info})
    long = _long_frame(records, TSCALES_COLUMNS)
    layout = Layout(
        title="Method A (Teng et al. 2022), T-scales ablation: scores are means over the dataset's classes; "
        "speed-up = full chain s/image over the variant's (same workflow run)",
        row_keys=("dataset", "variant"),
        group_keys=("metric",),
        sources=METHOD_A_SOURCES,
        info=(
            ("K", "n_scales", _plain),
            ("n/scale", "steps_per_scale", _plain),
            ("σ_max", "sigma_hi", _plain),
            ("NFE/image", "nfe_per_image", _plain),
            ("s/image", "s_per_image", lambda v: _plain(v, "{:.3g}")),
            ("Speed-up", "speedup", lambda v: _plain(v, "{:.1f}x")),
        ),
        note="K = number of scales, n/scale = iterations per scale, σ_max = highest start noise (pixel units); "
        "the full chain takes every step of the reference grid.",
    )
    return PaperTable("paper_method_a_tscales", long, layout)


def _mean_interval(intervals: pd.DataFrame | None, dataset: str, method: str, variant: str, metric: str):
    """(low, high) of a dataset's mean row in ``intervals`` (NaN when it has none)."""
    if intervals is None or intervals.empty:
        return math.nan, math.nan
    hit = intervals[(intervals["dataset"] == dataset) & (intervals["class"] == MEAN_ROW)
                    & (intervals["method"] == method) & (intervals["variant"] == variant)
                    & (intervals["metric"] == metric)]  # fmt: skip
    return (float(hit["low"].iloc[0]), float(hit["high"].iloc[0])) if len(hit) else (math.nan, math.nan)


def _plain(value: float, fmt: str = "{:g}") -> str:
    return "–" if value is None or pd.isna(value) else fmt.format(float(value))


# ------------------------------------------------------------------------------------------- all tables
BUILDERS: dict[str, Callable[..., PaperTable]] = {
    "paper_method_b_table1": method_b_table1,
    "paper_method_a_main": method_a_main,
    "paper_method_a_tscales": method_a_tscales,
    "extended": extended_table,
}


def build_paper_tables(
    df: pd.DataFrame, pub: pd.DataFrame, names: Iterable[str] = TABLES, intervals: pd.DataFrame | None = None
) -> tuple[dict[str, PaperTable], dict[str, str]]:
    """Every table of ``names`` that the results allow, and for each skipped one the reason (its method has
    no results); an unknown name is an error. ``intervals`` (:func:`texad.results.intervals.interval_table`)
    puts each reproduced number's bootstrap interval beside it."""
    built, skipped = {}, {}
    for name in names:
        if name not in BUILDERS:
            raise ValueError(f"unknown paper table {name!r}; known: {', '.join(TABLES)}")
        try:
            built[name] = BUILDERS[name](df, pub, intervals)
            if intervals is not None and not intervals.empty:
                built[name].long.attrs.update(
                    level=float(intervals["level"].iloc[0]), resamples=int(intervals["resamples"].iloc[0])
                )
        except NoResultsError as exc:
            skipped[name] = str(exc)
    return built, skipped


# ------------------------------------------------------------------------------------------- text pieces
@dataclass
class _Legend:
    """Marks and source letters used while formatting one table, explained under it."""

    statuses: list[str] = field(default_factory=list)
    letters: dict[str, str] = field(default_factory=dict)
    refs: dict[str, list[str]] = field(default_factory=dict)
    no_entry: bool = False

    def letter(self, source_id: str, ref: str) -> str:
        self.refs.setdefault(source_id, [])
        if ref and ref not in self.refs[source_id]:
            self.refs[source_id].append(ref)
        return self.letters.setdefault(source_id, "abcdefghijklmnopqrstuvwxyz"[len(self.letters) % 26])

    def status(self, status: str) -> None:
        if status in _STATUS_MARKS and status not in self.statuses:
            self.statuses.append(status)
        self.no_entry |= status == "no_entry"


def _published_text(rec: pd.Series, primary: str, legend: _Legend, tex: bool) -> str:
    """The published value (or n/a) with its status mark and, when not the method's first source, its letter."""
    status, source = rec["published_status"], rec["published_source"]
    legend.status(status)
    marks = [_STATUS_MARKS[status][1 if tex else 0]] if status in _STATUS_MARKS else []
    if source:
        letter = legend.letter(source, rec["published_ref"])
        if source != primary:
            marks.append(rf"\mathrm{{{letter}}}" if tex else f" [{letter}]")
    text = format_cell(rec["published"], percent=rec["metric"] in PERCENT_METRICS)
    if marks and tex:
        return text + "$^{" + ",".join(marks) + "}$"  # one superscript: no "$$" between two marks
    return text + "".join(marks)


def _delta_text(rec: pd.Series) -> str:
    if pd.isna(rec["delta"]):
        return "n/a"
    scale = 100.0 if rec["metric"] in PERCENT_METRICS else 1.0
    return f"{scale * rec['delta']:+.1f}"


def _triple(rec: pd.Series | None, layout: Layout, legend: _Legend, tex: bool) -> list[str]:
    """Reproduced, published, Δ of one cell (three n/a when the table has no such cell)."""
    if rec is None:
        return ["n/a"] * 3
    pm = r"$\pm$" if tex else "±"
    rep = format_cell(rec["reproduced_mean"], rec["reproduced_std"], rec["n_seeds"],
                      percent=rec["metric"] in PERCENT_METRICS, pm=pm, low=rec["reproduced_low"],
                      high=rec["reproduced_high"], tex=tex)  # fmt: skip
    primary = layout.sources.get(rec["method"], ("",))[0]
    delta = _delta_text(rec)
    if rec["published_in_interval"] is False:  # pd.NA when unknown
        delta = rf"\textbf{{{delta}}}" if tex else f"**{delta}**"
    return [rep, _published_text(rec, primary, legend, tex), delta]


def _label(layout: Layout, key: str, value: str) -> str:
    """How a key value is shown: dataset and method names, metric names, otherwise the value itself."""
    if key == "dataset":
        return DATASET_NAMES.get(value, value)
    if key == "method":
        return layout.labels.get(value, METHOD_NAMES.get(value, value))
    if key == "metric":
        return metric_name(value)
    return str(value)


def _grid(pt: PaperTable) -> tuple[list[tuple], list[tuple], dict[tuple, pd.Series]]:
    """Row ids, column-group ids (both in the long table's order) and the record of each (row, group)."""
    lay, long = pt.layout, pt.long
    rows = list(dict.fromkeys(long[list(lay.row_keys)].itertuples(index=False, name=None)))
    groups = list(dict.fromkeys(long[list(lay.group_keys)].itertuples(index=False, name=None)))
    cells = {}
    for _, rec in long.iterrows():
        cells[(tuple(rec[k] for k in lay.row_keys), tuple(rec[k] for k in lay.group_keys))] = rec
    return rows, groups, cells


def _seed_text(long: pd.DataFrame) -> str:
    ns = long.loc[long["class"] != MEAN_ROW, "n_seeds"].dropna()
    if ns.empty:  # an ablation table: every row is a dataset mean
        ns = long["n_seeds"].dropna()
    if ns.empty:
        return "no seeds"
    lo, hi = int(ns.min()), int(ns.max())
    return f"{lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"{lo}–{hi} seeds per cell"


def _legend_lines(pt: PaperTable, legend: _Legend, tex: bool) -> list[str]:
    """The explanation under a table: marks used, n/a without a mark, and the sources with their letters."""
    lines = [("$^{" + _STATUS_MARKS[s][1] + "}$" if tex else _STATUS_MARKS[s][0]) + " " + _STATUS_MARKS[s][2]
             for s in legend.statuses]  # fmt: skip
    if legend.no_entry:
        lines.append(_NO_ENTRY_NOTE)
    first = {}
    for method, sources in pt.layout.sources.items():
        if method in set(pt.long["method"]) and sources:
            first.setdefault(sources[0], []).append(_label(pt.layout, "method", method))
    for source_id, letter in legend.letters.items():
        refs = "; ".join(legend.refs[source_id]) or "no reference"
        untagged = f" (untagged for {', '.join(first[source_id])})" if source_id in first else ""
        lines.append(f"[{letter}] {source_id}{untagged}: {refs}")
    if pt.layout.note:
        lines.append(pt.layout.note)
    return lines


def _description(pt: PaperTable) -> str:
    """The line above (Markdown) or the caption of (LaTeX) a table: what the numbers are."""
    metrics = ", ".join(metric_name(m) for m in dict.fromkeys(pt.long["metric"]))
    text = (
        f"{pt.layout.title}. {metrics} (%). Rep. = reproduced, mean ± std over seeds ({_seed_text(pt.long)}); "
        "Pub. = published; Δ = Rep. − Pub. in points; n/a = not available."
    )
    if interval_text(pt.long.attrs) and pt.long["reproduced_low"].notna().any():
        text += f" {interval_text(pt.long.attrs)}. A bold Δ: the published number lies outside that interval."
    return text


# ------------------------------------------------------------------------------------------- formats
def to_csv(pt: PaperTable) -> str:
    """The long form, full precision (shortest round-trip floats), empty fields for missing values."""
    buf = io.StringIO()
    pt.long.to_csv(buf, index=False, float_format=lambda x: repr(float(x)), lineterminator="\n")
    return buf.getvalue()


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def to_markdown(pt: PaperTable) -> str:
    """A pipe table: the row keys, the info columns, then Rep. / Pub. / Δ per column group; the dataset
    ``mean`` row in bold; marks and sources explained under it."""
    lay = pt.layout
    rows, groups, cells = _grid(pt)
    legend = _Legend()
    header = [k.capitalize() for k in lay.row_keys] + [h for h, _, _ in lay.info]
    for g in groups:
        name = " · ".join(_label(lay, k, v) for k, v in zip(lay.group_keys, g, strict=True))
        header += [f"{name}: Rep.", "Pub.", "Δ"]
    n_keys = len(lay.row_keys)
    lines = [f"**{pt.name}**: {_description(pt)}", "",
             "| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join([":---"] * n_keys + ["---:"] * (len(header) - n_keys)) + "|"]  # fmt: skip
    for row in rows:
        keys = [_label(lay, k, v) for k, v in zip(lay.row_keys, row, strict=True)]
        keys = [f"**{v}**" if v == MEAN_ROW else _md_escape(v) for v in keys]
        first = next(rec for g in groups if (rec := cells.get((row, g))) is not None)
        info = [fmt(first[col]) for _, col, fmt in lay.info]
        body = [c for g in groups for c in _triple(cells.get((row, g)), lay, legend, tex=False)]
        lines.append("| " + " | ".join([*keys, *info, *body]) + " |")
    lines.append("")
    lines += [f"- {_md_escape(line)}" for line in _legend_lines(pt, legend, tex=False)]
    return "\n".join(lines) + "\n"


def _latex_header(lay: Layout, groups: list[tuple], n_lead: int) -> list[str]:
    """One header row per group key (equal neighbours merged under a \\multicolumn with a \\cmidrule), then
    Rep. / Pub. / Δ under every group."""
    lines = []
    for level in range(len(lay.group_keys)):
        cells, rules, col = [""] * n_lead, [], n_lead + 1
        i = 0
        while i < len(groups):
            j = i
            while j + 1 < len(groups) and groups[j + 1][: level + 1] == groups[i][: level + 1]:
                j += 1
            span = 3 * (j - i + 1)
            name = latex_escape(_label(lay, lay.group_keys[level], groups[i][level]))
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{name}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
            i = j + 1
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    lead = [latex_note(k.capitalize()) for k in lay.row_keys] + [latex_note(h) for h, _, _ in lay.info]
    lines.append(" & ".join(lead + ["Rep.", "Pub.", r"$\Delta$"] * len(groups)) + r" \\")
    return lines


def to_latex(pt: PaperTable) -> str:
    """A ``table*`` float with a booktabs ``tabular`` (``\\usepackage{booktabs}``): grouped headers, a
    ``\\midrule`` between datasets, the mean rows in italics, marks and sources explained under it."""
    lay = pt.layout
    rows, groups, cells = _grid(pt)
    legend = _Legend()
    n_lead = len(lay.row_keys) + len(lay.info)
    body, previous = [], None
    for row in rows:
        if previous is not None and row[0] != previous[0]:
            body.append(r"\midrule")
        keys = []
        for i, (k, v) in enumerate(zip(lay.row_keys, row, strict=True)):
            same = previous is not None and previous[: i + 1] == row[: i + 1] and i < len(row) - 1
            keys.append(
                "" if same else (r"\textit{mean}" if v == MEAN_ROW else latex_escape(_label(lay, k, v)))
            )
        first = next(rec for g in groups if (rec := cells.get((row, g))) is not None)
        info = [latex_note(re.sub(r"(\d)x$", r"\1×", fmt(first[col]))) for _, col, fmt in lay.info]
        triples = [c for g in groups for c in _triple(cells.get((row, g)), lay, legend, tex=True)]
        body.append(" & ".join([*keys, *info, *triples]) + r" \\")
        previous = row
    notes = [latex_note(line) for line in _legend_lines(pt, legend, tex=True)]
    lines = [
        f"% generated by texad from the result JSONs and the published numbers: {pt.name}",
        r"\begin{table*}[t]",
        r"\centering",
        r"\scriptsize",
        r"\setlength{\tabcolsep}{3pt}",
        rf"\caption{{{latex_note(_description(pt))}}}",
        rf"\label{{tab:{pt.name}}}",
        r"\begin{tabular}{" + "l" * len(lay.row_keys) + "r" * (len(lay.info) + 3 * len(groups)) + "}",
        r"\toprule",
        *_latex_header(lay, groups, n_lead),
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\par\smallskip",
        *[line + r"\par" for line in notes],
        r"\end{table*}",
    ]
    return "\n".join(lines) + "\n"


_LATEX_MATH = re.compile(r"(\$[^$]*\$)")


def latex_note(text: str) -> str:
    """Escape a note for LaTeX, leaving its ``$...$`` pieces (marks, Δ, ±) as they are."""
    for plain, tex in (
        ("Δ", r"$\Delta$"),
        ("σ", r"$\sigma$"),
        ("±", r"$\pm$"),
        ("×", r"$\times$"),
        ("−", "$-$"),
        ("–", "--"),
    ):
        text = text.replace(plain, tex)
    return "".join(p if _LATEX_MATH.fullmatch(p) else latex_escape(p) for p in _LATEX_MATH.split(text))


# ------------------------------------------------------------------------------------------- writing
def write_paper_tables(tables: Mapping[str, PaperTable], out_dir: str | Path) -> list[Path]:
    """``<name>.csv`` / ``.md`` / ``.tex`` per table in ``out_dir``, each atomically; returns the paths.
    Every text is formatted before anything is written."""
    texts = {(name, suffix): fmt(pt) for name, pt in tables.items()
             for suffix, fmt in ((".csv", to_csv), (".md", to_markdown), (".tex", to_latex))}  # fmt: skip
    written = []
    for (name, suffix), text in texts.items():
        path = Path(out_dir) / f"{name}{suffix}"
        atomic_write_text(path, text)
        written.append(path)
    return written
