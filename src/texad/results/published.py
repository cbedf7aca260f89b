"""The papers' published numbers, read from data (``workflow/report/published.yaml``), never typed into code.

:func:`load_published` validates the file against ``workflow/schemas/published.schema.yaml`` and returns one
row per published number, the value as a fraction (percent / 100; NaN where it was not found or is not
reported); :func:`published_lookup` picks one value out of that table.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pandas as pd

from texad.config.schema import ConfigError, read_document

__all__ = ["KEY_COLUMNS", "COLUMNS", "load_published", "load_sources", "published_lookup"]

KEY_COLUMNS = ("source_id", "dataset", "class", "method", "metric")
COLUMNS = (*KEY_COLUMNS, "value", "status", "source", "note")
_SCHEMA = "published"


def _source_text(source: dict, table: str | None) -> str:
    """``<url>, <table>`` (the entry's own table when it names one)."""
    url = source["url"] or "URL not found"
    return f"{url}, {table or source['table']}"


def _fraction(percent: float) -> float:
    """``82.9`` -> ``0.829``: the float nearest the decimal fraction (``82.9 / 100`` gives 0.8290000000000001)."""
    return float(Decimal(str(percent)) / 100)


def _read(path: str | Path) -> dict:
    """The published numbers' file, parsed and validated against its schema (ConfigError naming the file)."""
    return read_document(Path(path), "published numbers", _SCHEMA)


def load_sources(path: str | Path) -> dict[str, str]:
    """source_id -> citation of every source in the published numbers' file (validated as :func:`load_published`)."""
    return {k: " ".join(v["citation"].split()) for k, v in _read(path)["sources"].items()}


def load_published(path: str | Path) -> pd.DataFrame:
    """Read, validate and tabulate the published numbers in ``path``.

    Columns: ``source_id, dataset, class, method, metric, value, status, source, note``; ``value`` is a
    fraction in [0, 1] (NaN for status not_found / not_reported), ``source`` is ``<url>, <table>`` and
    ``note`` is empty when the entry has none.  Rows keep the file's order.  A missing, malformed or invalid
    file, an entry naming an unknown source and two entries with the same (source_id, dataset, class,
    method, metric) raise ConfigError naming the file and the entries (``entries[12].metric: ...``).
    """
    data = _read(path)
    what = f"published numbers {path}"

    sources = data["sources"]
    rows = []
    seen: dict[tuple, int] = {}
    problems = []
    for i, entry in enumerate(data["entries"]):
        key = tuple(entry[k] for k in KEY_COLUMNS)
        if entry["source_id"] not in sources:
            problems.append(
                f"entries[{i}].source_id: {entry['source_id']!r} is not listed under sources "
                f"(known: {', '.join(sorted(sources))})"
            )
            continue
        if key in seen:
            problems.append(
                f"entries[{i}] repeats entries[{seen[key]}]: both give {'/'.join(key[1:])} of source "
                f"{key[0]}; keep one of them"
            )
            continue
        seen[key] = i
        value = entry["value"]
        rows.append(
            (
                *key,
                math.nan if value is None else _fraction(value),
                entry["status"],
                _source_text(sources[entry["source_id"]], entry.get("table")),
                entry.get("note", ""),
            )
        )
    if problems:
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(problems))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["value"] = df["value"].astype(float)
    return df


def published_lookup(
    df: pd.DataFrame, source_id: str, dataset: str, class_name: str, method: str, metric: str
) -> float:
    """The published value (a fraction) for one cell of ``df``; NaN when it is absent or not found."""
    hit = df.loc[
        (df["source_id"] == source_id)
        & (df["dataset"] == dataset)
        & (df["class"] == class_name)
        & (df["method"] == method)
        & (df["metric"] == metric),
        "value",
    ]
    return float(hit.iloc[0]) if len(hit) else math.nan
