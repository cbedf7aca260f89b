"""Confidence intervals and paired differences from the classes' bootstrap files (``texad bootstrap``).

* :class:`Bootstraps` reads ``results/uncertainty/<dataset>/<class>.npz`` files
  (:mod:`texad.evaluation.class_bootstrap`);
* :meth:`Bootstraps.estimate`: a cell's value and interval. The value is the seed-pooled estimate: the mean over
  the run's seeds of each seed's metric (what the tables show as the mean); its interval is the percentile interval
  of that mean under the bootstrap of the test images, every seed resampled with the same rows. It says how much the
  test images leave the number open for these trained models; the spread of training itself is the std over seeds
  that the tables show beside it. A dataset's ``mean`` row averages its classes, whose resamples are independent;
* :meth:`Bootstraps.difference`: A − B on the same test images (paired: the same rows for both), averaged over the
  given classes, with DeLong's test for image AUROC beside it (:func:`texad.evaluation.uncertainty.delong`, the
  placement values averaged over seeds; classes combined as independent);
* :func:`interval_table`: every cell's interval as a long table (``results/tables/intervals.csv``).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from texad.config.schema import ConfigError
from texad.evaluation.class_bootstrap import FORMAT, METRICS
from texad.evaluation.uncertainty import delong, interval

__all__ = [
    "MEAN_ROW",
    "INTERVAL_COLUMNS",
    "Estimate",
    "DeLong",
    "Difference",
    "ClassBootstrap",
    "Bootstraps",
    "interval_table",
]

MEAN_ROW = "mean"
INTERVAL_COLUMNS = (
    "dataset", "class", "method", "variant", "metric", "estimate", "low", "high", "level", "resamples", "n_seeds",
    "seeds",
)  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """A seed-pooled estimate and its bootstrap interval."""

    value: float
    low: float
    high: float
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class DeLong:
    """DeLong's paired test of an image-AUROC difference: the normal-theory interval and two-sided p-value."""

    value: float
    low: float
    high: float
    p_value: float


@dataclass(frozen=True)
class Difference:
    """A − B on the same test images, averaged over ``classes``, with its paired bootstrap interval."""

    value: float
    low: float
    high: float
    classes: tuple[str, ...]
    delong: DeLong | None = None


@dataclass(frozen=True)
class ClassBootstrap:
    """One class's bootstrap file, read back."""

    path: Path
    dataset: str
    cls: str
    metrics: tuple[str, ...]
    level: float
    resamples: int
    method: np.ndarray
    variant: np.ndarray
    seed: np.ndarray
    point: np.ndarray
    nfe_per_image: np.ndarray
    estimate: np.ndarray
    replicates: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def read(cls, path: str | Path) -> ClassBootstrap:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except FileNotFoundError as exc:
            raise ConfigError(f"bootstrap file {path} does not exist; run `texad bootstrap` for its class") from exc
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"bootstrap file {path} is not a readable .npz ({exc}); delete it and rerun") from exc
        if str(a.get("format", "")) != FORMAT:
            raise ConfigError(
                f"bootstrap file {path} is not a {FORMAT} file (format {a.get('format')!r}); delete it and rerun"
            )
        return cls(
            path=path, dataset=str(a["dataset"]), cls=str(a["class"]), metrics=tuple(map(str, a["metrics"])),
            level=float(a["level"]), resamples=int(a["resamples"]), method=a["method"].astype(str),
            variant=a["variant"].astype(str), seed=a["seed_of_run"], point=a["point"].astype(str),
            nfe_per_image=a["nfe_per_image"], estimate=a["estimate"], replicates=a["replicates"].astype(np.float64),
            scores=a["scores"], labels=a["labels"].astype(bool),
        )  # fmt: skip

    def runs(self, method: str, variant: str) -> np.ndarray:
        """Row indices of the runs of (method, variant): by variant name, else a ``default`` run whose recorded
        ablation point is ``variant`` (a point that is the class's default is not run twice)."""
        mine = self.method == method
        rows = np.flatnonzero(mine & (self.variant == variant))
        if rows.size == 0:
            rows = np.flatnonzero(mine & (self.variant == "default") & (self.point == variant))
        return rows

    def variants(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys(zip(self.method.tolist(), self.variant.tolist(), strict=True)))

    def pooled(self, rows: np.ndarray, metric: str) -> tuple[float, np.ndarray]:
        """(estimate, replicates (B,)) of the mean over the runs ``rows`` (seeds)."""
        j = self.metrics.index(metric)
        return float(self.estimate[rows, j].mean()), self.replicates[rows, :, j].mean(axis=0)


class Bootstraps:
    """Every class's bootstrap file; one level and one resample count across them."""

    def __init__(self, files: Iterable[str | Path]):
        self.classes: dict[tuple[str, str], ClassBootstrap] = {}
        for f in files:
            b = ClassBootstrap.read(f)
            key = (b.dataset, b.cls)
            if key in self.classes:
                raise ConfigError(f"bootstrap files {self.classes[key].path} and {f} are both of {b.dataset}/{b.cls}")
            self.classes[key] = b
        levels = {(b.level, b.resamples) for b in self.classes.values()}
        if len(levels) > 1:
            raise ConfigError(
                f"the bootstrap files mix levels / resample counts {sorted(levels)}; rerun them with one "
                "evaluation.bootstrap"
            )
        self.level, self.resamples = next(iter(levels)) if levels else (math.nan, 0)

    def __bool__(self) -> bool:
        return bool(self.classes)

    def dataset_classes(self, dataset: str) -> list[str]:
        return sorted(c for d, c in self.classes if d == dataset)

    def estimate(
        self, dataset: str, cls: str, method: str, variant: str, metric: str, classes: Sequence[str] | None = None
    ) -> Estimate | None:
        """A cell's seed-pooled value and interval (``cls`` = ``mean``: the mean over ``classes``, default every
        class of the dataset); None when a class lacks the run or the metric (no masks)."""
        names = [cls] if cls != MEAN_ROW else list(classes or self.dataset_classes(dataset))
        values, reps, seeds = [], [], set()
        for name in names:
            b = self.classes.get((dataset, name))
            rows = b.runs(method, variant) if b is not None else np.zeros(0, int)
            if rows.size == 0:
                return None
            value, rep = b.pooled(rows, metric)
            if math.isnan(value):
                return None
            values.append(value)
            reps.append(rep)
            seeds.add(tuple(sorted(b.seed[rows].tolist())))
        if not values:
            return None
        ci = interval(np.mean(reps, axis=0), self.level)
        seed_list = next(iter(seeds)) if len(seeds) == 1 else tuple(sorted({s for t in seeds for s in t}))
        return Estimate(float(np.mean(values)), ci.low, ci.high, seed_list)

    def difference(
        self,
        dataset: str,
        classes: Sequence[str],
        a: tuple[str, str] | Sequence[tuple[str, str]],
        b: tuple[str, str] | Sequence[tuple[str, str]],
        metric: str,
    ) -> Difference | None:
        """A − B averaged over ``classes``, both resampled with each class's same rows. ``a`` and ``b`` are
        (method, variant), or one per class. None when a class lacks either run or the metric."""
        n = len(classes)
        a_list = [a] * n if isinstance(a, tuple) else list(a)
        b_list = [b] * n if isinstance(b, tuple) else list(b)
        diffs, reps, dl_diffs, dl_vars = [], [], [], []
        for name, sel_a, sel_b in zip(classes, a_list, b_list, strict=True):
            cb = self.classes.get((dataset, name))
            if cb is None:
                return None
            rows_a, rows_b = cb.runs(*sel_a), cb.runs(*sel_b)
            if rows_a.size == 0 or rows_b.size == 0:
                return None
            va, ra = cb.pooled(rows_a, metric)
            vb, rb = cb.pooled(rows_b, metric)
            if math.isnan(va) or math.isnan(vb):
                return None
            diffs.append(va - vb)
            reps.append(ra - rb)
            if metric == "image_auroc":
                d = delong(cb.scores[rows_a], cb.labels, cb.scores[rows_b])
                dl_diffs.append(d["difference"])
                dl_vars.append(d["variance"])
        if not diffs:
            return None
        ci = interval(np.mean(reps, axis=0), self.level)
        test = None
        if dl_diffs:
            value, sd = float(np.mean(dl_diffs)), math.sqrt(sum(dl_vars)) / len(dl_vars)
            z = stats.norm.ppf(0.5 + self.level / 2)
            p = float(2 * stats.norm.sf(abs(value) / sd)) if sd > 0 else (1.0 if value == 0 else 0.0)
            test = DeLong(value, value - z * sd, value + z * sd, p)
        return Difference(float(np.mean(diffs)), ci.low, ci.high, tuple(classes), test)

    def nfe(self, dataset: str, cls: str, method: str, variant: str) -> float:
        """Mean network evaluations per image of (method, variant)'s runs on one class (NaN when unknown)."""
        cb = self.classes.get((dataset, cls))
        rows = cb.runs(method, variant) if cb is not None else np.zeros(0, int)
        return float(cb.nfe_per_image[rows].mean()) if rows.size else math.nan


def interval_table(boot: Bootstraps) -> pd.DataFrame:
    """Every (dataset, class and the dataset's ``mean``, method, variant, metric) interval as a long table."""
    records = []
    for dataset in sorted({d for d, _ in boot.classes}):
        classes = boot.dataset_classes(dataset)
        found = list(dict.fromkeys(v for c in classes for v in boot.classes[(dataset, c)].variants()))
        for method, variant in found:
            for cls in [*classes, MEAN_ROW]:
                for metric in METRICS:
                    e = boot.estimate(dataset, cls, method, variant, metric)
                    if e is None:
                        continue
                    records.append((dataset, cls, method, variant, metric, e.value, e.low, e.high, boot.level,
                                    boot.resamples, len(e.seeds), " ".join(map(str, e.seeds))))  # fmt: skip
    return pd.DataFrame(records, columns=list(INTERVAL_COLUMNS))
